//! `transferd` settings, from flags or environment variables, with sensible defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::layout::Limits;
use crate::ledger::LedgerLocation;

const MIB: u32 = 1 << 20;

/// transferd: large-file upload and download over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "transferd", version, about)]
pub struct Settings {
    /// Address to serve gRPC on.
    #[arg(long, env = "TRANSFERD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory for staged uploads and stored content.
    #[arg(long, env = "TRANSFERD_DATA_DIR", default_value = "transfer-data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub blobs: crate::store_config::BlobStoreSettings,

    /// The chunk ledger: `postgres://USER@HOST:PORT/DB` or `sqlite://PATH`. Without it, an
    /// embedded SQLite file in the data directory (`ledger.sqlite3`). Migrations are
    /// applied at start-up.
    #[arg(long, env = "TRANSFERD_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Most connections to the ledger database. On PostgreSQL a quarter (at least 2) serve
    /// requests and the rest the upload sessions' commits, so requests never queue behind
    /// chunk commits.
    #[arg(long, env = "TRANSFERD_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Largest file accepted, in bytes.
    #[arg(long, env = "TRANSFERD_MAX_FILE_SIZE", default_value_t = 1 << 40)]
    pub max_file_size: u64,

    /// Smallest chunk size a session may use, in bytes.
    #[arg(long, env = "TRANSFERD_MIN_CHUNK_SIZE", default_value_t = 64 * 1024)]
    pub min_chunk_size: u32,

    /// Largest chunk size a session may use, in bytes (at most 256 MiB). On an object
    /// store it also decides the largest file: 10,000 parts of it (a 1 TiB file needs
    /// 105 MiB).
    #[arg(long, env = "TRANSFERD_MAX_CHUNK_SIZE", default_value_t = 16 * MIB)]
    pub max_chunk_size: u32,

    /// Chunk size when the client states no preference, in bytes.
    #[arg(long, env = "TRANSFERD_DEFAULT_CHUNK_SIZE", default_value_t = 4 * MIB)]
    pub default_chunk_size: u32,

    /// Most unacknowledged bytes of chunks one upload stream may have in flight (always
    /// at least one chunk): the same bytes whatever the chunk size, so that large chunks
    /// do not multiply memory. Sessions say it in whole chunks too (`max_window`).
    #[arg(long, env = "TRANSFERD_MAX_WINDOW_BYTES", default_value_t = 64 * MIB as u64)]
    pub max_window_bytes: u64,

    /// Most unacknowledged chunks one upload stream may have in flight, beside
    /// --max-window-bytes (default: no bound but the bytes).
    #[arg(long, env = "TRANSFERD_MAX_WINDOW")]
    pub max_window: Option<u32>,

    /// Most upload sessions one owner may have open at once; CheckUpload refuses a new
    /// one beyond it (RESOURCE_EXHAUSTED).
    #[arg(
        long,
        env = "TRANSFERD_MAX_OPEN_UPLOADS_PER_OWNER",
        default_value_t = 64
    )]
    pub max_open_uploads_per_owner: u64,

    /// Most files one owner may have, in any state (instant copies, aborted and expired
    /// uploads included): a new session or instant copy beyond it is refused
    /// (RESOURCE_EXHAUSTED) until the owner deletes some.
    #[arg(
        long,
        env = "TRANSFERD_MAX_FILES_PER_OWNER",
        default_value_t = 1_000_000
    )]
    pub max_files_per_owner: u64,

    /// Most bytes one owner may hold: the sizes of its open uploads (promised space) and
    /// of the complete files it sent. CheckUpload refuses a session beyond it.
    #[arg(long, env = "TRANSFERD_OWNER_QUOTA_BYTES", default_value_t = 4 << 40)]
    pub owner_quota_bytes: u64,

    /// Whose stored content instant upload may answer from: `owner` (the caller's own
    /// files only) or `global` (any owner's, to a client that proves it holds the bytes:
    /// a challenge of random byte ranges and the file's BLAKE3, answered by the client
    /// library by itself). A caller without the bytes learns nothing either way; with
    /// `global`, a caller who can guess a whole file (a form letter with a short
    /// secret in it) can confirm a guess, so it is off by default.
    #[arg(long, env = "TRANSFERD_DEDUP_SCOPE", value_enum, default_value_t = DedupScope::Owner)]
    pub dedup_scope: DedupScope,

    /// Most bytes all upload streams together may hold in large messages being read
    /// (a chunk's buffer is taken whole before its bytes arrive) and in received chunks
    /// kept for the in-order hasher. A message waits for room (its stream is not read
    /// meanwhile) up to --stream-idle-secs, then its stream ends with
    /// RESOURCE_EXHAUSTED; kept chunks give way first and are read back from disk.
    #[arg(
        long,
        env = "TRANSFERD_UPLOAD_MEMORY_BYTES",
        alias = "parked-memory-bytes",
        default_value_t = 1 << 30
    )]
    pub upload_memory_bytes: usize,

    /// Most bytes of large messages being read for one owner, all its streams together,
    /// so that one owner's half-sent messages cannot take the whole server's memory.
    #[arg(
        long,
        env = "TRANSFERD_OWNER_UPLOAD_MEMORY_BYTES",
        default_value_t = 256 << 20
    )]
    pub owner_upload_memory_bytes: usize,

    /// Seconds an upload stream may take to send its first message (`start`).
    #[arg(long, env = "TRANSFERD_FIRST_MESSAGE_SECS", default_value_t = 10)]
    pub first_message_secs: u64,

    /// Seconds an upload stream may go without a chunk stored while the server waits
    /// for the client: an idle stream, a chunk sent too slowly (a 4 MiB chunk needs
    /// about 70 KB/s at the default) or only messages that store nothing; and seconds
    /// the server waits for a client that reads no acks. Either ends the stream with
    /// DEADLINE_EXCEEDED.
    #[arg(long, env = "TRANSFERD_STREAM_IDLE_SECS", default_value_t = 60)]
    pub stream_idle_secs: u64,

    /// Most client connections open at once; past it new ones wait to be accepted. With
    /// --http2-connection-window this bounds the memory received data may take.
    #[arg(long, env = "TRANSFERD_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,

    /// Seconds a client connection may stay open with no call on it. When every
    /// connection slot is taken and another client waits, the connection idle longest
    /// (at least 2 s) is closed at once instead.
    #[arg(long, env = "TRANSFERD_CONNECTION_IDLE_SECS", default_value_t = 120)]
    pub connection_idle_secs: u64,

    /// Most concurrent streams (calls) one HTTP/2 connection may have open.
    #[arg(
        long,
        env = "TRANSFERD_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 64
    )]
    pub max_streams_per_connection: u32,

    /// MiB an upload hashes between the hash checkpoints it saves to the ledger (one small
    /// write each, in the background): after a restart a session reads back at most this
    /// much of its staged bytes to rebuild its hash before it acks again.
    #[arg(long, env = "TRANSFERD_HASH_CHECKPOINT_MIB", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub hash_checkpoint_mib: u64,

    /// Seconds an open upload lives after its last activity (opened, resumed by
    /// CheckUpload, a stream attached, streaming into it); then the server's sweeper
    /// drops it with its staged bytes, and resuming it is NOT_FOUND.
    #[arg(long, env = "TRANSFERD_UPLOAD_EXPIRY_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_expiry_secs: u64,

    /// Seconds content stays stored after the last file holding it was deleted: a
    /// download that began before the delete may finish, and an upload of the same
    /// content meanwhile keeps it. Then the garbage collector deletes it.
    #[arg(long, env = "TRANSFERD_GC_GRACE_SECS", default_value_t = 3600)]
    pub gc_grace_secs: u64,

    /// Seconds between the sweeps of expired uploads and the garbage collector's passes.
    #[arg(long, env = "TRANSFERD_GC_INTERVAL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_interval_secs: u64,

    /// Seconds an upload session with no stream attached keeps its state in memory.
    #[arg(long, env = "TRANSFERD_SESSION_IDLE_SECS", default_value_t = 60)]
    pub session_idle_secs: u64,

    /// Seconds a replica's leases on uploads outlive its last heartbeat (renewed four
    /// times as often): how long other replicas wait before taking over the uploads of
    /// one that died. A replica that stops cleanly lets go at once.
    #[arg(long, env = "TRANSFERD_LEASE_SECS", default_value_t = 10)]
    pub lease_secs: u64,

    /// HTTP/2 flow-control window of one stream, in bytes: how much one upload may have
    /// in flight before the server's acknowledgement of bytes reaches the client. A
    /// stream moves at most this much per round trip (hyper's default, 64 KiB, allows
    /// about 1 MiB/s at 50 ms). 64 MiB, the client's default window of 16 × 4 MiB chunks:
    /// at 50 ms an upload moved more than with 32 MiB (BENCHMARKS.md, "Measurements
    /// behind choices in the code"), and at the defaults no more is held, since a
    /// client sends no further than its window.
    #[arg(long, env = "TRANSFERD_HTTP2_STREAM_WINDOW", default_value_t = 64 * MIB)]
    pub http2_stream_window: u32,

    /// HTTP/2 flow-control window of one connection (all its streams), in bytes.
    #[arg(long, env = "TRANSFERD_HTTP2_CONNECTION_WINDOW", default_value_t = 128 * MIB)]
    pub http2_connection_window: u32,

    /// Let HTTP/2 size its windows from the measured bandwidth-delay product instead of
    /// the fixed windows above.
    #[arg(long, env = "TRANSFERD_HTTP2_ADAPTIVE_WINDOW", default_value_t = false, action = clap::ArgAction::Set)]
    pub http2_adaptive_window: bool,

    /// Serve gRPC reflection (v1 and v1alpha), so tools like grpcurl can list and
    /// describe the API. `--reflection false` turns it off.
    #[arg(long, env = "TRANSFERD_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,

    /// PEM certificate chain to serve gRPC over TLS with (with --tls-key).
    #[arg(long, env = "TRANSFERD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "TRANSFERD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificates of the CA(s) that sign client certificates. Calls may then
    /// authenticate with a client certificate; the owner is the certificate's first URI
    /// subject alternative name, or without one its subject's common name. Without
    /// --api-keys a client certificate is required at the TLS handshake.
    #[arg(long, env = "TRANSFERD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Require an API key (`authorization: Bearer <key>`) on every call, checked against
    /// the keys in the ledger (`transferd keys create`). With --tls-client-ca as well, a
    /// client certificate is accepted instead of a key.
    #[arg(long, env = "TRANSFERD_API_KEYS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub api_keys: bool,

    /// Allow listening on an address other than loopback without TLS or without
    /// authentication. Without either, anyone who reaches the port can act as any owner.
    #[arg(long, env = "TRANSFERD_INSECURE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub insecure: bool,

    /// Seconds running calls get to finish after SIGTERM or SIGINT. Past them transferd
    /// stops anyway (acked chunks are durable; their clients resume) and exits non-zero.
    #[arg(long, env = "TRANSFERD_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Log format on stderr: `text` for people, `json` for log pipelines. Traces and
    /// metrics go over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    #[arg(long, env = "TRANSFERD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,

    /// Without a command, transferd serves gRPC.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage the API keys in this server's ledger (--database-url, or the embedded
    /// SQLite file in --data-dir). Works while transferd runs.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy every record of this server's ledger (or --from) into another ledger, e.g.
    /// from the embedded SQLite file to PostgreSQL. Stop transferd first; the blob files
    /// in the data directory stay where they are. Running it again is harmless.
    MigrateLedger {
        /// The ledger to copy from; default: this server's (--database-url, or the
        /// embedded SQLite file in --data-dir).
        #[arg(long)]
        from: Option<String>,
        /// The ledger to copy into: postgres://USER@HOST:PORT/DB or sqlite://PATH.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key and print its token, once: only a hash of it is kept.
    Create {
        /// The owner the key acts for.
        #[arg(long)]
        owner: String,
        /// Let the key also act for any owner whose name starts with this prefix, named
        /// per call in `x-transfer-owner` (a backend acting for its own users).
        #[arg(long)]
        act_for_prefix: Option<String>,
        /// Refuse the key after this long, e.g. `90d` or `12h`; default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List every key: id, owner, prefix, created, expiry and revocation.
    List,
    /// Revoke a key by id; servers refuse it within a few seconds.
    Revoke { id: String },
}

/// How calls are secured: TLS, and who may authenticate how.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Certificate chain and key, PEM.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA certificates for client certificates, PEM.
    pub client_ca: Option<PathBuf>,
    pub api_keys: bool,
}

impl Security {
    /// Whether calls must prove who they are.
    pub fn authenticates(&self) -> bool {
        self.api_keys || self.client_ca.is_some()
    }
}

/// Settings that contradict each other.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(String);

/// Whose stored content instant upload may answer from (`--dedup-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DedupScope {
    /// The caller's own files only.
    Owner,
    /// Any owner's, after the caller proves it holds the bytes.
    Global,
}

/// The largest chunk a server may be configured for: one chunk is one message held whole
/// in memory, and on an object store 10,000 of them make the largest file (2.4 TiB).
const MAX_CHUNK_SIZE: u32 = 256 * MIB;

impl Settings {
    /// The configured bounds, checked for consistency.
    pub fn limits(&self) -> Result<Limits, SettingsError> {
        if self.min_chunk_size == 0 {
            return Err(SettingsError("--min-chunk-size must be above 0".into()));
        }
        if self.max_chunk_size > MAX_CHUNK_SIZE {
            return Err(SettingsError(
                "--max-chunk-size may be at most 256 MiB (268435456 bytes)".into(),
            ));
        }
        if !(self.min_chunk_size <= self.default_chunk_size
            && self.default_chunk_size <= self.max_chunk_size)
        {
            return Err(SettingsError(
                "chunk sizes must satisfy --min-chunk-size <= --default-chunk-size <= --max-chunk-size"
                    .into(),
            ));
        }
        if self.max_file_size > i64::MAX as u64 {
            return Err(SettingsError(format!(
                "--max-file-size may be at most {} bytes",
                i64::MAX
            )));
        }
        // HTTP/2 windows are 31-bit; below 64 KiB (its default) is never what anyone wants.
        for (flag, window) in [
            ("--http2-stream-window", self.http2_stream_window),
            ("--http2-connection-window", self.http2_connection_window),
        ] {
            if !(65_535..=i32::MAX as u32).contains(&window) {
                return Err(SettingsError(format!(
                    "{flag} must be between 65535 and {} bytes",
                    i32::MAX
                )));
            }
        }
        if self.max_window == Some(0) {
            return Err(SettingsError("--max-window must be at least 1".into()));
        }
        if self.max_window_bytes == 0 {
            return Err(SettingsError(
                "--max-window-bytes must be at least 1 (a window is never less than one chunk)"
                    .into(),
            ));
        }
        for (flag, secs) in [
            ("--first-message-secs", self.first_message_secs),
            ("--stream-idle-secs", self.stream_idle_secs),
            ("--connection-idle-secs", self.connection_idle_secs),
        ] {
            if !(1..=86_400).contains(&secs) {
                return Err(SettingsError(format!(
                    "{flag} must be between 1 and 86400 seconds"
                )));
            }
        }
        // A message of the largest chunk must fit, or such uploads could never go on.
        let largest_message = self.max_chunk_size as usize + crate::server::MESSAGE_OVERHEAD;
        for (flag, bytes) in [
            ("--upload-memory-bytes", self.upload_memory_bytes),
            (
                "--owner-upload-memory-bytes",
                self.owner_upload_memory_bytes,
            ),
        ] {
            if bytes < largest_message {
                return Err(SettingsError(format!(
                    "{flag} must be at least one message of the largest chunk ({largest_message} bytes with --max-chunk-size {})",
                    self.max_chunk_size
                )));
            }
        }
        if self.max_connections == 0 {
            return Err(SettingsError("--max-connections must be at least 1".into()));
        }
        if self.max_streams_per_connection == 0 {
            return Err(SettingsError(
                "--max-streams-per-connection must be at least 1".into(),
            ));
        }
        Ok(Limits {
            max_file_size: self.max_file_size,
            min_chunk_size: self.min_chunk_size,
            max_chunk_size: self.max_chunk_size,
            default_chunk_size: self.default_chunk_size,
            max_window_bytes: self.max_window_bytes,
            max_window_chunks: self.max_window,
            max_open_uploads_per_owner: self.max_open_uploads_per_owner,
            max_files_per_owner: self.max_files_per_owner,
            owner_quota_bytes: self.owner_quota_bytes,
            upload_memory_bytes: self.upload_memory_bytes,
            owner_upload_memory_bytes: self.owner_upload_memory_bytes,
            first_message_timeout: Duration::from_secs(self.first_message_secs),
            stream_idle_timeout: Duration::from_secs(self.stream_idle_secs),
            hash_checkpoint_bytes: self.hash_checkpoint_mib << 20,
            upload_expiry: Duration::from_secs(self.upload_expiry_secs),
        })
    }

    /// How calls are secured. Refuses to expose a server without TLS or without
    /// authentication on a non-loopback address unless --insecure says so.
    pub fn security(&self) -> Result<Security, SettingsError> {
        let security = Security {
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            client_ca: self.tls_client_ca.clone(),
            api_keys: self.api_keys,
        };
        if security.client_ca.is_some() && security.tls.is_none() {
            return Err(SettingsError(
                "--tls-client-ca needs --tls-cert and --tls-key".into(),
            ));
        }
        let exposed = !self.listen.ip().is_loopback();
        if exposed && !self.insecure {
            let missing = match (security.tls.is_some(), security.authenticates()) {
                (true, true) => None,
                (false, true) => Some("TLS (--tls-cert, --tls-key)"),
                (true, false) => Some("authentication (--api-keys or --tls-client-ca)"),
                (false, false) => Some(
                    "TLS (--tls-cert, --tls-key) and authentication (--api-keys or --tls-client-ca)",
                ),
            };
            if let Some(missing) = missing {
                return Err(SettingsError(format!(
                    "refusing to listen on {} without {missing}: anyone who reaches it could act \
                     as any owner. Listen on a loopback address, configure them, or give \
                     --insecure if something in front of transferd provides them",
                    self.listen
                )));
            }
        }
        Ok(security)
    }

    /// Where the ledger lives.
    pub fn ledger_location(&self) -> Result<LedgerLocation, SettingsError> {
        LedgerLocation::from_url(self.database_url.as_deref(), &self.data_dir)
            .map_err(SettingsError)
    }

    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_secs.max(1))
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }

    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.gc_grace_secs)
    }

    pub fn gc_interval(&self) -> Duration {
        Duration::from_secs(self.gc_interval_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        Settings::parse_from(std::iter::once("transferd").chain(args.iter().copied()))
    }

    #[test]
    fn http2_windows_default_to_64_and_128_mib() {
        let s = settings(&[]);
        assert_eq!(s.http2_stream_window, 64 << 20);
        assert_eq!(s.http2_connection_window, 128 << 20);
        assert!(!s.http2_adaptive_window);
        assert!(s.limits().is_ok());
    }

    #[test]
    fn a_non_loopback_address_needs_tls_and_authentication_or_insecure() {
        assert!(settings(&["--listen", "127.0.0.1:1"]).security().is_ok());
        assert!(settings(&["--listen", "[::1]:1"]).security().is_ok());
        let open = settings(&["--listen", "0.0.0.0:1"]).security();
        assert!(
            open.is_err_and(
                |e| e.to_string().contains("TLS") && e.to_string().contains("--api-keys")
            )
        );
        let no_tls = settings(&["--listen", "0.0.0.0:1", "--api-keys"]).security();
        assert!(no_tls.is_err_and(|e| e.to_string().contains("without TLS")));
        let tls = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];
        let no_auth = settings(&[&["--listen", "0.0.0.0:1"][..], &tls].concat()).security();
        assert!(no_auth.is_err_and(|e| e.to_string().contains("without authentication")));
        let secured = settings(&[&["--listen", "0.0.0.0:1", "--api-keys"][..], &tls].concat());
        assert!(secured.security().is_ok_and(|s| s.authenticates()));
        let insecure = settings(&["--listen", "0.0.0.0:1", "--insecure"]);
        assert!(insecure.security().is_ok());
    }

    #[test]
    fn chunks_of_up_to_256_mib_may_be_allowed_for_an_object_stores_largest_files() {
        let most = (256u32 << 20).to_string();
        let memory = [
            "--upload-memory-bytes",
            "1073741824",
            "--owner-upload-memory-bytes",
            "1073741824",
        ];
        let ok = settings(&[&["--max-chunk-size", &most][..], &memory].concat()).limits();
        assert!(ok.is_ok_and(|l| l.max_chunk_size == 256 << 20));
        let over = ((256u32 << 20) + 1).to_string();
        let refused = settings(&[&["--max-chunk-size", &over][..], &memory].concat()).limits();
        assert!(refused.is_err_and(|e| e.to_string().contains("at most 256 MiB")));
    }

    #[test]
    fn the_window_is_64_mib_with_no_bound_on_the_count_unless_asked() {
        let limits = settings(&[]).limits().unwrap();
        assert_eq!(limits.max_window_bytes, 64 << 20);
        assert_eq!(limits.max_window_chunks, None);
        assert_eq!(limits.window_for(4 << 20).chunks, 16);
        assert!(settings(&["--max-window-bytes", "0"]).limits().is_err());
        assert!(settings(&["--max-window", "0"]).limits().is_err());
        let counted = settings(&["--max-window", "4"]).limits().unwrap();
        assert_eq!(counted.window_for(1 << 20).chunks, 4);
    }

    #[test]
    fn an_http2_window_below_the_protocol_default_or_above_31_bits_is_refused() {
        let small = settings(&["--http2-stream-window", "1000"]).limits();
        assert!(small.is_err_and(|e| e.to_string().contains("--http2-stream-window")));
        let large = settings(&["--http2-connection-window", "3000000000"]).limits();
        assert!(large.is_err_and(|e| e.to_string().contains("--http2-connection-window")));
    }
}
