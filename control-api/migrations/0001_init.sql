-- 0001: accounts, tokens, channels, stream keys, the double-entry ledger,
-- idempotency records, bandwidth packages, usage metering and stop orders.
--
-- Money is integer micro-WE (1 WE = 10^6). Times are unix milliseconds.
-- The journal and its postings are append-only: triggers refuse UPDATE and
-- DELETE, so a bug cannot rewrite history, only add to it.

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    handle        TEXT NOT NULL UNIQUE,
    phone         TEXT,
    email         TEXT,
    created_at_ms INTEGER NOT NULL
);

-- API tokens are 256-bit random strings; only their SHA-256 is kept.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    token_hash    TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

CREATE TABLE channels (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    owner_account_id INTEGER NOT NULL REFERENCES accounts(id),
    created_at_ms    INTEGER NOT NULL
);
CREATE INDEX channels_owner ON channels(owner_account_id);

-- Stream keys are secrets too: SHA-256 at rest plus a short hint for lists.
CREATE TABLE stream_keys (
    id            INTEGER PRIMARY KEY,
    channel_id    INTEGER NOT NULL REFERENCES channels(id),
    key_hash      TEXT NOT NULL UNIQUE,
    hint          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX stream_keys_channel ON stream_keys(channel_id);

-- One row per wallet and per system account. `balance` is a cache of the
-- sum of its postings, updated in the same transaction; the audit checks it.
CREATE TABLE ledger_accounts (
    id               INTEGER PRIMARY KEY,
    code             TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL CHECK (kind IN ('wallet', 'system')),
    owner_account_id INTEGER UNIQUE REFERENCES accounts(id),
    balance          INTEGER NOT NULL DEFAULT 0,
    CHECK (kind = 'system' OR balance >= 0)
);

CREATE TABLE journal (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    memo          TEXT,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE postings (
    id                INTEGER PRIMARY KEY,
    journal_id        INTEGER NOT NULL REFERENCES journal(id),
    ledger_account_id INTEGER NOT NULL REFERENCES ledger_accounts(id),
    amount            INTEGER NOT NULL CHECK (amount <> 0),
    balance_after     INTEGER NOT NULL
);
CREATE INDEX postings_account ON postings(ledger_account_id, id);
CREATE INDEX postings_journal ON postings(journal_id);

CREATE TRIGGER journal_append_only_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER journal_append_only_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER postings_append_only_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'postings are append-only'); END;
CREATE TRIGGER postings_append_only_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'postings are append-only'); END;

-- The first successful result of every write, by (scope, key). Inserted in
-- the same transaction as the write itself, so the UNIQUE constraint is what
-- makes a retry post once, even with several writers.
CREATE TABLE idempotency (
    id            INTEGER PRIMARY KEY,
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (scope, key)
);

CREATE TABLE packages (
    id               INTEGER PRIMARY KEY,
    account_id       INTEGER NOT NULL REFERENCES accounts(id),
    product_id       TEXT NOT NULL,
    bytes_total      INTEGER NOT NULL CHECK (bytes_total > 0),
    bytes_remaining  INTEGER NOT NULL CHECK (bytes_remaining >= 0),
    price_micro_we   INTEGER NOT NULL CHECK (price_micro_we >= 0),
    created_at_ms    INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL,
    journal_id       INTEGER REFERENCES journal(id)
);
CREATE INDEX packages_drain ON packages(account_id, expires_at_ms, id);

-- A batch is counted once per (node, sequence); `request_hash` spots a node
-- that reuses a sequence number for different content.
CREATE TABLE usage_batches (
    id            INTEGER PRIMARY KEY,
    node_id       TEXT NOT NULL,
    batch_seq     INTEGER NOT NULL,
    request_hash  TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    UNIQUE (node_id, batch_seq)
);

CREATE TABLE usage_records (
    id              INTEGER PRIMARY KEY,
    batch_id        INTEGER NOT NULL REFERENCES usage_batches(id),
    channel_id      INTEGER NOT NULL REFERENCES channels(id),
    bytes_out       INTEGER NOT NULL,
    bytes_in        INTEGER NOT NULL,
    viewer_seconds  INTEGER NOT NULL,
    charged_bytes   INTEGER NOT NULL,
    uncharged_bytes INTEGER NOT NULL,
    recorded_at_ms  INTEGER NOT NULL
);
CREATE INDEX usage_records_channel ON usage_records(channel_id, id);

CREATE TABLE stop_orders (
    id             INTEGER PRIMARY KEY,
    channel_id     INTEGER NOT NULL REFERENCES channels(id),
    reason         TEXT NOT NULL,
    issued_at_ms   INTEGER NOT NULL,
    stop_at_ms     INTEGER NOT NULL,
    cancelled_at_ms INTEGER
);
CREATE INDEX stop_orders_active ON stop_orders(channel_id) WHERE cancelled_at_ms IS NULL;
