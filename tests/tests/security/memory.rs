//! What an attacker can make the real `transferd` process hold, measured from /proc:
//! many connections sending half of a large message each and then nothing. The server
//! serves a bounded number of connections at once, each bounded by its HTTP/2 window,
//! and closes every stalled stream at its deadline.

use std::time::Duration;

use tonic::Code;
use transfer_tests::{Ledger, TransferdProcess};

use crate::limits::{StallingUpload, half_a_message};

const MIB: u64 = 1 << 20;
/// Connections served at once, and what each may buffer.
const CONNECTIONS: u64 = 4;
const WINDOW: u64 = 8 * MIB;

#[tokio::test]
async fn many_half_sent_messages_hold_bounded_memory_and_are_closed() {
    let server = TransferdProcess::start_with_args(
        Ledger::Sqlite,
        &[
            "--max-connections",
            &CONNECTIONS.to_string(),
            "--http2-stream-window",
            &WINDOW.to_string(),
            "--http2-connection-window",
            &WINDOW.to_string(),
            "--first-message-secs",
            "2",
            "--stream-idle-secs",
            "2",
        ],
    )
    .await;
    let before = server.rss_bytes();
    // Sixteen connections, each sending the prefix of a 16 MiB message and 12 MiB of it.
    let attacks: Vec<_> = (0..16)
        .map(|_| {
            let endpoint = server.endpoint();
            tokio::spawn(async move {
                StallingUpload::send(
                    &endpoint,
                    half_a_message(16 * MIB as u32, 12 * MIB as usize),
                )
                .await
            })
        })
        .collect();
    let mut codes = Vec::new();
    for attack in attacks {
        let status = tokio::time::timeout(Duration::from_secs(60), attack)
            .await
            .expect("every stalled stream is closed in time")
            .unwrap();
        codes.push(status.code());
    }
    assert!(
        codes.iter().all(|c| *c == Code::DeadlineExceeded),
        "every stalled stream is closed by its deadline: {codes:?}"
    );
    let grew = server.peak_rss_bytes().saturating_sub(before);
    // What the served connections may buffer, and as much again for the messages being
    // gathered and the allocator's slack.
    let bound = 2 * CONNECTIONS * (WINDOW + 16 * MIB) + 32 * MIB;
    eprintln!(
        "transferd's peak RSS grew by {} MiB under the attack (bound {} MiB)",
        grew / MIB,
        bound / MIB
    );
    assert!(
        grew <= bound,
        "peak RSS grew by {} MiB, over the bound of {} MiB",
        grew / MIB,
        bound / MIB
    );
}
