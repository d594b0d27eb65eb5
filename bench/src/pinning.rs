//! `--pin`: this program on one core, the servers it starts on the other, so that the
//! figures say what each side costs without the two competing for a core.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

static PINNED: AtomicBool = AtomicBool::new(false);

/// Core of this program's threads.
const CLIENT_CORE: &str = "0";
/// Core of the servers it starts.
const SERVER_CORE: &str = "1";

/// Pins every thread of this program to the client core (threads started later
/// inherit it), and makes [`server_command`] pin servers to the other.
pub fn pin_self() -> Result<()> {
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", CLIENT_CORE, &pid])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin this program")?;
    if !status.success() {
        bail!("taskset could not pin this program to core {CLIENT_CORE}");
    }
    PINNED.store(true, Ordering::SeqCst);
    Ok(())
}

/// A command running `program`, on the server core when pinning (taskset runs it in
/// its own place, so the child's pid is the server's).
pub fn server_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if PINNED.load(Ordering::SeqCst) {
        let mut command = Command::new("taskset");
        command.args(["--cpu-list", SERVER_CORE]).arg(program);
        command
    } else {
        Command::new(program)
    }
}
