-- What the blob store named, as in migrations/postgres: an open upload's handle, each
-- committed chunk's receipt (NULL when the store needs none), where each content is.
ALTER TABLE files ADD COLUMN blob_upload TEXT CHECK (blob_upload <> '');
ALTER TABLE chunks ADD COLUMN receipt TEXT;
ALTER TABLE content_blobs ADD COLUMN locator TEXT CHECK (locator <> '');
ALTER TABLE contents ADD COLUMN locator TEXT CHECK (locator <> '');

-- Before this migration the only store was the filesystem store, which named staging
-- and content by the upload id and the digests: those names, written down once. (An
-- open upload with no committed chunk is begun again when a stream attaches; the
-- filesystem store's `begin` keeps what is staged.)
UPDATE files SET blob_upload = 'staging/' || replace(id, '-', '')
    WHERE state = 'uploading' AND EXISTS (SELECT 1 FROM chunks WHERE file_id = files.id);
UPDATE content_blobs SET locator = 'content/' || lower(hex(substr(blake3, 1, 1)))
    || '/b3-' || lower(hex(blake3)) || '-' || size;
-- Content completed before BLAKE3 named it is found through the MD5 index, under the
-- name it was stored by. Index entries made since name content found by its BLAKE3
-- and get no locator.
INSERT OR IGNORE INTO contents (md5, size, created_at)
    SELECT md5, size, min(coalesce(completed_at, updated_at)) FROM files
    WHERE state = 'complete' AND content_blake3 IS NULL GROUP BY md5, size;
UPDATE contents SET locator = 'content/' || lower(hex(substr(md5, 1, 1)))
    || '/' || lower(hex(md5)) || '-' || size
    WHERE EXISTS (SELECT 1 FROM files WHERE files.state = 'complete'
                  AND files.content_blake3 IS NULL
                  AND files.md5 = contents.md5 AND files.size = contents.size);
