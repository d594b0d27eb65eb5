//! `ListFiles`: an owner's files a page at a time, and the page tokens that say where a
//! page ended.

use chrono::DateTime;
use transfer_proto::v1::{self as proto, ListFilesRequest, ListFilesResponse};
use uuid::Uuid;

use super::file_info;
use crate::error::ServiceError;
use crate::identity::Owner;
use crate::ledger::{FileCatalog, FileListing, FileState, ListPosition};

/// Files in a page when the request does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most files in a page; larger requests get this many (as Google's API guidelines
/// have it), so one call cannot make the server read an owner's whole catalogue.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The start of the year 10000, in µs since the epoch: later than any file's creation.
const MAX_TOKEN_MICROS: i64 = 253_402_300_800_000_000;
/// File names are at most this long, so no longer prefix can match.
const MAX_PREFIX_BYTES: usize = 1024;

/// One page of `owner`'s files, as `request` asks.
pub async fn list_files(
    ledger: &dyn FileCatalog,
    owner: &Owner,
    request: &ListFilesRequest,
) -> Result<ListFilesResponse, ServiceError> {
    let page_size = match request.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    if request.name_prefix.contains('\0') {
        return Err(ServiceError::BadRequest {
            field: "name_prefix",
            problem: "must not contain NUL characters (no name does)".into(),
        });
    }
    if request.name_prefix.len() > MAX_PREFIX_BYTES {
        return Err(ServiceError::BadRequest {
            field: "name_prefix",
            problem: format!(
                "{} bytes; names are at most {MAX_PREFIX_BYTES}",
                request.name_prefix.len()
            ),
        });
    }
    let listing = FileListing {
        state: state_filter(request.state)?,
        name_prefix: request.name_prefix.clone(),
        after: PageToken::parse(&request.page_token)?,
        // One more than the page: whether it comes back says whether a next page exists.
        limit: page_size + 1,
    };
    let mut files = ledger.list_files(owner.as_str(), &listing).await?;
    let more = files.len() > page_size;
    files.truncate(page_size);
    let next_page_token = match files.last() {
        Some(last) if more => PageToken::of(last.list_position()),
        _ => String::new(),
    };
    Ok(ListFilesResponse {
        files: files.iter().map(file_info).collect(),
        next_page_token,
    })
}

fn state_filter(state: i32) -> Result<Option<FileState>, ServiceError> {
    let state = proto::FileState::try_from(state).map_err(|_| ServiceError::BadRequest {
        field: "state",
        problem: format!("{state} is not a FileState"),
    })?;
    Ok(match state {
        proto::FileState::Unspecified => None,
        proto::FileState::Uploading => Some(FileState::Uploading),
        proto::FileState::Complete => Some(FileState::Complete),
        proto::FileState::Aborted => Some(FileState::Aborted),
        proto::FileState::Failed => Some(FileState::Failed),
        proto::FileState::Expired => Some(FileState::Expired),
    })
}

/// Where a page ended, as the client hands it back: the last file's creation time (µs
/// since the epoch, 8 bytes big-endian) and id, in hex. It names only a position in the
/// caller's own listing, so a forged token shows nothing the caller could not list.
struct PageToken;

impl PageToken {
    fn of(position: ListPosition) -> String {
        let mut bytes = position
            .created_at
            .timestamp_micros()
            .to_be_bytes()
            .to_vec();
        bytes.extend_from_slice(position.id.as_bytes());
        hex::encode(bytes)
    }

    fn parse(token: &str) -> Result<Option<ListPosition>, ServiceError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || ServiceError::BadRequest {
            field: "page_token",
            problem: "not a token this server gave: pass `next_page_token` back unchanged".into(),
        };
        let bytes = hex::decode(token).map_err(|_| bad())?;
        let (micros, id) = bytes.split_at_checked(8).ok_or_else(bad)?;
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| bad())?);
        // Times the server made are of this era; others would only reach the database
        // to be refused there.
        if !(0..=MAX_TOKEN_MICROS).contains(&micros) {
            return Err(bad());
        }
        Ok(Some(ListPosition {
            created_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
            id: Uuid::from_slice(id).map_err(|_| bad())?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_names_the_position_it_was_made_from() {
        let position = ListPosition {
            created_at: DateTime::from_timestamp_micros(1_765_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        let token = PageToken::of(position);
        assert_eq!(PageToken::parse(&token).unwrap(), Some(position));
        assert_eq!(PageToken::parse("").unwrap(), None);
    }

    #[test]
    fn a_token_the_server_did_not_make_is_a_bad_request() {
        let far_future = hex::encode([i64::MAX.to_be_bytes().as_slice(), &[0; 16]].concat());
        for token in [
            "x",
            "00",
            &"0".repeat(46),
            &"0".repeat(50),
            &"g".repeat(48),
            &far_future,
        ] {
            let error = PageToken::parse(token).unwrap_err();
            assert!(
                matches!(
                    error,
                    ServiceError::BadRequest {
                        field: "page_token",
                        ..
                    }
                ),
                "{token}: {error}"
            );
        }
    }
}
