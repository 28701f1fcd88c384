//! Room routes: the gift catalogue, rooms and their settings, moderation,
//! gifts, rankings, share links and tickets. The WebSocket is in
//! `crate::rooms::ws`. Money moves in the store, one journal entry each.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::extract::{ApiJson, Auth, IdempotencyKey};
use super::user::{query, scope, written};
use super::{ApiError, AppState};
use crate::plane::blocking;
use crate::rooms::Room;
use crate::store::{
    AccountId, GiftOrder, Moderation, Replayed, RoomSettings, SettingsUpdate, Ticket,
};

/// Longest mute, 30 days.
const MAX_MUTE_MS: u64 = 30 * 86_400_000;

/// The room of an existing channel (memory first, then one read).
pub(crate) async fn existing_room(state: &AppState, channel: &str) -> Result<Arc<Room>, ApiError> {
    if let Some(r) = state.rooms.get(channel) {
        return Ok(r);
    }
    let name = channel.to_string();
    let found = blocking(&state.store, move |s| s.channel(&name)).await?;
    if found.is_none() {
        return Err(not_found(channel));
    }
    Ok(state.rooms.room(channel))
}

fn not_found(channel: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "channel_not_found",
        format!("channel '{channel}' not found"),
    )
}

/// `Room` as the API shows it.
#[derive(Debug, Serialize)]
struct RoomView {
    channel: String,
    title: String,
    owner: AccountId,
    owner_handle: String,
    live: bool,
    viewers: crate::rooms::ViewersBody,
    clients: usize,
    score: f64,
    slow_mode_ms: u64,
    sharer_bps: u32,
    ticket_price_micro: i64,
}

fn view(state: &AppState, s: RoomSettings) -> serde_json::Value {
    let room = state.rooms.get(&s.channel);
    let viewers = room.as_ref().map(|r| r.viewers()).unwrap_or_default();
    let v = RoomView {
        live: room.as_ref().is_some_and(|r| r.live()),
        clients: room.as_ref().map_or(0, |r| r.clients()),
        score: state.rooms.score(&s.channel),
        viewers: viewers.into(),
        channel: s.channel,
        title: s.title,
        owner: s.owner,
        owner_handle: s.owner_handle,
        slow_mode_ms: s.slow_mode_ms,
        sharer_bps: s.sharer_bps,
        ticket_price_micro: s.ticket_price_micro,
    };
    serde_json::to_value(v).unwrap_or_default()
}

async fn settings_of(state: &AppState, channel: &str) -> Result<RoomSettings, ApiError> {
    let name = channel.to_string();
    blocking(&state.store, move |s| s.room_settings(&name))
        .await?
        .ok_or_else(|| not_found(channel))
}

pub(super) async fn gifts(State(state): State<AppState>) -> Response {
    let gifts: Vec<serde_json::Value> = state
        .config
        .gifts
        .iter()
        .map(|g| serde_json::json!({"id": g.id, "name": g.name, "price_micro": g.price_micro_we, "image": g.image}))
        .collect();
    Json(serde_json::json!({ "gifts": gifts })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitQuery {
    limit: Option<u32>,
}

pub(super) async fn list_rooms(
    State(state): State<AppState>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = query(q)?.limit.unwrap_or(100).clamp(1, 500) as usize;
    let snapshot = blocking(&state.store, |s| s.rooms_snapshot()).await?;
    let mut rooms: Vec<serde_json::Value> =
        snapshot.settings.into_iter().map(|s| view(&state, s)).collect();
    let key = |v: &serde_json::Value| {
        (
            v["live"].as_bool().unwrap_or(false),
            v["score"].as_f64().unwrap_or(0.0),
        )
    };
    rooms.sort_by(|a, b| {
        let (la, sa) = key(a);
        let (lb, sb) = key(b);
        lb.cmp(&la).then(sb.total_cmp(&sa))
    });
    rooms.truncate(limit);
    Ok(Json(serde_json::json!({ "rooms": rooms })).into_response())
}

pub(super) async fn get_room(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let s = settings_of(&state, &channel).await?;
    Ok(Json(view(&state, s)).into_response())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_input", message)
}

pub(super) async fn update_settings(
    State(state): State<AppState>,
    auth: Auth,
    _idem: IdempotencyKey,
    Path(channel): Path<String>,
    ApiJson(u): ApiJson<SettingsUpdate>,
) -> Result<Response, ApiError> {
    let cfg = &state.config.rooms;
    if let Some(t) = &u.title {
        if t.chars().count() > cfg.max_title_chars || t.chars().any(char::is_control) {
            return Err(invalid(format!(
                "title: at most {} printable characters",
                cfg.max_title_chars
            )));
        }
    }
    if u.slow_mode_ms.is_some_and(|v| v > cfg.max_slow_mode_ms) {
        return Err(invalid(format!("slow_mode_ms: at most {}", cfg.max_slow_mode_ms)));
    }
    if u.sharer_bps.is_some_and(|v| v > cfg.max_sharer_bps) {
        return Err(invalid(format!("sharer_bps: at most {}", cfg.max_sharer_bps)));
    }
    if u
        .ticket_price_micro
        .is_some_and(|v| v < 0 || v > state.config.max_amount_micro_we)
    {
        return Err(invalid(format!(
            "ticket_price_micro: 0..={}",
            state.config.max_amount_micro_we
        )));
    }
    let now = state.rooms.now_ms();
    let s = blocking(&state.store, move |s| {
        s.update_room_settings(&auth.0, &channel, &u, now)
    })
    .await?;
    state.rooms.apply_settings(&s);
    Ok(Json(view(&state, s)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MuteRequest {
    account: AccountId,
    duration_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BanRequest {
    account: AccountId,
    /// `false` lifts a ban.
    #[serde(default = "yes")]
    banned: bool,
}

fn yes() -> bool {
    true
}

async fn moderate(
    state: AppState,
    auth: Auth,
    channel: String,
    target: AccountId,
    action: Moderation,
) -> Result<Response, ApiError> {
    let now = state.rooms.now_ms();
    let row = blocking(&state.store, move |s| {
        s.moderate(&auth.0, &channel, target, action, now)
    })
    .await?;
    state.rooms.apply_moderation(&row);
    Ok(Json(serde_json::json!({
        "ok": true, "account": row.account_id, "banned": row.banned, "muted_until_ms": row.muted_until_ms
    }))
    .into_response())
}

pub(super) async fn mute(
    State(state): State<AppState>,
    auth: Auth,
    _idem: IdempotencyKey,
    Path(channel): Path<String>,
    ApiJson(req): ApiJson<MuteRequest>,
) -> Result<Response, ApiError> {
    if req.duration_ms > MAX_MUTE_MS {
        return Err(invalid(format!("duration_ms: at most {MAX_MUTE_MS}")));
    }
    let until = if req.duration_ms == 0 {
        0
    } else {
        state.rooms.now_ms().saturating_add(req.duration_ms as i64)
    };
    moderate(state, auth, channel, req.account, Moderation::MuteUntil(until)).await
}

pub(super) async fn ban(
    State(state): State<AppState>,
    auth: Auth,
    _idem: IdempotencyKey,
    Path(channel): Path<String>,
    ApiJson(req): ApiJson<BanRequest>,
) -> Result<Response, ApiError> {
    let action = if req.banned {
        Moderation::Ban
    } else {
        Moderation::Unban
    };
    moderate(state, auth, channel, req.account, action).await
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GiftRequest {
    gift: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    share: Option<String>,
}

pub(super) async fn send_gift(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    Path(channel): Path<String>,
    ApiJson(req): ApiJson<GiftRequest>,
) -> Result<Response, ApiError> {
    let gift = state.config.gift(&req.gift).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "gift_not_found",
            format!("no gift '{}' in the catalogue (GET /v1/gifts)", req.gift),
        )
    })?;
    let max = state.config.rooms.max_gift_count;
    if req.count == 0 || req.count > max {
        return Err(invalid(format!("count: 1..={max}")));
    }
    if !state.rooms.allow_gift(auth.0.account_id) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "at most {} gift requests per {} ms",
                state.config.rooms.gift_rate_requests, state.config.rooms.gift_rate_window_ms
            ),
        ));
    }
    let key = idem.scoped(scope(&auth), "POST /v1/rooms/{channel}/gifts", &(&channel, &req));
    let order = GiftOrder {
        channel,
        gift_id: gift.id.clone(),
        gift_name: gift.name.clone(),
        unit_price_micro: gift.price_micro_we,
        count: req.count,
        share: req.share,
        platform_fee_bps: state.config.rooms.platform_fee_bps,
        rules: state.rooms.rules(),
    };
    let now = state.rooms.now_ms();
    let r = blocking(&state.store, move |s| s.send_gift(&auth.0, &key, &order, now)).await?;
    if !r.replayed {
        let g = &r.value;
        state.rooms.gift_posted(g);
        let m = &state.metrics;
        m.gifts.inc();
        m.gift_volume.inc_by(u64::try_from(g.paid_micro).unwrap_or(0));
        let legs = 2 + u64::from(g.fee_micro > 0) + u64::from(g.sharer_micro > 0);
        m.record_entry("gift", legs);
    }
    Ok(written(StatusCode::OK, r))
}

pub(super) async fn rankings(
    State(state): State<AppState>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = query(q)?.limit.unwrap_or(50).clamp(1, 500);
    let rows = blocking(&state.store, move |s| s.rankings(limit)).await?;
    let (rules, now) = (state.rooms.rules(), state.rooms.now_ms());
    let list: Vec<serde_json::Value> = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({
                "rank": i + 1,
                "channel": r.channel,
                "owner": r.owner,
                "owner_handle": r.owner_handle,
                "score": rules.score_at(r.log2_score, now),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "rankings": list })).into_response())
}

pub(super) async fn create_share(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let key = idem.scoped(scope(&auth), "POST /v1/rooms/{channel}/shares", &channel);
    let now = state.rooms.now_ms();
    let r = blocking(&state.store, move |s| s.create_share(&auth.0, &key, &channel, now)).await?;
    state.rooms.mark_active(r.value.account, 0);
    if !r.replayed {
        state.rooms.activity().account(r.value.account, now, |i| i.shares += 1);
    }
    let s = &r.value;
    let body = serde_json::json!({
        "code": s.code,
        "channel": s.channel,
        "url": format!("/?share={}#/watch/{}", s.code, s.channel),
        "plays": s.plays,
        "gifts": s.gifts,
        "earned_micro": s.earned_micro,
    });
    Ok(written(
        StatusCode::OK,
        Replayed {
            value: body,
            replayed: r.replayed,
        },
    ))
}

/// `POST /v1/rooms/{channel}/likes`: one like per account and channel per
/// `LIKE_INTERVAL_MS` (10 s); it counts for the liker's rewards.
pub(super) async fn like(
    State(state): State<AppState>,
    auth: Auth,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    existing_room(&state, &channel).await?;
    if !state.rooms.like(auth.0.account_id, &channel) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "like_rate_limited",
            format!("one like per channel every {} s", crate::rooms::LIKE_INTERVAL_MS / 1000),
        ));
    }
    Ok(Json(serde_json::json!({ "liked": true, "channel": channel })).into_response())
}

/// A ticket with its play token (minted, never stored).
fn ticket_body(state: &AppState, t: &Ticket) -> serde_json::Value {
    serde_json::json!({
        "ticket_id": t.ticket_id,
        "channel": t.channel,
        "paid_micro": t.paid_micro,
        "token": state.rooms.tickets().mint(&t.channel, t.account, t.expires_ms),
        "expires_ms": t.expires_ms,
    })
}

pub(super) async fn buy_ticket(
    State(state): State<AppState>,
    auth: Auth,
    idem: IdempotencyKey,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let key = idem.scoped(scope(&auth), "POST /v1/rooms/{channel}/tickets", &channel);
    let cfg = &state.config.rooms;
    let (fee_bps, validity) = (
        cfg.platform_fee_bps,
        i64::try_from(cfg.ticket_validity_ms).unwrap_or(i64::MAX),
    );
    let now = state.rooms.now_ms();
    let r = blocking(&state.store, move |s| {
        s.buy_ticket(&auth.0, &key, &channel, fee_bps, validity, now)
    })
    .await?;
    if !r.replayed && r.value.paid_micro > 0 {
        state.metrics.record_entry("ticket", 3);
    }
    let body = ticket_body(&state, &r.value);
    Ok(written(
        StatusCode::OK,
        Replayed {
            value: body,
            replayed: r.replayed,
        },
    ))
}

pub(super) async fn my_ticket(
    State(state): State<AppState>,
    auth: Auth,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let (id, now) = (auth.0.account_id, state.rooms.now_ms());
    let name = channel.clone();
    let t = blocking(&state.store, move |s| s.current_ticket(id, &name, now)).await?;
    let t = t.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_ticket",
            format!("no valid ticket for '{channel}'"),
        )
    })?;
    Ok(Json(ticket_body(&state, &t)).into_response())
}
