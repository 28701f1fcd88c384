-- 0003: rooms (one per channel), chat moderation, gifts as decaying votes,
-- share links and tickets (issue #7).
--
-- Money moves only through the journal (0001); these tables record what a
-- payment was for and the vote bookkeeping, written in the same transaction.

-- Room settings a streamer changed; a channel without a row has the defaults.
CREATE TABLE room_settings (
    channel_id          INTEGER PRIMARY KEY REFERENCES channels(id),
    title               TEXT NOT NULL DEFAULT '',
    slow_mode_ms        INTEGER NOT NULL DEFAULT 0 CHECK (slow_mode_ms >= 0),
    sharer_bps          INTEGER NOT NULL DEFAULT 0 CHECK (sharer_bps BETWEEN 0 AND 10000),
    ticket_price_micro  INTEGER NOT NULL DEFAULT 0 CHECK (ticket_price_micro >= 0),
    updated_at_ms       INTEGER NOT NULL
);

-- Mutes and bans set by the streamer. `muted_until_ms` 0: not muted.
CREATE TABLE room_moderation (
    channel_id     INTEGER NOT NULL REFERENCES channels(id),
    account_id     INTEGER NOT NULL REFERENCES accounts(id),
    banned         INTEGER NOT NULL DEFAULT 0,
    muted_until_ms INTEGER NOT NULL DEFAULT 0,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, account_id)
);

-- A room's decayed vote score kept in log space at a fixed reference time
-- (unix epoch): log2_score = log2(sum_i w_i * 2^(t_i / half_life)). Every
-- score decays by the same factor, so ordering by this column is the
-- ranking at any instant; score(now) = 2^(log2_score - now / half_life).
CREATE TABLE room_scores (
    channel_id    INTEGER PRIMARY KEY REFERENCES channels(id),
    log2_score    REAL NOT NULL,
    votes         INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX room_scores_rank ON room_scores(log2_score DESC);

-- What one sender gave one streamer (account) on one UTC day, for the
-- concave vote weight (the formula is in src/votes.rs).
CREATE TABLE vote_day_totals (
    sender_account_id INTEGER NOT NULL REFERENCES accounts(id),
    owner_account_id  INTEGER NOT NULL REFERENCES accounts(id),
    day               INTEGER NOT NULL,
    total_micro       INTEGER NOT NULL,
    PRIMARY KEY (sender_account_id, owner_account_id, day)
);

-- Actions that make an account "active" for voting: chat messages, share
-- links, tickets. Gifts alone do not count.
CREATE TABLE account_activity (
    account_id    INTEGER PRIMARY KEY REFERENCES accounts(id),
    events        INTEGER NOT NULL,
    first_at_ms   INTEGER NOT NULL,
    last_at_ms    INTEGER NOT NULL
);

CREATE TABLE shares (
    id            INTEGER PRIMARY KEY,
    code          TEXT NOT NULL UNIQUE,
    channel_id    INTEGER NOT NULL REFERENCES channels(id),
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    plays         INTEGER NOT NULL DEFAULT 0,
    gifts         INTEGER NOT NULL DEFAULT 0,
    earned_micro  INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (channel_id, account_id)
);

CREATE TABLE gifts (
    id                 INTEGER PRIMARY KEY,
    channel_id         INTEGER NOT NULL REFERENCES channels(id),
    sender_account_id  INTEGER NOT NULL REFERENCES accounts(id),
    gift_id            TEXT NOT NULL,
    count              INTEGER NOT NULL CHECK (count > 0),
    paid_micro         INTEGER NOT NULL CHECK (paid_micro > 0),
    fee_micro          INTEGER NOT NULL,
    sharer_micro       INTEGER NOT NULL,
    streamer_micro     INTEGER NOT NULL,
    share_id           INTEGER REFERENCES shares(id),
    vote_weight        REAL NOT NULL,
    journal_id         INTEGER NOT NULL REFERENCES journal(id),
    created_at_ms      INTEGER NOT NULL
);
CREATE INDEX gifts_channel ON gifts(channel_id, id);

CREATE TABLE tickets (
    id            INTEGER PRIMARY KEY,
    channel_id    INTEGER NOT NULL REFERENCES channels(id),
    account_id    INTEGER NOT NULL REFERENCES accounts(id),
    paid_micro    INTEGER NOT NULL,
    journal_id    INTEGER REFERENCES journal(id),
    expires_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX tickets_holder ON tickets(channel_id, account_id, expires_at_ms);
