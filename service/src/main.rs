use clap::Parser;
use transfer_service::Settings;
use transfer_service::config::Command;
use transfer_service::ledger::{LedgerLocation, copy_keys, copy_ledger};
use transfer_service::server::Transferd;
use transfer_service::telemetry::Telemetry;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    return_freed_memory_now_and_then();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(transferd()),
        Err(error) => {
            eprintln!("transferd: cannot start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Chunk buffers are allocated on one thread and freed on others; glibc then spreads
/// them over per-thread arenas that each keep freed memory, and transferd's peak memory
/// came out 20-40 MiB above what was live, varying run to run. One arena keeps it at
/// what is live (transferd's allocations are few and large, so contention is no cost).
///
/// glibc also hands the top of its heap back to the kernel once 8 MiB of it are free,
/// which a window of 4 MiB chunks crosses all the time: the next chunk then faulted in
/// fresh zeroed pages. Keeping up to 8 MiB of freed heap (two chunks), and serving
/// blocks up to 32 MiB from the heap rather than from `mmap`, reuses those pages. A
/// larger reserve saved little more CPU, and what it keeps counts in peak memory
/// (figures: BENCHMARKS.md, "Measurements behind choices in the code"). Set before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // Setting either of these turns off glibc's own adjustment of both.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// What glibc keeps is only the top of its heap: chunks freed below live ones stay
/// resident. After a burst of 50 uploads at once transferd kept 2.2 GiB of its 2.3 GiB
/// peak for as long as it ran. `malloc_trim` gives every free page of the heap back;
/// done every few seconds it costs a walk of the heap (well under a millisecond when
/// little is free) and hands a burst's memory back soon after it ends (BENCHMARKS.md,
/// "Measurements behind choices in the code").
fn return_freed_memory_now_and_then() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let trimming = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    // SAFETY: malloc_trim only returns free memory to the kernel.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            });
        if let Err(error) = trimming {
            eprintln!("transferd: memory will not be given back after bursts: {error}");
        }
    }
}

async fn transferd() -> std::process::ExitCode {
    let settings = Settings::parse();
    let telemetry = match Telemetry::init(settings.log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("transferd: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match &settings.command {
        Some(Command::MigrateLedger { from, to }) => migrate(&settings, from.as_deref(), to).await,
        Some(Command::Keys(command)) => keys(&settings, command).await,
        None => run(settings).await,
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    // Installed before the port opens: a supervisor may signal as soon as it can connect,
    // and a signal that arrives before its handler kills the process uncleanly.
    let signals = ShutdownSignals::install()?;
    let transferd = Transferd::open(&settings).await?;
    let listener = transfer_service::server::listen(settings.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        data_dir = %settings.data_dir.display(),
        "transferd serving gRPC"
    );
    // Running calls get a grace period to finish; acked chunks are durable either way.
    let grace = std::time::Duration::from_secs(settings.shutdown_grace_secs);
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let signalled = std::sync::Arc::clone(&stopping);
    let shutdown = async move {
        signals.received().await;
        signalled.notify_one();
    };
    tokio::select! {
        served = transferd.serve(listener, shutdown) => served?,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            // Said as an error, and the exit status says it too: a supervisor must not
            // take a forced stop for a clean one.
            return Err(format!(
                "calls still running after the {}s shutdown grace (--shutdown-grace-secs): \
                 stopped them (acked chunks are durable; their clients resume)",
                grace.as_secs()
            )
            .into());
        }
    }
    tracing::info!("transferd stopped");
    Ok(())
}

/// `transferd migrate-ledger`: copies one ledger into another.
async fn migrate(
    settings: &Settings,
    from: Option<&str>,
    to: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let source = match from {
        Some(url) => LedgerLocation::from_url(Some(url), &settings.data_dir)?,
        None => settings.ledger_location()?,
    };
    let target = LedgerLocation::from_url(Some(to), &settings.data_dir)?;
    if source == target {
        return Err("--to names the ledger being copied".into());
    }
    tracing::info!(from = %source, to = %target, "copying the ledger");
    let from = source.open(settings.database_pool_size, None).await?;
    let into = target.open(settings.database_pool_size, None).await?;
    let copied = copy_ledger(from.as_ref(), into.as_ref()).await?;
    let keys = copy_keys(from.as_ref(), into.as_ref()).await?;
    println!(
        "copied {} files, {} chunks, {} content records and {keys} API keys from {source} to {target}",
        copied.files, copied.chunks, copied.contents
    );
    Ok(())
}

/// `transferd keys ...`: manages API keys in this server's ledger.
async fn keys(
    settings: &Settings,
    command: &transfer_service::config::KeysCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    let ledger = settings
        .ledger_location()?
        .open(settings.database_pool_size.min(4), None)
        .await?;
    let out = transfer_service::key_admin::run(ledger.as_ref(), command).await?;
    print!("{out}");
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment they are installed.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, Box<dyn std::error::Error>> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"))
            };
            Ok(Self {
                interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first SIGINT or SIGTERM.
    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing running calls");
    }
}
