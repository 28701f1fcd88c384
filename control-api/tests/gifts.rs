//! Gifts over the real API and a real SQLite file: one balanced journal
//! entry per gift, exact splits, idempotent retries, no overdraft under
//! concurrency.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use westream_control::rooms::GiftConfig;

async fn journal_count(s: &TestServer) -> i64 {
    s.audit().await["journal_count"].as_i64().expect("count")
}

async fn platform_fees(s: &TestServer) -> i64 {
    s.audit().await["system_balances"]["system:platform_fees"]
        .as_i64()
        .expect("fees")
}

#[tokio::test]
async fn a_hundred_concurrent_gifts_with_funds_for_sixty_post_exactly_sixty() {
    let s = start_with(open_rooms_config()).await;
    let (star, _) = s.streamer("star").await;
    let (fan, _) = s.account("fan", 60 * WE).await;
    let before = journal_count(&s).await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (client, base, fan) = (s.client.clone(), s.base.clone(), fan.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/rooms/star/gifts"))
                .bearer_auth(fan)
                .header("Idempotency-Key", key())
                .json(&json!({"gift": "flower"}))
                .send()
                .await
                .expect("send")
                .status()
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("join") {
            StatusCode::OK => ok += 1,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, refused), (60, 40));
    assert_eq!(s.balance(&fan).await, 0);
    assert_eq!(s.balance(&star).await, 60 * 900_000, "90% of 60 WE");
    assert_eq!(platform_fees(&s).await, 60 * 100_000, "10% of 60 WE");
    assert_eq!(journal_count(&s).await - before, 60, "one journal entry per gift");
}

#[tokio::test]
async fn a_retried_gift_posts_once_even_when_the_retries_race() {
    let s = start_with(open_rooms_config()).await;
    let (star, _) = s.streamer("star").await;
    let (fan, _) = s.account("fan", 10 * WE).await;
    let k = key();
    let body = json!({"gift": "flower", "count": 2});
    let first = s
        .send("POST", "/v1/rooms/star/gifts", Some(&fan), Some(&k), Some(body.clone()))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert!(!first.replayed);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (client, base, fan, k, body) = (s.client.clone(), s.base.clone(), fan.clone(), k.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/v1/rooms/star/gifts"))
                .bearer_auth(fan)
                .header("Idempotency-Key", k)
                .json(&body)
                .send()
                .await
                .expect("send");
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status(), replayed, r.json::<serde_json::Value>().await.expect("json"))
        }));
    }
    for t in tasks {
        let (status, replayed, b) = t.await.expect("join");
        assert_eq!(status, StatusCode::OK);
        assert!(replayed);
        assert_eq!(b["tx_id"], first.body["tx_id"], "the first result");
    }
    assert_eq!(s.balance(&fan).await, 8 * WE);
    assert_eq!(s.balance(&star).await, 2 * 900_000);
    // The same key for another request is refused, and posts nothing.
    let other = s
        .send("POST", "/v1/rooms/star/gifts", Some(&fan), Some(&k), Some(json!({"gift": "kiss"})))
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.balance(&fan).await, 8 * WE);
    s.audit().await;
}

#[tokio::test]
async fn the_fee_and_the_sharers_share_split_exactly_to_the_micro_we() {
    let mut cfg = open_rooms_config();
    cfg.gifts.push(GiftConfig {
        id: "odd".into(),
        name: "Odd".into(),
        price_micro_we: 1_234_567,
        image: String::new(),
    });
    let s = start_with(cfg).await;
    let (star, star_id) = s.streamer("star").await;
    let (fan, fan_id) = s.account("fan", 0).await;
    let (viewer, _) = s.account("viewer", 10 * WE).await;
    s.room_settings(&star, "star", json!({"sharer_bps": 2500})).await;
    let share = s.post("/v1/rooms/star/shares", Some(&fan), json!(null)).await;
    assert_eq!(share.status, StatusCode::OK, "{:?}", share.body);
    let code = share.body["code"].as_str().expect("code").to_string();
    assert_eq!(share.body["url"], format!("/?share={code}#/watch/star"));
    let fees_before = platform_fees(&s).await;

    let r = s.gift(&viewer, "star", json!({"gift": "odd", "count": 3, "share": code})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // paid 3_703_701; fee 10% = 370_370.1 -> 370_370; streamer part
    // 3_333_331; sharer 25% = 833_332.75 -> 833_332; streamer 2_499_999.
    assert_eq!(r.body["paid_micro"], 3_703_701);
    assert_eq!(r.body["fee_micro"], 370_370);
    assert_eq!(r.body["sharer_micro"], 833_332);
    assert_eq!(r.body["streamer_micro"], 2_499_999);
    assert_eq!(r.body["sharer"], fan_id);
    assert_eq!(r.body["balance_micro"], 10 * WE - 3_703_701);
    assert_eq!(s.balance(&viewer).await, 10 * WE - 3_703_701);
    assert_eq!(s.balance(&fan).await, 833_332);
    assert_eq!(s.balance(&star).await, 2_499_999);
    assert_eq!(platform_fees(&s).await - fees_before, 370_370);
    assert_ne!(star_id, fan_id);

    // Attribution is counted on the link.
    let again = s.post("/v1/rooms/star/shares", Some(&fan), json!(null)).await;
    assert_eq!(again.body["code"], code, "one link per account and channel");
    assert_eq!(again.body["gifts"], 1);
    assert_eq!(again.body["earned_micro"], 833_332);

    // A sharer gifting through their own link earns nothing from it.
    s.fund(&fan, 10 * WE).await;
    let own = s.gift(&fan, "star", json!({"gift": "flower", "share": code})).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["sharer_micro"], 0);
    assert_eq!(own.body["sharer"], json!(null));
    assert_eq!(own.body["streamer_micro"], 900_000);
    // An unknown code is refused before anything is paid.
    let bad = s.gift(&viewer, "star", json!({"gift": "flower", "share": "nope"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.balance(&viewer).await, 10 * WE - 3_703_701);
    s.audit().await;
}

#[tokio::test]
async fn insufficient_funds_is_a_402_and_posts_nothing() {
    let s = start_with(open_rooms_config()).await;
    let (star, _) = s.streamer("star").await;
    let (fan, _) = s.account("fan", WE / 2).await;
    let before = journal_count(&s).await;
    let r = s.gift(&fan, "star", json!({"gift": "flower"})).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{:?}", r.body);
    assert_eq!(r.body["error"], "insufficient_funds");
    assert_eq!(s.balance(&fan).await, WE / 2);
    assert_eq!(s.balance(&star).await, 0);
    assert_eq!(journal_count(&s).await, before);
    // Unknown gifts, bad counts and unknown rooms are refused too.
    assert_eq!(s.gift(&fan, "star", json!({"gift": "yacht"})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.gift(&fan, "star", json!({"gift": "kiss", "count": 0})).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.gift(&fan, "star", json!({"gift": "kiss", "count": 101})).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.gift(&fan, "nobody", json!({"gift": "kiss"})).await.status, StatusCode::NOT_FOUND);
    // A kiss (0.1 WE) it can afford.
    assert_eq!(s.gift(&fan, "star", json!({"gift": "kiss"})).await.status, StatusCode::OK);
    assert_eq!(s.balance(&fan).await, WE / 2 - 100_000);
    s.audit().await;
}

#[tokio::test]
async fn a_sender_over_the_gift_rate_gets_429_and_pays_nothing() {
    let mut cfg = open_rooms_config();
    cfg.rooms.gift_rate_requests = 3;
    cfg.rooms.gift_rate_window_ms = 60_000;
    let s = start_with(cfg).await;
    s.streamer("star").await;
    let (fan, _) = s.account("fan", 10 * WE).await;
    for _ in 0..3 {
        assert_eq!(s.gift(&fan, "star", json!({"gift": "flower"})).await.status, StatusCode::OK);
    }
    let r = s.gift(&fan, "star", json!({"gift": "flower"})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["error"], "rate_limited");
    assert_eq!(s.balance(&fan).await, 7 * WE);
    let (other, _) = s.account("other", 10 * WE).await;
    assert_eq!(s.gift(&other, "star", json!({"gift": "flower"})).await.status, StatusCode::OK, "per sender");
}

#[tokio::test]
async fn the_catalogue_lists_the_default_gifts() {
    let s = start().await;
    let r = s.get("/v1/gifts", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<&str> = r.body["gifts"]
        .as_array()
        .expect("gifts")
        .iter()
        .filter_map(|g| g["id"].as_str())
        .collect();
    assert_eq!(ids, ["kiss", "flower", "heart", "sports_car", "plane", "rocket"]);
    assert_eq!(r.body["gifts"][1]["price_micro"], WE);
    assert_eq!(r.body["gifts"][1]["image"], "/assets/gifts/flower.svg");
}
