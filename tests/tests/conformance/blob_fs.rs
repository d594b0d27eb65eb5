//! What the filesystem blob store promises beyond the [`BlobStore`] contract: staged
//! bytes read back where they were written, one copy per content, and only names it
//! made accepted back.

use transfer_service::blob::{BlobError, BlobStore, ContentLocator, FsBlobStore, UploadHandle};
use transfer_tests::TestFile;
use transfer_wire::aligned::{BufferPool, DEFAULT_POOL_BYTES};
use uuid::Uuid;

use crate::blob::suite::{parts, stage_all};

const PART: u64 = 1000;

fn store() -> (tempfile::TempDir, FsBlobStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let buffers = BufferPool::new(DEFAULT_POOL_BYTES);
    let store = FsBlobStore::open(dir.path(), buffers).expect("opening the filesystem store");
    (dir, store)
}

#[tokio::test]
async fn staged_parts_written_in_any_order_read_back_at_their_offsets() {
    let (_dir, store) = store();
    let file = TestFile::new("f", 4 * PART as usize + 10, 1);
    let handle = store
        .begin(Uuid::new_v4(), file.data.len() as u64)
        .await
        .unwrap();
    store
        .put_parts(&handle, &parts(&file, PART as usize, &[4, 1]))
        .await
        .unwrap();
    store
        .put_parts(&handle, &parts(&file, PART as usize, &[3, 0, 2]))
        .await
        .unwrap();
    let all = store
        .read_staged(&handle, 0, file.data.len())
        .await
        .unwrap();
    assert_eq!(all, file.data);
    let middle = store.read_staged(&handle, 1500, 1000).await.unwrap();
    assert_eq!(middle, file.data.slice(1500..2500));
    assert!(matches!(
        store.read_staged(&handle, 4 * PART + 9, 2).await,
        Err(BlobError::OutOfBounds { .. })
    ));
}

#[tokio::test]
async fn beginning_again_gives_the_same_handle_and_keeps_the_parts_written() {
    let (_dir, store) = store();
    let file = TestFile::new("f", 2 * PART as usize, 3);
    let upload = Uuid::new_v4();
    let handle = store.begin(upload, file.data.len() as u64).await.unwrap();
    store
        .put_parts(&handle, &parts(&file, PART as usize, &[1]))
        .await
        .unwrap();
    let again = store.begin(upload, file.data.len() as u64).await.unwrap();
    assert_eq!(again, handle);
    let second = store
        .read_staged(&again, PART, PART as usize)
        .await
        .unwrap();
    assert_eq!(second, file.chunk(1, PART as u32));
}

#[tokio::test]
async fn each_upload_of_the_same_content_completes_under_a_name_of_its_own() {
    let (dir, store) = store();
    let file = TestFile::new("f", 2 * PART as usize, 6);
    let (first, _) = stage_all(&store, &file).await;
    let (second, _) = stage_all(&store, &file).await;
    let one = store.complete(&first, &[]).await.unwrap();
    let two = store.complete(&second, &[]).await.unwrap();
    // Which copy stays is the ledger's decision; the store keeps both until told.
    assert_ne!(one, two);
    for locator in [&one, &two] {
        let bytes = store.read(locator, 0, file.data.len()).await.unwrap();
        assert_eq!(bytes, file.data);
    }
    assert!(matches!(
        store.read_staged(&second, 0, 1).await,
        Err(BlobError::UploadNotFound(_))
    ));
    let stored = walkdir_files(&dir.path().join("content"));
    assert_eq!(stored.len(), 2, "one file per completed upload: {stored:?}");
    assert!(walkdir_files(&dir.path().join("staging")).is_empty());
}

#[tokio::test]
async fn an_aborted_upload_cannot_complete_even_when_its_content_is_stored() {
    let (_dir, store) = store();
    let file = TestFile::new("f", 2 * PART as usize, 13);
    let (first, _) = stage_all(&store, &file).await;
    store.complete(&first, &[]).await.unwrap();
    let (aborted, _) = stage_all(&store, &file).await;
    store.abort(&aborted).await.unwrap();
    assert!(matches!(
        store.complete(&aborted, &[]).await,
        Err(BlobError::UploadNotFound(_))
    ));
}

#[tokio::test]
async fn content_stored_under_its_md5_before_blake3_named_it_reads_by_its_locator() {
    let (dir, store) = store();
    let file = TestFile::new("f", 3000, 12);
    let md5: String = file.md5.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("{md5}-{}", file.data.len());
    let fan_out = dir.path().join("content").join(&md5[..2]);
    std::fs::create_dir_all(&fan_out).unwrap();
    std::fs::write(fan_out.join(&name), &file.data).unwrap();
    let locator = ContentLocator::new(format!("content/{}/{name}", &md5[..2]));
    assert_eq!(store.read(&locator, 0, 3000).await.unwrap(), file.data);
}

#[tokio::test]
async fn handles_and_locators_it_did_not_make_are_refused() {
    let (_dir, store) = store();
    let id = Uuid::new_v4();
    for handle in [
        "/etc/passwd".to_owned(),
        "staging/../content".to_owned(),
        format!("staging/{id}"),
        format!("staging/{}/x", id.as_simple()),
        format!("other/{}", id.as_simple()),
    ] {
        assert!(
            matches!(
                store.abort(&UploadHandle::new(handle.as_str())).await,
                Err(BlobError::ForeignName(_))
            ),
            "{handle}"
        );
    }
    let b3 = "ab".to_owned() + &"0".repeat(62);
    for locator in [
        "content/../../etc/passwd".to_owned(),
        format!("content/cd/b3-{b3}-10"),
        format!("content/ab/b3-{b3}-010"),
        format!("content/ab/b3-{b3}-x"),
        format!("content/ab/b3-{}-10", b3.to_uppercase()),
        format!("content/ab/b3-{b3}"),
        format!("content/ab/b3-{}-10", &b3[..32]),
        format!("content/ab/{b3}-10"),
        format!("content/ab/cd/b3-{b3}-10"),
        "content/ab/ab-10".to_owned(),
        format!("content/{}/u-{}", &id.as_simple().to_string()[..2], id),
        format!("content/zz/u-{}", id.as_simple()),
        format!(
            "content/{}/u-{}/x",
            &id.as_simple().to_string()[..2],
            id.as_simple()
        ),
        format!(
            "content/{}/u-{}",
            &id.as_simple().to_string()[..2],
            id.as_simple().to_string().to_uppercase()
        ),
    ] {
        let locator = ContentLocator::new(locator.as_str());
        assert!(
            matches!(
                store.read(&locator, 0, 0).await,
                Err(BlobError::ForeignName(_))
            ),
            "{locator}"
        );
        assert!(
            matches!(store.delete(&locator).await, Err(BlobError::ForeignName(_))),
            "{locator}"
        );
    }
}

/// Every regular file under `dir`.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
