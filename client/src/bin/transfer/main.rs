//! `transfer`: upload and download files with a Transfer server, with progress bars.
//!
//! Exit codes: 0 success, 1 a transfer failed, 2 usage error, 130 interrupted (Ctrl-C
//! pauses cleanly; running the same command again resumes).

#![forbid(unsafe_code)]

mod bars;
mod printable;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use transfer_client::proto::FileState;
use transfer_client::{
    ApiKey, ClientConfig, ClientIdentity, FileFilter, TransferClient, TransferError,
    TransferHandle, TransferManager, TransferState,
};

use crate::bars::Bars;
use crate::report::Report;

/// Upload and download large files with a Transfer server.
#[derive(Debug, Parser)]
#[command(name = "transfer", version, about)]
struct Cli {
    /// The server's address.
    #[arg(
        long,
        env = "TRANSFER_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,

    /// Act for this owner (sent as `x-transfer-owner`). With an API key, its own owner
    /// by default.
    #[arg(long, env = "TRANSFER_OWNER", global = true)]
    owner: Option<String>,

    /// API key (`tfk_…`), sent as `authorization: Bearer` on every call. Sent only over
    /// https:// or to a loopback address.
    #[arg(long, env = "TRANSFER_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,

    /// PEM certificate of the CA that signed the server's certificate (https:// only);
    /// default: the system's trusted roots.
    #[arg(long, env = "TRANSFER_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,

    /// PEM client certificate, for servers that authenticate clients by certificate.
    #[arg(
        long,
        env = "TRANSFER_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "TRANSFER_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,

    /// Seconds a transfer goes on retrying without progress (a server restart, a
    /// database failover) before it fails.
    #[arg(long, env = "TRANSFER_RETRY_FOR", default_value_t = 300, global = true)]
    retry_for: u64,

    /// Most connections one file's transfer uses at once. It starts with
    /// --starting-connections and adds more only while they raise its rate (on long
    /// paths, where one connection moves at most its TCP window per round trip).
    #[arg(long, env = "TRANSFER_CONNECTIONS", default_value_t = 4, global = true,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,

    /// Connections each file's transfer starts with (at most --connections).
    #[arg(long, default_value_t = 1, global = true,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    starting_connections: u32,

    /// Print results as JSON, one object per line, on standard output.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload files; content the server already has is not sent again.
    Upload {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Preferred chunk size in bytes (the server clamps it); default: the server's.
        #[arg(long, default_value_t = 0)]
        chunk_size: u32,
        /// Most unacknowledged bytes in flight per file, over all its connections (the
        /// server may allow fewer on one connection).
        #[arg(long, default_value_t = 128 << 20)]
        window_bytes: u64,
        /// Most unacknowledged chunks in flight per file, beside --window-bytes.
        #[arg(long)]
        window: Option<u32>,
        /// Files uploaded at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Hash each file before sending it (two reads of a new file), so content that
        /// another owner stored is an instant upload too. Without it a new file is read
        /// once, and only content this owner has is instant.
        #[arg(long)]
        hash_first: bool,
    },
    /// Download a file by id, resuming from PATH.part if an earlier run left one.
    Download {
        file_id: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Show a file's metadata.
    Stat { file_id: String },
    /// Abort the server's open upload session for a local file.
    Abort { file: PathBuf },
    /// List your files on the server, newest first.
    Ls {
        /// Only files in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only files whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// List at most this many files (default: every one).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete files on the server by id; an upload in progress is aborted.
    Rm {
        #[arg(required = true)]
        file_ids: Vec<String>,
    },
}

/// A file state, as `transfer ls --state` takes it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StateArg {
    Uploading,
    Complete,
    Aborted,
    Failed,
    Expired,
}

impl From<StateArg> for FileState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Uploading => FileState::Uploading,
            StateArg::Complete => FileState::Complete,
            StateArg::Aborted => FileState::Aborted,
            StateArg::Failed => FileState::Failed,
            StateArg::Expired => FileState::Expired,
        }
    }
}

/// Reads the PEM files the flags name into `config`.
fn read_certificates(cli: &Cli, config: &mut ClientConfig) -> Result<(), TransferError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TransferError::Read {
            file: path.display().to_string(),
            source,
        })
    };
    config.ca_certificate = cli.ca_cert.as_ref().map(read).transpose()?;
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        config.client_identity = Some(ClientIdentity {
            certificate_pem: read(cert)?,
            key_pem: read(key)?,
        });
    }
    Ok(())
}

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = Report::new(cli.json);
    let mut config = ClientConfig::new(cli.server.clone());
    config.owner = cli.owner.clone();
    config.token = cli.token.clone().map(ApiKey::from);
    config.retry.retry_for = std::time::Duration::from_secs(cli.retry_for);
    if let Err(error) = read_certificates(&cli, &mut config) {
        report.error(&error);
        return ExitCode::from(EXIT_USAGE);
    }
    config.connections_per_file = cli.connections;
    config.starting_connections = cli.starting_connections.min(cli.connections);
    if let Command::Upload {
        chunk_size,
        window_bytes,
        window,
        hash_first,
        ..
    } = &cli.command
    {
        config.chunk_size = *chunk_size;
        config.window_bytes = *window_bytes;
        if let Some(window) = window {
            config.window = *window;
        }
        config.hash_first = *hash_first;
    }
    let client = match TransferClient::new(config) {
        Ok(client) => client,
        Err(error) => {
            report.error(&error);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Upload {
            files, concurrency, ..
        } => {
            let manager = TransferManager::new(client, concurrency);
            let handles: Vec<_> = files.iter().map(|f| manager.upload_path(f)).collect();
            run(handles, &report, |report, path, uploaded| {
                report.uploaded(path, uploaded)
            })
            .await
        }
        Command::Download { file_id, output } => {
            let handles = vec![client.download(file_id, output)];
            run(handles, &report, |report, _, downloaded| {
                report.downloaded(downloaded)
            })
            .await
        }
        Command::Stat { file_id } => match client.stat(&file_id).await {
            Ok(file) => {
                report.file(&file);
                ExitCode::SUCCESS
            }
            Err(error) => {
                report.error(&error);
                ExitCode::from(EXIT_FAILED)
            }
        },
        Command::Abort { file } => match client.abort_path(&file).await {
            Ok(outcome) => {
                report.aborted(&file, &outcome);
                ExitCode::SUCCESS
            }
            Err(error) => {
                report.error(&error);
                ExitCode::from(EXIT_FAILED)
            }
        },
        Command::Ls {
            state,
            prefix,
            limit,
        } => {
            let filter = FileFilter {
                state: state.map(FileState::from),
                name_prefix: prefix,
            };
            match list(&client, &filter, limit, &report).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    report.error(&error);
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Command::Rm { file_ids } => {
            let mut failed = false;
            for id in &file_ids {
                match client.delete(id).await {
                    Ok(()) => report.deleted(id),
                    Err(error) => {
                        failed = true;
                        report.failed(id, &error);
                    }
                }
            }
            if failed {
                ExitCode::from(EXIT_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Prints the owner's files that match `filter`, page by page as they arrive.
async fn list(
    client: &TransferClient,
    filter: &FileFilter,
    limit: Option<usize>,
    report: &Report,
) -> Result<(), TransferError> {
    let mut left = limit.unwrap_or(usize::MAX);
    let mut token = String::new();
    while left > 0 {
        let page_size = u32::try_from(left).unwrap_or(u32::MAX).min(1000);
        let page = client.list_page(filter, page_size, &token).await?;
        for file in page.files.iter().take(left) {
            report.listed(file);
        }
        left = left.saturating_sub(page.files.len());
        match page.next {
            Some(next) => token = next,
            None => break,
        }
    }
    Ok(())
}

/// Shows progress and reports each transfer as it ends. On Ctrl-C, pauses the rest:
/// in-flight chunks are acknowledged first (up to 10 s, or until a second Ctrl-C).
async fn run<T: Send + 'static>(
    handles: Vec<TransferHandle<T>>,
    report: &Report,
    done: impl Fn(&Report, &str, &T),
) -> ExitCode {
    let bars = Bars::new();
    let names: Vec<String> = handles.iter().map(|h| h.progress().name).collect();
    let controls: Vec<_> = handles.iter().map(|h| h.control()).collect();
    let progress: Vec<_> = handles.iter().map(|h| h.watch()).collect();
    for watch in &progress {
        bars.follow(watch.clone());
    }
    let mut pending: FuturesUnordered<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, handle)| async move { (i, handle.wait().await) })
        .collect();
    let mut failed = false;
    let mut tell = |i: usize, outcome: Result<T, TransferError>| {
        bars.suspend(|| match outcome {
            Ok(value) => done(report, &names[i], &value),
            Err(error) => {
                failed = true;
                report.failed(&names[i], &error);
            }
        });
    };

    let interrupted = tokio::select! {
        _ = async {
            while let Some((i, outcome)) = pending.next().await {
                tell(i, outcome);
            }
        } => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        for control in &controls {
            control.pause();
        }
        let settled = || {
            progress.iter().all(|p| {
                let state = &p.borrow().state;
                state.is_finished()
                    || matches!(
                        state,
                        TransferState::Paused | TransferState::Hashing | TransferState::Queued
                    )
            })
        };
        let give_up = tokio::time::sleep(Duration::from_secs(10));
        let again = tokio::signal::ctrl_c();
        tokio::pin!(give_up, again);
        while !settled() {
            tokio::select! {
                Some((i, outcome)) = pending.next() => tell(i, outcome),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut give_up => break,
                _ = &mut again => break,
            }
        }
        // Transfers that finished while pausing are reported too.
        while let Some(Some((i, outcome))) = pending.next().now_or_never() {
            tell(i, outcome);
        }
        bars.clear();
        report.interrupted();
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    bars.clear();
    if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
