//! The settlement contracts on any Ethereum JSON-RPC endpoint, through
//! alloy, signed by a configured private key.
//!
//! Without configured contract addresses, the first start deploys both
//! contracts (the signer becomes the distributor's operator) and records
//! their addresses in `settlement/rpc-contracts.json` under the data dir, so
//! later starts reuse them. When the signer also holds the incentive fund it
//! approves the distributor at deployment; otherwise the fund's holder must
//! approve it before the first non-empty publish (which reverts until then).
//!
//! A transaction counts once it is buried under `confirmations` blocks. A
//! call the contract would refuse fails at gas estimation and is never sent;
//! its revert is decoded into the same [`ChainError`] as on the embedded
//! chain.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use alloy::transports::http::reqwest::Url;
use alloy_primitives::{Address, Bytes, U256};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::chain::{ChainLog, Chain, ContractAddresses, TxOutcome, TxReceipt};
use super::config::{RpcChainConfig, SettlementConfig};
use super::contracts::{distributor_deploy_code, we_token_deploy_code, WeToken};
use super::errors::ChainError;

/// Where a deployment's addresses are kept, relative to the data dir.
const DEPLOYMENT_RECORD: &str = "settlement/rpc-contracts.json";

/// A handle on the contracts over JSON-RPC.
#[derive(Clone)]
pub struct RpcChain {
    provider: DynProvider,
    url: Url,
    sender: Address,
    contracts: ContractAddresses,
    /// Held from sending a transaction until it is confirmed.
    send_lock: Arc<tokio::sync::Mutex<()>>,
    confirmations: u64,
    receipt_timeout: Duration,
}

impl std::fmt::Debug for RpcChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcChain")
            .field("url", &self.url.as_str())
            .field("sender", &self.sender)
            .field("contracts", &self.contracts)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentRecord {
    chain_id: u64,
    contracts: ContractAddresses,
}

impl RpcChain {
    /// Connects with the signer from `[settlement.rpc]` (`private_key`, else
    /// the variable named by `private_key_env`); deploys the contracts when
    /// neither the config nor the data dir knows them.
    pub async fn connect(config: &SettlementConfig, data_dir: &Path) -> Result<Self, ChainError> {
        config.validate().map_err(|e| ChainError::Config {
            key: e.key,
            reason: e.reason,
        })?;
        let rpc = &config.rpc;
        let key = if rpc.private_key.is_empty() {
            std::env::var(&rpc.private_key_env).map_err(|_| ChainError::Config {
                key: "rpc.private_key_env",
                reason: format!("environment variable {} is not set", rpc.private_key_env),
            })?
        } else {
            rpc.private_key.clone()
        };
        let url = Url::parse(&rpc.url).map_err(|e| ChainError::Config {
            key: "rpc.url",
            reason: e.to_string(),
        })?;
        let placeholder = ContractAddresses {
            token: Address::ZERO,
            distributor: Address::ZERO,
        };
        let mut chain = Self::attach(url, &key, placeholder, rpc)?;
        chain.contracts = match (rpc.token_address, rpc.distributor_address) {
            (Some(token), Some(distributor)) => ContractAddresses { token, distributor },
            _ => {
                chain
                    .deployment(config, &data_dir.join(DEPLOYMENT_RECORD))
                    .await?
            }
        };
        chain.check_code().await?;
        Ok(chain)
    }

    /// A handle on the same contracts that signs with another key (a
    /// claimant's wallet, or an account that is not the operator).
    pub fn with_signer(&self, private_key: &str) -> Result<Self, ChainError> {
        let rpc = RpcChainConfig {
            confirmations: self.confirmations,
            receipt_timeout_ms: self
                .receipt_timeout
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            ..RpcChainConfig::default()
        };
        Self::attach(self.url.clone(), private_key, self.contracts, &rpc)
    }

    fn attach(
        url: Url,
        private_key: &str,
        contracts: ContractAddresses,
        rpc: &RpcChainConfig,
    ) -> Result<Self, ChainError> {
        let signer =
            PrivateKeySigner::from_str(private_key.trim()).map_err(|e| ChainError::Config {
                key: "rpc.private_key",
                reason: e.to_string(),
            })?;
        let sender = signer.address();
        // Not the recommended fillers: their cached nonce is taken even when
        // gas estimation then fails (a call the contract refuses), leaving a
        // gap that strands every later transaction. The simple manager asks
        // the node each time; `send_lock` keeps one handle's sends in order.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_http(url.clone())
            .erased();
        Ok(Self {
            provider,
            url,
            sender,
            contracts,
            send_lock: Arc::new(tokio::sync::Mutex::new(())),
            confirmations: rpc.confirmations.max(1),
            receipt_timeout: Duration::from_millis(rpc.receipt_timeout_ms),
        })
    }

    /// The recorded deployment for this chain, or a new one.
    async fn deployment(
        &self,
        config: &SettlementConfig,
        record: &PathBuf,
    ) -> Result<ContractAddresses, ChainError> {
        let chain_id = self.provider.get_chain_id().await.map_err(rpc_error)?;
        if let Ok(bytes) = std::fs::read(record) {
            let known: DeploymentRecord =
                serde_json::from_slice(&bytes).map_err(|e| ChainError::StateCorrupt {
                    path: record.clone(),
                    reason: e.to_string(),
                })?;
            if known.chain_id == chain_id {
                return Ok(known.contracts);
            }
            tracing::warn!(path = %record.display(), recorded = known.chain_id, chain_id, "deployment record is for another chain; deploying anew");
        }
        let fund = config.allocation.incentive_fund;
        let token = self
            .deploy("WeToken", we_token_deploy_code(&config.allocation)?)
            .await?;
        let distributor = self
            .deploy(
                "SettlementDistributor",
                distributor_deploy_code(token, fund, self.sender)?,
            )
            .await?;
        if fund == self.sender {
            let approve = WeToken::approveCall {
                spender: distributor,
                value: U256::MAX,
            };
            self.transact(token, approve.abi_encode().into()).await?;
        } else {
            tracing::warn!(%fund, %distributor, "the incentive fund must approve the distributor before publishing");
        }
        let contracts = ContractAddresses { token, distributor };
        let io = |source| ChainError::State {
            path: record.clone(),
            source,
        };
        if let Some(dir) = record.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let json = serde_json::to_vec_pretty(&DeploymentRecord {
            chain_id,
            contracts,
        })
        .map_err(|e| ChainError::StateCorrupt {
            path: record.clone(),
            reason: e.to_string(),
        })?;
        let tmp = record.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, record).map_err(io)?;
        tracing::info!(%token, %distributor, chain_id, "deployed settlement contracts");
        Ok(contracts)
    }

    async fn deploy(&self, contract: &'static str, code: Bytes) -> Result<Address, ChainError> {
        let tx = TransactionRequest::default().with_deploy_code(code);
        let pending = self
            .provider
            .send_transaction(tx)
            .await
            .map_err(|e| ChainError::Deploy {
                contract,
                reason: e.to_string(),
            })?;
        self.confirm(pending)
            .await?
            .contract_address
            .ok_or(ChainError::Deploy {
                contract,
                reason: "the receipt has no contract address".to_owned(),
            })
    }

    async fn check_code(&self) -> Result<(), ChainError> {
        for (contract, address) in [
            ("WeToken", self.contracts.token),
            ("SettlementDistributor", self.contracts.distributor),
        ] {
            if self
                .provider
                .get_code_at(address)
                .await
                .map_err(rpc_error)?
                .is_empty()
            {
                return Err(ChainError::Deploy {
                    contract,
                    reason: format!("no code at {address}"),
                });
            }
        }
        Ok(())
    }

    /// Waits for the configured confirmations; a mined revert is an error.
    async fn confirm(
        &self,
        pending: PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<TransactionReceipt, ChainError> {
        let receipt = pending
            .with_required_confirmations(self.confirmations)
            .with_timeout(Some(self.receipt_timeout))
            .get_receipt()
            .await
            .map_err(rpc_error)?;
        if !receipt.status() {
            return Err(ChainError::Reverted {
                reason: format!(
                    "transaction {} reverted when mined",
                    receipt.transaction_hash
                ),
            });
        }
        Ok(receipt)
    }
}

fn rpc_error(e: impl std::fmt::Display) -> ChainError {
    ChainError::Rpc {
        reason: e.to_string(),
    }
}

/// A revert (from `eth_call` or gas estimation) decoded, anything else RPC.
fn transport_error(e: alloy::transports::TransportError) -> ChainError {
    match e
        .as_error_resp()
        .and_then(|payload| payload.as_revert_data())
    {
        Some(data) => ChainError::from_revert(&data),
        None => rpc_error(e),
    }
}

#[async_trait]
impl Chain for RpcChain {
    fn contracts(&self) -> ContractAddresses {
        self.contracts
    }

    fn sender(&self) -> Address {
        self.sender
    }

    async fn call(&self, to: Address, input: Bytes) -> Result<Bytes, ChainError> {
        let tx = TransactionRequest::default()
            .with_from(self.sender)
            .with_to(to)
            .with_input(input);
        self.provider.call(tx).await.map_err(transport_error)
    }

    async fn transact(&self, to: Address, input: Bytes) -> Result<TxOutcome, ChainError> {
        let _in_order = self.send_lock.lock().await;
        let tx = TransactionRequest::default().with_to(to).with_input(input);
        let pending = self
            .provider
            .send_transaction(tx)
            .await
            .map_err(transport_error)?;
        let receipt = self.confirm(pending).await?;
        let logs = receipt
            .inner
            .logs()
            .iter()
            .map(|log| log.inner.clone())
            .collect();
        let receipt = TxReceipt {
            tx_hash: receipt.transaction_hash,
            block_number: receipt.block_number.unwrap_or_default(),
        };
        Ok(TxOutcome { receipt, logs })
    }

    async fn latest_block(&self) -> Result<u64, ChainError> {
        self.provider.get_block_number().await.map_err(transport_error)
    }

    async fn logs(&self, address: Address, from_block: u64, to_block: u64) -> Result<Vec<ChainLog>, ChainError> {
        let filter = alloy::rpc::types::Filter::new().address(address).from_block(from_block).to_block(to_block);
        let logs = self.provider.get_logs(&filter).await.map_err(transport_error)?;
        Ok(logs
            .into_iter()
            .filter(|l| !l.removed)
            .map(|l| ChainLog {
                block_number: l.block_number.unwrap_or_default(),
                tx_hash: l.transaction_hash.unwrap_or_default(),
                log_index: l.log_index.unwrap_or_default(),
                log: l.inner,
            })
            .collect())
    }

    async fn transaction_count(&self, address: Address) -> Result<u64, ChainError> {
        self.provider
            .get_transaction_count(address)
            .await
            .map_err(rpc_error)
    }
}
