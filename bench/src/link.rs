//! A TCP proxy that plays a slower network link: it delays every byte by a one-way
//! latency in each direction, can cap the rate with a queue in front of the cap (a
//! router's buffer at the bottleneck), counts what passes, and can cut the first
//! connection after some bytes (to measure what a resume costs).
//!
//! It delays bytes and, like TCP over a real long link, lets at most a receive window of
//! bytes be in flight per connection and direction: a byte's room is freed one round
//! trip after it was read (when its ACK would be back). It does not emulate loss or
//! TCP's congestion control. What it shows is what a protocol's own windows and round
//! trips cost on a long link, on top of what TCP itself allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How far ahead of its rate a paced reader may run before it sleeps.
const PACING_SLACK: Duration = Duration::from_millis(4);

/// What the link does to the bytes that cross it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    /// Added to every byte, in each direction (round trip = 2 × this).
    pub one_way_delay: Duration,
    /// Most bytes per second in each direction, shared by every connection across the
    /// link (its bottleneck); `None` is as fast as loopback.
    pub rate: Option<u64>,
    /// Bytes that may wait at the rate cap, per direction over all connections, before
    /// they go on (then the delay): the bottleneck's queue. `None` queues one read's
    /// worth per connection.
    pub queue: Option<u64>,
    /// Cut the first connection once this many bytes went from client to server.
    pub cut_first_after: Option<u64>,
    /// Most bytes in flight per connection and direction (TCP's receive window); `None`
    /// lets the proxy take in bytes as fast as they come, as no real link would.
    pub window: Option<u64>,
}

impl Link {
    /// A link with the system's default TCP receive window ([`default_window`]).
    pub fn delayed(one_way: Duration, rate: Option<u64>) -> Self {
        Self {
            one_way_delay: one_way,
            rate,
            queue: None,
            cut_first_after: None,
            window: Some(default_window()),
        }
    }

    /// How the link is named in the tables, e.g. `50 ms RTT, 1000 Mbit/s, TCP window 6.0 MiB`.
    pub fn describe(&self) -> String {
        let rtt = self.one_way_delay.as_millis() * 2;
        let mut name = format!("{rtt} ms RTT");
        if let Some(rate) = self.rate {
            name += &format!(", {} Mbit/s", rate * 8 / 1_000_000);
            if let Some(queue) = self.queue {
                name += &format!(" behind a {} MiB queue", queue >> 20);
            }
        }
        if let Some(window) = self.window {
            name += &format!(", TCP window {:.1} MiB", window as f64 / f64::from(1 << 20));
        }
        name
    }
}

/// The largest receive buffer Linux gives a TCP socket by default (the last field of
/// `net.ipv4.tcp_rmem`, 6 MiB unless tuned): the most a connection with default
/// settings keeps in flight on a long link.
pub fn default_window() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(6 << 20)
}

/// The smallest window the proxy keeps: one read's worth.
const MIN_WINDOW: u64 = READ_SIZE as u64;

/// Bytes read from a socket at once.
const READ_SIZE: usize = 64 * 1024;

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
        let up = Bottleneck::of(&link);
        let down = Bottleneck::of(&link);
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
                let bottlenecks = (up.clone(), down.clone());
                tokio::spawn(relay(
                    client,
                    target,
                    link,
                    bottlenecks,
                    Arc::clone(&counter),
                    cut_after,
                ));
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

/// The link's narrowest point in one direction, shared by every connection across it:
/// its rate, and the queue in front of it.
struct Bottleneck {
    rate: u64,
    /// Room in the queue, in bytes.
    queue: Semaphore,
    /// When the cap is free for the next byte.
    free_at: std::sync::Mutex<Instant>,
}

impl Bottleneck {
    fn of(link: &Link) -> Option<Arc<Self>> {
        let rate = link.rate?;
        Some(Arc::new(Self {
            rate,
            queue: Semaphore::new(link.queue.unwrap_or(MIN_WINDOW).max(MIN_WINDOW) as usize),
            free_at: std::sync::Mutex::new(Instant::now()),
        }))
    }

    /// When `n` bytes that reach the cap now have passed it. Timers tick in
    /// milliseconds: a piece a little late does not push the next ones back, so the
    /// average rate is exact rather than capped by the timer; only an idle link starts
    /// counting afresh.
    fn departure(&self, n: usize) -> Instant {
        let mut free_at = self
            .free_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now > *free_at + PACING_SLACK {
            *free_at = now;
        }
        *free_at += Duration::from_secs_f64(n as f64 / self.rate as f64);
        *free_at
    }
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    link: Link,
    (up, down): (Option<Arc<Bottleneck>>, Option<Arc<Bottleneck>>),
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
    let up = pipe(
        client_read,
        server_write,
        link,
        up,
        Some(upstream),
        cut_after,
    );
    let down = pipe(server_read, client_write, link, down, None, None);
    // A cut drops both directions at once, closing both sockets.
    let _ = futures::future::try_join(up, down).await;
}

/// One direction: a reader takes bytes in while the window has room; with a rate cap
/// they queue (while the bottleneck's queue has room) for a pacer that lets them past
/// the cap at its rate, shared with every other connection; then a writer releases each
/// piece its delay later, and its room in the window comes back one delay after that
/// (when the ACK would be back).
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Link,
    bottleneck: Option<Arc<Bottleneck>>,
    counter: Option<Arc<AtomicU64>>,
    cut_after: Option<u64>,
) -> Result<(), Cut> {
    let (pieces, mut due_pieces) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let (acks, mut due_acks) = mpsc::unbounded_channel::<(Instant, usize)>();
    let (queued, mut to_pace) = mpsc::unbounded_channel::<Vec<u8>>();
    let window = link
        .window
        .map(|w| Arc::new(Semaphore::new(w.max(MIN_WINDOW) as usize)));
    let room = window.clone();
    let closing = window.clone();
    let queue_taken = bottleneck.clone();
    let delayed = pieces.clone();
    let reader = async move {
        let mut passed = 0u64;
        loop {
            let mut buf = vec![0u8; READ_SIZE];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            buf.truncate(n);
            if let Some(room) = &room {
                // Wait until the window has room. Closed means the writer has stopped:
                // the send below then fails and ends this direction.
                if let Ok(taken) = room.acquire_many(n as u32).await {
                    taken.forget();
                }
            }
            passed += n as u64;
            if cut_after.is_some_and(|limit| passed > limit) {
                return Err(Cut);
            }
            if let Some(counter) = &counter {
                counter.fetch_add(n as u64, Ordering::SeqCst);
            }
            let sent = if let Some(bottleneck) = &queue_taken {
                // A full queue stops the reading, so the sender's socket fills up, as
                // at a real bottleneck.
                if let Ok(taken) = bottleneck.queue.acquire_many(n as u32).await {
                    taken.forget();
                }
                queued.send(buf).is_ok()
            } else {
                delayed
                    .send((Instant::now() + link.one_way_delay, buf))
                    .is_ok()
            };
            if !sent {
                return Ok(());
            }
        }
    };
    let pacer = async move {
        let Some(bottleneck) = bottleneck else {
            return Ok(());
        };
        while let Some(buf) = to_pace.recv().await {
            let n = buf.len();
            let departure = bottleneck.departure(n);
            if departure > Instant::now() + PACING_SLACK {
                tokio::time::sleep_until(departure).await;
            }
            bottleneck.queue.add_permits(n);
            if pieces
                .send((Instant::now() + link.one_way_delay, buf))
                .is_err()
            {
                break;
            }
        }
        Ok(())
    };
    let writer = async move {
        while let Some((due, piece)) = due_pieces.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if to.write_all(&piece).await.is_err() {
                break;
            }
            // Delivered: the ACK reaches the sender one delay later.
            let _ = acks.send((Instant::now() + link.one_way_delay, piece.len()));
        }
        // No more room will come back: a reader waiting for it must not wait forever.
        if let Some(window) = &closing {
            window.close();
        }
        let _ = to.shutdown().await;
        Ok(())
    };
    let acker = async move {
        while let Some((due, n)) = due_acks.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if let Some(window) = &window {
                window.add_permits(n);
            }
        }
        Ok(())
    };
    futures::future::try_join4(reader, pacer, writer, acker)
        .await
        .map(|_| ())
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
    async fn connections_across_the_link_share_its_rate_cap() {
        // Two connections of 1 MiB each at 8 MiB/s in all: a quarter of a second, where
        // a cap per connection would let both through in an eighth.
        let link = Link::delayed(Duration::ZERO, Some(8 << 20));
        let proxy = LinkProxy::start(sink_server().await, link).await.unwrap();
        let started = std::time::Instant::now();
        let sends: Vec<_> = (0..2)
            .map(|_| {
                let addr = proxy.addr;
                tokio::spawn(async move {
                    let mut socket = TcpStream::connect(addr).await.unwrap();
                    socket.write_all(&vec![7u8; 1 << 20]).await.unwrap();
                    let mut ack = [0u8; 8];
                    socket.read_exact(&mut ack).await.unwrap();
                })
            })
            .collect();
        for send in sends {
            send.await.unwrap();
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(230), "took {elapsed:?}");
    }

    #[tokio::test]
    async fn the_window_bounds_the_bytes_in_flight_to_one_window_per_round_trip() {
        // 256 KiB per 40 ms round trip is 6.4 MiB/s: 1 MiB takes at least 150 ms, where
        // the delay alone would let it through in about 20 ms.
        let link = Link {
            window: Some(256 << 10),
            ..Link::delayed(Duration::from_millis(20), None)
        };
        let proxy = LinkProxy::start(sink_server().await, link).await.unwrap();
        let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
        let started = std::time::Instant::now();
        socket.write_all(&vec![7u8; 1 << 20]).await.unwrap();
        let mut ack = [0u8; 8];
        socket.read_exact(&mut ack).await.unwrap();
        assert_eq!(u64::from_le_bytes(ack), 1 << 20);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(150), "took {elapsed:?}");
    }

    #[tokio::test]
    async fn a_server_that_goes_away_closes_a_sender_stalled_on_the_window() {
        // The server closes at once; the sender's bytes fill the window and no room comes
        // back. The proxy must still drop the connection, so the sender's writes fail
        // instead of blocking forever.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let link = Link {
            window: Some(64 << 10),
            ..Link::delayed(Duration::from_millis(5), None)
        };
        let proxy = LinkProxy::start(server, link).await.unwrap();
        let mut socket = TcpStream::connect(proxy.addr).await.unwrap();
        let piece = vec![1u8; 1 << 20];
        let sending = async {
            // Far more than any socket buffers hold: only an error ends this loop.
            for _ in 0..1024 {
                socket.write_all(&piece).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let sent = tokio::time::timeout(Duration::from_secs(5), sending)
            .await
            .expect("the proxy drops the connection instead of stalling the sender");
        assert!(sent.is_err(), "1 GiB went into a closed server");
    }

    /// Reads 1 MiB, then answers with the count it read.
    async fn sink_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut got = vec![0u8; 1 << 20];
                    if socket.read_exact(&mut got).await.is_ok() {
                        let _ = socket.write_all(&(got.len() as u64).to_le_bytes()).await;
                    }
                });
            }
        });
        addr
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
