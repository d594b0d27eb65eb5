//! `transferd` as a separate process, so a test can kill it (SIGKILL) mid-transfer and
//! start it again on the same port, database and data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tempfile::TempDir;

use crate::database::TestDatabase;
use crate::server::Ledger;

/// The path of one of the workspace's binaries, built (once per test run) so that it is
/// never older than the code under test.
pub fn workspace_binary(name: &str, package: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory");
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", package, "--bin", name]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_owned());
    }
    dir.join(name)
}

/// Runs the `transfer` CLI against a server. Async, because test servers run on the
/// test's own runtime, which a blocking wait would stall.
pub async fn transfer_cli(endpoint: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(workspace_binary("transfer", "transfer-client"))
        .arg("--server")
        .arg(endpoint)
        .args(args)
        .output()
        .await
        .expect("running transfer")
}

pub struct TransferdProcess {
    pub addr: SocketAddr,
    child: Option<Child>,
    /// A command transferd runs under, when not on its own.
    wrapper: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    _data_dir: TempDir,
    _ledger_dir: Option<TempDir>,
    _db: Option<TestDatabase>,
}

impl TransferdProcess {
    pub async fn start(ledger: Ledger) -> Self {
        Self::start_with_env(ledger, &[]).await
    }

    /// Starts with extra command-line flags.
    pub async fn start_with_args(ledger: Ledger, extra: &[&str]) -> Self {
        let mut process = Self::start_with_env(ledger, &[]).await;
        process.kill();
        process.args.extend(extra.iter().map(|a| (*a).to_owned()));
        process.launch().await;
        process
    }

    /// Starts with extra environment variables (OTEL_* settings, say).
    pub async fn start_with_env(ledger: Ledger, env: &[(&str, String)]) -> Self {
        let db = match ledger {
            Ledger::Postgres => Some(TestDatabase::create().await),
            Ledger::Sqlite => None,
        };
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address")
        };
        let mut args = vec![
            "--listen".to_owned(),
            addr.to_string(),
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
            "--min-chunk-size".to_owned(),
            "1024".to_owned(),
        ];
        if let Some(db) = &db {
            args.extend(["--database-url".to_owned(), db.url.clone()]);
        }
        let mut process = Self {
            addr,
            child: None,
            wrapper: Vec::new(),
            args,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            _data_dir: data_dir,
            _ledger_dir: None,
            _db: db,
        };
        process.launch().await;
        process
    }

    /// Starts with its data directory on a filesystem of its own of `bytes` bytes (a
    /// tmpfs mounted in a mount namespace of its own by `unshare`, so it needs no root
    /// where unprivileged user namespaces are allowed), and extra flags. A SQLite ledger
    /// lives outside it.
    pub async fn start_on_small_disk(ledger: Ledger, bytes: u64, extra: &[&str]) -> Self {
        let mut process = Self::start_with_env(ledger, &[]).await;
        process.kill();
        let ledger_dir = tempfile::tempdir().expect("a temporary ledger directory");
        if matches!(ledger, Ledger::Sqlite) {
            process.args.extend([
                "--database-url".to_owned(),
                format!("sqlite://{}/ledger.sqlite3", ledger_dir.path().display()),
            ]);
        }
        process._ledger_dir = Some(ledger_dir);
        let data_dir = process._data_dir.path().display().to_string();
        process.wrapper = vec![
            "unshare".into(),
            "--user".into(),
            "--map-root-user".into(),
            "--mount".into(),
            "sh".into(),
            "-c".into(),
            format!("mount -t tmpfs -o size={bytes} transfer-test \"$0\" && exec \"$@\""),
            data_dir,
        ];
        process.args.extend(extra.iter().map(|a| (*a).to_owned()));
        process.launch().await;
        process
    }

    /// Starts on the PostgreSQL ledger at `url` (a cluster of the test's own), with
    /// extra flags.
    pub async fn start_on_database(url: &str, extra: &[&str]) -> Self {
        let mut process = Self::start_with_env(Ledger::Sqlite, &[]).await;
        process.kill();
        process
            .args
            .extend(["--database-url".to_owned(), url.to_owned()]);
        process.args.extend(extra.iter().map(|a| (*a).to_owned()));
        process.launch().await;
        process
    }

    /// Where it stores blobs (`staging/`, `content/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process's resident memory now, in bytes (`VmRSS` in /proc).
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// The most resident memory the process has had, in bytes (`VmHWM` in /proc).
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    fn status_kib(&self, field: &str) -> u64 {
        let pid = self.child.as_ref().expect("transferd is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("reading transferd's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    async fn launch(&mut self) {
        let transferd = workspace_binary("transferd", "transfer-service");
        let mut command = match self.wrapper.split_first() {
            None => Command::new(&transferd),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&transferd);
                command
            }
        };
        let child = command
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TRANSFERD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .spawn()
            .expect("starting transferd");
        self.child = Some(child);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("transferd did not start listening on {}", self.addr);
    }

    /// Kills the process at once (SIGKILL): no graceful anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP), as a long pause or a frozen machine would.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("a running transferd")
            .id()
            .to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// Starts it again with the same settings.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for TransferdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
