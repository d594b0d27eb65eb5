//! A TCP proxy that plays a slower network link: it delays every byte by a one-way
//! latency in each direction, can cap the rate, counts what passes, and can cut the
//! first connection after some bytes (to measure what a resume costs).
//!
//! It delays bytes; it does not emulate loss or TCP's congestion control. What it shows
//! is what a protocol's own windows and round trips cost on a long link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How far ahead of its rate a paced reader may run before it sleeps.
const PACING_SLACK: Duration = Duration::from_millis(4);

/// What the link does to the bytes that cross it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    /// Added to every byte, in each direction (round trip = 2 × this).
    pub one_way_delay: Duration,
    /// Most bytes per second in each direction; `None` is as fast as loopback.
    pub rate: Option<u64>,
    /// Cut the first connection once this many bytes went from client to server.
    pub cut_first_after: Option<u64>,
}

impl Link {
    pub fn delayed(one_way: Duration, rate: Option<u64>) -> Self {
        Self {
            one_way_delay: one_way,
            rate,
            cut_first_after: None,
        }
    }

    /// How the link is named in the tables, e.g. `50 ms RTT, 1 Gbit/s`.
    pub fn describe(&self) -> String {
        let rtt = self.one_way_delay.as_millis() * 2;
        match self.rate {
            Some(rate) => format!("{rtt} ms RTT, {} Mbit/s", rate * 8 / 1_000_000),
            None => format!("{rtt} ms RTT"),
        }
    }
}

/// A running proxy in front of `target`.
pub struct LinkProxy {
    pub addr: SocketAddr,
    upstream: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl LinkProxy {
    pub async fn start(target: SocketAddr, link: Link) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&upstream);
        let cuts_left = Arc::new(AtomicUsize::new(usize::from(
            link.cut_first_after.is_some(),
        )));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut_after = if cuts_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    link.cut_first_after
                } else {
                    None
                };
                tokio::spawn(relay(client, target, link, Arc::clone(&counter), cut_after));
            }
        });
        Ok(Self {
            addr,
            upstream,
            accept,
        })
    }

    /// Bytes that went from clients to the target so far, over all connections.
    pub fn upstream_bytes(&self) -> u64 {
        self.upstream.load(Ordering::SeqCst)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The connection was cut on purpose.
struct Cut;

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    link: Link,
    upstream: Arc<AtomicU64>,
    cut_after: Option<u64>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, link, Some(upstream), cut_after);
    let down = pipe(server_read, client_write, link, None, None);
    // A cut drops both directions at once, closing both sockets.
    let _ = futures::future::try_join(up, down).await;
}

/// One direction: a reader paced to the rate hands timestamped pieces to a writer that
/// releases each one its delay later.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Link,
    counter: Option<Arc<AtomicU64>>,
    cut_after: Option<u64>,
) -> Result<(), Cut> {
    let (pieces, mut due_pieces) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut passed = 0u64;
        let mut paced_until = Instant::now();
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            buf.truncate(n);
            passed += n as u64;
            if cut_after.is_some_and(|limit| passed > limit) {
                return Err(Cut);
            }
            if let Some(counter) = &counter {
                counter.fetch_add(n as u64, Ordering::SeqCst);
            }
            if let Some(rate) = link.rate {
                // Reading no faster than the rate makes the sender's socket fill up, as
                // a slow link would.
                // Timers tick in milliseconds: sleep only once a few ms ahead, and let
                // a late wake-up catch up, so the average rate is exact rather than
                // capped by the timer. Only an idle link starts counting afresh.
                let now = Instant::now();
                if now > paced_until + PACING_SLACK {
                    paced_until = now;
                }
                paced_until += Duration::from_secs_f64(n as f64 / rate as f64);
                if paced_until > now + PACING_SLACK {
                    tokio::time::sleep_until(paced_until).await;
                }
            }
            if pieces
                .send((Instant::now() + link.one_way_delay, buf))
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, piece)) = due_pieces.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if to.write_all(&piece).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
        Ok(())
    };
    futures::future::try_join(reader, writer).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_round_trip_through_the_link_takes_twice_its_delay() {
        let link = Link::delayed(Duration::from_millis(30), None);
        let proxy = LinkProxy::start(echo_server().await, link).await.unwrap();
        let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
        let started = std::time::Instant::now();
        socket.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        socket.read_exact(&mut reply).await.unwrap();
        let rtt = started.elapsed();
        assert_eq!(&reply, b"ping");
        assert!(rtt >= Duration::from_millis(60), "round trip {rtt:?}");
        assert!(rtt < Duration::from_millis(500), "round trip {rtt:?}");
        assert_eq!(proxy.upstream_bytes(), 4);
    }

    #[tokio::test]
    async fn the_rate_cap_holds_bytes_back() {
        // 2 MiB at 8 MiB/s takes at least a quarter of a second.
        let link = Link::delayed(Duration::ZERO, Some(8 << 20));
        let proxy = LinkProxy::start(echo_server().await, link).await.unwrap();
        let socket = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut r, mut w) = socket.into_split();
        let started = std::time::Instant::now();
        let send = tokio::spawn(async move { w.write_all(&vec![7u8; 2 << 20]).await });
        let mut got = vec![0u8; 2 << 20];
        r.read_exact(&mut got).await.unwrap();
        send.await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(240));
        assert!(got.iter().all(|&b| b == 7));
    }

    #[tokio::test]
    async fn the_first_connection_is_cut_and_later_ones_pass() {
        let link = Link {
            cut_first_after: Some(1000),
            ..Link::default()
        };
        let proxy = LinkProxy::start(echo_server().await, link).await.unwrap();
        let mut first = TcpStream::connect(proxy.addr).await.unwrap();
        first.write_all(&[1u8; 4000]).await.unwrap();
        let mut sink = Vec::new();
        // The cut closes the connection: reading ends (EOF or reset) instead of hanging.
        let _ = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut sink))
            .await
            .expect("the cut connection closes");
        assert!(sink.len() <= 1000);

        let mut second = TcpStream::connect(proxy.addr).await.unwrap();
        second.write_all(&[2u8; 4000]).await.unwrap();
        let mut echoed = vec![0u8; 4000];
        second.read_exact(&mut echoed).await.unwrap();
        assert!(echoed.iter().all(|&b| b == 2));
    }
}
