//! Settlement: each epoch's payouts as a Merkle tree of cumulative amounts,
//! anchored on `SettlementDistributor` next to the WE token (DESIGN.md §6,
//! issue #8 items 3-5).
//!
//! - [`merkle`]: the sans-IO tree, byte-compatible with OpenZeppelin's
//!   `StandardMerkleTree` and `MerkleProof`.
//! - [`Chain`]: what the epoch job and the claims API need from the
//!   contracts, with two backends: [`EvmChain`] (embedded revm, state under
//!   the data dir, the default) and [`RpcChain`] (any JSON-RPC endpoint).
//! - [`SettlementConfig`]: the `[settlement]` table.
//!
//! Anchoring an epoch:
//!
//! ```ignore
//! let tree = SettlementTree::build(leaves)?;                 // cumulative per account
//! let chain = open_chain(&cfg.settlement, &data_dir).await?; // Arc<dyn Chain>
//! match chain.publish_root(epoch, tree.root(), tree.total()).await? {
//!     AnchorOutcome::Published(tx) => { /* record tx.tx_hash as the anchor */ }
//!     AnchorOutcome::AlreadyAnchored => { /* a rerun: already on chain */ }
//! }
//! ```
//!
//! The Solidity sources and their committed build are in
//! `control-api/contracts/` (`npm run build`, `npm run check`).

mod chain;
mod config;
mod contracts;
mod errors;
mod evm;
mod job;
pub mod merkle;
mod rpc;

use std::path::Path;
use std::sync::Arc;

pub use chain::{
    AnchorOutcome, Chain, ChainLog, ClaimReceipt, TokenTransfer, ContractAddresses, EpochRoot, TxOutcome, TxReceipt,
};
pub use config::{
    dev_address, AllocationConfig, ChainBackend, RpcChainConfig, SettlementConfig,
    SettlementConfigError,
};
pub use contracts::{SettlementDistributor, WeToken};
pub use errors::ChainError;
pub use evm::EvmChain;
pub use job::{micro_to_wei, ClaimInfo, Settlement, SettlementError, VerifyReport};
pub use merkle::{MerkleError, SettlementLeaf, SettlementProof, SettlementTree};
pub use rpc::RpcChain;

/// 10^18: token units per WE (the contract's 18 decimals).
pub const WEI_PER_WE: u64 = 1_000_000_000_000_000_000;
/// 10^12: token units per micro-WE (the ledger's unit).
pub const WEI_PER_MICRO_WE: u64 = 1_000_000_000_000;

/// Opens the configured backend read-only where that matters: the
/// embedded chain as last persisted, without taking its lock (so `westream
/// verify` runs beside a server); an RPC chain as [`open_chain`] does.
pub async fn open_chain_snapshot(
    config: &SettlementConfig,
    data_dir: &Path,
) -> Result<Arc<dyn Chain>, ChainError> {
    match config.backend {
        ChainBackend::Embedded => open_embedded(config, data_dir, EvmChain::open_snapshot).await,
        ChainBackend::Rpc => Ok(Arc::new(RpcChain::connect(config, data_dir).await?)),
    }
}

/// Opens the configured backend: the embedded chain (deploying at first
/// start) or the RPC chain (deploying when no addresses are known).
pub async fn open_chain(
    config: &SettlementConfig,
    data_dir: &Path,
) -> Result<Arc<dyn Chain>, ChainError> {
    match config.backend {
        ChainBackend::Embedded => open_embedded(config, data_dir, EvmChain::open).await,
        ChainBackend::Rpc => Ok(Arc::new(RpcChain::connect(config, data_dir).await?)),
    }
}

/// Runs a blocking embedded-chain opener off the async workers.
async fn open_embedded(
    config: &SettlementConfig,
    data_dir: &Path,
    open: fn(&SettlementConfig, &Path) -> Result<EvmChain, ChainError>,
) -> Result<Arc<dyn Chain>, ChainError> {
    let (config, data_dir) = (config.clone(), data_dir.to_owned());
    let chain = tokio::task::spawn_blocking(move || open(&config, &data_dir))
        .await
        .map_err(|e| ChainError::Evm {
            reason: format!("opening the embedded chain failed: {e}"),
        })??;
    Ok(Arc::new(chain))
}
