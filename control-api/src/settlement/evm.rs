//! The embedded chain: an in-process EVM (revm) holding `WeToken` and
//! `SettlementDistributor`, the default settlement backend (no external
//! node). At first start it deploys both contracts from the committed
//! bytecode and has the incentive fund approve the distributor; afterwards
//! it reloads its state.
//!
//! Persistence: after every transaction that changes state, the whole state
//! (accounts, code, storage, block number) is written as JSON to a temp file,
//! synced and renamed over the state file, so a crash leaves either the old
//! or the new state, never half of one. A transaction that reverts changes
//! nothing, not even the sender's nonce (on a real chain such a transaction
//! fails gas estimation and is never sent either).
//!
//! There are no signatures: a handle sends as whichever account it was
//! opened for ([`EvmChain::as_sender`]). The embedded chain is the server's
//! own ledger of the settlement, not a network others submit to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::sol_types::SolCall;
use alloy_primitives::{keccak256, Address, Bytes, Log, TxKind, U256};
use async_trait::async_trait;
use parking_lot::Mutex;
use revm::bytecode::Bytecode;
use revm::context::result::{ExecutionResult, Output};
use revm::context::TxEnv;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::KECCAK_EMPTY;
use revm::state::AccountInfo;
use revm::{Context, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};
use serde::{Deserialize, Serialize};

use super::chain::{Chain, ChainLog, ContractAddresses, TxOutcome, TxReceipt};
use super::config::SettlementConfig;
use super::contracts::{distributor_deploy_code, we_token_deploy_code, WeToken};
use super::errors::ChainError;

/// Gas for one embedded transaction: far above what the contracts use, and
/// under the per-transaction cap of current forks.
const TX_GAS_LIMIT: u64 = 10_000_000;
const SNAPSHOT_VERSION: u32 = 1;

/// A handle on the embedded chain; clones and [`EvmChain::as_sender`]
/// handles share one state.
#[derive(Clone)]
pub struct EvmChain {
    state: Arc<Mutex<EmbeddedState>>,
    contracts: ContractAddresses,
    operator: Address,
    sender: Address,
    /// The exclusive lock on `<state file>.lock`, held while any handle
    /// lives; `None` for a read-only snapshot.
    lock: Option<Arc<std::fs::File>>,
}

impl std::fmt::Debug for EvmChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmChain")
            .field("contracts", &self.contracts)
            .field("operator", &self.operator)
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl EvmChain {
    /// Opens the chain stored at `data_dir/<embedded_state_path>`, or creates
    /// it (deploying the contracts) when the file does not exist. Blocking
    /// file IO: call it from `spawn_blocking` or at startup.
    ///
    /// One process at a time: the handle holds an exclusive lock on
    /// `<state file>.lock`, and a second `open` (another server, `westream
    /// settle` beside a running server) fails with [`ChainError::Locked`].
    pub fn open(config: &SettlementConfig, data_dir: &Path) -> Result<Self, ChainError> {
        Self::open_inner(config, data_dir, true)
    }

    /// A read-only view of the chain as last persisted, without the lock
    /// (for `westream verify` beside a running server): calls work,
    /// transactions are refused. The chain must exist.
    pub fn open_snapshot(config: &SettlementConfig, data_dir: &Path) -> Result<Self, ChainError> {
        let path = data_dir.join(&config.embedded_state_path);
        if !path.exists() {
            return Err(ChainError::StateCorrupt { path, reason: "no embedded chain here yet".to_owned() });
        }
        Self::open_inner(config, data_dir, false)
    }

    fn open_inner(config: &SettlementConfig, data_dir: &Path, writable: bool) -> Result<Self, ChainError> {
        config.validate().map_err(|e| ChainError::Config {
            key: e.key,
            reason: e.reason,
        })?;
        let path = data_dir.join(&config.embedded_state_path);
        let lock = if writable { Some(Arc::new(lock_state(&path)?)) } else { None };
        let (state, contracts, operator) = if path.exists() {
            EmbeddedState::load(path)?
        } else {
            EmbeddedState::genesis(config, path)?
        };
        tracing::info!(
            token = %contracts.token,
            distributor = %contracts.distributor,
            block = state.block_number,
            "embedded settlement chain ready"
        );
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            contracts,
            operator,
            sender: operator,
            lock,
        })
    }

    /// A handle on the same chain that sends as `sender` (a claimant, or an
    /// account that is not the operator).
    pub fn as_sender(&self, sender: Address) -> Self {
        Self {
            sender,
            ..self.clone()
        }
    }

    /// The distributor's operator (the default sender).
    pub fn operator(&self) -> Address {
        self.operator
    }

    /// Block number of the latest state-changing transaction.
    pub fn block_number(&self) -> u64 {
        self.state.lock().block_number
    }

    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut EmbeddedState) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainError> {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || f(&mut state.lock()))
            .await
            .map_err(|e| ChainError::Evm {
                reason: format!("embedded EVM task failed: {e}"),
            })?
    }
}

#[async_trait]
impl Chain for EvmChain {
    fn contracts(&self) -> ContractAddresses {
        self.contracts
    }

    fn sender(&self) -> Address {
        self.sender
    }

    async fn call(&self, to: Address, input: Bytes) -> Result<Bytes, ChainError> {
        let from = self.sender;
        self.with_state(move |s| Ok(s.execute(from, TxKind::Call(to), input, false)?.output))
            .await
    }

    async fn transact(&self, to: Address, input: Bytes) -> Result<TxOutcome, ChainError> {
        if self.lock.is_none() {
            return Err(ChainError::Evm { reason: "this is a read-only snapshot of the embedded chain".to_owned() });
        }
        let from = self.sender;
        let done = self
            .with_state(move |s| s.execute(from, TxKind::Call(to), input, true))
            .await?;
        Ok(TxOutcome {
            receipt: done.receipt,
            logs: done.logs,
        })
    }

    async fn transaction_count(&self, address: Address) -> Result<u64, ChainError> {
        self.with_state(move |s| Ok(s.nonce(address))).await
    }

    async fn latest_block(&self) -> Result<u64, ChainError> {
        Ok(self.block_number())
    }

    async fn logs(&self, address: Address, from_block: u64, to_block: u64) -> Result<Vec<ChainLog>, ChainError> {
        self.with_state(move |s| {
            Ok(s.logs
                .iter()
                .filter(|l| l.log.address == address && (from_block..=to_block).contains(&l.block_number))
                .map(|l| ChainLog { block_number: l.block_number, tx_hash: l.tx_hash, log_index: l.log_index, log: l.log.clone() })
                .collect())
        })
        .await
    }
}

/// Takes the exclusive lock next to the state file (creating its folder).
fn lock_state(path: &Path) -> Result<std::fs::File, ChainError> {
    let lock_path = path.with_extension("lock");
    let io = |source| ChainError::State { path: lock_path.clone(), source };
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ChainError::Locked { path: lock_path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// The EVM database plus what a block needs, and where it is persisted.
struct EmbeddedState {
    db: CacheDB<EmptyDB>,
    chain_id: u64,
    block_number: u64,
    path: PathBuf,
    /// Contracts and operator, known once genesis has deployed them.
    header: Option<(ContractAddresses, Address)>,
    /// Every log of every committed transaction (deposits follow them).
    logs: Vec<StoredLog>,
}

/// A committed log, persisted with the state.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLog {
    block_number: u64,
    tx_hash: alloy_primitives::B256,
    log_index: u64,
    log: Log,
}

/// The state file's content.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    version: u32,
    chain_id: u64,
    block_number: u64,
    contracts: ContractAddresses,
    operator: Address,
    accounts: BTreeMap<Address, SnapshotAccount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    logs: Vec<StoredLog>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotAccount {
    balance: U256,
    nonce: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<Bytes>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    storage: BTreeMap<U256, U256>,
}

/// The result of one execution that did not revert.
struct Executed {
    output: Bytes,
    logs: Vec<Log>,
    created: Option<Address>,
    receipt: TxReceipt,
}

impl EmbeddedState {
    /// A new chain: deploys both contracts and the fund's approval.
    fn genesis(
        config: &SettlementConfig,
        path: PathBuf,
    ) -> Result<(Self, ContractAddresses, Address), ChainError> {
        let mut state = Self {
            db: CacheDB::new(EmptyDB::new()),
            chain_id: config.embedded_chain_id,
            block_number: 0,
            path,
            header: None,
            logs: Vec::new(),
        };
        let operator = config.operator;
        let fund = config.allocation.incentive_fund;
        let deploy = |s: &mut Self, contract: &'static str, code: Bytes| {
            s.execute(operator, TxKind::Create, code, true)?
                .created
                .ok_or(ChainError::Deploy {
                    contract,
                    reason: "no contract address".to_owned(),
                })
        };
        let token = deploy(
            &mut state,
            "WeToken",
            we_token_deploy_code(&config.allocation)?,
        )?;
        let distributor = deploy(
            &mut state,
            "SettlementDistributor",
            distributor_deploy_code(token, fund, operator)?,
        )?;
        let approve = WeToken::approveCall {
            spender: distributor,
            value: U256::MAX,
        };
        state.execute(fund, TxKind::Call(token), approve.abi_encode().into(), true)?;
        let contracts = ContractAddresses { token, distributor };
        state.header = Some((contracts, operator));
        state.persist(contracts, operator)?;
        Ok((state, contracts, operator))
    }

    fn load(path: PathBuf) -> Result<(Self, ContractAddresses, Address), ChainError> {
        let corrupt = |reason: String| ChainError::StateCorrupt {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|source| ChainError::State {
            path: path.clone(),
            source,
        })?;
        let snapshot: Snapshot =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(corrupt(format!(
                "version {} (expected {SNAPSHOT_VERSION})",
                snapshot.version
            )));
        }
        let mut db = CacheDB::new(EmptyDB::new());
        for (address, account) in snapshot.accounts {
            let mut info = AccountInfo::default()
                .with_balance(account.balance)
                .with_nonce(account.nonce);
            if let Some(code) = account.code {
                info = info.with_code(Bytecode::new_raw(code));
            }
            db.insert_account_info(address, info);
            for (slot, value) in account.storage {
                db.insert_account_storage(address, slot, value)
                    .map_err(|e| corrupt(e.to_string()))?;
            }
        }
        let state = Self {
            db,
            chain_id: snapshot.chain_id,
            block_number: snapshot.block_number,
            path,
            header: Some((snapshot.contracts, snapshot.operator)),
            logs: snapshot.logs,
        };
        for (name, address) in [
            ("token", snapshot.contracts.token),
            ("distributor", snapshot.contracts.distributor),
        ] {
            if state.code(address).is_none() {
                let reason = format!("no code at the {name} address {address}");
                return Err(ChainError::StateCorrupt {
                    path: state.path,
                    reason,
                });
            }
        }
        Ok((state, snapshot.contracts, snapshot.operator))
    }

    fn nonce(&self, address: Address) -> u64 {
        self.db
            .cache
            .accounts
            .get(&address)
            .and_then(|a| a.info())
            .map_or(0, |i| i.nonce)
    }

    fn code(&self, address: Address) -> Option<Bytes> {
        let info = self.db.cache.accounts.get(&address)?.info()?;
        if info.code_hash == KECCAK_EMPTY {
            return None;
        }
        let code = info
            .code
            .or_else(|| self.db.cache.contracts.get(&info.code_hash).cloned())?;
        Some(code.original_bytes())
    }

    fn execute(
        &mut self,
        from: Address,
        kind: TxKind,
        data: Bytes,
        commit: bool,
    ) -> Result<Executed, ChainError> {
        let nonce = self.nonce(from);
        let number = self.block_number + 1;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let tx_hash = keccak256(
            [
                &self.chain_id.to_be_bytes()[..],
                &number.to_be_bytes(),
                from.as_slice(),
                &nonce.to_be_bytes(),
                &data,
            ]
            .concat(),
        );
        let tx = TxEnv::builder()
            .caller(from)
            .kind(kind)
            .data(data)
            .nonce(nonce)
            .gas_limit(TX_GAS_LIMIT)
            .gas_price(0)
            .chain_id(Some(self.chain_id))
            .build_fill();
        let chain_id = self.chain_id;
        let mut evm = Context::mainnet()
            .with_db(&mut self.db)
            .modify_cfg_chained(|cfg| cfg.chain_id = chain_id)
            .modify_block_chained(|block| {
                block.number = U256::from(number);
                block.timestamp = U256::from(timestamp);
            })
            .build_mainnet();
        let done = evm.transact(tx).map_err(|e| ChainError::Evm {
            reason: e.to_string(),
        })?;
        let (output, created, logs) = match done.result {
            ExecutionResult::Success {
                output: Output::Call(out),
                logs,
                ..
            } => (out, None, logs),
            ExecutionResult::Success {
                output: Output::Create(out, address),
                logs,
                ..
            } => (out, address, logs),
            ExecutionResult::Revert { output, .. } => return Err(ChainError::from_revert(&output)),
            ExecutionResult::Halt { reason, .. } => {
                return Err(ChainError::Halted {
                    reason: format!("{reason:?}"),
                })
            }
        };
        let receipt = TxReceipt {
            tx_hash,
            block_number: number,
        };
        if commit {
            evm.commit(done.state);
            drop(evm);
            self.block_number = number;
            for (i, log) in logs.iter().enumerate() {
                self.logs.push(StoredLog { block_number: number, tx_hash, log_index: i as u64, log: log.clone() });
            }
            // Genesis persists once, at its end, when the header is known.
            if let Some((contracts, operator)) = self.header {
                self.persist(contracts, operator)?;
            }
        }
        Ok(Executed {
            output,
            logs,
            created,
            receipt,
        })
    }

    /// Writes the whole state atomically (temp file, fsync, rename, fsync dir).
    fn persist(&self, contracts: ContractAddresses, operator: Address) -> Result<(), ChainError> {
        let mut accounts = BTreeMap::new();
        for (&address, account) in &self.db.cache.accounts {
            let Some(info) = account.info() else { continue };
            let storage: BTreeMap<U256, U256> = account
                .storage
                .iter()
                .filter(|(_, v)| !v.is_zero())
                .map(|(&k, &v)| (k, v))
                .collect();
            let code = self.code(address);
            if info.balance.is_zero() && info.nonce == 0 && code.is_none() && storage.is_empty() {
                continue;
            }
            accounts.insert(
                address,
                SnapshotAccount {
                    balance: info.balance,
                    nonce: info.nonce,
                    code,
                    storage,
                },
            );
        }
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            chain_id: self.chain_id,
            block_number: self.block_number,
            contracts,
            operator,
            accounts,
            logs: self.logs.clone(),
        };
        let io = |source| ChainError::State {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec(&snapshot).map_err(|e| ChainError::StateCorrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            file.write_all(&json).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}
