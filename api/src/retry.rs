//! Reads served again when their database connection turned out lost: the
//! server ended it (a restart, a restore's switch) and the pool has fresh
//! ones (`db::connect` replaces the older ones). Only requests without a
//! body and without effects — GET and HEAD — and only while little time has
//! passed, so that a database that is really away still answers 503 at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::Response;
use tower::{Layer, Service};

use crate::error::ConnectionLost;

/// Attempts of one read, the first included.
const ATTEMPTS: u32 = 5;
/// No attempt starts after this much time.
const BUDGET: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Default)]
pub struct ReadRetryLayer;

impl<S> Layer<S> for ReadRetryLayer {
    type Service = ReadRetry<S>;
    fn layer(&self, inner: S) -> ReadRetry<S> {
        ReadRetry { inner }
    }
}

#[derive(Clone)]
pub struct ReadRetry<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for ReadRetry<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The service that was polled ready serves the first attempt.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Box::pin(inner.call(req));
        }
        let (parts, body) = req.into_parts();
        let again = parts.clone();
        Box::pin(async move {
            let started = Instant::now();
            let mut response = inner.call(Request::from_parts(parts, body)).await?;
            let mut attempt = 1;
            while attempt < ATTEMPTS
                && response.extensions().get::<ConnectionLost>().is_some()
                && started.elapsed() < BUDGET
            {
                attempt += 1;
                tracing::info!(
                    attempt,
                    "read lost its database connection; serving it again"
                );
                let mut fresh = inner.clone();
                std::future::poll_fn(|cx| fresh.poll_ready(cx)).await?;
                response = fresh
                    .call(Request::from_parts(again.clone(), Body::empty()))
                    .await?;
            }
            Ok(response)
        })
    }
}
