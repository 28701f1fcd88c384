//! Paid streams: buying a ticket posts one balanced entry and returns a
//! signed token; `authorize_play` (in process and over `/v1/hooks/play`)
//! refuses a ticketed channel without a valid token for it, on every
//! protocol, and renditions follow their source.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use westream_control::hooks::{Denied, MediaHooks, PlayProtocol, PlayRequest};
use westream_control::Clock;

const PROTOCOLS: [PlayProtocol; 3] = [PlayProtocol::Rtmp, PlayProtocol::Flv, PlayProtocol::Hls];

async fn play(s: &TestServer, channel: &str, token: Option<&str>, protocol: PlayProtocol) -> Result<(), Denied> {
    s.plane
        .hooks()
        .authorize_play(&PlayRequest {
            app: "live".into(),
            channel: channel.into(),
            token: token.map(str::to_string),
            protocol,
            client_addr: None,
        })
        .await
}

fn refused_because(r: Result<(), Denied>, why: &str) {
    match r {
        Err(Denied::Forbidden(m)) => {
            assert!(m.starts_with("this broadcast is ticketed"), "{m}");
            assert!(m.contains(why), "{m} should say {why}");
        }
        other => panic!("expected Forbidden({why}), got {other:?}"),
    }
}

async fn buy(s: &TestServer, token: &str, channel: &str) -> serde_json::Value {
    let r = s.post(&format!("/v1/rooms/{channel}/tickets"), Some(token), json!(null)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn a_ticketed_channel_refuses_missing_expired_and_foreign_tokens_on_every_protocol() {
    let (s, clock) = start_clocked(open_rooms_config()).await;
    let (show, _) = s.streamer("show").await;
    let (other, _) = s.streamer("other").await;
    s.streamer("free").await;
    let (fan, fan_id) = s.account("fan", 10 * WE).await;
    for (t, ch) in [(&show, "show"), (&other, "other")] {
        let room = s.room_settings(t, ch, json!({"ticket_price_micro": 2 * WE})).await;
        assert_eq!(room["ticket_price_micro"], 2 * WE);
    }
    let mine = buy(&s, &fan, "show").await;
    let mine = mine["token"].as_str().expect("token").to_string();
    let foreign = buy(&s, &fan, "other").await["token"].as_str().expect("token").to_string();
    let gate = s.plane.rooms().tickets().clone();
    let expired = gate.mint("show", fan_id, clock.now_ms() - 1);
    for p in PROTOCOLS {
        refused_because(play(&s, "show", None, p).await, "a ticket is required");
        refused_because(play(&s, "show", Some(""), p).await, "a ticket is required");
        refused_because(play(&s, "show", Some(&foreign), p).await, "another channel");
        refused_because(play(&s, "show", Some(&expired), p).await, "expired");
        refused_because(play(&s, "show", Some("forged.token"), p).await, "invalid");
        assert_eq!(play(&s, "show", Some(&mine), p).await, Ok(()), "{p:?}");
        // A rendition follows its source: the same rights, the same refusal.
        assert_eq!(play(&s, "show_720p", Some(&mine), p).await, Ok(()), "{p:?}");
        refused_because(play(&s, "show_480p", None, p).await, "a ticket is required");
        refused_because(play(&s, "show_480p", Some(&foreign), p).await, "another channel");
        assert_eq!(play(&s, "free", None, p).await, Ok(()), "free channels need nothing");
        assert_eq!(play(&s, "free_720p", None, p).await, Ok(()));
        assert!(matches!(play(&s, "nosuch_720p", None, p).await, Err(Denied::UnknownChannel { .. })));
    }
    // The bought token itself expires with the ticket (24 h by default).
    clock.advance(24 * 3_600_000);
    refused_because(play(&s, "show", Some(&mine), PlayProtocol::Hls).await, "expired");
    // Free again: no token needed, at once (prices are in memory).
    s.room_settings(&show, "show", json!({"ticket_price_micro": 0})).await;
    assert_eq!(play(&s, "show", None, PlayProtocol::Rtmp).await, Ok(()));
}

#[tokio::test]
async fn the_http_play_hook_answers_403_with_the_reason_and_204_with_a_ticket() {
    let s = start_with(open_rooms_config()).await;
    let (show, _) = s.streamer("show").await;
    let (fan, _) = s.account("fan", 10 * WE).await;
    s.room_settings(&show, "show", json!({"ticket_price_micro": WE})).await;
    let token = buy(&s, &fan, "show").await["token"].as_str().expect("token").to_string();
    let ask = |t: Option<String>| {
        let mut body = json!({"app": "live", "channel": "show_720p", "protocol": "hls"});
        if let Some(t) = t {
            body["token"] = json!(t);
        }
        s.send("POST", "/v1/hooks/play", Some(NODE), None, Some(body))
    };
    let r = ask(None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap_or("").contains("ticketed"), "{:?}", r.body);
    assert_eq!(ask(Some(token)).await.status, StatusCode::NO_CONTENT);
}

/// An edge checks plays over HTTP: a ticketed HLS viewer asks once per
/// segment, and the edge's hooks answer the repeats from their cache.
#[tokio::test]
async fn an_edge_asks_the_control_plane_once_per_ticket_not_once_per_segment() {
    let s = start_with(open_rooms_config()).await;
    let (show, _) = s.streamer("show").await;
    let (fan, _) = s.account("fan", 10 * WE).await;
    s.room_settings(&show, "show", json!({"ticket_price_micro": WE})).await;
    let token = buy(&s, &fan, "show").await["token"].as_str().expect("token").to_string();
    let registry = prometheus::Registry::new();
    s.plane.register_metrics(&registry).expect("metrics");
    let asked = || {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "westream_control_http_requests_total")
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .filter(|m| m.get_label().iter().any(|l| l.value() == "/v1/hooks/play"))
                    .map(|m| m.get_counter().get_value())
                    .collect::<Vec<_>>()
            })
            .sum::<f64>()
    };
    let edge = westream_control::HttpHooks::new(s.base.clone(), NODE).expect("hooks");
    let req = |t: Option<&str>| PlayRequest {
        app: "live".into(),
        channel: "show".into(),
        token: t.map(str::to_string),
        protocol: PlayProtocol::Hls,
        client_addr: None,
    };
    for _ in 0..20 {
        assert_eq!(edge.authorize_play(&req(Some(&token))).await, Ok(()));
    }
    assert_eq!(asked(), 1.0, "one question for twenty segments");
    // Without the token: refused (and that answer is cached on its own key).
    for _ in 0..3 {
        refused_because(edge.authorize_play(&req(None)).await, "ticket");
    }
    assert_eq!(asked(), 2.0);
}

#[tokio::test]
async fn a_ticket_is_one_balanced_payment_and_a_retry_returns_the_same_ticket() {
    let s = start_with(open_rooms_config()).await;
    let (show, _) = s.streamer("show").await;
    let (fan, _) = s.account("fan", 5 * WE).await;
    let (poor, _) = s.account("poor", WE).await;
    let free = s.post("/v1/rooms/show/tickets", Some(&fan), json!(null)).await;
    assert_eq!(free.status, StatusCode::CONFLICT);
    assert_eq!(free.body["error"], "not_ticketed");
    s.room_settings(&show, "show", json!({"ticket_price_micro": 2 * WE})).await;

    let k = key();
    let first = s.send("POST", "/v1/rooms/show/tickets", Some(&fan), Some(&k), None).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["paid_micro"], 2 * WE);
    let retry = s.send("POST", "/v1/rooms/show/tickets", Some(&fan), Some(&k), None).await;
    assert!(retry.replayed);
    assert_eq!(retry.body["ticket_id"], first.body["ticket_id"]);
    assert_eq!(retry.body["token"], first.body["token"], "the same token, minted again");
    // Holding a valid ticket, a new purchase returns it without charging.
    let again = buy(&s, &fan, "show").await;
    assert_eq!(again["ticket_id"], first.body["ticket_id"]);
    let me = s.get("/v1/rooms/show/tickets/me", Some(&fan)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["expires_ms"], first.body["expires_ms"]);
    assert_eq!(s.balance(&fan).await, 3 * WE);
    assert_eq!(s.balance(&show).await, 1_800_000, "2 WE minus the 10% fee");

    let r = s.post("/v1/rooms/show/tickets", Some(&poor), json!(null)).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(s.balance(&poor).await, WE);
    assert_eq!(s.get("/v1/rooms/show/tickets/me", Some(&poor)).await.status, StatusCode::NOT_FOUND);
    // The owner watches their own broadcast for free.
    let own = buy(&s, &show, "show").await;
    assert_eq!(own["paid_micro"], 0);
    assert_eq!(s.balance(&show).await, 1_800_000);
    let audit = s.audit().await;
    assert_eq!(audit["system_balances"]["system:platform_fees"], 200_000);
}

#[tokio::test]
async fn only_the_owner_changes_a_room_and_values_are_checked() {
    let s = start_with(open_rooms_config()).await;
    let (show, _) = s.streamer("show").await;
    let (fan, _) = s.account("fan", 0).await;
    let r = s.post("/v1/rooms/show/settings", Some(&fan), json!({"ticket_price_micro": 1})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for bad in [json!({"sharer_bps": 5001}), json!({"slow_mode_ms": 600_001}), json!({"ticket_price_micro": -1}), json!({"title": "x".repeat(121)})] {
        let r = s.post("/v1/rooms/show/settings", Some(&show), bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let room = s.room_settings(&show, "show", json!({"title": "Live from the kitchen", "sharer_bps": 5000})).await;
    assert_eq!(room["title"], "Live from the kitchen");
    assert_eq!(room["sharer_bps"], 5000);
    assert_eq!(room["owner_handle"], "show");
    assert_eq!(room["viewers"]["total"], 0);
    let listed = s.get("/v1/rooms", None).await;
    assert_eq!(listed.body["rooms"][0]["title"], "Live from the kitchen");
    assert_eq!(s.get("/v1/rooms/nobody", None).await.status, StatusCode::NOT_FOUND);
}
