//! A PostgreSQL cluster of the test's own that accepts only TLS connections, with a
//! server certificate from a [`TestPki`]: started from the installed server binaries
//! (`initdb`, `pg_ctl`), stopped and deleted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pki::TestPki;

pub struct TlsPostgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_user: Option<&'static str>,
}

/// The newest installed PostgreSQL server binaries.
fn server_binaries() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "this test starts a PostgreSQL of its own and needs the server binaries \
             (Debian/Ubuntu: apt-get install postgresql)"
        )
    })
}

impl TlsPostgres {
    pub fn start(pki: &TestPki) -> Self {
        let bin = server_binaries();
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        // initdb refuses to run as root.
        let as_user = running_as_root().then_some("postgres");
        let data = dir.path().join("data");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        let pg = Self {
            port,
            bin,
            dir,
            as_user,
        };
        pg.chown(pg.dir.path());
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let server = pki.server();
        let cert = data.join("server.crt");
        let key = data.join("server.key");
        std::fs::write(&cert, server.certificate).expect("writing server.crt");
        std::fs::write(&key, server.key).expect("writing server.key");
        set_mode(&key, 0o600);
        // Only TLS connections over TCP; the socket in the directory for pg_ctl.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("writing pg_hba.conf");
        for file in [&cert, &key, &data.join("pg_hba.conf")] {
            pg.chown(file);
        }
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off",
            path_str(pg.dir.path())
        );
        let log = pg.dir.path().join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        pg
    }

    /// A URL that asks for TLS, trusting `ca` (a PEM file).
    pub fn url(&self, ca: &Path) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.port,
            ca.display()
        )
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let output = command
            .args(args)
            .output()
            .expect("running a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = self.as_user {
            let status = Command::new("chown")
                .arg(user)
                .arg(path)
                .status()
                .expect("running chown");
            assert!(status.success(), "chown {user} {}", path.display());
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let program = self.bin.join("pg_ctl");
        let args = ["-D", path_str(&data), "-m", "immediate", "stop"];
        let _ = match self.as_user {
            Some(user) => Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(&program)
                .args(args)
                .output(),
            None => Command::new(&program).args(args).output(),
        };
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn running_as_root() -> bool {
    // The owner of a file this process just made is this process's user.
    let probe = tempfile::NamedTempFile::new().expect("a probe file");
    std::os::unix::fs::MetadataExt::uid(&probe.as_file().metadata().expect("its metadata")) == 0
}
