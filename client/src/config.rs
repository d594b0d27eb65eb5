//! Client settings.

use std::time::Duration;

/// How a transfer retries after a broken stream, a lost connection or a server restart.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// How long a transfer goes on retrying without progress before it fails: long
    /// enough to ride out a server restart or a database failover.
    pub retry_for: Duration,
    /// Attempts in a row that make no progress before the transfer fails, however soon
    /// (no limit by default: `retry_for` decides).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with each failed attempt in a row.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(300),
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based): exponential with full jitter,
    /// so many clients retrying at once spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        exponential.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// An API key (`tfk_…`); shown as `ApiKey(..)` in debug output so it stays out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey(key.to_owned())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// A client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub certificate_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity { .. }")
    }
}

/// Settings of a [`crate::TransferClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// Owner to act for (the `x-transfer-owner` metadata). With an API key: the key's
    /// own owner if `None`, and another only where the key may act for it. Without
    /// authentication: the server's default owner if `None`.
    pub owner: Option<String>,
    /// API key sent as `authorization: Bearer <token>` on every call, bulk ones
    /// included. Sent only over TLS or to a loopback address.
    pub token: Option<ApiKey>,
    /// PEM certificate(s) of the CA that signed an `https://` server's certificate;
    /// without it, the system's trusted roots.
    pub ca_certificate: Option<Vec<u8>>,
    /// This client's certificate and key (PEM), for servers that authenticate clients
    /// by certificate.
    pub client_identity: Option<ClientIdentity>,
    /// Most unacknowledged bytes of chunks in flight per upload, over all the
    /// connections it stripes over (at least one chunk). The server's
    /// `max_window_bytes` caps what one connection carries, so one connection alone has
    /// at most that. The same bytes whatever the chunk size: an object store's 5 MiB
    /// parts do not multiply it.
    pub window_bytes: u64,
    /// Most unacknowledged chunks in flight per upload, beside `window_bytes` (the
    /// server's `max_window` caps each connection's too).
    pub window: u32,
    /// Most bytes a striped download asks for past the first byte it has not yet
    /// written (what arrives out of order waits in memory until it can be written in
    /// order). At 250 ms, 128 MiB held four connections to about 1.6 times one
    /// connection's rate, as blocks came in bursts; 256 MiB, to twice. A download on
    /// one connection holds no more than its HTTP/2 window.
    pub download_window_bytes: u64,
    /// Most connections one file's transfer uses at once. A transfer starts with one
    /// and adds more only while they raise its rate, which on a long path (where one
    /// TCP connection moves at most its window per round trip) they do; on loopback or
    /// a short path it keeps one. 1 never stripes.
    pub connections_per_file: u32,
    /// Connections a file's transfer starts with (at most `connections_per_file`): more
    /// than one for a path known to be long, where finding out costs a few round trips.
    pub starting_connections: u32,
    /// Preferred chunk size in bytes; 0 lets the server choose.
    pub chunk_size: u32,
    /// A stream on which nothing is acknowledged for this long is treated as broken.
    pub stall_timeout: Duration,
    /// How often one chunk may be rejected (bad checksum) before the upload fails.
    pub max_chunk_resends: u32,
    pub retry: RetryPolicy,
    /// Hash the whole file before asking `CheckUpload` (two passes over a new file).
    /// Without it a new file is read once: the client asks with the MD5 of its first
    /// MiB and hashes while sending, and only hashes first when the server says this
    /// owner may already have the content. Set it to get instant uploads of content
    /// that other owners stored.
    pub hash_first: bool,
    /// HTTP/2 flow-control window of one stream, in bytes: a download moves at most this
    /// much per round trip.
    pub http2_stream_window: u32,
    /// HTTP/2 flow-control window of the connection (all its streams), in bytes.
    pub http2_connection_window: u32,
    /// Let HTTP/2 size its windows from the measured bandwidth-delay product instead.
    pub http2_adaptive_window: bool,
}

impl ClientConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            owner: None,
            token: None,
            ca_certificate: None,
            client_identity: None,
            // Two servers' windows (64 MiB each): enough for two connections at 250 ms
            // to go past what one connection's 32 MiB TCP window allows.
            window_bytes: 128 << 20,
            window: 1024,
            download_window_bytes: 256 << 20,
            connections_per_file: 4,
            starting_connections: 1,
            chunk_size: 0,
            stall_timeout: Duration::from_secs(30),
            max_chunk_resends: 3,
            retry: RetryPolicy::default(),
            hash_first: false,
            // hyper's defaults allow only 64 KiB per stream per round trip. Twice the
            // usual TCP window (32 MiB): HTTP/2 returns a window as it is used, not all
            // at once, and one of 32 MiB moved a download at 250 ms at two thirds of
            // what TCP allowed.
            http2_stream_window: 64 << 20,
            http2_connection_window: 128 << 20,
            http2_adaptive_window: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_a_transfer_retries_for_minutes_not_a_count() {
        let policy = RetryPolicy::default();
        assert!(policy.retry_for >= Duration::from_secs(60));
        assert_eq!(policy.max_attempts, u32::MAX);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            retry_for: Duration::from_secs(60),
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(policy.backoff(30) <= Duration::from_secs(1));
        }
    }
}
