//! tus, the established resumable-upload protocol, as the peer we compare against:
//! `@tus/server` with `@tus/file-store`, and `tus-js-client`, run by Node from
//! `bench/tus/` (scripts/bench installs them with `npm ci`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the tus scripts and their node_modules are.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tus")
}

/// Why tus cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let dir = scripts_dir();
    if !dir
        .join("node_modules")
        .join("@tus")
        .join("server")
        .exists()
    {
        return Some(format!(
            "tus is not installed: run `npm ci --prefix {}` (scripts/bench does)",
            dir.display()
        ));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("node is not installed (tus runs on Node.js 20 or later)".into()),
    }
}

/// A running tus server storing into its own directory.
pub struct TusServer {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    _child: Child,
}

impl TusServer {
    pub async fn start(work: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tus-").tempdir_in(work)?;
        let mut child = crate::pinning::server_command("node")
            .arg(scripts_dir().join("server.mjs"))
            .args(["--port", "0", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the tus server (node)")?;
        let stdout = child.stdout.take().context("the tus server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .context("the tus server did not start within 20 s")??
            .context("the tus server exited at start-up")?;
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("the tus server said {line:?}, not `listening PORT`"))?;
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            _child: child,
        })
    }

    /// Removes stored uploads, so runs do not fill the disk.
    pub fn clear(&self) -> Result<()> {
        for entry in std::fs::read_dir(self.dir.path())? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path)?;
            } else {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// Uploads `file` with tus-js-client to the tus server reached at `addr` (perhaps a
/// proxy): in one request, or in requests of `chunk_size` bytes. Returns the seconds
/// tus-js-client took.
pub async fn upload(addr: SocketAddr, file: &Path, chunk_size: Option<u64>) -> Result<f64> {
    let mut command = Command::new("node");
    command
        .arg(scripts_dir().join("upload.mjs"))
        .arg("--endpoint")
        .arg(format!("http://{addr}/files"))
        .arg("--file")
        .arg(file)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(chunk) = chunk_size {
        command.arg("--chunk-size").arg(chunk.to_string());
    }
    let out = command.output().await.context("running tus-js-client")?;
    if !out.status.success() {
        bail!(
            "tus-js-client failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "tus-js-client said {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let bytes = answer["bytes"].as_u64().context("no bytes in the answer")?;
    let expected = std::fs::metadata(file)?.len();
    if bytes != expected {
        bail!("tus-js-client uploaded {bytes} bytes of {expected}");
    }
    answer["seconds"]
        .as_f64()
        .context("no seconds in tus-js-client's answer")
}
