-- Several replicas on one ledger: the replica writing an open upload holds its lease.
-- A replica is alive while its heartbeat is recent (`alive_until` in the future); a
-- lease is held while its holder is alive. Taking a lease raises its epoch, and every
-- write of the upload's session names the epoch it holds, so a holder that stalled and
-- lost the lease changes nothing when it wakes up.
CREATE TABLE replicas (
    id          TEXT        PRIMARY KEY,
    alive_until TIMESTAMPTZ NOT NULL
);
ALTER TABLE files ADD COLUMN lease_holder TEXT;
ALTER TABLE files ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0 CHECK (lease_epoch >= 0);
-- A stopping replica frees the leases it holds.
CREATE INDEX files_by_lease_holder ON files (lease_holder) WHERE lease_holder IS NOT NULL;
-- The ledger's own identity, made with it: replicas that share a ledger share it, and
-- an object store's prefix is claimed by one ledger's deployment only.
CREATE TABLE ledger_identity (id TEXT PRIMARY KEY);
INSERT INTO ledger_identity (id) VALUES (replace(gen_random_uuid()::text, '-', ''));
