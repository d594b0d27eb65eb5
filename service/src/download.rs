//! `Download`: a complete file, or a byte range of it, as metadata then CRC-checked pieces.

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use tokio::sync::mpsc;
use transfer_proto::v1::{DataPiece, DownloadRequest, DownloadResponse, download_response};

use crate::blob::{BlobError, BlobStore, ContentLocator};
use crate::error::ServiceError;
use crate::files::{file_info, owned_file};
use crate::identity::Owner;
use crate::ledger::{FileState, Ledger};
use crate::metrics::metrics;
use crate::request::parse_id;
use crate::telemetry::record_status;
use tracing::Instrument;

/// Bytes per piece. 1 MiB keeps every message under the 4 MiB that gRPC clients accept
/// by default.
pub const PIECE_SIZE: u64 = 1 << 20;
/// Pieces read ahead of the client.
const READ_AHEAD: usize = 4;

/// The responses of one download; a storage error mid-way ends it.
pub type DownloadPieces =
    tokio_stream::wrappers::ReceiverStream<Result<DownloadResponse, ServiceError>>;

/// Checks the request and starts streaming. Errors found before the first byte (unknown
/// file, bad offset) come back here; a storage error mid-way ends the stream.
pub async fn download(
    ledger: Arc<dyn Ledger>,
    blobs: Arc<dyn BlobStore>,
    draining: CancellationToken,
    owner: &Owner,
    request: DownloadRequest,
) -> Result<DownloadPieces, ServiceError> {
    let id = parse_id("file_id", &request.file_id)?;
    if draining.is_cancelled() {
        return Err(ServiceError::ShuttingDown);
    }
    let file = owned_file(ledger.as_ref(), owner, id).await?;
    if file.state != FileState::Complete {
        return Err(ServiceError::FileNotComplete {
            id,
            state: file.state,
        });
    }
    if request.offset > file.size {
        return Err(ServiceError::OffsetPastEnd {
            offset: request.offset,
            size: file.size,
        });
    }
    let end = match request.length {
        0 => file.size,
        length => request.offset.saturating_add(length).min(file.size),
    };
    let Some(locator) = ledger.content_locator(&file).await? else {
        if ledger.get_file(id).await?.is_none() {
            return Err(ServiceError::FileDeleted(id));
        }
        return Err(ServiceError::StoredDataLost {
            id,
            reason: "the ledger does not say where this complete file's content is".into(),
        });
    };
    let locator = ContentLocator::new(locator);

    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let first = DownloadResponse {
        message: Some(download_response::Message::File(file_info(&file))),
    };
    let span = tracing::Span::current();
    span.record("transfer.file_id", id.to_string());
    span.record("transfer.file_size", file.size);
    let started = std::time::Instant::now();
    let streaming = async move {
        let source = Source {
            ledger,
            blobs,
            locator,
            file: id,
            draining,
        };
        let code = send_pieces(source, request.offset, end, first, &tx).await;
        metrics()
            .download_duration
            .record(started.elapsed().as_secs_f64(), &[]);
        record_status(&tracing::Span::current(), code);
    };
    tokio::spawn(streaming.instrument(span));
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Where a download's bytes come from.
struct Source {
    ledger: Arc<dyn Ledger>,
    blobs: Arc<dyn BlobStore>,
    locator: ContentLocator,
    file: Uuid,
    /// Cancelled when the server drains: the download ends with UNAVAILABLE, and the
    /// client resumes it from where it got to.
    draining: CancellationToken,
}

impl Source {
    /// Reads `len` bytes at `offset`. Content gone from under a file that was deleted
    /// meanwhile (and collected after the grace period) is that, not lost data.
    /// The server draining ends the download here, between pieces.
    async fn read(&self, offset: u64, len: usize) -> Result<Bytes, ServiceError> {
        if self.draining.is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        match self.blobs.read(&self.locator, offset, len).await {
            Ok(data) => Ok(data),
            Err(error @ BlobError::ContentNotFound(_)) => {
                match self.ledger.get_file(self.file).await {
                    Ok(None) => Err(ServiceError::FileDeleted(self.file)),
                    _ => Err(error.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Sends the metadata, then the pieces of `[offset, end)`; the outcome as a gRPC code.
async fn send_pieces(
    source: Source,
    offset: u64,
    end: u64,
    first: DownloadResponse,
    tx: &mpsc::Sender<Result<DownloadResponse, ServiceError>>,
) -> tonic::Code {
    {
        if tx.send(Ok(first)).await.is_err() {
            return tonic::Code::Cancelled;
        }
        // Read in the store's own units (an object store's GET costs a request, so it
        // reads several pieces at once), sent piece by piece.
        let unit = (source.blobs.read_size() as u64).max(PIECE_SIZE);
        let mut offset = offset;
        while offset < end {
            let len = (end - offset).min(unit) as usize;
            let read = match source.read(offset, len).await {
                Ok(data) => data,
                Err(error) => {
                    error.log_if_server_fault();
                    let code = error.code();
                    let _ = tx.send(Err(error)).await;
                    return code;
                }
            };
            for start in (0..read.len()).step_by(PIECE_SIZE as usize) {
                let data = read.slice(start..read.len().min(start + PIECE_SIZE as usize));
                let len = data.len() as u64;
                let piece = DataPiece {
                    offset: offset + start as u64,
                    crc32c: crc32c::crc32c(&data),
                    data,
                };
                let message = DownloadResponse {
                    message: Some(download_response::Message::Piece(piece)),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return tonic::Code::Cancelled;
                }
                metrics().bytes_sent.add(len, &[]);
            }
            offset += len as u64;
        }
    }
    tonic::Code::Ok
}
