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

    /// The chunk ledger: `postgres://USER@HOST:PORT/DB` or `sqlite://PATH`. Without it, an
    /// embedded SQLite file in the data directory (`ledger.sqlite3`). Migrations are
    /// applied at start-up.
    #[arg(long, env = "TRANSFERD_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Most connections to the ledger database.
    #[arg(long, env = "TRANSFERD_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Largest file accepted, in bytes.
    #[arg(long, env = "TRANSFERD_MAX_FILE_SIZE", default_value_t = 1 << 40)]
    pub max_file_size: u64,

    /// Smallest chunk size a session may use, in bytes.
    #[arg(long, env = "TRANSFERD_MIN_CHUNK_SIZE", default_value_t = 64 * 1024)]
    pub min_chunk_size: u32,

    /// Largest chunk size a session may use, in bytes (at most 64 MiB).
    #[arg(long, env = "TRANSFERD_MAX_CHUNK_SIZE", default_value_t = 16 * MIB)]
    pub max_chunk_size: u32,

    /// Chunk size when the client states no preference, in bytes.
    #[arg(long, env = "TRANSFERD_DEFAULT_CHUNK_SIZE", default_value_t = 4 * MIB)]
    pub default_chunk_size: u32,

    /// Most unacknowledged chunks one upload stream may have in flight.
    #[arg(long, env = "TRANSFERD_MAX_WINDOW", default_value_t = 16)]
    pub max_window: u32,

    /// Seconds an upload session with no stream attached keeps its state in memory.
    #[arg(long, env = "TRANSFERD_SESSION_IDLE_SECS", default_value_t = 60)]
    pub session_idle_secs: u64,

    /// Serve gRPC reflection (v1 and v1alpha), so tools like grpcurl can list and
    /// describe the API. `--reflection false` turns it off.
    #[arg(long, env = "TRANSFERD_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,

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

/// Settings that contradict each other.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// The configured bounds, checked for consistency.
    pub fn limits(&self) -> Result<Limits, SettingsError> {
        if self.min_chunk_size == 0 {
            return Err(SettingsError("--min-chunk-size must be above 0".into()));
        }
        if self.max_chunk_size > 64 * MIB {
            return Err(SettingsError(
                "--max-chunk-size may be at most 64 MiB".into(),
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
        if self.max_window == 0 {
            return Err(SettingsError("--max-window must be at least 1".into()));
        }
        Ok(Limits {
            max_file_size: self.max_file_size,
            min_chunk_size: self.min_chunk_size,
            max_chunk_size: self.max_chunk_size,
            default_chunk_size: self.default_chunk_size,
            max_window: self.max_window,
        })
    }

    /// Where the ledger lives.
    pub fn ledger_location(&self) -> Result<LedgerLocation, SettingsError> {
        LedgerLocation::from_url(self.database_url.as_deref(), &self.data_dir)
            .map_err(SettingsError)
    }

    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_secs.max(1))
    }
}
