//! A TCP proxy that cuts connections, to test what survives a dropped connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards 127.0.0.1 connections to a target. The first `cuts` connections are cut
/// (both sides closed) once `cut_after` bytes have passed through them, in either
/// direction; later connections pass untouched.
pub struct CuttingProxy {
    pub addr: SocketAddr,
    cuts_made: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl CuttingProxy {
    pub async fn start(target: SocketAddr, cut_after: u64, cuts: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let cuts_made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&cuts_made);
        let accept = tokio::spawn(async move {
            let mut cuts_left = cuts;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let limit = if cuts_left > 0 {
                    cuts_left -= 1;
                    Some(cut_after)
                } else {
                    None
                };
                tokio::spawn(relay(client, server, limit, Arc::clone(&counter)));
            }
        });
        Self {
            addr,
            cuts_made,
            accept,
        }
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

async fn relay(client: TcpStream, server: TcpStream, limit: Option<u64>, cuts: Arc<AtomicUsize>) {
    let passed = Arc::new(AtomicU64::new(0));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = copy(client_read, server_write, limit, Arc::clone(&passed));
    let down = copy(server_read, client_write, limit, passed);
    // When either direction ends (or is cut), drop both: the connection is gone.
    let cut = tokio::select! {
        cut = up => cut,
        cut = down => cut,
    };
    if cut {
        cuts.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies until EOF, an error, or the shared byte count passes `limit` (then `true`).
async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    limit: Option<u64>,
    passed: Arc<AtomicU64>,
) -> bool {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let total = passed.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if let Some(limit) = limit
            && total > limit
        {
            // Forward only up to the limit, then cut.
            let allowed = n.saturating_sub((total - limit) as usize);
            let _ = to.write_all(&buf[..allowed]).await;
            return true;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}
