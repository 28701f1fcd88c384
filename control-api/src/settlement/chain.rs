//! The [`Chain`] trait: what the epoch job, the claims API and `westream
//! verify` need from the settlement contracts, whichever chain holds them.
//!
//! Amounts are in the token's smallest unit (10^-18 WE). Every call that
//! changes state returns once the transaction counts (mined on the embedded
//! chain and persisted; buried under the configured confirmations on RPC).

use alloy::sol_types::{SolCall, SolEvent};
use alloy_primitives::{Address, Bytes, Log, B256, U256};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::contracts::{SettlementDistributor, WeToken};
use super::errors::ChainError;

/// Where the two contracts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractAddresses {
    pub token: Address,
    pub distributor: Address,
}

/// One anchored epoch as the contract stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRoot {
    pub epoch: u64,
    pub root: B256,
    /// Sum of every account's cumulative amount at this epoch.
    pub total_cumulative: U256,
}

/// A transaction that counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxReceipt {
    /// On the embedded chain, a synthetic hash unique to the transaction.
    pub tx_hash: B256,
    pub block_number: u64,
}

/// What [`Chain::publish_root`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorOutcome {
    /// The root was published by this transaction.
    Published(TxReceipt),
    /// The chain already had this epoch with the same root and total (a
    /// rerun after a crash): nothing was sent.
    AlreadyAnchored,
}

/// A transaction that counts, with the events it emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    pub receipt: TxReceipt,
    pub logs: Vec<Log>,
}

/// One log as the chain keeps it: where it is, for exactly-once processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLog {
    pub block_number: u64,
    pub tx_hash: B256,
    /// Position of the log in its block (or transaction, on the embedded
    /// chain); with `tx_hash` it names the log uniquely.
    pub log_index: u64,
    pub log: Log,
}

/// A WE `Transfer` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTransfer {
    pub block_number: u64,
    pub tx_hash: B256,
    pub log_index: u64,
    pub from: Address,
    pub to: Address,
    pub value: U256,
}

/// A paid claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimReceipt {
    pub tx: TxReceipt,
    /// What this claim paid: `cumulative` minus what was claimed before.
    pub amount: U256,
}

/// The settlement contracts on some chain. A backend only moves bytes
/// ([`Chain::call`], [`Chain::transact`]); the contract calls are provided
/// methods written once here. Implemented by [`super::EvmChain`] (embedded
/// revm, the default) and [`super::RpcChain`] (JSON-RPC).
///
/// Transactions are sent by [`Chain::sender`]; only the operator can
/// publish, anyone can claim for any account (the tokens go to the account).
/// A transaction the contract refuses is not sent: its revert comes back
/// decoded ([`ChainError::NotOperator`], [`ChainError::InvalidProof`], ...).
#[async_trait]
pub trait Chain: Send + Sync {
    /// The deployed contracts.
    fn contracts(&self) -> ContractAddresses;

    /// The account that signs this handle's transactions.
    fn sender(&self) -> Address;

    /// Runs `input` against `to` on the latest state without a transaction.
    async fn call(&self, to: Address, input: Bytes) -> Result<Bytes, ChainError>;

    /// Sends `input` to `to` from [`Chain::sender`] and returns once it counts.
    async fn transact(&self, to: Address, input: Bytes) -> Result<TxOutcome, ChainError>;

    /// Transactions sent from `address` so far (its nonce): lets a caller see
    /// that an idempotent call sent nothing.
    async fn transaction_count(&self, address: Address) -> Result<u64, ChainError>;

    /// The latest block number.
    async fn latest_block(&self) -> Result<u64, ChainError>;

    /// Logs emitted by `address` in blocks `from_block..=to_block`, in order.
    async fn logs(&self, address: Address, from_block: u64, to_block: u64) -> Result<Vec<ChainLog>, ChainError>;

    /// WE `Transfer` events in blocks `from_block..=to_block`, in order.
    async fn token_transfers(&self, from_block: u64, to_block: u64) -> Result<Vec<TokenTransfer>, ChainError> {
        let token = self.contracts().token;
        let logs = self.logs(token, from_block, to_block).await?;
        Ok(logs
            .into_iter()
            .filter_map(|l| {
                let event = WeToken::Transfer::decode_log(&l.log).ok()?;
                Some(TokenTransfer {
                    block_number: l.block_number,
                    tx_hash: l.tx_hash,
                    log_index: l.log_index,
                    from: event.data.from,
                    to: event.data.to,
                    value: event.data.value,
                })
            })
            .collect())
    }

    /// Sends `amount` WE from [`Chain::sender`] to `to`.
    async fn transfer(&self, to: Address, amount: U256) -> Result<TxReceipt, ChainError> {
        let call = WeToken::transferCall { to, value: amount };
        Ok(self.transact(self.contracts().token, call.abi_encode().into()).await?.receipt)
    }

    /// The latest anchored epoch, 0 before the first.
    async fn last_epoch(&self) -> Result<u64, ChainError> {
        view(
            self,
            self.contracts().distributor,
            SettlementDistributor::lastEpochCall {},
        )
        .await
    }

    /// The root and total anchored for `epoch`, `None` if not anchored yet.
    async fn epoch_root(&self, epoch: u64) -> Result<Option<EpochRoot>, ChainError> {
        if epoch == 0 || epoch > self.last_epoch().await? {
            return Ok(None);
        }
        let d = self.contracts().distributor;
        let root = view(self, d, SettlementDistributor::rootOfCall { epoch }).await?;
        let total_cumulative = view(self, d, SettlementDistributor::totalOfCall { epoch }).await?;
        Ok(Some(EpochRoot {
            epoch,
            root,
            total_cumulative,
        }))
    }

    /// Anchors `epoch` idempotently. An epoch already on chain with the same
    /// root and total is [`AnchorOutcome::AlreadyAnchored`] and sends
    /// nothing; with another root or total it is [`ChainError::EpochConflict`].
    /// Anything else goes to the contract, which enforces the order
    /// (`lastEpoch + 1`), the non-decreasing total and the operator.
    async fn publish_root(
        &self,
        epoch: u64,
        root: B256,
        total: U256,
    ) -> Result<AnchorOutcome, ChainError> {
        if let Some(anchored) = self.epoch_root(epoch).await? {
            if anchored.root == root && anchored.total_cumulative == total {
                return Ok(AnchorOutcome::AlreadyAnchored);
            }
            let given = EpochRoot {
                epoch,
                root,
                total_cumulative: total,
            };
            return Err(ChainError::EpochConflict {
                anchored: Box::new(anchored),
                given: Box::new(given),
            });
        }
        let call = SettlementDistributor::publishCall {
            epoch,
            newRoot: root,
            newTotalCumulative: total,
        };
        let outcome = self
            .transact(self.contracts().distributor, call.abi_encode().into())
            .await?;
        Ok(AnchorOutcome::Published(outcome.receipt))
    }

    /// What `account` has been paid so far (its last claimed cumulative).
    async fn claimed(&self, account: Address) -> Result<U256, ChainError> {
        view(
            self,
            self.contracts().distributor,
            SettlementDistributor::claimedCall { account },
        )
        .await
    }

    /// Sum of every claim paid by the distributor.
    async fn total_claimed(&self) -> Result<U256, ChainError> {
        view(
            self,
            self.contracts().distributor,
            SettlementDistributor::totalClaimedCall {},
        )
        .await
    }

    /// Claims `account`'s `cumulative` with its proof against the latest root.
    /// A claim with nothing owed reverts ([`ChainError::NothingToClaim`]).
    async fn claim(
        &self,
        account: Address,
        cumulative: U256,
        proof: &[B256],
    ) -> Result<ClaimReceipt, ChainError> {
        let call = SettlementDistributor::claimCall {
            account,
            cumulative,
            proof: proof.to_vec(),
        };
        let distributor = self.contracts().distributor;
        let outcome = self.transact(distributor, call.abi_encode().into()).await?;
        let amount = outcome
            .logs
            .iter()
            .filter(|log| log.address == distributor)
            .find_map(|log| SettlementDistributor::Claimed::decode_log(log).ok())
            .map(|event| event.data.amount)
            .ok_or(ChainError::Reverted {
                reason: "claim emitted no Claimed event".to_owned(),
            })?;
        Ok(ClaimReceipt {
            tx: outcome.receipt,
            amount,
        })
    }

    /// WE balance of `holder`.
    async fn balance_of(&self, holder: Address) -> Result<U256, ChainError> {
        view(
            self,
            self.contracts().token,
            WeToken::balanceOfCall { account: holder },
        )
        .await
    }

    /// WE total supply.
    async fn total_supply(&self) -> Result<U256, ChainError> {
        view(self, self.contracts().token, WeToken::totalSupplyCall {}).await
    }
}

/// A typed read-only contract call.
async fn view<C: SolCall + Send, T: Chain + ?Sized>(
    chain: &T,
    to: Address,
    call: C,
) -> Result<C::Return, ChainError> {
    let out = chain.call(to, call.abi_encode().into()).await?;
    C::abi_decode_returns(&out).map_err(|e| ChainError::Reverted {
        reason: format!("undecodable return data: {e}"),
    })
}
