//! Connections cut mid-stream, uploads and downloads, counted by the proxy: every file
//! arrives intact, and a cut costs at most what was in flight (the window) again.

use transfer_tests::proxy::CuttingProxy;
use transfer_tests::{Ledger, TestFile, TestServer, download};

use crate::{CHUNK, WINDOW, client, figure, on_disk, scaled, sessions_left};

/// Bytes a connection carries before the proxy cuts it.
const CUT_AFTER: u64 = 4 << 20;

async fn uploads_cut_again_and_again_resend_at_most_a_window_per_cut(
    ledger: Ledger,
    hash_first: bool,
) {
    let server = TestServer::start(ledger).await;
    let files: Vec<TestFile> = (0..scaled(2, 12))
        .map(|i| TestFile::new(&format!("cut-{i}.bin"), 12 << 20, 200 + i as u64))
        .collect();
    let (_dir, paths) = on_disk(&files);
    let cuts_wanted = scaled(6, 80);
    let proxy = CuttingProxy::start(server.addr, CUT_AFTER, cuts_wanted).await;
    let client = client(proxy.endpoint(), hash_first);
    for (file, path) in files.iter().zip(&paths) {
        let uploaded = client
            .upload_path(path)
            .wait()
            .await
            .expect("the upload completes");
        let mut raw = server.client().await;
        let read = download(&mut raw, None, &uploaded.file.file_id, 0, 0)
            .await
            .expect("download");
        assert!(
            read.data == file.data,
            "{} arrives byte for byte",
            file.name
        );
    }
    let cuts = proxy.cuts_made() as u64;
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    let sent = proxy.bytes_to_server();
    let resent = sent.saturating_sub(total);
    let window = u64::from(WINDOW) * u64::from(CHUNK);
    // Per cut: the window in flight, plus the framing and calls of a new connection.
    let bound = total + cuts * (window + (256 << 10)) + total / 50;
    let mode = if hash_first {
        "hash-first"
    } else {
        "single-pass"
    };
    figure(&format!("{mode} uploads: cuts"), cuts);
    figure(
        &format!("{mode} uploads: bytes sent again per cut"),
        resent.checked_div(cuts).unwrap_or(0),
    );
    figure(&format!("{mode} uploads: window in bytes"), window);
    assert!(cuts >= 2, "the proxy cut the uploads ({cuts} cuts)");
    assert!(
        sent <= bound,
        "{mode}: {sent} bytes sent for {total} through {cuts} cuts: more than a window per cut"
    );
    // No session is left behind by any cut.
    let left = sessions_left(&mut server.client().await).await;
    assert_eq!(left, 0, "{left} sessions left behind");
    assert!(server.staging_files().is_empty());
}

async fn single_pass_uploads_cut_again_and_again_resend_at_most_a_window_per_cut(ledger: Ledger) {
    uploads_cut_again_and_again_resend_at_most_a_window_per_cut(ledger, false).await;
}

async fn hash_first_uploads_cut_again_and_again_resend_at_most_a_window_per_cut(ledger: Ledger) {
    uploads_cut_again_and_again_resend_at_most_a_window_per_cut(ledger, true).await;
}

async fn downloads_cut_again_and_again_arrive_intact(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let files: Vec<TestFile> = (0..scaled(2, 14))
        .map(|i| TestFile::new(&format!("down-{i}.bin"), 12 << 20, 300 + i as u64))
        .collect();
    let mut raw = server.client().await;
    let mut ids = Vec::new();
    for file in &files {
        ids.push(
            transfer_tests::upload_file(&mut raw, None, file, CHUNK)
                .await
                .file_id,
        );
    }
    let cuts_wanted = scaled(6, 80);
    let proxy = CuttingProxy::start(server.addr, CUT_AFTER, cuts_wanted).await;
    let client = client(proxy.endpoint(), false);
    let dir = tempfile::tempdir().unwrap();
    for (file, id) in files.iter().zip(&ids) {
        let dest = dir.path().join(&file.name);
        client
            .download(id.as_str(), &dest)
            .wait()
            .await
            .expect("the download completes");
        assert!(
            std::fs::read(&dest).unwrap() == file.data,
            "{} arrives intact",
            file.name
        );
    }
    let cuts = proxy.cuts_made() as u64;
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    let received = proxy.bytes_to_client();
    figure("downloads: cuts", cuts);
    figure(
        "downloads: bytes sent again per cut",
        received
            .saturating_sub(total)
            .checked_div(cuts)
            .unwrap_or(0),
    );
    assert!(cuts >= 2, "the proxy cut the downloads ({cuts} cuts)");
    // A resumed download starts where its `.part` file ends: at most the piece (1 MiB)
    // that was arriving comes again, not what the cut connection carried before.
    let bound = total + cuts * ((1 << 20) + (512 << 10));
    assert!(
        received <= bound,
        "{received} bytes received for {total} through {cuts} cuts: more than a piece per cut"
    );
}

transfer_tests::ledger_tests!(
    single_pass_uploads_cut_again_and_again_resend_at_most_a_window_per_cut,
    hash_first_uploads_cut_again_and_again_resend_at_most_a_window_per_cut,
    downloads_cut_again_and_again_arrive_intact,
);
