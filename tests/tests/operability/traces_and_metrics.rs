use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use transfer_client::{ClientConfig, TransferClient};
use transfer_tests::{Ledger, TestFile, TransferdProcess};

use crate::otlp_receiver::{self, Received, int_attribute, string_attribute};

const CHUNK: u32 = 64 * 1024;

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The sum of the latest data point of a cumulative counter, over all attribute sets.
fn counter_total(received: &Received, name: &str, with: Option<(&str, &str)>) -> i64 {
    let Some(metric::Data::Sum(sum)) = received.metric(name).pop() else {
        return 0;
    };
    sum.data_points
        .iter()
        .filter(|p| {
            with.is_none_or(|(k, v)| string_attribute(&p.attributes, k).as_deref() == Some(v))
        })
        .map(|p| match p.value {
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => i,
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                d,
            )) => d as i64,
            None => 0,
        })
        .sum()
}

fn histogram_count(received: &Received, name: &str) -> u64 {
    match received.metric(name).pop() {
        Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|p| p.count).sum(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_and_a_download_export_linked_spans_and_metrics_over_otlp() {
    let (collector, received) = otlp_receiver::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        ("OTEL_SERVICE_NAME", "transferd-under-test".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let server = TransferdProcess::start_with_env(Ledger::Sqlite, &env).await;

    let file = TestFile::new("traced.bin", 10 * CHUNK as usize + 5, 400);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&file.name);
    std::fs::write(&path, &file.data).unwrap();
    let mut config = ClientConfig::new(server.endpoint());
    config.chunk_size = CHUNK;
    let client = TransferClient::new(config).unwrap();

    // The caller's own trace: the client library carries it to the server.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let caller = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let context = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        caller,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let (uploaded, downloaded) = {
        let _attached = context.attach();
        let upload = client.upload_path(&path);
        let download_to = dir.path().join("copy.bin");
        let uploaded = upload.wait().await.expect("the upload completes");
        let download = client.download(&uploaded.file.file_id, &download_to);
        (
            uploaded,
            download.wait().await.expect("the download completes"),
        )
    };
    assert_eq!(std::fs::read(&downloaded.path).unwrap(), file.data);
    let chunks = (file.data.len() as u64).div_ceil(u64::from(CHUNK)) as i64;

    // Spans and metrics arrive in batches: wait until everything is there.
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = received.spans();
        let complete = !named(&spans, "transfer.v1.TransferService/Download").is_empty()
            && counter_total(&received, "transfer.bytes.sent", None) >= file.data.len() as i64;
        if complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
    assert!(
        received
            .service_names()
            .contains(&"transferd-under-test".to_owned()),
        "service names {:?}; spans {names:?}",
        received.service_names()
    );

    let check = named(&spans, "transfer.v1.TransferService/CheckUpload");
    let check = check.first().expect("a CheckUpload span");
    assert_eq!(
        check.trace_id,
        trace_id.to_bytes().to_vec(),
        "the caller's trace continues"
    );
    assert_eq!(
        check.parent_span_id,
        caller.to_bytes().to_vec(),
        "under the caller's span"
    );
    assert_eq!(
        string_attribute(&check.attributes, "rpc.method").as_deref(),
        Some("CheckUpload")
    );
    assert_eq!(
        string_attribute(&check.attributes, "transfer.owner").as_deref(),
        Some("default")
    );
    assert_eq!(
        int_attribute(&check.attributes, "transfer.file_size"),
        Some(file.data.len() as i64)
    );
    assert_eq!(
        int_attribute(&check.attributes, "transfer.chunk_size"),
        Some(i64::from(CHUNK))
    );
    assert_eq!(
        int_attribute(&check.attributes, "rpc.grpc.status_code"),
        Some(0)
    );

    // A single-pass upload's CheckUpload looks up the owner's files by head, then opens.
    for lookup in ["ledger.files_with_head", "ledger.open_upload"] {
        let child = named(&spans, lookup);
        let child = child.first().unwrap_or_else(|| panic!("a {lookup} span"));
        assert_eq!(
            child.parent_span_id, check.span_id,
            "{lookup} is a child of CheckUpload"
        );
    }

    let stream = named(&spans, "transfer.v1.TransferService/UploadChunks");
    let stream = stream.first().expect("an UploadChunks span");
    assert_eq!(stream.trace_id, trace_id.to_bytes().to_vec());
    assert_eq!(
        string_attribute(&stream.attributes, "transfer.upload_id").as_deref(),
        Some(uploaded.file.file_id.as_str())
    );
    assert_eq!(
        int_attribute(&stream.attributes, "rpc.grpc.status_code"),
        Some(0)
    );
    for storage in ["blob.put_parts", "ledger.commit_chunks"] {
        let children = named(&spans, storage);
        assert!(!children.is_empty(), "{storage} spans are exported");
        for child in children {
            assert_eq!(
                child.parent_span_id, stream.span_id,
                "{storage} is a child of the stream"
            );
            assert_eq!(child.trace_id, stream.trace_id);
        }
    }
    let download = named(&spans, "transfer.v1.TransferService/Download");
    assert_eq!(download[0].trace_id, trace_id.to_bytes().to_vec());

    let size = file.data.len() as i64;
    assert_eq!(
        counter_total(&received, "transfer.bytes.received", None),
        size
    );
    assert_eq!(counter_total(&received, "transfer.bytes.sent", None), size);
    assert_eq!(
        counter_total(
            &received,
            "transfer.chunks.acknowledged",
            Some(("outcome", "stored"))
        ),
        chunks
    );
    assert_eq!(
        histogram_count(&received, "transfer.chunk.commit.duration"),
        chunks as u64
    );
    assert!(histogram_count(&received, "transfer.ledger.transaction.duration") >= 1);
    assert_eq!(histogram_count(&received, "transfer.upload.duration"), 1);
    assert_eq!(histogram_count(&received, "transfer.download.duration"), 1);
}
