-- What the blob store named, kept so that any process can go on where another stopped:
-- an open upload's handle (from `begin`), each committed chunk's receipt (from
-- `put_parts`; NULL when the store needs none), and where each content is stored (from
-- `complete`). Nothing derives a blob's name from a digest any more.
ALTER TABLE files ADD COLUMN blob_upload TEXT CHECK (blob_upload <> '');
ALTER TABLE chunks ADD COLUMN receipt TEXT;
ALTER TABLE content_blobs ADD COLUMN locator TEXT CHECK (locator <> '');
ALTER TABLE contents ADD COLUMN locator TEXT CHECK (locator <> '');

-- Before this migration the only store was the filesystem store, which named staging
-- and content by the upload id and the digests: those names, written down once. (An
-- open upload with no committed chunk is begun again when a stream attaches; the
-- filesystem store's `begin` keeps what is staged.)
UPDATE files SET blob_upload = 'staging/' || replace(id::text, '-', '')
    WHERE state = 'uploading' AND EXISTS (SELECT 1 FROM chunks WHERE file_id = files.id);
UPDATE content_blobs SET locator = 'content/' || encode(substring(blake3 FROM 1 FOR 1), 'hex')
    || '/b3-' || encode(blake3, 'hex') || '-' || size;
-- Content completed before BLAKE3 named it is found through the MD5 index, under the
-- name it was stored by. Index entries made since name content found by its BLAKE3
-- and get no locator.
INSERT INTO contents (md5, size, created_at)
    SELECT md5, size, min(coalesce(completed_at, updated_at)) FROM files
    WHERE state = 'complete' AND content_blake3 IS NULL GROUP BY md5, size
    ON CONFLICT DO NOTHING;
UPDATE contents SET locator = 'content/' || encode(substring(md5 FROM 1 FOR 1), 'hex')
    || '/' || encode(md5, 'hex') || '-' || size
    WHERE EXISTS (SELECT 1 FROM files WHERE files.state = 'complete'
                  AND files.content_blake3 IS NULL
                  AND files.md5 = contents.md5 AND files.size = contents.size);
