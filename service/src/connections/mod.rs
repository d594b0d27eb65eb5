//! Accepted connections, at most a configured number open at once. Each connection may
//! hold up to its HTTP/2 flow-control window of received bytes in memory, so this cap
//! is what bounds that memory: past it transferd stops accepting, and new clients wait
//! in the kernel's listen backlog until a connection closes. A connection with no call
//! open for a while is closed, and one idle longest is closed when a client waits for a
//! slot ([`idle`]), so idle connections cannot hold every slot.

pub mod idle;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tonic::transport::server::{Connected, TcpConnectInfo};

use idle::{Activity, ConnectionTable, IdleCheck};

/// A connection idle at least this long may be closed to make room for a waiting one:
/// not one that was just opened and has not sent its first call yet.
const MIN_IDLE_TO_MAKE_ROOM: Duration = Duration::from_secs(2);

/// A stream of accepted connections, each served once a slot is free.
pub struct LimitedIncoming<S> {
    inner: S,
    slots: PollSemaphore,
    /// A connection accepted and waiting for a slot.
    waiting: Option<TcpStream>,
    /// When to look again for an idle connection to close while one waits.
    make_room: Pin<Box<tokio::time::Sleep>>,
    /// Where each connection's open calls are counted.
    table: Arc<ConnectionTable>,
    idle_timeout: Duration,
}

impl<S> LimitedIncoming<S> {
    /// At most `limit` connections; each closed once it has had no call open (as
    /// `table` counts them) for `idle_timeout`.
    pub fn new(
        inner: S,
        limit: usize,
        table: Arc<ConnectionTable>,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            slots: PollSemaphore::new(Arc::new(Semaphore::new(limit))),
            waiting: None,
            make_room: Box::pin(tokio::time::sleep(Duration::ZERO)),
            table,
            idle_timeout,
        }
    }
}

impl<S> Stream for LimitedIncoming<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<Admitted>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.waiting.is_none() {
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(io)) => this.waiting = Some(io),
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            }
        }
        loop {
            // The semaphore is never closed.
            if let Poll::Ready(slot) = this.slots.poll_acquire(cx) {
                let Some(io) = this.waiting.take() else {
                    return Poll::Pending;
                };
                let listed = this.table.admit();
                // The next client to wait makes room at once.
                this.make_room.as_mut().reset(tokio::time::Instant::now());
                return Poll::Ready(Some(Ok(Admitted {
                    io,
                    idle: IdleCheck::new(listed, this.idle_timeout),
                    _slot: slot,
                })));
            }
            // Every slot is taken and a client waits: close the connection idle
            // longest (its slot then wakes this), and look again each second.
            ready!(this.make_room.as_mut().poll(cx));
            this.table.close_longest_idle(MIN_IDLE_TO_MAKE_ROOM);
            let next = tokio::time::Instant::now() + Duration::from_secs(1);
            this.make_room.as_mut().reset(next);
        }
    }
}

/// An accepted connection holding its slot until it is dropped.
pub struct Admitted {
    io: TcpStream,
    idle: IdleCheck,
    _slot: Option<OwnedSemaphorePermit>,
}

/// What a call learns of its connection: the addresses, and where its calls are
/// counted.
#[derive(Debug, Clone)]
pub struct AdmittedInfo {
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

impl Connected for Admitted {
    type ConnectInfo = AdmittedInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        AdmittedInfo {
            tcp: self.io.connect_info(),
            activity: Arc::clone(self.idle.activity()),
        }
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if let Poll::Ready(read) = Pin::new(&mut this.io).poll_read(cx, buf) {
            if buf.filled().len() > before {
                this.idle.read_something();
            }
            return Poll::Ready(read);
        }
        // Nothing to read: the connection ends here once it has been idle too long.
        ready!(this.idle.poll_idle(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection had no call open for the idle time",
        )))
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
