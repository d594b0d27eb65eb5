-- How many files each owner has (rows in any state), kept by triggers, so that the cap
-- on them is checked with one lookup instead of a count over the owner's files.
-- (A later migration that rebuilds `files` drops these triggers with it: make them
-- again there.)
CREATE TABLE owner_files (
    owner TEXT    PRIMARY KEY,
    files INTEGER NOT NULL CHECK (files >= 0)
) WITHOUT ROWID;
INSERT INTO owner_files (owner, files) SELECT owner, count(*) FROM files GROUP BY owner;

CREATE TRIGGER files_counted_in AFTER INSERT ON files BEGIN
    INSERT INTO owner_files (owner, files) VALUES (NEW.owner, 1)
        ON CONFLICT (owner) DO UPDATE SET files = files + 1;
END;
CREATE TRIGGER files_counted_out AFTER DELETE ON files BEGIN
    UPDATE owner_files SET files = files - 1 WHERE owner = OLD.owner;
END;
