-- The chunk ledger: every upload session, every committed chunk, every stored content.

-- Content that is complete on the blob store, found by the MD5 the server computed.
-- Stored once however many owners have a file with it.
CREATE TABLE contents (
    md5        BYTEA       NOT NULL CHECK (octet_length(md5) = 16),
    size       BIGINT      NOT NULL CHECK (size >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (md5, size)
);

-- A file an owner has, from the moment its upload session opens. The upload
-- session id is the file id.
CREATE TABLE files (
    id           UUID        PRIMARY KEY,
    owner        TEXT        NOT NULL,
    name         TEXT        NOT NULL,
    size         BIGINT      NOT NULL CHECK (size >= 0),
    md5          BYTEA       NOT NULL CHECK (octet_length(md5) = 16),
    chunk_size   INTEGER     NOT NULL CHECK (chunk_size >= 0),
    chunk_count  BIGINT      NOT NULL CHECK (chunk_count >= 0),
    state        TEXT        NOT NULL CHECK (state IN ('uploading', 'complete', 'aborted', 'failed')),
    failure      TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ
);

-- One open session per owner and content: asking again returns the same session.
CREATE UNIQUE INDEX files_one_open_session
    ON files (owner, md5, size) WHERE state = 'uploading';

-- One row per committed chunk. A row exists only once the chunk's bytes are durable.
CREATE TABLE chunks (
    file_id      UUID        NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    idx          BIGINT      NOT NULL CHECK (idx >= 0),
    size         INTEGER     NOT NULL CHECK (size >= 0),
    crc32c       BIGINT      NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, idx)
);
