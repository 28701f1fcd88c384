//! Reward epochs in SQLite: close, inputs, commit, anchor; payout addresses
//! and withdrawals (issue #8). The order and why it survives a crash are in
//! `migrations/0005_epochs.sql`; the job that drives it is
//! `crate::settlement::job`.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::ledger;
use super::system;
use super::{AccountId, Caller, Replayable, StoreError};
use crate::rewards::epoch::{EpochInputs, EpochPlan};

/// One epoch as stored. Figures are `None` until it is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch number (the contract's).
    pub epoch: i64,
    /// `closed` (inputs frozen) or `computed` (allocations and root stored).
    pub status: String,
    /// Start of the window, unix ms (the previous epoch's end).
    pub start_ms: i64,
    /// End of the window, unix ms.
    pub end_ms: i64,
    /// Incentive fund before the epoch, micro-WE.
    pub fund_before_micro: Option<i64>,
    /// Total effort.
    pub activity: Option<f64>,
    /// `Σ sqrt(effort)`.
    pub v: Option<f64>,
    /// Refilled pool.
    pub pool_micro: Option<i64>,
    /// Released by the target gate.
    pub released_micro: Option<i64>,
    /// Paid by Proof of Activity.
    pub activity_paid_micro: Option<i64>,
    /// Paid by Proof of Contribution.
    pub contribution_paid_micro: Option<i64>,
    /// Gift earnings withdrawn into this epoch.
    pub withdrawals_micro: Option<i64>,
    /// Released but not paid: stays in the fund.
    pub remainder_micro: Option<i64>,
    /// Leaves of the Merkle tree.
    pub accounts: Option<i64>,
    /// Merkle root, 0x-hex.
    pub root: Option<String>,
    /// Sum of the leaves' cumulative amounts, micro-WE.
    pub total_cumulative_micro: Option<i64>,
    /// The ledger journal entry that moved the payouts out of the fund.
    pub journal_id: Option<i64>,
    /// Whether the root is on chain.
    pub anchored: bool,
    /// The transaction that anchored it (unknown when a rerun found it
    /// already on chain).
    pub anchor_tx: Option<String>,
    /// Its block.
    pub anchor_block: Option<i64>,
}

/// A withdrawal request's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalReceipt {
    /// Row id.
    pub id: i64,
    /// The epoch it will be settled in.
    pub epoch: i64,
    /// Amount, micro-WE.
    pub amount_micro_we: i64,
    /// The address it will be claimable by.
    pub address: String,
    /// Wallet balance after.
    pub balance_after_micro_we: i64,
}

impl Replayable for WithdrawalReceipt {}

/// The epoch that activity and withdrawals go to now: one after the last
/// closed (or computed) one.
pub(crate) fn open_epoch(c: &Connection) -> Result<i64, StoreError> {
    Ok(c.prepare_cached("SELECT COALESCE(MAX(epoch), 0) + 1 FROM epochs")?.query_row([], |r| r.get(0))?)
}

/// Credits the ledger's incentive fund once (idempotent across restarts).
pub(crate) fn seed_incentive_fund(tx: &Connection, amount: i64, now_ms: i64) -> Result<(), StoreError> {
    if amount <= 0 || super::sqlite::idem_seen(tx, "seed", "incentive-fund")? {
        return Ok(());
    }
    let issuance = ledger::system_account(tx, system::ISSUANCE)?;
    let fund = ledger::system_account(tx, system::INCENTIVE_FUND)?;
    let (journal_id, _) = ledger::post(tx, "seed_incentive_fund", None, &[(issuance.id, -amount), (fund.id, amount)], now_ms)?;
    tx.prepare_cached(
        "INSERT INTO idempotency (scope, key, request_hash, response, created_at_ms) VALUES ('seed', 'incentive-fund', '', ?1, ?2)",
    )?
    .execute((journal_id.to_string(), now_ms))?;
    Ok(())
}

const EPOCH_COLUMNS: &str = "epoch, status, start_ms, end_ms, fund_before_micro, activity, v, pool_micro, released_micro,
    activity_paid_micro, contribution_paid_micro, withdrawals_micro, remainder_micro, accounts, root,
    total_cumulative_micro, journal_id, anchored, anchor_tx, anchor_block";

fn epoch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EpochRecord> {
    Ok(EpochRecord {
        epoch: r.get(0)?,
        status: r.get(1)?,
        start_ms: r.get(2)?,
        end_ms: r.get(3)?,
        fund_before_micro: r.get(4)?,
        activity: r.get(5)?,
        v: r.get(6)?,
        pool_micro: r.get(7)?,
        released_micro: r.get(8)?,
        activity_paid_micro: r.get(9)?,
        contribution_paid_micro: r.get(10)?,
        withdrawals_micro: r.get(11)?,
        remainder_micro: r.get(12)?,
        accounts: r.get(13)?,
        root: r.get(14)?,
        total_cumulative_micro: r.get(15)?,
        journal_id: r.get(16)?,
        anchored: r.get::<_, i64>(17)? != 0,
        anchor_tx: r.get(18)?,
        anchor_block: r.get(19)?,
    })
}

/// One epoch.
pub(crate) fn epoch(c: &Connection, n: i64) -> Result<Option<EpochRecord>, StoreError> {
    Ok(c.prepare_cached(&format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE epoch = ?1"))?
        .query_row([n], epoch_row)
        .optional()?)
}

/// Every epoch, newest first, at most `limit`.
pub(crate) fn epochs(c: &Connection, limit: u32) -> Result<Vec<EpochRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {EPOCH_COLUMNS} FROM epochs ORDER BY epoch DESC LIMIT ?1"))?;
    let rows = stmt.query_map([limit], epoch_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Closes the open epoch at `end_ms`, freezing its inputs: from now on
/// activity and withdrawals go to the next one, and the creators' decayed
/// scores at `end_ms` are stored. An epoch already closed but not computed
/// (a crash) is returned as it is.
pub(crate) fn close_epoch(tx: &Connection, end_ms: i64, half_life_ms: i64) -> Result<EpochRecord, StoreError> {
    let pending: Option<i64> = tx
        .prepare_cached("SELECT epoch FROM epochs WHERE status = 'closed' ORDER BY epoch LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    if let Some(n) = pending {
        return epoch(tx, n)?.ok_or_else(|| StoreError::Corrupt(format!("epoch {n} vanished")));
    }
    let n = open_epoch(tx)?;
    let start_ms: i64 = tx
        .prepare_cached("SELECT end_ms FROM epochs WHERE epoch = ?1")?
        .query_row([n - 1], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let end_ms = end_ms.max(start_ms);
    tx.prepare_cached("INSERT INTO epochs (epoch, status, start_ms, end_ms) VALUES (?1, 'closed', ?2, ?3)")?
        .execute((n, start_ms, end_ms))?;
    // Scores are stored as log2 at the unix epoch: score(t) = 2^(L - t/H).
    let mut scores: BTreeMap<AccountId, f64> = BTreeMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT c.owner_account_id, s.log2_score FROM room_scores s JOIN channels c ON c.id = s.channel_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, AccountId>(0)?, r.get::<_, f64>(1)?)))?;
        for row in rows {
            let (owner, log2) = row?;
            let score = (log2 - end_ms as f64 / half_life_ms.max(1) as f64).exp2();
            if score.is_finite() && score > 0.0 {
                *scores.entry(owner).or_default() += score;
            }
        }
    }
    let mut insert = tx.prepare_cached("INSERT INTO epoch_scores (epoch, account_id, score) VALUES (?1, ?2, ?3)")?;
    for (account, score) in scores {
        insert.execute((n, account, score))?;
    }
    epoch(tx, n)?.ok_or_else(|| StoreError::Corrupt(format!("epoch {n} vanished")))
}

/// The frozen inputs of a closed epoch, and the payout addresses that are
/// in its tree (account -> 0x-hex).
pub(crate) fn epoch_inputs(
    c: &Connection,
    n: i64,
    trailing_epochs: u32,
) -> Result<(EpochInputs, BTreeMap<AccountId, String>), StoreError> {
    let record = epoch(c, n)?.ok_or(StoreError::NotFound { what: "epoch", id: n.to_string() })?;
    let fund = ledger::system_account(c, system::INCENTIVE_FUND)?;
    let fund_micro: i64 =
        c.prepare_cached("SELECT balance FROM ledger_accounts WHERE id = ?1")?.query_row([fund.id], |r| r.get(0))?;
    let trailing: Vec<f64> = c
        .prepare_cached(
            "SELECT activity FROM epochs WHERE status = 'computed' AND epoch < ?1 ORDER BY epoch DESC LIMIT ?2",
        )?
        .query_map((n, trailing_epochs), |r| r.get::<_, f64>(0))?
        .collect::<Result<_, _>>()?;
    let trailing_mean = (!trailing.is_empty()).then(|| trailing.iter().sum::<f64>() / trailing.len() as f64);
    let created: BTreeMap<AccountId, i64> = c
        .prepare_cached(
            "SELECT a.id, a.created_at_ms FROM accounts a JOIN epoch_activity e ON e.account_id = a.id WHERE e.epoch = ?1",
        )?
        .query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let activity = crate::rewards::activity::epoch_rows(c, n)?
        .into_iter()
        .map(|(account, ind)| (account, created.get(&account).copied().unwrap_or(i64::MAX), ind))
        .collect();
    let vote_scores = c
        .prepare_cached("SELECT account_id, score FROM epoch_scores WHERE epoch = ?1 ORDER BY account_id")?
        .query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let withdrawals = c
        .prepare_cached(
            "SELECT account_id, SUM(amount_micro) FROM withdrawals WHERE epoch = ?1 GROUP BY account_id ORDER BY account_id",
        )?
        .query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let prior_cumulative = c
        .prepare_cached("SELECT account_id, cumulative_micro FROM claim_balances")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let addresses = addresses_in(c, n)?;
    let inputs = EpochInputs {
        fund_micro,
        trailing_mean,
        activity,
        vote_scores,
        withdrawals,
        prior_cumulative,
        end_ms: record.end_ms,
    };
    Ok((inputs, addresses))
}

/// Payout addresses that are in epoch `n`'s tree.
pub(crate) fn addresses_in(c: &Connection, n: i64) -> Result<BTreeMap<AccountId, String>, StoreError> {
    Ok(c
        .prepare_cached("SELECT account_id, address FROM payout_addresses WHERE since_epoch <= ?1")?
        .query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// What the commit stores besides the plan: the tree's figures.
#[derive(Debug, Clone)]
pub struct TreeSummary {
    /// 0x-hex root.
    pub root: String,
    /// Leaves.
    pub accounts: i64,
    /// Sum of the leaves' cumulative amounts, micro-WE.
    pub total_cumulative_micro: i64,
}

/// Stores a computed epoch in the caller's transaction: allocations, the
/// running cumulative amounts, one balanced posting fund -> payable for what
/// the two levels pay (the remainder never leaves the fund; withdrawals
/// moved to payable when requested), and the figures. An epoch already
/// computed is returned unchanged (a rerun).
pub(crate) fn commit_epoch(
    tx: &Connection,
    n: i64,
    plan: &EpochPlan,
    inputs: &EpochInputs,
    tree: &TreeSummary,
    now_ms: i64,
) -> Result<EpochRecord, StoreError> {
    let record = epoch(tx, n)?.ok_or(StoreError::NotFound { what: "epoch", id: n.to_string() })?;
    if record.status == "computed" {
        return Ok(record);
    }
    let mut alloc = tx.prepare_cached(
        "INSERT INTO epoch_allocations (epoch, account_id, activity_micro, contribution_micro, withdrawal_micro)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut balance = tx.prepare_cached(
        "INSERT INTO claim_balances (account_id, cumulative_micro, updated_epoch) VALUES (?1, ?2, ?3)
         ON CONFLICT(account_id) DO UPDATE SET cumulative_micro = excluded.cumulative_micro, updated_epoch = excluded.updated_epoch",
    )?;
    for (account, a) in &plan.allocations {
        alloc.execute((n, account, a.activity_micro, a.contribution_micro, a.withdrawal_micro))?;
        balance.execute((account, a.cumulative_micro, n))?;
    }
    let paid = plan.payouts.paid_micro();
    let journal_id = if paid > 0 {
        let fund = ledger::system_account(tx, system::INCENTIVE_FUND)?;
        let payable = ledger::system_account(tx, system::REWARD_POOL)?;
        let memo = format!("epoch {n}");
        Some(ledger::post(tx, "epoch_rewards", Some(&memo), &[(fund.id, -paid), (payable.id, paid)], now_ms)?.0)
    } else {
        None
    };
    let activity_paid: i64 = plan.payouts.activity.iter().map(|p| p.1).sum();
    let contribution_paid: i64 = plan.payouts.contribution.iter().map(|p| p.1).sum();
    tx.prepare_cached(
        "UPDATE epochs SET status = 'computed', fund_before_micro = ?2, activity = ?3, v = ?4, pool_micro = ?5,
             released_micro = ?6, activity_paid_micro = ?7, contribution_paid_micro = ?8, withdrawals_micro = ?9,
             remainder_micro = ?10, accounts = ?11, root = ?12, total_cumulative_micro = ?13, journal_id = ?14,
             computed_at_ms = ?15
         WHERE epoch = ?1 AND status = 'closed'",
    )?
    .execute(rusqlite::params![
        n,
        inputs.fund_micro,
        plan.activity,
        plan.v,
        plan.payouts.pool_micro,
        plan.payouts.released_micro,
        activity_paid,
        contribution_paid,
        plan.withdrawals_micro,
        plan.payouts.remainder_micro,
        tree.accounts,
        tree.root,
        tree.total_cumulative_micro,
        journal_id,
        now_ms,
    ])?;
    epoch(tx, n)?.ok_or_else(|| StoreError::Corrupt(format!("epoch {n} vanished")))
}

/// Marks an epoch anchored on chain.
pub(crate) fn record_anchor(
    tx: &Connection,
    n: i64,
    anchor: Option<(String, i64)>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (hash, block) = anchor.unzip();
    tx.prepare_cached(
        "UPDATE epochs SET anchored = 1, anchor_tx = ?2, anchor_block = ?3, anchored_at_ms = ?4
         WHERE epoch = ?1 AND status = 'computed'",
    )?
    .execute((n, hash, block, now_ms))?;
    Ok(())
}

/// Every account's cumulative amount at epoch `n` recomputed from the
/// allocations (not the running balances), for the accounts with an
/// address in that epoch's tree: `(0x-hex address, micro-WE)`.
pub(crate) fn leaves_at(c: &Connection, n: i64) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT p.address, SUM(a.activity_micro + a.contribution_micro + a.withdrawal_micro)
         FROM epoch_allocations a JOIN payout_addresses p ON p.account_id = a.account_id
         WHERE a.epoch <= ?1 AND p.since_epoch <= ?1
         GROUP BY a.account_id HAVING SUM(a.activity_micro + a.contribution_micro + a.withdrawal_micro) > 0",
    )?;
    let rows = stmt.query_map([n], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Accounts whose running cumulative differs from the sum of their
/// allocations: `(account, running, summed)`.
pub(crate) fn cumulative_mismatches(c: &Connection) -> Result<Vec<(AccountId, i64, i64)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT b.account_id, b.cumulative_micro, COALESCE(s.total, 0) FROM claim_balances b
         LEFT JOIN (SELECT account_id, SUM(activity_micro + contribution_micro + withdrawal_micro) AS total
                    FROM epoch_allocations GROUP BY account_id) s ON s.account_id = b.account_id
         WHERE b.cumulative_micro <> COALESCE(s.total, 0)",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An account's payout address, if set.
pub(crate) fn payout_address(c: &Connection, account: AccountId) -> Result<Option<String>, StoreError> {
    Ok(c.prepare_cached("SELECT address FROM payout_addresses WHERE account_id = ?1")?
        .query_row([account], |r| r.get(0))
        .optional()?)
}

/// Which account an address belongs to.
pub(crate) fn account_of_address(c: &Connection, address: &str) -> Result<Option<AccountId>, StoreError> {
    Ok(c.prepare_cached("SELECT account_id FROM payout_addresses WHERE address = ?1")?
        .query_row([address], |r| r.get(0))
        .optional()?)
}

/// Sets an account's payout address once (`address` is 0x-hex, lower
/// case). The same address again is a no-op; another one is a conflict,
/// and so is an address another account has.
pub(crate) fn set_payout_address(
    tx: &Connection,
    account: AccountId,
    address: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    if let Some(current) = payout_address(tx, account)? {
        if current == address {
            let since: i64 = tx
                .prepare_cached("SELECT since_epoch FROM payout_addresses WHERE account_id = ?1")?
                .query_row([account], |r| r.get(0))?;
            return Ok(since);
        }
        return Err(StoreError::Conflict {
            code: "payout_address_set",
            message: format!("the payout address is already {current}; cumulative claims follow it, so it cannot change"),
        });
    }
    if account_of_address(tx, address)?.is_some() {
        return Err(StoreError::Conflict {
            code: "payout_address_taken",
            message: "another account claims to this address".into(),
        });
    }
    let since = open_epoch(tx)?;
    tx.prepare_cached("INSERT INTO payout_addresses (account_id, address, since_epoch, set_at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute((account, address, since, now_ms))?;
    Ok(since)
}

/// Moves `amount` of the caller's wallet to the payable account, to be
/// claimed on chain with the open epoch's settlement.
pub(crate) fn request_withdrawal(
    tx: &Connection,
    caller: &Caller,
    amount: i64,
    now_ms: i64,
) -> Result<WithdrawalReceipt, StoreError> {
    let Some(address) = payout_address(tx, caller.account_id)? else {
        return Err(StoreError::Conflict {
            code: "no_payout_address",
            message: "set a payout address first (PUT /v1/account/payout-address)".into(),
        });
    };
    if amount <= 0 {
        return Err(StoreError::InvalidInput { field: "amount_micro_we", message: "must be positive".into() });
    }
    let wallet = ledger::wallet(tx, caller.account_id)?;
    let payable = ledger::system_account(tx, system::REWARD_POOL)?;
    let (journal_id, after) = ledger::post(tx, "withdrawal", None, &[(wallet.id, -amount), (payable.id, amount)], now_ms)?;
    let epoch = open_epoch(tx)?;
    tx.prepare_cached(
        "INSERT INTO withdrawals (account_id, epoch, amount_micro, journal_id, requested_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((caller.account_id, epoch, amount, journal_id, now_ms))?;
    Ok(WithdrawalReceipt {
        id: tx.last_insert_rowid(),
        epoch,
        amount_micro_we: amount,
        address,
        balance_after_micro_we: after[0],
    })
}

/// A WE transfer to a deposit address, as the watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositEvent {
    /// 0x-hex transaction hash.
    pub tx_hash: String,
    /// The log's index.
    pub log_index: i64,
    /// Its block.
    pub block_number: i64,
    /// Sender, 0x-hex.
    pub from: String,
    /// Deposit address, 0x-hex lower case.
    pub to: String,
    /// Amount in wei (decimal).
    pub amount_wei: String,
    /// `floor(amount_wei / 10^12)`.
    pub amount_micro: i64,
}

/// A deposit credited to a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditedDeposit {
    /// The account credited.
    pub account_id: AccountId,
    /// 0x-hex transaction hash.
    pub tx_hash: String,
    /// Micro-WE credited.
    pub amount_micro: i64,
}

/// An account's deposit address, recorded on first use; `derive` makes it
/// from the account id when there is none yet.
pub(crate) fn deposit_address(
    tx: &Connection,
    account: AccountId,
    derive: impl FnOnce(AccountId) -> String,
    now_ms: i64,
) -> Result<String, StoreError> {
    let known: Option<String> = tx
        .prepare_cached("SELECT address FROM deposit_addresses WHERE account_id = ?1")?
        .query_row([account], |r| r.get(0))
        .optional()?;
    if let Some(a) = known {
        return Ok(a);
    }
    let address = derive(account);
    tx.prepare_cached("INSERT INTO deposit_addresses (address, account_id, created_at_ms) VALUES (?1, ?2, ?3)")?
        .execute((&address, account, now_ms))?;
    Ok(address)
}

/// The last block the deposit watcher has read (0 before the first scan).
pub(crate) fn deposit_cursor(c: &Connection) -> Result<i64, StoreError> {
    Ok(c.prepare_cached("SELECT block FROM chain_cursors WHERE name = 'deposits'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Credits the transfers to known deposit addresses (each event once,
/// whatever was seen before) and moves the cursor to `scanned_to`, in the
/// caller's transaction. Returns what was credited now.
pub(crate) fn credit_deposits(
    tx: &Connection,
    events: &[DepositEvent],
    scanned_to: i64,
    now_ms: i64,
) -> Result<Vec<CreditedDeposit>, StoreError> {
    let mut credited = Vec::new();
    for e in events {
        let Some(account): Option<AccountId> = tx
            .prepare_cached("SELECT account_id FROM deposit_addresses WHERE address = ?1")?
            .query_row([&e.to], |r| r.get(0))
            .optional()?
        else {
            continue;
        };
        let fresh = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO deposits (tx_hash, log_index, block_number, account_id, from_address, amount_wei,
                     amount_micro, credited_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute((&e.tx_hash, e.log_index, e.block_number, account, &e.from, &e.amount_wei, e.amount_micro, now_ms))?;
        if fresh == 0 || e.amount_micro <= 0 {
            continue;
        }
        let deposit_id = tx.last_insert_rowid();
        let issuance = ledger::system_account(tx, system::ISSUANCE)?;
        let wallet = ledger::wallet(tx, account)?;
        let memo = format!("{}:{}", e.tx_hash, e.log_index);
        let (journal_id, _) =
            ledger::post(tx, "deposit", Some(&memo), &[(issuance.id, -e.amount_micro), (wallet.id, e.amount_micro)], now_ms)?;
        tx.prepare_cached("UPDATE deposits SET journal_id = ?1 WHERE id = ?2")?.execute((journal_id, deposit_id))?;
        credited.push(CreditedDeposit { account_id: account, tx_hash: e.tx_hash.clone(), amount_micro: e.amount_micro });
    }
    tx.prepare_cached(
        "INSERT INTO chain_cursors (name, block) VALUES ('deposits', ?1)
         ON CONFLICT(name) DO UPDATE SET block = MAX(block, excluded.block)",
    )?
    .execute([scanned_to])?;
    Ok(credited)
}
