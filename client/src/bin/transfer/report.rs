//! What the CLI prints: lines for people, or one JSON object per line with `--json`.

use std::path::Path;

use serde_json::json;
use transfer_client::proto::FileInfo;
use transfer_client::{AbortOutcome, DownloadedFile, TransferError, UploadedFile};

use crate::printable::printable;

pub struct Report {
    json: bool,
}

fn file_json(file: &FileInfo) -> serde_json::Value {
    json!({
        "file_id": file.file_id,
        "name": file.name,
        "size": file.size,
        "md5": hex::encode(&file.md5),
        "state": file.state().as_str_name(),
        "created_at": file.created_at.as_ref().map(|t| t.to_string()),
    })
}

/// A state as `transfer ls` shows it.
fn state_word(file: &FileInfo) -> &'static str {
    use transfer_client::proto::FileState;
    match file.state() {
        FileState::Unspecified => "?",
        FileState::Uploading => "uploading",
        FileState::Complete => "complete",
        FileState::Aborted => "aborted",
        FileState::Failed => "failed",
        FileState::Expired => "expired",
    }
}

impl Report {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    fn emit(&self, value: serde_json::Value) {
        println!("{value}");
    }

    pub fn uploaded(&self, path: &str, uploaded: &UploadedFile) {
        let file = &uploaded.file;
        if self.json {
            let mut value = file_json(file);
            value["path"] = json!(path);
            value["status"] = json!("completed");
            value["instant"] = json!(uploaded.instant);
            value["chunks_sent"] = json!(uploaded.chunks_sent);
            self.emit(value);
        } else {
            let how = if uploaded.instant {
                "already stored, nothing sent"
            } else {
                "uploaded"
            };
            println!(
                "{}: {how}; file id {} ({} bytes, md5 {})",
                printable(path),
                printable(&file.file_id),
                file.size,
                hex::encode(&file.md5)
            );
        }
    }

    pub fn downloaded(&self, downloaded: &DownloadedFile) {
        let file = &downloaded.file;
        let path = downloaded.path.display().to_string();
        if self.json {
            let mut value = file_json(file);
            value["path"] = json!(path);
            value["status"] = json!("completed");
            value["resumed_from"] = json!(downloaded.resumed_from);
            self.emit(value);
        } else {
            println!(
                "{}: downloaded file {} ({} bytes, md5 {} verified)",
                printable(&path),
                printable(&file.file_id),
                file.size,
                hex::encode(&file.md5)
            );
        }
    }

    pub fn file(&self, file: &FileInfo) {
        if self.json {
            self.emit(file_json(file));
        } else {
            println!("file id   {}", printable(&file.file_id));
            println!("name      {}", printable(&file.name));
            println!("size      {} bytes", file.size);
            println!("md5       {}", hex::encode(&file.md5));
            println!("state     {}", file.state().as_str_name());
            if !file.failure.is_empty() {
                println!("failure   {}", printable(&file.failure));
            }
        }
    }

    /// One line of `transfer ls`: id, state, size, creation time, name.
    pub fn listed(&self, file: &FileInfo) {
        if self.json {
            self.emit(file_json(file));
        } else {
            let created = file
                .created_at
                .as_ref()
                .map_or_else(String::new, |t| t.to_string());
            println!(
                "{}  {:<9}  {:>14}  {:<30}  {}",
                printable(&file.file_id),
                state_word(file),
                file.size,
                created,
                printable(&file.name)
            );
        }
    }

    pub fn deleted(&self, file_id: &str) {
        if self.json {
            self.emit(json!({"file_id": file_id, "status": "deleted"}));
        } else {
            println!("{}: deleted", printable(file_id));
        }
    }

    pub fn aborted(&self, path: &Path, outcome: &AbortOutcome) {
        let path = path.display().to_string();
        let shown = printable(&path);
        match (outcome, self.json) {
            (AbortOutcome::Aborted { upload_id }, true) => {
                self.emit(json!({"path": path, "status": "aborted", "upload_id": upload_id}))
            }
            (AbortOutcome::Aborted { upload_id }, false) => {
                println!("{shown}: upload session {} aborted", printable(upload_id))
            }
            (AbortOutcome::NothingInProgress, true) => {
                self.emit(json!({"path": path, "status": "nothing_in_progress"}))
            }
            (AbortOutcome::NothingInProgress, false) => {
                println!("{shown}: no upload of it was in progress")
            }
            (AbortOutcome::AlreadyStored(file), true) => {
                let mut value = file_json(file);
                value["path"] = json!(path);
                value["status"] = json!("already_stored");
                self.emit(value);
            }
            (AbortOutcome::AlreadyStored(file), false) => {
                eprintln!(
                    "{shown}: already stored as file {}: nothing to abort",
                    printable(&file.file_id)
                )
            }
        }
    }

    pub fn failed(&self, name: &str, error: &TransferError) {
        if self.json {
            self.emit(json!({"path": name, "status": "failed", "error": error.to_string()}));
        } else {
            eprintln!("{}", printable(&error.to_string()));
        }
    }

    pub fn error(&self, error: &TransferError) {
        if self.json {
            self.emit(json!({"status": "failed", "error": error.to_string()}));
        } else {
            eprintln!("transfer: {}", printable(&error.to_string()));
        }
    }

    pub fn interrupted(&self) {
        if self.json {
            self.emit(json!({"status": "paused"}));
        }
        eprintln!("transfer: paused; run the same command again to resume");
    }
}
