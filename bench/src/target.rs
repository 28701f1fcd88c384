//! Where the bench connects: RTMP and HTTP-FLV URLs split into socket
//! address, RTMP app and stream name, or HTTP path.
//!
//! Contract: only loopback hosts are accepted (`127.0.0.0/8`, `::1`,
//! `localhost`); the bench generates heavy load and must never aim it at
//! another machine. Sans-IO: no DNS, `localhost` means 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// An RTMP URL: `rtmp://HOST[:PORT]/APP/STREAM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RtmpTarget {
    pub(crate) addr: SocketAddr,
    pub(crate) app: String,
    pub(crate) stream: String,
    /// `rtmp://HOST:PORT/APP`, sent as `tcUrl` on connect.
    pub(crate) tc_url: String,
}

/// An HTTP-FLV URL: `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpTarget {
    pub(crate) addr: SocketAddr,
    /// `HOST[:PORT]` as written, for the Host header.
    pub(crate) authority: String,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
}

fn split_scheme<'a>(url: &'a str, scheme: &str) -> Result<(&'a str, &'a str), String> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| format!("{url}: expected a {scheme}:// URL"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

fn loopback_addr(authority: &str, default_port: u16, url: &str) -> Result<SocketAddr, String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| format!("{url}: unclosed [ in host"))?;
        let port = v6[end + 1..].strip_prefix(':');
        (&v6[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url}: bad port {p:?}"))?,
        None => default_port,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("{url}: host must be a loopback IP or localhost, got {host:?}"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url}: {ip} is not a loopback address; the bench only targets this machine"
        ));
    }
    Ok(SocketAddr::new(ip, port))
}

impl RtmpTarget {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (authority, path) = split_scheme(url, "rtmp")?;
        let addr = loopback_addr(authority, 1935, url)?;
        let path = path.trim_start_matches('/');
        let (app, stream) = path
            .split_once('/')
            .filter(|(a, s)| !a.is_empty() && !s.is_empty())
            .ok_or_else(|| format!("{url}: expected rtmp://HOST[:PORT]/APP/STREAM"))?;
        Ok(Self {
            addr,
            app: app.to_string(),
            stream: stream.to_string(),
            tc_url: format!("rtmp://{authority}/{app}"),
        })
    }
}

impl HttpTarget {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (authority, path) = split_scheme(url, "http")?;
        let addr = loopback_addr(authority, 80, url)?;
        Ok(Self {
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls_split_into_app_and_stream() {
        let t = RtmpTarget::parse("rtmp://127.0.0.1:1935/live/demo-key").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:1935".parse().expect("addr"));
        assert_eq!(t.app, "live");
        assert_eq!(t.stream, "demo-key");
        assert_eq!(t.tc_url, "rtmp://127.0.0.1:1935/live");
        let t = RtmpTarget::parse("rtmp://localhost/live/a/b?token=1").expect("valid");
        assert_eq!(t.addr.port(), 1935);
        assert_eq!(t.stream, "a/b?token=1");
        let t = RtmpTarget::parse("rtmp://[::1]:19350/app/s").expect("valid");
        assert_eq!(t.addr, "[::1]:19350".parse().expect("addr"));
    }

    #[test]
    fn http_urls_keep_path_and_authority() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/live/demo.flv").expect("valid");
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/live/demo.flv");
        assert_eq!(
            HttpTarget::parse("http://localhost").expect("valid").path,
            "/"
        );
    }

    #[test]
    fn other_machines_and_malformed_urls_are_refused() {
        for bad in [
            "rtmp://10.0.0.1/live/x",
            "rtmp://example.com/live/x",
            "rtmp://127.0.0.1/live",
            "rtmp://127.0.0.1:99999/live/x",
            "http://127.0.0.1/x",
            "rtmps://127.0.0.1/live/x",
        ] {
            assert!(RtmpTarget::parse(bad).is_err(), "{bad}");
        }
        assert!(HttpTarget::parse("http://192.168.1.1/live.flv").is_err());
        assert!(HttpTarget::parse("https://127.0.0.1/live.flv").is_err());
    }
}
