//! HLS over HTTP: `GET /live/{channel}/index.m3u8` (master),
//! `/live/{channel}/{rendition}.m3u8` (media) and `/live/{channel}/{n}.ts`,
//! all from memory.
//!
//! Every request passes the play authorization with its `?token=`; when a
//! token is present, every URI written into a playlist carries it, so any
//! player follows the master to media playlists and segments with it.
//!
//! Names from the URL are checked against fixed shapes (channel:
//! [`valid_channel_name`]; playlists `^[a-z0-9_]{1,32}\.m3u8$`; segments
//! `^[0-9]{1,12}\.ts$`) and only ever used as map keys: nothing here touches
//! the filesystem.
//!
//! [`answer`] decides every HLS request; two front ends turn its
//! [`HlsReply`] into bytes on the wire: the axum route here, and the
//! HTTP/1.1 fast path ([`super::fast_path`]) that sends segments with
//! sendfile(2). Both count, authorize and answer alike.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use westream_control::hooks::{MediaHooks, PlayProtocol, PlayRequest};

use super::memfd::SealedFile;
use super::playlist::{with_play_params, SegmentLookup, SOURCE_RENDITION};
use super::{HlsPackager, RequestKind, RequestResult};
use crate::config::valid_channel_name;
use crate::http::flv::{denied_status, PlayQuery};

/// Content type of playlists.
pub const PLAYLIST_MIME: &str = "application/vnd.apple.mpegurl";
/// Content type of segments.
pub const SEGMENT_MIME: &str = "video/mp2t";
/// Content type of error reasons (what axum gives a `String`).
pub const ERROR_MIME: &str = "text/plain; charset=utf-8";
/// Playlists change every segment.
pub const PLAYLIST_CACHE: &str = "public, max-age=1";
/// A segment URL never changes content (sequence numbers are not reused).
pub const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";
/// Errors are not cached (a channel that is not live yet soon will be).
pub const ERROR_CACHE: &str = "no-cache";

/// What the HLS handlers share.
pub struct HlsHttpContext {
    /// The packager whose channels are served.
    pub packager: Arc<HlsPackager>,
    /// Play authorization (asked for every playlist and segment).
    pub hooks: Arc<dyn MediaHooks>,
    /// `Access-Control-Allow-Origin`, checked once (`None`: not a valid
    /// header value, so not sent, as before).
    pub cors_allow_origin: Option<HeaderValue>,
    /// Renditions of each source (listed in its master playlist).
    pub transcoding: Arc<crate::transcode::Transcoding>,
    /// Viewer counts: an HLS client counts while it keeps fetching.
    pub audience: Arc<crate::audience::Audience>,
}

impl HlsHttpContext {
    /// The configured origin as a header value, once.
    pub fn cors_header(origin: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(origin).ok()
    }
}

/// The HLS routes.
pub fn router(ctx: Arc<HlsHttpContext>) -> Router {
    Router::new().route("/live/{channel}/{file}", get(serve)).with_state(ctx)
}

/// The source's variant plus every transcoded rendition that has a
/// segment, ordered by bandwidth. Rendition playlists live under their own
/// channel (`../{channel}_{name}/source.m3u8`), so their segment URIs
/// resolve there.
fn master_with_renditions(ctx: &HlsHttpContext, channel: &str, source: &super::playlist::ChannelPlaylist) -> Option<Bytes> {
    let mut variants = Vec::new();
    if let Ok(Some(v)) = source.variant(format!("{SOURCE_RENDITION}.m3u8")) {
        variants.push((source.bandwidth(), v));
    }
    for r in ctx.transcoding.renditions(channel) {
        let name = format!("{channel}_{r}");
        let Some(entry) = ctx.packager.channel(&name) else { continue };
        let p = entry.playlist.read();
        if let Ok(Some(v)) = p.variant(format!("../{name}/{SOURCE_RENDITION}.m3u8")) {
            variants.push((p.bandwidth(), v));
        }
    }
    match super::playlist::render_master_of(variants) {
        Ok(text) => text.map(Bytes::from),
        Err(e) => {
            tracing::error!(%channel, error = %e, "master playlist not rendered");
            None
        }
    }
}

/// What a request file name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HlsFile {
    /// `index.m3u8`
    Master,
    /// `{rendition}.m3u8`
    Media(String),
    /// `{n}.ts`
    Segment(u64),
}

impl HlsFile {
    /// Parses a file name; `None` for anything outside the fixed shapes.
    pub fn parse(file: &str) -> Option<HlsFile> {
        if file == "index.m3u8" {
            return Some(HlsFile::Master);
        }
        if let Some(n) = file.strip_suffix(".ts") {
            if (1..=12).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()) {
                return n.parse().ok().map(HlsFile::Segment);
            }
            return None;
        }
        let r = file.strip_suffix(".m3u8")?;
        let ok = (1..=32).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        ok.then(|| HlsFile::Media(r.to_string()))
    }

    fn kind(&self) -> RequestKind {
        match self {
            HlsFile::Master => RequestKind::Master,
            HlsFile::Media(_) => RequestKind::Media,
            HlsFile::Segment(_) => RequestKind::Segment,
        }
    }
}

/// One HLS request, as either front end read it.
pub struct HlsRequest<'a> {
    /// `{channel}` from the path, not decoded further.
    pub channel: &'a str,
    /// `{file}` from the path.
    pub file: &'a str,
    /// `?token=`, decoded.
    pub token: Option<String>,
    /// `?viewer=`, decoded: a signed-in viewer's token (watch time).
    pub viewer: Option<String>,
    /// The client.
    pub peer: SocketAddr,
    /// Its `User-Agent` (empty when absent), for audience counting.
    pub user_agent: &'a [u8],
}

/// The answer to one HLS request, before it is written.
pub struct HlsReply {
    /// 200, or why not.
    pub status: StatusCode,
    /// `Content-Type`.
    pub mime: &'static str,
    /// `Cache-Control`.
    pub cache: &'static str,
    /// The playlist, the segment, or the reason (ends with a newline).
    pub body: Bytes,
    /// The segment's sealed copy, for sendfile (the same bytes as `body`).
    pub file: Option<Arc<SealedFile>>,
}

impl HlsReply {
    fn error(status: StatusCode, reason: &str) -> HlsReply {
        HlsReply { status, mime: ERROR_MIME, cache: ERROR_CACHE, body: Bytes::from(format!("{reason}\n")), file: None }
    }
}

/// Decides one HLS request: authorizes, counts (requests, bytes served,
/// audience) and finds what to send.
pub async fn answer(ctx: &HlsHttpContext, r: HlsRequest<'_>) -> HlsReply {
    let counters = &ctx.packager.metrics().counters;
    let Some(what) = HlsFile::parse(r.file).filter(|_| valid_channel_name(r.channel)) else {
        counters.get(RequestKind::Other, RequestResult::NotFound).inc();
        return HlsReply::error(StatusCode::NOT_FOUND, "not found: use /live/{channel}/index.m3u8");
    };
    let channel = r.channel;
    let kind = what.kind();
    // Every playlist and segment is checked (a ticketed channel's segments
    // need the token too); the hooks answer from memory.
    let (base, _) = ctx.transcoding.split_rendition(channel);
    let req = PlayRequest {
        app: "live".into(),
        channel: base.to_string(),
        token: r.token,
        protocol: PlayProtocol::Hls,
        client_addr: Some(r.peer),
    };
    if let Err(denied) = ctx.hooks.authorize_play(&req).await {
        ctx.packager.hub().metrics().rejected.with_label_values(&[denied.label()]).inc();
        counters.get(kind, RequestResult::Denied).inc();
        return HlsReply::error(denied_status(&denied), &denied.to_string());
    }
    let token = req.token;
    // On an edge every request keeps the upstream alive, and a first one
    // starts it: wait (bounded) for the channel's first segment.
    let wait = ctx.packager.hub().demand(channel);
    if !wait.is_zero() {
        let deadline = tokio::time::Instant::now() + wait;
        let ready = |ctx: &HlsHttpContext| ctx.packager.channel(channel).is_some_and(|e| e.playlist.read().media_playlist().is_some());
        while !ready(ctx) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let Some(entry) = ctx.packager.channel(channel) else {
        counters.get(kind, RequestResult::NotFound).inc();
        return HlsReply::error(StatusCode::NOT_FOUND, &format!("channel '{channel}' is not live"));
    };
    let not_yet = || format!("channel '{channel}' has no segment yet; retry shortly");
    let mut segment_ms = 0;
    let found: Result<(Bytes, Option<Arc<SealedFile>>), String> = {
        let p = entry.playlist.read();
        match &what {
            HlsFile::Master if !ctx.transcoding.renditions(channel).is_empty() => {
                master_with_renditions(ctx, channel, &p).map(|b| (b, None)).ok_or_else(not_yet)
            }
            HlsFile::Master => p.master_playlist().map(|b| (b, None)).ok_or_else(not_yet),
            HlsFile::Media(r) if r == SOURCE_RENDITION => p.media_playlist().map(|b| (b, None)).ok_or_else(not_yet),
            HlsFile::Media(r) => Err(format!("channel '{channel}' has no rendition '{r}'")),
            HlsFile::Segment(n) => match p.segment_with_file(*n) {
                Ok((s, file)) => {
                    segment_ms = s.duration_ms;
                    Ok((s.data.clone(), file))
                }
                Err(SegmentLookup::Expired) => Err(format!("segment {n} has left the live window")),
                Err(SegmentLookup::NotYet) => Err(format!("segment {n} is not available")),
            },
        }
    };
    let (body, file) = match found {
        Ok(f) => f,
        Err(reason) => {
            counters.get(kind, RequestResult::NotFound).inc();
            return HlsReply::error(StatusCode::NOT_FOUND, &reason);
        }
    };
    let is_segment = matches!(what, HlsFile::Segment(_));
    // A player carries the tokens it was given into every URI it follows.
    let body = if !is_segment && (token.is_some() || r.viewer.is_some()) {
        with_play_params(&body, token.as_deref(), r.viewer.as_deref())
    } else {
        body
    };
    counters.get(kind, RequestResult::Ok).inc();
    let now = super::unix_ms();
    ctx.audience.hls_request(base, r.peer.ip(), r.user_agent, now);
    if let (true, Some(viewer)) = (is_segment, r.viewer.as_deref()) {
        ctx.audience.hls_watched(viewer, base, segment_ms, now);
    }
    let n = body.len() as u64;
    entry.stream.bytes_out.fetch_add(n, Ordering::Relaxed);
    ctx.packager.hub().metrics().bytes_out_hls.inc_by(n);
    let (mime, cache) = if is_segment { (SEGMENT_MIME, SEGMENT_CACHE) } else { (PLAYLIST_MIME, PLAYLIST_CACHE) };
    HlsReply { status: StatusCode::OK, mime, cache, body, file }
}

async fn serve(
    State(ctx): State<Arc<HlsHttpContext>>,
    Path((channel, file)): Path<(String, String)>,
    Query(q): Query<PlayQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let user_agent = request.headers().get(header::USER_AGENT).map_or(&[][..], |v| v.as_bytes());
    let req = HlsRequest { channel: &channel, file: &file, token: q.token, viewer: q.viewer, peer, user_agent };
    let reply = answer(&ctx, req).await;
    let mut resp = (reply.status, reply.body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(reply.cache));
    if let Some(v) = &ctx.cors_allow_origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_outside_the_fixed_shapes_are_refused() {
        assert_eq!(HlsFile::parse("index.m3u8"), Some(HlsFile::Master));
        assert_eq!(HlsFile::parse("source.m3u8"), Some(HlsFile::Media("source".into())));
        assert_eq!(HlsFile::parse("1764070852.ts"), Some(HlsFile::Segment(1_764_070_852)));
        for bad in [
            "../x.ts", "..", "a/b.m3u8", "Source.m3u8", ".m3u8", ".ts", "1234567890123.ts", "-1.ts", "1.ts.bak",
            "x.TS", "%2e%2e.ts", "abc", "", "index.m3u8/", "a b.m3u8",
        ] {
            assert_eq!(HlsFile::parse(bad), None, "{bad}");
        }
    }
}
