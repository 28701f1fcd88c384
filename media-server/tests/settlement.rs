//! Reward epochs settled on a real EVM, end to end (issue #8): ffmpeg goes
//! live, viewers send gifts and share links over HTTP, `POST
//! /v1/admin/epochs` closes three epochs, each root is anchored on the
//! settlement contract, and every account claims on chain with the proof
//! `GET /v1/claims/{address}` gives it. The same scenario runs on the
//! embedded chain and on Foundry's anvil through JSON-RPC. Then the
//! `westream` binary: a crash in the middle of `settle` reruns to the same
//! root, and `verify` fails once a stored allocation is altered by hand.

mod common;
#[path = "../../control-api/tests/support/anvil.rs"]
mod anvil;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use common::*;
use serde_json::{json, Value};
use westream_control::settlement::{micro_to_wei, merkle, Chain, ChainError};
use westream_media::Server;

const STAR: Streamer<'static> = Streamer { handle: "star", api_token: "star-token", channel: "star", stream_key: "star-key" };

/// Epochs only when asked (a day apart otherwise), every account trusted,
/// a low V_target so small test activity releases the pool.
fn rewards_tables(settlement: &str) -> String {
    format!("[control.rewards]\nepoch_ms = 86400000\nmin_account_age_ms = 0\nv_target = 1.0\nflush_interval_ms = 100000\nincentive_fund_micro_we = 125000000000000\n{settlement}")
}

fn address(byte: u8) -> String {
    format!("0x{}", hex_byte(byte).repeat(20))
}

fn hex_byte(b: u8) -> String {
    format!("{b:02x}")
}

struct Scenario {
    api: Api,
    admin: String,
    tokens: HashMap<&'static str, String>,
}

impl Scenario {
    async fn new(server: &Server, tag: &str) -> Scenario {
        let api = Api::new(server.http_addr);
        let mut tokens = HashMap::from([("star", STAR.api_token.to_string())]);
        for handle in ["alice", "bob"] {
            let (code, body) = api.post("/v1/accounts", None, json!({ "handle": handle })).await;
            assert_eq!(code, 201, "{body}");
            let token = body["token"].as_str().expect("token").to_string();
            let (code, body) = api.post("/v1/wallet/faucet", Some(&token), json!({ "amount_micro_we": 100_000_000 })).await;
            assert_eq!(code, 200, "{body}");
            tokens.insert(handle, token);
        }
        let s = Scenario { api, admin: format!("{tag}-admin-token"), tokens };
        for (handle, byte) in [("alice", 0xaa), ("bob", 0xbb), ("star", 0x55)] {
            let (code, body) =
                s.api.put("/v1/account/payout-address", Some(s.token(handle)), json!({ "address": address(byte) })).await;
            assert_eq!(code, 200, "{body}");
        }
        s
    }

    fn token(&self, handle: &str) -> &str {
        &self.tokens[handle]
    }

    async fn gift(&self, from: &str, gift: &str, n: u32) {
        let body = json!({ "gift": gift, "count": n });
        let (code, body) = self.api.post("/v1/rooms/star/gifts", Some(self.token(from)), body).await;
        assert_eq!(code, 200, "{body}");
    }

    async fn run_epoch(&self, expect: i64) -> Value {
        let resp = self
            .api
            .client
            .post(format!("{}/v1/admin/epochs", self.api.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["epoch"], expect, "{e}");
        assert_eq!(e["status"], "computed", "{e}");
        assert_eq!(e["anchored"], true, "{e}");
        let released = e["released_micro"].as_i64().unwrap();
        let paid = e["activity_paid_micro"].as_i64().unwrap() + e["contribution_paid_micro"].as_i64().unwrap();
        assert!(released > 0, "this much activity releases part of the pool: {e}");
        assert_eq!(paid + e["remainder_micro"].as_i64().unwrap(), released, "{e}");
        e
    }

    /// The claim of `who`'s address: (cumulative micro-WE, proof).
    async fn claim_info(&self, byte: u8) -> (i64, Vec<B256>, Value) {
        let (code, body) = self.api.get(&format!("/v1/claims/{}", address(byte)), None).await;
        assert_eq!(code, 200, "{body}");
        let proof: Vec<B256> = body["proof"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().parse().unwrap()).collect();
        let cumulative = body["cumulative_micro_we"].as_i64().unwrap();
        let root: B256 = body["root"].as_str().unwrap().parse().unwrap();
        let account: Address = address(byte).parse().unwrap();
        assert!(merkle::verify(root, account, micro_to_wei(cumulative), &proof), "the proof verifies in Rust");
        (cumulative, proof, body)
    }
}

async fn claim(chain: &dyn Chain, byte: u8, cumulative: i64, proof: &[B256]) -> Result<U256, ChainError> {
    let account: Address = address(byte).parse().unwrap();
    Ok(chain.claim(account, micro_to_wei(cumulative), proof).await?.amount)
}

/// Three epochs with a restart between the second and the third.
async fn three_epochs(config: westream_media::Config, tag: &str) {
    let clip = make_clip(ClipSpec { seconds: 3, ..ClipSpec::default() });
    let server = Server::start(config.clone()).await.expect("server starts");
    let mut s = Scenario::new(&server, tag).await;
    let chain = server.control.as_ref().unwrap().settlement().expect("settlement runs").chain().clone();
    let total_before = chain.balance_of(chain.contracts().distributor).await.unwrap();
    assert_eq!(total_before, U256::ZERO);

    // Epoch 1: the streamer goes live with ffmpeg, alice sends gifts, bob shares.
    let mut ffmpeg = publish(&clip, &rtmp_url(server.rtmp_addr, STAR.stream_key), &[]);
    wait_media(&server, "star").await;
    s.gift("alice", "flower", 3).await;
    let (code, body) = s.api.post("/v1/rooms/star/shares", Some(s.token("bob")), json!(null)).await;
    assert_eq!(code, 200, "{body}");
    assert!(ffmpeg.wait().await.unwrap().success());
    let e1 = s.run_epoch(1).await;
    assert_eq!(e1["accounts"], 3, "alice, bob and star earned: {e1}");

    let (a1, alice_proof1, _) = s.claim_info(0xaa).await;
    let (b1, bob_proof1, _) = s.claim_info(0xbb).await;
    assert!(a1 > 0 && b1 > 0);
    assert_eq!(claim(chain.as_ref(), 0xaa, a1, &alice_proof1).await.unwrap(), micro_to_wei(a1));
    assert_eq!(chain.balance_of(address(0xaa).parse().unwrap()).await.unwrap(), micro_to_wei(a1));
    let again = claim(chain.as_ref(), 0xaa, a1, &alice_proof1).await.unwrap_err();
    assert!(matches!(again, ChainError::NothingToClaim { .. }), "a second claim pays nothing: {again}");

    // Epoch 2: alice gives more; the streamer withdraws 2 WE of gift earnings.
    s.gift("alice", "flower", 2).await;
    let (code, body) =
        s.api.post("/v1/wallet/withdrawals", Some(s.token("star")), json!({ "amount_micro_we": 2_000_000 })).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["epoch"], 2);
    let e2 = s.run_epoch(2).await;
    assert_eq!(e2["withdrawals_micro"], 2_000_000);
    let (a2, alice_proof2, _) = s.claim_info(0xaa).await;
    assert!(a2 > a1, "cumulative amounts only grow: {a1} -> {a2}");
    // The old root: bob's epoch-1 proof no longer matches.
    let old = claim(chain.as_ref(), 0xbb, b1, &bob_proof1).await.unwrap_err();
    assert!(matches!(old, ChainError::InvalidProof), "{old}");
    // A tampered proof, and alice's proof for another account.
    let mut tampered = alice_proof2.clone();
    tampered[0].0[0] ^= 1;
    assert!(matches!(claim(chain.as_ref(), 0xaa, a2, &tampered).await.unwrap_err(), ChainError::InvalidProof));
    assert!(matches!(claim(chain.as_ref(), 0xbb, a2, &alice_proof2).await.unwrap_err(), ChainError::InvalidProof));
    // Claiming between epochs pays exactly the difference.
    assert_eq!(claim(chain.as_ref(), 0xaa, a2, &alice_proof2).await.unwrap(), micro_to_wei(a2 - a1));
    let (s2, _, star_claim) = s.claim_info(0x55).await;
    assert!(s2 >= 2_000_000, "the withdrawal is claimable: {star_claim}");
    let contracts = chain.contracts();
    drop(chain);
    server.shutdown().await;

    // Restart: the chain, the epoch counter and what is unclaimed survive.
    let server = Server::start(config).await.expect("server restarts on the same data dir");
    s.api = Api::new(server.http_addr);
    let chain = server.control.as_ref().unwrap().settlement().unwrap().chain().clone();
    assert_eq!(chain.contracts(), contracts, "the contracts are not redeployed");
    assert_eq!(chain.last_epoch().await.unwrap(), 2);
    let (b2, bob_proof2, _) = s.claim_info(0xbb).await;
    assert_eq!(b2, b1, "bob was idle in epoch 2");
    assert_eq!(claim(chain.as_ref(), 0xbb, b2, &bob_proof2).await.unwrap(), micro_to_wei(b1), "still owed after the restart");

    // Epoch 3.
    s.gift("bob", "flower", 1).await;
    let e3 = s.run_epoch(3).await;
    let total3 = e3["total_cumulative_micro"].as_i64().unwrap();
    let root3: B256 = e3["root"].as_str().unwrap().parse().unwrap();
    // The contract refuses an out-of-order epoch and a decreasing total.
    let skip = chain.publish_root(5, root3, micro_to_wei(total3)).await.unwrap_err();
    assert!(matches!(skip, ChainError::EpochOutOfOrder { .. }), "{skip}");
    let down = chain.publish_root(4, root3, micro_to_wei(total3 - 1)).await.unwrap_err();
    assert!(matches!(down, ChainError::TotalDecreased { .. }), "{down}");

    // Everyone claims what is left; then the contract holds nothing owed.
    let mut leaves = 0;
    for byte in [0xaa, 0xbb, 0x55] {
        let (c, proof, body) = s.claim_info(byte).await;
        let claimed: U256 = body["claimed_wei"].as_str().unwrap().parse().unwrap();
        if claimed == micro_to_wei(c) {
            let none = claim(chain.as_ref(), byte, c, &proof).await.unwrap_err();
            assert!(matches!(none, ChainError::NothingToClaim { .. }), "{none}");
        } else {
            let paid = claim(chain.as_ref(), byte, c, &proof).await.unwrap();
            assert_eq!(paid, micro_to_wei(c) - claimed, "{body}");
        }
        assert_eq!(chain.balance_of(address(byte).parse().unwrap()).await.unwrap(), micro_to_wei(c));
        leaves += c;
    }
    assert_eq!(leaves, total3, "the anchored total is the sum of the leaves");
    let held = chain.balance_of(contracts.distributor).await.unwrap();
    let claimed = chain.total_claimed().await.unwrap();
    assert_eq!(held + claimed, micro_to_wei(total3));
    assert_eq!(held, U256::ZERO);

    let (_, audit) = s.api.get("/v1/admin/ledger/audit", Some(&s.admin)).await;
    assert_eq!(audit["ok"], true, "{audit}");
    let report = server.control.as_ref().unwrap().settlement().unwrap().verify().await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.epochs_checked, 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_epochs_on_the_embedded_chain_pay_every_claim_exactly_once() {
    let config = control_config("settle-evm", &[STAR], "", &rewards_tables(""));
    three_epochs(config, "settle-evm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_epochs_on_anvil_over_json_rpc_pay_every_claim_exactly_once() {
    let Some(anvil) = anvil::start_anvil() else { return };
    let settlement = format!(
        "[control.settlement]\nbackend = \"rpc\"\n[control.settlement.allocation]\nincentive_fund = \"{}\"\n\
         [control.settlement.rpc]\nurl = \"{}\"\nprivate_key = \"{}\"\nconfirmations = 1\nreceipt_timeout_ms = 30000\n",
        anvil::ANVIL_ADDRESS_0,
        anvil.url,
        anvil::ANVIL_KEY_0
    );
    let config = control_config("settle-rpc", &[STAR], "", &rewards_tables(&settlement));
    three_epochs(config, "settle-rpc").await;
    drop(anvil);
}

fn westream(args: &[&str], config: &Path, failpoint: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_westream"));
    cmd.args(args).arg("--config").arg(config).env("RUST_LOG", "warn");
    if let Some(f) = failpoint {
        cmd.env("WESTREAM_FAILPOINT", f);
    }
    cmd.output().expect("westream runs")
}

fn settled_root(out: &std::process::Output) -> String {
    assert!(out.status.success(), "settle failed: {}", String::from_utf8_lossy(&out.stderr));
    let e: Value = serde_json::from_slice(&out.stdout).expect("settle prints the epoch");
    e["root"].as_str().unwrap().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_settle_reruns_to_the_same_root_and_verify_catches_an_altered_allocation() {
    // Activity in a data dir, then the server stops.
    let text = control_config_text("settle-cli", &[STAR], "", &rewards_tables(""));
    let config = westream_media::Config::parse(&text).unwrap();
    let base = config.server.data_dir.clone();
    let server = Server::start(config).await.unwrap();
    let s = Scenario::new(&server, "settle-cli").await;
    s.gift("alice", "flower", 4).await;
    s.gift("bob", "kiss", 2).await;
    server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The same data dir three times: a clean settle, a crash after closing
    // the epoch, a crash after committing it (before anchoring).
    let dirs: Vec<_> = ["clean", "after-close", "after-commit"].iter().map(|t| scratch_dir(&format!("settle-{t}"))).collect();
    let mut configs = Vec::new();
    for dir in &dirs {
        copy_dir(&base, dir);
        let path = dir.join("westream.toml");
        let own = text.replace(&format!("data_dir = \"{}\"", base.display()), &format!("data_dir = \"{}\"", dir.display()));
        std::fs::write(&path, own).unwrap();
        configs.push(path);
    }
    let clean = settled_root(&westream(&["settle"], &configs[0], None));

    let crashed = westream(&["settle"], &configs[1], Some("settle-after-close"));
    assert!(!crashed.status.success(), "the failpoint aborts the process");
    assert_eq!(settled_root(&westream(&["settle"], &configs[1], None)), clean, "the rerun finishes the closed epoch");

    let crashed = westream(&["settle"], &configs[2], Some("settle-after-commit"));
    assert!(!crashed.status.success());
    // The rerun anchors epoch 1 first, then settles an (empty) epoch 2.
    let out = westream(&["settle"], &configs[2], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verified = westream(&["verify"], &configs[2], None);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["chain_last_epoch"], 2, "{report}");
    let db = rusqlite::Connection::open(dirs[2].join("control.sqlite")).unwrap();
    let root1: String = db.query_row("SELECT root FROM epochs WHERE epoch = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(root1, clean);

    // verify passes on the clean dir, and fails once an allocation is altered.
    let ok = westream(&["verify"], &configs[0], None);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let db = rusqlite::Connection::open(dirs[0].join("control.sqlite")).unwrap();
    let changed = db
        .execute("UPDATE epoch_allocations SET activity_micro = activity_micro + 1 WHERE rowid = (SELECT MIN(rowid) FROM epoch_allocations)", [])
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let bad = westream(&["verify"], &configs[0], None);
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stdout));
    let report: Value = serde_json::from_slice(&bad.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", String::from_utf8_lossy(&bad.stdout), String::from_utf8_lossy(&bad.stderr)));
    let problems = report["problems"].to_string();
    assert!(problems.contains("epoch 1"), "{problems}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_time_counts_for_a_signed_in_viewer_on_every_protocol_and_not_for_forged_or_short_sessions() {
    let tables = "[control.rewards]\nmin_watch_session_ms = 1000\nflush_interval_ms = 100000\n";
    let text = control_config_text("watch", &[STAR], "", tables).replacen("[server]\n", "[server]\nusage_report_interval_ms = 200\n", 1);
    let server = Server::start(westream_media::Config::parse(&text).unwrap()).await.unwrap();
    let api = Api::new(server.http_addr);
    let mut viewers = Vec::new();
    for handle in ["watcher", "brief"] {
        let (_, body) = api.post("/v1/accounts", None, json!({ "handle": handle })).await;
        let token = body["token"].as_str().unwrap().to_string();
        let (code, vt) = api.get("/v1/accounts/me/viewer-token", Some(&token)).await;
        assert_eq!(code, 200, "{vt}");
        viewers.push((body["account"]["id"].as_i64().unwrap(), vt["token"].as_str().unwrap().to_string()));
    }
    let clip = make_clip(ClipSpec { seconds: 8, ..ClipSpec::default() });
    let _ffmpeg = publish(&clip, &rtmp_url(server.rtmp_addr, STAR.stream_key), &[]);
    wait_media(&server, "star").await;
    let (watcher, brief) = (&viewers[0], &viewers[1]);

    // The watcher reads FLV and RTMP for seconds; a forged token reads FLV
    // as long; "brief" leaves after a moment.
    let flv = format!("http://{}/live/star.flv?viewer={}", server.http_addr, watcher.1);
    let rtmp = format!("{}?viewer={}", rtmp_url(server.rtmp_addr, "star"), watcher.1);
    let forged = format!("http://{}/live/star.flv?viewer={}x", server.http_addr, &watcher.1[..watcher.1.len() - 1]);
    let hls = format!("http://{}/live/star/index.m3u8?viewer={}", server.http_addr, watcher.1);
    let playlist = format!("http://{}/live/star/index.m3u8", server.http_addr);
    let (code, _) = poll_until(|| http_get(&playlist), |(code, _)| *code == 200).await;
    assert_eq!(code, 200, "the HLS playlist is up");
    let (a, b, c, d) = tokio::join!(probe_for(flv, 4), probe_for(rtmp, 4), probe_for(forged, 4), probe_for(hls, 4));
    assert!(a > 30 && b > 30 && c > 30 && d > 30, "every reader got video: {a} {b} {c} {d}");
    let mut short = reqwest::get(format!("http://{}/live/star.flv?viewer={}", server.http_addr, brief.1)).await.unwrap();
    assert!(short.chunk().await.unwrap().is_some());
    drop(short);

    let plane = server.control.as_ref().unwrap().clone();
    let day = westream_control::rewards::activity::day_of(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
    );
    let rows = poll_until(
        || {
            let plane = plane.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    plane.flush_activity().unwrap();
                    plane.store().activity_of_day(day).unwrap()
                })
                .await
                .unwrap()
            }
        },
        // An HLS session ends once its player has been quiet for the window (6 s).
        |rows| rows.iter().any(|(a, i)| *a == watcher.0 && i.plays >= 3),
    )
    .await;
    let of = |id: i64| rows.iter().find(|(a, _)| *a == id).map(|(_, i)| *i).unwrap_or_default();
    let w = of(watcher.0);
    assert_eq!(w.plays, 3, "one FLV, one RTMP and one HLS session: {w:?}");
    assert!(w.watch_seconds.iter().all(|s| *s >= 1), "RTMP, FLV and HLS seconds: {w:?}");
    let b = of(brief.0);
    assert_eq!((b.plays, b.watch_seconds), (0, [0, 0, 0]), "a session under the minimum counts nothing: {b:?}");
    assert_eq!(rows.iter().map(|(_, i)| i.plays).sum::<u64>(), 3, "the forged token counts for nobody: {rows:?}");
    server.shutdown().await;
}
