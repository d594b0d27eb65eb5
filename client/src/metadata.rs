//! The metadata every call carries: the owner, the API key and the caller's trace
//! context.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Adds to every request the owner (`x-transfer-owner`), the API key
/// (`authorization: Bearer …`) and the caller's W3C trace context (`traceparent`). The
/// trace context is the current `tracing` span's (with `tracing-opentelemetry`) or else
/// the current OpenTelemetry context; it is sent when the application has set a global
/// text map propagator.
#[derive(Clone, Default)]
pub struct CallMetadata {
    owner: Option<MetadataValue<Ascii>>,
    authorization: Option<MetadataValue<Ascii>>,
    /// `x-transfer-upload-id` on an upload's streams: what a load balancer in front of
    /// several replicas may hash on, so that an upload's streams meet its session.
    upload_id: Option<MetadataValue<Ascii>>,
}

impl CallMetadata {
    pub(crate) fn new(
        owner: Option<MetadataValue<Ascii>>,
        authorization: Option<MetadataValue<Ascii>>,
    ) -> Self {
        Self {
            owner,
            authorization,
            upload_id: None,
        }
    }

    /// The same metadata, naming upload `id` as well.
    pub(crate) fn for_upload(mut self, id: &str) -> Self {
        self.upload_id = id.parse().ok();
        self
    }
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
        if let Some(upload_id) = &self.upload_id {
            metadata.insert("x-transfer-upload-id", upload_id.clone());
        }
        transfer_shared::trace_context::inject_current(metadata);
        Ok(request)
    }
}
