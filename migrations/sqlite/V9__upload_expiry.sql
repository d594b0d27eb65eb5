-- Open uploads expire: each has the time it expires (µs since the epoch) unless
-- something happens to it (a stream attaching, CheckUpload resuming it, a client
-- streaming into it), and the server's sweeper closes those past it in the new state
-- 'expired' (its chunks and staged bytes dropped, as an abort does). A new state is a
-- new CHECK, which SQLite changes only by rebuilding the table (foreign keys are off
-- while the ledger migrates). Uploads open before this migration get the default, a day
-- after they last changed.
CREATE TABLE files_v9 (
    id             TEXT    PRIMARY KEY,
    owner          TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0),
    md5            BLOB    CHECK (length(md5) = 16),
    chunk_size     INTEGER NOT NULL CHECK (chunk_size >= 0),
    chunk_count    INTEGER NOT NULL CHECK (chunk_count >= 0),
    state          TEXT    NOT NULL
                   CHECK (state IN ('uploading', 'complete', 'aborted', 'failed', 'expired')),
    failure        TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    completed_at   INTEGER,
    hashed_chunks  INTEGER NOT NULL DEFAULT 0 CHECK (hashed_chunks >= 0),
    md5_state      BLOB,
    head_md5       BLOB    CHECK (length(head_md5) = 16),
    content_blake3 BLOB    CHECK (length(content_blake3) = 32) REFERENCES content_blobs (blake3),
    blob_upload    TEXT    CHECK (blob_upload <> ''),
    expires_at     INTEGER,
    CHECK (state <> 'complete' OR md5 IS NOT NULL)
);
INSERT INTO files_v9 (id, owner, name, size, md5, chunk_size, chunk_count, state, failure,
                      created_at, updated_at, completed_at, hashed_chunks, md5_state, head_md5,
                      content_blake3, blob_upload, expires_at)
    SELECT id, owner, name, size, md5, chunk_size, chunk_count, state, failure,
           created_at, updated_at, completed_at, hashed_chunks, md5_state, head_md5,
           content_blake3, blob_upload,
           CASE WHEN state = 'uploading' THEN updated_at + 86400000000 END
    FROM files;
DROP TABLE files;
ALTER TABLE files_v9 RENAME TO files;

CREATE UNIQUE INDEX files_one_open_session
    ON files (owner, md5, size) WHERE state = 'uploading';
CREATE INDEX files_complete_by_content
    ON files (owner, md5, size) WHERE state = 'complete';
CREATE INDEX files_by_head
    ON files (owner, size, head_md5)
    WHERE head_md5 IS NOT NULL AND state IN ('uploading', 'complete');
CREATE INDEX files_by_content ON files (content_blake3) WHERE content_blake3 IS NOT NULL;
-- Files completed before BLAKE3 named content refer to it by MD5 and size.
CREATE INDEX files_by_md5_content ON files (md5, size)
    WHERE content_blake3 IS NULL AND state = 'complete';
-- An owner's files, newest first, a page at a time.
CREATE INDEX files_by_owner_newest ON files (owner, created_at DESC, id DESC);

CREATE INDEX files_open_by_expiry ON files (expires_at) WHERE state = 'uploading';
