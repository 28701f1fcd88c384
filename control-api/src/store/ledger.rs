//! The double-entry journal. Every money movement is one journal entry whose
//! postings sum to zero, written in the caller's transaction together with
//! the cached balances; wallets can never go below zero (checked here and
//! by a CHECK constraint), system accounts can (issuance is negative by
//! design: it is minus the WE in circulation).

use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

use super::{system, AccountId, Caller, LedgerAudit, StatementLine, StoreError, TransferReceipt};

/// A ledger account row.
#[derive(Debug, Clone)]
pub(super) struct LedgerAccount {
    pub(super) id: i64,
    pub(super) code: String,
    pub(super) balance: i64,
}

pub(super) fn wallet(c: &Connection, account_id: AccountId) -> Result<LedgerAccount, StoreError> {
    c.prepare_cached("SELECT id, code, balance FROM ledger_accounts WHERE owner_account_id = ?1")?
        .query_row([account_id], |r| {
            Ok(LedgerAccount {
                id: r.get(0)?,
                code: r.get(1)?,
                balance: r.get(2)?,
            })
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "wallet",
            id: account_id.to_string(),
        })
}

pub(super) fn system_account(c: &Connection, code: &str) -> Result<LedgerAccount, StoreError> {
    c.prepare_cached(
        "SELECT id, code, balance FROM ledger_accounts WHERE code = ?1 AND kind = 'system'",
    )?
    .query_row([code], |r| {
        Ok(LedgerAccount {
            id: r.get(0)?,
            code: r.get(1)?,
            balance: r.get(2)?,
        })
    })
    .optional()?
    .ok_or_else(|| StoreError::Corrupt(format!("system account {code} missing")))
}

fn check_amount(amount: i64) -> Result<(), StoreError> {
    if amount <= 0 {
        return Err(StoreError::InvalidInput {
            field: "amount_micro_we",
            message: "must be positive".into(),
        });
    }
    Ok(())
}

/// Posts one balanced journal entry: `legs` are (ledger account id, signed
/// amount). Returns the journal id and the new balance of every leg.
pub(super) fn post(
    tx: &Connection,
    kind: &str,
    memo: Option<&str>,
    legs: &[(i64, i64)],
    now_ms: i64,
) -> Result<(i64, Vec<i64>), StoreError> {
    let mut sum: i64 = 0;
    for &(_, amount) in legs {
        sum = sum.checked_add(amount).ok_or(StoreError::Overflow)?;
    }
    if legs.len() < 2 || sum != 0 || legs.iter().any(|l| l.1 == 0) {
        // A programming error, never user input: refuse rather than unbalance.
        return Err(StoreError::Corrupt(format!(
            "unbalanced journal entry ({kind}, sum {sum})"
        )));
    }
    tx.prepare_cached("INSERT INTO journal (kind, memo, created_at_ms) VALUES (?1, ?2, ?3)")?
        .execute((kind, memo, now_ms))?;
    let journal_id = tx.last_insert_rowid();
    let mut after = Vec::with_capacity(legs.len());
    for &(account, amount) in legs {
        let (balance, acct_kind): (i64, String) = tx
            .prepare_cached("SELECT balance, kind FROM ledger_accounts WHERE id = ?1")?
            .query_row([account], |r| Ok((r.get(0)?, r.get(1)?)))?;
        // Checked in Rust: SQLite would silently turn an overflow into a REAL.
        let new = balance.checked_add(amount).ok_or(StoreError::Overflow)?;
        if acct_kind == "wallet" && new < 0 {
            return Err(StoreError::InsufficientFunds {
                needed_micro_we: -amount,
                available_micro_we: balance,
            });
        }
        tx.prepare_cached("UPDATE ledger_accounts SET balance = ?1 WHERE id = ?2")?
            .execute((new, account))?;
        tx.prepare_cached(
            "INSERT INTO postings (journal_id, ledger_account_id, amount, balance_after) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute((journal_id, account, amount, new))?;
        after.push(new);
    }
    Ok((journal_id, after))
}

/// Moves WE between two wallets.
pub(super) fn transfer(
    tx: &Connection,
    caller: &Caller,
    to_handle: &str,
    amount: i64,
    memo: Option<&str>,
    now_ms: i64,
) -> Result<TransferReceipt, StoreError> {
    check_amount(amount)?;
    if memo.is_some_and(|m| m.len() > 200) {
        return Err(StoreError::InvalidInput {
            field: "memo",
            message: "at most 200 bytes".into(),
        });
    }
    let to_id: AccountId = tx
        .prepare_cached("SELECT id FROM accounts WHERE handle = ?1")?
        .query_row([to_handle], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "account",
            id: to_handle.to_string(),
        })?;
    if to_id == caller.account_id {
        return Err(StoreError::InvalidInput {
            field: "to",
            message: "cannot transfer to yourself".into(),
        });
    }
    let from = wallet(tx, caller.account_id)?;
    let to = wallet(tx, to_id)?;
    let (journal_id, after) = post(
        tx,
        "transfer",
        memo,
        &[(from.id, -amount), (to.id, amount)],
        now_ms,
    )?;
    Ok(TransferReceipt {
        journal_id,
        from: from.code,
        to: to.code,
        amount_micro_we: amount,
        balance_after_micro_we: after[0],
    })
}

/// Credits a wallet from the issuance account (faucet, seed funding).
pub(super) fn issue(
    tx: &Connection,
    account_id: AccountId,
    amount: i64,
    kind: &str,
    now_ms: i64,
) -> Result<TransferReceipt, StoreError> {
    check_amount(amount)?;
    let from = system_account(tx, system::ISSUANCE)?;
    let to = wallet(tx, account_id)?;
    let (journal_id, after) = post(
        tx,
        kind,
        None,
        &[(from.id, -amount), (to.id, amount)],
        now_ms,
    )?;
    Ok(TransferReceipt {
        journal_id,
        from: from.code,
        to: to.code,
        amount_micro_we: amount,
        balance_after_micro_we: after[1],
    })
}

pub(super) fn statement(
    c: &Connection,
    account_id: AccountId,
    after: i64,
    limit: u32,
) -> Result<Vec<StatementLine>, StoreError> {
    let w = wallet(c, account_id)?;
    let mut stmt = c.prepare_cached(
        "SELECT p.id, p.journal_id, j.kind, j.memo, p.amount, p.balance_after, j.created_at_ms
         FROM postings p JOIN journal j ON j.id = p.journal_id
         WHERE p.ledger_account_id = ?1 AND p.id > ?2 ORDER BY p.id LIMIT ?3",
    )?;
    let mut lines = stmt
        .query_map((w.id, after, limit), |r| {
            Ok(StatementLine {
                posting_id: r.get(0)?,
                journal_id: r.get(1)?,
                kind: r.get(2)?,
                memo: r.get(3)?,
                amount_micro_we: r.get(4)?,
                balance_after_micro_we: r.get(5)?,
                counterparties: Vec::new(),
                created_at_ms: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut others = c.prepare_cached(
        "SELECT la.code FROM postings p JOIN ledger_accounts la ON la.id = p.ledger_account_id
         WHERE p.journal_id = ?1 AND p.ledger_account_id <> ?2 ORDER BY p.id",
    )?;
    for line in &mut lines {
        line.counterparties = others
            .query_map((line.journal_id, w.id), |r| r.get(0))?
            .collect::<Result<_, _>>()?;
    }
    Ok(lines)
}

/// Recomputes everything the ledger promises and reports what does not hold.
pub(super) fn audit(c: &Connection) -> Result<LedgerAudit, StoreError> {
    let journal_count: i64 = c.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))?;
    let posting_count: i64 = c.query_row("SELECT COUNT(*) FROM postings", [], |r| r.get(0))?;
    // SUM over i64 in SQLite errors out on overflow rather than wrapping,
    // which surfaces as a database error here: acceptable for an audit.
    let sum_of_balances: i64 = c.query_row(
        "SELECT COALESCE(SUM(balance), 0) FROM ledger_accounts",
        [],
        |r| r.get(0),
    )?;
    let sum_of_postings: i64 =
        c.query_row("SELECT COALESCE(SUM(amount), 0) FROM postings", [], |r| {
            r.get(0)
        })?;
    let unbalanced_journals = c
        .prepare("SELECT journal_id FROM postings GROUP BY journal_id HAVING SUM(amount) <> 0 OR COUNT(*) < 2 ORDER BY journal_id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    let negative_wallets = c
        .prepare(
            "SELECT code FROM ledger_accounts WHERE kind = 'wallet' AND balance < 0 ORDER BY code",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    let mismatched_accounts = c
        .prepare(
            "SELECT la.code FROM ledger_accounts la
             LEFT JOIN (SELECT ledger_account_id, SUM(amount) AS s FROM postings GROUP BY ledger_account_id) p
             ON p.ledger_account_id = la.id WHERE la.balance <> COALESCE(p.s, 0) ORDER BY la.code",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    let system_balances = c
        .prepare("SELECT code, balance FROM ledger_accounts WHERE kind = 'system' ORDER BY code")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<BTreeMap<String, i64>, _>>()?;
    let wallets_total: i64 = c.query_row(
        "SELECT COALESCE(SUM(balance), 0) FROM ledger_accounts WHERE kind = 'wallet'",
        [],
        |r| r.get(0),
    )?;
    let ok = sum_of_balances == 0
        && sum_of_postings == 0
        && unbalanced_journals.is_empty()
        && negative_wallets.is_empty()
        && mismatched_accounts.is_empty();
    Ok(LedgerAudit {
        ok,
        journal_count,
        posting_count,
        sum_of_balances,
        sum_of_postings,
        unbalanced_journals,
        negative_wallets,
        mismatched_accounts,
        system_balances,
        wallets_total,
    })
}
