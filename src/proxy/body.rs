//! The request body on its way upstream: streamed chunk by chunk, never
//! buffered whole, with the size limit and an idle timeout enforced as it
//! flows (actix has no timeout for slow request bodies of its own).

use std::cell::Cell;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use futures_util::{Stream, StreamExt as _};
use tokio::time::{sleep, Instant, Sleep};

use crate::listener::Connection;

/// Why the gateway stopped reading a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    TooLarge,
    Timeout,
    /// The client's own framing or connection failed mid-body.
    Client,
}

/// What the proxy learns from the body after the exchange: bytes read and,
/// if the stream was cut, why.
#[derive(Debug, Default)]
pub struct BodyOutcome {
    pub bytes: Cell<u64>,
    pub failure: Cell<Option<BodyFailure>>,
}

/// A request payload that fails once it exceeds `limit` bytes, once its
/// chunks declare more than that (before their data arrives), or when it
/// stalls for longer than `idle`.
pub struct LimitedBody {
    payload: Payload,
    limit: u64,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    outcome: Rc<BodyOutcome>,
    /// The connection, which knows what the chunk sizes declared.
    conn: Option<Rc<Connection>>,
}

impl LimitedBody {
    pub fn new(
        payload: Payload,
        limit: u64,
        idle: Duration,
        outcome: Rc<BodyOutcome>,
        conn: Option<Rc<Connection>>,
    ) -> Self {
        LimitedBody {
            payload,
            limit,
            idle,
            deadline: Box::pin(sleep(idle)),
            outcome,
            conn,
        }
    }

    /// Whether the body is, or has declared itself, over the limit.
    fn too_large(&self) -> bool {
        self.outcome.bytes.get() > self.limit
            || self
                .conn
                .as_ref()
                .is_some_and(|conn| conn.declared_body() > self.limit)
    }

    fn fail(&self, failure: BodyFailure) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.outcome.failure.set(Some(failure));
        Poll::Ready(Some(Err(BodyError(failure))))
    }
}

/// Reads a whole (small) body the gateway answers itself, such as a login
/// form or an admin API call: at most `limit` bytes, with no pause longer than `idle`.
pub async fn read_body(
    req: &HttpRequest,
    payload: Payload,
    limit: u64,
    idle: Duration,
) -> Result<Bytes, BodyFailure> {
    let outcome = Rc::new(BodyOutcome::default());
    let conn = Connection::of(req).cloned();
    let mut body = LimitedBody::new(payload, limit, idle, outcome, conn);
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.map_err(|BodyError(failure)| failure)?);
    }
    Ok(bytes.freeze())
}

/// An upstream response body that fails when the upstream sends nothing
/// for `idle` while the gateway waits for it (nginx's
/// `proxy_read_timeout`): a stalled upstream cuts the client's stream
/// instead of holding its connection forever. Only time spent waiting on
/// the upstream counts, not time the client takes to read.
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    /// Made the first time the upstream keeps the gateway waiting: most
    /// bodies arrive with their head and never need one.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether the last poll found nothing, so the clock is running.
    waiting: bool,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            deadline: None,
            waiting: false,
        }
    }
}

impl<S> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                this.waiting = false;
                Poll::Ready(item)
            }
            Poll::Pending => {
                let next = Instant::now() + this.idle;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
                if !this.waiting {
                    this.waiting = true;
                    deadline.as_mut().reset(next);
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the upstream sent nothing of its body within the route's timeout",
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// The error the upstream client sees when the body is cut off.
#[derive(Debug, thiserror::Error)]
#[error("request body stopped: {0:?}")]
pub struct BodyError(pub BodyFailure);

impl Stream for LimitedBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let total = this.outcome.bytes.get() + chunk.len() as u64;
                this.outcome.bytes.set(total);
                if this.too_large() {
                    return this.fail(BodyFailure::TooLarge);
                }
                let next = Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(PayloadError::Overflow))) => this.fail(BodyFailure::TooLarge),
            Poll::Ready(Some(Err(_))) => this.fail(BodyFailure::Client),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.too_large() => this.fail(BodyFailure::TooLarge),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => this.fail(BodyFailure::Timeout),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
