//! Transfer handles: control (pause, resume, cancel) and progress events.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::WatchStream;

use crate::error::TransferError;

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferState {
    /// Waiting for a free slot in a [`crate::TransferManager`].
    Queued,
    /// Reading the file to compute its MD5.
    Hashing,
    /// Sending chunks.
    Uploading,
    /// Receiving pieces.
    Downloading,
    /// Checking the whole-file MD5 of a download.
    Verifying,
    /// Paused by the caller; resumes where it stopped.
    Paused,
    /// The connection or stream broke; waiting before attempt `attempt`.
    Retrying {
        attempt: u32,
        reason: String,
    },
    Completed,
    Failed(String),
    Cancelled,
}

impl TransferState {
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            TransferState::Completed | TransferState::Failed(_) | TransferState::Cancelled
        )
    }
}

/// A snapshot of a transfer's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The file: a path for uploads, the destination for downloads.
    pub name: String,
    pub state: TransferState,
    /// Bytes done in the current phase (hashed, acknowledged, or received).
    pub bytes_done: u64,
    /// Bytes the current phase has in all.
    pub total: u64,
    /// Average rate of the current phase so far, bytes per second.
    pub bytes_per_sec: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Run,
    Pause,
    Cancel,
}

/// Pause, resume or cancel a transfer; a cheap clone of its handle's controls.
#[derive(Clone)]
pub struct TransferControl {
    commands: Arc<watch::Sender<Command>>,
}

impl TransferControl {
    /// Stops sending or receiving after what is in flight; the server keeps the session
    /// (or the `.part` file keeps the bytes) until [`TransferControl::resume`].
    pub fn pause(&self) {
        self.commands.send_if_modified(|c| {
            let pause = *c == Command::Run;
            if pause {
                *c = Command::Pause;
            }
            pause
        });
    }

    pub fn resume(&self) {
        self.commands.send_if_modified(|c| {
            let resume = *c == Command::Pause;
            if resume {
                *c = Command::Run;
            }
            resume
        });
    }

    /// Stops the transfer for good: an upload's session is aborted on the server, a
    /// download's `.part` file is removed.
    pub fn cancel(&self) {
        self.commands.send_replace(Command::Cancel);
    }
}

/// A running transfer. Dropping the handle does not stop the transfer.
pub struct TransferHandle<T> {
    control: TransferControl,
    progress: watch::Receiver<Progress>,
    task: JoinHandle<Result<T, TransferError>>,
}

impl<T: Send + 'static> TransferHandle<T> {
    /// Starts `work` with a fresh reporter.
    pub(crate) fn spawn<F>(name: String, work: impl FnOnce(Reporter) -> F) -> Self
    where
        F: Future<Output = Result<T, TransferError>> + Send + 'static,
    {
        let (commands, command_rx) = watch::channel(Command::Run);
        let (progress_tx, progress) = watch::channel(Progress {
            name,
            state: TransferState::Queued,
            bytes_done: 0,
            total: 0,
            bytes_per_sec: 0.0,
        });
        let reporter = Reporter {
            progress: progress_tx,
            commands: command_rx,
            phase_started: Instant::now(),
        };
        let watcher = reporter.progress.clone();
        // The transfer's calls carry the caller's trace context and span.
        let span = tracing::Span::current();
        let context = opentelemetry::Context::current();
        let work = opentelemetry::context::FutureExt::with_context(work(reporter), context);
        let work = tracing::Instrument::instrument(work, span);
        let task = tokio::spawn(async move {
            let result = work.await;
            watcher.send_modify(|p| {
                p.state = match &result {
                    Ok(_) => TransferState::Completed,
                    Err(TransferError::Cancelled { .. }) => TransferState::Cancelled,
                    Err(error) => TransferState::Failed(error.to_string()),
                }
            });
            result
        });
        Self {
            control: TransferControl {
                commands: Arc::new(commands),
            },
            progress,
            task,
        }
    }
}

impl<T> TransferHandle<T> {
    /// See [`TransferControl::pause`].
    pub fn pause(&self) {
        self.control.pause();
    }

    pub fn resume(&self) {
        self.control.resume();
    }

    /// See [`TransferControl::cancel`].
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// Controls that outlive [`TransferHandle::wait`].
    pub fn control(&self) -> TransferControl {
        self.control.clone()
    }

    /// The latest progress.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// A receiver of progress updates (`changed().await`, then `borrow()`).
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Progress updates as a stream; it ends after the transfer has finished.
    pub fn events(&self) -> WatchStream<Progress> {
        WatchStream::new(self.progress.clone())
    }

    /// Waits for the transfer to finish.
    pub async fn wait(self) -> Result<T, TransferError> {
        let name = self.progress.borrow().name.clone();
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(TransferError::protocol(
                &name,
                format!("the transfer task stopped unexpectedly: {error}"),
            )),
        }
    }
}

/// The transfer's side: reports progress and reads the caller's commands.
pub(crate) struct Reporter {
    progress: watch::Sender<Progress>,
    commands: watch::Receiver<Command>,
    phase_started: Instant,
}

impl Reporter {
    pub fn name(&self) -> String {
        self.progress.borrow().name.clone()
    }

    /// Enters a phase of `total` bytes with `done` of them already done.
    pub fn phase(&mut self, state: TransferState, done: u64, total: u64) {
        self.phase_started = Instant::now();
        self.progress.send_modify(|p| {
            p.state = state;
            p.bytes_done = done;
            p.total = total;
            p.bytes_per_sec = 0.0;
        });
    }

    /// A handle for reporting progress from code that cannot borrow the reporter.
    pub fn progress_sender(&self) -> ProgressSender {
        ProgressSender {
            progress: self.progress.clone(),
            phase_started: self.phase_started,
        }
    }

    pub fn state(&self, state: TransferState) {
        self.progress.send_modify(|p| p.state = state);
    }

    pub fn advance(&self, done: u64, since_phase_start: u64) {
        advance(&self.progress, self.phase_started, done, since_phase_start);
    }

    /// The caller's latest command.
    pub fn command(&self) -> Command {
        *self.commands.borrow()
    }

    /// Resolves when the caller's command changes.
    pub async fn command_changed(&mut self) -> Command {
        if self.commands.changed().await.is_err() {
            // The handle is gone: nobody can pause or cancel any more.
            std::future::pending::<()>().await;
        }
        *self.commands.borrow_and_update()
    }

    /// While paused, waits for resume. `Err` when cancelled.
    pub async fn until_running(&mut self) -> Result<(), Cancelled> {
        loop {
            let command = *self.commands.borrow_and_update();
            match command {
                Command::Run => return Ok(()),
                Command::Cancel => return Err(Cancelled),
                Command::Pause => {
                    self.state(TransferState::Paused);
                    self.command_changed().await;
                }
            }
        }
    }
}

/// Reports bytes done, like [`Reporter::advance`].
pub(crate) struct ProgressSender {
    progress: watch::Sender<Progress>,
    phase_started: Instant,
}

impl ProgressSender {
    pub fn advance(&self, done: u64, since_phase_start: u64) {
        advance(&self.progress, self.phase_started, done, since_phase_start);
    }
}

fn advance(progress: &watch::Sender<Progress>, started: Instant, done: u64, since_start: u64) {
    let elapsed = started.elapsed().as_secs_f64();
    progress.send_modify(|p| {
        p.bytes_done = done;
        if elapsed > 0.0 {
            p.bytes_per_sec = since_start as f64 / elapsed;
        }
    });
}

/// The caller cancelled the transfer.
#[derive(Debug)]
pub(crate) struct Cancelled;
