-- Activity indicators per account and UTC day (rewards, issue #8). Counters
-- are added to by the flusher of the in-memory tally; peak_viewers keeps the
-- maximum. Gift amounts in micro-WE.
CREATE TABLE activity_days (
    account_id           INTEGER NOT NULL REFERENCES accounts(id),
    day                  INTEGER NOT NULL,           -- unix ms / 86,400,000
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
    PRIMARY KEY (account_id, day)
);
CREATE INDEX activity_days_day ON activity_days(day);
