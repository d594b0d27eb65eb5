-- How many files each owner has (rows in any state), kept by a trigger, so that the cap
-- on them is checked with one lookup instead of a count over the owner's files.
CREATE TABLE owner_files (
    owner TEXT   PRIMARY KEY,
    files BIGINT NOT NULL CHECK (files >= 0)
);
INSERT INTO owner_files (owner, files) SELECT owner, count(*) FROM files GROUP BY owner;

CREATE FUNCTION count_owner_files() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO owner_files (owner, files) VALUES (NEW.owner, 1)
            ON CONFLICT (owner) DO UPDATE SET files = owner_files.files + 1;
        RETURN NEW;
    END IF;
    UPDATE owner_files SET files = files - 1 WHERE owner = OLD.owner;
    RETURN OLD;
END
$$;
CREATE TRIGGER files_counted AFTER INSERT OR DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION count_owner_files();
