//! A PostgreSQL ledger made by an older `transferd` is upgraded in place: the migrations
//! in `migrations/postgres` up to a version are applied as that release did, rows are
//! written as it wrote them, then the ledger opens (applying the rest).

use refinery::{Migration, Runner};
use transfer_service::blob::{BlobStore, ContentLocator, FsBlobStore};
use transfer_service::ledger::{ContentIndex, FileCatalog, LedgerExport, PostgresLedger};
use transfer_tests::TestDatabase;
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};
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
    // Distinct bytes, so that a name made from the wrong byte or digest shows.
    let old_md5 = "f0112233445566778899aabbccddeeff";
    let new_md5 = "0e112233445566778899aabbccddeeff";
    let blake3 = format!("ab{}", "cd".repeat(31));
    database
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                completed_at, content_blake3) VALUES \
               ('{legacy}', 'o', 'old', 10, '\\x{old_md5}', 4, 3, 'complete', now(), NULL), \
               ('{modern}', 'o', 'new', 10, '\\x{new_md5}', 4, 3, 'complete', now(), \
                '\\x{blake3}'), \
               ('{staged}', 'o', 'open', 10, '\\x{new_md5}', 4, 3, 'uploading', NULL, NULL); \
             INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state) \
             VALUES ('{fresh}', 'p', 'fresh', 10, '\\x{new_md5}', 4, 3, 'uploading'); \
             INSERT INTO chunks (file_id, idx, size, crc32c) VALUES ('{staged}', 0, 4, 7); \
             INSERT INTO contents (md5, size) VALUES ('\\x{new_md5}', 10); \
             INSERT INTO content_blobs (blake3, size, md5) \
             VALUES ('\\x{blake3}', 10, '\\x{new_md5}');"
        ))
        .await
        .expect("rows as the older release wrote them");
    // The bytes where the filesystem store put them before the migration.
    let data = tempfile::tempdir().expect("a data directory");
    let old_name = format!("content/f0/{old_md5}-10");
    let new_name = format!("content/ab/b3-{blake3}-10");
    for (name, bytes) in [(&old_name, b"old bytes!"), (&new_name, b"new bytes!")] {
        let file = data.path().join(name);
        std::fs::create_dir_all(file.parent().expect("a directory")).expect("a directory");
        std::fs::write(file, bytes).expect("content");
    }

    let ledger = PostgresLedger::connect(&database.url, 4)
        .await
        .expect("opening applies the rest");
    let store = FsBlobStore::open(data.path(), BufferPool::new(DEFAULT_POOL_BYTES))
        .expect("the filesystem store");
    let file = |id| {
        let ledger = &ledger;
        async move { ledger.get_file(id).await.unwrap().unwrap() }
    };
    for (id, name, bytes) in [
        (legacy, &old_name, b"old bytes!"),
        (modern, &new_name, b"new bytes!"),
    ] {
        let locator = ledger.content_locator(&file(id).await).await.unwrap();
        assert_eq!(locator.as_deref(), Some(name.as_str()));
        let read = store
            .read(&ContentLocator::new(name.as_str()), 0, 10)
            .await
            .expect("the content where the ledger says it is");
        assert_eq!(&read[..], bytes);
    }
    let index = ledger.dump_contents(None, 10).await.unwrap();
    let located: Vec<_> = index
        .iter()
        .map(|c| {
            let md5: String = c.md5.iter().map(|b| format!("{b:02x}")).collect();
            (md5, c.locator.clone())
        })
        .collect();
    assert_eq!(
        located,
        vec![
            (new_md5.to_owned(), None),
            (old_md5.to_owned(), Some(old_name.clone())),
        ],
        "a legacy file gets its MD5 index entry with a locator; an entry made since gets none"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_open_before_uploads_expired_gets_a_day_from_the_upgrade() {
    let database = TestDatabase::create().await;
    migrate_to(&database, 8).await;
    let open = Uuid::from_u128(5);
    database
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                created_at, updated_at) \
             VALUES ('{open}', 'o', 'long', 10, '\\x00112233445566778899aabbccddeeff', 4, 3, \
                     'uploading', now() - interval '3 days', now() - interval '3 days')"
        ))
        .await
        .expect("an upload open for three days");
    let ledger = PostgresLedger::connect(&database.url, 2)
        .await
        .expect("the ledger migrates");
    let file = ledger.get_file(open).await.unwrap().expect("the upload");
    let expires = file.expires_at.expect("an open upload expires");
    assert!(
        expires > chrono::Utc::now() + chrono::Duration::hours(23),
        "a day from the upgrade, not from when it opened: {expires}"
    );
}
