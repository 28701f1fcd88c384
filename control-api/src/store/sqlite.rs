//! The embedded SQLite store: one file, WAL, one writer connection and a
//! few readers, versioned migrations from `migrations/`.
//!
//! Why one writer: SQLite admits one writer at a time anyway; serializing
//! writes on our own mutex (each in a `BEGIN IMMEDIATE` transaction) means
//! no write ever sees `SQLITE_BUSY`, and a purchase's balance check and debit
//! cannot interleave with another's. Readers use WAL snapshots in parallel.

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Mutex, MutexGuard};

use super::{
    accounts, epochs, ledger, packages, rooms, system, Account, AccountId, Caller, Channel, ChannelUsageHistory,
    CreateAccount, IdemKey, LedgerAudit, NewAccount, NewStreamKey, NewToken, Package,
    PublishLookup, Replayable, Replayed, StatementLine, Store, StoreError, StreamKeyInfo,
    TransferReceipt, EpochRecord, TreeSummary, WithdrawalReceipt, CreditedDeposit, DepositEvent,
};
use std::collections::BTreeMap;
use crate::config::{ControlConfig, ProductConfig, SqliteSync};
use crate::rewards::epoch::{EpochInputs, EpochPlan};
use crate::hooks::{StopOrder, UsageBatch, UsageReceipt};

/// Schema versions, applied in order; `PRAGMA user_version` records the last.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_edges.sql")),
    (3, include_str!("../../migrations/0003_rooms.sql")),
    (4, include_str!("../../migrations/0004_activity.sql")),
    (5, include_str!("../../migrations/0005_epochs.sql")),
    (6, include_str!("../../migrations/0006_deposits.sql")),
];

/// Most writes committed together in one transaction (group commit).
const MAX_GROUP: usize = 256;

/// Called once the group's transaction committed (`Ok`) or failed.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// One write: runs inside the group's transaction (`None`: the transaction
/// could not start) and returns what to tell its caller after the commit.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// The SQLite implementation of [`Store`].
///
/// Writes go to one writer thread that owns the only read-write
/// connection. It takes every write queued at that moment (up to
/// `MAX_GROUP`), runs each in its own SAVEPOINT inside one `BEGIN IMMEDIATE`
/// transaction, commits once, and only then answers the callers: a failed
/// write rolls back alone, and a commit failure fails the whole group. So a
/// caller never sees success for something not committed, while a burst
/// shares one commit (one WAL append) instead of paying one each.
pub struct SqliteStore {
    jobs: Sender<Job>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.readers.len())
            .finish()
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no statement half-run on a
    // read-only connection; it is still sound, so keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn writer_gone() -> StoreError {
    StoreError::Task("the store's writer thread has stopped".to_string())
}

/// The writer thread: group commit until every `SqliteStore` handle is gone.
fn writer_loop(mut conn: Connection, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin a write transaction");
                for job in group {
                    job(None)(Err(e.to_string()));
                }
                continue;
            }
        };
        let replies: Vec<Reply> = group.into_iter().map(|job| job(Some(&tx))).collect();
        let outcome = tx.commit().map_err(|e| {
            tracing::error!(error = %e, "group commit failed");
            e.to_string()
        });
        for reply in replies {
            reply(outcome.clone());
        }
    }
}

/// Runs one write in a savepoint of the group's transaction, so its failure
/// (or panic) undoes only its own changes.
fn in_savepoint<T>(
    c: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    c.execute_batch("SAVEPOINT write_job")?;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c)))
        .unwrap_or_else(|_| Err(StoreError::Task("a store write panicked".to_string())));
    match out {
        Ok(v) => {
            c.execute_batch("RELEASE write_job")?;
            Ok(v)
        }
        Err(e) => {
            c.execute_batch("ROLLBACK TO write_job; RELEASE write_job")?;
            Err(e)
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, brings its schema up
    /// to date and starts the writer thread.
    pub fn open(
        path: &Path,
        sync: SqliteSync,
        read_connections: usize,
    ) -> Result<Self, StoreError> {
        let mut writer = Connection::open(path)?;
        configure(&writer, sync)?;
        migrate(&mut writer)?;
        let mut readers = Vec::with_capacity(read_connections);
        for _ in 0..read_connections.max(1) {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.set_prepared_statement_cache_capacity(64);
            readers.push(Mutex::new(conn));
        }
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("control-store-writer".to_string())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::Task(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            jobs,
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` as one atomic write and returns once it is committed.
    /// Blocking: call it from `spawn_blocking` or a plain thread.
    pub(crate) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel::<Result<T, StoreError>>(1);
        let job: Job = Box::new(move |tx: Option<&Connection>| -> Reply {
            let result = match tx {
                Some(tx) => in_savepoint(tx, f),
                None => Err(StoreError::Task(
                    "write transaction did not start".to_string(),
                )),
            };
            Box::new(move |commit: Result<(), String>| {
                let out = match commit {
                    Ok(()) => result,
                    Err(e) => result.and(Err(StoreError::Task(format!("commit failed: {e}")))),
                };
                // The caller may have gone (its task was cancelled); the
                // write is committed either way and a retry replays it.
                let _ = reply_tx.send(out);
            })
        });
        self.jobs.send(job).map_err(|_| writer_gone())?;
        reply_rx.recv().map_err(|_| writer_gone())?
    }

    /// Runs `f` on a reader connection (a consistent WAL snapshot per
    /// statement; use `write` when several reads must agree).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(conn) = self.readers[(start + i) % n].try_lock() {
                return f(&conn);
            }
        }
        let conn = lock(&self.readers[start]);
        f(&conn)
    }

    /// Runs an idempotent write: replays the stored result for a known key,
    /// otherwise runs `f` and stores its result in the same transaction.
    fn idempotent<T: Replayable + Send + 'static>(
        &self,
        idem: &IdemKey,
        now_ms: i64,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<Replayed<T>, StoreError> {
        let idem = idem.clone();
        self.write(move |tx| idempotent_in_tx(tx, &idem, now_ms, f))
    }
}

/// The idempotency protocol inside an open transaction. Only successful
/// results are stored: a refused request posted nothing, so running it
/// again later is safe and may succeed (e.g. after a top-up).
pub(super) fn idempotent_in_tx<T: Replayable>(
    tx: &Connection,
    idem: &IdemKey,
    now_ms: i64,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Replayed<T>, StoreError> {
    let prior: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT request_hash, response FROM idempotency WHERE scope = ?1 AND key = ?2",
        )?
        .query_row((&idem.scope, &idem.key), |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((hash, response)) = prior {
        if hash != idem.request_hash {
            return Err(StoreError::IdempotencyMismatch {
                key: idem.key.clone(),
            });
        }
        let value =
            serde_json::from_str(&response).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        return Ok(Replayed {
            value,
            replayed: true,
        });
    }
    let value = f(tx)?;
    let stored =
        serde_json::to_string(&value.redacted()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // The UNIQUE (scope, key) constraint is the last line of defence: a
    // second writer racing on the same key fails here and rolls back whole.
    tx.prepare_cached(
        "INSERT INTO idempotency (scope, key, request_hash, response, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((&idem.scope, &idem.key, &idem.request_hash, &stored, now_ms))?;
    Ok(Replayed {
        value,
        replayed: false,
    })
}

/// Whether an idempotency key was used (for seeding).
pub(super) fn idem_seen(tx: &Connection, scope: &str, key: &str) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM idempotency WHERE scope = ?1 AND key = ?2")?
        .exists((scope, key))?)
}

fn configure(conn: &Connection, sync: SqliteSync) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Migration {
            version: 0,
            message: format!("journal_mode is {mode}, not wal"),
        });
    }
    let sync = match sync {
        SqliteSync::Normal => "NORMAL",
        SqliteSync::Full => "FULL",
    };
    // A larger page cache keeps the hot b-tree pages (wallets, indexes) in memory.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA cache_size = -32768;"
    ))?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Migration {
            version: current,
            message: format!("database schema {current} is newer than this binary ({latest})"),
        });
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql).map_err(|e| StoreError::Migration {
            version,
            message: e.to_string(),
        })?;
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        tx.commit()?;
        tracing::info!(version, "applied control-plane migration");
    }
    for code in system::ALL {
        conn.execute(
            "INSERT OR IGNORE INTO ledger_accounts (code, kind) VALUES (?1, 'system')",
            [code],
        )?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn create_account(
        &self,
        idem: &IdemKey,
        req: &CreateAccount,
        now_ms: i64,
    ) -> Result<Replayed<NewAccount>, StoreError> {
        let req = req.clone();
        self.idempotent(idem, now_ms, move |tx| {
            accounts::create_account(tx, &req, None, now_ms)
        })
    }

    fn authenticate(&self, token: &str) -> Result<Option<Caller>, StoreError> {
        self.read(|c| accounts::authenticate(c, token))
    }

    fn account(&self, id: AccountId) -> Result<Account, StoreError> {
        self.read(|c| accounts::account(c, id))
    }

    fn create_token(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        now_ms: i64,
    ) -> Result<Replayed<NewToken>, StoreError> {
        let account_id = caller.account_id;
        self.idempotent(idem, now_ms, move |tx| {
            let token = super::random_secret("wst_");
            let token_id = accounts::insert_token(tx, account_id, &token, now_ms)?;
            Ok(NewToken {
                token_id,
                token: Some(token),
            })
        })
    }

    fn create_channel(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        name: &str,
        now_ms: i64,
    ) -> Result<Replayed<Channel>, StoreError> {
        let (caller, name) = (caller.clone(), name.to_string());
        self.idempotent(idem, now_ms, move |tx| {
            accounts::create_channel(tx, &caller, &name, now_ms)
        })
    }

    fn channel(&self, name: &str) -> Result<Option<Channel>, StoreError> {
        self.read(|c| accounts::channel(c, name))
    }

    fn create_stream_key(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        now_ms: i64,
    ) -> Result<Replayed<NewStreamKey>, StoreError> {
        let (caller, channel) = (caller.clone(), channel.to_string());
        self.idempotent(idem, now_ms, move |tx| {
            accounts::create_stream_key(tx, &caller, &channel, now_ms)
        })
    }

    fn list_stream_keys(
        &self,
        caller: &Caller,
        channel: &str,
    ) -> Result<Vec<StreamKeyInfo>, StoreError> {
        self.read(|c| accounts::list_stream_keys(c, caller, channel))
    }

    fn rotate_stream_key(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        key_id: i64,
        now_ms: i64,
    ) -> Result<Replayed<NewStreamKey>, StoreError> {
        let (caller, channel) = (caller.clone(), channel.to_string());
        self.idempotent(idem, now_ms, move |tx| {
            accounts::rotate_stream_key(tx, &caller, &channel, key_id, now_ms)
        })
    }

    fn revoke_stream_key(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        key_id: i64,
        now_ms: i64,
    ) -> Result<Replayed<StreamKeyInfo>, StoreError> {
        let (caller, channel) = (caller.clone(), channel.to_string());
        self.idempotent(idem, now_ms, move |tx| {
            accounts::revoke_stream_key(tx, &caller, &channel, key_id, now_ms)
        })
    }

    fn balance(&self, account_id: AccountId) -> Result<i64, StoreError> {
        self.read(|c| ledger::wallet(c, account_id).map(|w| w.balance))
    }

    fn statement(
        &self,
        account_id: AccountId,
        after_posting_id: i64,
        limit: u32,
    ) -> Result<Vec<StatementLine>, StoreError> {
        self.read(|c| ledger::statement(c, account_id, after_posting_id, limit))
    }

    fn transfer(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        to_handle: &str,
        amount_micro_we: i64,
        memo: Option<&str>,
        now_ms: i64,
    ) -> Result<Replayed<TransferReceipt>, StoreError> {
        let (caller, to) = (caller.clone(), to_handle.to_string());
        let memo = memo.map(str::to_string);
        self.idempotent(idem, now_ms, move |tx| {
            ledger::transfer(tx, &caller, &to, amount_micro_we, memo.as_deref(), now_ms)
        })
    }

    fn faucet(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        amount_micro_we: i64,
        now_ms: i64,
    ) -> Result<Replayed<TransferReceipt>, StoreError> {
        let account_id = caller.account_id;
        self.idempotent(idem, now_ms, move |tx| {
            ledger::issue(tx, account_id, amount_micro_we, "faucet", now_ms)
        })
    }

    fn purchase(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        product: &ProductConfig,
        now_ms: i64,
    ) -> Result<Replayed<Package>, StoreError> {
        let (account_id, product) = (caller.account_id, product.clone());
        self.idempotent(idem, now_ms, move |tx| {
            packages::purchase(tx, account_id, &product, now_ms)
        })
    }

    fn packages(&self, account_id: AccountId) -> Result<Vec<Package>, StoreError> {
        self.read(|c| packages::list(c, account_id))
    }

    fn record_usage(
        &self,
        batch: &UsageBatch,
        charge_ingest: bool,
        grace_ms: u64,
        now_ms: i64,
    ) -> Result<UsageReceipt, StoreError> {
        let batch = batch.clone();
        self.write(move |tx| packages::record_usage(tx, &batch, charge_ingest, grace_ms, now_ms))
    }

    fn stop_orders(&self) -> Result<Vec<StopOrder>, StoreError> {
        self.read(|c| packages::stop_orders(c, None))
    }

    fn publish_lookup(
        &self,
        stream_key: &str,
        now_ms: i64,
    ) -> Result<Option<PublishLookup>, StoreError> {
        self.read(|c| accounts::publish_lookup(c, stream_key, now_ms))
    }

    fn channel_usage(
        &self,
        channel: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<Option<ChannelUsageHistory>, StoreError> {
        self.read(|c| packages::channel_usage(c, channel, limit, now_ms))
    }

    fn audit(&self) -> Result<LedgerAudit, StoreError> {
        // On the writer, so the checks see one instant of the ledger.
        self.write(ledger::audit)
    }

    fn upsert_edge(&self, id: &str, registration_json: &str, now_ms: i64) -> Result<(), StoreError> {
        let (id, json) = (id.to_string(), registration_json.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO edges (id, registration, registered_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(id) DO UPDATE SET registration = excluded.registration, registered_at_ms = excluded.registered_at_ms",
                rusqlite::params![id, json, now_ms],
            )?;
            Ok(())
        })
    }

    fn edges(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id, registration FROM edges ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn rooms_snapshot(&self) -> Result<rooms::RoomsSnapshot, StoreError> {
        self.read(rooms::snapshot)
    }

    fn room_settings(&self, channel: &str) -> Result<Option<rooms::RoomSettings>, StoreError> {
        self.read(|c| rooms::settings(c, channel))
    }

    fn update_room_settings(
        &self,
        caller: &Caller,
        channel: &str,
        update: &rooms::SettingsUpdate,
        now_ms: i64,
    ) -> Result<rooms::RoomSettings, StoreError> {
        let (caller, channel, update) = (caller.clone(), channel.to_string(), update.clone());
        self.write(move |tx| rooms::update_settings(tx, &caller, &channel, &update, now_ms))
    }

    fn moderate(
        &self,
        caller: &Caller,
        channel: &str,
        target: AccountId,
        action: rooms::Moderation,
        now_ms: i64,
    ) -> Result<rooms::ModerationRow, StoreError> {
        let (caller, channel) = (caller.clone(), channel.to_string());
        self.write(move |tx| rooms::moderate(tx, &caller, &channel, target, action, now_ms))
    }

    fn send_gift(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        order: &rooms::GiftOrder,
        now_ms: i64,
    ) -> Result<Replayed<rooms::GiftReceipt>, StoreError> {
        let (caller, order) = (caller.clone(), order.clone());
        self.idempotent(idem, now_ms, move |tx| rooms::send_gift(tx, &caller, &order, now_ms))
    }

    fn rankings(&self, limit: u32) -> Result<Vec<rooms::RankingRow>, StoreError> {
        self.read(|c| rooms::rankings(c, limit))
    }

    fn create_share(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        now_ms: i64,
    ) -> Result<Replayed<rooms::Share>, StoreError> {
        let (caller, channel) = (caller.clone(), channel.to_string());
        self.idempotent(idem, now_ms, move |tx| rooms::create_share(tx, &caller, &channel, now_ms))
    }

    fn share(&self, code: &str) -> Result<Option<rooms::Share>, StoreError> {
        self.read(|c| rooms::share(c, code))
    }

    fn record_share_play(&self, code: &str, channel: &str) -> Result<bool, StoreError> {
        let (code, channel) = (code.to_string(), channel.to_string());
        self.write(move |tx| rooms::record_share_play(tx, &code, &channel))
    }

    fn buy_ticket(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        channel: &str,
        fee_bps: u32,
        validity_ms: i64,
        now_ms: i64,
    ) -> Result<Replayed<rooms::Ticket>, StoreError> {
        let (caller, channel) = (caller.clone(), channel.to_string());
        self.idempotent(idem, now_ms, move |tx| {
            rooms::buy_ticket(tx, &caller, &channel, fee_bps, validity_ms, now_ms)
        })
    }

    fn current_ticket(
        &self,
        account: AccountId,
        channel: &str,
        now_ms: i64,
    ) -> Result<Option<rooms::Ticket>, StoreError> {
        self.read(|c| rooms::current_ticket(c, account, channel, now_ms))
    }

    fn record_activity(&self, account: AccountId, now_ms: i64) -> Result<i64, StoreError> {
        self.write(move |tx| rooms::record_activity(tx, account, now_ms))
    }

    fn activity(&self, account: AccountId) -> Result<i64, StoreError> {
        self.read(|c| rooms::activity(c, account))
    }

    fn add_activity(&self, tally: crate::rewards::activity::Tally) -> Result<(), StoreError> {
        if tally.is_empty() {
            return Ok(());
        }
        self.write(move |tx| crate::rewards::activity::store_tally(tx, &tally))
    }

    fn close_epoch(&self, end_ms: i64, half_life_ms: i64) -> Result<EpochRecord, StoreError> {
        self.write(move |tx| epochs::close_epoch(tx, end_ms, half_life_ms))
    }

    fn epoch_inputs(
        &self,
        epoch: i64,
        trailing_epochs: u32,
    ) -> Result<(EpochInputs, BTreeMap<AccountId, String>), StoreError> {
        self.read(|c| epochs::epoch_inputs(c, epoch, trailing_epochs))
    }

    fn commit_epoch(
        &self,
        epoch: i64,
        plan: EpochPlan,
        inputs: EpochInputs,
        tree: TreeSummary,
        now_ms: i64,
    ) -> Result<EpochRecord, StoreError> {
        self.write(move |tx| epochs::commit_epoch(tx, epoch, &plan, &inputs, &tree, now_ms))
    }

    fn record_anchor(&self, epoch: i64, anchor: Option<(String, i64)>, now_ms: i64) -> Result<(), StoreError> {
        self.write(move |tx| epochs::record_anchor(tx, epoch, anchor, now_ms))
    }

    fn epoch(&self, epoch: i64) -> Result<Option<EpochRecord>, StoreError> {
        self.read(|c| epochs::epoch(c, epoch))
    }

    fn epochs(&self, limit: u32) -> Result<Vec<EpochRecord>, StoreError> {
        self.read(|c| epochs::epochs(c, limit))
    }

    fn leaves_at(&self, epoch: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| epochs::leaves_at(c, epoch))
    }

    fn cumulative_mismatches(&self) -> Result<Vec<(AccountId, i64, i64)>, StoreError> {
        self.read(epochs::cumulative_mismatches)
    }

    fn set_payout_address(&self, account: AccountId, address: &str, now_ms: i64) -> Result<i64, StoreError> {
        let address = address.to_string();
        self.write(move |tx| epochs::set_payout_address(tx, account, &address, now_ms))
    }

    fn payout_address(&self, account: AccountId) -> Result<Option<String>, StoreError> {
        self.read(|c| epochs::payout_address(c, account))
    }

    fn request_withdrawal(
        &self,
        caller: &Caller,
        idem: &IdemKey,
        amount_micro_we: i64,
        now_ms: i64,
    ) -> Result<Replayed<WithdrawalReceipt>, StoreError> {
        let caller = caller.clone();
        self.idempotent(idem, now_ms, move |tx| epochs::request_withdrawal(tx, &caller, amount_micro_we, now_ms))
    }

    fn deposit_address(
        &self,
        account: AccountId,
        derive: Box<dyn FnOnce(AccountId) -> String + Send>,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        self.write(move |tx| epochs::deposit_address(tx, account, derive, now_ms))
    }

    fn deposit_cursor(&self) -> Result<i64, StoreError> {
        self.read(epochs::deposit_cursor)
    }

    fn credit_deposits(
        &self,
        events: Vec<DepositEvent>,
        scanned_to: i64,
        now_ms: i64,
    ) -> Result<Vec<CreditedDeposit>, StoreError> {
        self.write(move |tx| epochs::credit_deposits(tx, &events, scanned_to, now_ms))
    }

    fn activity_of_day(&self, day: i64) -> Result<Vec<(AccountId, crate::rewards::Indicators)>, StoreError> {
        self.read(|c| crate::rewards::activity::day_rows(c, day))
    }

    fn seed(&self, config: &ControlConfig, now_ms: i64) -> Result<(), StoreError> {
        let fund = config.rewards.incentive_fund_micro_we;
        self.write(move |tx| epochs::seed_incentive_fund(tx, fund, now_ms))?;
        for i in 0..config.seed.len() {
            let config = config.clone();
            self.write(move |tx| seed_account(tx, &config, &config.seed[i], now_ms))?;
        }
        Ok(())
    }
}

/// Creates what a `[[control.seed]]` entry describes and is missing. Each
/// money movement is keyed in the `seed` idempotency scope, so restarting
/// never funds or buys twice.
fn seed_account(
    tx: &Connection,
    config: &ControlConfig,
    s: &crate::config::SeedAccountConfig,
    now_ms: i64,
) -> Result<(), StoreError> {
    let existing: Option<i64> = tx
        .prepare_cached("SELECT id FROM accounts WHERE handle = ?1")?
        .query_row([&s.handle], |r| r.get(0))
        .optional()?;
    let account_id = match existing {
        Some(id) => id,
        None => {
            let req = CreateAccount {
                handle: s.handle.clone(),
                phone: None,
                email: None,
            };
            accounts::create_account(tx, &req, s.api_token.as_deref(), now_ms)?
                .account
                .id
        }
    };
    if let Some(token) = &s.api_token {
        if !accounts::token_exists(tx, token)? {
            accounts::insert_token(tx, account_id, token, now_ms)?;
        }
    }
    let caller = Caller {
        account_id,
        handle: s.handle.clone(),
    };
    let fund_key = format!("fund:{}", s.handle);
    if s.fund_micro_we > 0 && !idem_seen(tx, "seed", &fund_key)? {
        let idem = IdemKey::new("seed", fund_key, "seed", &s.fund_micro_we);
        idempotent_in_tx(tx, &idem, now_ms, |tx| {
            ledger::issue(tx, account_id, s.fund_micro_we, "seed", now_ms)
        })?;
    }
    for c in &s.channels {
        let channel = match accounts::channel_tx(tx, &c.name)? {
            Some(ch) if ch.owner == s.handle => ch,
            Some(_) => {
                return Err(StoreError::Conflict {
                    code: "channel_taken",
                    message: format!("seed channel '{}' belongs to another account", c.name),
                })
            }
            None => accounts::create_channel(tx, &caller, &c.name, now_ms)?,
        };
        for key in &c.stream_keys {
            if !accounts::stream_key_exists(tx, key)? {
                accounts::insert_stream_key(tx, channel.id, &channel.name, key, now_ms)?;
            }
        }
    }
    for (i, product_id) in s.packages.iter().enumerate() {
        let key = format!("package:{}:{i}:{product_id}", s.handle);
        if idem_seen(tx, "seed", &key)? {
            continue;
        }
        let product = config
            .product(product_id)
            .ok_or_else(|| StoreError::NotFound {
                what: "product",
                id: product_id.clone(),
            })?;
        let idem = IdemKey::new("seed", key, "seed", product_id);
        idempotent_in_tx(tx, &idem, now_ms, |tx| {
            packages::purchase(tx, account_id, product, now_ms)
        })?;
    }
    Ok(())
}
