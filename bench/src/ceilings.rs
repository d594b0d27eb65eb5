//! What the machine itself allows, measured in the same run as the service: every
//! figure of the service is a ratio to one of these.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use transfer_md5::Md5;

use crate::postgres::BenchDatabase;

pub const MIB: f64 = 1024.0 * 1024.0;

/// A buffer of random bytes, so nothing compresses or short-cuts.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::new();
    let mut buf = vec![0u8; len];
    rng.fill(&mut buf);
    buf
}

/// MD5 on one core, with the MD5 code the service uses (transfer-md5), in MiB/s.
pub fn md5_mib_per_sec(bytes: u64) -> f64 {
    let buf = random_bytes(1 << 20);
    let started = Instant::now();
    let mut hasher = Md5::new();
    for _ in 0..bytes / buf.len() as u64 {
        hasher.update(&buf);
    }
    std::hint::black_box(hasher.finalize());
    bytes as f64 / MIB / started.elapsed().as_secs_f64()
}

/// MD5 on one core with the md-5 crate (RustCrypto), which transfer-md5 set out to beat:
/// measured beside it in every run, so the gap is checked on every machine.
pub fn md5_crate_mib_per_sec(bytes: u64) -> f64 {
    use md5::Digest as _;
    let buf = random_bytes(1 << 20);
    let started = Instant::now();
    let mut hasher = md5::Md5::new();
    for _ in 0..bytes / buf.len() as u64 {
        hasher.update(&buf);
    }
    std::hint::black_box(hasher.finalize());
    bytes as f64 / MIB / started.elapsed().as_secs_f64()
}

/// CRC32C (the crc32c crate the service uses; hardware instructions where present).
pub fn crc32c_mib_per_sec(bytes: u64) -> f64 {
    let buf = random_bytes(1 << 20);
    let started = Instant::now();
    let mut crc = 0;
    for _ in 0..bytes / buf.len() as u64 {
        crc = crc32c::crc32c_append(crc, &buf);
    }
    std::hint::black_box(crc);
    bytes as f64 / MIB / started.elapsed().as_secs_f64()
}

/// Sequential write of `bytes` into `dir` through the page cache, then fsync, in MiB/s.
pub fn fsync_write_mib_per_sec(dir: &Path, bytes: u64) -> Result<f64> {
    let buf = random_bytes(4 << 20);
    let path = dir.join("fsync-ceiling.bin");
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).context("creating the write test file")?;
    for _ in 0..bytes / buf.len() as u64 {
        file.write_all(&buf)?;
    }
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(bytes as f64 / MIB / seconds)
}

/// A TCP sink: reads a connection to its end, then answers one byte, so the sender
/// knows everything arrived.
pub async fn tcp_sink() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        let _ = socket.write_all(&[1]).await;
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Sends `bytes` over one TCP connection to `addr` (a sink, perhaps through a proxy) and
/// waits for the sink's answer, in MiB/s.
pub async fn tcp_send_mib_per_sec(addr: SocketAddr, bytes: u64) -> Result<f64> {
    let buf = random_bytes(1 << 20);
    let started = Instant::now();
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    for _ in 0..bytes / buf.len() as u64 {
        socket.write_all(&buf).await?;
    }
    socket.shutdown().await?;
    let mut done = [0u8; 1];
    socket
        .read_exact(&mut done)
        .await
        .context("the sink did not confirm")?;
    Ok(bytes as f64 / MIB / started.elapsed().as_secs_f64())
}

/// Sends `bytes` split over `connections` TCP connections at once to `addr`, in MiB/s:
/// what striping could reach at most.
pub async fn tcp_send_parallel_mib_per_sec(
    addr: SocketAddr,
    bytes: u64,
    connections: u64,
) -> Result<f64> {
    let started = Instant::now();
    let each = bytes / connections;
    let sends: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(tcp_send_mib_per_sec(addr, each)))
        .collect();
    for send in sends {
        send.await??;
    }
    Ok(bytes as f64 / MIB / started.elapsed().as_secs_f64())
}

/// Single-row INSERT commits per second on a fresh database, for `duration`.
pub async fn postgres_commits_per_sec(admin_url: &str, duration: Duration) -> Result<f64> {
    let database = BenchDatabase::create(admin_url).await?;
    let result = async {
        let client = database.connect().await?;
        client
            .batch_execute("CREATE TABLE commits (id BIGSERIAL PRIMARY KEY, value BIGINT NOT NULL)")
            .await?;
        let insert = client
            .prepare("INSERT INTO commits (value) VALUES ($1)")
            .await?;
        let started = Instant::now();
        let mut commits = 0u64;
        while started.elapsed() < duration {
            client.execute(&insert, &[&(commits as i64)]).await?;
            commits += 1;
        }
        Ok(commits as f64 / started.elapsed().as_secs_f64())
    }
    .await;
    database.remove().await;
    result
}

/// Measures every ceiling, `runs` times each.
pub async fn section(bench: &mut crate::Bench) -> Result<()> {
    use crate::report::{Samples, load_average};
    let plan = &bench.plan;
    let hash_bytes = if plan.quick { 256 << 20 } else { 1 << 30 };
    let [mut md5, mut md5_crate, mut crc, mut write, mut tcp, mut pg] =
        std::array::from_fn(|_| Samples::default());
    let sink = tcp_sink().await?;
    let pg_time = Duration::from_secs(if plan.quick { 1 } else { 3 });
    for _ in 0..plan.runs {
        let load = load_average();
        md5.push(md5_mib_per_sec(hash_bytes), load);
        let load = load_average();
        md5_crate.push(md5_crate_mib_per_sec(hash_bytes), load);
        let load = load_average();
        crc.push(crc32c_mib_per_sec(hash_bytes * 4), load);
        let load = load_average();
        write.push(fsync_write_mib_per_sec(&bench.work, plan.size)?, load);
        let load = load_average();
        tcp.push(tcp_send_mib_per_sec(sink, plan.size).await?, load);
        let load = load_average();
        pg.push(
            postgres_commits_per_sec(&plan.database_url, pg_time).await?,
            load,
        );
    }
    bench.md5_ceiling = md5.median();
    let report = &mut bench.report;
    report.section("Ceilings: what this machine allows");
    report.row(
        "MD5, one core (transfer-md5, as the service)",
        &md5,
        "MiB/s",
        format!("{:.2} CPU-s per GiB", 1024.0 / md5.median()),
    );
    report.row(
        "MD5, one core (md-5 0.11, the RustCrypto crate)",
        &md5_crate,
        "MiB/s",
        format!(
            "transfer-md5 is {:.2}× this (medians; the two alternate in each run)",
            md5.median() / md5_crate.median()
        ),
    );
    report.row("CRC32C, one core", &crc, "MiB/s", "");
    report.row(
        format!("sequential write + fsync, {} MiB", plan.size >> 20),
        &write,
        "MiB/s",
        "page cache, one fsync at the end",
    );
    report.row("raw TCP, loopback, one connection", &tcp, "MiB/s", "");
    report.row(
        "PostgreSQL single-row commits",
        &pg,
        "commits/s",
        "one INSERT per transaction",
    );
    Ok(())
}
