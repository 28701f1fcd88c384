//! Just enough of HLS playlists for a viewer that behaves like hls.js on a
//! live stream: a master playlist's variant URIs, a media playlist's target
//! duration, media sequence, segments and end marker, and URI resolution
//! against the playlist's path. Sans-IO.

/// One segment of a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SegmentRef {
    /// Media sequence number.
    pub(crate) seq: u64,
    pub(crate) duration_s: f64,
    pub(crate) uri: String,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MediaPlaylist {
    pub(crate) target_duration_s: f64,
    pub(crate) segments: Vec<SegmentRef>,
    /// `#EXT-X-ENDLIST`: the stream ended.
    pub(crate) ended: bool,
}

impl MediaPlaylist {
    /// The highest sequence number listed.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.segments.last().map(|s| s.seq)
    }
}

/// A parsed playlist.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Playlist {
    /// Variant URIs, in order.
    Master(Vec<String>),
    Media(MediaPlaylist),
}

/// Parses playlist text.
pub(crate) fn parse(text: &str) -> Result<Playlist, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Err("playlist does not start with #EXTM3U".into());
    }
    let mut variants = Vec::new();
    let mut expect_variant = false;
    let mut media = MediaPlaylist {
        target_duration_s: 0.0,
        segments: Vec::new(),
        ended: false,
    };
    let mut next_seq = 0u64;
    let mut pending_duration: Option<f64> = None;
    let mut is_media = false;
    for line in lines {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            media.target_duration_s = v.parse().map_err(|_| format!("bad target duration {v:?}"))?;
            is_media = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            next_seq = v.parse().map_err(|_| format!("bad media sequence {v:?}"))?;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or_default();
            pending_duration = Some(d.parse().map_err(|_| format!("bad EXTINF {v:?}"))?);
            is_media = true;
        } else if line.starts_with("#EXT-X-STREAM-INF:") {
            expect_variant = true;
        } else if line == "#EXT-X-ENDLIST" {
            media.ended = true;
        } else if line.starts_with('#') {
            // Other tags (program date time, discontinuity, version) do
            // not change what a viewer fetches.
        } else if expect_variant {
            variants.push(line.to_string());
            expect_variant = false;
        } else if let Some(duration_s) = pending_duration.take() {
            media.segments.push(SegmentRef {
                seq: next_seq,
                duration_s,
                uri: line.to_string(),
            });
            next_seq += 1;
        } else {
            return Err(format!("URI {line:?} without #EXTINF or #EXT-X-STREAM-INF"));
        }
    }
    match (is_media, variants.is_empty()) {
        (false, false) => Ok(Playlist::Master(variants)),
        (true, true) => Ok(Playlist::Media(media)),
        (true, false) => Err("playlist mixes variants and segments".into()),
        (false, true) => Err("playlist lists neither variants nor segments".into()),
    }
}

/// Resolves `uri` against the path of the playlist it came from, giving a
/// path on the same server. Absolute URLs must name `authority`.
pub(crate) fn resolve(base_path: &str, uri: &str, authority: &str) -> Result<String, String> {
    if let Some(rest) = uri.strip_prefix("http://") {
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host != authority {
            return Err(format!("{uri} is on another server than {authority}"));
        }
        return Ok(if path.is_empty() { "/".into() } else { path.into() });
    }
    if uri.contains("://") {
        return Err(format!("unsupported URI {uri}"));
    }
    let joined = if uri.starts_with('/') {
        uri.to_string()
    } else {
        let base = base_path.split('?').next().unwrap_or_default();
        format!("{}{uri}", &base[..base.rfind('/').map_or(0, |i| i + 1)])
    };
    let (path, q) = match joined.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (joined, None),
    };
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/').skip(1) {
        match part {
            "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    let mut resolved = format!("/{}", out.join("/"));
    if let Some(q) = q {
        resolved.push('?');
        resolved.push_str(&q);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_media_playlist_lists_numbered_segments() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1764070852\n\
                    #EXT-X-PROGRAM-DATE-TIME:2026-11-25T12:00:00Z\n#EXTINF:2.000,\n1764070852.ts\n\
                    #EXT-X-DISCONTINUITY\n#EXTINF:1.967,\n1764070853.ts\n";
        let Playlist::Media(p) = parse(text).expect("valid") else {
            panic!("not a media playlist")
        };
        assert_eq!(p.target_duration_s, 2.0);
        assert!(!p.ended);
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.segments[1].seq, 1_764_070_853);
        assert_eq!(p.segments[1].duration_s, 1.967);
        assert_eq!(p.segments[1].uri, "1764070853.ts");
        assert_eq!(p.last_seq(), Some(1_764_070_853));
        let ended = parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n").expect("valid");
        assert!(matches!(ended, Playlist::Media(p) if p.ended && p.segments[0].seq == 0));
    }

    #[test]
    fn a_master_playlist_lists_variants() {
        let text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS=\"avc1.64001f,mp4a.40.2\"\nsource.m3u8\n\
                    #EXT-X-STREAM-INF:BANDWIDTH=800000\n../demo_480p/source.m3u8\n";
        assert_eq!(
            parse(text).expect("valid"),
            Playlist::Master(vec!["source.m3u8".into(), "../demo_480p/source.m3u8".into()])
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in ["", "hello", "#EXTM3U\nseg.ts\n", "#EXTM3U\n#EXT-X-TARGETDURATION:x\n", "#EXTM3U\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uris_resolve_against_the_playlist_path() {
        let a = "127.0.0.1:8080";
        assert_eq!(resolve("/live/demo/index.m3u8", "source.m3u8", a), Ok("/live/demo/source.m3u8".into()));
        assert_eq!(
            resolve("/live/demo/index.m3u8?token=x", "../demo_480p/source.m3u8", a),
            Ok("/live/demo_480p/source.m3u8".into())
        );
        assert_eq!(resolve("/hls/demo.m3u8", "demo-12.ts", a), Ok("/hls/demo-12.ts".into()));
        assert_eq!(resolve("/hls/demo.m3u8", "/x/1.ts?k=v", a), Ok("/x/1.ts?k=v".into()));
        assert_eq!(resolve("/hls/demo.m3u8", "http://127.0.0.1:8080/y/2.ts", a), Ok("/y/2.ts".into()));
        assert!(resolve("/hls/demo.m3u8", "http://10.0.0.1/y/2.ts", a).is_err());
        assert!(resolve("/hls/demo.m3u8", "https://127.0.0.1:8080/y/2.ts", a).is_err());
    }
}
