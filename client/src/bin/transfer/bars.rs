//! Progress bars, one per transfer, on standard error (hidden when it is not a terminal).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::watch;
use transfer_client::{Progress, TransferState};

pub struct Bars {
    bars: MultiProgress,
    style: ProgressStyle,
}

impl Bars {
    pub fn new() -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:24!} {msg:12} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Self {
            bars: MultiProgress::new(),
            style,
        }
    }

    /// Draws a bar that follows a transfer's progress until it finishes.
    pub fn follow(&self, mut progress: watch::Receiver<Progress>) {
        let bar = self
            .bars
            .add(ProgressBar::new(0).with_style(self.style.clone()));
        bar.set_prefix(crate::printable::printable(&progress.borrow().name));
        tokio::spawn(async move {
            loop {
                let p = progress.borrow_and_update().clone();
                bar.set_length(p.total);
                bar.set_position(p.bytes_done);
                bar.set_message(label(&p.state));
                if p.state.is_finished() {
                    bar.finish();
                    return;
                }
                if progress.changed().await.is_err() {
                    bar.abandon();
                    return;
                }
            }
        });
    }

    /// Runs `f` (which prints) with the bars out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bars.suspend(f)
    }

    pub fn clear(&self) {
        let _ = self.bars.clear();
    }
}

fn label(state: &TransferState) -> String {
    match state {
        TransferState::Queued => "queued".into(),
        TransferState::Hashing => "hashing".into(),
        TransferState::Uploading => "uploading".into(),
        TransferState::Downloading => "downloading".into(),
        TransferState::Verifying => "verifying".into(),
        TransferState::Paused => "paused".into(),
        // What it waits for, so that a long outage reads as one, not as a hang.
        TransferState::Retrying { attempt, reason } => {
            let reason: String = reason.chars().take(60).collect();
            format!("retry {attempt}: {reason}")
        }
        TransferState::Completed => "done".into(),
        TransferState::Failed(_) => "failed".into(),
        TransferState::Cancelled => "cancelled".into(),
    }
}
