//! Times the settlement tree at scale: build over N accounts (default
//! 1,000,000) and proof lookups.
//!
//! cargo run --release -p westream-control --example settlement_tree [-- N]

use std::time::Instant;

use alloy_primitives::{keccak256, Address, U256};
use westream_control::settlement::{SettlementLeaf, SettlementTree};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let leaves: Vec<SettlementLeaf> = (0..n as u64)
        .map(|i| SettlementLeaf {
            account: Address::from_slice(&keccak256(i.to_be_bytes())[12..]),
            cumulative: U256::from(i * 1_000_000_000_000 + 1),
        })
        .collect();
    let accounts: Vec<Address> = leaves
        .iter()
        .step_by((n / 10_000).max(1))
        .map(|l| l.account)
        .collect();

    let start = Instant::now();
    let tree = SettlementTree::build(leaves).expect("unique accounts");
    let build = start.elapsed();

    let start = Instant::now();
    let mut depth = 0;
    for &a in &accounts {
        depth += tree.proof(a).expect("known account").proof.len();
    }
    let per_proof = start.elapsed() / accounts.len() as u32;

    let root = tree.root();
    let start = Instant::now();
    for &a in &accounts {
        assert!(tree.proof(a).expect("known account").verify(root));
    }
    let per_verify = start.elapsed() / accounts.len() as u32;

    println!(
        "{n} leaves: build {:.3} s, root {root}; proof lookup {per_proof:?} (depth {}), lookup+verify {per_verify:?} over {} accounts",
        build.as_secs_f64(),
        depth / accounts.len(),
        accounts.len()
    );
}
