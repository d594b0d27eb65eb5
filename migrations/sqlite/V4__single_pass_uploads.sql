-- Single-pass uploads: a session may open before the whole-file MD5 is known (the
-- client declares it at the end of its stream; it is recorded when the file completes),
-- and files keep the MD5 of their head (first MiB), which an owner's single-pass probe
-- matches against the owner's own files.
--
-- SQLite cannot drop a NOT NULL in place: the table is rebuilt. The ledger runs its
-- migrations with foreign keys off, so dropping the old table leaves `chunks` alone.
CREATE TABLE files_v4 (
    id            TEXT    PRIMARY KEY,
    owner         TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    md5           BLOB    CHECK (length(md5) = 16),
    chunk_size    INTEGER NOT NULL CHECK (chunk_size >= 0),
    chunk_count   INTEGER NOT NULL CHECK (chunk_count >= 0),
    state         TEXT    NOT NULL CHECK (state IN ('uploading', 'complete', 'aborted', 'failed')),
    failure       TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    hashed_chunks INTEGER NOT NULL DEFAULT 0 CHECK (hashed_chunks >= 0),
    md5_state     BLOB,
    head_md5      BLOB    CHECK (length(head_md5) = 16),
    CHECK (state <> 'complete' OR md5 IS NOT NULL)
);
INSERT INTO files_v4 (id, owner, name, size, md5, chunk_size, chunk_count, state, failure,
                      created_at, updated_at, completed_at, hashed_chunks, md5_state)
    SELECT id, owner, name, size, md5, chunk_size, chunk_count, state, failure,
           created_at, updated_at, completed_at, hashed_chunks, md5_state
    FROM files;
DROP TABLE files;
ALTER TABLE files_v4 RENAME TO files;

CREATE UNIQUE INDEX files_one_open_session
    ON files (owner, md5, size) WHERE state = 'uploading';
CREATE INDEX files_complete_by_content
    ON files (owner, md5, size) WHERE state = 'complete';
CREATE INDEX files_by_head
    ON files (owner, size, head_md5)
    WHERE head_md5 IS NOT NULL AND state IN ('uploading', 'complete');
