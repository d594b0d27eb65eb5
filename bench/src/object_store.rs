//! SeaweedFS, a real S3-compatible server, started for the benchmark the way the tests
//! start it (`tests/python/s3_server.py` in the tests' Python environment, which
//! `scripts/bench` installs as `scripts/test` does): on loopback, telemetry off, stopped
//! and its data deleted when this program ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::transferd::process_cpu_seconds;

pub struct S3Server {
    child: Child,
    /// Held open: the server stops when it closes.
    stdin: Option<ChildStdin>,
    endpoint: String,
    access_key: String,
    secret_key: String,
    bucket: String,
}

impl S3Server {
    pub async fn start(_work: &Path) -> Result<Self> {
        let root = workspace_root()?;
        let python = match std::env::var_os("TRANSFER_TEST_PYTHON") {
            Some(python) => PathBuf::from(python),
            None => root.join("target/test-python/bin/python"),
        };
        if !python.exists() {
            bail!(
                "{} is missing: scripts/bench installs the tests' Python environment (with SeaweedFS) there",
                python.display()
            );
        }
        let mut child = Command::new(&python)
            .arg(root.join("tests/python/s3_server.py"))
            .arg("seaweedfs")
            // Room for everything the benchmark writes (SeaweedFS reclaims deleted data
            // only later): 100 volumes of 256 MB.
            .arg("100")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting SeaweedFS")?;
        let stdin = child.stdin.take().context("SeaweedFS's stdin")?;
        let stdout = child.stdout.take().context("SeaweedFS's stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await??;
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["ready", endpoint, access_key, secret_key, bucket] = words[..] else {
            let _ = child.kill();
            bail!("SeaweedFS did not start: {line:?}");
        };
        Ok(Self {
            endpoint: endpoint.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            bucket: bucket.to_owned(),
            child,
            stdin: Some(stdin),
        })
    }

    /// transferd's flags for a fresh prefix of the bucket (a prefix is claimed by the
    /// first ledger that uses it).
    pub fn transferd_args(&self) -> Vec<String> {
        let prefix = uuid::Uuid::new_v4().simple().to_string();
        [
            "--blob-store".to_owned(),
            format!("s3://{}/bench-{prefix}", self.bucket),
            "--s3-endpoint".to_owned(),
            self.endpoint.clone(),
            "--s3-region".to_owned(),
            "us-east-1".to_owned(),
            "--s3-access-key-id".to_owned(),
            self.access_key.clone(),
            "--s3-secret-access-key".to_owned(),
            self.secret_key.clone(),
        ]
        .to_vec()
    }

    /// CPU seconds SeaweedFS (the `weed` process under the starter) has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|child| child.parse::<u32>().ok())
            .filter_map(|child| process_cpu_seconds(child).ok())
            .sum()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Closing stdin stops the server and deletes its data; the starter is waited
        // for so that happens before this program exits.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The workspace's root: this program is `target/release/transfer-bench` in it.
fn workspace_root() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("this program's workspace")
}
