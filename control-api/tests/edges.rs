//! The edge registry over HTTP: registration and heartbeats with a node
//! token, the operator's list, `GET /v1/play/{channel}` answering the
//! nearest healthy edge (JSON or 302), the origin when none is healthy, the
//! CIDR table for clients without a location, and registrations that
//! survive a restart.

mod common;

use std::time::{Duration, Instant};

use common::{test_config, ADMIN, NODE};
use serde_json::{json, Value};
use westream_control::edges::{CidrLocation, EdgesConfig};
use westream_control::{ControlConfig, ControlPlane};

struct Plane {
    base: String,
    http: reqwest::Client,
    _plane: ControlPlane,
}

async fn start(cfg: ControlConfig, dir: &std::path::Path) -> Plane {
    let path = dir.to_path_buf();
    let plane = tokio::task::spawn_blocking(move || ControlPlane::open(cfg, &path)).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = plane.router();
    tokio::spawn(async move {
        let _ = westream_control::serve::serve(listener, router, std::future::pending()).await;
    });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Plane { base: format!("http://{addr}"), http, _plane: plane }
}

impl Plane {
    async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
    }

    async fn register(&self, id: &str, lat: f64, lon: f64) {
        let body = json!({
            "id": id, "region": id, "latitude": lat, "longitude": lon,
            "capacity_viewers": 100, "capacity_mbps": 1000,
            "urls": {"rtmp": format!("rtmp://{id}:1935/live"), "flv": format!("http://{id}:8080"), "hls": format!("http://{id}:8080")}
        });
        let (status, body, _) = self.call(reqwest::Method::POST, "/v1/edges/register", Some(NODE), Some(body)).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn play(&self, query: &str) -> Value {
        let (status, body, _) = self.call(reqwest::Method::GET, &format!("/v1/play/demo?{query}"), None, None).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

const PARIS: (f64, f64) = (48.8566, 2.3522);
const TOKYO: (f64, f64) = (35.6762, 139.6503);
const NEW_YORK: (f64, f64) = (40.7128, -74.0060);

#[tokio::test]
async fn viewers_are_sent_to_the_nearest_healthy_edge_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ControlConfig { edges: EdgesConfig { heartbeat_timeout_ms: 600, ..EdgesConfig::default() }, ..test_config() };
    let p = start(cfg, dir.path()).await;

    // No edge yet: the origin answers, and says so.
    let body = p.play("format=flv").await;
    assert_eq!(body["edge"], Value::Null);
    assert!(body["note"].as_str().unwrap().contains("origin"), "{body}");
    assert!(body["url"].as_str().unwrap().ends_with("/live/demo.flv"), "{body}");

    // A wrong node token cannot register.
    let (status, _, _) = p
        .call(reqwest::Method::POST, "/v1/edges/register", Some("wrong"), Some(json!({"id": "x"})))
        .await;
    assert_eq!(status, 401);

    for (id, (lat, lon)) in [("paris", PARIS), ("tokyo", TOKYO), ("nyc", NEW_YORK)] {
        p.register(id, lat, lon).await;
    }
    for (id, (lat, lon)) in [("paris", (48.9, 2.4)), ("tokyo", (35.5, 139.8)), ("nyc", (40.8, -73.9))] {
        let body = p.play(&format!("format=hls&lat={lat}&lon={lon}")).await;
        assert_eq!(body["edge"], id, "{body}");
        assert_eq!(body["url"], format!("http://{id}:8080/live/demo/index.m3u8"));
        let body = p.play(&format!("format=flv&lat={lat}&lon={lon}")).await;
        assert_eq!(body["url"], format!("http://{id}:8080/live/demo.flv"));
        let body = p.play(&format!("format=rtmp&lat={lat}&lon={lon}")).await;
        assert_eq!(body["url"], format!("rtmp://{id}:1935/live/demo"));
    }

    // redirect=1 answers a 302 to the same URL.
    let (status, _, headers) = p
        .call(reqwest::Method::GET, "/v1/play/demo?format=flv&lat=48.9&lon=2.4&redirect=1", None, None)
        .await;
    assert_eq!(status, 302);
    assert_eq!(headers["location"], "http://paris:8080/live/demo.flv");

    // The operator's list needs the admin token.
    let (status, _, _) = p.call(reqwest::Method::GET, "/v1/edges", Some(NODE), None).await;
    assert_eq!(status, 403);
    let (status, list, _) = p.call(reqwest::Method::GET, "/v1/edges", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let edges = list["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 3);
    for field in ["id", "urls", "region", "latitude", "longitude", "healthy", "load"] {
        assert!(edges[0].get(field).is_some(), "missing {field}: {list}");
    }

    // Paris stops heartbeating; the others keep beating: within the timeout
    // Paris is out of rotation and its clients go to the next nearest.
    let started = Instant::now();
    loop {
        for id in ["tokyo", "nyc"] {
            let (status, body, _) = p
                .call(reqwest::Method::POST, &format!("/v1/edges/{id}/heartbeat"), Some(NODE), Some(json!({"viewers": 1, "mbps": 0.5, "rtt_ms": 2.0})))
                .await;
            assert_eq!(status, 204, "{body}");
        }
        let body = p.play("format=hls&lat=48.9&lon=2.4").await;
        if body["edge"] == "nyc" {
            break;
        }
        assert_eq!(body["edge"], "paris");
        assert!(started.elapsed() < Duration::from_secs(5), "paris never left rotation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, list, _) = p.call(reqwest::Method::GET, "/v1/edges", Some(ADMIN), None).await;
    let paris = list["edges"].as_array().unwrap().iter().find(|e| e["id"] == "paris").unwrap().clone();
    assert_eq!(paris["healthy"], false, "{paris}");

    // A heartbeat from an unknown edge is a 404: it must register.
    let (status, _, _) = p.call(reqwest::Method::POST, "/v1/edges/ghost/heartbeat", Some(NODE), Some(json!({}))).await;
    assert_eq!(status, 404);
    // Bad input is a 400, not a crash.
    let (status, _, _) = p.call(reqwest::Method::GET, "/v1/play/demo?lat=95&lon=0", None, None).await;
    assert_eq!(status, 400);
    let (status, _, _) = p.call(reqwest::Method::GET, "/v1/play/demo?format=dash", None, None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_client_without_a_location_is_placed_by_the_cidr_table_and_registrations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ControlConfig {
        edges: EdgesConfig {
            locations: vec![CidrLocation { cidr: "127.0.0.0/8".into(), latitude: TOKYO.0, longitude: TOKYO.1, region: "loopback".into() }],
            ..EdgesConfig::default()
        },
        ..test_config()
    };
    {
        let p = start(cfg.clone(), dir.path()).await;
        p.register("paris", PARIS.0, PARIS.1).await;
        p.register("tokyo", TOKYO.0, TOKYO.1).await;
        let body = p.play("format=flv").await;
        assert_eq!(body["edge"], "tokyo", "{body}");
        assert_eq!(body["client"]["source"], "cidr");
    }
    // A restarted control plane knows the edges, out of rotation until they beat.
    let p = start(cfg, dir.path()).await;
    let (_, list, _) = p.call(reqwest::Method::GET, "/v1/edges", Some(ADMIN), None).await;
    let edges = list["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{list}");
    assert!(edges.iter().all(|e| e["healthy"] == false));
    assert_eq!(p.play("format=flv").await["edge"], Value::Null);
    let (status, _, _) = p.call(reqwest::Method::POST, "/v1/edges/paris/heartbeat", Some(NODE), Some(json!({"viewers": 0}))).await;
    assert_eq!(status, 204);
    assert_eq!(p.play("format=flv").await["edge"], "paris");
}
