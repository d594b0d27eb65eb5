//! A PostgreSQL ledger made by an older `transferd` is upgraded in place: the migrations
//! in `migrations/postgres` up to a version are applied as that release did, rows are
//! written as it wrote them, then the ledger opens (applying the rest).

use refinery::{Migration, Runner};
use transfer_service::ledger::{ContentIndex, FileCatalog, PostgresLedger};
use transfer_tests::TestDatabase;
use uuid::Uuid;

/// Applies `migrations/postgres` up to and including `version`, as refinery would have.
async fn migrate_to(database: &TestDatabase, version: u32) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/postgres");
    let mut migrations = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the migrations directory") {
        let path = entry.expect("a migration").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("a name");
        let sql = std::fs::read_to_string(&path).expect("a migration's SQL");
        let migration = Migration::unapplied(name, &sql).expect("a well-named migration");
        if migration.version() <= version as i32 {
            migrations.push(migration);
        }
    }
    migrations.sort_by_key(Migration::version);
    let mut client = database.client().await;
    Runner::new(&migrations)
        .run_async(&mut client)
        .await
        .expect("applying the older migrations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_names_migration_writes_down_where_the_filesystem_store_put_things() {
    let database = TestDatabase::create().await;
    migrate_to(&database, 6).await;
    let (legacy, modern, staged, fresh) = (
        Uuid::from_u128(1),
        Uuid::from_u128(2),
        Uuid::from_u128(3),
        Uuid::from_u128(4),
    );
    let md5 = "\\x00112233445566778899aabbccddeeff";
    let blake3 = format!("\\x{}", "ab".repeat(32));
    database
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                completed_at, content_blake3) VALUES \
               ('{legacy}', 'o', 'old', 10, '{md5}', 4, 3, 'complete', now(), NULL), \
               ('{modern}', 'o', 'new', 10, '{md5}', 4, 3, 'complete', now(), '{blake3}'), \
               ('{staged}', 'o', 'open', 10, '{md5}', 4, 3, 'uploading', NULL, NULL); \
             INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state) \
             VALUES ('{fresh}', 'p', 'fresh', 10, '{md5}', 4, 3, 'uploading'); \
             INSERT INTO chunks (file_id, idx, size, crc32c) VALUES ('{staged}', 0, 4, 7); \
             INSERT INTO contents (md5, size) VALUES ('{md5}', 10); \
             INSERT INTO content_blobs (blake3, size, md5) VALUES ('{blake3}', 10, '{md5}');"
        ))
        .await
        .expect("rows as the older release wrote them");

    let ledger = PostgresLedger::connect(&database.url, 4)
        .await
        .expect("opening applies the rest");
    let file = |id| {
        let ledger = &ledger;
        async move { ledger.get_file(id).await.unwrap().unwrap() }
    };
    assert_eq!(
        ledger
            .content_locator(&file(legacy).await)
            .await
            .unwrap()
            .as_deref(),
        Some("content/00/00112233445566778899aabbccddeeff-10")
    );
    assert_eq!(
        ledger.content_locator(&file(modern).await).await.unwrap(),
        Some(format!("content/ab/b3-{}-10", "ab".repeat(32)))
    );
    assert_eq!(
        file(staged).await.blob_upload,
        Some(format!("staging/{}", staged.as_simple()))
    );
    assert_eq!(
        file(fresh).await.blob_upload,
        None,
        "an upload with nothing committed is begun again when a stream comes"
    );
}
