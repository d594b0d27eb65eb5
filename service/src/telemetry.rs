//! Logs, traces and metrics.
//!
//! Logs are `tracing` output on stderr: text for people, or JSON lines. Traces and
//! metrics go to an OpenTelemetry collector over OTLP/gRPC when the standard variables
//! name one (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the `_TRACES_`/`_METRICS_` variants);
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
//! `OTEL_METRIC_EXPORT_INTERVAL` and the other standard variables apply. Without an
//! endpoint nothing is exported and the instruments are no-ops.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::MetadataMap;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain lines for people.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("setting up the OTLP exporter failed: {0}")]
    Exporter(String),
    #[error("setting up logging failed: {0}")]
    Logging(String),
}

/// The exporters in use; flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

fn variable_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the OTEL_* variables ask to export a signal (`TRACES` or `METRICS`): an
/// endpoint for it or for all signals, and neither the SDK nor that exporter turned off.
fn otlp_requested(signal: &str) -> bool {
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    !is("OTEL_SDK_DISABLED", "true")
        && !is(&format!("OTEL_{signal}_EXPORTER"), "none")
        && (variable_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || variable_set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

impl Telemetry {
    /// Installs logging and, when configured, OTLP export. Call inside the Tokio runtime.
    pub fn init(format: LogFormat) -> Result<Self, TelemetryError> {
        // RUST_LOG filters the logs only: spans for traces are kept at info and above
        // whatever the log level. Migration chatter from refinery is noise at info level.
        let log_filter = || {
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn"))
        };
        let ansi = std::io::stderr().is_terminal();
        let text = (format == LogFormat::Text).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(log_filter())
        });
        let json = (format == LogFormat::Json).then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(log_filter())
        });

        let resource = opentelemetry_sdk::Resource::builder().build();
        let tracer_provider = if otlp_requested("TRACES") {
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(spans)
                    .with_resource(resource.clone())
                    .build(),
            )
        } else {
            None
        };
        let meter_provider = if otlp_requested("METRICS") {
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let provider = SdkMeterProvider::builder()
                .with_periodic_exporter(metrics)
                .with_resource(resource)
                .build();
            opentelemetry::global::set_meter_provider(provider.clone());
            Some(provider)
        } else {
            None
        };
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let traces = tracer_provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("transferd"))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        });

        tracing_subscriber::registry()
            .with(text)
            .with(json)
            .with(traces)
            .try_init()
            .map_err(|e| TelemetryError::Logging(e.to_string()))?;
        if tracer_provider.is_some() || meter_provider.is_some() {
            tracing::info!(
                traces = tracer_provider.is_some(),
                metrics = meter_provider.is_some(),
                "exporting over OTLP"
            );
        }
        Ok(Self {
            tracer_provider,
            meter_provider,
        })
    }

    /// Flushes what is buffered and stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider {
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.meter_provider {
            let _ = provider.shutdown();
        }
    }
}

/// The span of one RPC, continuing the caller's trace when its metadata carries one.
/// Handlers record `transfer.*` attributes on it as they learn them, and the outcome with
/// [`record_status`].
pub fn rpc_span(method: &'static str, metadata: &MetadataMap) -> tracing::Span {
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        "rpc",
        otel.name = format!("transfer.v1.TransferService/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = "transfer.v1.TransferService",
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        transfer.owner = Empty,
        transfer.upload_id = Empty,
        transfer.file_id = Empty,
        transfer.file_size = Empty,
        transfer.chunk_size = Empty,
    );
    let _ = span.set_parent(transfer_shared::trace_context::extract(metadata));
    span
}

/// Records an RPC's outcome (its gRPC status code) on its span.
pub fn record_status(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}
