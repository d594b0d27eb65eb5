//! Long CPU-bound work (the whole-file MD5) on a few threads of its own, at a lower
//! priority than the threads that answer requests.
//!
//! Hashing is most of what the server's CPU does. Run on Tokio's threads, it would hold
//! them for milliseconds at a time and a `CheckUpload` would queue behind it; on Tokio's
//! blocking pool, hundreds of uploads would hash on hundreds of threads that share the
//! cores with the runtime's few. Here the work queues for one thread per core, and those
//! threads yield to the runtime's whenever both want a core, so control calls stay fast
//! while hashing still uses every idle cycle.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::oneshot;

/// The workers' `nice` value: under contention the kernel gives a thread at nice 0
/// about nine times their share of a core.
const WORKER_NICE: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Why CPU work could not run.
#[derive(Debug, thiserror::Error)]
pub enum CpuWorkError {
    #[error("the CPU worker threads could not be started: {0}")]
    NoWorkers(String),
    #[error("the CPU work panicked")]
    Panicked,
}

/// Runs `work` on a CPU worker thread and returns its result.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CpuWorkError> {
    let (reply, answer) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(work());
    });
    workers()?
        .send(job)
        .map_err(|_| CpuWorkError::NoWorkers("they have stopped".into()))?;
    // The reply is dropped unanswered only when `work` panics (the worker survives it).
    answer.await.map_err(|_| CpuWorkError::Panicked)
}

/// The queue of the worker threads, started on first use.
fn workers() -> Result<&'static Sender<Job>, CpuWorkError> {
    static WORKERS: OnceLock<Result<Sender<Job>, String>> = OnceLock::new();
    WORKERS
        .get_or_init(start_workers)
        .as_ref()
        .map_err(|e| CpuWorkError::NoWorkers(e.clone()))
}

fn start_workers() -> Result<Sender<Job>, String> {
    let (jobs, queue) = channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    let count = std::thread::available_parallelism().map_or(1, |n| n.get());
    for n in 0..count {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("cpu-worker-{n}"))
            .spawn(move || work_loop(&queue))
            .map_err(|e| e.to_string())?;
    }
    Ok(jobs)
}

fn work_loop(queue: &Mutex<Receiver<Job>>) {
    // On Linux, `nice` belongs to the thread: this lowers only this worker. Failing to
    // lower it costs latency, not correctness.
    // SAFETY: setpriority has no memory-safety preconditions.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, WORKER_NICE);
    }
    loop {
        let job = match queue.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking job loses only its own answer.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_worker_and_returns_its_result() {
        let name = run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("cpu-worker-")));
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_own_work() {
        let panicked = run(|| -> u32 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(CpuWorkError::Panicked)));
        assert_eq!(run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn workers_run_below_the_default_priority() {
        // SAFETY: getpriority has no memory-safety preconditions.
        let nice = run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
            .await
            .unwrap();
        assert!(nice > 0, "worker nice is {nice}");
    }
}
