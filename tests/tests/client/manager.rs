use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use transfer_client::{TransferManager, TransferState};
use transfer_tests::{Ledger, TestFile, TestServer};

use crate::{assert_stored, client};

async fn twenty_files_run_at_most_four_at_a_time_and_all_complete(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<TestFile> = (0..20)
        .map(|i| {
            TestFile::new(
                &format!("f{i:02}.bin"),
                512 * 1024 + i * 1000,
                200 + i as u64,
            )
        })
        .collect();
    for file in &files {
        std::fs::write(dir.path().join(&file.name), &file.data).unwrap();
    }
    let manager = TransferManager::new(client(server.endpoint()), 4);
    let handles: Vec<_> = files
        .iter()
        .map(|f| manager.upload_path(dir.path().join(&f.name)))
        .collect();

    // Count transfers that are past the queue and not finished, at every change.
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for handle in &handles {
        let mut progress = handle.watch();
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        watchers.push(tokio::spawn(async move {
            let mut counted = false;
            loop {
                let state = progress.borrow_and_update().state.clone();
                let active = !matches!(state, TransferState::Queued) && !state.is_finished();
                if active && !counted {
                    counted = true;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                }
                if state.is_finished() {
                    if counted {
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                    return;
                }
                if progress.changed().await.is_err() {
                    return;
                }
            }
        }));
    }
    for (handle, file) in handles.into_iter().zip(&files) {
        let uploaded = handle.wait().await.expect("every file uploads");
        assert_eq!(uploaded.file.md5.as_ref(), file.md5.as_slice());
    }
    for watcher in watchers {
        watcher.await.unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 4, "{most} ran at once");
    assert!(most >= 2, "transfers did run concurrently ({most})");
}

async fn one_failing_file_does_not_stop_the_others(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let good = TestFile::new("good.bin", 300_000, 230);
    std::fs::write(dir.path().join(&good.name), &good.data).unwrap();
    let manager = TransferManager::new(client(server.endpoint()), 2);
    let missing = manager.upload_path(dir.path().join("does-not-exist.bin"));
    let fine = manager.upload_path(dir.path().join(&good.name));
    match missing.wait().await {
        Err(transfer_client::TransferError::Read { file, .. }) => {
            assert!(file.ends_with("does-not-exist.bin"))
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    let uploaded = fine.wait().await.expect("the good file uploads");
    assert_stored(&server, &uploaded, &good).await;
}

async fn a_paused_transfer_frees_its_slot_and_a_queued_one_cancels_at_once(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<TestFile> = (0..3)
        .map(|i| TestFile::new(&format!("q{i}.bin"), 24 << 20, 240 + i))
        .collect();
    for file in &files {
        std::fs::write(dir.path().join(&file.name), &file.data).unwrap();
    }
    let manager = TransferManager::new(client(server.endpoint()), 1);
    let first = manager.upload_path(dir.path().join(&files[0].name));
    let second = manager.upload_path(dir.path().join(&files[1].name));
    let third = manager.upload_path(dir.path().join(&files[2].name));
    first
        .watch()
        .wait_for(|p| p.state == TransferState::Uploading && p.bytes_done > 0)
        .await
        .unwrap();
    assert_eq!(second.progress().state, TransferState::Queued);

    first.pause();
    second
        .watch()
        .wait_for(|p| !matches!(p.state, TransferState::Queued))
        .await
        .unwrap();
    assert_eq!(third.progress().state, TransferState::Queued);
    third.cancel();
    let cancelled = tokio::time::timeout(std::time::Duration::from_secs(5), third.wait()).await;
    assert!(matches!(
        cancelled,
        Ok(Err(transfer_client::TransferError::Cancelled { .. }))
    ));

    first.resume();
    let second_uploaded = second.wait().await.expect("the second file uploads");
    let first_uploaded = first
        .wait()
        .await
        .expect("the paused file uploads once resumed");
    assert_stored(&server, &first_uploaded, &files[0]).await;
    assert_stored(&server, &second_uploaded, &files[1]).await;
}

transfer_tests::ledger_tests!(
    a_paused_transfer_frees_its_slot_and_a_queued_one_cancels_at_once,
    twenty_files_run_at_most_four_at_a_time_and_all_complete,
    one_failing_file_does_not_stop_the_others,
);
