//! Parsing of request fields shared by several RPCs.

use uuid::Uuid;

use crate::error::ServiceError;
use crate::ledger::Md5Digest;

/// Parses a file or upload id (a UUID in text form).
pub fn parse_id(field: &'static str, text: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(text).map_err(|_| ServiceError::BadRequest {
        field,
        problem: format!("{} is not a UUID", quoted(text)),
    })
}

/// Parses an MD5 digest given as 16 raw bytes.
pub fn parse_md5(field: &'static str, bytes: &[u8]) -> Result<Md5Digest, ServiceError> {
    Md5Digest::try_from(bytes).map_err(|_| ServiceError::BadRequest {
        field,
        problem: format!(
            "must be the 16 raw bytes of an MD5 digest, got {} bytes",
            bytes.len()
        ),
    })
}

/// Most characters of a client's input an error message repeats.
const MAX_ECHO: usize = 64;

/// A client's text as an error message may show it: quoted, escaped, and cut after
/// [`MAX_ECHO`] characters, so a message never carries much of what was sent.
pub fn quoted(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(MAX_ECHO).collect();
    match chars.next() {
        None => format!("{head:?}"),
        Some(_) => format!("{head:?}… ({} bytes)", text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_input_is_escaped_and_cut_short() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(quoted("a\u{1b}[2J"), "\"a\\u{1b}[2J\"");
        let long = "x".repeat(65_536);
        let shown = quoted(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("… (65536 bytes)"));
    }

    #[test]
    fn a_bad_id_is_named_in_short() {
        let error = parse_id("file_id", &"y".repeat(10_000)).unwrap_err();
        assert!(error.to_string().len() < 200);
    }
}
