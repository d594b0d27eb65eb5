-- The chunk ledger on SQLite (the embedded default). Same tables and rules as
-- migrations/postgres; ids are UUID text, times are microseconds since the Unix epoch.

-- Content that is complete on the blob store, found by the MD5 the server computed.
CREATE TABLE contents (
    md5        BLOB    NOT NULL CHECK (length(md5) = 16),
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (md5, size)
) WITHOUT ROWID;

-- A file an owner has, from the moment its upload session opens. The upload
-- session id is the file id.
CREATE TABLE files (
    id           TEXT    PRIMARY KEY,
    owner        TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    md5          BLOB    NOT NULL CHECK (length(md5) = 16),
    chunk_size   INTEGER NOT NULL CHECK (chunk_size >= 0),
    chunk_count  INTEGER NOT NULL CHECK (chunk_count >= 0),
    state        TEXT    NOT NULL CHECK (state IN ('uploading', 'complete', 'aborted', 'failed')),
    failure      TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    completed_at INTEGER
);

-- One open session per owner and content: asking again returns the same session.
CREATE UNIQUE INDEX files_one_open_session
    ON files (owner, md5, size) WHERE state = 'uploading';

-- One row per committed chunk. A row exists only once the chunk's bytes are durable.
CREATE TABLE chunks (
    file_id      TEXT    NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL CHECK (idx >= 0),
    size         INTEGER NOT NULL CHECK (size >= 0),
    crc32c       INTEGER NOT NULL,
    committed_at INTEGER NOT NULL,
    PRIMARY KEY (file_id, idx)
) WITHOUT ROWID;
