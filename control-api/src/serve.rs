//! The HTTP/1.1 server loop for the control plane's router (and the media
//! server's, which merges it): `axum::serve`'s accept loop and graceful
//! shutdown, on hyper's HTTP/1 connection directly.
//!
//! Why not `axum::serve`: it serves through hyper-util's protocol-sniffing
//! builder, which wraps every connection in a private type, so an upgraded
//! connection can never be taken back as the socket it is. The room
//! WebSocket needs the socket: its fan-out writes pre-encoded frames to
//! thousands of clients with one `sendmsg` each ([`crate::rooms`]). Here the
//! upgraded connection is a [`TokioIo`] of the listener's own stream, and
//! [`raw_tcp`] gets the [`TcpStream`] back out.
//!
//! Contract:
//! - HTTP/1.0 and 1.1 with keep-alive and upgrades; no cleartext HTTP/2
//!   (browsers and players never speak it over `http://`).
//! - A client gets 30 s to send a request's headers (hyper's
//!   `header_read_timeout`, which needs the timer set here; axum::serve
//!   sets none), so a slow-loris peer costs a socket for 30 s at most.
//! - Every request carries [`ConnectInfo<SocketAddr>`] of its peer, as
//!   `into_make_service_with_connect_info` gives it.
//! - When `shutdown` completes: no new connections; each open one finishes
//!   the request it is in and closes; `serve` returns once all have.
//!   Upgraded connections (WebSockets) are no longer hyper's and are not
//!   waited for.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::Router;
use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a client may take to send one request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` completes, then drains
/// the open connections (see the module docs).
pub async fn serve<L>(listener: L, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    serve_with_header_timeout(listener, router, shutdown, HEADER_READ_TIMEOUT).await
}

async fn serve_with_header_timeout<L>(
    mut listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: std::time::Duration,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    // Dropping `stop_rx` tells the connections; each holds a `closed_rx`
    // clone until it ends.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(stop_rx);
    });
    let (closed_tx, closed_rx) = watch::channel(());
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = stop_tx.closed() => break,
        };
        let (stop_tx, closed_rx) = (stop_tx.clone(), closed_rx.clone());
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.oneshot(req.map(axum::body::Body::new)).await.unwrap_or_else(|e| match e {})) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = pin!(conn);
            let mut stopping = pin!(stop_tx.closed());
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::trace!(error = %e, %peer, "http connection ended with an error");
                        }
                        break;
                    }
                    _ = &mut stopping => conn.as_mut().graceful_shutdown(),
                }
            }
            drop(closed_rx);
        });
    }
    drop(closed_rx);
    drop(listener);
    closed_tx.closed().await;
    Ok(())
}

/// A TCP connection with bytes already read from it in front (a server
/// that looked at a request before handing the connection on).
#[derive(Debug)]
pub struct PrefixedTcp {
    prefix: Bytes,
    tcp: TcpStream,
}

impl PrefixedTcp {
    /// `prefix` is read before anything from `tcp`.
    pub fn new(prefix: Bytes, tcp: TcpStream) -> Self {
        PrefixedTcp { prefix, tcp }
    }

    /// The bytes not yet read from the prefix, and the socket.
    pub fn into_parts(self) -> (Bytes, TcpStream) {
        (self.prefix, self.tcp)
    }
}

impl AsyncRead for PrefixedTcp {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PrefixedTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The socket under a connection [`serve`] upgraded, and the bytes already
/// read from it past the upgrade request, in order. `Err` gives the
/// connection back when it is not one of `serve`'s (another server loop,
/// or a listener of some other stream type).
pub fn raw_tcp(upgraded: hyper::upgrade::Upgraded) -> Result<(TcpStream, Bytes), hyper::upgrade::Upgraded> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Ok((parts.io.into_inner(), parts.read_buf)),
        Err(u) => u,
    };
    let parts = upgraded.downcast::<TokioIo<PrefixedTcp>>()?;
    let (prefix, tcp) = parts.io.into_inner().into_parts();
    // hyper read its buffer before whatever is left of the prefix.
    let read = if prefix.is_empty() {
        parts.read_buf
    } else {
        let mut all = Vec::with_capacity(parts.read_buf.len() + prefix.len());
        all.extend_from_slice(&parts.read_buf);
        all.extend_from_slice(&prefix);
        Bytes::from(all)
    };
    Ok((tcp, read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(timeout: Duration) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<io::Result<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve_with_header_timeout(listener, router, async { let _ = rx.await; }, timeout));
        (addr, tx, task)
    }

    async fn read_to_end(tcp: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await.expect("the server closes").unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_request_sees_its_peer_and_a_half_sent_header_is_cut_off() {
        let (addr, stop, task) = start(Duration::from_millis(300)).await;

        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        tcp.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let reply = read_to_end(&mut tcp).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with(&local.to_string()), "the handler sees the peer address {local}: {reply}");

        // A slow-loris client: the request line and one header, never the end.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let t0 = Instant::now();
        let reply = read_to_end(&mut slow).await;
        assert!(t0.elapsed() >= Duration::from_millis(250), "closed only after the timeout, took {:?}", t0.elapsed());
        assert!(!reply.contains("200"), "no response to a request that never ended: {reply}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve returns after shutdown").unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed after shutdown");
    }
}
