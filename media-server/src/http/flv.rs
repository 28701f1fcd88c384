//! HTTP-FLV: `GET /live/{channel}.flv` streams the FLV header, metadata,
//! sequence headers, the GOP cache, then live tags, as one chunked response.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use westream_control::hooks::{Denied, PlayProtocol, PlayRequest};

use super::{add_cors, error_response, HttpContext};
use crate::audience::{Connected, ViewerGuard};
use crate::config::valid_channel_name;
use crate::hub::Subscription;
use crate::media::flv;

/// Query parameters of a play URL.
#[derive(Debug, Deserialize, Default)]
pub struct PlayQuery {
    /// Play token for ticketed channels.
    pub token: Option<String>,
    /// Viewer token (`GET /v1/accounts/me/viewer-token`): watch time counts
    /// for the viewer's rewards.
    pub viewer: Option<String>,
}

/// The status a play denial maps to.
pub fn denied_status(d: &Denied) -> StatusCode {
    match d {
        Denied::UnknownChannel { .. } | Denied::UnknownApp { .. } => StatusCode::NOT_FOUND,
        Denied::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    }
}

/// `GET /live/{channel}.flv`
pub async fn play(
    State(ctx): State<Arc<HttpContext>>,
    Path(file): Path<String>,
    Query(q): Query<PlayQuery>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Response {
    let Some(channel) = file.strip_suffix(".flv").filter(|c| valid_channel_name(c)) else {
        return error_response(&ctx, StatusCode::NOT_FOUND, "not found: use /live/{channel}.flv");
    };
    let (base, _) = ctx.transcoding.split_rendition(channel);
    let req = PlayRequest {
        app: "live".into(),
        channel: base.to_string(),
        token: q.token,
        protocol: PlayProtocol::Flv,
        client_addr: Some(peer),
    };
    if let Err(denied) = ctx.hooks.authorize_play(&req).await {
        ctx.hub.metrics().rejected.with_label_values(&[denied.label()]).inc();
        return error_response(&ctx, denied_status(&denied), &denied.to_string());
    }
    // On an edge this starts the upstream; then wait (bounded) for it.
    let wait = ctx.hub.demand(channel);
    let live = match ctx.hub.live(channel) {
        None if !wait.is_zero() => ctx.hub.wait_live(channel, wait).await,
        live => live,
    };
    let sub = live.and_then(|s| s.subscribe(ctx.hub.metrics()));
    let Some(sub) = sub else {
        return error_response(&ctx, StatusCode::NOT_FOUND, &format!("channel '{channel}' is not live"));
    };
    tracing::debug!(channel, "http-flv viewer joined");
    let header = flv::file_header(sub.stream().has_audio() || !sub.stream().has_video(), sub.stream().has_video());
    let viewer = FlvViewer {
        sub,
        ctx: Arc::clone(&ctx),
        header: Some(header),
        ready: Default::default(),
        shutdown: Box::pin(ctx.shutdown.clone().cancelled_owned()),
        _counted: ctx.audience.join_as(base, Connected::Flv, q.viewer.as_deref()),
    };
    ctx.hub.metrics().viewers.with_label_values(&["flv"]).inc();
    let stream = futures_util::stream::unfold(viewer, |mut v| async move {
        let chunk = v.next().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), v))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("video/x-flv"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache, no-store"));
    add_cors(&ctx, &mut resp);
    resp
}

struct FlvViewer {
    sub: Subscription,
    ctx: Arc<HttpContext>,
    header: Option<Bytes>,
    /// Tags ready to hand to hyper back to back, so they leave in one write.
    ready: std::collections::VecDeque<Bytes>,
    /// Registered once with the shared shutdown token, not per frame.
    shutdown: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// In the channel's viewer count while the response lives.
    _counted: ViewerGuard,
}

impl FlvViewer {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(h) = self.header.take() {
            return Some(h);
        }
        if let Some(tag) = self.ready.pop_front() {
            return Some(tag);
        }
        let frame = tokio::select! {
            _ = self.shutdown.as_mut() => None,
            f = self.sub.recv() => f,
        }?;
        // hyper writes what the body yields without a Pending in between as
        // one batch: hand over everything that is ready (the hub delivers
        // audio together with the next video frame).
        self._counted.saw_media();
        self.push_ready(frame.flv_tag());
        while self.ready.len() < 64 {
            let Some(f) = self.sub.try_recv() else { break };
            self.push_ready(f.flv_tag());
        }
        self.ready.pop_front()
    }

    fn push_ready(&mut self, tag: Bytes) {
        let n = tag.len() as u64;
        self.sub.stream().bytes_out.fetch_add(n, Ordering::Relaxed);
        self.ctx.hub.metrics().bytes_out_flv.inc_by(n);
        self.ready.push_back(tag);
    }
}

impl Drop for FlvViewer {
    fn drop(&mut self) {
        self.ctx.hub.metrics().viewers.with_label_values(&["flv"]).dec();
    }
}
