//! The service's OpenTelemetry instruments. They cost a counter update each, and nothing
//! at all when no exporter is configured.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};

pub struct Metrics {
    /// Chunk bytes accepted from clients (`By`).
    pub bytes_received: Counter<u64>,
    /// File bytes sent to clients by downloads (`By`).
    pub bytes_sent: Counter<u64>,
    /// Chunks acknowledged, by `outcome` (`stored`, `already_stored`).
    pub chunks_acknowledged: Counter<u64>,
    /// Chunks rejected, by `reason` (`bad_checksum`, `wrong_length`, `index_out_of_range`).
    pub chunks_rejected: Counter<u64>,
    /// `CheckUpload` calls answered with `already_stored`.
    pub instant_uploads: Counter<u64>,
    /// Staged bytes a restarted session read back to rebuild its hash (`By`).
    pub bytes_rehashed: Counter<u64>,
    /// Open uploads the sweeper closed because nothing happened to them for the expiry
    /// period.
    pub uploads_expired: Counter<u64>,
    /// Contents the garbage collector forgot: no file referred to them for the grace period.
    pub contents_collected: Counter<u64>,
    /// Blobs deleted from the store by the garbage collector.
    pub blobs_deleted: Counter<u64>,
    /// Upload sessions with a task in memory.
    pub active_sessions: UpDownCounter<i64>,
    /// Open `UploadChunks` streams.
    pub active_streams: UpDownCounter<i64>,
    /// From a chunk's arrival to its ack: write, sync and ledger commit (`s`).
    pub chunk_commit_duration: Histogram<f64>,
    /// One ledger transaction recording a batch of chunks (`s`).
    pub ledger_transaction_duration: Histogram<f64>,
    /// From opening an upload session to its completion (`s`).
    pub upload_duration: Histogram<f64>,
    /// How long taking an upload over from another replica took, waiting included.
    pub takeover_seconds: Histogram<f64>,
    /// One `Download` stream (`s`).
    pub download_duration: Histogram<f64>,
}

/// The instruments, made on first use from the global meter provider.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("transferd");
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .build()
        };
        Metrics {
            bytes_received: meter
                .u64_counter("transfer.bytes.received")
                .with_unit("By")
                .with_description("Chunk bytes accepted from clients")
                .build(),
            bytes_sent: meter
                .u64_counter("transfer.bytes.sent")
                .with_unit("By")
                .with_description("File bytes sent by downloads")
                .build(),
            uploads_expired: meter
                .u64_counter("transfer.uploads.expired")
                .with_description("Open uploads closed after the expiry period without activity")
                .build(),
            contents_collected: meter
                .u64_counter("transfer.gc.contents_collected")
                .with_description("Contents no file referred to for the grace period, forgotten")
                .build(),
            blobs_deleted: meter
                .u64_counter("transfer.gc.blobs_deleted")
                .with_description("Blobs the garbage collector deleted from the store")
                .build(),
            chunks_acknowledged: meter
                .u64_counter("transfer.chunks.acknowledged")
                .with_description("Chunks acknowledged, by outcome")
                .build(),
            chunks_rejected: meter
                .u64_counter("transfer.chunks.rejected")
                .with_description("Chunks rejected, by reason")
                .build(),
            instant_uploads: meter
                .u64_counter("transfer.uploads.instant")
                .with_description("CheckUpload calls answered with already_stored")
                .build(),
            bytes_rehashed: meter
                .u64_counter("transfer.bytes.rehashed")
                .with_unit("By")
                .with_description("Staged bytes a restarted session read back to rebuild its hash")
                .build(),
            active_sessions: meter
                .i64_up_down_counter("transfer.upload.sessions.active")
                .with_description("Upload sessions with a task in memory")
                .build(),
            active_streams: meter
                .i64_up_down_counter("transfer.upload.streams.active")
                .with_description("Open UploadChunks streams")
                .build(),
            chunk_commit_duration: seconds(
                "transfer.chunk.commit.duration",
                "From a chunk's arrival to its ack",
            ),
            ledger_transaction_duration: seconds(
                "transfer.ledger.transaction.duration",
                "One ledger transaction recording a batch of chunks",
            ),
            takeover_seconds: seconds(
                "transfer.upload.takeover.duration",
                "Time to take an upload over from another replica: a live holder's hand-over, or a dead one's lease running out",
            ),
            upload_duration: seconds(
                "transfer.upload.duration",
                "From opening an upload session to its completion",
            ),
            download_duration: seconds("transfer.download.duration", "One Download stream"),
        }
    })
}

/// An attribute list of one key and value.
pub fn attribute(key: &'static str, value: &'static str) -> [KeyValue; 1] {
    [KeyValue::new(key, value)]
}
