//! Shared test helpers: a real control plane on 127.0.0.1:0 over a real
//! SQLite file in a temp dir, and a small JSON client.
#![allow(dead_code, unreachable_pub)]

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use westream_control::{ControlConfig, ControlPlane, ManualClock, ProductConfig};

pub const ADMIN: &str = "dev-admin-token";
pub const NODE: &str = "test-node-token";
pub const WE: i64 = 1_000_000;

/// A dev config with a small catalogue: `small` (1000 bytes, 1 WE, 30 days),
/// `short` (1000 bytes, 1 WE, 1 day) and `big` (1 GB, 10 WE, 30 days).
pub fn test_config() -> ControlConfig {
    ControlConfig {
        dev_mode: true,
        admin_token: ADMIN.to_string(),
        node_tokens: vec![NODE.to_string()],
        faucet_enabled: true,
        faucet_max_micro_we: 1_000_000 * WE,
        stop_grace_ms: 1_000,
        products: vec![
            product("small", 1_000, 30, WE),
            product("short", 1_000, 1, WE),
            product("big", 1_000_000_000, 30, 10 * WE),
        ],
        ..ControlConfig::default()
    }
}

pub fn product(id: &str, bytes: i64, days: u32, price: i64) -> ProductConfig {
    ProductConfig {
        id: id.to_string(),
        description: String::new(),
        bandwidth_bytes: bytes,
        validity_days: days,
        price_micro_we: price,
    }
}

pub struct TestServer {
    pub base: String,
    pub plane: ControlPlane,
    pub client: reqwest::Client,
    // Kept alive for the server's lifetime; dropped last.
    pub dir: tempfile::TempDir,
}

pub async fn start() -> TestServer {
    start_with(test_config()).await
}

pub async fn start_with(cfg: ControlConfig) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    start_in(cfg, dir).await
}

/// A server whose rooms, votes and tickets read `clock` (starts at the
/// system time, so account ages are real until the test moves it).
pub async fn start_clocked(cfg: ControlConfig) -> (TestServer, std::sync::Arc<ManualClock>) {
    let clock = std::sync::Arc::new(ManualClock::at_system_now());
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_full(cfg, dir, clock.clone()).await;
    (server, clock)
}

/// Room limits that stay out of the way: votes from any account, generous
/// rates. Tests of a limit set it back.
pub fn open_rooms_config() -> ControlConfig {
    let mut cfg = test_config();
    cfg.rooms.min_account_age_ms = 0;
    cfg.rooms.min_activity_events = 0;
    cfg.rooms.gift_rate_requests = 1_000_000;
    cfg.rooms.chat_rate_messages = 1_000_000;
    cfg
}

pub async fn start_in(cfg: ControlConfig, dir: tempfile::TempDir) -> TestServer {
    start_full(cfg, dir, std::sync::Arc::new(westream_control::SystemClock)).await
}

pub async fn start_full(
    cfg: ControlConfig,
    dir: tempfile::TempDir,
    clock: std::sync::Arc<dyn westream_control::Clock>,
) -> TestServer {
    let path = dir.path().to_path_buf();
    let plane = tokio::task::spawn_blocking(move || ControlPlane::open_with_clock(cfg, &path, clock))
        .await
        .expect("join")
        .expect("open control plane");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = plane.router();
    // As a server should: small WebSocket events must not wait for Nagle.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = westream_control::serve::serve(listener, router, std::future::pending()).await;
    });
    TestServer {
        base: format!("http://{addr}"),
        plane,
        client: reqwest::Client::new(),
        dir,
    }
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A fresh idempotency key.
pub fn key() -> String {
    format!(
        "k-{}-{}",
        std::process::id(),
        NEXT_KEY.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub replayed: bool,
}

impl TestServer {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        idem: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "PUT" => self.client.put(url),
            "DELETE" => self.client.delete(url),
            other => panic!("method {other}"),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            body,
            replayed,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send("GET", path, token, None, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        let k = key();
        self.send("POST", path, token, Some(&k), Some(body)).await
    }

    /// Signs up and returns the API token.
    pub async fn signup(&self, handle: &str) -> String {
        let r = self
            .post("/v1/accounts", None, json!({ "handle": handle }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["token"].as_str().expect("token").to_string()
    }

    pub async fn fund(&self, token: &str, amount: i64) {
        let r = self
            .post(
                "/v1/wallet/faucet",
                Some(token),
                json!({ "amount_micro_we": amount }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    pub async fn balance(&self, token: &str) -> i64 {
        let r = self.get("/v1/wallet", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["balance_micro_we"].as_i64().expect("balance")
    }

    /// Creates a channel and a stream key; returns the key.
    pub async fn channel_with_key(&self, token: &str, name: &str) -> String {
        let r = self
            .post("/v1/channels", Some(token), json!({ "name": name }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let r = self
            .send(
                "POST",
                &format!("/v1/channels/{name}/keys"),
                Some(token),
                Some(&key()),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["key"].as_str().expect("key").to_string()
    }

    /// Signs up, funds, and returns (token, account id).
    pub async fn account(&self, handle: &str, fund: i64) -> (String, i64) {
        let r = self
            .post("/v1/accounts", None, json!({ "handle": handle }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let token = r.body["token"].as_str().expect("token").to_string();
        let id = r.body["account"]["id"].as_i64().expect("id");
        if fund > 0 {
            self.fund(&token, fund).await;
        }
        (token, id)
    }

    /// A streamer with a channel of the same name: (token, account id).
    pub async fn streamer(&self, handle: &str) -> (String, i64) {
        let (token, id) = self.account(handle, 0).await;
        let r = self
            .post("/v1/channels", Some(&token), json!({ "name": handle }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        (token, id)
    }

    /// Sends a gift with a fresh idempotency key.
    pub async fn gift(&self, token: &str, channel: &str, body: Value) -> Resp {
        self.post(&format!("/v1/rooms/{channel}/gifts"), Some(token), body)
            .await
    }

    /// Changes room settings as the owner; asserts success.
    pub async fn room_settings(&self, token: &str, channel: &str, body: Value) -> Value {
        let r = self
            .post(&format!("/v1/rooms/{channel}/settings"), Some(token), body)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body
    }

    /// The WebSocket URL of a room.
    pub fn ws_url(&self, channel: &str, token: Option<&str>) -> String {
        let base = self.base.replacen("http://", "ws://", 1);
        match token {
            Some(t) => format!("{base}/v1/rooms/{channel}/ws?token={t}"),
            None => format!("{base}/v1/rooms/{channel}/ws"),
        }
    }

    pub async fn audit(&self) -> Value {
        let r = self.get("/v1/admin/ledger/audit", Some(ADMIN)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["ok"], json!(true), "ledger audit failed: {}", r.body);
        r.body
    }

    pub async fn packages(&self, token: &str) -> Vec<Value> {
        let r = self.get("/v1/packages", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["packages"].as_array().expect("packages").clone()
    }
}

/// A client that upgrades and then never reads or writes again.
pub async fn idle_client(addr: &str, channel: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /v1/rooms/{channel}/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.expect("write");
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("handshake in time")
            .expect("read");
        assert!(n > 0, "closed during handshake");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    sock
}


/// The events of one room WebSocket frame, in order: a bare event, or the
/// `events` of a `batch`.
pub fn frame_events(text: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(text).expect("json frame");
    match v["events"].as_array() {
        Some(events) if v["type"] == "batch" => events.clone(),
        _ => vec![v],
    }
}
