-- Migration 9 dated the expiry of uploads open before it from their last state change,
-- which is their creation: a ledger upgraded while uploads older than a day were still
-- streaming would have expired them at once. They get a day from this upgrade instead.
UPDATE files SET expires_at = greatest(expires_at, now() + interval '1 day')
    WHERE state = 'uploading';
