//! Storage: the [`Store`] trait the API and the hooks use, its domain types,
//! and the embedded SQLite implementation.
//!
//! Contract: every method is synchronous and may block on disk, so async
//! code calls it from `spawn_blocking` (see `crate::plane`). Every write runs
//! in one transaction that also records its idempotency key; a write either
//! happens whole, with its journal entry balanced to zero, or not at all.
//!
//! Path to PostgreSQL (more than one control node): the schema in
//! `migrations/` is plain SQL that maps one to one (INTEGER -> BIGINT,
//! `INTEGER PRIMARY KEY` -> `BIGSERIAL`). A `PgStore` implements this trait
//! with `SERIALIZABLE` (or `SELECT ... FOR UPDATE` on the wallet rows)
//! transactions, and the `UNIQUE (scope, key)` idempotency constraint keeps
//! a retry that lands on another node from posting twice: that node's
//! transaction fails on the constraint, rolls back, and replays the stored
//! result. Nothing above this trait changes.

mod accounts;
pub(crate) mod epochs;
mod ledger;
mod packages;
mod rooms;
mod sqlite;

pub use rooms::{
    split_payment, GiftOrder, GiftReceipt, Moderation, ModerationRow, RankingRow, RoomSettings,
    RoomsSnapshot, SettingsUpdate, Share, Ticket,
};
pub use epochs::{CreditedDeposit, DepositEvent, EpochRecord, TreeSummary, WithdrawalReceipt};
pub use packages::{MAX_BATCH_CHANNELS, MAX_BATCH_COUNTER, STOP_REASON};
pub use sqlite::SqliteStore;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::config::{ControlConfig, ProductConfig};
use crate::hooks::{StopOrder, UsageBatch, UsageReceipt};

/// Row id of an account (a user).
pub type AccountId = i64;

/// Codes of the system ledger accounts, created by the first migration run.
pub mod system {
    /// Where WE enter the ledger (faucet, seed funding, later bridge-in). Its
    /// balance is minus the WE in circulation, so the ledger sums to zero.
    pub const ISSUANCE: &str = "system:issuance";
    /// Fees the platform keeps (e.g. on gifts).
    pub const PLATFORM_FEES: &str = "system:platform_fees";
    /// Funds the daily reward pool.
    pub const INCENTIVE_FUND: &str = "system:incentive_fund";
    /// Paid out as daily rewards.
    pub const REWARD_POOL: &str = "system:reward_pool";
    /// Receives the price of every bandwidth package.
    pub const BANDWIDTH_REVENUE: &str = "system:bandwidth_revenue";
    /// All of them, in a stable order.
    pub const ALL: [&str; 5] = [
        ISSUANCE,
        PLATFORM_FEES,
        INCENTIVE_FUND,
        REWARD_POOL,
        BANDWIDTH_REVENUE,
    ];
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (disk, corruption, a constraint we did not expect).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored idempotent response could not be decoded.
    #[error("stored response is unreadable: {0}")]
    Corrupt(String),
    /// Opening or migrating the database failed.
    #[error("migration {version} failed: {message}")]
    Migration {
        /// Schema version being applied.
        version: u32,
        /// What went wrong.
        message: String,
    },
    /// The blocking task running a store call panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
    /// The named thing does not exist (or is not visible to the caller).
    #[error("{what} '{id}' not found")]
    NotFound {
        /// Kind of thing: `account`, `channel`, `stream_key`, `product`.
        what: &'static str,
        /// What the caller named.
        id: String,
    },
    /// The caller does not own the resource.
    #[error("{0}")]
    Forbidden(String),
    /// A unique name is taken, or a state forbids the change.
    #[error("{message}")]
    Conflict {
        /// Stable error code, e.g. `handle_taken`.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// The wallet cannot pay.
    #[error("insufficient funds: need {needed_micro_we} micro-WE, have {available_micro_we}")]
    InsufficientFunds {
        /// Amount the operation needs.
        needed_micro_we: i64,
        /// Balance before the operation.
        available_micro_we: i64,
    },
    /// An input field is invalid.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The field name as sent by the client.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The idempotency key was used before for a different request.
    #[error("idempotency key '{key}' was already used for a different request")]
    IdempotencyMismatch {
        /// The reused key.
        key: String,
    },
    /// A balance would leave the i64 range.
    #[error("amount out of range")]
    Overflow,
}

/// Identifies one write for idempotency: who, which key, and a hash of what
/// was asked (route and body), so a key reused for another request is caught.
#[derive(Debug, Clone)]
pub struct IdemKey {
    /// `acct:{id}`, `signup` or `seed`: keys of different callers never clash.
    pub scope: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// Hex SHA-256 of the route and the canonical request body.
    pub request_hash: String,
}

impl IdemKey {
    /// Builds a key; `request` is hashed with `route`.
    pub fn new(
        scope: impl Into<String>,
        key: impl Into<String>,
        route: &str,
        request: &impl Serialize,
    ) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update(b"\n");
        // Serializing our own request structs cannot fail; an empty body on
        // the impossible path still yields a stable hash.
        h.update(serde_json::to_vec(request).unwrap_or_default());
        IdemKey {
            scope: scope.into(),
            key: key.into(),
            request_hash: hex::encode(h.finalize()),
        }
    }
}

/// The result of an idempotent write, and whether it was a replay.
#[derive(Debug, Clone)]
pub struct Replayed<T> {
    /// The result (the first one, for a replay).
    pub value: T,
    /// True when the write had happened before and nothing was done now.
    pub replayed: bool,
}

/// A result that can be stored for replay. Secrets (tokens, stream keys)
/// are shown once: the stored copy has them removed.
pub trait Replayable: Serialize + for<'de> Deserialize<'de> + Clone {
    /// The copy kept in the idempotency table.
    fn redacted(&self) -> Self {
        self.clone()
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Account id.
    pub account_id: AccountId,
    /// Account handle.
    pub handle: String,
}

/// Sign-up input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// 3..=32 of `a-z 0-9 _ -`, starting with a letter or digit.
    pub handle: String,
    /// Optional phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Optional e-mail address.
    #[serde(default)]
    pub email: Option<String>,
}

/// An account as shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Account id.
    pub id: AccountId,
    /// Unique handle.
    pub handle: String,
    /// Phone, if given.
    pub phone: Option<String>,
    /// E-mail, if given.
    pub email: Option<String>,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
}

/// A freshly created account and its first API token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAccount {
    /// The account.
    pub account: Account,
    /// The API token, shown once; `None` when this is a replay.
    pub token: Option<String>,
}
impl Replayable for NewAccount {
    fn redacted(&self) -> Self {
        NewAccount {
            account: self.account.clone(),
            token: None,
        }
    }
}

/// A new API token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    /// Token row id.
    pub token_id: i64,
    /// The token, shown once; `None` when this is a replay.
    pub token: Option<String>,
}
impl Replayable for NewToken {
    fn redacted(&self) -> Self {
        NewToken {
            token_id: self.token_id,
            token: None,
        }
    }
}

/// A channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Channel id.
    pub id: i64,
    /// Public name (the stream path viewers use).
    pub name: String,
    /// Owner's handle.
    pub owner: String,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
}
impl Replayable for Channel {}

/// A stream key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamKeyInfo {
    /// Key id.
    pub id: i64,
    /// Channel it publishes.
    pub channel: String,
    /// Masked form, e.g. `demo…(8)`.
    pub masked: String,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// Revocation time, if revoked.
    pub revoked_at_ms: Option<i64>,
}
impl Replayable for StreamKeyInfo {}

/// A freshly created stream key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewStreamKey {
    /// The listing entry.
    pub info: StreamKeyInfo,
    /// The key, shown once; `None` when this is a replay.
    pub key: Option<String>,
    /// For a rotation: the key it replaced (now revoked).
    pub replaced_key_id: Option<i64>,
}
impl Replayable for NewStreamKey {
    fn redacted(&self) -> Self {
        NewStreamKey {
            key: None,
            ..self.clone()
        }
    }
}

/// A completed transfer (also the faucet's receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReceipt {
    /// Journal entry id.
    pub journal_id: i64,
    /// Paying ledger account code.
    pub from: String,
    /// Receiving ledger account code.
    pub to: String,
    /// Amount moved.
    pub amount_micro_we: i64,
    /// The caller's wallet balance right after.
    pub balance_after_micro_we: i64,
}
impl Replayable for TransferReceipt {}

/// One line of a wallet statement: one posting on the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Posting id (use as `after` to page).
    pub posting_id: i64,
    /// Journal entry it belongs to.
    pub journal_id: i64,
    /// Entry kind: `faucet`, `transfer`, `purchase`, `seed`.
    pub kind: String,
    /// Entry memo.
    pub memo: Option<String>,
    /// Signed amount: positive in, negative out.
    pub amount_micro_we: i64,
    /// Wallet balance after this posting.
    pub balance_after_micro_we: i64,
    /// The other side(s) of the entry.
    pub counterparties: Vec<String>,
    /// Time (unix ms).
    pub created_at_ms: i64,
}

/// A bandwidth package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Package id.
    pub id: i64,
    /// Product bought.
    pub product_id: String,
    /// Bytes bought.
    pub bytes_total: i64,
    /// Bytes left.
    pub bytes_remaining: i64,
    /// Price paid.
    pub price_micro_we: i64,
    /// Purchase time (unix ms).
    pub created_at_ms: i64,
    /// Expiry (unix ms).
    pub expires_at_ms: i64,
    /// Journal entry of the payment.
    pub journal_id: Option<i64>,
}
impl Replayable for Package {}

/// What a publish check needs, read in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishLookup {
    /// Channel the key publishes.
    pub channel: String,
    /// Channel owner.
    pub owner_account_id: AccountId,
    /// Sum of unexpired package bytes of the owner.
    pub bytes_remaining: i64,
}

/// One usage record of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Reporting node.
    pub node_id: String,
    /// Its batch sequence.
    pub batch_seq: i64,
    /// Time the batch was counted (unix ms).
    pub recorded_at_ms: i64,
    /// Bytes to viewers.
    pub bytes_out: i64,
    /// Bytes from the publisher.
    pub bytes_in: i64,
    /// Viewer-seconds.
    pub viewer_seconds: i64,
    /// Bytes taken from packages.
    pub charged_bytes: i64,
    /// Chargeable bytes no package could cover (served during the grace).
    pub uncharged_bytes: i64,
}

/// A channel's usage history (public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelUsageHistory {
    /// Channel name.
    pub channel: String,
    /// Sum of `bytes_out` over all records.
    pub total_bytes_out: i64,
    /// Sum of `bytes_in`.
    pub total_bytes_in: i64,
    /// Sum of viewer-seconds.
    pub total_viewer_seconds: i64,
    /// Sum of charged bytes.
    pub total_charged_bytes: i64,
    /// The owner's unexpired package bytes now.
    pub bytes_remaining: i64,
    /// Stop order in force, if any.
    pub stop_order: Option<StopOrder>,
    /// Newest first, at most `limit`.
    pub records: Vec<UsageRecord>,
}

/// The operator's view of the ledger's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAudit {
    /// True when every check below passed.
    pub ok: bool,
    /// Journal entries.
    pub journal_count: i64,
    /// Postings.
    pub posting_count: i64,
    /// Sum of all ledger account balances; must be 0.
    pub sum_of_balances: i64,
    /// Sum of all postings; must be 0.
    pub sum_of_postings: i64,
    /// Journal entries whose postings do not sum to zero (must be empty).
    pub unbalanced_journals: Vec<i64>,
    /// Wallets below zero (must be empty).
    pub negative_wallets: Vec<String>,
    /// Accounts whose cached balance differs from the sum of their postings.
    pub mismatched_accounts: Vec<String>,
    /// Balance of every system account.
    pub system_balances: BTreeMap<String, i64>,
    /// Sum of all wallet balances (WE in users' hands).
    pub wallets_total: i64,
}

/// Everything the control plane stores. See the module doc for the contract.
pub trait Store: Send + Sync + 'static {
    /// Creates an account, its wallet and a first API token.
    fn create_account(
        &self,
        idem: &IdemKey,
        req: &CreateAccount,
        now_ms: i64,
    ) -> Result<Replayed<NewAccount>, StoreError>;
    /// Maps an API token to its account.
    fn authenticate(&self, token: &str) -> Result<Option<Caller>, StoreError>;
    /// The caller's account.
    fn account(&self, id: AccountId) -> Result<Account, StoreError>;
    /// Issues another API token.
    fn create_token(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        now_ms: i64,
    ) -> Result<Replayed<NewToken>, StoreError>;
    /// Creates a channel owned by the caller.
    fn create_channel(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        name: &str,
        now_ms: i64,
    ) -> Result<Replayed<Channel>, StoreError>;
    /// A channel by name.
    fn channel(&self, name: &str) -> Result<Option<Channel>, StoreError>;
    /// Creates a random stream key for a channel of the caller.
    fn create_stream_key(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        now_ms: i64,
    ) -> Result<Replayed<NewStreamKey>, StoreError>;
    /// Lists a channel's keys, masked.
    fn list_stream_keys(
        &self,
        caller: &Caller,
        channel: &str,
    ) -> Result<Vec<StreamKeyInfo>, StoreError>;
    /// Revokes a key and issues a new one in one step.
    fn rotate_stream_key(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        key_id: i64,
        now_ms: i64,
    ) -> Result<Replayed<NewStreamKey>, StoreError>;
    /// Revokes a key.
    fn revoke_stream_key(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        key_id: i64,
        now_ms: i64,
    ) -> Result<Replayed<StreamKeyInfo>, StoreError>;
    /// A wallet's balance.
    fn balance(&self, account_id: AccountId) -> Result<i64, StoreError>;
    /// A wallet's postings after `after_posting_id`, oldest first.
    fn statement(
        &self,
        account_id: AccountId,
        after_posting_id: i64,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError>;
    /// Moves WE from the caller's wallet to another account's wallet.
    fn transfer(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        to_handle: &str,
        amount_micro_we: i64,
        memo: Option<&str>,
        now_ms: i64,
    ) -> Result<Replayed<TransferReceipt>, StoreError>;
    /// Credits test WE from the issuance account.
    fn faucet(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        amount_micro_we: i64,
        now_ms: i64,
    ) -> Result<Replayed<TransferReceipt>, StoreError>;
    /// Buys a bandwidth package from the caller's wallet.
    fn purchase(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        product: &ProductConfig,
        now_ms: i64,
    ) -> Result<Replayed<Package>, StoreError>;
    /// The account's packages, newest first.
    fn packages(&self, account_id: AccountId) -> Result<Vec<Package>, StoreError>;
    /// Counts a usage batch once; drains packages oldest-expiry first and
    /// issues stop orders for owners that ran dry.
    fn record_usage(
        &self,
        batch: &UsageBatch,
        charge_ingest: bool,
        grace_ms: u64,
        now_ms: i64,
    ) -> Result<UsageReceipt, StoreError>;
    /// Stop orders not cancelled.
    fn stop_orders(&self) -> Result<Vec<StopOrder>, StoreError>;
    /// Key -> channel, owner and bytes left; `None` for unknown or revoked.
    fn publish_lookup(
        &self,
        stream_key: &str,
        now_ms: i64,
    ) -> Result<Option<PublishLookup>, StoreError>;
    /// Bytes left and any stop order for a channel's owner.
    fn channel_usage(
        &self,
        channel: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<Option<ChannelUsageHistory>, StoreError>;
    /// Checks the ledger balances.
    fn audit(&self) -> Result<LedgerAudit, StoreError>;
    /// Creates the configured seed accounts that are missing.
    fn seed(&self, config: &ControlConfig, now_ms: i64) -> Result<(), StoreError>;
    /// Records an edge's registration (its JSON body), replacing an older one.
    /// Stores without an edge table keep registrations in memory only.
    fn upsert_edge(&self, id: &str, registration_json: &str, now_ms: i64) -> Result<(), StoreError> {
        let _ = (id, registration_json, now_ms);
        Ok(())
    }
    /// Every recorded edge registration as `(id, json)`, by id.
    fn edges(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    // Rooms (issue #7): see `store/rooms.rs`.

    /// Every room's settings, moderation and stored score (start-up).
    fn rooms_snapshot(&self) -> Result<RoomsSnapshot, StoreError>;
    /// A room's owner and settings; `None` when the channel does not exist.
    fn room_settings(&self, channel: &str) -> Result<Option<RoomSettings>, StoreError>;
    /// Changes a room's settings (owner only; values already validated).
    fn update_room_settings(
        &self,
        caller: &Caller,
        channel: &str,
        update: &SettingsUpdate,
        now_ms: i64,
    ) -> Result<RoomSettings, StoreError>;
    /// Mutes, bans or unbans an account in a room (owner only).
    fn moderate(
        &self,
        caller: &Caller,
        channel: &str,
        target: AccountId,
        action: Moderation,
        now_ms: i64,
    ) -> Result<ModerationRow, StoreError>;
    /// Sends a gift: one balanced journal entry and its vote, idempotent.
    fn send_gift(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        order: &GiftOrder,
        now_ms: i64,
    ) -> Result<Replayed<GiftReceipt>, StoreError>;
    /// Rooms by stored score, best first.
    fn rankings(&self, limit: u32) -> Result<Vec<RankingRow>, StoreError>;
    /// The caller's share link for a channel (created once).
    fn create_share(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        now_ms: i64,
    ) -> Result<Replayed<Share>, StoreError>;
    /// A share link by code.
    fn share(&self, code: &str) -> Result<Option<Share>, StoreError>;
    /// Counts a visit through a share link.
    fn record_share_play(&self, code: &str, channel: &str) -> Result<bool, StoreError>;
    /// Buys a ticket (or returns the caller's unexpired one), idempotent.
    fn buy_ticket(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        fee_bps: u32,
        validity_ms: i64,
        now_ms: i64,
    ) -> Result<Replayed<Ticket>, StoreError>;
    /// The account's unexpired ticket for a channel.
    fn current_ticket(
        &self,
        account: AccountId,
        channel: &str,
        now_ms: i64,
    ) -> Result<Option<Ticket>, StoreError>;
    /// Counts one activity event of an account; returns its new total.
    fn record_activity(&self, account: AccountId, now_ms: i64) -> Result<i64, StoreError>;
    /// An account's activity events.
    fn activity(&self, account: AccountId) -> Result<i64, StoreError>;
    /// Adds a tally of activity indicators to the per-day rows (channel
    /// rows count for the channel's owner), in one transaction.
    fn add_activity(&self, tally: crate::rewards::activity::Tally) -> Result<(), StoreError>;
    /// Every account's indicators of one UTC day (`unix ms / 86,400,000`).
    fn activity_of_day(&self, day: i64) -> Result<Vec<(AccountId, crate::rewards::Indicators)>, StoreError>;

    // Reward epochs and settlement (see `epochs.rs` for the order of steps).
    /// Closes the open epoch at `end_ms` (or returns the one already closed
    /// and not yet computed), freezing its inputs.
    fn close_epoch(&self, end_ms: i64, half_life_ms: i64) -> Result<EpochRecord, StoreError>;
    /// A closed epoch's frozen inputs and the payout addresses in its tree.
    fn epoch_inputs(
        &self,
        epoch: i64,
        trailing_epochs: u32,
    ) -> Result<(crate::rewards::epoch::EpochInputs, BTreeMap<AccountId, String>), StoreError>;
    /// Stores a computed epoch in one transaction (a rerun returns the stored one).
    fn commit_epoch(
        &self,
        epoch: i64,
        plan: crate::rewards::epoch::EpochPlan,
        inputs: crate::rewards::epoch::EpochInputs,
        tree: TreeSummary,
        now_ms: i64,
    ) -> Result<EpochRecord, StoreError>;
    /// Marks a computed epoch anchored (`(tx hash, block)` when known).
    fn record_anchor(&self, epoch: i64, anchor: Option<(String, i64)>, now_ms: i64) -> Result<(), StoreError>;
    /// One epoch.
    fn epoch(&self, epoch: i64) -> Result<Option<EpochRecord>, StoreError>;
    /// Epochs, newest first.
    fn epochs(&self, limit: u32) -> Result<Vec<EpochRecord>, StoreError>;
    /// Leaves of epoch `n`'s tree recomputed from the allocations.
    fn leaves_at(&self, epoch: i64) -> Result<Vec<(String, i64)>, StoreError>;
    /// Accounts whose running cumulative disagrees with their allocations.
    fn cumulative_mismatches(&self) -> Result<Vec<(AccountId, i64, i64)>, StoreError>;
    /// Sets an account's payout address once; returns the first epoch it is in.
    fn set_payout_address(&self, account: AccountId, address: &str, now_ms: i64) -> Result<i64, StoreError>;
    /// An account's payout address.
    fn payout_address(&self, account: AccountId) -> Result<Option<String>, StoreError>;
    /// Moves wallet funds to be claimed on chain with the open epoch.
    fn request_withdrawal(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        amount_micro_we: i64,
        now_ms: i64,
    ) -> Result<Replayed<WithdrawalReceipt>, StoreError>;
    /// An account's deposit address (made by `derive` on first use).
    fn deposit_address(
        &self,
        account: AccountId,
        derive: Box<dyn FnOnce(AccountId) -> String + Send>,
        now_ms: i64,
    ) -> Result<String, StoreError>;
    /// The last chain block the deposit watcher has read.
    fn deposit_cursor(&self) -> Result<i64, StoreError>;
    /// Credits new deposits exactly once and moves the cursor, in one transaction.
    fn credit_deposits(
        &self,
        events: Vec<DepositEvent>,
        scanned_to: i64,
        now_ms: i64,
    ) -> Result<Vec<CreditedDeposit>, StoreError>;
}

/// Checks an account handle; the message names the rule.
pub fn validate_handle(handle: &str) -> Result<(), String> {
    validate_name(handle, 3, 32)
}

/// Checks a channel name (it appears in URLs and RTMP paths).
pub fn validate_channel_name(name: &str) -> Result<(), String> {
    validate_name(name, 1, 64)
}

fn validate_name(s: &str, min: usize, max: usize) -> Result<(), String> {
    if s.len() < min || s.len() > max {
        return Err(format!("must be {min}..={max} characters"));
    }
    let ok_first = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_first || !ok_rest {
        return Err("use a-z, 0-9, '_' and '-', starting with a letter or digit".to_string());
    }
    Ok(())
}

/// Hex SHA-256 of a secret (tokens and stream keys are random enough that
/// an unsalted hash resists guessing; the DB never holds the secret).
pub fn hash_secret(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `prefix` + 32 random bytes in hex.
pub fn random_secret(prefix: &str) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Masked form of a stream key for listings.
pub fn mask_key(key: &str) -> String {
    let head: String = key.chars().take(4).collect();
    format!("{head}…({})", key.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_channel_names_follow_the_url_safe_rule() {
        assert!(validate_handle("demo").is_ok());
        assert!(validate_handle("a_b-9").is_ok());
        assert!(validate_handle("ab").is_err(), "too short");
        assert!(validate_handle("Demo").is_err(), "upper case");
        assert!(validate_handle("-demo").is_err(), "leading dash");
        assert!(validate_channel_name("x").is_ok());
        assert!(validate_channel_name("a/b").is_err());
        assert!(validate_channel_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn masked_keys_keep_four_characters_and_the_length() {
        assert_eq!(mask_key("demo-key"), "demo…(8)");
        let k = random_secret("sk_");
        assert_eq!(k.len(), 3 + 64);
        assert!(!mask_key(&k).contains(&k[4..]));
    }

    #[test]
    fn the_request_hash_covers_route_and_body() {
        let a = IdemKey::new("s", "k", "POST /a", &1);
        assert_eq!(
            a.request_hash,
            IdemKey::new("s", "k", "POST /a", &1).request_hash
        );
        assert_ne!(
            a.request_hash,
            IdemKey::new("s", "k", "POST /b", &1).request_hash
        );
        assert_ne!(
            a.request_hash,
            IdemKey::new("s", "k", "POST /a", &2).request_hash
        );
    }

    #[test]
    fn secrets_are_hashed_not_stored() {
        assert_eq!(hash_secret("demo-key").len(), 64);
        assert_ne!(hash_secret("demo-key"), "demo-key");
    }
}
