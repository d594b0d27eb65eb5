//! A PostgreSQL cluster of a test's own, started from the installed server binaries with
//! `fsync` on, so a test can crash it (`pg_ctl stop -m immediate`) and see what a
//! crash of the database keeps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

pub struct ThrowawayCluster {
    bin: PathBuf,
    dir: TempDir,
    /// `runuser -u postgres --` when the tests run as root (initdb refuses root).
    run_as: Vec<String>,
    pub port: u16,
}

impl ThrowawayCluster {
    /// Creates and starts a cluster on a free port. Fails the test, saying what is
    /// missing, when no PostgreSQL server binaries are installed.
    pub fn start() -> Self {
        let bin = server_binaries().expect(
            "the fault tests start a PostgreSQL cluster of their own: install the PostgreSQL \
             server binaries (Debian/Ubuntu: apt-get install postgresql)",
        );
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let mut run_as = Vec::new();
        if running_as_root() {
            let user = if user_exists("postgres") {
                "postgres"
            } else {
                "nobody"
            };
            let chown = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(chown.success(), "giving the cluster's directory to {user}");
            run_as = vec!["runuser".into(), "-u".into(), user.into(), "--".into()];
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self {
            bin,
            dir,
            run_as,
            port,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.start_again();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Crashes the server as a power cut would look to it: no checkpoint, no clean
    /// shutdown; what it acknowledged must come back from its WAL.
    pub fn crash(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }

    /// Starts the server (again), with fsync on, and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the test's PostgreSQL did not listen on port {}", self.port);
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bin.join(program);
        let (first, rest) = match self.run_as.split_first() {
            Some((first, rest)) => (PathBuf::from(first), rest.to_vec()),
            None => (binary.clone(), Vec::new()),
        };
        let mut command = Command::new(first);
        command.args(rest);
        if !self.run_as.is_empty() {
            command.arg(&binary);
        }
        let output = command
            .args(args)
            .output()
            .expect("running a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let data = self.data();
        let binary = self.bin.join("pg_ctl");
        let mut command = match self.run_as.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// Where `initdb` and `pg_ctl` are: the newest Debian server, or the PATH.
fn server_binaries() -> Option<PathBuf> {
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    installed.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    installed.pop().or_else(|| {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()))
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}
