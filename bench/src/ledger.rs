//! The chunk ledger: chunk commits per second on each backend, and `CheckUpload` latency
//! once a million files are stored (seeded in bulk with SQL, not uploaded).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use transfer_service::ledger::Lease;

use anyhow::{Context, Result, bail};
use transfer_client::proto::check_upload_response::Result as CheckResult;
use transfer_client::{ClientConfig, TransferClient};
use transfer_md5::Md5;
use transfer_service::ledger::{CommittedChunk, Ledger, NewUpload, PostgresLedger, SqliteLedger};

use crate::postgres::BenchDatabase;
use crate::transfer::timed_check;

/// Commits `chunks` chunk rows in transactions of `batch`; returns chunk commits per
/// second. Every commit is durable when it returns, as in the service.
pub async fn commits_per_sec(ledger: &dyn Ledger, chunks: u64, batch: u64) -> Result<f64> {
    let upload = NewUpload {
        owner: "bench".into(),
        name: format!("commits-{batch}-{}", fastrand::u64(..)),
        size: chunks * 4096,
        md5: Some(fastrand::u128(..).to_le_bytes()),
        head_md5: None,
        chunk_size: 4096,
        chunk_count: chunks,
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    };
    let id = ledger.open_upload(&upload).await?.file.id;
    let started = Instant::now();
    let mut index = 0;
    while index < chunks {
        let rows: Vec<CommittedChunk> = (index..(index + batch).min(chunks))
            .map(|index| CommittedChunk {
                index,
                size: 4096,
                crc32c: 0,
                receipt: None,
            })
            .collect();
        index += rows.len() as u64;
        ledger.commit_chunks(id, Lease::UNTAKEN, &rows).await?;
    }
    Ok(chunks as f64 / started.elapsed().as_secs_f64())
}

pub async fn open_sqlite(path: &Path) -> Result<Arc<dyn Ledger>> {
    Ok(Arc::new(SqliteLedger::open(path, 4).await?))
}

pub async fn open_postgres(url: &str) -> Result<Arc<dyn Ledger>> {
    Ok(Arc::new(PostgresLedger::connect(url, 4).await?))
}

/// The MD5 and size of seeded file number `i`: distinct for every `i`, and cheap to
/// compute again when asking for it.
fn seeded_content(i: u64) -> ([u8; 16], u64) {
    (Md5::digest(i.to_le_bytes()), 1000 + i)
}

/// Seeds `count` complete files (and their contents), spread over 1,000 owners, into a
/// migrated PostgreSQL ledger.
pub async fn seed_postgres(database: &BenchDatabase, count: u64) -> Result<()> {
    // Migrate through the service's own code, then insert in bulk.
    drop(open_postgres(&database.url).await?);
    let client = database.connect().await?;
    let batch = 50_000u64;
    let mut start = 0;
    while start < count {
        let end = (start + batch).min(count);
        let md5s: Vec<Vec<u8>> = (start..end).map(|i| seeded_content(i).0.to_vec()).collect();
        let sizes: Vec<i64> = (start..end).map(|i| seeded_content(i).1 as i64).collect();
        let numbers: Vec<i64> = (start..end).map(|i| i as i64).collect();
        client
            .execute(
                "INSERT INTO contents (md5, size) SELECT * FROM unnest($1::bytea[], $2::bigint[])",
                &[&md5s, &sizes],
            )
            .await
            .context("seeding contents")?;
        client
            .execute(
                "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, completed_at) \
                 SELECT gen_random_uuid(), 'owner-' || (n % 1000), 'file-' || n, size, md5, 4194304, 1, 'complete', now() \
                 FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS s(md5, size, n)",
                &[&md5s, &sizes, &numbers],
            )
            .await
            .context("seeding files")?;
        start = end;
    }
    client.batch_execute("ANALYZE").await?;
    Ok(())
}

/// Seeds `count` complete files into a migrated SQLite ledger at `path`.
pub async fn seed_sqlite(path: &Path, count: u64) -> Result<()> {
    drop(open_sqlite(path).await?);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut db = rusqlite::Connection::open(&path)?;
        let tx = db.transaction()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros() as i64;
        {
            let mut contents =
                tx.prepare("INSERT INTO contents (md5, size, created_at) VALUES (?1, ?2, ?3)")?;
            let mut files = tx.prepare(
                "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                 created_at, updated_at, completed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 4194304, 1, 'complete', ?6, ?6, ?6)",
            )?;
            for i in 0..count {
                let (md5, size) = seeded_content(i);
                contents.execute(rusqlite::params![&md5[..], size as i64, now])?;
                files.execute(rusqlite::params![
                    uuid::Uuid::new_v4().to_string(),
                    format!("owner-{}", i % 1000),
                    format!("file-{i}"),
                    size as i64,
                    &md5[..],
                    now
                ])?;
            }
        }
        tx.commit()?;
        db.execute_batch("ANALYZE")?;
        Ok(())
    })
    .await?
}

/// The seeded owner the latency probe acts for (seeded files are spread over
/// `owner-0` to `owner-999`): instant upload answers from the caller's own files.
const READER: u64 = 7;

/// `CheckUpload` latencies (seconds) against a server whose ledger holds `seeded` files:
/// `calls` asks for content the caller stored (instant uploads of another file of it),
/// and `calls` for new content (each opens a session).
pub async fn check_latencies(
    endpoint: &str,
    seeded: u64,
    calls: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut config = ClientConfig::new(endpoint);
    config.owner = Some(format!("owner-{READER}"));
    let mut raw = TransferClient::new(config)?.raw();
    let mut instant = Vec::with_capacity(calls);
    let mut new = Vec::with_capacity(calls);
    for call in 0..=calls {
        let (md5, size) = seeded_content(READER + 1000 * fastrand::u64(..(seeded / 1000).max(1)));
        let (answer, stored) = timed_check(&mut raw, format!("stored-{call}"), size, md5).await?;
        if !matches!(answer, Some(CheckResult::AlreadyStored(_))) {
            bail!("seeded content was not an instant upload");
        }
        let new_md5 = fastrand::u128(..).to_le_bytes();
        let (answer, opened) =
            timed_check(&mut raw, format!("new-{call}"), 1 << 30, new_md5).await?;
        if !matches!(answer, Some(CheckResult::Session(_))) {
            bail!("new content did not open a session");
        }
        // The first round also opens the connection.
        if call > 0 {
            instant.push(stored);
            new.push(opened);
        }
    }
    Ok((instant, new))
}

pub async fn section(bench: &mut crate::Bench) -> Result<()> {
    use crate::report::{Samples, load_average, quantile};
    use crate::transferd::{LedgerChoice, Transferd};
    let plan = &bench.plan;
    let chunks = plan.ledger_chunks;

    // Commits: alternate the backends, each on a fresh ledger per run.
    let mut rates: Vec<(String, Samples)> = Vec::new();
    let mut record =
        |name: String, value: f64, load: f64| match rates.iter_mut().find(|(n, _)| *n == name) {
            Some((_, samples)) => samples.push(value, load),
            None => rates.push((name, Samples::one(value, load))),
        };
    for _ in 0..plan.runs {
        let database = BenchDatabase::create(&plan.database_url).await?;
        let postgres = open_postgres(&database.url).await?;
        let dir = tempfile::tempdir_in(&bench.work)?;
        let sqlite = open_sqlite(&dir.path().join("ledger.sqlite3")).await?;
        for batch in [1, 8] {
            let load = load_average();
            let rate = commits_per_sec(postgres.as_ref(), chunks, batch).await?;
            record(
                format!("PostgreSQL, {batch} chunk(s) per transaction"),
                rate,
                load,
            );
            let load = load_average();
            let rate = commits_per_sec(sqlite.as_ref(), chunks, batch).await?;
            record(
                format!("embedded SQLite, {batch} chunk(s) per transaction"),
                rate,
                load,
            );
        }
        drop(postgres);
        database.remove().await;
    }

    // CheckUpload with many files stored: seed each ledger once, then ask.
    let seeded = plan.seeded_files;
    let calls = if plan.quick { 100 } else { 500 };
    // Every new-content call leaves a 1 GiB session open for the reader.
    let open_sessions = [
        "--max-open-uploads-per-owner".to_owned(),
        (calls + 1).to_string(),
        "--owner-quota-bytes".to_owned(),
        (u64::MAX / 2).to_string(),
    ];
    let mut latencies = Vec::new();
    for backend in ["PostgreSQL", "embedded SQLite"] {
        let started = Instant::now();
        let server = if backend == "PostgreSQL" {
            let database = BenchDatabase::create(&plan.database_url).await?;
            seed_postgres(&database, seeded).await?;
            let url = database.url.clone();
            Transferd::start_on(
                &bench.work,
                LedgerChoice::Postgres(url),
                Some(database),
                &open_sessions,
            )
            .await?
        } else {
            let data_dir = tempfile::Builder::new()
                .prefix("transferd-")
                .tempdir_in(&bench.work)?
                .keep();
            seed_sqlite(&data_dir.join("ledger.sqlite3"), seeded).await?;
            Transferd::start_in(data_dir, LedgerChoice::Embedded, None, &open_sessions, None)
                .await?
        };
        println!(
            "{backend}: seeded {seeded} files in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let load = load_average();
        let (instant, new) = check_latencies(&server.endpoint(), seeded, calls).await?;
        server.stop().await;
        latencies.push((backend, instant, new, load));
    }

    let report = &mut bench.report;
    report.section(format!(
        "Ledger: chunk commits ({chunks} per run, durable) and CheckUpload with {seeded} files stored"
    ));
    for (name, samples) in &rates {
        report.row(name.as_str(), samples, "chunks/s", "");
    }
    for (backend, instant, new, load) in latencies {
        for (what, values) in [
            ("stored content (instant)", instant),
            ("new content (opens a session)", new),
        ] {
            for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
                report.row(
                    format!("{backend}: CheckUpload {label}, {what}"),
                    &Samples::one(quantile(&values, q) * 1000.0, load),
                    "ms",
                    format!("{} calls, one after another", values.len()),
                );
            }
        }
    }
    Ok(())
}
