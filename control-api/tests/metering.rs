//! Metering: usage drains packages oldest-expiry first, a dry owner gets a
//! stop order after the grace period and new publishes are refused; buying
//! again lifts it. Ingest bytes are metered but charged only when asked.

mod common;

use common::*;
use serde_json::json;
use westream_control::hooks::{ChannelUsage, Denied, MediaHooks, PublishRequest, UsageBatch};
use westream_control::HttpHooks;

fn batch(seq: u64, channel: &str, out: u64, inb: u64) -> UsageBatch {
    UsageBatch {
        node_id: "origin-1".into(),
        batch_seq: seq,
        channels: vec![ChannelUsage {
            channel: channel.into(),
            bytes_out: out,
            bytes_in: inb,
            viewer_seconds: 10,
        }],
        watch: vec![],
    }
}

fn publish(key: &str) -> PublishRequest {
    PublishRequest {
        app: "live".into(),
        stream_key: key.into(),
        client_addr: None,
    }
}

#[tokio::test]
async fn usage_drains_packages_then_issues_a_stop_order_and_refuses_publish() {
    let s = start().await;
    let token = s.signup("streamer").await;
    s.fund(&token, 20 * WE).await;
    let stream_key = s.channel_with_key(&token, "show").await;
    // `small` expires in 30 days, `short` in 1: `short` must drain first.
    s.post("/v1/packages", Some(&token), json!({"product_id": "small"}))
        .await;
    s.post("/v1/packages", Some(&token), json!({"product_id": "short"}))
        .await;
    let hooks = s.plane.hooks();
    let http = HttpHooks::new(s.base.clone(), NODE).expect("hooks");
    assert!(hooks.authorize_publish(&publish(&stream_key)).await.is_ok());

    let r = http
        .report_usage(&batch(1, "show", 500, 10_000))
        .await
        .expect("counted");
    assert!(!r.duplicate);
    assert!(r.stop_orders.is_empty());
    assert_eq!(
        r.bytes_remaining["show"], 1_500,
        "ingest is not charged by default"
    );
    let pk = s.packages(&token).await;
    let by_product = |id: &str| {
        pk.iter().find(|p| p["product_id"] == id).expect("package")["bytes_remaining"].clone()
    };
    assert_eq!(by_product("short"), 500);
    assert_eq!(by_product("small"), 1_000);

    // Overdraw: 1600 more bytes with 1500 left.
    let r = hooks
        .report_usage(&batch(2, "show", 1_600, 0))
        .await
        .expect("counted");
    assert_eq!(r.bytes_remaining["show"], 0);
    assert_eq!(r.stop_orders.len(), 1);
    let order = &r.stop_orders[0];
    assert_eq!(order.channel, "show");
    assert_eq!(
        order.stop_at_ms - order.issued_at_ms,
        1_000,
        "stop after the configured grace"
    );
    assert!(order.reason.contains("buy a package"));
    assert_eq!(hooks.stop_orders().await.expect("orders"), r.stop_orders);
    assert_eq!(http.stop_orders().await.expect("orders"), r.stop_orders);

    // New publishes are refused with a reason, in process and over HTTP.
    let denied = Denied::NoBandwidth {
        channel: "show".into(),
    };
    assert_eq!(
        hooks.authorize_publish(&publish(&stream_key)).await,
        Err(denied.clone())
    );
    let http_fresh = HttpHooks::new(s.base.clone(), NODE).expect("hooks");
    assert_eq!(
        http_fresh.authorize_publish(&publish(&stream_key)).await,
        Err(denied)
    );

    // The history adds up: every byte reported, only what packages covered charged.
    let h = s.get("/v1/channels/show/usage", None).await.body;
    assert_eq!(h["total_bytes_out"], 2_100);
    assert_eq!(h["total_bytes_in"], 10_000);
    assert_eq!(h["total_charged_bytes"], 2_000);
    assert_eq!(h["records"][0]["uncharged_bytes"], 100);
    assert_eq!(h["stop_order"]["channel"], "show");

    // A later batch while dry does not issue a second order.
    let r = hooks
        .report_usage(&batch(3, "show", 50, 0))
        .await
        .expect("counted");
    assert_eq!(r.stop_orders, vec![order.clone()]);

    // Buying again lifts the order and the refusal.
    let r = s
        .post("/v1/packages", Some(&token), json!({"product_id": "big"}))
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    assert!(hooks.stop_orders().await.expect("orders").is_empty());
    assert!(hooks.authorize_publish(&publish(&stream_key)).await.is_ok());
    s.audit().await;
}

#[tokio::test]
async fn ingest_bytes_are_charged_when_configured() {
    let mut cfg = test_config();
    cfg.charge_ingest_bytes = true;
    let s = start_with(cfg).await;
    let token = s.signup("ingest").await;
    s.fund(&token, WE).await;
    s.channel_with_key(&token, "ing").await;
    s.post("/v1/packages", Some(&token), json!({"product_id": "small"}))
        .await;
    let r = s
        .plane
        .hooks()
        .report_usage(&batch(1, "ing", 100, 300))
        .await
        .expect("counted");
    assert_eq!(r.bytes_remaining["ing"], 600);
}

#[tokio::test]
async fn usage_for_unknown_channels_is_accepted_and_ignored() {
    let s = start().await;
    let r = s
        .plane
        .hooks()
        .report_usage(&batch(1, "ghost", 100, 0))
        .await
        .expect("counted");
    assert!(!r.duplicate);
    assert!(r.bytes_remaining.is_empty());
    assert!(
        s.plane
            .hooks()
            .report_usage(&batch(1, "ghost", 100, 0))
            .await
            .expect("dup")
            .duplicate
    );
}
