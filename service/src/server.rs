//! Assembles `transferd`: ledger, blob store, the Transfer service, gRPC health and
//! reflection, served over HTTP/2 with windows sized for large transfers.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use transfer_proto::v1::transfer_service_server::TransferServiceServer;
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};

use crate::Settings;
use crate::bulk_route::BulkRoute;
use crate::config::{DedupScope, Security, SettingsError};
use crate::connections::LimitedIncoming;
use crate::connections::idle::{CallTracking, ConnectionTable};
use crate::control::ControlPlane;
use crate::grpc::TransferApi;
use crate::identity::{Authenticator, IdentityLayer};
use crate::ledger::{KeyLedger, LedgerError};
use crate::lifecycle::{self, ExpirySweeper, GarbageCollector, sweep_orphaned_staging};
use crate::replica::Replica;
use crate::store_config::BlobStoreError;
use crate::upload::SessionRegistry;
use crate::upload::possession::Challenges;
use tokio_util::sync::CancellationToken;

/// Largest HTTP/2 frame the client may send: a 4 MiB chunk in 16 KiB frames (the
/// protocol's default) costs the server 256 frames of bookkeeping and wake-ups.
const MAX_FRAME_SIZE: u32 = 1 << 20;
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Room for a chunk's message framing beyond its data.
pub(crate) const MESSAGE_OVERHEAD: usize = 64 << 10;
/// Largest message of a unary call or a `Download` request: names are at most 1 KiB.
const MAX_UNARY_MESSAGE: usize = 16 << 10;
/// Longest a call may take to produce its response (its headers, for a stream): a unary
/// request sent too slowly holds a buffer meanwhile.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("opening the ledger failed: {0}")]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Blob(#[from] BlobStoreError),
    #[error("building gRPC reflection failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving gRPC failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("starting the runtime for short calls failed: {0}")]
    ControlPlane(std::io::Error),
    #[error("drawing the secret for possession challenges failed: {0}")]
    Randomness(getrandom::Error),
    /// Another `transferd` has this embedded ledger open.
    #[error(
        "{} is in use by another transferd (its lock {} is held): an embedded SQLite ledger serves one process only; stop the other, give this one its own --data-dir, or run replicas on one PostgreSQL ledger (--database-url)",
        ledger.display(), lock.display()
    )]
    LedgerInUse {
        ledger: std::path::PathBuf,
        lock: std::path::PathBuf,
    },
    #[error("locking {} failed: {error}", lock.display())]
    LedgerLock {
        lock: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("reading {file} failed: {error}")]
    TlsFile {
        file: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// Takes the lock of an embedded ledger (`<ledger>.lock` beside it) for as long as the
/// returned file is open: a second `transferd` on the same file would reset the first's
/// heartbeat and race its sessions, and its staging files. Released by the kernel
/// however the process ends.
fn lock_embedded_ledger(ledger: &std::path::Path) -> Result<std::fs::File, StartupError> {
    let lock = ledger.with_extension("lock");
    if let Some(dir) = lock.parent() {
        // The ledger creates its directory too; the lock comes first.
        let _ = std::fs::create_dir_all(dir);
    }
    let failed = |error| StartupError::LedgerLock {
        lock: lock.clone(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartupError::LedgerInUse {
            ledger: ledger.to_owned(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(failed(error)),
    }
}

/// A `transferd` with its storage opened, ready to serve.
pub struct Transferd {
    api: TransferApi,
    /// This replica's heartbeat, stopped once the server has stopped (its leases then go).
    heartbeat: (CancellationToken, tokio::task::JoinHandle<()>),
    authenticator: Arc<Authenticator>,
    tls: Option<ServerTlsConfig>,
    max_streams_per_connection: u32,
    max_connections: usize,
    connection_idle_timeout: std::time::Duration,
    max_message_size: usize,
    reflection: bool,
    http2: Http2Windows,
    /// Held while this server lives, for an embedded ledger: see [`lock_embedded_ledger`].
    _ledger_lock: Option<std::fs::File>,
}

/// HTTP/2 flow control: hyper's defaults let one stream move only 64 KiB per round
/// trip, far below what a large upload needs (see `--http2-stream-window`).
#[derive(Debug, Clone, Copy)]
struct Http2Windows {
    stream: u32,
    connection: u32,
    adaptive: bool,
}

impl Transferd {
    /// This server's name as a replica (what its leases carry).
    pub fn replica_id(&self) -> &str {
        &self.api.sessions().replica().id
    }

    /// Opens the ledger (applying migrations) and the blob store, and starts this
    /// server's control runtime, where short calls run (see [`crate::control`]).
    pub async fn open(settings: &Settings) -> Result<Self, StartupError> {
        let limits = settings.limits()?;
        if std::env::var_os("TRANSFERD_PARKED_MEMORY_BYTES").is_some() {
            // The flag kept its old name as an alias; an environment variable cannot.
            tracing::warn!(
                "TRANSFERD_PARKED_MEMORY_BYTES is no longer read: set TRANSFERD_UPLOAD_MEMORY_BYTES (--upload-memory-bytes) instead"
            );
        }
        let security = settings.security()?;
        let location = settings.ledger_location()?;
        let ledger_lock = match &location {
            crate::ledger::LedgerLocation::Sqlite(path) => Some(lock_embedded_ledger(path)?),
            _ => None,
        };
        let control = Arc::new(ControlPlane::start().map_err(StartupError::ControlPlane)?);
        let ledger = location
            .open(settings.database_pool_size, Some(control.handle().clone()))
            .await?;
        tracing::info!(ledger = %location, "ledger open");
        let tls = tls_config(&security)?;
        let authenticator = Arc::new(match security.authenticates() {
            true => Authenticator::new(
                security
                    .api_keys
                    .then(|| Arc::clone(&ledger) as Arc<dyn KeyLedger>),
                security.client_ca.is_some(),
            ),
            false => Authenticator::trusting_owner_metadata(),
        });
        log_security(&security);
        // One pool of buffers for the server's bulk data: chunks read off the network,
        // content read back from disk.
        let buffers = BufferPool::new(DEFAULT_POOL_BYTES);
        let embedded = matches!(location, crate::ledger::LedgerLocation::Sqlite(_));
        let blobs = settings
            .blobs
            .open_claimed(
                &settings.data_dir,
                Arc::clone(&buffers),
                ledger.as_ref(),
                embedded,
            )
            .await?;
        tracing::info!(blob_store = %settings.blobs.describe(&settings.data_dir), "blob store open");
        tokio::spawn(sweep_orphaned_staging(
            Arc::clone(&ledger),
            Arc::clone(&blobs),
        ));
        let challenges = match settings.dedup_scope {
            DedupScope::Owner => None,
            DedupScope::Global => {
                tracing::info!(
                    "instant upload across owners with proof of possession (--dedup-scope global)"
                );
                Some(Arc::new(
                    Challenges::new().map_err(StartupError::Randomness)?,
                ))
            }
        };
        // Alive in the ledger before any session takes a lease: other replicas take over
        // at once the uploads of a holder they do not see alive.
        let replica = Arc::new(Replica::new(settings.lease_ttl()));
        ledger.heartbeat(&replica.id, replica.lease_ttl).await?;
        tracing::info!(replica = %replica.id, "replica alive in the ledger");
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = replica.spawn_heartbeat(Arc::clone(&ledger), stop_heartbeat.clone());
        let sessions = SessionRegistry::new(
            Arc::clone(&ledger),
            Arc::clone(&blobs),
            limits,
            settings.session_idle_timeout(),
            buffers,
            replica,
        );
        sessions.listen_for_handovers();
        lifecycle::spawn(
            ExpirySweeper::new(
                Arc::clone(&ledger),
                Arc::clone(&blobs),
                Arc::clone(&sessions),
                limits,
            ),
            GarbageCollector::new(Arc::clone(&ledger), Arc::clone(&blobs), settings.gc_grace()),
            (Arc::clone(&ledger) as _, Arc::clone(&blobs)),
            settings.gc_interval(),
        );
        Ok(Self {
            api: TransferApi::new(ledger, blobs, sessions, limits, control, challenges),
            heartbeat: (stop_heartbeat, heartbeat),
            authenticator,
            tls,
            max_streams_per_connection: settings.max_streams_per_connection,
            max_connections: settings.max_connections,
            connection_idle_timeout: std::time::Duration::from_secs(settings.connection_idle_secs),
            max_message_size: limits.max_chunk_size as usize + MESSAGE_OVERHEAD,
            reflection: settings.reflection,
            http2: Http2Windows {
                stream: settings.http2_stream_window,
                connection: settings.http2_connection_window,
                adaptive: settings.http2_adaptive_window,
            },
            _ledger_lock: ledger_lock,
        })
    }

    /// Serves on `listener` (from [`listen`]) until `shutdown` resolves, then lets
    /// running calls finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        // However serving ends, even dropped mid-way (a forced stop), the heartbeat stops
        // and lets go of this replica's leases.
        let (stop_heartbeat, heartbeat) = self.heartbeat;
        let _stop_heartbeat_when_dropped = stop_heartbeat.clone().drop_guard();
        // Stopping begins with a drain: streams finish what they have in flight and end
        // with UNAVAILABLE, so the graceful shutdown that follows has little to wait for.
        let sessions = Arc::clone(self.api.sessions());
        let shutdown = async move {
            shutdown.await;
            sessions.drain();
        };
        let api = Arc::new(self.api);
        let transfer = BulkRoute::new(
            Arc::clone(&api),
            // Chunks arrive through the bulk route, which has its own limit.
            TransferServiceServer::from_arc(api)
                .max_decoding_message_size(MAX_UNARY_MESSAGE)
                .max_encoding_message_size(self.max_message_size),
            self.max_message_size,
        );

        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<TransferServiceServer<TransferApi>>()
            .await;

        // grpcurl builds from before v1 still ask for v1alpha: serve both.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(transfer_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let (reflection_v1, reflection_v1alpha) = if self.reflection {
            (
                Some(reflection().build_v1()?),
                Some(reflection().build_v1alpha()?),
            )
        } else {
            (None, None)
        };

        let connections = Arc::new(ConnectionTable::default());
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        builder
            .initial_stream_window_size(self.http2.stream)
            .initial_connection_window_size(self.http2.connection)
            .http2_adaptive_window(Some(self.http2.adaptive))
            .max_frame_size(MAX_FRAME_SIZE)
            .max_concurrent_streams(self.max_streams_per_connection)
            .timeout(CALL_TIMEOUT)
            // Find clients that vanished without closing their connection.
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            // Every call, of every service, is authenticated here first.
            // Every call is counted on its connection, so idle ones can be closed.
            .layer(CallTracking)
            .layer(IdentityLayer::new(self.authenticator))
            .add_service(health)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(transfer)
            .serve_with_incoming_shutdown(
                LimitedIncoming::new(
                    accepted(listener),
                    self.max_connections,
                    connections,
                    self.connection_idle_timeout,
                ),
                shutdown,
            )
            .await?;
        // Stopped cleanly: let go of this replica's leases, so that others take its
        // uploads over at once rather than after the lease period.
        stop_heartbeat.cancel();
        let _ = heartbeat.await;
        Ok(())
    }
}

/// The TLS settings, with the certificate files read now so a bad path fails start-up.
fn tls_config(security: &Security) -> Result<Option<ServerTlsConfig>, StartupError> {
    let Some((cert, key)) = &security.tls else {
        return Ok(None);
    };
    let read = |file: &std::path::PathBuf| {
        std::fs::read(file).map_err(|error| StartupError::TlsFile {
            file: file.clone(),
            error,
        })
    };
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &security.client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca)?))
            // With API keys as well, a client may bring either.
            .client_auth_optional(security.api_keys);
    }
    Ok(Some(config))
}

/// Says how calls are secured, so an operator sees it at start-up.
fn log_security(security: &Security) {
    let tls = if security.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    match (security.api_keys, security.client_ca.is_some()) {
        (false, false) => tracing::warn!(
            "no authentication configured: calls act for the owner named in x-transfer-owner \
             (\"default\" without it), over {tls}; serve only where every caller is trusted"
        ),
        (true, false) => tracing::info!("calls authenticate with API keys, over {tls}"),
        (false, true) => tracing::info!("calls authenticate with client certificates, over TLS"),
        (true, true) => {
            tracing::info!("calls authenticate with API keys or client certificates, over TLS")
        }
    }
}

/// Connections the kernel may hold for us before we accept them (the kernel caps it at
/// `net.core.somaxconn`). The usual 128 overflows when a few hundred clients connect at
/// once, and a dropped SYN costs its client a second or more before it tries again.
const LISTEN_BACKLOG: u32 = 4096;

/// The connections `listener` accepts, with Nagle's algorithm off. tonic's own
/// `tcp_nodelay` setting applies only to listeners it binds itself. With Nagle on, a small
/// write (a `CheckUpload` answer, an ack, `completed`) waits until the peer acknowledges
/// the previous one: on a link with delay, a one-way trip or a delayed-ACK timeout more.
fn accepted(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A listener on `addr` with a backlog for many clients connecting at once.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // Restarting must not wait for the old process's connections to time out.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_without_waiting_for_acks() {
        let listener = listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = accepted(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connection = incoming.next().await.unwrap().unwrap();
        assert!(
            connection.nodelay().unwrap(),
            "TCP_NODELAY is set on accepted connections"
        );
    }
}
