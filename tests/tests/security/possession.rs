//! Instant upload across owners with proof of possession (`--dedup-scope global`): an
//! owner who holds the bytes gets another owner's stored content without sending it;
//! one who knows only digests gets an upload session, answered exactly as for content
//! nobody stored; and with the default scope nobody is challenged at all.

use transfer_proto::possession::RangeDigest;
use transfer_proto::v1::check_upload_response::Result as Check;
use transfer_proto::v1::{CheckUploadRequest, PossessionChallenge, PossessionProof, UploadSession};
use transfer_service::config::DedupScope;
use transfer_tests::client::{Client, abort, download, request};
use transfer_tests::{Ledger, TestFile, TestServer, md5, upload_file};

use crate::{client_with, local_file};

const CHUNK: u32 = 4096;

async fn global_server(ledger: Ledger) -> TestServer {
    TestServer::start_with(ledger, |s| s.dedup_scope = DedupScope::Global).await
}

/// CheckUpload for `file` as `owner`, accepting challenges, with `proof` if given.
async fn ask(
    client: &mut Client,
    owner: &str,
    file: &TestFile,
    proof: Option<PossessionProof>,
) -> Check {
    let message = CheckUploadRequest {
        name: file.name.clone(),
        size: file.data.len() as u64,
        md5: md5(&file.data).into(),
        preferred_chunk_size: CHUNK,
        accepts_challenge: true,
        proof,
        ..Default::default()
    };
    client
        .check_upload(request(message, Some(owner)))
        .await
        .expect("CheckUpload answers")
        .into_inner()
        .result
        .expect("CheckUpload answers with a result")
}

fn challenge_of(answer: Check) -> PossessionChallenge {
    match answer {
        Check::Challenge(challenge) => challenge,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn new_session(answer: Check) -> UploadSession {
    match answer {
        Check::Session(session) if !session.resumed && session.committed.is_empty() => session,
        other => panic!("expected a new, empty session, got {other:?}"),
    }
}

/// The proof as the proto describes it, computed here from `data` (not by the library).
fn proof_for(challenge: &PossessionChallenge, data: &[u8]) -> PossessionProof {
    let key: [u8; 32] = challenge.key[..].try_into().expect("a 32-byte key");
    let mut ranges = RangeDigest::new(&key);
    for range in &challenge.ranges {
        let start = range.offset as usize;
        ranges.update(&data[start..start + range.length as usize]);
    }
    PossessionProof {
        token: challenge.token.clone(),
        range_digest: ranges.finalize().to_vec().into(),
        blake3: blake3::hash(data).as_bytes().to_vec().into(),
    }
}

async fn an_owner_holding_the_bytes_gets_another_owners_content_without_sending_them(
    ledger: Ledger,
) {
    let server = global_server(ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let path = local_file(&dir, "report.pdf", 300_000, 41);
    let alice = client_with(&server.endpoint(), None, Some("alice"));
    let stored = alice.upload_path(&path).wait().await.unwrap();
    assert!(!stored.instant);

    // The library answers the challenge by itself (it knows the MD5 when it hashes
    // first; a single pass never asks with one).
    let mut config = transfer_client::ClientConfig::new(server.endpoint());
    config.owner = Some("bob".into());
    config.hash_first = true;
    let bob = transfer_client::TransferClient::new(config).unwrap();
    let copied = bob.upload_path(&path).wait().await.unwrap();
    assert!(copied.instant, "{copied:?}");
    assert_eq!(copied.chunks_sent, 0);
    assert_ne!(
        copied.file.file_id, stored.file.file_id,
        "bob has a file of his own"
    );

    let mut raw = server.client().await;
    let got = download(&mut raw, Some("bob"), &copied.file.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(got.data, std::fs::read(&path).unwrap());
    // Alice's file is hers alone still.
    let theirs = download(&mut raw, Some("bob"), &stored.file.file_id, 0, 0).await;
    assert_eq!(theirs.unwrap_err().code(), tonic::Code::NotFound);
}

async fn a_challenge_comes_whatever_is_stored_and_a_proof_without_the_bytes_gets_a_session(
    ledger: Ledger,
) {
    let server = global_server(ledger).await;
    let mut client = server.client().await;
    let secret = TestFile::new("letter.txt", 150_043, 11);
    upload_file(&mut client, Some("victim"), &secret, CHUNK).await;
    let guess = TestFile::new("letter.txt", 150_043, 12);

    // Asked for stored content and for unknown content, mallory gets challenges alike.
    let hit = challenge_of(ask(&mut client, "mallory", &secret, None).await);
    let miss = challenge_of(ask(&mut client, "mallory", &guess, None).await);
    let shape = |c: &PossessionChallenge| (c.token.len(), c.key.len(), c.ranges.len());
    assert_eq!(shape(&hit), shape(&miss));
    assert_ne!(hit.key, miss.key, "every challenge has a fresh key");

    // Knowing the MD5 and even the BLAKE3, but not the bytes the ranges ask for, gets
    // a new session; so does any proof about content nobody stored.
    let mut leaked_digests = proof_for(&hit, &secret.data);
    leaked_digests.range_digest = vec![0; 32].into();
    let mut forged_token = proof_for(&hit, &secret.data);
    let mut token = forged_token.token.to_vec();
    token[12] ^= 1;
    forged_token.token = token.into();
    let other_challenge = proof_for(&miss, &secret.data);
    let about_nothing = proof_for(&miss, &guess.data);
    let mut sessions = Vec::new();
    for (what, file, proof) in [
        ("a wrong range digest", &secret, leaked_digests),
        ("a forged token", &secret, forged_token),
        ("another content's token", &secret, other_challenge),
        ("content nobody stored", &guess, about_nothing),
    ] {
        let asked = std::time::Instant::now();
        let answer = ask(&mut client, "mallory", file, Some(proof)).await;
        // Whether stored bytes were read for the proof shows in no timing: every proof
        // takes the same floor.
        assert!(
            asked.elapsed() >= transfer_service::upload::possession::PROOF_FLOOR,
            "{what}: answered in {:?}",
            asked.elapsed()
        );
        let session = new_session(answer);
        sessions.push((what, session.clone()));
        abort(&mut client, Some("mallory"), &session.upload_id)
            .await
            .unwrap();
    }
    let fields = |s: &UploadSession| (s.chunk_size, s.chunk_count, s.max_window);
    assert!(
        sessions
            .iter()
            .all(|(_, s)| fields(s) == fields(&sessions[0].1)),
        "alike in every field but the id: {sessions:?}"
    );

    // A challenge is bound to the owner it was given to.
    let for_mallory = challenge_of(ask(&mut client, "mallory", &secret, None).await);
    let answer = ask(
        &mut client,
        "eve",
        &secret,
        Some(proof_for(&for_mallory, &secret.data)),
    )
    .await;
    let session = new_session(answer);
    abort(&mut client, Some("eve"), &session.upload_id)
        .await
        .unwrap();

    // The right proof, computed from the bytes by the proto's rules alone, is a file.
    let Check::AlreadyStored(file) = ask(
        &mut client,
        "mallory",
        &secret,
        Some(proof_for(&for_mallory, &secret.data)),
    )
    .await
    else {
        panic!("a proof that holds is an instant upload");
    };
    let got = download(&mut client, Some("mallory"), &file.file_id, 0, 0)
        .await
        .unwrap();
    assert_eq!(got.data, secret.data);
}

async fn with_the_default_scope_nobody_is_challenged(ledger: Ledger) {
    let server = TestServer::start(ledger).await;
    let mut client = server.client().await;
    let secret = TestFile::new("key.pem", 20_000, 3);
    upload_file(&mut client, Some("victim"), &secret, CHUNK).await;
    let session = new_session(ask(&mut client, "mallory", &secret, None).await);
    abort(&mut client, Some("mallory"), &session.upload_id)
        .await
        .unwrap();
    // Nor with global scope is an owner challenged for its own content, or for an upload
    // of it it has open.
    let server = global_server(ledger).await;
    let mut client = server.client().await;
    upload_file(&mut client, Some("victim"), &secret, CHUNK).await;
    assert!(matches!(
        ask(&mut client, "victim", &secret, None).await,
        Check::AlreadyStored(_)
    ));
    let open = TestFile::new("draft.bin", 20_000, 4);
    let first =
        transfer_tests::client::open_session(&mut client, Some("mallory"), &open, CHUNK).await;
    let Check::Session(again) = ask(&mut client, "mallory", &open, None).await else {
        panic!("an open upload of one's own is resumed, not challenged");
    };
    assert_eq!(again.upload_id, first.upload_id);
}

transfer_tests::ledger_tests!(
    an_owner_holding_the_bytes_gets_another_owners_content_without_sending_them,
    a_challenge_comes_whatever_is_stored_and_a_proof_without_the_bytes_gets_a_session,
    with_the_default_scope_nobody_is_challenged,
);
