-- Single-pass uploads: a session may open before the whole-file MD5 is known (the
-- client declares it at the end of its stream; it is recorded when the file completes),
-- and files keep the MD5 of their head (first MiB), which an owner's single-pass probe
-- matches against the owner's own files.
ALTER TABLE files ALTER COLUMN md5 DROP NOT NULL;
ALTER TABLE files ADD CONSTRAINT files_complete_have_md5
    CHECK (state <> 'complete' OR md5 IS NOT NULL);
ALTER TABLE files ADD COLUMN head_md5 BYTEA CHECK (octet_length(head_md5) = 16);
CREATE INDEX files_by_head
    ON files (owner, size, head_md5)
    WHERE head_md5 IS NOT NULL AND state IN ('uploading', 'complete');
