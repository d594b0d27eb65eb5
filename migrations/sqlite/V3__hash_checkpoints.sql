-- Where hashing of an open upload got to: the MD5 state after its first
-- `hashed_chunks` chunks, so a restarted session resumes instead of re-reading them.
ALTER TABLE files ADD COLUMN hashed_chunks INTEGER NOT NULL DEFAULT 0 CHECK (hashed_chunks >= 0);
ALTER TABLE files ADD COLUMN md5_state BLOB;
