//! Accepted connections, at most a configured number open at once. Each connection may
//! hold up to its HTTP/2 flow-control window of received bytes in memory, so this cap
//! is what bounds that memory: past it transferd stops accepting, and new clients wait
//! in the kernel's listen backlog until a connection closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A stream of accepted connections that waits for a free slot before taking the next.
pub struct LimitedIncoming<S> {
    inner: S,
    slots: PollSemaphore,
    slot: Option<OwnedSemaphorePermit>,
}

impl<S> LimitedIncoming<S> {
    pub fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            slots: PollSemaphore::new(Arc::new(Semaphore::new(limit))),
            slot: None,
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
        if this.slot.is_none() {
            // The semaphore is never closed.
            this.slot = ready!(this.slots.poll_acquire(cx));
        }
        Poll::Ready(match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(io)) => Some(Ok(Admitted {
                io,
                _slot: this.slot.take(),
            })),
            // A failed accept keeps the slot for the next connection.
            Some(Err(error)) => Some(Err(error)),
            None => None,
        })
    }
}

/// An accepted connection holding its slot until it is dropped.
pub struct Admitted {
    io: TcpStream,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
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
