//! `[settlement]` configuration: which chain anchors the epochs, the token
//! allocation, and how to reach a JSON-RPC node. Every field has a default,
//! so an empty table runs the embedded chain under the data dir.

use std::path::PathBuf;

use alloy_primitives::{keccak256, Address};
use serde::{Deserialize, Serialize};

/// Which chain the settlement contract lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChainBackend {
    /// An embedded EVM (revm) whose state is a file under the data dir: no
    /// external node, and the contracts are deployed at first start.
    #[default]
    Embedded,
    /// Any Ethereum JSON-RPC endpoint (`[settlement.rpc]`).
    Rpc,
}

/// The whole `[settlement]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// `embedded` (default) or `rpc`.
    pub backend: ChainBackend,
    /// Who receives the 1,250,000,000 WE when `WeToken` is deployed.
    pub allocation: AllocationConfig,
    /// Embedded chain only: the account that publishes roots (the operator
    /// of `SettlementDistributor`) and deploys the contracts. With `rpc`
    /// the operator is the signer's address.
    pub operator: Address,
    /// Embedded chain only: its chain id, as reported to wallets.
    pub embedded_chain_id: u64,
    /// Embedded chain only: the state file, relative to the data dir.
    pub embedded_state_path: PathBuf,
    /// How often the deposit watcher reads new WE transfers from the chain.
    pub deposit_poll_interval_ms: u64,
    pub rpc: RpcChainConfig,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        Self {
            backend: ChainBackend::Embedded,
            allocation: AllocationConfig::default(),
            operator: dev_address("operator"),
            embedded_chain_id: 31_337,
            embedded_state_path: PathBuf::from("settlement/chain.json"),
            deposit_poll_interval_ms: 5_000,
            rpc: RpcChainConfig::default(),
        }
    }
}

/// The white paper's allocation of the WE supply, one address per share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationConfig {
    /// 50%: the public issue.
    pub issue: Address,
    /// 30%: the foundation.
    pub foundation: Address,
    /// 10%: the ecological incentive fund. Epoch payouts are pulled from it,
    /// so it must approve the distributor (done at deployment on the
    /// embedded chain, and on an RPC chain when the signer is the fund).
    pub incentive_fund: Address,
    /// 5%: the founding team.
    pub team: Address,
    /// 5%: the community.
    pub community: Address,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        Self {
            issue: dev_address("issue"),
            foundation: dev_address("foundation"),
            incentive_fund: dev_address("incentive-fund"),
            team: dev_address("team"),
            community: dev_address("community"),
        }
    }
}

/// `[settlement.rpc]`: an external chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcChainConfig {
    /// HTTP JSON-RPC endpoint.
    pub url: String,
    /// Hex private key of the signer (operator). Prefer `private_key_env`;
    /// exactly one of the two is used, this one first when non-empty.
    pub private_key: String,
    /// Environment variable holding the hex private key.
    pub private_key_env: String,
    /// Blocks a transaction must be buried under before it counts (1 = mined).
    pub confirmations: u64,
    /// How long to wait for those confirmations.
    pub receipt_timeout_ms: u64,
    /// Deployed `WeToken`; with `distributor_address` empty, both contracts
    /// are deployed at first start and their addresses kept in the data dir.
    pub token_address: Option<Address>,
    pub distributor_address: Option<Address>,
}

impl Default for RpcChainConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8545".to_owned(),
            private_key: String::new(),
            private_key_env: "WESTREAM_SETTLEMENT_KEY".to_owned(),
            confirmations: 1,
            receipt_timeout_ms: 120_000,
            token_address: None,
            distributor_address: None,
        }
    }
}

/// A `[settlement]` value that cannot work, naming its key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("settlement.{key}: {reason}")]
pub struct SettlementConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl SettlementConfig {
    /// Blocks a deposit must be buried under before it is credited: the
    /// RPC chain's `confirmations`; 1 (mined) on the embedded chain.
    pub fn deposit_confirmations(&self) -> u64 {
        match self.backend {
            ChainBackend::Embedded => 1,
            ChainBackend::Rpc => self.rpc.confirmations.max(1),
        }
    }

    /// Checks what serde cannot: non-zero addresses, a usable RPC section.
    pub fn validate(&self) -> Result<(), SettlementConfigError> {
        let err = |key, reason: &str| {
            Err(SettlementConfigError {
                key,
                reason: reason.to_owned(),
            })
        };
        let a = &self.allocation;
        for (key, addr) in [
            ("allocation.issue", a.issue),
            ("allocation.foundation", a.foundation),
            ("allocation.incentive_fund", a.incentive_fund),
            ("allocation.team", a.team),
            ("allocation.community", a.community),
            ("operator", self.operator),
        ] {
            if addr.is_zero() {
                return err(key, "must not be the zero address");
            }
        }
        if self.embedded_state_path.as_os_str().is_empty() || self.embedded_state_path.is_absolute()
        {
            return err(
                "embedded_state_path",
                "must be a relative path under the data dir",
            );
        }
        if !(100..=3_600_000).contains(&self.deposit_poll_interval_ms) {
            return err("deposit_poll_interval_ms", "must be between 100 and 3600000");
        }
        if self.backend == ChainBackend::Rpc {
            let rpc = &self.rpc;
            if !(rpc.url.starts_with("http://") || rpc.url.starts_with("https://")) {
                return err("rpc.url", "must be an http:// or https:// URL");
            }
            if rpc.private_key.is_empty() && rpc.private_key_env.is_empty() {
                return err(
                    "rpc.private_key_env",
                    "a signer is needed: set it or rpc.private_key",
                );
            }
            if rpc.confirmations == 0 {
                return err("rpc.confirmations", "must be at least 1");
            }
            if rpc.token_address.is_some() != rpc.distributor_address.is_some() {
                return err(
                    "rpc.distributor_address",
                    "set both contract addresses or neither",
                );
            }
        }
        Ok(())
    }
}

/// A fixed, keyless address for the embedded chain's default roles:
/// `keccak256("westream:<role>")[12..]`.
pub fn dev_address(role: &str) -> Address {
    Address::from_slice(&keccak256(format!("westream:{role}"))[12..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_is_the_valid_embedded_default() {
        let cfg: SettlementConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, SettlementConfig::default());
        cfg.validate().unwrap();
    }

    #[test]
    fn an_rpc_chain_needs_both_contract_addresses_or_neither() {
        let cfg: SettlementConfig = toml::from_str(
            "backend = \"rpc\"\n[rpc]\ntoken_address = \"0x1111111111111111111111111111111111111111\"\n",
        )
        .unwrap();
        assert_eq!(cfg.validate().unwrap_err().key, "rpc.distributor_address");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        assert!(toml::from_str::<SettlementConfig>("confirmations = 3").is_err());
    }
}
