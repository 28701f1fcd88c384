//! Crash safety: SIGKILL the server in the middle of a burst of purchases;
//! after restart the journal balances and every purchase that got a 2xx is
//! in it. The server runs in a child process: this same test binary,
//! re-executed to run only `child_server` (which does nothing otherwise).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use westream_control::ControlPlane;

const CHILD_DIR_ENV: &str = "WESTREAM_CONTROL_CRASH_CHILD_DIR";

#[test]
fn child_server() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let plane = ControlPlane::open(test_config(), std::path::Path::new(&dir)).expect("open");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("LISTENING {}", listener.local_addr().expect("addr"));
        let _ = westream_control::serve::serve(listener, plane.router(), std::future::pending()).await;
    });
}

/// Kills the child server if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &std::path::Path) -> (KillOnDrop, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["child_server", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child server");
    let stdout = child.stdout.take().expect("stdout");
    let child = KillOnDrop(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("child exited early").expect("read");
        // libtest prints "test child_server ... " on the same line first.
        if let Some(at) = line.find("LISTENING ") {
            break line[at + "LISTENING ".len()..].trim().to_string();
        }
    };
    (child, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_burst_keeps_the_journal_balanced_and_every_2xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = spawn_child(dir.path());
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let signup = client
        .post(format!("{base}/v1/accounts"))
        .header("Idempotency-Key", "signup")
        .json(&json!({"handle": "crashy"}))
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), StatusCode::CREATED);
    let body: serde_json::Value = signup.json().await.expect("json");
    let token = body["token"].as_str().expect("token").to_string();
    let funded = 1_000 * WE;
    let r = client
        .post(format!("{base}/v1/wallet/faucet"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "fund")
        .json(&json!({"amount_micro_we": funded}))
        .send()
        .await
        .expect("fund");
    assert_eq!(r.status(), StatusCode::OK);

    let acked: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // 16 workers x 25 purchases each; `small` costs 1 WE, so funds never run out.
    for w in 0..16 {
        let (client, base, token, acked, count) = (
            client.clone(),
            base.clone(),
            token.clone(),
            acked.clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let resp = client
                    .post(format!("{base}/v1/packages"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("buy-{w}-{i}"))
                    .json(&json!({"product_id": "small"}))
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                if resp.status().is_success() {
                    let Ok(body) = resp.json::<serde_json::Value>().await else {
                        return;
                    };
                    if let Some(id) = body["id"].as_i64() {
                        acked.lock().expect("lock").push(id);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count.load(Ordering::SeqCst) < 60 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    child.0.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let _ = child.0.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    eprintln!("acknowledged before/around the kill: {}", acked.len());
    assert!(
        acked.len() >= 60,
        "the burst was cut short before the kill: {}",
        acked.len()
    );
    assert!(
        acked.len() < 400,
        "the kill landed after the burst; nothing was in flight"
    );

    // Restart on the same file: WAL recovery, then check every promise.
    let plane = ControlPlane::open(test_config(), dir.path()).expect("reopen after SIGKILL");
    let store = plane.store();
    let audit = store.audit().expect("audit");
    assert!(audit.ok, "{audit:?}");
    let caller = store
        .authenticate(&token)
        .expect("auth")
        .expect("account survived");
    let packages = store.packages(caller.account_id).expect("packages");
    let ids: std::collections::HashSet<i64> = packages.iter().map(|p| p.id).collect();
    for id in &acked {
        assert!(
            ids.contains(id),
            "package {id} was acknowledged with a 2xx but is gone"
        );
    }
    let balance = store.balance(caller.account_id).expect("balance");
    assert_eq!(
        balance + packages.len() as i64 * WE,
        funded,
        "money and packages agree"
    );
    assert_eq!(audit.journal_count, 1 + packages.len() as i64);
    eprintln!(
        "after restart: {} packages, {} acknowledged",
        packages.len(),
        acked.len()
    );
}
