-- Edge registry (issue: edges over QUIC). Registrations survive a restart of
-- the control plane; health does not: an edge is healthy only while its
-- heartbeats arrive, which the control plane keeps in memory.
CREATE TABLE edges (
    id TEXT PRIMARY KEY,
    -- The JSON body of the edge's last registration (urls, location, capacity).
    registration TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL
);
