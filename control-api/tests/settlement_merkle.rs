//! Cross-check: the Rust settlement tree gives the same roots as
//! `@openzeppelin/merkle-tree` (StandardMerkleTree over address, uint256)
//! for random sets, through `control-api/contracts/scripts/roots.js`.
//!
//! Without `node` or the npm packages it skips loudly, unless
//! `WESTREAM_REQUIRE_CHAIN=1` (CI), where it fails.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use alloy_primitives::{Address, B256, U256};
use rand::{rngs::StdRng, Rng, SeedableRng};
use westream_control::settlement::{SettlementLeaf, SettlementTree};

fn contracts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

fn random_set(rng: &mut StdRng, n: usize) -> Vec<SettlementLeaf> {
    let mut leaves = std::collections::HashMap::new();
    while leaves.len() < n {
        let account = Address::from(rng.random::<[u8; 20]>());
        // Mix small, u128-sized and full 256-bit amounts.
        let cumulative = match rng.random_range(0..3) {
            0 => U256::from(rng.random_range(0u64..1_000)),
            1 => U256::from(rng.random::<u128>()),
            _ => U256::from_be_bytes(rng.random::<[u8; 32]>()) >> 8,
        };
        leaves.insert(account, cumulative);
    }
    leaves
        .into_iter()
        .map(|(account, cumulative)| SettlementLeaf {
            account,
            cumulative,
        })
        .collect()
}

#[test]
fn roots_match_openzeppelin_merkle_tree_for_random_sets() {
    let script = contracts_dir().join("scripts/roots.js");
    let package = contracts_dir().join("node_modules/@openzeppelin/merkle-tree");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !package.exists() || !node_ok {
        let msg = format!(
            "node or {} missing (run `npm ci --prefix control-api/contracts`)",
            package.display()
        );
        assert!(
            std::env::var("WESTREAM_REQUIRE_CHAIN").map_or(true, |v| v != "1"),
            "WESTREAM_REQUIRE_CHAIN=1: {msg}"
        );
        eprintln!("\n!!!!!!!! SKIPPED the OpenZeppelin cross-check: {msg} !!!!!!!!\n");
        return;
    }

    let mut rng = StdRng::seed_from_u64(8);
    let sets: Vec<Vec<SettlementLeaf>> = [1, 2, 3, 4, 5, 7, 8, 16, 33, 100, 1000]
        .iter()
        .map(|&n| random_set(&mut rng, n))
        .collect();
    let input: Vec<Vec<(String, String)>> = sets
        .iter()
        .map(|set| {
            set.iter()
                .map(|l| (l.account.to_checksum(None), l.cumulative.to_string()))
                .collect()
        })
        .collect();

    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(contracts_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "roots.js failed");
    let expected: Vec<B256> = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(expected.len(), sets.len());
    for (set, root) in sets.into_iter().zip(expected) {
        let n = set.len();
        let tree = SettlementTree::build(set.clone()).unwrap();
        assert_eq!(tree.root(), root, "{n} leaves");
        for leaf in &set {
            assert!(tree.proof(leaf.account).unwrap().verify(root));
        }
    }
}
