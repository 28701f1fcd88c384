//! Quick speed figures for the control plane (not a test, no assertions):
//! purchases per second on SQLite (store level and over HTTP, idempotency
//! keys included) and the latency of the in-process publish check with a
//! warm cache.
//!
//! Run: `cargo run --release -p westream-control --example control_bench`

use std::sync::Arc;
use std::time::{Duration, Instant};

use westream_control::hooks::PublishRequest;
use westream_control::store::{Caller, IdemKey};
use westream_control::{
    ControlConfig, ControlPlane, ProductConfig, SeedAccountConfig, SeedChannelConfig,
};

const WE: i64 = 1_000_000;

fn config() -> ControlConfig {
    ControlConfig {
        dev_mode: true,
        faucet_enabled: true,
        faucet_max_micro_we: 1_000_000_000 * WE,
        products: vec![ProductConfig {
            id: "small".into(),
            description: String::new(),
            bandwidth_bytes: 1_000,
            validity_days: 30,
            price_micro_we: 1,
        }],
        seed: vec![SeedAccountConfig {
            handle: "bench".into(),
            api_token: Some("bench-token".into()),
            fund_micro_we: 1_000_000 * WE,
            channels: vec![SeedChannelConfig {
                name: "bench".into(),
                stream_keys: vec!["bench-key".into()],
            }],
            packages: vec!["small".into()],
        }],
        ..ControlConfig::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cfg = config();
    let product = cfg.products[0].clone();
    let plane = ControlPlane::open(cfg, dir.path())?;
    let store = plane.store();
    let caller: Caller = store
        .authenticate("bench-token")?
        .ok_or("seed token missing")?;

    // 1. Store level, one thread: each purchase is its own transaction with
    //    its idempotency row, balance check, two postings and a package.
    let n = 20_000;
    let started = Instant::now();
    for i in 0..n {
        let idem = IdemKey::new(
            format!("acct:{}", caller.account_id),
            format!("s-{i}"),
            "POST /v1/packages",
            &"small",
        );
        store.purchase(&caller, &idem, &product, 1_700_000_000_000)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "store, 1 thread:  {n} purchases in {secs:.2}s = {:.0} purchases/s",
        n as f64 / secs
    );

    // 2. Store level, 16 threads: their writes share group commits.
    let started = Instant::now();
    let mut threads = Vec::new();
    for t in 0..16 {
        let (store, caller, product) = (Arc::clone(&store), caller.clone(), product.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0..n / 16 {
                let idem = IdemKey::new(
                    format!("acct:{}", caller.account_id),
                    format!("t{t}-{i}"),
                    "POST /v1/packages",
                    &"small",
                );
                if let Err(e) = store.purchase(&caller, &idem, &product, 1_700_000_000_000) {
                    eprintln!("purchase failed: {e}");
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "store, 16 threads: {n} purchases in {secs:.2}s = {:.0} purchases/s",
        n as f64 / secs
    );

    // 3. Over HTTP on loopback, 32 requests in flight (client and server
    //    share the machine's cores).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = plane.router();
    tokio::spawn(async move {
        let _ = westream_control::serve::serve(listener, router, std::future::pending()).await;
    });
    let client = reqwest::Client::new();
    let total = 10_000usize;
    let workers = 32;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for i in 0..total / workers {
                let r = client
                    .post(format!("{base}/v1/packages"))
                    .bearer_auth("bench-token")
                    .header("Idempotency-Key", format!("h-{w}-{i}"))
                    .json(&serde_json::json!({"product_id": "small"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => ok += 1,
                    Ok(r) => eprintln!(
                        "purchase answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(e) => eprintln!("purchase failed: {e}"),
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "http, 32 in flight: {ok} purchases in {secs:.2}s = {:.0} purchases/s",
        ok as f64 / secs
    );

    // 4. Publish check, in process, warm cache.
    let hooks = plane.hooks();
    let req = PublishRequest {
        app: "live".into(),
        stream_key: "bench-key".into(),
        client_addr: None,
    };
    hooks
        .authorize_publish(&req)
        .await
        .map_err(|d| d.to_string())?;
    let mut lat = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        let r = hooks.authorize_publish(&req).await;
        lat.push(t.elapsed());
        if r.is_err() {
            return Err("publish denied".into());
        }
    }
    lat.sort();
    println!(
        "publish check (warm cache, in process): p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat[lat.len() - 1]
    );
    let audit = store.audit()?;
    println!(
        "audit ok: {}, journal entries: {}",
        audit.ok, audit.journal_count
    );
    Ok(())
}
