-- Several replicas on one ledger (see the PostgreSQL migration): the replica writing an
-- open upload holds its lease, fenced by an epoch. One process uses an embedded ledger,
-- so here a lease only ever passes from a process to the one started after it; the
-- columns are the same so that the two ledgers keep one contract. Times are µs since
-- the epoch.
CREATE TABLE replicas (
    id          TEXT    PRIMARY KEY,
    alive_until INTEGER NOT NULL
);
ALTER TABLE files ADD COLUMN lease_holder TEXT;
ALTER TABLE files ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0 CHECK (lease_epoch >= 0);
-- A stopping replica frees the leases it holds.
CREATE INDEX files_by_lease_holder ON files (lease_holder) WHERE lease_holder IS NOT NULL;
-- The ledger's own identity, made with it (see the PostgreSQL migration).
CREATE TABLE ledger_identity (id TEXT PRIMARY KEY);
INSERT INTO ledger_identity (id) VALUES (lower(hex(randomblob(16))));
