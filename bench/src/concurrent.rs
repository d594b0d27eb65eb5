//! Many small uploads at once, each on its own connections, straight through the API:
//! does every one complete, how fast in all, and how long does `CheckUpload` take while
//! the server is busy.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;
use transfer_client::proto::check_upload_response::Result as CheckResult;
use transfer_client::proto::upload_chunks_request::Message as Outgoing;
use transfer_client::proto::upload_chunks_response::Message as Incoming;
use transfer_client::proto::{
    CheckUploadRequest, CheckUploadResponse, Chunk, GetFileRequest, UploadChunksRequest,
    UploadStart,
};
use transfer_client::{ClientConfig, TransferClient};
use transfer_md5::Md5;

use crate::ceilings::random_bytes;

pub struct ConcurrentRun {
    pub completed: usize,
    pub failures: Vec<String>,
    pub seconds: f64,
    /// `CheckUpload` latency of every upload, in seconds.
    pub check_latencies: Vec<f64>,
}

/// Starts `count` uploads of `size` random bytes at once against `endpoint`; with
/// `send` false, each stops after its `CheckUpload` (the burst of requests alone).
pub async fn run(endpoint: &str, count: usize, size: usize, send: bool) -> Result<ConcurrentRun> {
    // Content, digests and checksums first, so the clients' own hashing does not crowd
    // the machine while the server is measured.
    let files: Vec<(Bytes, [u8; 16], u32)> = (0..count)
        .map(|_| {
            let data = random_bytes(size);
            let md5 = Md5::digest(&data);
            let crc = crc32c::crc32c(&data);
            (data.into(), md5, crc)
        })
        .collect();
    // The CheckUpload calls run on a runtime of their own, as if from other machines:
    // on the bench's main runtime they would wait behind the uploads' own sending (the
    // encoding and socket writes of 200 streams), and that wait is the bench's, not the
    // server's.
    let checks = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-checks")
        .enable_all()
        .build()?;
    warm_up(endpoint).await?;
    let started = Instant::now();
    let tasks: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(i, (data, md5, crc))| {
            // 200 clients of one owner would meet the server's bound on one owner's
            // open uploads (64): each is an owner of its own, as many tenants are.
            let mut config = ClientConfig::new(endpoint);
            config.owner = Some(format!("bench-owner-{i}"));
            let checks = checks.handle().clone();
            tokio::spawn(async move { upload_one(config, &checks, i, data, md5, crc, send).await })
        })
        .collect();
    let mut run = ConcurrentRun {
        completed: 0,
        failures: Vec::new(),
        seconds: 0.0,
        check_latencies: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok(Ok(latency)) => {
                run.completed += 1;
                run.check_latencies.push(latency);
            }
            Ok(Err(e)) => run.failures.push(format!("{e:#}")),
            Err(e) => run.failures.push(e.to_string()),
        }
    }
    run.seconds = started.elapsed().as_secs_f64();
    checks.shutdown_background();
    Ok(run)
}

/// A few lookups at once before the run, as a server that has been up a while has had:
/// the ledger's connections for requests are then open, and the first timed calls do
/// not each pay for opening one.
async fn warm_up(endpoint: &str) -> Result<()> {
    let raw = TransferClient::new(ClientConfig::new(endpoint))?.raw();
    let lookups = (0..8).map(|_| {
        let mut raw = raw.clone();
        async move {
            raw.get_file(GetFileRequest {
                file_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
        }
    });
    for lookup in futures::future::join_all(lookups).await {
        match lookup {
            Err(status) if status.code() == tonic::Code::NotFound => {}
            other => bail!("a warm-up lookup of a random id was not NotFound: {other:?}"),
        }
    }
    Ok(())
}

/// One upload in one chunk (`crc` is the whole file's), its `CheckUpload` asked on
/// `checks`; returns that call's latency.
async fn upload_one(
    config: ClientConfig,
    checks: &tokio::runtime::Handle,
    i: usize,
    data: Bytes,
    md5: [u8; 16],
    crc: u32,
    send: bool,
) -> Result<f64> {
    let request = CheckUploadRequest {
        name: format!("concurrent-{i}.bin"),
        size: data.len() as u64,
        md5: md5.to_vec().into(),
        preferred_chunk_size: data.len().max(1) as u32,
        ..Default::default()
    };
    let (latency, answer) = checks.spawn(timed_check(config.clone(), request)).await??;
    let session = match answer.result {
        Some(CheckResult::Session(session)) => session,
        Some(CheckResult::AlreadyStored(_)) => bail!("random content was already stored"),
        Some(CheckResult::MaybeStored(_) | CheckResult::Challenge(_)) | None => {
            bail!("CheckUpload answered no session")
        }
    };
    if !send {
        return Ok(latency);
    }
    if session.chunk_count > 1 {
        bail!(
            "the server chose {} chunks of {} bytes: the bench sends one",
            session.chunk_count,
            session.chunk_size
        );
    }
    let (requests, outgoing) = tokio::sync::mpsc::channel(2);
    requests
        .send(UploadChunksRequest {
            message: Some(Outgoing::Start(UploadStart {
                upload_id: session.upload_id.clone(),
            })),
        })
        .await?;
    if session.chunk_count == 1 {
        requests
            .send(UploadChunksRequest {
                message: Some(Outgoing::Chunk(Chunk {
                    index: 0,
                    crc32c: crc,
                    data,
                })),
            })
            .await?;
    }
    let mut responses = TransferClient::new(config)?
        .raw()
        .upload_chunks(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        if let Some(Incoming::Completed(done)) = response.message {
            let file = done.file.context("completed without a file")?;
            if file.md5[..] != md5 {
                bail!("the server stored a different MD5");
            }
            drop(requests);
            return Ok(latency);
        }
    }
    bail!("the stream ended before the upload completed")
}

/// Connects, then times one `CheckUpload` alone; returns its seconds and its answer.
async fn timed_check(
    config: ClientConfig,
    request: CheckUploadRequest,
) -> Result<(f64, CheckUploadResponse)> {
    let mut raw = TransferClient::new(config)?.raw();
    // Connect first, so the latency below is CheckUpload's alone. A request without a
    // name is refused before the ledger: a warm-up that queried the ledger would load it
    // with 200 queries no real upload makes, beside the checks being measured.
    let refused = raw.check_upload(CheckUploadRequest::default()).await;
    if !matches!(&refused, Err(status) if status.code() == tonic::Code::InvalidArgument) {
        bail!("the warm-up request was not refused as invalid: {refused:?}");
    }
    let asked = Instant::now();
    let answer = raw.check_upload(request).await?.into_inner();
    Ok((asked.elapsed().as_secs_f64(), answer))
}

pub async fn section(bench: &mut crate::Bench) -> Result<()> {
    use crate::postgres::BenchDatabase;
    use crate::report::{Samples, load_average, quantile};
    use crate::transferd::{LedgerChoice, Transferd};
    let (count, size) = (bench.plan.concurrent, bench.plan.concurrent_size);
    for postgres in [false, true] {
        let [
            mut rate,
            mut p50,
            mut p99,
            mut failed,
            mut burst_p50,
            mut burst_p99,
        ] = std::array::from_fn(|_| Samples::default());
        for _ in 0..bench.plan.runs {
            let start = || async {
                if postgres {
                    let database = BenchDatabase::create(&bench.plan.database_url).await?;
                    let ledger = LedgerChoice::Postgres(database.url.clone());
                    Transferd::start_on(&bench.work, ledger, Some(database), &[]).await
                } else {
                    bench.server(&[]).await
                }
            };
            let server = start().await?;
            let load = load_average();
            let burst = run(&server.endpoint(), count, size, false).await?;
            burst_p50.push(quantile(&burst.check_latencies, 0.5) * 1000.0, load);
            burst_p99.push(quantile(&burst.check_latencies, 0.99) * 1000.0, load);
            server.stop().await;
            crate::settle().await;

            let server = start().await?;
            let load = load_average();
            let result = run(&server.endpoint(), count, size, true).await?;
            server.stop().await;
            for failure in result.failures.iter().take(3) {
                eprintln!("an upload failed: {failure}");
            }
            failed.push(result.failures.len() as f64, load);
            rate.push(
                crate::Bench::mib_per_sec((result.completed * size) as u64, result.seconds),
                load,
            );
            p50.push(quantile(&result.check_latencies, 0.5) * 1000.0, load);
            p99.push(quantile(&result.check_latencies, 0.99) * 1000.0, load);
            crate::settle().await;
        }
        let report = &mut bench.report;
        report.section(format!(
            "{count} uploads of {} MiB at once, each on connections of its own, {} ledger",
            size >> 20,
            if postgres {
                "PostgreSQL"
            } else {
                "embedded SQLite"
            }
        ));
        report.row("uploads that failed", &failed, "uploads", "");
        report.row("aggregate rate", &rate, "MiB/s", "");
        report.row(
            "CheckUpload latency p50, while the uploads stream",
            &p50,
            "ms",
            "",
        );
        report.row(
            "CheckUpload latency p99, while the uploads stream",
            &p99,
            "ms",
            "target: under 20 ms",
        );
        report.row(
            format!("CheckUpload latency p50, {count} at once, no data"),
            &burst_p50,
            "ms",
            "",
        );
        report.row(
            format!("CheckUpload latency p99, {count} at once, no data"),
            &burst_p99,
            "ms",
            "",
        );
    }
    Ok(())
}
