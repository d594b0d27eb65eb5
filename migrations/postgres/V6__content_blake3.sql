-- Content is identified by the BLAKE3 the server computed over the stored bytes: MD5
-- stays the client-visible checksum, but two different contents may share an MD5.
-- A complete file names its content's BLAKE3 (NULL for files completed before this
-- migration, whose content is found by MD5 and size).
ALTER TABLE files ADD COLUMN content_blake3 BYTEA CHECK (octet_length(content_blake3) = 32);

-- Content on the blob store by BLAKE3, stored once however many files refer to it.
CREATE TABLE content_blobs (
    blake3     BYTEA       PRIMARY KEY CHECK (octet_length(blake3) = 32),
    size       BIGINT      NOT NULL CHECK (size >= 0),
    md5        BYTEA       NOT NULL CHECK (octet_length(md5) = 16),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
