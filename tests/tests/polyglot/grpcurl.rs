//! The grpcurl walk-through in docs/grpcurl.md, run command for command with a real
//! grpcurl against the real server, checking what each prints.

use std::process::Output;

use serde_json::Value;
use tokio::process::Command;
use transfer_tests::{Ledger, TestServer};

use crate::{peer, workspace_root};

/// The address the walk-through uses; the test server's replaces it.
const DOC_ADDR: &str = "127.0.0.1:50051";
/// The upload id the walk-through shows; the one the test server hands out replaces it.
const DOC_UPLOAD_ID: &str = "9d7a4d9b-faa9-4d18-b203-d3c30a37c320";
/// MD5 of the walk-through's file, `hello, transfer\n`, base64 as JSON wants it.
const HELLO_MD5: &str = "MOsnxhdXBifL61dl9J2GCg==";

const LIST: &str = "grpcurl -plaintext 127.0.0.1:50051 list";
const DESCRIBE: &str = "grpcurl -plaintext 127.0.0.1:50051 describe transfer.v1.CheckUploadRequest";
const CHECK_UPLOAD: &str = r#"grpcurl -plaintext -d '{"name": "hello.txt", "size": 16, "md5": "MOsnxhdXBifL61dl9J2GCg=="}' 127.0.0.1:50051 transfer.v1.TransferService/CheckUpload"#;
const CHECK_UPLOAD_HEX: &str = r#"grpcurl -plaintext -d '{"name": "hello.txt", "size": 16, "md5": "30eb27c617570627cbeb5765f49d860a"}' 127.0.0.1:50051 transfer.v1.TransferService/CheckUpload"#;
const UPLOAD_CHUNKS: &str = r#"grpcurl -plaintext -d '{"start": {"upload_id": "9d7a4d9b-faa9-4d18-b203-d3c30a37c320"}} {"chunk": {"index": 0, "data": "aGVsbG8sIHRyYW5zZmVyCg==", "crc32c": 3506272195}}' 127.0.0.1:50051 transfer.v1.TransferService/UploadChunks"#;
const GET_FILE: &str = r#"grpcurl -plaintext -d '{"file_id": "9d7a4d9b-faa9-4d18-b203-d3c30a37c320"}' 127.0.0.1:50051 transfer.v1.TransferService/GetFile"#;
const LIST_FILES: &str = r#"grpcurl -plaintext -d '{"page_size": 10, "state": "FILE_STATE_COMPLETE", "name_prefix": "hel"}' 127.0.0.1:50051 transfer.v1.TransferService/ListFiles"#;
const DELETE_FILE: &str = r#"grpcurl -plaintext -d '{"file_id": "9d7a4d9b-faa9-4d18-b203-d3c30a37c320"}' 127.0.0.1:50051 transfer.v1.TransferService/DeleteFile"#;
const HEALTH: &str = "grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check";

/// Every `grpcurl` command in the `sh` blocks of a document, in order.
fn documented_commands() -> Vec<String> {
    commands_in("docs/grpcurl.md")
}

fn commands_in(document: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(workspace_root().join(document))
        .unwrap_or_else(|e| panic!("reading {document}: {e}"));
    let mut in_sh = false;
    let mut commands = Vec::new();
    for line in doc.lines() {
        match line.trim_end() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            command if in_sh && command.starts_with("grpcurl ") => {
                commands.push(command.to_owned())
            }
            _ => {}
        }
    }
    commands
}

/// Runs a walk-through command through the shell, as pasted, with the test server's
/// address and upload id in place of the documented ones.
async fn run(command: &str, server: &TestServer, upload_id: &str) -> Output {
    let grpcurl = peer("TRANSFER_TEST_GRPCURL");
    let bin = grpcurl.parent().expect("grpcurl's directory");
    let path = std::env::join_paths(std::iter::once(bin.to_owned()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("a valid PATH");
    let command = command
        .replace(DOC_ADDR, &server.addr.to_string())
        .replace(DOC_UPLOAD_ID, upload_id);
    Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env("PATH", path)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {command}: {e}"))
}

fn stdout(command: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{command} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// The JSON messages a command printed, one after another.
fn json_messages(command: &str, output: &Output) -> Vec<Value> {
    let text = stdout(command, output);
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{command} printed no JSON ({e}): {text}"))
}

#[test]
fn the_grpcurl_walk_through_documents_exactly_the_commands_this_test_runs() {
    assert_eq!(
        documented_commands(),
        [
            LIST,
            DESCRIBE,
            CHECK_UPLOAD,
            CHECK_UPLOAD_HEX,
            UPLOAD_CHUNKS,
            GET_FILE,
            LIST_FILES,
            DELETE_FILE,
            HEALTH
        ]
    );
}

#[test]
fn the_readme_walk_through_is_a_part_of_the_tested_one() {
    let in_readme = commands_in("README.md");
    assert!(in_readme.len() >= 5, "the README shows the walk-through");
    for command in in_readme {
        assert!(
            documented_commands().contains(&command),
            "the README's {command:?} is not in docs/grpcurl.md, whose commands are tested"
        );
    }
}

#[tokio::test]
async fn every_grpcurl_command_of_the_walk_through_prints_what_it_shows() {
    let server = TestServer::start(Ledger::Sqlite).await;

    let listed = stdout(LIST, &run(LIST, &server, "").await);
    let services: Vec<&str> = listed.lines().collect();
    assert!(
        services.contains(&"transfer.v1.TransferService"),
        "{listed}"
    );
    assert!(services.contains(&"grpc.health.v1.Health"), "{listed}");

    let described = stdout(DESCRIBE, &run(DESCRIBE, &server, "").await);
    assert!(
        described.starts_with("transfer.v1.CheckUploadRequest is a message:"),
        "{described}"
    );
    for field in [
        "message CheckUploadRequest {",
        "string name = 1;",
        "uint64 size = 2;",
        "bytes md5 = 3;",
        "uint32 preferred_chunk_size = 4;",
    ] {
        assert!(described.contains(field), "no {field:?} in {described}");
    }

    let checked = json_messages(CHECK_UPLOAD, &run(CHECK_UPLOAD, &server, "").await);
    let session = &checked[0]["session"];
    let upload_id = session["uploadId"].as_str().expect("a session").to_owned();
    uuid::Uuid::parse_str(&upload_id).expect("a UUID upload id");
    assert_eq!(
        session["chunkCount"], "1",
        "64-bit integers are JSON strings"
    );
    let window = server.settings.max_window_bytes / u64::from(server.settings.default_chunk_size);
    assert_eq!(session["maxWindow"], window);
    assert_eq!(
        session["maxWindowBytes"],
        (window * u64::from(server.settings.default_chunk_size)).to_string(),
        "64-bit integers are JSON strings"
    );

    let hex = run(CHECK_UPLOAD_HEX, &server, &upload_id).await;
    assert_eq!(hex.status.code(), Some(64 + 3), "InvalidArgument");
    let said = String::from_utf8_lossy(&hex.stderr);
    assert!(
        said.contains("Code: InvalidArgument") && said.contains("md5"),
        "{said}"
    );

    let streamed = json_messages(
        UPLOAD_CHUNKS,
        &run(UPLOAD_CHUNKS, &server, &upload_id).await,
    );
    assert_eq!(streamed.len(), 2, "an ack, then completed: {streamed:?}");
    assert_eq!(streamed[0]["ack"]["outcome"], "CHUNK_OUTCOME_STORED");
    let completed = &streamed[1]["completed"]["file"];
    assert_eq!(completed["fileId"], upload_id.as_str());
    assert_eq!(completed["state"], "FILE_STATE_COMPLETE");
    assert_eq!(completed["md5"], HELLO_MD5);

    let again = json_messages(CHECK_UPLOAD, &run(CHECK_UPLOAD, &server, "").await);
    let stored = &again[0]["alreadyStored"];
    assert_eq!(stored["state"], "FILE_STATE_COMPLETE", "{again:?}");
    assert_eq!(stored["md5"], HELLO_MD5);

    let got = json_messages(GET_FILE, &run(GET_FILE, &server, &upload_id).await);
    let file = &got[0]["file"];
    assert_eq!(file["fileId"], upload_id.as_str());
    assert_eq!(file["name"], "hello.txt");
    assert_eq!(file["size"], "16");
    assert_eq!(file["md5"], HELLO_MD5);
    assert_eq!(file["state"], "FILE_STATE_COMPLETE");
    assert!(file["completedAt"].is_string(), "{file}");

    // The walk-through's upload (asking again for the same name made no second file).
    let listed = json_messages(LIST_FILES, &run(LIST_FILES, &server, &upload_id).await);
    let files = listed[0]["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{listed:?}");
    assert_eq!(files[0]["fileId"], upload_id.as_str());
    assert_eq!(files[0]["name"], "hello.txt");
    assert_eq!(files[0]["state"], "FILE_STATE_COMPLETE");
    assert!(
        listed[0].get("nextPageToken").is_none(),
        "one page: {listed:?}"
    );

    let deleted = json_messages(DELETE_FILE, &run(DELETE_FILE, &server, &upload_id).await);
    assert_eq!(deleted, [serde_json::json!({})]);
    let again = run(DELETE_FILE, &server, &upload_id).await;
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("Code: NotFound"), "{said}");

    let health = json_messages(HEALTH, &run(HEALTH, &server, "").await);
    assert_eq!(health, [serde_json::json!({"status": "SERVING"})]);
}

/// The commands of the walk-through's section on TLS and API keys (a `text` block: they
/// need a server with TLS, which this test starts).
fn documented_tls_commands() -> Vec<String> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/grpcurl.md"))
        .expect("reading docs/grpcurl.md");
    doc.lines()
        .filter(|line| line.starts_with("grpcurl -cacert "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn grpcurl_works_over_tls_with_an_api_key_and_is_refused_without_one() {
    let pki = transfer_tests::TestPki::new();
    let server = TestServer::start_with(Ledger::Sqlite, |s| {
        pki.configure_server(s, false);
        s.api_keys = true;
    })
    .await;
    let (_, token) = server.create_key("alice", None).await;
    let ca = pki.write("ca.pem", &pki.ca_pem());
    let mut config =
        transfer_client::ClientConfig::new(format!("https://localhost:{}", server.addr.port()));
    config.ca_certificate = Some(pki.ca_pem().into_bytes());
    config.token = Some(token.as_str().into());
    let client = transfer_client::TransferClient::new(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.txt");
    std::fs::write(&path, b"hello, transfer\n").unwrap();
    let file = client.upload_path(&path).wait().await.unwrap().file;

    let commands = documented_tls_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let grpcurl = peer("TRANSFER_TEST_GRPCURL");
    let run = |command: &str, with_key: bool| {
        let command = command
            .replace("grpcurl ", &format!("{} ", grpcurl.display()))
            .replace("ca.pem", ca.to_str().unwrap())
            .replace(
                "files.example.com:50051",
                &format!("localhost:{}", server.addr.port()),
            )
            .replace(DOC_UPLOAD_ID, &file.file_id);
        let token = if with_key {
            token.clone()
        } else {
            "not-a-key".into()
        };
        Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("TRANSFER_TOKEN", token)
            .output()
    };
    let listed = run(&commands[0], true).await.unwrap();
    assert!(
        stdout(&commands[0], &listed).contains("transfer.v1.TransferService"),
        "{listed:?}"
    );
    let got = json_messages(&commands[1], &run(&commands[1], true).await.unwrap());
    assert_eq!(got[0]["file"]["name"], "hello.txt");
    // A wrong key, and no key at all (the header left out).
    for command in &commands {
        let without = command.replace(" -H \"authorization: Bearer $TRANSFER_TOKEN\"", "");
        assert_ne!(&without, command, "the header is in the documented command");
        for (command, with_key) in [(command.as_str(), false), (without.as_str(), true)] {
            let refused = run(command, with_key).await.unwrap();
            assert!(!refused.status.success());
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(stderr.contains("Unauthenticated"), "{command}: {stderr}");
        }
    }
}
