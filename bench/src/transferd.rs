//! `transferd` as its own process (the release build beside this program), so its CPU
//! time and peak memory are its own, read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Child;

use crate::postgres::BenchDatabase;

/// Which ledger a server runs on.
#[derive(Debug, Clone)]
pub enum LedgerChoice {
    /// The embedded default.
    Embedded,
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

/// Where a transferd's log goes, and at which levels (an `EnvFilter` directive), when
/// the benchmark reads what it logged.
pub struct Logging {
    pub filter: String,
    pub to: PathBuf,
}

/// A transferd process with its own data directory, stopped when dropped.
pub struct Transferd {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Child,
    database: Option<BenchDatabase>,
}

impl Transferd {
    /// Starts transferd on a free port with a fresh data directory under `work`, on the
    /// embedded ledger, with `extra` flags.
    pub async fn start(work: &Path, extra: &[String]) -> Result<Self> {
        Self::start_on(work, LedgerChoice::Embedded, None, extra).await
    }

    /// Starts transferd on `ledger`; `database` (if any) is dropped with the server.
    pub async fn start_on(
        work: &Path,
        ledger: LedgerChoice,
        database: Option<BenchDatabase>,
        extra: &[String],
    ) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("transferd-")
            .tempdir_in(work)
            .context("creating a data directory")?
            .keep();
        Self::start_in(data_dir, ledger, database, extra, None).await
    }

    /// Starts transferd on an existing data directory; its warnings go to this
    /// program's standard error, or its log to `logging`.
    pub async fn start_in(
        data_dir: PathBuf,
        ledger: LedgerChoice,
        database: Option<BenchDatabase>,
        extra: &[String],
        logging: Option<Logging>,
    ) -> Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = crate::pinning::server_command(binary("transferd")?);
        command
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("TRANSFERD_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(logging) = logging {
            let log = std::fs::File::create(&logging.to)
                .with_context(|| format!("creating {}", logging.to.display()))?;
            command.env("RUST_LOG", logging.filter).stderr(log);
        }
        if let LedgerChoice::Postgres(url) = &ledger {
            command.arg("--database-url").arg(url);
        }
        let child = command.spawn().context("starting transferd")?;
        let mut server = Self {
            addr,
            data_dir,
            child,
            database,
        };
        server.wait_until_listening().await?;
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_until_listening(&mut self) -> Result<()> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait()? {
                bail!("transferd exited at start-up: {status}");
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("transferd did not listen on {} within 15 s", self.addr)
    }

    fn pid(&self) -> Result<u32> {
        self.child.id().context("transferd has exited")
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        self.status_bytes("VmHWM:")
    }

    /// Resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> Result<u64> {
        self.status_bytes("VmRSS:")
    }

    fn status_bytes(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/PID/status"))?;
        Ok(kib * 1024)
    }

    /// User plus system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        process_cpu_seconds(self.pid()?)
    }

    /// Kills the process (SIGKILL), as a crash would; its data stay until [`Self::stop`].
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops the process (SIGKILL: nothing to flush that a benchmark needs) and removes
    /// its data directory.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = tokio::fs::remove_dir_all(&self.data_dir).await;
        if let Some(database) = self.database.take() {
            database.remove().await;
        }
    }
}

/// User plus system CPU time of process `pid` so far, in seconds (this process's own
/// with `std::process::id()`).
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

/// The kernel's clock ticks per second, as `getconf` says (100 on Linux nearly always).
fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|hz| hz.trim().parse::<f64>().ok())
            .filter(|&hz| hz > 0.0)
            .unwrap_or(100.0)
    })
}

/// One of the workspace's release binaries, beside this program.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|dir| dir.join(name))
        .context("this program's directory")?;
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --workspace --bins` (scripts/bench does)",
            path.display()
        );
    }
    Ok(path)
}
