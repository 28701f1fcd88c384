//! The settlement tree: cumulative amounts per account, byte-compatible with
//! OpenZeppelin's `StandardMerkleTree` over `["address", "uint256"]` and its
//! `MerkleProof` library (what `SettlementDistributor.claim` calls).
//!
//! Contract, the same as `@openzeppelin/merkle-tree` 1.x:
//! - leaf = `keccak256(keccak256(abi.encode(account, cumulative)))` (hashed
//!   twice so a leaf can never be read as a 64-byte inner node);
//! - leaves sorted by their hash and laid out backwards at the end of one
//!   array of `2n - 1` nodes (the k-th smallest at index `2n - 2 - k`); node
//!   `i` has children `2i + 1` and `2i + 2`, and the root is node 0;
//! - an inner node is `keccak256` of its two children in ascending order
//!   (sorted-pair hashing), so a proof needs no left/right flags.
//!
//! Amounts are cumulative: an account's leaf only ever grows from one epoch to
//! the next and the contract pays the difference to what it already paid, so
//! one claim collects every epoch owed and nothing is paid twice.
//!
//! Sans-IO and deterministic: the same set of leaves, in any order, gives the
//! same tree. An address lookup goes through a hash index, so a proof for one
//! of a million accounts is a few microseconds.

use std::collections::HashMap;

use alloy_primitives::{keccak256, Address, B256, U256};

/// Why a set of leaves cannot become a tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MerkleError {
    /// An account appears twice: its cumulative amount would be ambiguous.
    #[error("account {account} appears twice in the settlement")]
    DuplicateAccount { account: Address },
    /// The sum of all cumulative amounts does not fit in a `uint256`.
    #[error("the total of all cumulative amounts overflows uint256")]
    TotalOverflow,
}

/// One account's cumulative amount (in the token's smallest unit, wei of WE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SettlementLeaf {
    pub account: Address,
    pub cumulative: U256,
}

/// What a claimant sends to `SettlementDistributor.claim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementProof {
    pub account: Address,
    pub cumulative: U256,
    /// Sibling hashes from the leaf up to (not including) the root.
    pub proof: Vec<B256>,
}

impl SettlementProof {
    /// Whether this proof reaches `root` (what the contract checks).
    pub fn verify(&self, root: B256) -> bool {
        verify(root, self.account, self.cumulative, &self.proof)
    }
}

/// A built settlement tree; see the module doc for its layout.
#[derive(Debug, Clone)]
pub struct SettlementTree {
    /// `2n - 1` nodes, root at 0, leaves at the end (empty when `n == 0`).
    nodes: Vec<B256>,
    /// Leaves in tree order: `leaves[k]` is the node at `nodes.len() - 1 - k`.
    leaves: Vec<SettlementLeaf>,
    /// Account -> position in `leaves`.
    index: HashMap<Address, u32>,
    total: U256,
}

impl SettlementTree {
    /// Builds the tree over `leaves`, in any order. An empty set gives an
    /// empty tree whose root is zero (no proof can reach it).
    pub fn build(leaves: impl IntoIterator<Item = SettlementLeaf>) -> Result<Self, MerkleError> {
        let leaves: Vec<SettlementLeaf> = leaves.into_iter().collect();
        let mut total = U256::ZERO;
        for leaf in &leaves {
            total = total
                .checked_add(leaf.cumulative)
                .ok_or(MerkleError::TotalOverflow)?;
        }
        let mut hashed = hash_leaves(leaves);
        // Unique accounts give unique hashes (barring a keccak collision), so
        // the unstable sort is deterministic; a duplicate is caught below.
        hashed.sort_unstable_by_key(|h| h.0);

        let n = hashed.len();
        let mut index = HashMap::with_capacity(n);
        if n == 0 {
            return Ok(Self {
                nodes: Vec::new(),
                leaves: Vec::new(),
                index,
                total,
            });
        }
        let len = 2 * n - 1;
        let mut nodes = vec![B256::ZERO; len];
        let mut sorted = Vec::with_capacity(n);
        for (k, (hash, leaf)) in hashed.into_iter().enumerate() {
            nodes[len - 1 - k] = hash;
            if index.insert(leaf.account, k as u32).is_some() {
                return Err(MerkleError::DuplicateAccount {
                    account: leaf.account,
                });
            }
            sorted.push(leaf);
        }
        for i in (0..len - n).rev() {
            nodes[i] = hash_pair(&nodes[2 * i + 1], &nodes[2 * i + 2]);
        }
        Ok(Self {
            nodes,
            leaves: sorted,
            index,
            total,
        })
    }

    /// The root to anchor; zero for an empty tree.
    pub fn root(&self) -> B256 {
        self.nodes.first().copied().unwrap_or(B256::ZERO)
    }

    /// Sum of every leaf's cumulative amount: the `totalCumulative` to anchor.
    pub fn total(&self) -> U256 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Leaves in tree order (ascending leaf hash).
    pub fn leaves(&self) -> &[SettlementLeaf] {
        &self.leaves
    }

    /// The cumulative amount of `account`, if it has a leaf.
    pub fn cumulative(&self, account: Address) -> Option<U256> {
        self.index
            .get(&account)
            .map(|&k| self.leaves[k as usize].cumulative)
    }

    /// The proof for `account`, if it has a leaf.
    pub fn proof(&self, account: Address) -> Option<SettlementProof> {
        let k = *self.index.get(&account)? as usize;
        let leaf = self.leaves[k];
        let mut i = self.nodes.len() - 1 - k;
        let mut proof = Vec::with_capacity(usize::BITS as usize);
        while i > 0 {
            // Odd nodes are left children, their sibling is to the right.
            let sibling = if i % 2 == 1 { i + 1 } else { i - 1 };
            proof.push(self.nodes[sibling]);
            i = (i - 1) / 2;
        }
        Some(SettlementProof {
            account: leaf.account,
            cumulative: leaf.cumulative,
            proof,
        })
    }
}

/// Leaf hashes paired with their leaves, on every core for large sets
/// (two of the three keccaks per leaf of a build are here).
fn hash_leaves(leaves: Vec<SettlementLeaf>) -> Vec<(B256, SettlementLeaf)> {
    const MIN_PER_THREAD: usize = 32_768;
    let hash = |l: &SettlementLeaf| (leaf_hash(l.account, l.cumulative), *l);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || leaves.len() < 2 * MIN_PER_THREAD {
        return leaves.iter().map(hash).collect();
    }
    let chunk = leaves.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = leaves
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(hash).collect::<Vec<_>>()))
            .collect();
        let mut hashed = Vec::with_capacity(leaves.len());
        for worker in workers {
            hashed.extend(
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        hashed
    })
}

/// `keccak256(keccak256(abi.encode(account, cumulative)))`.
pub fn leaf_hash(account: Address, cumulative: U256) -> B256 {
    let mut encoded = [0u8; 64];
    encoded[12..32].copy_from_slice(account.as_slice());
    encoded[32..].copy_from_slice(&cumulative.to_be_bytes::<32>());
    keccak256(keccak256(encoded))
}

/// Sorted-pair hashing: `keccak256(min(a, b) ++ max(a, b))`.
pub fn hash_pair(a: &B256, b: &B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// OpenZeppelin `MerkleProof.verify` for a settlement leaf.
pub fn verify(root: B256, account: Address, cumulative: U256, proof: &[B256]) -> bool {
    let computed = proof
        .iter()
        .fold(leaf_hash(account, cumulative), |acc, p| hash_pair(&acc, p));
    computed == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(byte: u8, cumulative: u64) -> SettlementLeaf {
        SettlementLeaf {
            account: Address::repeat_byte(byte),
            cumulative: U256::from(cumulative),
        }
    }

    #[test]
    fn root_matches_the_openzeppelin_vector_pinned_in_issue_8() {
        let tree =
            SettlementTree::build([leaf(0x11, 5000), leaf(0x22, 2500), leaf(0x33, 1)]).unwrap();
        let expected: B256 = "0x93159b4362b98c9d42e73e5a03a3e3eee6c3905dd753953e50cf81d7b946417f"
            .parse()
            .unwrap();
        assert_eq!(tree.root(), expected);
        assert_eq!(tree.total(), U256::from(7501));
        for account in [0x11, 0x22, 0x33].map(Address::repeat_byte) {
            assert!(tree.proof(account).unwrap().verify(expected));
        }
    }

    #[test]
    fn leaf_order_does_not_change_the_root() {
        let a =
            SettlementTree::build([leaf(1, 10), leaf(2, 20), leaf(3, 30), leaf(4, 40)]).unwrap();
        let b =
            SettlementTree::build([leaf(4, 40), leaf(2, 20), leaf(1, 10), leaf(3, 30)]).unwrap();
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn a_single_leaf_is_its_own_root_with_an_empty_proof() {
        let tree = SettlementTree::build([leaf(9, 7)]).unwrap();
        assert_eq!(
            tree.root(),
            leaf_hash(Address::repeat_byte(9), U256::from(7))
        );
        assert!(tree
            .proof(Address::repeat_byte(9))
            .unwrap()
            .proof
            .is_empty());
    }

    #[test]
    fn an_empty_tree_has_a_zero_root_and_no_proofs() {
        let tree = SettlementTree::build([]).unwrap();
        assert_eq!(tree.root(), B256::ZERO);
        assert_eq!(tree.total(), U256::ZERO);
        assert!(tree.proof(Address::ZERO).is_none());
    }

    #[test]
    fn a_duplicate_account_is_refused() {
        let err = SettlementTree::build([leaf(1, 10), leaf(1, 11)]).unwrap_err();
        assert_eq!(
            err,
            MerkleError::DuplicateAccount {
                account: Address::repeat_byte(1)
            }
        );
    }

    #[test]
    fn an_overflowing_total_is_refused() {
        let big = SettlementLeaf {
            account: Address::repeat_byte(1),
            cumulative: U256::MAX,
        };
        assert_eq!(
            SettlementTree::build([big, leaf(2, 1)]).unwrap_err(),
            MerkleError::TotalOverflow
        );
    }

    #[test]
    fn an_unknown_account_has_no_proof() {
        let tree = SettlementTree::build([leaf(1, 10), leaf(2, 20)]).unwrap();
        assert!(tree.proof(Address::repeat_byte(3)).is_none());
        assert_eq!(
            tree.cumulative(Address::repeat_byte(2)),
            Some(U256::from(20))
        );
    }

    #[test]
    fn large_sets_hash_their_leaves_on_every_core_in_order() {
        let leaves: Vec<SettlementLeaf> = (0..100_000u64)
            .map(|i| SettlementLeaf {
                account: Address::from_slice(&keccak256(i.to_be_bytes())[12..]),
                cumulative: U256::from(i),
            })
            .collect();
        let sequential: Vec<B256> = leaves
            .iter()
            .map(|l| leaf_hash(l.account, l.cumulative))
            .collect();
        let parallel: Vec<B256> = hash_leaves(leaves.clone())
            .into_iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(parallel, sequential);
        let tree = SettlementTree::build(leaves.clone()).unwrap();
        assert_eq!(tree.len(), 100_000);
        for l in leaves.iter().step_by(997) {
            assert!(tree.proof(l.account).unwrap().verify(tree.root()));
        }
    }

    fn leaf_sets() -> impl Strategy<Value = Vec<SettlementLeaf>> {
        proptest::collection::hash_map(any::<[u8; 20]>(), any::<u64>(), 1..64).prop_map(|m| {
            m.into_iter()
                .map(|(a, c)| SettlementLeaf {
                    account: Address::from(a),
                    cumulative: U256::from(c),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn every_leaf_proof_verifies_and_a_changed_amount_or_proof_does_not(
            leaves in leaf_sets(),
            pick in any::<prop::sample::Index>(),
            bump in 1u64..1_000,
            flip in any::<prop::sample::Index>(),
        ) {
            let tree = SettlementTree::build(leaves.clone()).unwrap();
            let root = tree.root();
            for l in &leaves {
                let p = tree.proof(l.account).unwrap();
                prop_assert_eq!(p.cumulative, l.cumulative);
                prop_assert!(p.verify(root));
            }
            let chosen = leaves[pick.index(leaves.len())];
            let p = tree.proof(chosen.account).unwrap();
            prop_assert!(!verify(root, chosen.account, chosen.cumulative + U256::from(bump), &p.proof));
            if !p.proof.is_empty() {
                let mut tampered = p.proof.clone();
                let at = flip.index(tampered.len());
                tampered[at].0[31] ^= 1;
                prop_assert!(!verify(root, chosen.account, chosen.cumulative, &tampered));
            }
        }
    }
}
