//! The epoch job: close, compute, commit, anchor (issue #8, items 2 and 7),
//! the claims a wallet asks for, and `verify`.
//!
//! Each step is idempotent and the order makes a crash harmless:
//!
//! 1. **flush** the in-memory activity tally into the open epoch;
//! 2. **close** the open epoch at `end_ms` (one transaction): its inputs are
//!    frozen, new activity and withdrawals go to the next epoch. An epoch
//!    already closed by a run that crashed is picked up instead;
//! 3. **compute** from the frozen inputs ([`crate::rewards::epoch::plan`])
//!    and build the Merkle tree of every cumulative amount: the same inputs
//!    give the same root;
//! 4. **commit** (one transaction): allocations, cumulative amounts, the
//!    ledger's fund -> payable posting, root and figures;
//! 5. **anchor** every computed epoch not yet on chain, in order. A root the
//!    chain already has is recorded, not sent again.
//!
//! A crash between 2 and 4 recomputes the same root; between 4 and 5, the
//! next run (or the scheduler's next tick) anchors it.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use parking_lot::Mutex;
use serde::Serialize;

use super::chain::{AnchorOutcome, Chain};
use super::errors::ChainError;
use super::merkle::{MerkleError, SettlementLeaf, SettlementTree};
use super::WEI_PER_MICRO_WE;
use crate::config::ControlConfig;
use crate::plane::{now_ms, ControlPlane};
use crate::rooms::Rooms;
use crate::store::{CreditedDeposit, DepositEvent, EpochRecord, Store, StoreError, TreeSummary};

/// Why an epoch, a claim or a verification failed.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    /// The database failed.
    #[error("settlement store: {0}")]
    Store(#[from] StoreError),
    /// The chain failed or refused.
    #[error("settlement chain: {0}")]
    Chain(#[from] ChainError),
    /// The tree could not be built (a duplicate address: a bug).
    #[error("settlement tree: {0}")]
    Merkle(#[from] MerkleError),
    /// A stored address does not parse.
    #[error("stored payout address {address} is not an Ethereum address")]
    BadAddress {
        /// What is stored.
        address: String,
    },
    /// The stored allocations no longer give the stored root.
    #[error("epoch {epoch}: the stored allocations give root {computed}, the epoch says {stored}")]
    RootMismatch {
        /// The epoch.
        epoch: i64,
        /// Recomputed.
        computed: String,
        /// Stored.
        stored: String,
    },
    /// A blocking task died.
    #[error("settlement task failed: {0}")]
    Task(String),
}

/// Micro-WE to the token's 18-decimal unit.
pub fn micro_to_wei(micro: i64) -> U256 {
    U256::from(micro.max(0) as u64) * U256::from(WEI_PER_MICRO_WE)
}

/// What `GET /v1/claims/{address}` answers: everything a wallet needs to
/// call `SettlementDistributor.claim(account, cumulative, proof)`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClaimInfo {
    /// The claiming address (0x-hex).
    pub address: String,
    /// The latest anchored epoch, whose root the proof reaches.
    pub epoch: i64,
    /// Everything owed to the address up to that epoch, micro-WE.
    pub cumulative_micro_we: i64,
    /// The same in the token's unit (decimal string, 18 decimals).
    pub cumulative_wei: String,
    /// Already paid out on chain (decimal string).
    pub claimed_wei: String,
    /// What a claim pays now (decimal string).
    pub claimable_wei: String,
    /// Sibling hashes, leaf to root.
    pub proof: Vec<String>,
    /// The root of `epoch`.
    pub root: String,
    /// `SettlementDistributor`.
    pub distributor: String,
    /// `WeToken`.
    pub token: String,
}

/// What `westream verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Computed epochs whose roots were recomputed.
    pub epochs_checked: i64,
    /// Epochs the chain has.
    pub chain_last_epoch: u64,
    /// The latest anchored total (wei, decimal).
    pub anchored_total_wei: String,
    /// What the distributor holds (wei, decimal).
    pub distributor_balance_wei: String,
    /// What it paid out (wei, decimal).
    pub total_claimed_wei: String,
    /// Every mismatch, in words; empty when all is well.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A crash injected for tests (`WESTREAM_FAILPOINT=settle-after-close` or
/// `settle-after-commit`): the process aborts there, as a power cut would.
fn failpoint(name: &str) {
    if std::env::var("WESTREAM_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

/// Settlement of one control plane on one chain.
/// It holds the plane's parts, not the plane, which holds it.
pub struct Settlement {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    config: ControlConfig,
    chain: Arc<dyn Chain>,
    /// The latest anchored epoch's tree, for proofs.
    tree: Mutex<Option<(i64, Arc<SettlementTree>)>>,
    /// One epoch run at a time.
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Settlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settlement").field("contracts", &self.chain.contracts()).finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SettlementError> + Send + 'static,
) -> Result<T, SettlementError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| SettlementError::Task(e.to_string()))?
}

fn parse_address(address: &str) -> Result<Address, SettlementError> {
    address.parse().map_err(|_| SettlementError::BadAddress { address: address.to_owned() })
}

/// The tree over `(address, cumulative micro-WE)` leaves.
fn build_tree(leaves: &[(String, i64)]) -> Result<SettlementTree, SettlementError> {
    let leaves = leaves
        .iter()
        .filter(|(_, micro)| *micro > 0)
        .map(|(address, micro)| Ok(SettlementLeaf { account: parse_address(address)?, cumulative: micro_to_wei(*micro) }))
        .collect::<Result<Vec<_>, SettlementError>>()?;
    Ok(SettlementTree::build(leaves)?)
}

fn hex_root(root: B256) -> String {
    format!("{root:#x}")
}

impl Settlement {
    /// Settlement of `plane` on `chain`.
    pub fn new(plane: &ControlPlane, chain: Arc<dyn Chain>) -> Arc<Self> {
        Arc::new(Settlement {
            store: plane.store(),
            rooms: plane.rooms(),
            config: plane.config().clone(),
            chain,
            tree: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The chain.
    pub fn chain(&self) -> &Arc<dyn Chain> {
        &self.chain
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Runs one epoch ending at `end_ms` (steps 1-5 of the module doc) and
    /// returns it as stored. A closed epoch left by a crash is finished
    /// first (with its own end), so call again for a new one.
    pub async fn run_epoch(&self, end_ms: i64) -> Result<EpochRecord, SettlementError> {
        let _one = self.running.lock().await;
        let (rooms, store) = (Arc::clone(&self.rooms), self.store());
        blocking(move || Ok(crate::plane::flush_activity(&rooms, store.as_ref())?)).await?;
        let store = self.store();
        let half_life = self.config.rooms.vote_half_life_ms as i64;
        let closed = blocking(move || Ok(store.close_epoch(end_ms, half_life)?)).await?;
        let n = closed.epoch;
        failpoint("settle-after-close");
        let record = if closed.status == "computed" {
            closed
        } else {
            let store = self.store();
            let config = self.config.rewards.clone();
            blocking(move || {
                let (inputs, addresses) = store.epoch_inputs(n, config.trailing_epochs)?;
                let plan = crate::rewards::epoch::plan(&inputs, &config);
                let leaves: Vec<(String, i64)> = plan
                    .cumulative
                    .iter()
                    .filter_map(|(account, micro)| addresses.get(account).map(|a| (a.clone(), *micro)))
                    .collect();
                let tree = build_tree(&leaves)?;
                let summary = TreeSummary {
                    root: hex_root(tree.root()),
                    accounts: tree.len() as i64,
                    total_cumulative_micro: leaves.iter().map(|l| l.1).filter(|m| *m > 0).sum(),
                };
                Ok(store.commit_epoch(n, plan, inputs, summary, now_ms())?)
            })
            .await?
        };
        tracing::info!(
            epoch = n,
            released_micro_we = record.released_micro,
            accounts = record.accounts,
            root = record.root.as_deref().unwrap_or(""),
            "epoch computed"
        );
        failpoint("settle-after-commit");
        self.anchor_pending().await?;
        let store = self.store();
        blocking(move || store.epoch(n)?.ok_or_else(|| StoreError::NotFound { what: "epoch", id: n.to_string() }.into()))
            .await
    }

    /// Anchors every computed epoch that is not on chain yet, oldest first.
    pub async fn anchor_pending(&self) -> Result<(), SettlementError> {
        let store = self.store();
        let mut pending = blocking(move || Ok(store.epochs(u32::MAX)?)).await?;
        pending.retain(|e| e.status == "computed" && !e.anchored);
        pending.sort_by_key(|e| e.epoch);
        for e in pending {
            let root: B256 = e
                .root
                .as_deref()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("epoch {} has no root", e.epoch)))?;
            let total = micro_to_wei(e.total_cumulative_micro.unwrap_or(0));
            let anchor = match self.chain.publish_root(e.epoch as u64, root, total).await? {
                AnchorOutcome::Published(tx) => {
                    tracing::info!(epoch = e.epoch, tx = %tx.tx_hash, block = tx.block_number, "epoch anchored");
                    Some((format!("{:#x}", tx.tx_hash), tx.block_number as i64))
                }
                AnchorOutcome::AlreadyAnchored => {
                    tracing::info!(epoch = e.epoch, "epoch was already on chain");
                    None
                }
            };
            let (store, n) = (self.store(), e.epoch);
            blocking(move || Ok(store.record_anchor(n, anchor, now_ms())?)).await?;
        }
        Ok(())
    }

    /// The latest anchored epoch's tree, rebuilt from the allocations and
    /// checked against the stored root.
    async fn latest_tree(&self) -> Result<Option<(EpochRecord, Arc<SettlementTree>)>, SettlementError> {
        let store = self.store();
        let latest = blocking(move || Ok(store.epochs(u32::MAX)?)).await?.into_iter().find(|e| e.anchored);
        let Some(latest) = latest else { return Ok(None) };
        if let Some((n, tree)) = self.tree.lock().as_ref() {
            if *n == latest.epoch {
                return Ok(Some((latest, Arc::clone(tree))));
            }
        }
        let (store, n) = (self.store(), latest.epoch);
        let tree = blocking(move || build_tree(&store.leaves_at(n)?)).await?;
        let stored = latest.root.clone().unwrap_or_default();
        if hex_root(tree.root()) != stored {
            return Err(SettlementError::RootMismatch { epoch: n, computed: hex_root(tree.root()), stored });
        }
        let tree = Arc::new(tree);
        *self.tree.lock() = Some((n, Arc::clone(&tree)));
        Ok(Some((latest, tree)))
    }

    /// The claim of `address` against the latest anchored root; `None`
    /// when nothing is owed to it there.
    pub async fn claim_info(&self, address: Address) -> Result<Option<ClaimInfo>, SettlementError> {
        let Some((epoch, tree)) = self.latest_tree().await? else { return Ok(None) };
        let Some(proof) = tree.proof(address) else { return Ok(None) };
        let claimed = self.chain.claimed(address).await?;
        let contracts = self.chain.contracts();
        let micro = (proof.cumulative / U256::from(WEI_PER_MICRO_WE)).to::<u64>() as i64;
        Ok(Some(ClaimInfo {
            address: format!("{address:#x}"),
            epoch: epoch.epoch,
            cumulative_micro_we: micro,
            cumulative_wei: proof.cumulative.to_string(),
            claimed_wei: claimed.to_string(),
            claimable_wei: proof.cumulative.saturating_sub(claimed).to_string(),
            proof: proof.proof.iter().map(|h| format!("{h:#x}")).collect(),
            root: hex_root(tree.root()),
            distributor: format!("{:#x}", contracts.distributor),
            token: format!("{:#x}", contracts.token),
        }))
    }

    /// Recomputes every computed epoch's root from the stored allocations,
    /// compares the anchored ones with the chain, checks the running
    /// cumulative amounts, the ledger and the distributor's solvency.
    pub async fn verify(&self) -> Result<VerifyReport, SettlementError> {
        let mut report = VerifyReport::default();
        let store = self.store();
        let epochs = blocking(move || Ok(store.epochs(u32::MAX)?)).await?;
        let mut anchored_total = U256::ZERO;
        let mut last_anchored = 0u64;
        for e in epochs.iter().rev().filter(|e| e.status == "computed") {
            report.epochs_checked += 1;
            let (store, n) = (self.store(), e.epoch);
            let tree = blocking(move || build_tree(&store.leaves_at(n)?)).await?;
            let stored_root = e.root.clone().unwrap_or_default();
            let stored_total = micro_to_wei(e.total_cumulative_micro.unwrap_or(0));
            if hex_root(tree.root()) != stored_root || tree.total() != stored_total {
                report.problems.push(format!(
                    "epoch {n}: allocations give root {} total {}, the epoch says root {stored_root} total {stored_total}",
                    hex_root(tree.root()),
                    tree.total()
                ));
            }
            if e.anchored {
                match self.chain.epoch_root(n as u64).await? {
                    Some(on_chain) if hex_root(on_chain.root) == stored_root && on_chain.total_cumulative == stored_total => {}
                    Some(on_chain) => report.problems.push(format!(
                        "epoch {n}: the chain has root {} total {}, the server says root {stored_root} total {stored_total}",
                        hex_root(on_chain.root),
                        on_chain.total_cumulative
                    )),
                    None => report.problems.push(format!("epoch {n} is marked anchored but the chain does not have it")),
                }
                anchored_total = stored_total;
                last_anchored = n as u64;
            }
        }
        report.chain_last_epoch = self.chain.last_epoch().await?;
        if report.chain_last_epoch != last_anchored {
            report.problems.push(format!(
                "the chain's last epoch is {}, the server's last anchored epoch is {last_anchored}",
                report.chain_last_epoch
            ));
        }
        let distributor = self.chain.contracts().distributor;
        let balance = self.chain.balance_of(distributor).await?;
        let claimed = self.chain.total_claimed().await?;
        if balance + claimed < anchored_total {
            report.problems.push(format!(
                "insolvent: the distributor holds {balance} and paid {claimed}, but {anchored_total} is anchored"
            ));
        }
        report.anchored_total_wei = anchored_total.to_string();
        report.distributor_balance_wei = balance.to_string();
        report.total_claimed_wei = claimed.to_string();
        let store = self.store();
        let (mismatches, audit) = blocking(move || Ok((store.cumulative_mismatches()?, store.audit()?))).await?;
        for (account, running, summed) in mismatches {
            report
                .problems
                .push(format!("account {account}: running cumulative {running} micro-WE, allocations sum to {summed}"));
        }
        if !audit.ok {
            report.problems.push(format!("the ledger does not balance: {audit:?}"));
        }
        Ok(report)
    }

    /// The keyless deposit address of `account`: WE sent there is credited
    /// to its wallet (and leaves circulation on chain: nobody holds a key
    /// for it). `keccak256("westream:deposit:<distributor>:<account>")[12..]`.
    pub async fn deposit_address(&self, account: crate::store::AccountId) -> Result<String, SettlementError> {
        let distributor = self.chain.contracts().distributor;
        let derive = Box::new(move |id: crate::store::AccountId| {
            let hash = alloy_primitives::keccak256(format!("westream:deposit:{distributor:#x}:{id}"));
            format!("{:#x}", Address::from_slice(&hash[12..]))
        });
        let store = self.store();
        blocking(move || Ok(store.deposit_address(account, derive, now_ms())?)).await
    }

    /// Reads WE transfers from the cursor up to the last block with enough
    /// confirmations (at most 10,000 blocks a call) and credits those to
    /// deposit addresses, each exactly once.
    pub async fn scan_deposits(&self) -> Result<Vec<CreditedDeposit>, SettlementError> {
        let store = self.store();
        let cursor = blocking(move || Ok(store.deposit_cursor()?)).await?.max(0) as u64;
        let head = self.chain.latest_block().await?;
        let confirmations = self.config.settlement.deposit_confirmations();
        let Some(safe) = (head + 1).checked_sub(confirmations) else { return Ok(Vec::new()) };
        let from = cursor + 1;
        if from > safe {
            return Ok(Vec::new());
        }
        let to = safe.min(from + 9_999);
        let events: Vec<DepositEvent> = self
            .chain
            .token_transfers(from, to)
            .await?
            .into_iter()
            .map(|t| DepositEvent {
                tx_hash: format!("{:#x}", t.tx_hash),
                log_index: t.log_index as i64,
                block_number: t.block_number as i64,
                from: format!("{:#x}", t.from),
                to: format!("{:#x}", t.to),
                amount_wei: t.value.to_string(),
                amount_micro: (t.value / U256::from(WEI_PER_MICRO_WE)).try_into().unwrap_or(i64::MAX),
            })
            .collect();
        let store = self.store();
        let credited = blocking(move || Ok(store.credit_deposits(events, to as i64, now_ms())?)).await?;
        for c in &credited {
            tracing::info!(account = c.account_id, tx = %c.tx_hash, micro_we = c.amount_micro, "deposit credited");
        }
        Ok(credited)
    }

    /// Scans for deposits every `control.settlement.deposit_poll_interval_ms`
    /// until `stop` resolves.
    pub async fn run_deposit_watcher(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let every = Duration::from_millis(self.config.settlement.deposit_poll_interval_ms);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.scan_deposits().await {
                tracing::warn!(error = %e, "deposit scan failed; retried at the next poll");
            }
        }
    }

    /// Runs an epoch at every multiple of `control.rewards.epoch_ms` (unix
    /// time) until `stop` resolves; a failed run is logged and retried at
    /// the next tick (anchoring first what is pending).
    pub async fn run_scheduler(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let every = self.config.rewards.epoch_ms.max(1) as i64;
        tokio::pin!(stop);
        loop {
            let now = now_ms();
            let next = (now.div_euclid(every) + 1) * every;
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_millis((next - now).max(1) as u64)) => {}
            }
            match self.run_epoch(next).await {
                Ok(e) => tracing::debug!(epoch = e.epoch, "scheduled epoch done"),
                Err(e) => tracing::warn!(error = %e, "scheduled epoch failed; retried at the next tick"),
            }
        }
    }
}
