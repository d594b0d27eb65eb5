//! Which failures a transfer retries, and which end it.

use std::time::Duration;

use tonic::{Code, Status};

use crate::config::RetryPolicy;
use crate::connection::ServerConnection;
use crate::error::TransferError;
use crate::progress::{Command, Reporter, TransferState};

/// How an attempt ended, when it did not finish the transfer.
pub(crate) enum Interruption {
    /// Worth another attempt after a backoff: a broken stream, a lost connection, a
    /// restarting server, a session that closed under us.
    Retry(String),
    /// Nothing arrived for the stall timeout: the connection may be hung, so the next
    /// attempt uses a new one.
    Stalled(String),
    /// The caller paused: wait for resume, then carry on.
    Paused,
    /// The caller cancelled.
    Cancelled,
    /// The transfer cannot succeed.
    Fatal(TransferError),
}

impl Interruption {
    /// Classifies a gRPC status from the server or the transport.
    pub fn from_status(file: &str, status: &Status) -> Self {
        match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            // The session closed or vanished under us (completed by another client,
            // aborted, restarted): asking CheckUpload again finds out what to do.
            | Code::FailedPrecondition
            | Code::NotFound => Interruption::Retry(format!("{:?}: {}", status.code(), status.message())),
            // The server's storage is full: space may be freed (files deleted, garbage
            // collected), so this waits like any other outage.
            Code::ResourceExhausted if is_storage_full(status) => {
                Interruption::Retry(format!("waiting for room: {}", status.message()))
            }
            _ => Interruption::Fatal(TransferError::refused(file, status)),
        }
    }
}

/// Whether the server said its storage is full (not that the request is over a limit).
fn is_storage_full(status: &Status) -> bool {
    status
        .metadata()
        .get(transfer_proto::REASON_METADATA)
        .is_some_and(|reason| reason.as_bytes() == transfer_proto::REASON_STORAGE_FULL.as_bytes())
}

/// Runs one call to the server with a deadline, giving up early if the caller pauses or
/// cancels meanwhile (the calls are idempotent: the next attempt asks again).
pub(crate) async fn guarded<T>(
    reporter: &mut Reporter,
    deadline: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Interruption> {
    let call = tokio::time::timeout(deadline, call);
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => {
                return match result {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(status)) => Err(Interruption::from_status(&reporter.name(), &status)),
                    Err(_) => Err(Interruption::Stalled(format!("no answer within {deadline:?}"))),
                };
            }
            command = reporter.command_changed() => match command {
                Command::Cancel => return Err(Interruption::Cancelled),
                Command::Pause => return Err(Interruption::Paused),
                Command::Run => {}
            },
        }
    }
}

/// Why a transfer stops for good after an interrupted attempt.
pub(crate) enum Ending {
    Cancelled,
    Fatal(TransferError),
}

/// Counts attempts in a row that made no progress, times how long since the last one
/// that did, and waits between them.
pub(crate) struct Retrier {
    policy: RetryPolicy,
    failures: u32,
    /// When the transfer last moved on (or started).
    progressed_at: std::time::Instant,
}

impl Retrier {
    pub fn new(policy: &RetryPolicy) -> Self {
        Self {
            policy: policy.clone(),
            failures: 0,
            progressed_at: std::time::Instant::now(),
        }
    }

    /// Decides what follows an interrupted attempt: `Ok` to attempt again (after the
    /// backoff, if it was a failure), or how the transfer ends. `progressed` says whether
    /// the attempt moved the transfer on; such attempts do not count against the limit.
    pub async fn after(
        &mut self,
        interruption: Interruption,
        progressed: bool,
        server: &ServerConnection,
        reporter: &mut Reporter,
    ) -> Result<(), Ending> {
        let reason = match interruption {
            Interruption::Fatal(error) => return Err(Ending::Fatal(error)),
            Interruption::Cancelled => return Err(Ending::Cancelled),
            Interruption::Paused => {
                self.failures = 0;
                self.progressed_at = std::time::Instant::now();
                return Ok(());
            }
            Interruption::Retry(reason) => reason,
            Interruption::Stalled(reason) => {
                // The connection may be hung: streams on it would hang too.
                server.reconnect();
                reason
            }
        };
        if progressed {
            self.failures = 0;
            self.progressed_at = std::time::Instant::now();
        }
        self.failures += 1;
        let waited = self.progressed_at.elapsed();
        if self.failures > self.policy.max_attempts || waited >= self.policy.retry_for {
            return Err(Ending::Fatal(TransferError::RetriesExhausted {
                file: reporter.name(),
                attempts: self.failures - 1,
                waited,
                last: reason,
            }));
        }
        reporter.state(TransferState::Retrying {
            attempt: self.failures,
            reason,
        });
        if reporter.command() != Command::Run {
            // Paused (or cancelled) already: the next attempt waits for resume first.
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(self.policy.backoff(self.failures)) => Ok(()),
            command = reporter.command_changed() => match command {
                Command::Cancel => Err(Ending::Cancelled),
                // Paused during the backoff: the next attempt waits for resume first.
                Command::Pause | Command::Run => Ok(()),
            },
        }
    }
}
