-- Open uploads expire: each has the time it expires unless something happens to it (a
-- stream attaching, CheckUpload resuming it, a client streaming into it), and the
-- server's sweeper closes those past it in the new state 'expired' (its chunks and
-- staged bytes dropped, as an abort does).
ALTER TABLE files ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE files DROP CONSTRAINT files_state_check;
ALTER TABLE files ADD CONSTRAINT files_state_check
    CHECK (state IN ('uploading', 'complete', 'aborted', 'failed', 'expired'));
-- Uploads open before this migration get the default, a day after they last changed.
UPDATE files SET expires_at = updated_at + interval '1 day' WHERE state = 'uploading';
CREATE INDEX files_open_by_expiry ON files (expires_at) WHERE state = 'uploading';
