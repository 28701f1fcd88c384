//! Times a whole reward epoch at scale (issue #8's speed target): N accounts
//! (default 1,000,000) with synthetic activity and payout addresses, then
//! one `run_epoch` on the embedded chain: flush, close, compute, tree,
//! commit, anchor. Then proof lookups through the claims path. Prints the
//! phases, the peak RSS (VmHWM) and the proof lookup time.
//!
//! cargo run --release -p westream-control --example epoch_bench [-- N]

use std::time::Instant;

use westream_control::{ControlConfig, ControlPlane};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn address(i: u64) -> String {
    format!("0x{:040x}", i + 1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ControlConfig {
        dev_mode: true,
        admin_token: "bench-admin-token".into(),
        ..ControlConfig::default()
    };
    config.rewards.min_account_age_ms = 0;
    config.rewards.incentive_fund_micro_we = 125_000_000_000_000;
    let plane = {
        let (config, path) = (config.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || ControlPlane::open(config, &path)).await.unwrap().unwrap()
    };

    // Synthetic accounts, activity and addresses, written directly (one
    // transaction): what a day of a million users leaves in the tables.
    let start = Instant::now();
    {
        let mut db = rusqlite::Connection::open(dir.path().join("control.sqlite")).unwrap();
        let tx = db.transaction().unwrap();
        {
            let mut account =
                tx.prepare("INSERT INTO accounts (id, handle, created_at_ms) VALUES (?1, ?2, 0)").unwrap();
            let mut activity = tx
                .prepare(
                    "INSERT INTO epoch_activity (account_id, epoch, watch_hls_s, chat_messages, likes, gifts_sent_micro)
                     VALUES (?1, 1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            let mut payout =
                tx.prepare("INSERT INTO payout_addresses (account_id, address, since_epoch, set_at_ms) VALUES (?1, ?2, 1, 0)").unwrap();
            for i in 0..n {
                let id = 1_000 + i as i64;
                account.execute((id, format!("user{i}"))).unwrap();
                activity.execute((id, (i % 7200) as i64, (i % 50) as i64, (i % 13) as i64, ((i % 5) * 1_000_000) as i64)).unwrap();
                payout.execute((id, address(i))).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let seeded = start.elapsed();
    let settlement = plane.start_settlement(dir.path()).await.expect("embedded chain");
    let rss_before = peak_rss_mb();

    let start = Instant::now();
    let epoch = settlement.run_epoch(86_400_000).await.expect("epoch runs");
    let epoch_time = start.elapsed();
    let rss_epoch = peak_rss_mb();
    assert!(epoch.anchored, "{epoch:?}");

    // Proof lookups: the first builds the tree from the allocations (cold),
    // the rest read the cached tree.
    let start = Instant::now();
    // Account i = 0 has no activity at all (every indicator is i mod something).
    let first = settlement.claim_info(address(1).parse().unwrap()).await.unwrap().expect("a claim");
    let cold = start.elapsed();
    let lookups = 1_000u64;
    let start = Instant::now();
    for i in 0..lookups {
        let who = 1 + (i * 997) % (n - 1);
        settlement.claim_info(address(who).parse().unwrap()).await.unwrap().expect("a claim");
    }
    let warm = start.elapsed() / lookups as u32;

    println!("accounts                  {n}");
    println!("seeding (not timed work)  {:.2} s", seeded.as_secs_f64());
    println!("epoch: flush, close, compute, tree, commit, anchor  {:.2} s", epoch_time.as_secs_f64());
    println!("  leaves {} released {} micro-WE, root {}", epoch.accounts.unwrap_or(0), epoch.released_micro.unwrap_or(0), epoch.root.as_deref().unwrap_or(""));
    println!("peak RSS before / after the epoch  {rss_before:.0} / {rss_epoch:.0} MB");
    println!("first claim lookup (rebuilds the tree from the allocations)  {:.2} s, proof of {} hashes", cold.as_secs_f64(), first.proof.len());
    println!("claim lookup, cached tree (incl. one eth_call for claimed)   {:.1} us", warm.as_secs_f64() * 1e6);
    println!("peak RSS at the end  {:.0} MB", peak_rss_mb());
}
