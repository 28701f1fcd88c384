//! A multi-node harness: an origin that is also the control plane
//! (`westream serve`) and edges (`westream edge`) as separate processes on
//! loopback ports, each edge with its own configured location. Processes
//! are killed when the harness is dropped.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use crate::common::DEMO_SEED;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "dev-admin-token";
pub const NODE_TOKEN: &str = "cluster-node-token";

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_http(addr: SocketAddr, child: &mut Child, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("node exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "node on {addr} did not come up: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One running process.
pub struct Node {
    pub child: Child,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
}

impl Node {
    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An origin + control plane, more plain origins, and edges.
pub struct Cluster {
    pub origin: Node,
    pub relay: SocketAddr,
    pub cert_sha256: String,
    /// Plain origins (static channel `demo`/`demo-key`, no control plane),
    /// with their relay address and certificate fingerprint. Edges started
    /// after [`Cluster::add_origin`] list them first, so they pull from them.
    pub origins: Vec<(Node, SocketAddr, String)>,
    pub edges: Vec<(String, Node)>,
    /// `hub.publisher_grace_ms` of edges started from now on: how long an
    /// edge keeps its viewers while its upstream is being replaced.
    pub edge_grace_ms: u64,
}

/// Writes `{dir}/{file}`: the settings every node shares (short segments,
/// the given publisher grace), then `rest`.
fn node_config(dir: &std::path::Path, file: &str, grace_ms: u64, rest: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(file);
    let text = format!("[hub]\npublisher_grace_ms = {grace_ms}\n[hls]\nsegment_duration_ms = 1000\n{rest}");
    std::fs::write(&path, text).unwrap();
    path
}

/// `westream serve` with a relay; waits for HTTP and the certificate
/// fingerprint it writes.
fn start_serve(dir: &std::path::Path, config: &std::path::Path) -> (Node, SocketAddr, String) {
    let (rtmp, http): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_tcp()).parse().unwrap(), format!("127.0.0.1:{}", free_tcp()).parse().unwrap());
    let relay: SocketAddr = format!("127.0.0.1:{}", free_udp()).parse().unwrap();
    let mut child = spawn(&["serve"], config, dir, rtmp, http, &["--relay-listen".into(), relay.to_string()]);
    wait_http(http, &mut child, &dir.join("stderr.log"));
    let fp_file = dir.join("relay-cert.pem.sha256");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cert_sha256 = loop {
        if let Ok(s) = std::fs::read_to_string(&fp_file) {
            if s.trim().len() == 64 {
                break s.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "origin wrote no certificate fingerprint");
        std::thread::sleep(Duration::from_millis(50));
    };
    (Node { child, rtmp, http, dir: dir.to_path_buf() }, relay, cert_sha256)
}

fn spawn(args: &[&str], config: &std::path::Path, dir: &std::path::Path, rtmp: SocketAddr, http: SocketAddr, extra: &[String]) -> Child {
    // Logs (stdout) and errors in one file per node.
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_westream"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--rtmp-listen", &rtmp.to_string(), "--http-listen", &http.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("westream starts")
}

impl Cluster {
    /// Starts the origin (channel `demo`, key `demo-key`) with the given
    /// `[control.edges]` heartbeat timeout.
    pub fn start_origin(scratch: PathBuf, heartbeat_timeout_ms: u64) -> Cluster {
        let dir = scratch.join("origin");
        let config = node_config(
            &dir,
            "origin.toml",
            400,
            &format!(
                r#"
[relay]
enabled = true
[control]
dev_mode = true
admin_token = "{ADMIN_TOKEN}"
node_tokens = ["{NODE_TOKEN}"]
[control.edges]
heartbeat_timeout_ms = {heartbeat_timeout_ms}
{DEMO_SEED}"#
            ),
        );
        let (origin, relay, cert_sha256) = start_serve(&dir, &config);
        Cluster { origin, relay, cert_sha256, origins: Vec::new(), edges: Vec::new(), edge_grace_ms: 400 }
    }

    /// Starts a plain origin (no control plane): channel `demo`, key
    /// `demo-key`, relay open to the cluster's node token.
    pub fn add_origin(&mut self, id: &str) {
        let dir = self.origin.dir.parent().unwrap().join(id);
        let config = node_config(
            &dir,
            "origin.toml",
            400,
            &format!(
                r#"
[relay]
enabled = true
node_tokens = ["{NODE_TOKEN}"]
[[channels]]
name = "demo"
stream_key = "demo-key"
"#
            ),
        );
        self.origins.push(start_serve(&dir, &config));
    }

    /// Starts an edge process at a location; it registers with the origin's
    /// control plane and heartbeats every `heartbeat_interval_ms`.
    pub fn add_edge(&mut self, id: &str, latitude: f64, longitude: f64, heartbeat_interval_ms: u64) {
        let dir = self.origin.dir.parent().unwrap().join(id);
        let mut origins = String::new();
        let listed = self.origins.iter().map(|(_, relay, cert)| (relay, cert)).chain([(&self.relay, &self.cert_sha256)]);
        for (relay, cert) in listed {
            origins.push_str(&format!("[[edge.origins]]\nquic_addr = \"{relay}\"\ncert_sha256 = \"{cert}\"\n"));
        }
        let config = node_config(
            &dir,
            "edge.toml",
            self.edge_grace_ms,
            &format!(
                r#"
[edge]
id = "{id}"
region = "{id}"
latitude = {latitude}
longitude = {longitude}
node_token = "{NODE_TOKEN}"
heartbeat_interval_ms = {heartbeat_interval_ms}
upstream_wait_ms = 5000
{origins}"#
            ),
        );
        let (rtmp, http): (SocketAddr, SocketAddr) =
            (format!("127.0.0.1:{}", free_tcp()).parse().unwrap(), format!("127.0.0.1:{}", free_tcp()).parse().unwrap());
        let control = format!("http://{}", self.origin.http);
        let mut child = spawn(&["edge"], &config, &dir, rtmp, http, &["--control".into(), control]);
        wait_http(http, &mut child, &dir.join("stderr.log"));
        self.edges.push((id.to_string(), Node { child, rtmp, http, dir }));
    }

    /// The control plane's `GET /v1/edges`.
    pub async fn edges_listed(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("http://{}/v1/edges", self.origin.http))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until every started edge is registered and healthy.
    pub async fn wait_all_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listed = self.edges_listed().await;
            let edges = listed["edges"].as_array().cloned().unwrap_or_default();
            if edges.len() == self.edges.len() && edges.iter().all(|e| e["healthy"] == true) {
                return;
            }
            assert!(Instant::now() < deadline, "edges not all healthy: {listed}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/play/demo` for a client at a location.
    pub async fn play(&self, format: &str, lat: f64, lon: f64) -> serde_json::Value {
        reqwest::get(format!("http://{}/v1/play/demo?format={format}&lat={lat}&lon={lon}", self.origin.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
