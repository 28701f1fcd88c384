-- Reward epochs and their settlement (issue #8). An epoch is closed first
-- (status 'closed': from then on activity and withdrawals go to the next
-- one, and the creators' decayed scores are frozen in epoch_scores), then
-- computed from those frozen inputs (status 'computed': allocations, the
-- ledger posting, the Merkle root), then anchored on chain. A crash between
-- any two steps reruns the remaining ones to the same result.
CREATE TABLE epochs (
    epoch                    INTEGER PRIMARY KEY,   -- 1, 2, ... (the contract's numbering)
    status                   TEXT NOT NULL CHECK (status IN ('closed', 'computed')),
    start_ms                 INTEGER NOT NULL,
    end_ms                   INTEGER NOT NULL,
    fund_before_micro        INTEGER,
    activity                 REAL,                  -- total effort of the epoch
    v                        REAL,                  -- sum of sqrt(effort)
    pool_micro               INTEGER,
    released_micro           INTEGER,
    activity_paid_micro      INTEGER,
    contribution_paid_micro  INTEGER,
    withdrawals_micro        INTEGER,
    remainder_micro          INTEGER,
    accounts                 INTEGER,               -- leaves in the tree
    root                     TEXT,                  -- 0x-hex
    total_cumulative_micro   INTEGER,
    journal_id               INTEGER REFERENCES journal(id),
    computed_at_ms           INTEGER,
    anchored                 INTEGER NOT NULL DEFAULT 0,
    anchor_tx                TEXT,
    anchor_block             INTEGER,
    anchored_at_ms           INTEGER
);

-- Activity per account tallied into the epoch that was open when it was
-- flushed (the same columns as activity_days).
CREATE TABLE epoch_activity (
    account_id           INTEGER NOT NULL REFERENCES accounts(id),
    epoch                INTEGER NOT NULL,
    watch_rtmp_s         INTEGER NOT NULL DEFAULT 0,
    watch_flv_s          INTEGER NOT NULL DEFAULT 0,
    watch_hls_s          INTEGER NOT NULL DEFAULT 0,
    plays                INTEGER NOT NULL DEFAULT 0,
    publishes            INTEGER NOT NULL DEFAULT 0,
    broadcast_minutes    INTEGER NOT NULL DEFAULT 0,
    chat_messages        INTEGER NOT NULL DEFAULT 0,
    likes                INTEGER NOT NULL DEFAULT 0,
    shares               INTEGER NOT NULL DEFAULT 0,
    gifts_sent_micro     INTEGER NOT NULL DEFAULT 0,
    gifts_received_micro INTEGER NOT NULL DEFAULT 0,
    peak_viewers         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (epoch, account_id)
);

-- Creators' decayed gift-vote scores at the epoch's end, frozen at close.
CREATE TABLE epoch_scores (
    epoch      INTEGER NOT NULL REFERENCES epochs(epoch),
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    score      REAL NOT NULL,
    PRIMARY KEY (epoch, account_id)
);

-- What each account earned in each epoch (micro-WE). The cumulative amount
-- of an account at epoch N is the sum of its rows up to N; `westream
-- verify` recomputes every root from these rows.
CREATE TABLE epoch_allocations (
    epoch              INTEGER NOT NULL REFERENCES epochs(epoch),
    account_id         INTEGER NOT NULL REFERENCES accounts(id),
    activity_micro     INTEGER NOT NULL DEFAULT 0,
    contribution_micro INTEGER NOT NULL DEFAULT 0,
    withdrawal_micro   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (epoch, account_id)
);
CREATE INDEX epoch_allocations_account ON epoch_allocations(account_id, epoch);

-- Running cumulative per account (the sum of its allocations), so an epoch
-- does not re-add history.
CREATE TABLE claim_balances (
    account_id       INTEGER PRIMARY KEY REFERENCES accounts(id),
    cumulative_micro INTEGER NOT NULL CHECK (cumulative_micro >= 0),
    updated_epoch    INTEGER NOT NULL
);

-- The Ethereum address an account claims to. Set once (cumulative amounts
-- follow the address, so it cannot move); it enters the trees from
-- `since_epoch`, the epoch after the one open when it was set.
CREATE TABLE payout_addresses (
    account_id  INTEGER PRIMARY KEY REFERENCES accounts(id),
    address     TEXT NOT NULL UNIQUE,               -- 0x-hex, lower case
    since_epoch INTEGER NOT NULL,
    set_at_ms   INTEGER NOT NULL
);

-- Gift earnings a streamer moved out of the wallet to claim on chain; they
-- join the epoch that was open when requested.
CREATE TABLE withdrawals (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES accounts(id),
    epoch           INTEGER NOT NULL,
    amount_micro    INTEGER NOT NULL CHECK (amount_micro > 0),
    journal_id      INTEGER NOT NULL REFERENCES journal(id),
    requested_at_ms INTEGER NOT NULL
);
CREATE INDEX withdrawals_epoch ON withdrawals(epoch);
