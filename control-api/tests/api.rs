//! The REST API end to end over HTTP: sign-up, channels and stream keys,
//! wallet, packages, the hooks (in-process and HTTP), the OpenAPI document.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use westream_control::hooks::{Denied, MediaHooks, PlayProtocol, PlayRequest, PublishRequest};
use westream_control::HttpHooks;

fn publish(key: &str) -> PublishRequest {
    PublishRequest {
        app: "live".into(),
        stream_key: key.into(),
        client_addr: None,
    }
}

#[tokio::test]
async fn a_streamer_signs_up_funds_buys_and_may_publish() {
    let s = start().await;
    let token = s.signup("alice").await;
    let me = s.get("/v1/accounts/me", Some(&token)).await;
    assert_eq!(me.body["handle"], "alice");

    let key = s.channel_with_key(&token, "alice-live").await;
    assert!(key.starts_with("sk_"));
    // No package yet: publish refused with a reason.
    let hooks = s.plane.hooks();
    assert_eq!(
        hooks.authorize_publish(&publish(&key)).await,
        Err(Denied::NoBandwidth {
            channel: "alice-live".into()
        })
    );

    s.fund(&token, 25 * WE).await;
    let r = s
        .post("/v1/packages", Some(&token), json!({"product_id": "big"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["bytes_remaining"], 1_000_000_000);
    assert_eq!(s.balance(&token).await, 15 * WE);

    let grant = hooks
        .authorize_publish(&publish(&key))
        .await
        .expect("granted");
    assert_eq!(grant.channel, "alice-live");
    assert_eq!(
        hooks.authorize_publish(&publish("nope")).await,
        Err(Denied::UnknownKey)
    );
    let bad_app = PublishRequest {
        app: "other".into(),
        ..publish(&key)
    };
    assert!(matches!(
        hooks.authorize_publish(&bad_app).await,
        Err(Denied::UnknownApp { .. })
    ));

    // The statement shows the cash flow: faucet in, purchase out.
    let st = s.get("/v1/wallet/statement", Some(&token)).await;
    let lines = st.body["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kind"], "faucet");
    assert_eq!(lines[1]["amount_micro_we"], -10 * WE);
    assert_eq!(
        lines[1]["counterparties"],
        json!(["system:bandwidth_revenue"])
    );
    s.audit().await;
}

#[tokio::test]
async fn stream_keys_are_listed_masked_rotated_and_revoked() {
    let s = start().await;
    let token = s.signup("bob").await;
    s.fund(&token, 10 * WE).await;
    s.post("/v1/packages", Some(&token), json!({"product_id": "big"}))
        .await;
    let key = s.channel_with_key(&token, "bob").await;
    let hooks = s.plane.hooks();
    assert!(hooks.authorize_publish(&publish(&key)).await.is_ok());

    let list = s.get("/v1/channels/bob/keys", Some(&token)).await;
    let keys = list.body["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 1);
    let masked = keys[0]["masked"].as_str().expect("masked");
    assert!(
        !masked.contains(&key[4..]),
        "listing leaks the key: {masked}"
    );
    let id = keys[0]["id"].as_i64().expect("id");

    let r = s
        .send(
            "POST",
            &format!("/v1/channels/bob/keys/{id}/rotate"),
            Some(&token),
            Some(&key_()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let new_key = r.body["key"].as_str().expect("new key").to_string();
    assert_eq!(r.body["replaced_key_id"], id);
    // The in-process cache is cleared by the rotation: the old key fails now.
    assert_eq!(
        hooks.authorize_publish(&publish(&key)).await,
        Err(Denied::UnknownKey)
    );
    assert!(hooks.authorize_publish(&publish(&new_key)).await.is_ok());

    let new_id = r.body["info"]["id"].as_i64().expect("id");
    let r = s
        .send(
            "POST",
            &format!("/v1/channels/bob/keys/{new_id}/revoke"),
            Some(&token),
            Some(&key_()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["revoked_at_ms"].is_i64());
    assert_eq!(
        hooks.authorize_publish(&publish(&new_key)).await,
        Err(Denied::UnknownKey)
    );
    // Rotating a revoked key is a conflict.
    let r = s
        .send(
            "POST",
            &format!("/v1/channels/bob/keys/{new_id}/rotate"),
            Some(&token),
            Some(&key_()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"], "key_revoked");
}

fn key_() -> String {
    key()
}

#[tokio::test]
async fn transfers_move_we_between_wallets_and_replays_are_marked() {
    let s = start().await;
    let a = s.signup("carol").await;
    let b = s.signup("dave").await;
    s.fund(&a, 5 * WE).await;
    let k = key();
    let body = json!({"to": "dave", "amount_micro_we": 2 * WE, "memo": "thanks"});
    let r1 = s
        .send(
            "POST",
            "/v1/wallet/transfers",
            Some(&a),
            Some(&k),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r1.status, StatusCode::OK, "{}", r1.body);
    assert!(!r1.replayed);
    let r2 = s
        .send(
            "POST",
            "/v1/wallet/transfers",
            Some(&a),
            Some(&k),
            Some(body),
        )
        .await;
    assert_eq!(r2.status, StatusCode::OK);
    assert!(r2.replayed);
    assert_eq!(r1.body, r2.body);
    assert_eq!(s.balance(&a).await, 3 * WE);
    assert_eq!(s.balance(&b).await, 2 * WE);
    // Same key, different body: refused, nothing posted.
    let r3 = s
        .send(
            "POST",
            "/v1/wallet/transfers",
            Some(&a),
            Some(&k),
            Some(json!({"to": "dave", "amount_micro_we": 1})),
        )
        .await;
    assert_eq!(r3.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r3.body["error"], "idempotency_key_reused");
    assert_eq!(s.balance(&a).await, 3 * WE);
    let audit = s.audit().await;
    assert_eq!(audit["wallets_total"], 5 * WE);
    assert_eq!(audit["system_balances"]["system:issuance"], -5 * WE);
}

#[tokio::test]
async fn http_hooks_answer_like_the_in_process_ones() {
    let s = start().await;
    let token = s.signup("erin").await;
    let key = s.channel_with_key(&token, "erin").await;
    let http = HttpHooks::new(s.base.clone(), NODE).expect("hooks");
    assert_eq!(
        http.authorize_publish(&publish(&key)).await,
        Err(Denied::NoBandwidth {
            channel: "erin".into()
        })
    );
    assert_eq!(
        http.authorize_publish(&publish("wrong")).await,
        Err(Denied::UnknownKey)
    );
    let play = |ch: &str| PlayRequest {
        app: "live".into(),
        channel: ch.into(),
        token: None,
        protocol: PlayProtocol::Flv,
        client_addr: None,
    };
    assert_eq!(http.authorize_play(&play("erin")).await, Ok(()));
    assert_eq!(
        http.authorize_play(&play("ghost")).await,
        Err(Denied::UnknownChannel {
            channel: "ghost".into()
        })
    );
    assert_eq!(http.stop_orders().await, Ok(vec![]));

    // A wrong node token is refused, and the hooks say the plane is unavailable.
    let bad = HttpHooks::new(s.base.clone(), "wrong-token").expect("hooks");
    assert!(matches!(
        bad.authorize_publish(&publish(&key)).await,
        Err(Denied::Unavailable(_))
    ));
    let r = s
        .post(
            "/v1/hooks/publish",
            Some(&token),
            json!({"app": "live", "stream_key": key}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a user token is not a node token"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_route_exists() {
    let s = start().await;
    let r = s.get("/v1/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.body["paths"].as_object().expect("paths");
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: std::collections::BTreeSet<(String, String)> = westream_control::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served, "openapi.json and api::ROUTES differ");
    for (method, path) in &served {
        let concrete = path
            .replace("{channel}", "nochannel")
            .replace("{key_id}", "1");
        let resp = s.send(method, &concrete, None, None, None).await;
        assert_ne!(
            resp.body["error"], "no_route",
            "{method} {path} is not routed"
        );
        assert_ne!(
            resp.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
    let r = s.get("/v1/nothing/here", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "no_route");
}

#[tokio::test]
async fn metrics_register_and_count_requests_by_route() {
    let s = start().await;
    let registry = prometheus::Registry::new();
    s.plane.register_metrics(&registry).expect("register");
    let token = s.signup("frank").await;
    s.fund(&token, WE).await;
    let families = registry.gather();
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    assert!(
        names.contains(&"westream_control_http_requests_total"),
        "{names:?}"
    );
    assert!(
        names.contains(&"westream_control_ledger_postings_total"),
        "{names:?}"
    );
    let req = families
        .iter()
        .find(|f| f.name() == "westream_control_http_requests_total")
        .expect("family");
    let routes: Vec<String> = req
        .get_metric()
        .iter()
        .flat_map(|m| {
            m.get_label()
                .iter()
                .filter(|l| l.name() == "route")
                .map(|l| l.value().to_string())
        })
        .collect();
    assert!(
        routes.contains(&"/v1/wallet/faucet".to_string()),
        "{routes:?}"
    );
}
