-- WE deposited on chain (issue #8 item 6). Each account has one keyless
-- deposit address; a WE Transfer to it, once buried under the configured
-- confirmations, credits the account's wallet exactly once: the
-- (tx_hash, log_index) of the event is UNIQUE.
CREATE TABLE deposit_addresses (
    address       TEXT PRIMARY KEY,                 -- 0x-hex, lower case
    account_id    INTEGER NOT NULL UNIQUE REFERENCES accounts(id),
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE deposits (
    id             INTEGER PRIMARY KEY,
    tx_hash        TEXT NOT NULL,
    log_index      INTEGER NOT NULL,
    block_number   INTEGER NOT NULL,
    account_id     INTEGER NOT NULL REFERENCES accounts(id),
    from_address   TEXT NOT NULL,
    amount_wei     TEXT NOT NULL,                  -- decimal
    amount_micro   INTEGER NOT NULL,               -- floor(amount_wei / 10^12)
    journal_id     INTEGER REFERENCES journal(id), -- NULL for dust under 1 micro-WE
    credited_at_ms INTEGER NOT NULL,
    UNIQUE (tx_hash, log_index)
);

-- How far the deposit watcher has read the chain.
CREATE TABLE chain_cursors (
    name  TEXT PRIMARY KEY,
    block INTEGER NOT NULL
);
