//! 1,000 idle WebSocket clients in one room: the server's memory grows by
//! less than the documented bound per client
//! (`westream_control::rooms::IDLE_CLIENT_BOUND_BYTES`, 64 KiB).
//!
//! RSS is read from /proc/self/status in this process, which also holds the
//! clients; they are raw TCP sockets that did the upgrade handshake and
//! hold nothing else, so the growth is the server's. One test in this
//! binary, so no other test allocates meanwhile.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use westream_control::rooms::IDLE_CLIENT_BOUND_BYTES;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

async fn connect_many(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.div_ceil(100) {
        let batch = (n - out.len()).min(100);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let addr = addr.to_string();
                tokio::spawn(async move { idle_client(&addr, "star").await })
            })
            .collect();
        for t in tasks {
            out.push(t.await.expect("join"));
        }
    }
    out
}

async fn wait_for_clients(s: &TestServer, n: usize) {
    let room = s.plane.rooms().room("star");
    let deadline = Instant::now() + Duration::from_secs(20);
    while room.clients() != n {
        assert!(Instant::now() < deadline, "{} of {n} clients registered", room.clients());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_clients_stay_under_the_documented_bound() {
    let s = start_with(open_rooms_config()).await;
    s.streamer("star").await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // Warm-up: one-off allocations (runtime, pools, the room) before the baseline.
    let warm = connect_many(&addr, 100).await;
    wait_for_clients(&s, 100).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let idle = connect_many(&addr, 1_000).await;
    wait_for_clients(&s, 1_100).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    let per_client = after.saturating_sub(before) / 1_000;
    eprintln!(
        "RSS {} KiB -> {} KiB: {} bytes per idle client (bound {IDLE_CLIENT_BOUND_BYTES})",
        before / 1024,
        after / 1024,
        per_client
    );
    assert!(
        per_client <= IDLE_CLIENT_BOUND_BYTES,
        "{per_client} bytes per idle client exceeds the documented {IDLE_CLIENT_BOUND_BYTES}"
    );
    // They are live clients, not leaked sockets: closing them empties the room.
    drop(idle);
    drop(warm);
    wait_for_clients(&s, 0).await;
}
