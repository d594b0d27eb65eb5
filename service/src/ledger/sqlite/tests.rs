//! Unit tests of the SQLite ledger beyond the conformance suites: migrations of old
//! ledgers, and how errors are classified.

use super::*;
use crate::ledger::{ContentIndex, FileCatalog, UploadLedger};

const ID: &str = "6f1d3c1e-8a44-4f7e-9a53-0c2d5b7e9f10";

/// Migration 4 rebuilds `files`; with foreign keys on, its DROP TABLE would have
/// cascaded into `chunks`.
#[tokio::test]
async fn the_single_pass_migration_keeps_every_file_and_chunk_and_the_foreign_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    {
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(3))
            .run(&mut conn)
            .unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                created_at, updated_at) \
             VALUES ('{ID}', 'o', 'f.bin', 8192, X'00112233445566778899AABBCCDDEEFF', \
                     4096, 2, 'uploading', 1, 1); \
             INSERT INTO chunks (file_id, idx, size, crc32c, committed_at) \
             VALUES ('{ID}', 0, 4096, 7, 1), ('{ID}', 1, 4096, 8, 1);"
        ))
        .unwrap();
    }

    let ledger = SqliteLedger::open(&path, 2).await.unwrap();
    let id = Uuid::parse_str(ID).unwrap();
    assert_eq!(ledger.committed_ranges(id).await.unwrap(), vec![(0, 2)]);
    let file = ledger.get_file(id).await.unwrap().unwrap();
    assert_eq!(
        file.md5,
        Some([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD,
            0xEE, 0xFF
        ])
    );
    assert_eq!(file.head_md5, None);
    assert_eq!(
        ledger.owner_files("o").await.unwrap(),
        1,
        "counted when migrated"
    );
    // Open since 1970, before uploads expired: a day from the upgrade, not from then.
    let expires = file.expires_at.expect("an open upload expires");
    assert!(
        expires > Utc::now() + chrono::Duration::hours(23),
        "{expires}"
    );
    let orphan = ledger
        .with(|conn| {
            conn.execute(
                "INSERT INTO chunks (file_id, idx, size, crc32c, committed_at) \
                 VALUES ('no-such-file', 0, 1, 1, 1)",
                [],
            )
            .map_err(db_error)
        })
        .await;
    assert!(
        matches!(orphan, Err(LedgerError::ReferenceGone(_))),
        "chunks still need their file, and a write that names no file says so: {orphan:?}"
    );
}

/// Migration 7 writes down the names the filesystem store gave blobs before the ledger
/// kept them: staging of uploads with committed chunks, and content by either digest;
/// the store then reads the content where the ledger says it is.
#[tokio::test]
async fn the_blob_names_migration_writes_down_where_the_filesystem_store_put_things() {
    use crate::blob::{BlobStore, ContentLocator, FsBlobStore};
    use crate::ledger::LedgerExport;
    use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let (legacy, modern, staged, fresh) = (
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
        "00000000-0000-4000-8000-000000000003",
        "00000000-0000-4000-8000-000000000004",
    );
    // Distinct bytes, so that a name made from the wrong byte or digest shows.
    let old_md5 = "F0112233445566778899AABBCCDDEEFF";
    let new_md5 = "0E112233445566778899AABBCCDDEEFF";
    let blake3 = format!("AB{}", "CD".repeat(31));
    {
        let mut conn = Connection::open(&path).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(6))
            .run(&mut conn)
            .unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                created_at, updated_at, completed_at, content_blake3) VALUES \
               ('{legacy}', 'o', 'old', 10, X'{old_md5}', 4, 3, 'complete', 1, 1, 1, NULL), \
               ('{modern}', 'o', 'new', 10, X'{new_md5}', 4, 3, 'complete', 2, 2, 2, X'{blake3}'), \
               ('{staged}', 'o', 'open', 10, X'{new_md5}', 4, 3, 'uploading', 3, 3, NULL, NULL); \
             INSERT INTO files (id, owner, name, size, md5, chunk_size, chunk_count, state, \
                                created_at, updated_at) \
             VALUES ('{fresh}', 'p', 'fresh', 10, X'{new_md5}', 4, 3, 'uploading', 4, 4); \
             INSERT INTO chunks (file_id, idx, size, crc32c, committed_at) \
             VALUES ('{staged}', 0, 4, 7, 3); \
             INSERT INTO contents (md5, size, created_at) VALUES (X'{new_md5}', 10, 2); \
             INSERT INTO content_blobs (blake3, size, md5, created_at) \
             VALUES (X'{blake3}', 10, X'{new_md5}', 2);"
        ))
        .unwrap();
    }
    // The bytes where the filesystem store put them before the migration.
    let old_name = format!("content/f0/{}-10", old_md5.to_lowercase());
    let new_name = format!("content/ab/b3-{}-10", blake3.to_lowercase());
    for (name, bytes) in [(&old_name, b"old bytes!"), (&new_name, b"new bytes!")] {
        let file = dir.path().join("data").join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }

    let ledger = SqliteLedger::open(&path, 2).await.unwrap();
    let store = FsBlobStore::open(
        &dir.path().join("data"),
        BufferPool::new(DEFAULT_POOL_BYTES),
    )
    .unwrap();
    let file = |id: &str| {
        let ledger = &ledger;
        let id = Uuid::parse_str(id).unwrap();
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
            .unwrap();
        assert_eq!(&read[..], bytes);
    }
    let index = ledger.dump_contents(None, 10).await.unwrap();
    let located: Vec<_> = index
        .iter()
        .map(|c| (hex::encode_upper(c.md5), c.locator.clone()))
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
        file(staged).await.blob_upload.as_deref(),
        Some("staging/00000000000040008000000000000003")
    );
    assert_eq!(
        file(fresh).await.blob_upload,
        None,
        "an upload with nothing committed is begun again when a stream comes"
    );
}
