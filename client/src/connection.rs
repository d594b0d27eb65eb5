//! The connection to a server: its address and TLS settings, the metadata every call
//! carries (owner, API key, trace context), and the channel that reconnects by itself.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use transfer_proto::v1::transfer_service_client::TransferServiceClient;

use crate::config::ClientConfig;
use crate::error::TransferError;

/// The generated client, with the call metadata added to every call.
pub type RawClient = TransferServiceClient<InterceptedService<Channel, CallMetadata>>;

/// Adds to every request the owner (`x-transfer-owner`), the API key
/// (`authorization: Bearer …`) and the caller's W3C trace context (`traceparent`). The
/// trace context is the current `tracing` span's (with `tracing-opentelemetry`) or else
/// the current OpenTelemetry context; it is sent when the application has set a global
/// text map propagator.
#[derive(Clone, Default)]
pub struct CallMetadata {
    owner: Option<MetadataValue<Ascii>>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Interceptor for CallMetadata {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        if let Some(owner) = &self.owner {
            metadata.insert("x-transfer-owner", owner.clone());
        }
        if let Some(authorization) = &self.authorization {
            metadata.insert("authorization", authorization.clone());
        }
        inject_trace_context(metadata);
        Ok(request)
    }
}

/// The server's endpoint (with TLS for `https://`) and the metadata of every call, from
/// the client's settings.
pub(crate) fn configure(config: &ClientConfig) -> Result<(Endpoint, CallMetadata), TransferError> {
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
    Ok((
        endpoint,
        CallMetadata {
            owner,
            authorization,
        },
    ))
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
pub(crate) struct Connection {
    pub(crate) raw: RawClient,
    pub(crate) channel: Channel,
    pub(crate) metadata: CallMetadata,
}

impl Connection {
    /// A lazily connecting client for `endpoint`, with windows sized for large transfers.
    pub(crate) fn open(endpoint: &Endpoint, config: &ClientConfig, metadata: CallMetadata) -> Self {
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

fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let from_span = tracing::Span::current().context();
    let context = if from_span.span().span_context().is_valid() {
        from_span
    } else {
        opentelemetry::Context::current()
    };
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// Writes trace context into gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
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
