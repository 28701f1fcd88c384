//! The settlement contracts on a real EVM, the same scenario on both
//! backends: the embedded revm chain, and Foundry's `anvil` (from
//! `control-api/contracts/node_modules`, installed by `npm ci`) through the
//! JSON-RPC backend. No mocks: real bytecode, real trees, real proofs.
//!
//! Without anvil the RPC test skips loudly, unless `WESTREAM_REQUIRE_CHAIN=1`
//! (CI), where it fails.

#[path = "support/anvil.rs"]
mod anvil;
use anvil::{start_anvil, ANVIL_KEY_0, ANVIL_KEY_1};

use alloy_primitives::{Address, B256, U256};
use westream_control::settlement::{
    dev_address, open_chain, AllocationConfig, AnchorOutcome, Chain, ChainBackend, ChainError,
    EvmChain, RpcChain, RpcChainConfig, SettlementConfig, SettlementLeaf, SettlementTree,
    WEI_PER_MICRO_WE, WEI_PER_WE,
};


/// Awaits `$call`, which must fail with an error matching the pattern.
macro_rules! assert_refused {
    ($call:expr, $pattern:pat $(if $guard:expr)?) => {{
        let err = $call.await.unwrap_err();
        assert!(matches!(&err, $pattern $(if $guard)?), "{err}");
    }};
}

fn micro_we(n: u64) -> U256 {
    U256::from(n) * U256::from(WEI_PER_MICRO_WE)
}

fn we(n: u64) -> U256 {
    U256::from(n) * U256::from(WEI_PER_WE)
}

fn account(name: &str) -> Address {
    dev_address(&format!("test-account-{name}"))
}

fn tree(leaves: &[(&str, u64)]) -> SettlementTree {
    SettlementTree::build(leaves.iter().map(|&(name, amount)| SettlementLeaf {
        account: account(name),
        cumulative: micro_we(amount),
    }))
    .unwrap()
}

fn proof_of(tree: &SettlementTree, name: &str) -> (Address, U256, Vec<B256>) {
    let p = tree.proof(account(name)).unwrap();
    (p.account, p.cumulative, p.proof)
}

async fn claim(chain: &dyn Chain, tree: &SettlementTree, name: &str) -> Result<U256, ChainError> {
    let (account, cumulative, proof) = proof_of(tree, name);
    Ok(chain.claim(account, cumulative, &proof).await?.amount)
}

async fn publish(chain: &dyn Chain, epoch: u64, tree: &SettlementTree) {
    let outcome = chain
        .publish_root(epoch, tree.root(), tree.total())
        .await
        .unwrap();
    assert!(
        matches!(outcome, AnchorOutcome::Published(_)),
        "epoch {epoch}: {outcome:?}"
    );
}

/// The whole life of three epochs. `operator` publishes; `intruder` is any
/// other sender; claims go through `operator` (claims are open to anyone).
async fn three_epoch_scenario(
    operator: &dyn Chain,
    intruder: &dyn Chain,
    allocation: &AllocationConfig,
) {
    let c = operator.contracts();
    let d = c.distributor;

    // Supply and allocation, exact.
    assert_eq!(operator.total_supply().await.unwrap(), we(1_250_000_000));
    for (holder, share) in [
        (allocation.issue, 625_000_000),
        (allocation.foundation, 375_000_000),
        (allocation.incentive_fund, 125_000_000),
        (allocation.team, 62_500_000),
        (allocation.community, 62_500_000),
    ] {
        assert_eq!(
            operator.balance_of(holder).await.unwrap(),
            we(share),
            "{holder}"
        );
    }
    assert_eq!(operator.last_epoch().await.unwrap(), 0);
    assert_eq!(operator.epoch_root(1).await.unwrap(), None);

    // Epoch 1.
    let t1 = tree(&[("alice", 100), ("bob", 50)]);
    publish(operator, 1, &t1).await;
    assert_eq!(operator.balance_of(d).await.unwrap(), micro_we(150));
    assert_eq!(
        operator
            .balance_of(allocation.incentive_fund)
            .await
            .unwrap(),
        we(125_000_000) - micro_we(150)
    );
    let anchored = operator.epoch_root(1).await.unwrap().unwrap();
    assert_eq!(
        (anchored.root, anchored.total_cumulative),
        (t1.root(), t1.total())
    );

    assert_eq!(claim(operator, &t1, "alice").await.unwrap(), micro_we(100));
    assert_eq!(
        operator.balance_of(account("alice")).await.unwrap(),
        micro_we(100)
    );
    // A second claim of the same cumulative amount reverts: nothing is owed.
    assert_refused!(
        claim(operator, &t1, "alice"),
        ChainError::NothingToClaim { .. }
    );

    // Epoch 2: alice and bob grow, carol arrives.
    let t2 = tree(&[("alice", 130), ("bob", 70), ("carol", 40)]);
    publish(operator, 2, &t2).await;
    assert_eq!(operator.balance_of(d).await.unwrap(), micro_we(240 - 100));

    // An old root: bob's epoch-1 proof no longer matches.
    assert_refused!(claim(operator, &t1, "bob"), ChainError::InvalidProof);
    // A tampered proof.
    let (carol, carol_amount, mut tampered) = proof_of(&t2, "carol");
    tampered[0].0[0] ^= 0x80;
    assert_refused!(
        operator.claim(carol, carol_amount, &tampered),
        ChainError::InvalidProof
    );
    // Carol's leaf claimed for another account.
    let (_, _, carol_proof) = proof_of(&t2, "carol");
    assert_refused!(
        operator.claim(account("bob"), carol_amount, &carol_proof),
        ChainError::InvalidProof
    );
    // A changed amount.
    assert_refused!(
        operator.claim(carol, carol_amount + U256::from(1), &carol_proof),
        ChainError::InvalidProof
    );

    // Claims pay exactly the cumulative difference; bob collects both epochs.
    assert_eq!(claim(operator, &t2, "alice").await.unwrap(), micro_we(30));
    assert_eq!(
        claim(intruder, &t2, "bob").await.unwrap(),
        micro_we(70),
        "anyone may claim for bob"
    );
    assert_eq!(
        operator.claimed(account("bob")).await.unwrap(),
        micro_we(70)
    );

    // Anchoring is idempotent: the same epoch again sends nothing.
    let nonce = operator.transaction_count(operator.sender()).await.unwrap();
    assert_eq!(
        operator
            .publish_root(2, t2.root(), t2.total())
            .await
            .unwrap(),
        AnchorOutcome::AlreadyAnchored
    );
    assert_eq!(
        operator
            .publish_root(1, t1.root(), t1.total())
            .await
            .unwrap(),
        AnchorOutcome::AlreadyAnchored
    );
    assert_eq!(
        operator.transaction_count(operator.sender()).await.unwrap(),
        nonce
    );
    assert_refused!(
        operator.publish_root(2, t1.root(), t2.total()),
        ChainError::EpochConflict { anchored, .. } if anchored.root == t2.root()
    );

    // The contract enforces order, a non-decreasing total and the operator.
    let t3 = tree(&[("alice", 150), ("bob", 70), ("carol", 40), ("dave", 10)]);
    assert_refused!(
        operator.publish_root(4, t3.root(), t3.total()),
        ChainError::EpochOutOfOrder {
            expected: 3,
            given: 4
        }
    );
    assert_refused!(
        operator.publish_root(3, t3.root(), t2.total() - U256::from(1)),
        ChainError::TotalDecreased { .. }
    );
    assert_refused!(
        intruder.publish_root(3, t3.root(), t3.total()),
        ChainError::NotOperator { caller } if *caller == intruder.sender()
    );
    assert_eq!(
        operator.transaction_count(operator.sender()).await.unwrap(),
        nonce,
        "refused publishes cost nothing"
    );
    assert_eq!(operator.last_epoch().await.unwrap(), 2);

    // Epoch 3, then everyone claims what is left.
    publish(operator, 3, &t3).await;
    assert_eq!(claim(operator, &t3, "alice").await.unwrap(), micro_we(20));
    assert_eq!(claim(operator, &t3, "carol").await.unwrap(), micro_we(40));
    assert_eq!(claim(operator, &t3, "dave").await.unwrap(), micro_we(10));
    assert_refused!(
        claim(operator, &t3, "bob"),
        ChainError::NothingToClaim { .. }
    );

    // Solvency: what the distributor holds plus what it paid is what was anchored.
    let held = operator.balance_of(d).await.unwrap();
    let paid = operator.total_claimed().await.unwrap();
    assert_eq!(held + paid, t3.total());
    assert_eq!(held, U256::ZERO);
    let mut claimed = U256::ZERO;
    for name in ["alice", "bob", "carol", "dave"] {
        let c = operator.claimed(account(name)).await.unwrap();
        assert_eq!(
            operator.balance_of(account(name)).await.unwrap(),
            c,
            "{name}"
        );
        claimed += c;
    }
    assert_eq!(claimed, paid);
    assert_eq!(
        operator
            .balance_of(allocation.incentive_fund)
            .await
            .unwrap(),
        we(125_000_000) - t3.total()
    );
    assert_eq!(operator.last_epoch().await.unwrap(), 3);
}

#[tokio::test]
async fn embedded_chain_runs_three_epochs_of_claims_with_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let config = SettlementConfig::default();
    let chain = EvmChain::open(&config, dir.path()).unwrap();
    let intruder = chain.as_sender(account("intruder"));
    three_epoch_scenario(&chain, &intruder, &config.allocation).await;
}

#[tokio::test]
async fn embedded_chain_survives_a_restart_with_balances_epochs_and_unclaimed_amounts() {
    let dir = tempfile::tempdir().unwrap();
    let config = SettlementConfig::default();
    let t1 = tree(&[("alice", 100), ("bob", 50)]);
    let t2 = tree(&[("alice", 130), ("bob", 90)]);
    let (contracts, block, nonce) = {
        let chain = EvmChain::open(&config, dir.path()).unwrap();
        publish(&chain, 1, &t1).await;
        assert_eq!(claim(&chain, &t1, "alice").await.unwrap(), micro_we(100));
        publish(&chain, 2, &t2).await;
        (
            chain.contracts(),
            chain.block_number(),
            chain.transaction_count(chain.operator()).await.unwrap(),
        )
    };

    let chain = EvmChain::open(&config, dir.path()).unwrap();
    assert_eq!(chain.contracts(), contracts, "reopened, not redeployed");
    assert_eq!(chain.block_number(), block);
    assert_eq!(
        chain.transaction_count(chain.operator()).await.unwrap(),
        nonce
    );
    assert_eq!(chain.last_epoch().await.unwrap(), 2);
    assert_eq!(chain.epoch_root(1).await.unwrap().unwrap().root, t1.root());
    assert_eq!(
        chain.balance_of(account("alice")).await.unwrap(),
        micro_we(100)
    );
    assert_eq!(
        chain.claimed(account("alice")).await.unwrap(),
        micro_we(100)
    );
    assert_eq!(
        chain.balance_of(contracts.distributor).await.unwrap(),
        micro_we(220 - 100)
    );
    // What was unclaimed before the restart is still owed, exactly.
    assert_eq!(claim(&chain, &t2, "alice").await.unwrap(), micro_we(30));
    assert_eq!(claim(&chain, &t2, "bob").await.unwrap(), micro_we(90));
    assert_eq!(
        chain.publish_root(2, t2.root(), t2.total()).await.unwrap(),
        AnchorOutcome::AlreadyAnchored
    );
    assert_eq!(
        chain.balance_of(contracts.distributor).await.unwrap(),
        U256::ZERO
    );
}

#[tokio::test]
async fn embedded_chain_refuses_a_state_file_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = SettlementConfig::default();
    let path = dir.path().join(&config.embedded_state_path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{ not json").unwrap();
    let err = EvmChain::open(&config, dir.path()).unwrap_err();
    assert!(matches!(err, ChainError::StateCorrupt { .. }), "{err}");
}

fn rpc_config(url: &str, fund: Address) -> SettlementConfig {
    SettlementConfig {
        backend: ChainBackend::Rpc,
        allocation: AllocationConfig {
            incentive_fund: fund,
            ..AllocationConfig::default()
        },
        rpc: RpcChainConfig {
            url: url.to_owned(),
            private_key: ANVIL_KEY_0.to_owned(),
            confirmations: 1,
            receipt_timeout_ms: 30_000,
            ..RpcChainConfig::default()
        },
        ..SettlementConfig::default()
    }
}

#[tokio::test]
async fn rpc_chain_on_anvil_runs_three_epochs_of_claims_with_every_refusal() {
    let Some(anvil) = start_anvil() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The operator (anvil's first account) also holds the incentive fund, so
    // the deployment approves the distributor itself.
    let operator_address: Address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        .parse()
        .unwrap();
    let config = rpc_config(&anvil.url, operator_address);
    let chain = RpcChain::connect(&config, dir.path()).await.unwrap();
    assert_eq!(chain.sender(), operator_address);
    let intruder = chain.with_signer(ANVIL_KEY_1).unwrap();
    three_epoch_scenario(&chain, &intruder, &config.allocation).await;

    // A restart reuses the recorded deployment instead of deploying again.
    let again = RpcChain::connect(&config, dir.path()).await.unwrap();
    assert_eq!(again.contracts(), chain.contracts());
    assert_eq!(again.last_epoch().await.unwrap(), 3);
    drop(anvil);
}

#[tokio::test]
async fn open_chain_defaults_to_the_embedded_chain_under_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = SettlementConfig::default();
    let chain = open_chain(&config, dir.path()).await.unwrap();
    assert_eq!(chain.total_supply().await.unwrap(), we(1_250_000_000));
    assert!(dir.path().join(&config.embedded_state_path).exists());
}

#[tokio::test]
async fn an_rpc_chain_without_a_signer_names_the_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rpc_config("http://127.0.0.1:9", Address::repeat_byte(1));
    config.rpc.private_key = String::new();
    config.rpc.private_key_env = "WESTREAM_TEST_KEY_THAT_IS_NOT_SET".to_owned();
    let err = RpcChain::connect(&config, dir.path()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::Config {
                key: "rpc.private_key_env",
                ..
            }
        ),
        "{err}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]
    /// Every leaf's proof verifies on chain, not only in Rust: any tree,
    /// published, pays each leaf exactly its amount and nothing is left.
    #[test]
    fn every_leaf_of_a_random_tree_claims_exactly_its_amount_on_the_embedded_chain(
        amounts in proptest::collection::vec(1u64..1_000_000_000_000, 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let chain = EvmChain::open(&SettlementConfig::default(), dir.path()).unwrap();
            let names: Vec<String> = (0..amounts.len()).map(|i| format!("leaf-{i}")).collect();
            let leaves: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(amounts.iter().copied()).collect();
            let t = tree(&leaves);
            publish(&chain, 1, &t).await;
            for (name, amount) in &leaves {
                let (_, _, proof) = proof_of(&t, name);
                assert!(t.proof(account(name)).unwrap().verify(t.root()), "verifies in Rust");
                assert_eq!(claim(&chain, &t, name).await.unwrap(), micro_we(*amount), "{name}");
                assert!(!proof.is_empty() || leaves.len() == 1);
            }
            assert_eq!(chain.balance_of(chain.contracts().distributor).await.unwrap(), U256::ZERO);
        });
    }
}
