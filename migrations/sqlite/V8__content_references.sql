-- Files refer to the content they hold, and content nobody refers to any more is
-- collected: marked when its last file goes (`orphaned_at`), moved to the garbage queue
-- once it has stayed unreferenced for the grace period, and its blob deleted from there.

-- A complete file's content row cannot go while the file is there: the database itself
-- refuses to forget content a file refers to. SQLite adds a foreign key only by
-- rebuilding the table (the ledger migrates with foreign keys off, so nothing cascades).
CREATE TABLE files_v8 (
    id             TEXT    PRIMARY KEY,
    owner          TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0),
    md5            BLOB    CHECK (length(md5) = 16),
    chunk_size     INTEGER NOT NULL CHECK (chunk_size >= 0),
    chunk_count    INTEGER NOT NULL CHECK (chunk_count >= 0),
    state          TEXT    NOT NULL CHECK (state IN ('uploading', 'complete', 'aborted', 'failed')),
    failure        TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    completed_at   INTEGER,
    hashed_chunks  INTEGER NOT NULL DEFAULT 0 CHECK (hashed_chunks >= 0),
    md5_state      BLOB,
    head_md5       BLOB    CHECK (length(head_md5) = 16),
    content_blake3 BLOB    CHECK (length(content_blake3) = 32) REFERENCES content_blobs (blake3),
    blob_upload    TEXT    CHECK (blob_upload <> ''),
    CHECK (state <> 'complete' OR md5 IS NOT NULL)
);
INSERT INTO files_v8 (id, owner, name, size, md5, chunk_size, chunk_count, state, failure,
                      created_at, updated_at, completed_at, hashed_chunks, md5_state, head_md5,
                      content_blake3, blob_upload)
    SELECT id, owner, name, size, md5, chunk_size, chunk_count, state, failure,
           created_at, updated_at, completed_at, hashed_chunks, md5_state, head_md5,
           content_blake3, blob_upload
    FROM files;
DROP TABLE files;
ALTER TABLE files_v8 RENAME TO files;

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

-- When the last file referring to the content went (NULL while some file refers to it).
ALTER TABLE content_blobs ADD COLUMN orphaned_at INTEGER;
ALTER TABLE contents ADD COLUMN orphaned_at INTEGER;
CREATE INDEX content_blobs_orphaned ON content_blobs (orphaned_at) WHERE orphaned_at IS NOT NULL;
CREATE INDEX contents_orphaned ON contents (orphaned_at) WHERE orphaned_at IS NOT NULL;

-- Blobs to delete from the store: content collected, and the copies completions made of
-- content that was stored already. A row goes once its blob is deleted.
CREATE TABLE blob_garbage (
    locator   TEXT    PRIMARY KEY CHECK (locator <> ''),
    queued_at INTEGER NOT NULL
) WITHOUT ROWID;
