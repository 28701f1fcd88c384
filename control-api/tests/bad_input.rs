//! Bad input: each case is a clear 4xx in the error format, and nothing is
//! posted (the journal and the balances do not move).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn expect_error(r: Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"], code, "{}", r.body);
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn bad_requests_are_clear_4xx_and_post_nothing() {
    let s = start().await;
    let alice = s.signup("alice").await;
    let mallory = s.signup("mallory").await;
    s.fund(&alice, 5 * WE).await;
    s.channel_with_key(&alice, "alice").await;
    let before = s.audit().await;

    // Negative, zero and huge amounts.
    for amount in [json!(-1), json!(0), json!(i64::MAX)] {
        let r = s
            .post(
                "/v1/wallet/transfers",
                Some(&alice),
                json!({"to": "mallory", "amount_micro_we": amount}),
            )
            .await;
        assert_eq!(r.status.as_u16() / 100, 4, "{amount}: {}", r.body);
    }
    expect_error(
        s.post(
            "/v1/wallet/transfers",
            Some(&alice),
            json!({"to": "mallory", "amount_micro_we": -5}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_amount",
    )
    .await;
    let raw = s
        .client
        .post(format!("{}/v1/wallet/transfers", s.base))
        .bearer_auth(&alice)
        .header("Idempotency-Key", key())
        .header("content-type", "application/json")
        .body(r#"{"to": "mallory", "amount_micro_we": 99999999999999999999999}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = raw.json().await.expect("json");
    assert_eq!(body["error"], "invalid_body");
    expect_error(
        s.post(
            "/v1/wallet/faucet",
            Some(&alice),
            json!({"amount_micro_we": 2_000_000 * WE}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "amount_out_of_range",
    )
    .await;
    // More than the wallet holds.
    expect_error(
        s.post(
            "/v1/wallet/transfers",
            Some(&alice),
            json!({"to": "mallory", "amount_micro_we": 6 * WE}),
        )
        .await,
        StatusCode::PAYMENT_REQUIRED,
        "insufficient_funds",
    )
    .await;
    // Unknown product and unknown recipient.
    expect_error(
        s.post("/v1/packages", Some(&alice), json!({"product_id": "gold"}))
            .await,
        StatusCode::NOT_FOUND,
        "product_not_found",
    )
    .await;
    expect_error(
        s.post(
            "/v1/wallet/transfers",
            Some(&alice),
            json!({"to": "nobody", "amount_micro_we": 1}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    )
    .await;
    // Malformed JSON, wrong content type, unknown fields.
    let raw = s
        .client
        .post(format!("{}/v1/packages", s.base))
        .bearer_auth(&alice)
        .header("Idempotency-Key", key())
        .header("content-type", "application/json")
        .body("{\"product_id\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.expect("json");
    assert_eq!(body["error"], "malformed_json");
    let raw = s
        .client
        .post(format!("{}/v1/packages", s.base))
        .bearer_auth(&alice)
        .header("Idempotency-Key", key())
        .body("product_id=big")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    expect_error(
        s.post(
            "/v1/packages",
            Some(&alice),
            json!({"product_id": "big", "price": 0}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    // Missing or wrong tokens, missing idempotency key.
    expect_error(
        s.post("/v1/packages", None, json!({"product_id": "small"}))
            .await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
    )
    .await;
    expect_error(
        s.post(
            "/v1/packages",
            Some("wst_forged"),
            json!({"product_id": "small"}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_error(
        s.send(
            "POST",
            "/v1/packages",
            Some(&alice),
            None,
            Some(json!({"product_id": "small"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "missing_idempotency_key",
    )
    .await;
    expect_error(
        s.get("/v1/admin/ledger/audit", Some(&alice)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.post(
            "/v1/usage",
            Some(&alice),
            json!({"node_id": "n", "batch_seq": 1, "channels": []}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    // Another user's channel and keys.
    expect_error(
        s.get("/v1/channels/alice/keys", Some(&mallory)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.send(
            "POST",
            "/v1/channels/alice/keys",
            Some(&mallory),
            Some(&key()),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.send(
            "POST",
            "/v1/channels/alice/keys/1/revoke",
            Some(&mallory),
            Some(&key()),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.send(
            "POST",
            "/v1/channels/alice/keys/1/rotate",
            Some(&mallory),
            Some(&key()),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.send(
            "POST",
            "/v1/channels/alice/keys/abc/revoke",
            Some(&alice),
            Some(&key()),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    // Bad handles and a taken one.
    expect_error(
        s.post("/v1/accounts", None, json!({"handle": "A!"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    expect_error(
        s.post("/v1/accounts", None, json!({"handle": "alice"}))
            .await,
        StatusCode::CONFLICT,
        "handle_taken",
    )
    .await;
    // Usage counters beyond the bound.
    expect_error(
        s.post("/v1/usage", Some(NODE), json!({"node_id": "n", "batch_seq": 1,
            "channels": [{"channel": "alice", "bytes_out": u64::MAX, "bytes_in": 0, "viewer_seconds": 0}]})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;

    let after = s.audit().await;
    assert_eq!(
        before["journal_count"], after["journal_count"],
        "nothing posted"
    );
    assert_eq!(before["posting_count"], after["posting_count"]);
    assert_eq!(s.balance(&alice).await, 5 * WE);
    assert_eq!(s.balance(&mallory).await, 0);
    assert!(s.packages(&alice).await.is_empty());
    let keys = s.get("/v1/channels/alice/keys", Some(&alice)).await;
    assert_eq!(keys.body["keys"].as_array().expect("keys").len(), 1);
    assert!(keys.body["keys"][0]["revoked_at_ms"].is_null());
}

#[tokio::test]
async fn the_faucet_is_refused_when_disabled() {
    let mut cfg = test_config();
    cfg.faucet_enabled = false;
    let s = start_with(cfg).await;
    let t = s.signup("zed").await;
    expect_error(
        s.post("/v1/wallet/faucet", Some(&t), json!({"amount_micro_we": 1}))
            .await,
        StatusCode::FORBIDDEN,
        "faucet_disabled",
    )
    .await;
}
