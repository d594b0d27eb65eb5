//! Chunk commits per second on each ledger, by batch size.
//!
//! `cargo bench -p transfer-service --bench ledger_commits` (PostgreSQL from `DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`; a fresh database is created and
//! dropped). Prints one line per ledger and batch size.

use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::NoTls;
use transfer_service::ledger::{
    ChunkLedger, CommittedChunk, NewUpload, PostgresLedger, SqliteLedger,
};

const CHUNKS: u64 = 6_000;

async fn measure(name: &str, ledger: Arc<dyn ChunkLedger>) {
    for batch in [1usize, 8, 32] {
        let upload = NewUpload {
            owner: "bench".into(),
            name: format!("bench-{batch}"),
            size: CHUNKS * 4096,
            md5: [batch as u8; 16],
            chunk_size: 4096,
            chunk_count: CHUNKS,
        };
        let id = match ledger.open_upload(&upload).await {
            Ok(opened) => opened.file.id,
            Err(e) => {
                eprintln!("{name}: opening an upload failed: {e}");
                return;
            }
        };
        let started = Instant::now();
        let mut index = 0;
        while index < CHUNKS {
            let chunks: Vec<CommittedChunk> = (index..(index + batch as u64).min(CHUNKS))
                .map(|index| CommittedChunk {
                    index,
                    size: 4096,
                    crc32c: 0,
                })
                .collect();
            index += chunks.len() as u64;
            if let Err(e) = ledger.commit_chunks(id, &chunks).await {
                eprintln!("{name}: commit failed: {e}");
                return;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name:<10} batch {batch:>3}: {:>8.0} chunk commits/s ({:>6.0} transactions/s)",
            CHUNKS as f64 / seconds,
            CHUNKS as f64 / batch as f64 / seconds
        );
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    match SqliteLedger::open(&dir.path().join("bench.sqlite3"), 4).await {
        Ok(ledger) => measure("sqlite", Arc::new(ledger)).await,
        Err(e) => eprintln!("sqlite: {e}"),
    }

    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let Ok((client, connection)) = tokio_postgres::connect(&admin, NoTls).await else {
        eprintln!("postgres: cannot connect to {admin}; set DATABASE_URL");
        return;
    };
    tokio::spawn(connection);
    let db = format!("transfer_bench_{}", std::process::id());
    if let Err(e) = client.batch_execute(&format!("CREATE DATABASE {db}")).await {
        eprintln!("postgres: creating {db}: {e}");
        return;
    }
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => admin.clone(),
    };
    match PostgresLedger::connect(&url, 4).await {
        Ok(ledger) => measure("postgres", Arc::new(ledger)).await,
        Err(e) => eprintln!("postgres: {e}"),
    }
    let _ = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
}
