//! A TCP proxy that cuts connections, to test what survives a dropped connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to a connection once its byte limit has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close both sides: a dropped connection.
    Cut,
    /// Keep both sides open but forward nothing more: a hung connection.
    Stall,
}

/// Forwards 127.0.0.1 connections to a target. The first `cuts` connections meet their
/// fault once `cut_after` bytes have passed through them, in either direction; later
/// connections pass untouched.
pub struct CuttingProxy {
    pub addr: SocketAddr,
    cuts_made: Arc<AtomicUsize>,
    /// Bytes forwarded from clients to the target, and back, over every connection.
    counted: Arc<Counted>,
    /// Bytes forwarded from clients to the target, per connection in the order accepted.
    by_connection: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
    accept: JoinHandle<()>,
}

/// Bytes a proxy forwarded, by direction: what a client really sent and received.
#[derive(Default)]
struct Counted {
    to_server: AtomicU64,
    to_client: AtomicU64,
}

impl CuttingProxy {
    pub async fn start(target: SocketAddr, cut_after: u64, cuts: usize) -> Self {
        Self::with_fault(target, Fault::Cut, cut_after, cuts).await
    }

    pub async fn with_fault(target: SocketAddr, fault: Fault, cut_after: u64, cuts: usize) -> Self {
        Self::planned(target, fault, cut_after, 0, cuts).await
    }

    /// A proxy that cuts only connection number `nth` (from 0, in the order accepted),
    /// once `cut_after` bytes have passed through it.
    pub async fn cutting_connection(target: SocketAddr, nth: usize, cut_after: u64) -> Self {
        Self::planned(target, Fault::Cut, cut_after, nth, 1).await
    }

    /// Connections `skip..skip + cuts` meet `fault` after `cut_after` bytes.
    async fn planned(
        target: SocketAddr,
        fault: Fault,
        cut_after: u64,
        skip: usize,
        cuts: usize,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let cuts_made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&cuts_made);
        let counted = Arc::new(Counted::default());
        let counting = Arc::clone(&counted);
        let by_connection = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = Arc::clone(&by_connection);
        let accept = tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let limit = (skip..skip + cuts).contains(&accepted).then_some(cut_after);
                accepted += 1;
                let this_connection = Arc::new(AtomicU64::new(0));
                connections
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(Arc::clone(&this_connection));
                tokio::spawn(relay(
                    client,
                    server,
                    fault,
                    limit,
                    Arc::clone(&counter),
                    Arc::clone(&counting),
                    this_connection,
                ));
            }
        });
        Self {
            addr,
            cuts_made,
            counted,
            by_connection,
            accept,
        }
    }

    /// Bytes forwarded from clients to the target so far, per connection in the order
    /// they were accepted.
    pub fn bytes_to_server_by_connection(&self) -> Vec<u64> {
        self.by_connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|bytes| bytes.load(Ordering::SeqCst))
            .collect()
    }

    /// Bytes forwarded from clients to the target so far: what uploads really sent,
    /// resends included.
    pub fn bytes_to_server(&self) -> u64 {
        self.counted.to_server.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the target to clients so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.counted.to_client.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections have been cut so far.
    pub fn cuts_made(&self) -> usize {
        self.cuts_made.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    fault: Fault,
    limit: Option<u64>,
    cuts: Arc<AtomicUsize>,
    counted: Arc<Counted>,
    this_connection: Arc<AtomicU64>,
) {
    let link = Arc::new(Link {
        fault,
        limit,
        passed: AtomicU64::new(0),
        faulted: AtomicBool::new(false),
        cuts,
    });
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // When either direction ends or is cut, both are dropped: the connection is gone.
    // A stalled direction never ends by itself; it ends when the peer gives up.
    let upstream = [&counted.to_server, &*this_connection];
    let downstream = [&counted.to_client];
    tokio::select! {
        _ = copy(client_read, server_write, Arc::clone(&link), &upstream) => {}
        _ = copy(server_read, client_write, link, &downstream) => {}
    }
}

/// What both directions of one proxied connection share.
struct Link {
    fault: Fault,
    limit: Option<u64>,
    passed: AtomicU64,
    faulted: AtomicBool,
    cuts: Arc<AtomicUsize>,
}

/// Copies until EOF or an error, or until the bytes passed in both directions exceed
/// the limit: then a cut returns, and a stall keeps reading without forwarding.
async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    forwarded: &[&AtomicU64],
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let before = link.passed.fetch_add(n as u64, Ordering::SeqCst);
        let allowed = match link.limit {
            Some(limit) => limit.saturating_sub(before).min(n as u64) as usize,
            None => n,
        };
        if allowed > 0 && to.write_all(&buf[..allowed]).await.is_err() {
            return;
        }
        for counter in forwarded {
            counter.fetch_add(allowed as u64, Ordering::SeqCst);
        }
        if allowed < n {
            if !link.faulted.swap(true, Ordering::SeqCst) {
                link.cuts.fetch_add(1, Ordering::SeqCst);
            }
            if link.fault == Fault::Cut {
                return;
            }
        }
    }
}

/// Forwards 127.0.0.1 connections to a target, holding every byte the target sends back
/// for `delay` before passing it on; the client's bytes pass at once. A link whose
/// answers are slow, to see what a client does before an answer arrives.
pub struct SlowRepliesProxy {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl SlowRepliesProxy {
    pub async fn start(target: SocketAddr, delay: std::time::Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(relay_slow_replies(client, server, delay));
            }
        });
        Self { addr, accept }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowRepliesProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay_slow_replies(client: TcpStream, server: TcpStream, delay: std::time::Duration) {
    // No delay but the one asked for: small writes go out at once.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    // Replies are read as they come and written out once each has waited `delay`.
    let (held, mut due) = tokio::sync::mpsc::unbounded_channel();
    let read_replies = async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = server_read.read(&mut buf).await {
            let release_at = tokio::time::Instant::now() + delay;
            if held.send((release_at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let write_replies = async move {
        while let Some((release_at, bytes)) = due.recv().await {
            tokio::time::sleep_until(release_at).await;
            if client_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends first ends the connection.
    tokio::select! {
        _ = up => {}
        _ = futures::future::join(read_replies, write_replies) => {}
    }
}

/// Spreads 127.0.0.1 connections over several targets, as a load balancer with no
/// affinity does: each new connection goes to the next target that accepts it. Every
/// connection open through it can be cut at once ([`RoundRobinProxy::cut_all`]).
pub struct RoundRobinProxy {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl RoundRobinProxy {
    pub async fn start(targets: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let open = Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let connections = Arc::clone(&open);
        let accept = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((mut client, _)) = listener.accept().await {
                let mut server = None;
                // A target that is down (killed, restarting) is passed over.
                for _ in 0..targets.len() {
                    let target = targets[next % targets.len()];
                    next += 1;
                    if let Ok(connected) = TcpStream::connect(target).await {
                        server = Some(connected);
                        break;
                    }
                }
                let Some(mut server) = server else {
                    continue;
                };
                let forward = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                let mut connections = connections.lock().unwrap();
                connections.retain(|c| !c.is_finished());
                connections.push(forward.abort_handle());
            }
        });
        Self { addr, accept, open }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection open through the proxy, both sides (a load balancer
    /// restarting, a network blip); returns how many there were. New ones are taken as
    /// before.
    pub fn cut_all(&self) -> usize {
        let cut: Vec<_> = std::mem::take(&mut *self.open.lock().unwrap());
        let live = cut.iter().filter(|c| !c.is_finished()).count();
        for connection in cut {
            connection.abort();
        }
        live
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
