//! What can go wrong talking to the settlement chain. Contract reverts are
//! decoded into their own variants (the same on both backends), so callers
//! can tell "the chain said no" from "the chain could not be reached".

use std::path::PathBuf;

use alloy::sol_types::{SolError, SolInterface};
use alloy_primitives::{Address, U256};

use super::chain::EpochRoot;

use super::contracts::{
    SettlementDistributor::SettlementDistributorErrors, WeToken::WeTokenErrors,
};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// `publish` was sent by an account other than the distributor's operator.
    #[error("publish refused: {caller} is not the operator")]
    NotOperator { caller: Address },
    /// `publish` of an epoch other than `lastEpoch + 1`.
    #[error("publish refused: expected epoch {expected}, got {given}")]
    EpochOutOfOrder { expected: u64, given: u64 },
    /// `publish` of a total below the previous epoch's.
    #[error("publish refused: total {given} is below the anchored {previous}")]
    TotalDecreased { previous: U256, given: U256 },
    /// The epoch is already anchored with another root or total: the local
    /// settlement and the chain disagree, and nothing was sent.
    #[error(
        "epoch {} is anchored with root {} total {}, not root {} total {}",
        anchored.epoch, anchored.root, anchored.total_cumulative, given.root, given.total_cumulative
    )]
    EpochConflict {
        anchored: Box<EpochRoot>,
        given: Box<EpochRoot>,
    },
    /// `claim` with a proof that does not reach the latest root (tampered,
    /// another account's, or from an older epoch).
    #[error("claim refused: the proof does not match the latest root")]
    InvalidProof,
    /// `claim` of a cumulative amount already paid.
    #[error("claim refused: {account} already claimed {claimed} of cumulative {cumulative}")]
    NothingToClaim {
        account: Address,
        cumulative: U256,
        claimed: U256,
    },
    /// Any other revert, decoded as far as the ABIs allow (e.g. the fund's
    /// allowance is too small for a publish).
    #[error("transaction reverted: {reason}")]
    Reverted { reason: String },
    /// The EVM halted (out of gas, invalid opcode...).
    #[error("transaction halted: {reason}")]
    Halted { reason: String },
    /// Deploying a contract failed.
    #[error("deploying {contract} failed: {reason}")]
    Deploy {
        contract: &'static str,
        reason: String,
    },
    /// The node could not be reached or answered with an error that is not a
    /// revert; retrying may help.
    #[error("chain RPC failed: {reason}")]
    Rpc { reason: String },
    /// The embedded EVM refused the transaction itself (a bug here, not the
    /// contract's verdict).
    #[error("embedded EVM error: {reason}")]
    Evm { reason: String },
    /// Another process (a running server?) has the embedded chain open.
    #[error("the embedded chain is in use by another westream process (lock {path}); stop it, or settle through it with POST /v1/admin/epochs")]
    Locked { path: PathBuf },
    /// Reading or writing the embedded chain's state file failed.
    #[error("embedded chain state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The embedded chain's state file exists but cannot be used.
    #[error("embedded chain state {path} is unusable: {reason}")]
    StateCorrupt { path: PathBuf, reason: String },
    /// The settlement configuration cannot be used (e.g. a bad key).
    #[error("settlement.{key}: {reason}")]
    Config { key: &'static str, reason: String },
}

impl ChainError {
    /// Whether the same call may succeed later unchanged (transport trouble),
    /// as opposed to a verdict of the contract or a local fault.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Rpc { .. })
    }

    /// Decodes revert data with the distributor's and the token's errors.
    pub(crate) fn from_revert(data: &[u8]) -> Self {
        use SettlementDistributorErrors as E;
        if let Ok(e) = SettlementDistributorErrors::abi_decode(data) {
            return match e {
                E::NotOperator(e) => Self::NotOperator { caller: e.caller },
                E::EpochOutOfOrder(e) => Self::EpochOutOfOrder {
                    expected: e.expected,
                    given: e.given,
                },
                E::TotalDecreased(e) => Self::TotalDecreased {
                    previous: e.previous,
                    given: e.given,
                },
                E::InvalidProof(_) => Self::InvalidProof,
                E::NothingToClaim(e) => Self::NothingToClaim {
                    account: e.account,
                    cumulative: e.cumulative,
                    claimed: e.claimed,
                },
                other => Self::Reverted {
                    reason: format!("{other:?}"),
                },
            };
        }
        if let Ok(e) = WeTokenErrors::abi_decode(data) {
            return Self::Reverted {
                reason: format!("{e:?}"),
            };
        }
        if let Ok(reason) = alloy::sol_types::Revert::abi_decode(data) {
            return Self::Reverted {
                reason: reason.reason,
            };
        }
        Self::Reverted {
            reason: format!("0x{}", hex::encode(data)),
        }
    }
}
