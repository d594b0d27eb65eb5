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
}

impl CallMetadata {
    pub(crate) fn new(
        owner: Option<MetadataValue<Ascii>>,
        authorization: Option<MetadataValue<Ascii>>,
    ) -> Self {
        Self {
            owner,
            authorization,
        }
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
        inject_trace_context(metadata);
        Ok(request)
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
