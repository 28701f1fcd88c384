//! Deposits (issue #8 item 6): WE sent on chain to an account's deposit
//! address is credited to its wallet once buried under the confirmations,
//! exactly once however often the watcher rescans. The same scenario on the
//! embedded EVM and on anvil over JSON-RPC.

mod common;
#[path = "support/anvil.rs"]
mod anvil;

use std::sync::Arc;

use alloy_primitives::{Address, U256};
use westream_control::settlement::{
    AllocationConfig, Chain, ChainBackend, EvmChain, RpcChain, RpcChainConfig, SettlementConfig, WEI_PER_MICRO_WE,
};

const WE: i64 = 1_000_000;

/// `funder` holds WE on the chain `server`'s settlement runs on.
async fn deposits_are_credited_once(server: &common::TestServer, funder: &dyn Chain, confirmations: u64) {
    let settlement = server.plane.settlement().expect("settlement attached");
    let alice = server.signup("alice").await;
    let r = server.get("/v1/wallet/deposit-address", Some(&alice)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["confirmations"], confirmations);
    let address: Address = r.body["address"].as_str().unwrap().parse().unwrap();
    let again = server.get("/v1/wallet/deposit-address", Some(&alice)).await;
    assert_eq!(again.body["address"], r.body["address"], "one address per account");
    let bob = server.signup("bob").await;
    let bobs = server.get("/v1/wallet/deposit-address", Some(&bob)).await;
    assert_ne!(bobs.body["address"], r.body["address"]);
    assert!(server.get("/v1/wallet/deposit-address", None).await.status == 401);

    // Nothing on chain yet: nothing credited, and rescans stay quiet.
    assert!(settlement.scan_deposits().await.unwrap().is_empty());
    assert_eq!(server.balance(&alice).await, 0);

    // 7.5 WE plus a dust of half a micro-WE, then 2 WE, to alice's address.
    let dust = U256::from(WEI_PER_MICRO_WE / 2);
    funder.transfer(address, U256::from(7_500_000u64) * U256::from(WEI_PER_MICRO_WE) + dust).await.unwrap();
    funder.transfer(address, U256::from(2 * WE as u64) * U256::from(WEI_PER_MICRO_WE)).await.unwrap();
    // Not credited before the confirmations are there.
    if confirmations > 1 {
        assert!(settlement.scan_deposits().await.unwrap().is_empty(), "under the confirmations");
        for _ in 0..confirmations {
            funder.transfer(Address::repeat_byte(0x42), U256::from(1u64)).await.unwrap();
        }
    }
    let credited = settlement.scan_deposits().await.unwrap();
    assert_eq!(credited.iter().map(|c| c.amount_micro).collect::<Vec<_>>(), vec![7_500_000, 2 * WE], "{credited:?}");
    assert_eq!(server.balance(&alice).await, 9_500_000, "dust under one micro-WE is not credited");
    assert_eq!(server.balance(&bob).await, 0);

    // A rescan, and a watcher restarted from an older cursor, credit nothing more.
    assert!(settlement.scan_deposits().await.unwrap().is_empty());
    let db = rusqlite::Connection::open(server.dir.path().join("control.sqlite")).unwrap();
    db.execute("UPDATE chain_cursors SET block = 0 WHERE name = 'deposits'", []).unwrap();
    drop(db);
    assert!(settlement.scan_deposits().await.unwrap().is_empty(), "each Transfer event is credited once");
    assert_eq!(server.balance(&alice).await, 9_500_000);
    let audit = server.audit().await;
    assert_eq!(audit["ok"], true, "{audit}");
}

#[tokio::test]
async fn a_deposit_on_the_embedded_chain_is_credited_once() {
    let server = common::start().await;
    let config = SettlementConfig::default();
    let chain = EvmChain::open(&config, server.dir.path()).unwrap();
    server.plane.attach_settlement(Arc::new(chain.clone())).await.unwrap();
    // The embedded chain has no signatures: the community allocation sends.
    let community = chain.as_sender(config.allocation.community);
    deposits_are_credited_once(&server, &community, 1).await;
}

#[tokio::test]
async fn a_deposit_on_anvil_waits_for_its_confirmations_and_is_credited_once() {
    let Some(anvil) = anvil::start_anvil() else { return };
    let mut cfg = common::test_config();
    cfg.settlement = SettlementConfig {
        backend: ChainBackend::Rpc,
        allocation: AllocationConfig {
            incentive_fund: anvil::ANVIL_ADDRESS_0.parse().unwrap(),
            ..AllocationConfig::default()
        },
        rpc: RpcChainConfig {
            url: anvil.url.clone(),
            private_key: anvil::ANVIL_KEY_0.to_owned(),
            confirmations: 3,
            receipt_timeout_ms: 30_000,
            ..RpcChainConfig::default()
        },
        ..SettlementConfig::default()
    };
    let server = common::start_with(cfg.clone()).await;
    // The operator's transactions wait for 3 confirmations; anvil mines only
    // on transactions, so attach a handle that counts one and let the
    // settlement see the chain with the configured 3.
    let mut sender_cfg = cfg.settlement.clone();
    sender_cfg.rpc.confirmations = 1;
    let chain = RpcChain::connect(&sender_cfg, server.dir.path()).await.unwrap();
    server.plane.attach_settlement(Arc::new(chain.clone())).await.unwrap();
    deposits_are_credited_once(&server, &chain, 3).await;
    drop(anvil);
}
