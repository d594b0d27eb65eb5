-- Migration 9 dated the expiry of uploads open before it from their last state change,
-- which is their creation: a ledger upgraded while uploads older than a day were still
-- streaming would have expired them at once. They get a day from this upgrade instead
-- (times in µs since the epoch).
UPDATE files
    SET expires_at = max(coalesce(expires_at, 0),
                         CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) + 86400000000)
    WHERE state = 'uploading';
