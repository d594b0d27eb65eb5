//! Connections with no call open are closed after a while, and, when every slot of
//! `--max-connections` is taken and another client waits, the one idle longest is
//! closed at once: clients keeping connections open and idle cannot lock others out.
//!
//! Every accepted connection has an [`Activity`], carried in its connect info (so each
//! call finds its own connection's) and listed in the [`ConnectionTable`] (so the one
//! idle longest can be found). [`CallTracking`] counts each call from its request until
//! its response body is done. A connection's reader, finding nothing to read, checks
//! when it last had a call open, and ends the connection once that is longer ago than
//! the idle time, or when it was chosen to make room and still has no call open and
//! read nothing since (bytes coming in, such as a new call's headers or a reader's
//! window updates, keep it open).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use http::{Request, Response};
use http_body::Frame;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::server::TlsConnectInfo;
use tower_layer::Layer;

use super::AdmittedInfo;

/// The connections open now.
#[derive(Default)]
pub struct ConnectionTable {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

impl ConnectionTable {
    /// Lists a new connection; it is taken off when the returned entry drops.
    pub fn admit(self: &Arc<Self>) -> Listed {
        let activity = Arc::new(Activity::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::clone(&activity));
        Listed {
            table: Arc::clone(self),
            id,
            activity,
        }
    }

    /// Chooses the connection that has had no call open for longest, if that is at
    /// least `min_idle`, to be closed; whether there was one.
    pub fn close_longest_idle(&self, min_idle: Duration) -> bool {
        let now = Instant::now();
        let open = self.lock();
        let longest = open
            .values()
            .filter(|a| !a.closing.load(Ordering::Acquire))
            .filter_map(|a| Some((a.idle_since()?, a)))
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

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's calls.
#[derive(Debug)]
pub struct Activity {
    /// Calls open now, and when the last one ended (or the connection opened).
    calls: Mutex<(usize, Instant)>,
    /// Chosen to be closed, to make room for a waiting client.
    closing: AtomicBool,
    /// The connection's reader, woken when it is chosen.
    reader: AtomicWaker,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            calls: Mutex::new((0, Instant::now())),
            closing: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        }
    }
}

impl Activity {
    fn calls(&self) -> MutexGuard<'_, (usize, Instant)> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Since when the connection has had no call open; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        let (open, since) = *self.calls();
        (open == 0).then_some(since)
    }

    fn call_started(&self) {
        self.calls().0 += 1;
    }

    fn call_ended(&self) {
        let mut calls = self.calls();
        calls.0 = calls.0.saturating_sub(1);
        calls.1 = Instant::now();
    }
}

/// A connection's entry in the table.
pub struct Listed {
    table: Arc<ConnectionTable>,
    id: u64,
    activity: Arc<Activity>,
}

impl Listed {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

/// Watches one connection for idleness.
pub struct IdleCheck {
    listed: Listed,
    idle_timeout: Duration,
    wake: Pin<Box<tokio::time::Sleep>>,
}

impl IdleCheck {
    pub fn new(listed: Listed, idle_timeout: Duration) -> Self {
        Self {
            listed,
            idle_timeout,
            wake: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    pub fn activity(&self) -> &Arc<Activity> {
        self.listed.activity()
    }

    /// Bytes came in: a connection chosen to make room is spared (it is in use).
    pub fn read_something(&self) {
        self.listed.activity.closing.store(false, Ordering::Release);
    }

    /// Called when the connection has nothing to read: ready (to be closed) once it has
    /// had no call open for the idle time, or was chosen to make room and still has
    /// none; otherwise registers to be woken then.
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let activity = &self.listed.activity;
        activity.reader.register(cx.waker());
        if activity.closing.load(Ordering::Acquire) {
            if activity.idle_since().is_some() {
                return Poll::Ready(());
            }
            activity.closing.store(false, Ordering::Release);
        }
        loop {
            if self.wake.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match activity.idle_since() {
                Some(since) if since + self.idle_timeout <= Instant::now() => {
                    return Poll::Ready(());
                }
                Some(since) => self.wake.as_mut().reset(since + self.idle_timeout),
                None => self.wake.as_mut().reset(Instant::now() + self.idle_timeout),
            }
        }
    }
}

/// Counts every call on its connection, from its request until its response is done.
#[derive(Clone, Default)]
pub struct CallTracking;

impl<S> Layer<S> for CallTracking {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked { inner }
    }
}

#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
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
        let extensions = request.extensions();
        let activity = extensions
            .get::<AdmittedInfo>()
            .or_else(|| Some(extensions.get::<TlsConnectInfo<AdmittedInfo>>()?.get_ref()))
            .map(|info| Arc::clone(&info.activity));
        let call = activity.map(OpenCall::new);
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
        let listed = table.admit();
        let activity = Arc::clone(listed.activity());
        let mut check = IdleCheck::new(listed, Duration::from_secs(10));
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
        let check = |listed| IdleCheck::new(listed, Duration::from_secs(3600));
        let mut oldest = check(table.admit());
        tokio::time::advance(Duration::from_secs(5)).await;
        let busy_listed = table.admit();
        let _call = OpenCall::new(Arc::clone(busy_listed.activity()));
        let mut busy = check(busy_listed);
        let mut newer = check(table.admit());
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
        // Bytes came in after it was chosen: it is in use, and stays.
        newer.read_something();
        assert!(newer.poll_idle(&mut cx).is_pending());
        assert!(
            busy.poll_idle(&mut cx).is_pending(),
            "a connection with a call open is never closed"
        );
    }

    #[test]
    fn a_closed_connection_leaves_the_table() {
        let table = Arc::new(ConnectionTable::default());
        let first = table.admit();
        let second = table.admit();
        drop(first);
        assert_eq!(table.lock().len(), 1);
        drop(second);
        assert!(table.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_chosen_to_make_room_that_opened_a_call_meanwhile_stays() {
        let table = Arc::new(ConnectionTable::default());
        let listed = table.admit();
        let activity = Arc::clone(listed.activity());
        let mut check = IdleCheck::new(listed, Duration::from_secs(3600));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(table.close_longest_idle(Duration::from_secs(1)));
        let _call = OpenCall::new(activity);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(check.poll_idle(&mut cx).is_pending());
    }
}
