//! The bandwidth-package flow end to end over HTTP, with the embedded control
//! plane on a real SQLite file: sign up, fund, buy, go live with ffmpeg, pull
//! FLV until the package runs dry, see the stream stopped after the grace
//! period and a new publish refused; the usage history matches the bytes
//! the viewers actually pulled.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use westream_media::{Config, Server};

const ADMIN: &str = "test-admin-token";

fn control_config() -> Config {
    let text = format!(
        r#"
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{}"
usage_report_interval_ms = 250
[hub]
publisher_grace_ms = 300
[hls]
enabled = false
[control]
dev_mode = true
admin_token = "{ADMIN}"
node_tokens = ["test-node-token"]
faucet_enabled = true
stop_grace_ms = 1000
hook_cache_ttl_ms = 100
[[control.products]]
id = "tiny"
description = "3 MB"
bandwidth_bytes = 3000000
validity_days = 1
price_micro_we = 2000000
"#,
        scratch_dir("control").display()
    );
    Config::parse(&text).expect("config parses")
}

/// Pulls an FLV stream until it ends, adding every byte to `total`.
fn pull(url: String, total: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut resp) = reqwest::get(&url).await else { return };
        if resp.status() != 200 {
            return;
        }
        while let Ok(Some(chunk)) = resp.chunk().await {
            total.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_runs_dry_stream_stops_and_usage_matches_the_bytes_pulled() {
    let clip = make_clip_with_bitrate(30, "1500k");
    let server = Server::start(control_config()).await.unwrap();
    let api = Api::new(server.http_addr);

    let (code, body) = api.post("/v1/accounts", None, json!({"handle": "alice"})).await;
    assert_eq!(code, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let (code, body) = api.post("/v1/wallet/faucet", Some(&token), json!({"amount_micro_we": 5_000_000})).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = api.post("/v1/channels", Some(&token), json!({"name": "alice"})).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = api.post("/v1/channels/alice/keys", Some(&token), json!({})).await;
    assert_eq!(code, 201, "{body}");
    let key = body["key"].as_str().unwrap().to_string();

    // No package yet: publishing is refused with a reason.
    let mut early = publish(&clip, &rtmp_url(server.rtmp_addr, &key), &[]);
    assert!(!tokio::time::timeout(Duration::from_secs(10), early.wait()).await.unwrap().unwrap().success());
    assert!(server.hub.live("alice").is_none());

    let (code, body) = api.post("/v1/packages", Some(&token), json!({"product_id": "tiny"})).await;
    assert_eq!(code, 201, "{body}");
    let (_, wallet) = api.get("/v1/wallet", Some(&token)).await;
    assert_eq!(wallet["balance_micro_we"], json!(3_000_000), "{wallet}");

    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, &key), &[]);
    wait_media(&server, "alice").await;
    let pulled = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| pull(format!("http://{}/live/alice.flv", server.http_addr), Arc::clone(&pulled)))
        .collect();

    // 3 MB at ~4 x 190 KB/s runs dry in a few seconds; then 1 s of grace,
    // then the publisher is cut and the channel ends.
    let status = tokio::time::timeout(Duration::from_secs(25), publisher.wait())
        .await
        .expect("publisher must be stopped well before its 30 s clip ends")
        .unwrap();
    assert!(!status.success(), "ffmpeg should see its connection closed");
    for r in readers {
        tokio::time::timeout(Duration::from_secs(5), r).await.expect("readers end with the channel").unwrap();
    }
    let pulled = pulled.load(Ordering::Relaxed);
    assert!(pulled >= 3_000_000, "viewers pulled {pulled} bytes");

    // A new publish is refused while the package is empty.
    let mut again = publish(&clip, &rtmp_url(server.rtmp_addr, &key), &[]);
    assert!(!tokio::time::timeout(Duration::from_secs(10), again.wait()).await.unwrap().unwrap().success());

    // The usage history sums to what the viewers pulled (FLV headers aside),
    // once the last metering interval is reported.
    let deadline = Instant::now() + Duration::from_secs(5);
    let usage = loop {
        let (code, usage) = api.get("/v1/channels/alice/usage?limit=1000", None).await;
        assert_eq!(code, 200, "{usage}");
        let total = usage["total_bytes_out"].as_u64().unwrap();
        if total + 1000 >= pulled || Instant::now() > deadline {
            break usage;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let total = usage["total_bytes_out"].as_u64().unwrap();
    let headers = 4 * 13;
    assert_eq!(total + headers, pulled, "usage history {total} vs pulled {pulled}");
    let records: u64 = usage["records"].as_array().unwrap().iter().map(|r| r["bytes_out"].as_u64().unwrap_or(0)).sum();
    assert_eq!(records, total, "records sum to the total: {usage}");
    assert_eq!(usage["bytes_remaining"], json!(0), "{usage}");
    assert!(usage["stop_order"].is_object(), "{usage}");
    let (code, audit) = api.get("/v1/admin/ledger/audit", Some(ADMIN)).await;
    assert_eq!(code, 200);
    assert_eq!(audit["ok"], json!(true), "{audit}");
    server.shutdown().await;
}
