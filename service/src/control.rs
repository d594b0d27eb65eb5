//! The runtime that answers the short calls: `CheckUpload`, `GetFile`, `AbortUpload`, `ListFiles`,
//! `DeleteFile`.
//!
//! Bulk streams keep the main runtime's workers busy: hundreds of uploads' tasks are
//! polled in turn, and a task woken behind them waits for the whole round. With 200
//! uploads streaming on two cores a timer on the main runtime fired up to 230 ms late.
//! A short call waited such a round at each of its steps (the call itself, every ledger
//! round trip), so `CheckUpload` took 100-600 ms on PostgreSQL while uploads streamed.
//! Here the calls run on a runtime of their own, whose thread is idle between calls and
//! gets the CPU as soon as the operating system can give it.
//!
//! Each server starts its own and shuts it down when the last of its handlers goes, so
//! two servers in one process share nothing. Upload sessions that outlive their server
//! still reach the ledger: its connections made here close with this runtime, and the
//! ledger makes new ones where they are needed (see
//! [`crate::ledger::PostgresLedger::connect_serving_requests_on`]).

use std::future::Future;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tonic::Status;

/// Threads answering short calls: each call mostly waits for the ledger, and a second
/// thread answered a burst of 200 no faster.
const THREADS: usize = 1;

/// The short calls' runtime; shut down (without waiting for its calls) when dropped.
pub struct ControlPlane {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl ControlPlane {
    /// Starts a control runtime.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("control")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where tasks that serve short calls (such as ledger connections) belong.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `call` on this runtime and returns its result. Dropping the returned future
    /// cancels the call, as it would cancel a call run in place.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        let mut task = CancelOnDrop(self.handle.spawn(call));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => {
                tracing::error!("a call panicked inside the server");
                Err(Status::internal("the call failed inside the server"))
            }
            Err(_) => Err(Status::unavailable("the server is shutting down")),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which an async context forbids;
        // and the last handle may go on one of this runtime's own threads. Another
        // thread shuts it down without waiting; the runtime is handed over only once
        // that thread runs, so it is never dropped here.
        if let Some(runtime) = self.runtime.take() {
            let (hand_over, taken) = std::sync::mpsc::channel::<Runtime>();
            let stopping = std::thread::Builder::new()
                .name("control-stop".into())
                .spawn(move || {
                    if let Ok(runtime) = taken.recv() {
                        runtime.shutdown_background();
                    }
                });
            match stopping {
                Ok(_) => {
                    if let Err(returned) = hand_over.send(runtime) {
                        std::mem::forget(returned.0);
                    }
                }
                Err(error) => {
                    // No thread to stop it on: its idle thread stays for the process.
                    tracing::warn!(%error, "could not stop a control runtime; it stays idle");
                    std::mem::forget(runtime);
                }
            }
        }
    }
}

struct CancelOnDrop<T>(JoinHandle<T>);

impl<T> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_call_runs_on_the_control_thread_and_returns_its_result() {
        let control = ControlPlane::start().unwrap();
        let thread = control
            .run(async { Ok(std::thread::current().name().map(str::to_owned)) })
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("control"));
        let refused: Result<(), Status> = control
            .run(async { Err(Status::invalid_argument("no")) })
            .await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn each_control_plane_is_a_runtime_of_its_own_and_stops_alone() {
        let first = ControlPlane::start().unwrap();
        let second = ControlPlane::start().unwrap();
        let thread_of = |control: &ControlPlane| {
            let handle = control.handle().clone();
            async move {
                handle
                    .spawn(async { std::thread::current().id() })
                    .await
                    .unwrap()
            }
        };
        assert_ne!(thread_of(&first).await, thread_of(&second).await);
        let first_handle = first.handle().clone();
        drop(first);
        // The first stops (a task spawned there no longer runs); the second answers.
        let stopped = async {
            while first_handle.spawn(async {}).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("the dropped control runtime stops");
        assert_eq!(second.run(async { Ok(1) }).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_last_handle_may_go_on_the_control_runtime_itself() {
        let control = Arc::new(ControlPlane::start().unwrap());
        let handle = control.handle().clone();
        let on_its_thread = handle.spawn(async move { drop(control) });
        // It may end as done or as cancelled by the shutdown it started; never a panic.
        let ended = on_its_thread.await;
        assert!(!ended.is_err_and(|e| e.is_panic()));
    }

    #[tokio::test]
    async fn a_panicking_call_is_an_internal_error_and_the_next_call_runs() {
        let control = ControlPlane::start().unwrap();
        let panicked: Result<(), Status> = control.run(async { panic!("boom") }).await;
        assert_eq!(panicked.unwrap_err().code(), tonic::Code::Internal);
        assert_eq!(control.run(async { Ok(7) }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn dropping_the_caller_cancels_the_call() {
        let control = ControlPlane::start().unwrap();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let call = control.run(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), call)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!finished.load(Ordering::SeqCst), "the call ran on");
    }
}
