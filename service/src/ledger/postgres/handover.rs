//! Hand-over requests between replicas over PostgreSQL's LISTEN/NOTIFY: each replica
//! listens on a channel of its own, on a connection of its own (outside the pools: a
//! listening connection must stay open and be read all the time).

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use super::tls::DatabaseTls;

/// Requests not yet read by the registry: more wait in the database's queue.
const QUEUE: usize = 256;
/// Pause before listening again after the connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The channel replica `replica` listens on (a channel name is an identifier: at most
/// 63 bytes).
pub(super) fn channel(replica: &str) -> String {
    let mut name = format!("transfer_handover_{replica}");
    name.truncate(63);
    name
}

/// Listens on `channel` until the receiver is dropped, reconnecting after failures;
/// sends each upload id asked for.
pub(super) fn listen(
    config: tokio_postgres::Config,
    tls: DatabaseTls,
    channel: String,
) -> mpsc::Receiver<Uuid> {
    let (requests, received) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        while !requests.is_closed() {
            let ended = match &tls {
                DatabaseTls::Off => match config.connect(NoTls).await {
                    Ok(connected) => forward(connected, &channel, &requests).await,
                    Err(error) => Err(error),
                },
                DatabaseTls::On(tls) => match config.connect(tls.clone()).await {
                    Ok(connected) => forward(connected, &channel, &requests).await,
                    Err(error) => Err(error),
                },
            };
            if let Err(error) = ended {
                tracing::warn!(%error, "listening for hand-over requests failed; listening again shortly (meanwhile other replicas wait out leases instead)");
            }
            tokio::select! {
                () = tokio::time::sleep(RECONNECT_AFTER) => {}
                () = requests.closed() => break,
            }
        }
    });
    received
}

/// Listens on one connection until it ends or the receiver is dropped.
async fn forward<S, T>(
    (client, mut connection): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
    channel: &str,
    requests: &mpsc::Sender<Uuid>,
) -> Result<(), tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection must be read while LISTEN runs: both at once.
    let statement = format!("LISTEN \"{channel}\"");
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    let mut listened = false;
    loop {
        tokio::select! {
            done = &mut listening, if !listened => {
                done?;
                listened = true;
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    if let Ok(id) = Uuid::try_parse(note.payload())
                        && requests.send(id).await.is_err()
                    {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
            () = requests.closed() => return Ok(()),
        }
    }
}
