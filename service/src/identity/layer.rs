//! The tower layer that authenticates every call before any service sees it.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tower_layer::Layer;
use tracing::Instrument;

use super::{AuthError, Authenticator};
use crate::ledger::LedgerError;

/// Wraps every service of the server in [`Identified`].
#[derive(Clone)]
pub struct IdentityLayer {
    authenticator: Arc<Authenticator>,
}

impl IdentityLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = Identified<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Identified {
            inner,
            authenticator: Arc::clone(&self.authenticator),
        }
    }
}

/// A service that sees only authenticated calls, each with its
/// [`CallContext`](super::CallContext) in the request's extensions.
#[derive(Clone)]
pub struct Identified<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> Service<Request<Body>> for Identified<S>
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

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call; the fresh clone waits for the
        // next one (tower's usual hand-over).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = Arc::clone(&self.authenticator);
        let span = tracing::debug_span!("authenticate", path = %request.uri().path());
        Box::pin(
            async move {
                match authenticator
                    .authenticate(request.headers(), request.extensions())
                    .await
                {
                    Ok(context) => {
                        request.extensions_mut().insert(context);
                        inner.call(request).await
                    }
                    Err(error) => {
                        // Debug: a flood of bad calls must not become a flood of log lines.
                        tracing::debug!(%error, "refused a call");
                        Ok(Status::from(error).into_http())
                    }
                }
            }
            .instrument(span),
        )
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::MissingCredential { .. }
            | AuthError::MalformedAuthorization(_)
            | AuthError::InvalidKey
            | AuthError::RevokedKey { .. }
            | AuthError::ExpiredKey { .. }
            | AuthError::Certificate(_) => Status::unauthenticated(message),
            AuthError::BadOwner(_) | AuthError::RepeatedOwner => Status::invalid_argument(message),
            AuthError::MayNotActFor { .. } => Status::permission_denied(message),
            AuthError::Ledger(LedgerError::Unavailable(_)) => Status::unavailable(message),
            AuthError::Ledger(_) => Status::internal(message),
        }
    }
}
