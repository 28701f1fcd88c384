//! Accounts, API tokens, channels and stream keys: the SQL behind them.
//! Ownership is checked here, next to the rows, so no API path can forget.

use rusqlite::{Connection, OptionalExtension};

use super::{
    hash_secret, mask_key, random_secret, validate_channel_name, validate_handle, Account,
    AccountId, Caller, Channel, CreateAccount, NewAccount, NewStreamKey, PublishLookup, StoreError,
    StreamKeyInfo,
};

fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::InvalidInput {
        field,
        message: message.into(),
    }
}

fn check_contact(field: &'static str, v: &Option<String>, max: usize) -> Result<(), StoreError> {
    match v {
        Some(s) if s.is_empty() || s.len() > max || s.chars().any(char::is_control) => Err(
            invalid(field, format!("must be 1..={max} printable characters")),
        ),
        _ => Ok(()),
    }
}

/// Creates an account, its wallet and an API token (`fixed_token` for seeds).
pub(super) fn create_account(
    tx: &Connection,
    req: &CreateAccount,
    fixed_token: Option<&str>,
    now_ms: i64,
) -> Result<NewAccount, StoreError> {
    validate_handle(&req.handle).map_err(|m| invalid("handle", m))?;
    check_contact("phone", &req.phone, 32)?;
    check_contact("email", &req.email, 254)?;
    if req.email.as_deref().is_some_and(|e| !e.contains('@')) {
        return Err(invalid("email", "not an e-mail address"));
    }
    let taken = tx
        .prepare_cached("SELECT 1 FROM accounts WHERE handle = ?1")?
        .exists([&req.handle])?;
    if taken {
        return Err(StoreError::Conflict {
            code: "handle_taken",
            message: format!("handle '{}' is taken", req.handle),
        });
    }
    tx.prepare_cached(
        "INSERT INTO accounts (handle, phone, email, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((&req.handle, &req.phone, &req.email, now_ms))?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO ledger_accounts (code, kind, owner_account_id) VALUES (?1, 'wallet', ?2)",
    )?
    .execute((format!("wallet:{}", req.handle), id))?;
    let token = fixed_token
        .map(str::to_string)
        .unwrap_or_else(|| random_secret("wst_"));
    insert_token(tx, id, &token, now_ms)?;
    Ok(NewAccount {
        account: Account {
            id,
            handle: req.handle.clone(),
            phone: req.phone.clone(),
            email: req.email.clone(),
            created_at_ms: now_ms,
        },
        token: Some(token),
    })
}

/// Stores the hash of a new API token.
pub(super) fn insert_token(
    tx: &Connection,
    account_id: AccountId,
    token: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO api_tokens (account_id, token_hash, created_at_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute((account_id, hash_secret(token), now_ms))?;
    Ok(tx.last_insert_rowid())
}

pub(super) fn token_exists(tx: &Connection, token: &str) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM api_tokens WHERE token_hash = ?1")?
        .exists([hash_secret(token)])?)
}

pub(super) fn authenticate(c: &Connection, token: &str) -> Result<Option<Caller>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT a.id, a.handle FROM api_tokens t JOIN accounts a ON a.id = t.account_id
         WHERE t.token_hash = ?1 AND t.revoked_at_ms IS NULL",
    )?
    .query_row([hash_secret(token)], |r| {
        Ok(Caller {
            account_id: r.get(0)?,
            handle: r.get(1)?,
        })
    })
    .optional()?)
}

pub(super) fn account(c: &Connection, id: AccountId) -> Result<Account, StoreError> {
    c.prepare_cached("SELECT id, handle, phone, email, created_at_ms FROM accounts WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(Account {
                id: r.get(0)?,
                handle: r.get(1)?,
                phone: r.get(2)?,
                email: r.get(3)?,
                created_at_ms: r.get(4)?,
            })
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "account",
            id: id.to_string(),
        })
}

const CHANNEL_SQL: &str = "SELECT c.id, c.name, a.handle, c.created_at_ms FROM channels c
     JOIN accounts a ON a.id = c.owner_account_id WHERE c.name = ?1";

fn channel_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    Ok(Channel {
        id: r.get(0)?,
        name: r.get(1)?,
        owner: r.get(2)?,
        created_at_ms: r.get(3)?,
    })
}

pub(super) fn channel(c: &Connection, name: &str) -> Result<Option<Channel>, StoreError> {
    Ok(c.prepare_cached(CHANNEL_SQL)?
        .query_row([name], channel_row)
        .optional()?)
}

pub(super) fn channel_tx(tx: &Connection, name: &str) -> Result<Option<Channel>, StoreError> {
    channel(tx, name)
}

pub(super) fn create_channel(
    tx: &Connection,
    caller: &Caller,
    name: &str,
    now_ms: i64,
) -> Result<Channel, StoreError> {
    validate_channel_name(name).map_err(|m| invalid("name", m))?;
    if channel(tx, name)?.is_some() {
        return Err(StoreError::Conflict {
            code: "channel_taken",
            message: format!("channel '{name}' exists"),
        });
    }
    tx.prepare_cached(
        "INSERT INTO channels (name, owner_account_id, created_at_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute((name, caller.account_id, now_ms))?;
    Ok(Channel {
        id: tx.last_insert_rowid(),
        name: name.to_string(),
        owner: caller.handle.clone(),
        created_at_ms: now_ms,
    })
}

/// The caller's channel, or NotFound / Forbidden.
fn owned_channel(c: &Connection, caller: &Caller, name: &str) -> Result<Channel, StoreError> {
    let ch = channel(c, name)?.ok_or_else(|| StoreError::NotFound {
        what: "channel",
        id: name.to_string(),
    })?;
    if ch.owner != caller.handle {
        return Err(StoreError::Forbidden(format!(
            "channel '{name}' belongs to another account"
        )));
    }
    Ok(ch)
}

pub(super) fn stream_key_exists(tx: &Connection, key: &str) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM stream_keys WHERE key_hash = ?1")?
        .exists([hash_secret(key)])?)
}

pub(super) fn insert_stream_key(
    tx: &Connection,
    channel_id: i64,
    channel_name: &str,
    key: &str,
    now_ms: i64,
) -> Result<StreamKeyInfo, StoreError> {
    let masked = mask_key(key);
    tx.prepare_cached("INSERT INTO stream_keys (channel_id, key_hash, hint, created_at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute((channel_id, hash_secret(key), &masked, now_ms))?;
    Ok(StreamKeyInfo {
        id: tx.last_insert_rowid(),
        channel: channel_name.to_string(),
        masked,
        created_at_ms: now_ms,
        revoked_at_ms: None,
    })
}

pub(super) fn create_stream_key(
    tx: &Connection,
    caller: &Caller,
    channel: &str,
    now_ms: i64,
) -> Result<NewStreamKey, StoreError> {
    let ch = owned_channel(tx, caller, channel)?;
    let key = random_secret("sk_");
    let info = insert_stream_key(tx, ch.id, &ch.name, &key, now_ms)?;
    Ok(NewStreamKey {
        info,
        key: Some(key),
        replaced_key_id: None,
    })
}

fn key_info(c: &Connection, channel: &Channel, key_id: i64) -> Result<StreamKeyInfo, StoreError> {
    c.prepare_cached(
        "SELECT id, hint, created_at_ms, revoked_at_ms FROM stream_keys WHERE id = ?1 AND channel_id = ?2",
    )?
    .query_row((key_id, channel.id), |r| {
        Ok(StreamKeyInfo {
            id: r.get(0)?,
            channel: channel.name.clone(),
            masked: r.get(1)?,
            created_at_ms: r.get(2)?,
            revoked_at_ms: r.get(3)?,
        })
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound { what: "stream_key", id: key_id.to_string() })
}

pub(super) fn list_stream_keys(
    c: &Connection,
    caller: &Caller,
    channel: &str,
) -> Result<Vec<StreamKeyInfo>, StoreError> {
    let ch = owned_channel(c, caller, channel)?;
    let mut stmt = c.prepare_cached(
        "SELECT id, hint, created_at_ms, revoked_at_ms FROM stream_keys WHERE channel_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([ch.id], |r| {
        Ok(StreamKeyInfo {
            id: r.get(0)?,
            channel: ch.name.clone(),
            masked: r.get(1)?,
            created_at_ms: r.get(2)?,
            revoked_at_ms: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn revoke_stream_key(
    tx: &Connection,
    caller: &Caller,
    channel: &str,
    key_id: i64,
    now_ms: i64,
) -> Result<StreamKeyInfo, StoreError> {
    let ch = owned_channel(tx, caller, channel)?;
    let mut info = key_info(tx, &ch, key_id)?;
    if info.revoked_at_ms.is_none() {
        tx.prepare_cached("UPDATE stream_keys SET revoked_at_ms = ?1 WHERE id = ?2")?
            .execute((now_ms, key_id))?;
        info.revoked_at_ms = Some(now_ms);
    }
    Ok(info)
}

pub(super) fn rotate_stream_key(
    tx: &Connection,
    caller: &Caller,
    channel: &str,
    key_id: i64,
    now_ms: i64,
) -> Result<NewStreamKey, StoreError> {
    let ch = owned_channel(tx, caller, channel)?;
    let old = key_info(tx, &ch, key_id)?;
    if old.revoked_at_ms.is_some() {
        return Err(StoreError::Conflict {
            code: "key_revoked",
            message: format!("stream key {key_id} is already revoked"),
        });
    }
    revoke_stream_key(tx, caller, channel, key_id, now_ms)?;
    let mut new = create_stream_key(tx, caller, channel, now_ms)?;
    new.replaced_key_id = Some(key_id);
    Ok(new)
}

pub(super) fn publish_lookup(
    c: &Connection,
    key: &str,
    now_ms: i64,
) -> Result<Option<PublishLookup>, StoreError> {
    let row: Option<(String, i64)> = c
        .prepare_cached(
            "SELECT c.name, c.owner_account_id FROM stream_keys k JOIN channels c ON c.id = k.channel_id
             WHERE k.key_hash = ?1 AND k.revoked_at_ms IS NULL",
        )?
        .query_row([hash_secret(key)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((channel, owner)) = row else {
        return Ok(None);
    };
    let bytes_remaining = super::packages::remaining(c, owner, now_ms)?;
    Ok(Some(PublishLookup {
        channel,
        owner_account_id: owner,
        bytes_remaining,
    }))
}
