//! The connection to a server: its address and TLS settings, the channel (replaced on
//! [`ServerConnection::reconnect`]), and the calls made on it. Uploads, downloads and
//! retries use this, never the [`crate::TransferClient`] that starts them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use transfer_proto::v1::transfer_service_client::TransferServiceClient;
use transfer_proto::v1::{DownloadRequest, DownloadResponse, UploadChunksRequest};
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};

use crate::config::ClientConfig;
use crate::error::TransferError;
use crate::grpc_call::{CallTarget, ResponseStream};
use crate::metadata::CallMetadata;
use crate::upload_wire::OpeningUpload;

const DOWNLOAD_PATH: &str = "/transfer.v1.TransferService/Download";

/// The way to one server, shared by every transfer of a client (cheap to clone): its
/// settings, the current connection, and the buffers downloaded pieces are read into.
#[derive(Clone)]
pub(crate) struct ServerConnection {
    current: Arc<Mutex<Connection>>,
    /// Further connections, opened as transfers stripe over them: lane `n` is
    /// `lanes[n - 1]` (lane 0 is `current`).
    lanes: Arc<Mutex<Vec<Option<Connection>>>>,
    /// The server's address with its TLS settings.
    endpoint: Endpoint,
    metadata: CallMetadata,
    config: Arc<ClientConfig>,
    buffers: Arc<BufferPool>,
}

impl ServerConnection {
    /// A connection to `config.endpoint`, made on first use.
    pub(crate) fn new(config: ClientConfig) -> Result<Self, TransferError> {
        let (endpoint, metadata) = configure(&config)?;
        let connection = Connection::open(&endpoint, &config, metadata.clone());
        Ok(Self {
            current: Arc::new(Mutex::new(connection)),
            lanes: Arc::new(Mutex::new(Vec::new())),
            endpoint,
            metadata,
            config: Arc::new(config),
            buffers: BufferPool::new(DEFAULT_POOL_BYTES),
        })
    }

    /// The buffers this client reads downloads into (and copies unaligned pieces to).
    pub(crate) fn buffers(&self) -> &Arc<BufferPool> {
        &self.buffers
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The generated client on the current connection.
    pub(crate) fn raw(&self) -> RawClient {
        self.lock().raw.clone()
    }

    /// Starts an `UploadChunks` call sending `requests` on connection `lane` (0 is the
    /// one every other call uses; each other lane is a connection of its own), below
    /// tonic's codec (see [`crate::upload_wire`]); the requests flow before the call's
    /// answer is back.
    pub(crate) fn upload_chunks(
        &self,
        lane: usize,
        upload_id: &str,
        requests: impl futures::Stream<Item = UploadChunksRequest> + Send + 'static,
    ) -> OpeningUpload {
        let mut target = self.call_target(lane);
        target.owner = target.owner.for_upload(upload_id);
        OpeningUpload::start(target, requests)
    }

    /// Starts a `Download` call, below tonic's codec so that each piece's data arrives
    /// page-aligned for the `.part` file's direct writes (see [`crate::grpc_call`]).
    pub(crate) async fn download_pieces(
        &self,
        lane: usize,
        request: &DownloadRequest,
    ) -> Result<ResponseStream<DownloadResponse>, Status> {
        let body = crate::grpc_call::one_message(request);
        crate::grpc_call::call(self.call_target(lane), DOWNLOAD_PATH, body).await
    }

    /// A `Download` of `length` bytes from `offset` on connection `lane`, made once the
    /// stream is first polled; a call that could not be made is its only item.
    pub(crate) fn download_range(
        &self,
        lane: usize,
        file_id: &str,
        offset: u64,
        length: u64,
    ) -> DownloadStream {
        let target = self.call_target(lane);
        let request = DownloadRequest {
            file_id: file_id.to_owned(),
            offset,
            length,
        };
        let call = async move {
            let body = crate::grpc_call::one_message(&request);
            crate::grpc_call::call::<DownloadResponse>(target, DOWNLOAD_PATH, body).await
        };
        futures::stream::once(call)
            .flat_map(|opened| match opened {
                Ok(stream) => stream.left_stream(),
                Err(status) => futures::stream::iter([Err(status)]).right_stream(),
            })
            .boxed()
    }

    /// Drops every connection for new ones: a hung TCP connection would keep every new
    /// stream on it hung as well. Calls already running keep the old ones.
    pub(crate) fn reconnect(&self) {
        let mut connection = self.lock();
        *connection = Connection::open(&self.endpoint, &self.config, self.metadata.clone());
        self.lock_lanes().clear();
    }

    /// Drops connection `lane` for a new one (the next call on it opens it).
    pub(crate) fn reconnect_lane(&self, lane: usize) {
        match lane.checked_sub(1) {
            None => self.reconnect(),
            Some(index) => {
                if let Some(slot) = self.lock_lanes().get_mut(index) {
                    *slot = None;
                }
            }
        }
    }

    fn call_target(&self, lane: usize) -> CallTarget {
        let (channel, owner) = match lane.checked_sub(1) {
            None => {
                let connection = self.lock();
                (connection.channel.clone(), connection.metadata.clone())
            }
            Some(index) => {
                let mut lanes = self.lock_lanes();
                if lanes.len() <= index {
                    lanes.resize_with(index + 1, || None);
                }
                let connection = lanes[index].get_or_insert_with(|| {
                    Connection::open(&self.endpoint, &self.config, self.metadata.clone())
                });
                (connection.channel.clone(), connection.metadata.clone())
            }
        };
        CallTarget {
            channel,
            owner,
            buffers: Arc::clone(&self.buffers),
        }
    }

    fn lock_lanes(&self) -> std::sync::MutexGuard<'_, Vec<Option<Connection>>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The responses of a `Download` call.
pub(crate) type DownloadStream =
    futures::stream::BoxStream<'static, Result<DownloadResponse, Status>>;

/// The generated client, with the call metadata added to every call.
pub type RawClient = TransferServiceClient<InterceptedService<Channel, CallMetadata>>;

/// The server's endpoint (with TLS for `https://`) and the metadata of every call, from
/// the client's settings.
fn configure(config: &ClientConfig) -> Result<(Endpoint, CallMetadata), TransferError> {
    let bad = |reason: String| TransferError::BadEndpoint {
        endpoint: config.endpoint.clone(),
        reason,
    };
    let tls = config.endpoint.starts_with("https://");
    if !(tls || config.endpoint.starts_with("http://")) {
        return Err(bad("it must start with http:// or https://".into()));
    }
    let mut endpoint =
        Endpoint::from_shared(config.endpoint.clone()).map_err(|e| bad(e.to_string()))?;
    if tls {
        endpoint = endpoint
            .tls_config(tls_config(config))
            .map_err(|e| bad(format!("TLS settings: {e}")))?;
    } else {
        if config.ca_certificate.is_some() || config.client_identity.is_some() {
            return Err(bad(
                "a CA or client certificate needs an https:// server address".into(),
            ));
        }
        // A key sent in cleartext is a key given to everyone on the path.
        let host = endpoint.uri().host().unwrap_or_default();
        if config.token.is_some() && !is_loopback(host) {
            return Err(bad(format!(
                "refusing to send an API key in cleartext to {host}: use https://"
            )));
        }
    }
    let owner = config
        .owner
        .as_deref()
        .map(|o| {
            o.parse()
                .map_err(|_| bad(format!("owner {o:?} is not valid metadata")))
        })
        .transpose()?;
    let authorization = config
        .token
        .as_ref()
        .map(|token| {
            let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.as_str().trim())
                .parse()
                .map_err(|_| bad("the API key is not printable ASCII".into()))?;
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()?;
    Ok((endpoint, CallMetadata::new(owner, authorization)))
}

/// TLS for an `https://` server: its certificate checked against `ca_certificate`, or
/// the system's roots without one, and the client's own certificate when set.
fn tls_config(config: &ClientConfig) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new();
    tls = match &config.ca_certificate {
        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    };
    if let Some(identity) = &config.client_identity {
        tls = tls.identity(Identity::from_pem(
            &identity.certificate_pem,
            &identity.key_pem,
        ));
    }
    tls
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One connection to the server: the generated client on it, and the channel itself for
/// the two bulk calls (`UploadChunks`, `Download`), which are made below tonic's codec.
struct Connection {
    raw: RawClient,
    channel: Channel,
    metadata: CallMetadata,
}

impl Connection {
    /// A lazily connecting client for `endpoint`, with windows sized for large transfers.
    fn open(endpoint: &Endpoint, config: &ClientConfig, metadata: CallMetadata) -> Self {
        let channel = endpoint
            .clone()
            .initial_stream_window_size(config.http2_stream_window)
            .initial_connection_window_size(config.http2_connection_window)
            .http2_adaptive_window(config.http2_adaptive_window)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .connect_lazy();
        let raw = TransferServiceClient::with_interceptor(channel.clone(), metadata.clone())
            .max_decoding_message_size(64 << 20);
        Connection {
            raw,
            channel,
            metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_is_never_sent_in_cleartext_beyond_loopback() {
        let mut config = ClientConfig::new("http://files.example.com:50051");
        config.token = Some("tfk_x".into());
        assert!(configure(&config).is_err());
        config.endpoint = "http://127.0.0.1:50051".into();
        assert!(configure(&config).is_ok());
        config.endpoint = "http://[::1]:50051".into();
        assert!(configure(&config).is_ok());
        config.endpoint = "https://files.example.com:50051".into();
        assert!(configure(&config).is_ok());
    }

    #[test]
    fn certificates_need_an_https_address() {
        let mut config = ClientConfig::new("http://127.0.0.1:50051");
        config.ca_certificate = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
        assert!(configure(&config).is_err());
    }
}
