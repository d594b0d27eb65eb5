-- Instant upload looks for an owner's complete file with the same content.
CREATE INDEX files_complete_by_content
    ON files (owner, md5, size) WHERE state = 'complete';
