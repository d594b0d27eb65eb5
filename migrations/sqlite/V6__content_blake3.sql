-- Content is identified by the BLAKE3 the server computed over the stored bytes, as in
-- migrations/postgres: MD5 stays the client-visible checksum. NULL for files completed
-- before this migration, whose content is found by MD5 and size.
ALTER TABLE files ADD COLUMN content_blake3 BLOB CHECK (length(content_blake3) = 32);

CREATE TABLE content_blobs (
    blake3     BLOB    PRIMARY KEY CHECK (length(blake3) = 32),
    size       INTEGER NOT NULL CHECK (size >= 0),
    md5        BLOB    NOT NULL CHECK (length(md5) = 16),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
