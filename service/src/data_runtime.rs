//! A Tokio runtime of its own for the upload and download streams.
//!
//! A stream's task decodes, checks and copies megabytes per chunk; hundreds of them on
//! the runtime that also answers `CheckUpload` put every such call in a queue behind
//! whole chunks. On a runtime of their own they share the cores with the request threads
//! through the kernel's scheduler, which runs a thread that just woke (a request
//! arriving) ahead of threads that have been busy.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Runs `stream` on the data runtime (or, should it fail to start, on the current one).
pub fn spawn<F>(stream: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime() {
        Some(data) => data.spawn(stream),
        None => tokio::spawn(stream),
    }
}

fn runtime() -> Option<&'static Runtime> {
    // Built once and never dropped: dropping a runtime from async code panics, and the
    // process serves until it exits.
    static DATA: OnceLock<Option<Runtime>> = OnceLock::new();
    DATA.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("transferd-data")
            .enable_all()
            .build()
            .inspect_err(|e| {
                tracing::warn!("no runtime for data streams, sharing the main one: {e}")
            })
            .ok()
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn streams_run_on_threads_apart_from_the_callers_runtime() {
        let thread = super::spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("transferd-data"));
    }
}
