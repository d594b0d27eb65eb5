-- Files refer to the content they hold, and content nobody refers to any more is
-- collected: marked when its last file goes (`orphaned_at`), moved to the garbage queue
-- once it has stayed unreferenced for the grace period, and its blob deleted from there.

-- A complete file's content row cannot go while the file is there: the database itself
-- refuses to forget content a file refers to, whatever races the collector loses.
CREATE INDEX files_by_content ON files (content_blake3) WHERE content_blake3 IS NOT NULL;
ALTER TABLE files ADD CONSTRAINT files_content_blake3_fkey
    FOREIGN KEY (content_blake3) REFERENCES content_blobs (blake3);
-- Files completed before BLAKE3 named content refer to it by MD5 and size.
CREATE INDEX files_by_md5_content ON files (md5, size)
    WHERE content_blake3 IS NULL AND state = 'complete';

-- When the last file referring to the content went (NULL while some file refers to it).
ALTER TABLE content_blobs ADD COLUMN orphaned_at TIMESTAMPTZ;
ALTER TABLE contents ADD COLUMN orphaned_at TIMESTAMPTZ;
CREATE INDEX content_blobs_orphaned ON content_blobs (orphaned_at) WHERE orphaned_at IS NOT NULL;
CREATE INDEX contents_orphaned ON contents (orphaned_at) WHERE orphaned_at IS NOT NULL;

-- Blobs to delete from the store: content collected, and the copies completions made of
-- content that was stored already. A row goes once its blob is deleted.
CREATE TABLE blob_garbage (
    locator   TEXT        PRIMARY KEY CHECK (locator <> ''),
    queued_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An owner's files, newest first, a page at a time.
CREATE INDEX files_by_owner_newest ON files (owner, created_at DESC, id DESC);
