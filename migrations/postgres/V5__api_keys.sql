-- API keys for bearer authentication. Only the SHA-256 of a key's secret is kept; the
-- token itself is shown once, when the key is made (`transferd keys create`).
CREATE TABLE api_keys (
    id             TEXT        PRIMARY KEY,
    secret_sha256  BYTEA       NOT NULL CHECK (octet_length(secret_sha256) = 32),
    owner          TEXT        NOT NULL,
    -- A key may also act for owners whose names start with this prefix.
    act_for_prefix TEXT        CHECK (act_for_prefix <> ''),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ,
    revoked_at     TIMESTAMPTZ
);
