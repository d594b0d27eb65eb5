//! Unit tests of the PostgreSQL ledger beyond the conformance suites: how errors are
//! classified. (Its migrations of old ledgers are tested in the test crate's
//! `conformance/migrations.rs`, which has a database to run them on.)

use super::*;
use tokio_postgres::error::SqlState;

fn kind(code: Option<&SqlState>, closed: bool) -> String {
    let error = classify(code, closed, "m".into());
    format!("{error:?}")
        .split('(')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn errors_say_whether_to_retry_wait_or_fix_a_bug() {
    assert_eq!(
        kind(Some(&SqlState::T_R_SERIALIZATION_FAILURE), false),
        "RetryableConflict"
    );
    assert_eq!(
        kind(Some(&SqlState::T_R_DEADLOCK_DETECTED), false),
        "RetryableConflict"
    );
    assert_eq!(kind(Some(&SqlState::UNIQUE_VIOLATION), false), "Constraint");
    assert_eq!(kind(Some(&SqlState::CHECK_VIOLATION), false), "Constraint");
    assert_eq!(
        kind(Some(&SqlState::FOREIGN_KEY_VIOLATION), false),
        "ReferenceGone"
    );
    assert_eq!(kind(Some(&SqlState::ADMIN_SHUTDOWN), false), "Unavailable");
    assert_eq!(
        kind(Some(&SqlState::CONNECTION_FAILURE), false),
        "Unavailable"
    );
    assert_eq!(
        kind(Some(&SqlState::TOO_MANY_CONNECTIONS), false),
        "Unavailable"
    );
    assert_eq!(kind(None, true), "Unavailable");
    assert_eq!(kind(Some(&SqlState::SYNTAX_ERROR), false), "Database");
    assert_eq!(kind(None, false), "Database");
}
