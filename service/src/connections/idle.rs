//! Connections with no call open are closed after a while, and, when every slot of
//! `--max-connections` is taken and another client waits, the one idle longest is
//! closed at once: clients keeping connections open and idle cannot lock others out.
//!
//! Every accepted connection is listed by its client's address with the number of
//! calls it has open; [`CallTracking`] counts each call from its request until its
//! response body is done. A connection's reader, finding nothing to read, checks when
//! it last had a call open, and ends the connection once that is longer ago than the
//! idle time. (Bytes waiting to be read, such as a new call's headers, keep it open.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use http::{Request, Response};
use http_body::Frame;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;

/// The connections open now, by their client's address.
#[derive(Default)]
pub struct ConnectionTable {
    open: Mutex<HashMap<SocketAddr, Arc<Activity>>>,
}

impl ConnectionTable {
    /// Lists a new connection from `peer`; it is taken off when the returned entry drops.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Listed {
        let activity = Arc::new(Activity::default());
        self.lock().insert(peer, Arc::clone(&activity));
        Listed {
            table: Arc::clone(self),
            peer,
            activity,
        }
    }

    /// Closes the connection that has had no call open for longest, if that is at
    /// least `min_idle`; whether there was one.
    pub fn close_longest_idle(&self, min_idle: Duration) -> bool {
        let now = Instant::now();
        let open = self.lock();

        let longest = open
            .values()
            .filter(|a| !a.closing.load(Ordering::Acquire))
            .filter_map(|a| Some((a.idle_until(Duration::ZERO)?, a)))
            .filter(|(since, _)| *since + min_idle <= now)
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, activity)) => {
                activity.closing.store(true, Ordering::Release);
                activity.reader.wake();
                true
            }
            None => false,
        }
    }

    fn activity(&self, peer: SocketAddr) -> Option<Arc<Activity>> {
        self.lock().get(&peer).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's calls.
#[derive(Debug)]
pub struct Activity {
    open_calls: AtomicUsize,
    /// When the last call ended (or the connection opened).
    idle_since: Mutex<Instant>,
    /// Chosen to be closed, to make room for a waiting client.
    closing: AtomicBool,
    /// The connection's reader, woken when it is chosen.
    reader: AtomicWaker,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            open_calls: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            closing: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        }
    }
}

impl Activity {
    /// When the connection may be closed for idleness: `None` while a call is open.
    fn idle_until(&self, idle_timeout: Duration) -> Option<Instant> {
        let since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (self.open_calls.load(Ordering::Acquire) == 0).then_some(since + idle_timeout)
    }

    fn call_started(&self) {
        self.open_calls.fetch_add(1, Ordering::AcqRel);
    }

    fn call_ended(&self) {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.open_calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's entry in the table, and the check of its idleness.
pub struct Listed {
    table: Arc<ConnectionTable>,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        // Only this connection's entry (the address may have been reused since).
        if open
            .get(&self.peer)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            open.remove(&self.peer);
        }
    }
}

/// Watches one connection for idleness.
pub struct IdleCheck {
    listed: Option<Listed>,
    idle_timeout: Duration,
    wake: Pin<Box<tokio::time::Sleep>>,
}

impl IdleCheck {
    /// `listed` is `None` for a connection whose address could not be read: never closed.
    pub fn new(listed: Option<Listed>, idle_timeout: Duration) -> Self {
        Self {
            listed,
            idle_timeout,
            wake: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// Called when the connection has nothing to read: ready (to be closed) once it has
    /// had no call open for the idle time, or was chosen to make room; otherwise
    /// registers to be woken then.
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(listed) = &self.listed else {
            return Poll::Pending;
        };
        listed.activity.reader.register(cx.waker());
        if listed.activity.closing.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        loop {
            if self.wake.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match listed.activity.idle_until(self.idle_timeout) {
                Some(until) if until <= Instant::now() => return Poll::Ready(()),
                Some(until) => self.wake.as_mut().reset(until),
                None => self.wake.as_mut().reset(Instant::now() + self.idle_timeout),
            }
        }
    }
}

/// Counts every call on its connection, from its request until its response is done.
#[derive(Clone)]
pub struct CallTracking {
    table: Arc<ConnectionTable>,
}

impl CallTracking {
    pub fn new(table: Arc<ConnectionTable>) -> Self {
        Self { table }
    }
}

impl<S> Layer<S> for CallTracking {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked {
            inner,
            table: Arc::clone(&self.table),
        }
    }
}

#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    table: Arc<ConnectionTable>,
}

impl<S> Service<Request<Body>> for Tracked<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                let tls = request
                    .extensions()
                    .get::<TlsConnectInfo<TcpConnectInfo>>()?;
                tls.get_ref().remote_addr()
            });
        let call = peer
            .and_then(|peer| self.table.activity(peer))
            .map(OpenCall::new);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(match call {
                Some(call) => response.map(|body| Body::new(CountedBody { body, _call: call })),
                None => response,
            })
        })
    }
}

/// One open call, counted until dropped.
struct OpenCall(Arc<Activity>);

impl OpenCall {
    fn new(activity: Arc<Activity>) -> Self {
        activity.call_started();
        Self(activity)
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.call_ended();
    }
}

/// A response body that keeps its call counted until it is done.
struct CountedBody {
    body: Body,
    _call: OpenCall,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_call_open_for_the_idle_time() {
        let table = Arc::new(ConnectionTable::default());
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let listed = table.admit(peer);
        let activity = table.activity(peer).unwrap();
        let mut check = IdleCheck::new(Some(listed), Duration::from_secs(10));
        let mut idle = std::future::poll_fn(|cx| check.poll_idle(cx));
        let call = OpenCall::new(activity);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut idle)
                .await
                .is_err(),
            "not while a call is open"
        );
        drop(call);
        let ended = Instant::now();
        (&mut idle).await;
        assert_eq!(ended.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn room_is_made_by_closing_the_connection_idle_longest_and_never_a_busy_one() {
        let table = Arc::new(ConnectionTable::default());
        let peer = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let check = |listed| IdleCheck::new(Some(listed), Duration::from_secs(3600));
        let mut oldest = check(table.admit(peer(1)));
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut busy = check(table.admit(peer(2)));
        let _call = OpenCall::new(table.activity(peer(2)).unwrap());
        let mut newer = check(table.admit(peer(3)));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            !table.close_longest_idle(Duration::from_secs(10)),
            "none idle long enough"
        );
        assert!(table.close_longest_idle(Duration::from_secs(1)));
        assert!(oldest.poll_idle(&mut cx).is_ready(), "the one idle longest");
        assert!(busy.poll_idle(&mut cx).is_pending());
        assert!(newer.poll_idle(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(table.close_longest_idle(Duration::from_secs(1)));
        assert!(newer.poll_idle(&mut cx).is_ready());
        assert!(
            !table.close_longest_idle(Duration::ZERO),
            "a connection with a call open is never chosen"
        );
        assert!(busy.poll_idle(&mut cx).is_pending());
    }

    #[test]
    fn a_closed_connection_leaves_the_table_but_not_a_newer_one_from_its_address() {
        let table = Arc::new(ConnectionTable::default());
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let old = table.admit(peer);
        let new = table.admit(peer);
        drop(old);
        assert!(table.activity(peer).is_some());
        drop(new);
        assert!(table.activity(peer).is_none());
    }
}
