//! Idempotency and concurrency: retries post once; a wallet with funds for
//! 20 packages, hit by 50 concurrent purchases, buys exactly 20.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use westream_control::hooks::{ChannelUsage, UsageBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_purchase_sent_ten_times_concurrently_posts_once() {
    let s = std::sync::Arc::new(start().await);
    let token = s.signup("idem").await;
    s.fund(&token, 100 * WE).await;
    let k = key();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (s, token, k) = (s.clone(), token.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            s.send(
                "POST",
                "/v1/packages",
                Some(&token),
                Some(&k),
                Some(json!({"product_id": "big"})),
            )
            .await
        }));
    }
    let mut ids = Vec::new();
    let mut replays = 0;
    for t in tasks {
        let r = t.await.expect("join");
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(r.body["id"].as_i64().expect("id"));
        replays += usize::from(r.replayed);
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every retry returns the first result: {ids:?}"
    );
    assert_eq!(replays, 9);
    assert_eq!(s.packages(&token).await.len(), 1);
    assert_eq!(s.balance(&token).await, 90 * WE);
    let audit = s.audit().await;
    // faucet + one purchase
    assert_eq!(audit["journal_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_usage_batch_sent_ten_times_concurrently_counts_once() {
    let s = std::sync::Arc::new(start().await);
    let token = s.signup("meter").await;
    s.fund(&token, 100 * WE).await;
    s.post("/v1/packages", Some(&token), json!({"product_id": "big"}))
        .await;
    s.channel_with_key(&token, "meter").await;
    let batch = UsageBatch {
        node_id: "edge-1".into(),
        batch_seq: 7,
        channels: vec![ChannelUsage {
            channel: "meter".into(),
            bytes_out: 12_345,
            bytes_in: 99,
            viewer_seconds: 30,
        }],
        watch: vec![],
    };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (s, batch) = (s.clone(), batch.clone());
        tasks.push(tokio::spawn(async move {
            s.send(
                "POST",
                "/v1/usage",
                Some(NODE),
                None,
                Some(serde_json::to_value(&batch).expect("json")),
            )
            .await
        }));
    }
    let mut duplicates = 0;
    for t in tasks {
        let r = t.await.expect("join");
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        duplicates += usize::from(r.body["duplicate"] == json!(true));
    }
    assert_eq!(duplicates, 9);
    let usage = s.get("/v1/channels/meter/usage", None).await;
    assert_eq!(usage.body["total_bytes_out"], 12_345);
    assert_eq!(usage.body["records"].as_array().expect("records").len(), 1);
    assert_eq!(usage.body["bytes_remaining"], 1_000_000_000 - 12_345);

    // The same (node, seq) with other content is a node bug: 409, not counted.
    let mut other = batch.clone();
    other.channels[0].bytes_out = 1;
    let r = s
        .send(
            "POST",
            "/v1/usage",
            Some(NODE),
            None,
            Some(serde_json::to_value(&other).expect("json")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"], "batch_conflict");
    let usage = s.get("/v1/channels/meter/usage", None).await;
    assert_eq!(usage.body["total_bytes_out"], 12_345);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_purchases_with_funds_for_twenty_buy_exactly_twenty() {
    let s = std::sync::Arc::new(start().await);
    let token = s.signup("rush").await;
    s.fund(&token, 20 * WE).await; // `small` costs 1 WE
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, token) = (s.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            s.post("/v1/packages", Some(&token), json!({"product_id": "small"}))
                .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.expect("join");
        match r.status {
            StatusCode::CREATED => ok += 1,
            StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(r.body["error"], "insufficient_funds");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!((ok, refused), (20, 30));
    assert_eq!(s.packages(&token).await.len(), 20);
    assert_eq!(s.balance(&token).await, 0);
    let audit = s.audit().await;
    assert_eq!(
        audit["system_balances"]["system:bandwidth_revenue"],
        20 * WE
    );
    assert!(audit["negative_wallets"]
        .as_array()
        .expect("list")
        .is_empty());
}
