//! Bandwidth packages and metering: purchases, usage batches drained from
//! packages oldest-expiry first, and stop orders when an owner runs dry.

use rusqlite::{Connection, OptionalExtension};

use super::{ledger, system, AccountId, ChannelUsageHistory, Package, StoreError, UsageRecord};
use crate::config::ProductConfig;
use crate::hooks::{StopOrder, UsageBatch, UsageReceipt};

const DAY_MS: i64 = 86_400_000;

/// Shown to the publisher (OBS) with the stop order.
pub const STOP_REASON: &str = "bandwidth package used up: buy a package to keep streaming";

/// Largest number of channels in one usage batch.
pub const MAX_BATCH_CHANNELS: usize = 10_000;

fn package_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Package> {
    Ok(Package {
        id: r.get(0)?,
        product_id: r.get(1)?,
        bytes_total: r.get(2)?,
        bytes_remaining: r.get(3)?,
        price_micro_we: r.get(4)?,
        created_at_ms: r.get(5)?,
        expires_at_ms: r.get(6)?,
        journal_id: r.get(7)?,
    })
}

/// Debits the wallet, credits bandwidth revenue, creates the package and
/// lifts the owner's stop orders (they have bandwidth again).
pub(super) fn purchase(
    tx: &Connection,
    account_id: AccountId,
    product: &ProductConfig,
    now_ms: i64,
) -> Result<Package, StoreError> {
    let journal_id = if product.price_micro_we > 0 {
        let wallet = ledger::wallet(tx, account_id)?;
        let revenue = ledger::system_account(tx, system::BANDWIDTH_REVENUE)?;
        let legs = [
            (wallet.id, -product.price_micro_we),
            (revenue.id, product.price_micro_we),
        ];
        Some(ledger::post(tx, "purchase", Some(&product.id), &legs, now_ms)?.0)
    } else {
        None
    };
    let expires_at_ms = now_ms.saturating_add(i64::from(product.validity_days) * DAY_MS);
    tx.prepare_cached(
        "INSERT INTO packages (account_id, product_id, bytes_total, bytes_remaining, price_micro_we,
         created_at_ms, expires_at_ms, journal_id) VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((account_id, &product.id, product.bandwidth_bytes, product.price_micro_we, now_ms, expires_at_ms, journal_id))?;
    let id = tx.last_insert_rowid();
    // Checked first: almost every purchase finds no order to lift, and the
    // read is cheaper than an UPDATE that touches nothing.
    let lifted = tx
        .prepare_cached(
            "SELECT 1 FROM stop_orders s JOIN channels c ON c.id = s.channel_id
             WHERE s.cancelled_at_ms IS NULL AND c.owner_account_id = ?1",
        )?
        .exists([account_id])?;
    if lifted {
        tx.prepare_cached(
            "UPDATE stop_orders SET cancelled_at_ms = ?1 WHERE cancelled_at_ms IS NULL
             AND channel_id IN (SELECT id FROM channels WHERE owner_account_id = ?2)",
        )?
        .execute((now_ms, account_id))?;
    }
    Ok(Package {
        id,
        product_id: product.id.clone(),
        bytes_total: product.bandwidth_bytes,
        bytes_remaining: product.bandwidth_bytes,
        price_micro_we: product.price_micro_we,
        created_at_ms: now_ms,
        expires_at_ms,
        journal_id,
    })
}

pub(super) fn list(c: &Connection, account_id: AccountId) -> Result<Vec<Package>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, product_id, bytes_total, bytes_remaining, price_micro_we, created_at_ms, expires_at_ms, journal_id
         FROM packages WHERE account_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([account_id], package_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Unexpired bytes an owner has left.
pub(super) fn remaining(
    c: &Connection,
    account_id: AccountId,
    now_ms: i64,
) -> Result<i64, StoreError> {
    Ok(c.prepare_cached(
        "SELECT COALESCE(SUM(bytes_remaining), 0) FROM packages WHERE account_id = ?1 AND expires_at_ms > ?2",
    )?
    .query_row((account_id, now_ms), |r| r.get(0))?)
}

/// Largest counter one batch may carry (1 PiB): far above any real interval,
/// far enough below i64::MAX that sums over years of records cannot overflow.
pub const MAX_BATCH_COUNTER: u64 = 1 << 50;

fn to_i64(field: &'static str, v: u64) -> Result<i64, StoreError> {
    if v > MAX_BATCH_COUNTER {
        return Err(StoreError::InvalidInput {
            field,
            message: format!("at most {MAX_BATCH_COUNTER}"),
        });
    }
    i64::try_from(v).map_err(|_| StoreError::InvalidInput {
        field,
        message: "out of range".into(),
    })
}

fn batch_hash(batch: &UsageBatch) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        serde_json::to_vec(batch).unwrap_or_default(),
    ))
}

/// Drains `bytes` from the owner's unexpired packages, oldest expiry first.
/// Returns (charged, uncharged).
fn drain(
    tx: &Connection,
    owner: AccountId,
    bytes: i64,
    now_ms: i64,
) -> Result<(i64, i64), StoreError> {
    let mut left = bytes;
    let pkgs: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT id, bytes_remaining FROM packages WHERE account_id = ?1 AND expires_at_ms > ?2
             AND bytes_remaining > 0 ORDER BY expires_at_ms, id",
        )?
        .query_map((owner, now_ms), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, rem) in pkgs {
        if left == 0 {
            break;
        }
        let take = rem.min(left);
        tx.prepare_cached(
            "UPDATE packages SET bytes_remaining = bytes_remaining - ?1 WHERE id = ?2",
        )?
        .execute((take, id))?;
        left -= take;
    }
    Ok((bytes - left, left))
}

/// Counts a batch once. A replay with the same content is a duplicate; the
/// same `(node, seq)` with other content is a conflict (a node bug).
pub(super) fn record_usage(
    tx: &Connection,
    batch: &UsageBatch,
    charge_ingest: bool,
    grace_ms: u64,
    now_ms: i64,
) -> Result<UsageReceipt, StoreError> {
    if batch.node_id.is_empty() || batch.node_id.len() > 128 {
        return Err(StoreError::InvalidInput {
            field: "node_id",
            message: "must be 1..=128 bytes".into(),
        });
    }
    if batch.channels.len() > MAX_BATCH_CHANNELS {
        return Err(StoreError::InvalidInput {
            field: "channels",
            message: format!("at most {MAX_BATCH_CHANNELS}"),
        });
    }
    let seq = i64::try_from(batch.batch_seq).map_err(|_| StoreError::InvalidInput {
        field: "batch_seq",
        message: "out of range".into(),
    })?;
    let hash = batch_hash(batch);
    let names: Vec<&str> = batch.channels.iter().map(|c| c.channel.as_str()).collect();
    let prior: Option<String> = tx
        .prepare_cached(
            "SELECT request_hash FROM usage_batches WHERE node_id = ?1 AND batch_seq = ?2",
        )?
        .query_row((&batch.node_id, seq), |r| r.get(0))
        .optional()?;
    if let Some(prior) = prior {
        if prior != hash {
            return Err(StoreError::Conflict {
                code: "batch_conflict",
                message: format!(
                    "batch {seq} of node '{}' was already counted with other content",
                    batch.node_id
                ),
            });
        }
        return Ok(UsageReceipt {
            duplicate: true,
            stop_orders: stop_orders(tx, Some(&names))?,
            bytes_remaining: remaining_by_channel(tx, &names, now_ms)?,
        });
    }
    // Validate every counter before writing anything.
    let mut entries = Vec::with_capacity(batch.channels.len());
    for u in &batch.channels {
        entries.push((
            u.channel.as_str(),
            to_i64("bytes_out", u.bytes_out)?,
            to_i64("bytes_in", u.bytes_in)?,
            to_i64("viewer_seconds", u.viewer_seconds)?,
        ));
    }
    tx.prepare_cached("INSERT INTO usage_batches (node_id, batch_seq, request_hash, received_at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute((&batch.node_id, seq, &hash, now_ms))?;
    let batch_id = tx.last_insert_rowid();
    let stop_at = now_ms.saturating_add(i64::try_from(grace_ms).unwrap_or(i64::MAX));
    for (name, bytes_out, bytes_in, viewer_seconds) in entries {
        let row: Option<(i64, AccountId)> = tx
            .prepare_cached("SELECT id, owner_account_id FROM channels WHERE name = ?1")?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((channel_id, owner)) = row else {
            // A channel the control plane does not know (config-only or
            // deleted): nothing to charge, and the batch must still count.
            tracing::debug!(channel = name, node = %batch.node_id, "usage for unknown channel ignored");
            continue;
        };
        let chargeable = if charge_ingest {
            bytes_out.saturating_add(bytes_in)
        } else {
            bytes_out
        };
        let (charged, uncharged) = drain(tx, owner, chargeable, now_ms)?;
        tx.prepare_cached(
            "INSERT INTO usage_records (batch_id, channel_id, bytes_out, bytes_in, viewer_seconds,
             charged_bytes, uncharged_bytes, recorded_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute((batch_id, channel_id, bytes_out, bytes_in, viewer_seconds, charged, uncharged, now_ms))?;
        if remaining(tx, owner, now_ms)? == 0 {
            let active = tx
                .prepare_cached(
                    "SELECT 1 FROM stop_orders WHERE channel_id = ?1 AND cancelled_at_ms IS NULL",
                )?
                .exists([channel_id])?;
            if !active {
                tx.prepare_cached(
                    "INSERT INTO stop_orders (channel_id, reason, issued_at_ms, stop_at_ms) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute((channel_id, STOP_REASON, now_ms, stop_at))?;
                tracing::info!(
                    channel = name,
                    stop_at_ms = stop_at,
                    "bandwidth exhausted: stop order issued"
                );
            }
        }
    }
    Ok(UsageReceipt {
        duplicate: false,
        stop_orders: stop_orders(tx, Some(&names))?,
        bytes_remaining: remaining_by_channel(tx, &names, now_ms)?,
    })
}

fn remaining_by_channel(
    c: &Connection,
    names: &[&str],
    now_ms: i64,
) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
    let mut out = std::collections::BTreeMap::new();
    for name in names {
        let owner: Option<AccountId> = c
            .prepare_cached("SELECT owner_account_id FROM channels WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        if let Some(owner) = owner {
            out.insert((*name).to_string(), remaining(c, owner, now_ms)?);
        }
    }
    Ok(out)
}

fn stop_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StopOrder> {
    let issued: i64 = r.get(2)?;
    let stop: i64 = r.get(3)?;
    Ok(StopOrder {
        channel: r.get(0)?,
        reason: r.get(1)?,
        issued_at_ms: u64::try_from(issued).unwrap_or(0),
        stop_at_ms: u64::try_from(stop).unwrap_or(0),
    })
}

/// Stop orders in force, all or for the named channels.
pub(super) fn stop_orders(
    c: &Connection,
    channels: Option<&[&str]>,
) -> Result<Vec<StopOrder>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT c.name, s.reason, s.issued_at_ms, s.stop_at_ms FROM stop_orders s
         JOIN channels c ON c.id = s.channel_id WHERE s.cancelled_at_ms IS NULL ORDER BY s.id",
    )?;
    let all = stmt
        .query_map([], stop_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match channels {
        None => all,
        Some(names) => all
            .into_iter()
            .filter(|o| names.contains(&o.channel.as_str()))
            .collect(),
    })
}

pub(super) fn channel_usage(
    c: &Connection,
    name: &str,
    limit: u32,
    now_ms: i64,
) -> Result<Option<ChannelUsageHistory>, StoreError> {
    let row: Option<(i64, AccountId)> = c
        .prepare_cached("SELECT id, owner_account_id FROM channels WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((channel_id, owner)) = row else {
        return Ok(None);
    };
    let (total_bytes_out, total_bytes_in, total_viewer_seconds, total_charged_bytes): (i64, i64, i64, i64) = c
        .prepare_cached(
            "SELECT COALESCE(SUM(bytes_out),0), COALESCE(SUM(bytes_in),0), COALESCE(SUM(viewer_seconds),0),
             COALESCE(SUM(charged_bytes),0) FROM usage_records WHERE channel_id = ?1",
        )?
        .query_row([channel_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let records = c
        .prepare_cached(
            "SELECT b.node_id, b.batch_seq, u.recorded_at_ms, u.bytes_out, u.bytes_in, u.viewer_seconds,
             u.charged_bytes, u.uncharged_bytes FROM usage_records u JOIN usage_batches b ON b.id = u.batch_id
             WHERE u.channel_id = ?1 ORDER BY u.id DESC LIMIT ?2",
        )?
        .query_map((channel_id, limit), |r| {
            Ok(UsageRecord {
                node_id: r.get(0)?,
                batch_seq: r.get(1)?,
                recorded_at_ms: r.get(2)?,
                bytes_out: r.get(3)?,
                bytes_in: r.get(4)?,
                viewer_seconds: r.get(5)?,
                charged_bytes: r.get(6)?,
                uncharged_bytes: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let stop_order = stop_orders(c, Some(&[name]))?.into_iter().next();
    Ok(Some(ChannelUsageHistory {
        channel: name.to_string(),
        total_bytes_out,
        total_bytes_in,
        total_viewer_seconds,
        total_charged_bytes,
        bytes_remaining: remaining(c, owner, now_ms)?,
        stop_order,
        records,
    }))
}
