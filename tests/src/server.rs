//! The real `transferd`, in this process, on an ephemeral port of 127.0.0.1, with its own
//! database and data directory (the `spawn_app` pattern).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_service::Settings;
use transfer_service::server::Transferd;

use crate::database::TestDatabase;

/// The service's defaults, with chunk bounds low enough for small test files.
pub fn default_settings() -> Settings {
    let mut settings = <Settings as clap::Parser>::parse_from(["transferd"]);
    settings.min_chunk_size = 1024;
    settings.default_chunk_size = 64 * 1024;
    settings
}

/// Which ledger a test server records in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledger {
    /// A fresh database on the test PostgreSQL server.
    Postgres,
    /// The embedded default: no database URL, a SQLite file in the data directory.
    Sqlite,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// Its name as a replica.
    replica: String,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub settings: Settings,
    running: Option<Running>,
    data_dir: TempDir,
    // Dropped last: the server's connections must go first.
    db: Option<TestDatabase>,
}

impl TestServer {
    pub async fn start(ledger: Ledger) -> Self {
        Self::start_with(ledger, |_| {}).await
    }

    /// Starts a server whose settings `configure` may change (bounds, windows).
    pub async fn start_with(ledger: Ledger, configure: impl FnOnce(&mut Settings)) -> Self {
        let db = match ledger {
            Ledger::Postgres => Some(TestDatabase::create().await),
            Ledger::Sqlite => None,
        };
        let data_dir = tempfile::tempdir().expect("creating a temporary data directory");
        let mut settings = default_settings();
        settings.database_url = db.as_ref().map(|db| db.url.clone());
        settings.data_dir = data_dir.path().to_owned();
        configure(&mut settings);
        let (addr, running) = launch(&settings).await;
        Self {
            addr,
            settings,
            running: Some(running),
            data_dir,
            db,
        }
    }

    /// Another replica of this server: the same ledger and blob store (an object store
    /// both reach), its own data directory and port. The database stays this server's.
    pub async fn replica(&self) -> Self {
        let data_dir = tempfile::tempdir().expect("creating a temporary data directory");
        let mut settings = self.settings.clone();
        settings.data_dir = data_dir.path().to_owned();
        let (addr, running) = launch(&settings).await;
        Self {
            addr,
            settings,
            running: Some(running),
            data_dir,
            db: None,
        }
    }

    /// Stops the server and starts a new one on the same database and data directory,
    /// as after a restart of the process. Calls still running are cut off.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (addr, running) = launch(&self.settings).await;
        self.addr = addr;
        self.running = Some(running);
    }

    /// Like [`TestServer::restart`], with changed settings (another ledger, say).
    pub async fn restart_with(&mut self, configure: impl FnOnce(&mut Settings)) {
        self.stop().await;
        configure(&mut self.settings);
        let (addr, running) = launch(&self.settings).await;
        self.addr = addr;
        self.running = Some(running);
    }

    /// Stops serving (cutting off running calls); [`TestServer::restart`] starts again.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            // Graceful shutdown waits for open connections; a restart need not.
            let abort = running.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), running.task)
                .await
                .is_err()
            {
                abort.abort();
                // Its session tasks live on in this process (a real process would be
                // gone): its leases go now, as a restarted process would find them
                // lapsed, or the next server would wait them out.
                self.open_ledger()
                    .await
                    .forget_replica(&running.replica)
                    .await
                    .expect("letting go of the stopped server's leases");
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.endpoint())
            .expect("a valid endpoint")
            .connect()
            .await
            .expect("connecting to the test server")
    }

    pub async fn client(&self) -> TransferServiceClient<Channel> {
        TransferServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// How many chunk rows the ledger holds, read with plain SQL.
    pub async fn chunk_rows(&self) -> i64 {
        self.ledger_number("SELECT count(*) FROM chunks").await
    }

    /// The single integer a plain SQL query returns from the ledger's database.
    pub async fn ledger_number(&self, sql: &str) -> i64 {
        self.ledger_value(sql).await
    }

    /// The single text a plain SQL query returns from the ledger's database.
    pub async fn ledger_text(&self, sql: &str) -> String {
        self.ledger_value(sql).await
    }

    /// Runs plain SQL statements on the ledger's database: to make the state a crash
    /// leaves, say.
    pub async fn ledger_execute(&self, sql: &str) {
        match &self.db {
            Some(db) => db.client().await.batch_execute(sql).await.expect(sql),
            None => rusqlite::Connection::open(self.data_dir().join("ledger.sqlite3"))
                .and_then(|conn| conn.execute_batch(sql))
                .expect(sql),
        }
    }

    async fn ledger_value<T>(&self, sql: &str) -> T
    where
        T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>,
    {
        match &self.db {
            Some(db) => db
                .client()
                .await
                .query_one(sql, &[])
                .await
                .expect(sql)
                .get(0),
            None => rusqlite::Connection::open(self.data_dir().join("ledger.sqlite3"))
                .and_then(|conn| conn.query_row(sql, [], |row| row.get(0)))
                .expect(sql),
        }
    }

    /// Makes an API key in this server's ledger, as `transferd keys create` does, and
    /// returns its id and token.
    pub async fn create_key(&self, owner: &str, act_for_prefix: Option<&str>) -> (String, String) {
        self.make_key(owner, act_for_prefix, None).await
    }

    /// Like [`TestServer::create_key`], for a key that expires at `at`.
    pub async fn create_key_expiring(
        &self,
        owner: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> (String, String) {
        self.make_key(owner, None, Some(at)).await
    }

    async fn make_key(
        &self,
        owner: &str,
        act_for_prefix: Option<&str>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> (String, String) {
        let ledger = self.open_ledger().await;
        let issued = transfer_service::identity::api_key::issue().expect("random bytes");
        ledger
            .create_key(&transfer_service::ledger::NewApiKey {
                id: issued.id.clone(),
                secret_sha256: issued.secret_sha256,
                owner: owner.to_owned(),
                act_for_prefix: act_for_prefix.map(str::to_owned),
                expires_at,
            })
            .await
            .expect("creating an API key");
        (issued.id, issued.token)
    }

    /// Revokes an API key in this server's ledger, as `transferd keys revoke` does.
    pub async fn revoke_key(&self, id: &str) {
        let revoked = self.open_ledger().await.revoke_key(id).await;
        assert!(revoked.expect("revoking an API key"), "no key {id}");
    }

    /// A second handle on this server's ledger database.
    pub async fn open_ledger(&self) -> std::sync::Arc<dyn transfer_service::ledger::Ledger> {
        self.settings
            .ledger_location()
            .expect("the ledger's location")
            .open(2, None)
            .await
            .expect("opening the ledger")
    }

    /// A garbage collector on this server's ledger and blob store, with this grace
    /// period: tests run its passes themselves, where they want them.
    pub async fn collector(
        &self,
        grace: std::time::Duration,
    ) -> transfer_service::lifecycle::GarbageCollector {
        let buffers = transfer_wire::aligned::BufferPool::new(1 << 20);
        let blobs = self
            .settings
            .blobs
            .open(self.data_dir(), buffers)
            .expect("opening the server's blob store");
        transfer_service::lifecycle::GarbageCollector::new(self.open_ledger().await, blobs, grace)
    }

    /// Runs a garbage collection pass with no grace now: spare copies of content that
    /// completions made, and content no file holds, are deleted.
    pub async fn collect_garbage_now(&self) -> transfer_service::lifecycle::Collected {
        self.collector(std::time::Duration::ZERO)
            .await
            .pass()
            .await
            .expect("a garbage collection pass")
    }

    /// Every complete content file the blob store holds.
    pub fn content_files(&self) -> Vec<PathBuf> {
        files_under(&self.data_dir().join("content"))
    }

    /// Every staged upload the blob store holds.
    pub fn staging_files(&self) -> Vec<PathBuf> {
        files_under(&self.data_dir().join("staging"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            running.task.abort();
        }
    }
}

async fn launch(settings: &Settings) -> (SocketAddr, Running) {
    let transferd = Transferd::open(settings)
        .await
        .unwrap_or_else(|e| panic!("transferd failed to start: {e}"));
    let listener = transfer_service::server::listen(([127, 0, 0, 1], 0).into())
        .expect("binding an ephemeral port");
    let addr = listener.local_addr().expect("the listener's address");
    let replica = transferd.replica_id().to_owned();
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = signal.await;
        };
        if let Err(e) = transferd.serve(listener, stopped).await {
            eprintln!("transferd stopped with an error: {e}");
        }
    });
    (
        addr,
        Running {
            shutdown,
            task,
            replica,
        },
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
