//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata: the client writes
//! the caller's, the server continues it. Sent and read through the global text map
//! propagator, so nothing travels unless the application set one.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};

/// Reads trace context from gRPC metadata.
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes trace context into gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the caller's trace context into `metadata`: the current `tracing` span's
/// (with `tracing-opentelemetry`), or else the current OpenTelemetry context.
pub fn inject_current(metadata: &mut MetadataMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let from_span = tracing::Span::current().context();
    let context = if from_span.span().span_context().is_valid() {
        from_span
    } else {
        opentelemetry::Context::current()
    };
    inject(&context, metadata);
}

/// Writes `context` into `metadata`.
pub fn inject(context: &opentelemetry::Context, metadata: &mut MetadataMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut MetadataInjector(metadata));
    });
}

/// The caller's trace context from a request's metadata.
pub fn extract(metadata: &MetadataMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&MetadataExtractor(metadata))
    })
}
