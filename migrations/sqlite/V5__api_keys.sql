-- API keys for bearer authentication, as in migrations/postgres. Only the SHA-256 of a
-- key's secret is kept; times are microseconds since the Unix epoch.
CREATE TABLE api_keys (
    id             TEXT    PRIMARY KEY,
    secret_sha256  BLOB    NOT NULL CHECK (length(secret_sha256) = 32),
    owner          TEXT    NOT NULL,
    act_for_prefix TEXT    CHECK (act_for_prefix <> ''),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER
) WITHOUT ROWID;
