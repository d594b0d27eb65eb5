//! Beyond one machine: the filesystem store against SeaweedFS (a real S3-compatible
//! server, started here as the tests start it) on one replica, 20 uploads at once on one
//! replica and on two sharing one PostgreSQL ledger and one bucket, and the time to take
//! an upload over from a live holder and from a killed one, with what the new holder
//! reads back from the object to finish the whole-file hash.
//!
//! On one machine the store, the replicas and the clients share the cores: the figures
//! to read are ratios (CPU per GiB of the object store's path to the filesystem's, two
//! replicas to one), not the rates themselves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;
use transfer_client::proto::check_upload_response::Result as CheckResult;
use transfer_client::proto::upload_chunks_request::Message as Outgoing;
use transfer_client::proto::upload_chunks_response::Message as Incoming;
use transfer_client::proto::{
    CheckUploadRequest, Chunk, UploadChunksRequest, UploadChunksResponse, UploadSession,
    UploadStart,
};
use transfer_client::{RawClient, TransferClient};
use transfer_md5::Md5;

use crate::object_store::S3Server;
use crate::postgres::BenchDatabase;
use crate::report::{Samples, load_average};
use crate::transferd::{LedgerChoice, Logging, Transferd};
use crate::{Bench, GIB, MIB, settle, transfer};

/// S3's smallest part but the last: the chunk size on an object store.
const PART: usize = 5 << 20;
/// Uploads at once in the scaling run, as the replica tests run them.
const AT_ONCE: usize = 20;

pub async fn section(bench: &mut Bench) -> Result<()> {
    let s3 = S3Server::start(&bench.work).await?;
    stores(bench, &s3).await?;
    scaling(bench, &s3).await?;
    takeovers(bench, &s3).await?;
    Ok(())
}

/// One upload and one download of the main size on each store, one replica on the
/// embedded ledger: rates and transferd's CPU per GiB. SeaweedFS twice: over plain
/// HTTP (each part's SHA-256 signed, the default there) and with `UNSIGNED-PAYLOAD`
/// (the default over TLS).
async fn stores(bench: &mut Bench, s3: &S3Server) -> Result<()> {
    let size = bench.plan.size;
    let file = bench.file(size)?;
    let download_to = bench.work.join("download.bin");
    let gib = size as f64 / GIB as f64;
    #[derive(Default)]
    struct Figures {
        up: Samples,
        down: Samples,
        up_cpu: Samples,
        down_cpu: Samples,
        store_cpu: Samples,
    }
    let stores: [(&str, Option<&str>); 3] = [
        ("filesystem", None),
        ("SeaweedFS, payload signed", Some("true")),
        ("SeaweedFS, payload unsigned", Some("false")),
    ];
    let mut figures: Vec<Figures> = stores.iter().map(|_| Figures::default()).collect();
    for run in 1..=bench.plan.runs {
        println!("stores: run {run} of {}", bench.plan.runs);
        for ((_, signed), figures) in stores.iter().zip(&mut figures) {
            let extra = match signed {
                Some(signed) => {
                    let mut args = s3.transferd_args();
                    args.extend(["--s3-sign-payload".to_owned(), (*signed).to_owned()]);
                    args
                }
                None => Vec::new(),
            };
            let server = bench.server(&extra).await?;
            let config = bench.client(&server.endpoint());
            let (cpu, store_cpu) = (server.cpu_seconds()?, s3.cpu_seconds());
            let load = load_average();
            let up = transfer::upload(config.clone(), &file).await?;
            if up.instant {
                bail!("a fresh server already had the content");
            }
            figures.up.push(Bench::mib_per_sec(size, up.total), load);
            figures
                .up_cpu
                .push((server.cpu_seconds()? - cpu) / gib, load);
            if signed.is_some() {
                figures
                    .store_cpu
                    .push((s3.cpu_seconds() - store_cpu) / gib, load);
            }
            settle().await;
            let cpu = server.cpu_seconds()?;
            let load = load_average();
            let seconds = transfer::download(config, &up.file_id, &download_to).await?;
            figures.down.push(Bench::mib_per_sec(size, seconds), load);
            figures
                .down_cpu
                .push((server.cpu_seconds()? - cpu) / gib, load);
            server.stop().await;
            settle().await;
        }
    }
    let fs = &figures[0];
    let ratio =
        |s3: &Samples, fs: &Samples| format!("{:.2}× the filesystem's", s3.median() / fs.median());
    let cpu_note = |s3: &Samples, fs: &Samples| {
        let more = 100.0 * (s3.median() / fs.median() - 1.0);
        format!("{more:+.0}% over the filesystem's (target: at most +25%)")
    };
    let report = &mut bench.report;
    report.section(format!(
        "Object store, one replica: {} MiB, client defaults (the object store raises 4 MiB chunks to 5 MiB parts), embedded ledger",
        size >> 20
    ));
    for ((name, signed), store) in stores.iter().zip(&figures) {
        // The filesystem is the store with no signing to choose.
        let is_fs = signed.is_none();
        let note = |ours: &Samples, theirs: &Samples, cpu: bool| match (is_fs, cpu) {
            (true, _) => String::new(),
            (false, false) => ratio(ours, theirs),
            (false, true) => cpu_note(ours, theirs),
        };
        report.row(
            format!("upload, {name}"),
            &store.up,
            "MiB/s",
            note(&store.up, &fs.up, false),
        );
        report.row(
            format!("download, {name}"),
            &store.down,
            "MiB/s",
            note(&store.down, &fs.down, false),
        );
        report.row(
            format!("transferd CPU per GiB uploaded, {name}"),
            &store.up_cpu,
            "s",
            note(&store.up_cpu, &fs.up_cpu, true),
        );
        report.row(
            format!("transferd CPU per GiB downloaded, {name}"),
            &store.down_cpu,
            "s",
            note(&store.down_cpu, &fs.down_cpu, true),
        );
        if !is_fs {
            report.row(
                format!("SeaweedFS's own CPU per GiB uploaded, {name}"),
                &store.store_cpu,
                "s",
                "on the same two cores",
            );
        }
    }
    Ok(())
}

/// 20 uploads at once through one replica, then spread over two (as a load balancer
/// would), on PostgreSQL and SeaweedFS: the aggregate rate.
async fn scaling(bench: &mut Bench, s3: &S3Server) -> Result<()> {
    let size = if bench.plan.quick { 8 * MIB } else { 64 * MIB };
    let files = (0..AT_ONCE)
        .map(|i| distinct_file(&bench.work, i, size))
        .collect::<Result<Vec<_>>>()?;
    let mut rates = [Samples::default(), Samples::default()];
    for run in 1..=bench.plan.runs {
        println!("scaling: run {run} of {}", bench.plan.runs);
        for replicas in [1, 2] {
            let database = BenchDatabase::create(&bench.plan.database_url).await?;
            let group = Replicas::start(bench, s3, database, replicas, &[]).await?;
            let endpoints: Vec<String> = group.servers.iter().map(Transferd::endpoint).collect();
            let load = load_average();
            let started = Instant::now();
            let uploads: Vec<_> = files
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    let config = bench.client(&endpoints[i % endpoints.len()]);
                    let path = path.clone();
                    tokio::spawn(async move { transfer::upload(config, &path).await })
                })
                .collect();
            for upload in uploads {
                upload.await??;
            }
            let seconds = started.elapsed().as_secs_f64();
            rates[replicas - 1].push(Bench::mib_per_sec(size * AT_ONCE as u64, seconds), load);
            group.stop().await;
            settle().await;
        }
    }
    let report = &mut bench.report;
    report.section(format!(
        "Object store, {AT_ONCE} uploads of {} MiB at once, PostgreSQL ledger, SeaweedFS",
        size >> 20
    ));
    report.row("aggregate upload rate, one replica", &rates[0], "MiB/s", "");
    report.row(
        "aggregate upload rate, two replicas",
        &rates[1],
        "MiB/s",
        format!(
            "{:.2}× one replica, with SeaweedFS and the clients on the same two cores",
            rates[1].median() / rates[0].median()
        ),
    );
    Ok(())
}

/// An upload begun at one replica and finished at another: its live holder hands it over,
/// or a killed holder's lease (10 s, the default) runs out.
async fn takeovers(bench: &mut Bench, s3: &S3Server) -> Result<()> {
    let mut live = Takeover::default();
    let mut dead = Takeover::default();
    let mut own = Samples::default();
    for run in 1..=bench.plan.runs {
        println!("takeovers: run {run} of {}", bench.plan.runs);
        for (killed, figures) in [(false, &mut live), (true, &mut dead)] {
            let database = BenchDatabase::create(&bench.plan.database_url).await?;
            let mut group = Replicas::start(bench, s3, database, 2, &[]).await?;
            let file = TwoParts::new(run);
            let mut holder = group.raw(0).await?;
            let mut taker = group.raw(1).await?;
            let session = file.check(&mut holder).await?;
            let held = ChunkSender::open(&mut holder, &session.upload_id).await?;
            held.send(&file, 0).await?;
            // The new holder first stores a chunk of an upload it holds already: what a
            // chunk costs without a takeover, to set the takeover's time apart.
            if !killed {
                let other = TwoParts::new(run + 1000);
                let own_session = other.check(&mut taker).await?;
                let baseline = ChunkSender::open(&mut taker, &own_session.upload_id).await?;
                baseline.send(&other, 0).await?;
                let load = load_average();
                let started = Instant::now();
                baseline.send(&other, 1).await?;
                own.push(started.elapsed().as_secs_f64() * 1000.0, load);
            }
            if killed {
                group.servers[0].kill().await;
            }
            let load = load_average();
            let started = Instant::now();
            let moved = ChunkSender::open(&mut taker, &session.upload_id).await?;
            moved.send(&file, 1).await?;
            let took = started.elapsed().as_secs_f64();
            figures
                .client
                .push(took * if killed { 1.0 } else { 1000.0 }, load);
            // The hash is finished (read back, where it must be) before `completed`.
            moved.until_completed().await?;
            drop(held);
            // What the new holder logged: how long it waited for the lease, and how
            // much it read back to finish the hash.
            let log = group.log(1)?;
            if let Some(waited) = logged_wait(&log) {
                figures.server.push(
                    waited.as_secs_f64() * if killed { 1.0 } else { 1000.0 },
                    load,
                );
            }
            figures
                .reread
                .push(logged_rehash(&log) as f64 / MIB as f64, load);
            group.stop().await;
            settle().await;
        }
    }
    let report = &mut bench.report;
    report.section(
        "Object store, taking an upload over: two replicas, PostgreSQL, SeaweedFS, a 5 MiB part held, the last part sent to the other replica",
    );
    report.row(
        "live holder: the moved stream's first ack",
        &live.client,
        "ms",
        format!("a chunk of an upload already held: {:.0} ms", own.median()),
    );
    report.row(
        "live holder: the new holder's wait for the lease",
        &live.server,
        "ms",
        "target: under 100 ms",
    );
    report.row(
        "live holder: read back to finish the hash",
        &live.reread,
        "MiB",
        "the holder checkpoints its hash as it hands over",
    );
    report.row(
        "killed holder: the moved stream's first ack",
        &dead.client,
        "s",
        "the lease (--lease-secs 10) runs out first",
    );
    report.row(
        "killed holder: the new holder's wait for the lease",
        &dead.server,
        "s",
        "",
    );
    report.row(
        "killed holder: read back to finish the hash",
        &dead.reread,
        "MiB",
        "what was hashed since the last checkpoint",
    );
    Ok(())
}

#[derive(Default)]
struct Takeover {
    client: Samples,
    server: Samples,
    reread: Samples,
}

/// `count` transferd replicas on one PostgreSQL database and one bucket prefix, each
/// logging what it takes over.
struct Replicas {
    servers: Vec<Transferd>,
    logs: Vec<PathBuf>,
}

impl Replicas {
    async fn start(
        bench: &Bench,
        s3: &S3Server,
        database: BenchDatabase,
        count: usize,
        extra: &[String],
    ) -> Result<Self> {
        let url = database.url.clone();
        let mut args = s3.transferd_args();
        args.extend_from_slice(extra);
        let mut database = Some(database);
        let mut servers = Vec::new();
        let mut logs = Vec::new();
        for i in 0..count {
            let log = bench.work.join(format!("replica-{i}.log"));
            let logging = Logging {
                filter: "warn,transfer_service::replica=info,transfer_service::upload::session::completion=info".into(),
                to: log.clone(),
            };
            let data_dir = tempfile::Builder::new()
                .prefix("transferd-")
                .tempdir_in(&bench.work)?
                .keep();
            servers.push(
                Transferd::start_in(
                    data_dir,
                    LedgerChoice::Postgres(url.clone()),
                    database.take(),
                    &args,
                    Some(logging),
                )
                .await?,
            );
            logs.push(log);
        }
        Ok(Self { servers, logs })
    }

    async fn raw(&self, i: usize) -> Result<RawClient> {
        Ok(TransferClient::new(transfer_client::ClientConfig::new(
            self.servers[i].endpoint(),
        ))?
        .raw())
    }

    fn log(&self, i: usize) -> Result<String> {
        std::fs::read_to_string(&self.logs[i]).context("reading a replica's log")
    }

    /// Stops every replica; the database goes with the one that holds it, last.
    async fn stop(self) {
        for server in self.servers.into_iter().rev() {
            server.stop().await;
        }
    }
}

/// A file of one full 5 MiB part and a small last one, so that the part sent to the new
/// holder costs little beside the takeover.
struct TwoParts {
    data: Bytes,
    md5: [u8; 16],
    name: String,
}

impl TwoParts {
    fn new(seed: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed as u64);
        let mut data = vec![0u8; PART + 4096];
        rng.fill(&mut data);
        let md5 = Md5::digest(&data);
        Self {
            data: data.into(),
            md5,
            name: format!("takeover-{seed}.bin"),
        }
    }

    fn chunk(&self, index: u64) -> Bytes {
        let start = index as usize * PART;
        self.data.slice(start..(start + PART).min(self.data.len()))
    }

    async fn check(&self, raw: &mut RawClient) -> Result<UploadSession> {
        let answer = raw
            .check_upload(CheckUploadRequest {
                name: format!("{}-{}", self.name, uuid::Uuid::new_v4()),
                size: self.data.len() as u64,
                md5: self.md5.to_vec().into(),
                preferred_chunk_size: PART as u32,
                ..Default::default()
            })
            .await?
            .into_inner();
        match answer.result {
            Some(CheckResult::Session(session)) if session.chunk_count == 2 => Ok(session),
            other => bail!("CheckUpload did not open a session of two chunks: {other:?}"),
        }
    }
}

/// One UploadChunks stream, sending a chunk at a time and waiting for its answer.
struct ChunkSender {
    requests: tokio::sync::mpsc::Sender<UploadChunksRequest>,
    responses: tokio::sync::Mutex<tonic::Streaming<UploadChunksResponse>>,
}

impl ChunkSender {
    async fn open(raw: &mut RawClient, upload_id: &str) -> Result<Self> {
        let (requests, outgoing) = tokio::sync::mpsc::channel(4);
        requests
            .send(UploadChunksRequest {
                message: Some(Outgoing::Start(UploadStart {
                    upload_id: upload_id.to_owned(),
                })),
            })
            .await?;
        let responses = raw
            .upload_chunks(ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses: tokio::sync::Mutex::new(responses),
        })
    }

    /// Waits for the stream's `completed`.
    async fn until_completed(&self) -> Result<()> {
        let mut responses = self.responses.lock().await;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), responses.message())
                .await
                .context("no `completed` within a minute")??;
            match message.and_then(|m| m.message) {
                Some(Incoming::Completed(_)) => return Ok(()),
                Some(Incoming::Ack(_)) => {}
                None => bail!("the stream ended before the upload completed"),
            }
        }
    }

    /// Sends chunk `index` of `file` and waits until it is acknowledged (stored).
    async fn send(&self, file: &TwoParts, index: u64) -> Result<()> {
        let data = file.chunk(index);
        let crc32c = crc32c::crc32c(&data);
        self.requests
            .send(UploadChunksRequest {
                message: Some(Outgoing::Chunk(Chunk {
                    index,
                    data,
                    crc32c,
                })),
            })
            .await
            .context("the stream closed")?;
        let mut responses = self.responses.lock().await;
        let deadline = Duration::from_secs(60);
        loop {
            let message = tokio::time::timeout(deadline, responses.message())
                .await
                .context("no answer within a minute")??;
            match message.and_then(|m| m.message) {
                Some(Incoming::Ack(ack)) if ack.index == index => return Ok(()),
                Some(Incoming::Ack(_)) => {}
                Some(Incoming::Completed(_)) => {
                    bail!("completed before chunk {index} was acknowledged")
                }
                None => bail!("the stream ended before chunk {index} was acknowledged"),
            }
        }
    }
}

/// 20 files of `size` random bytes each, unlike one another (identical content would be
/// stored once).
fn distinct_file(work: &Path, i: usize, size: u64) -> Result<PathBuf> {
    let path = work.join(format!("distinct-{i}-{size}.bin"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        return Ok(path);
    }
    let mut rng = fastrand::Rng::with_seed(i as u64 * 7919 + size);
    let mut data = vec![0u8; size as usize];
    rng.fill(&mut data);
    std::fs::write(&path, data)?;
    Ok(path)
}

/// How long the replica waited for the lease, from its "took the upload over" line
/// (`waited=12.3ms`).
fn logged_wait(log: &str) -> Option<Duration> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("took the upload over"))?;
    let value = line.split("waited=").nth(1)?.split_whitespace().next()?;
    parse_debug_duration(value)
}

/// Bytes the replica read back to finish a hash, from its "hashing the rest" lines.
fn logged_rehash(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("hashing the rest"))
        .filter_map(|l| {
            l.split("bytes=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A `Duration`'s Debug form: `1.5s`, `12.3ms`, `250µs`, `80ns`.
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let text = text.trim_end_matches([',', '"']);
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" | "us" => number / 1e6,
        "ns" => number / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_wait_reads_as_a_duration() {
        let log = "2026-12-07T10:00:00Z  INFO transfer_service::replica: took the upload over upload=1 from=2 waited=12.5ms\n";
        assert_eq!(logged_wait(log), Some(Duration::from_micros(12_500)));
        assert_eq!(
            parse_debug_duration("10.2s"),
            Some(Duration::from_millis(10_200))
        );
        assert_eq!(
            logged_rehash(
                "x INFO hashing the rest from the completed content upload=1 bytes=5242880"
            ),
            5 << 20
        );
    }
}
