//! Forwarding to a service: a target chosen for each try, and retries that
//! never repeat an unsafe request.
//!
//! A try that failed before any byte reached the target (connect refused,
//! connect timeout, DNS, TLS) is retried for any method. One that failed
//! after the request was sent (a `502`, `503` or `504`, a timeout, a cut
//! connection) is retried only for the service's `retry_methods`
//! (idempotent ones by default). Either way only while the body can be
//! sent again (none, or one small enough to have been held whole), only on
//! a target not tried yet, within the retry budget and the route's timeout,
//! and only before anything has been sent to the client: an answer is
//! passed on once it is chosen, never retried mid-stream.

use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody as _};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng as _;
use tokio::time::Instant;

use super::{client_response, exchange, request_body, BodyFailure, BodyOutcome, Outgoing};
use crate::config::{Balance, HashKey, ServerConfig};
use crate::error::{GatewayError, UpstreamFailure};
use crate::pipeline::RequestCtx;
use crate::upstream::{Admission, HashRing, Refusal, Service, Tried, Verdict};

/// Bodies up to this size are read whole before the first try, so that a
/// retry can send them again.
pub const HELD_BODY_BYTES: u64 = 64 * 1024;

/// Backoff before a retry: a random wait up to this, doubled per retry...
const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// ...up to this.
const BACKOFF_CAP: Duration = Duration::from_millis(250);

/// A request body as the tries of one request can send it.
pub(super) enum HeldBody {
    /// No body: every try sends none.
    Empty,
    /// Read whole: every try sends a copy.
    Held(web::Bytes),
    /// Streamed from the client: only the first try can send it.
    Streamed(Option<(BoxBody, Rc<BodyOutcome>)>),
}

impl HeldBody {
    /// The request's body, read whole when it is small and the service
    /// retries at all, else left to stream.
    pub(super) async fn take(
        req: &HttpRequest,
        payload: web::Payload,
        server: &ServerConfig,
        service: &Service,
        ctx: &mut RequestCtx,
    ) -> Result<HeldBody, GatewayError> {
        let outcome = Rc::new(BodyOutcome::default());
        let body = request_body(req, payload, server, outcome.clone(), ctx.conn.clone())?;
        Ok(match body.size() {
            BodySize::None | BodySize::Sized(0) => HeldBody::Empty,
            BodySize::Sized(n) if n <= HELD_BODY_BYTES && service.config.retries > 0 => {
                let read = actix_web::body::to_bytes(body).await;
                ctx.bytes_in = outcome.bytes.get();
                match read {
                    Ok(bytes) => HeldBody::Held(bytes),
                    Err(_) => {
                        let failure = outcome.failure.get().unwrap_or(BodyFailure::Client);
                        return Err(failure.into());
                    }
                }
            }
            _ => HeldBody::Streamed(Some((body, outcome))),
        })
    }

    /// Whether a retry can send the body again.
    fn replayable(&self) -> bool {
        !matches!(self, HeldBody::Streamed(_))
    }

    /// The body for the next try, or `None` when it cannot be sent again.
    fn for_try(&mut self) -> Option<(BoxBody, Rc<BodyOutcome>)> {
        let outcome = || Rc::new(BodyOutcome::default());
        match self {
            HeldBody::Empty => Some((BoxBody::new(()), outcome())),
            HeldBody::Held(bytes) => {
                let done = outcome();
                done.bytes.set(bytes.len() as u64);
                Some((BoxBody::new(bytes.clone()), done))
            }
            HeldBody::Streamed(body) => body.take(),
        }
    }
}

/// What a try said about its target: a connect error, a timeout or a
/// `502`, `503` or `504` is the target's failure; a body the client cut
/// off says nothing about it.
fn verdict(result: &Result<awc::ClientResponse, GatewayError>) -> Option<Verdict> {
    match result {
        Ok(response) if failure_status(response.status()) => Some(Verdict::Failure),
        Ok(_) => Some(Verdict::Success),
        Err(GatewayError::BadGateway(_) | GatewayError::GatewayTimeout) => Some(Verdict::Failure),
        Err(_) => None,
    }
}

fn failure_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// Whether a failed try may be made again, by what happened and the method.
fn retryable(result: &Result<awc::ClientResponse, GatewayError>, idempotent: bool) -> bool {
    match result {
        // Nothing reached the target: safe for any method.
        Err(GatewayError::BadGateway(
            UpstreamFailure::Connect | UpstreamFailure::Dns | UpstreamFailure::Tls,
        )) => true,
        Err(GatewayError::BadGateway(_) | GatewayError::GatewayTimeout) => idempotent,
        Ok(response) => failure_status(response.status()) && idempotent,
        Err(_) => false,
    }
}

/// Sends the request to the service, retrying as the module describes.
pub(super) async fn forward(
    outgoing: &Outgoing<'_>,
    service: &Service,
    mut body: HeldBody,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let method = outgoing.req.method();
    let idempotent = service.config.retry_methods.contains(method);
    let deadline = Instant::now() + outgoing.route.timeout;
    let mut tried = Tried::default();
    let hash = hash_of(&service.config.balance, outgoing.req, ctx);
    let _admission = admit(service, outgoing.route.timeout, ctx).await?;
    let mut last: Option<Result<awc::ClientResponse, GatewayError>> = None;
    // Held until the next retry replaces it, or the request ends.
    let mut _retry_permit = None;
    for attempt in 0..=service.config.retries {
        if let Some(previous) = &last {
            if !body.replayable() || !retryable(previous, idempotent) {
                break;
            }
            let Some(permit) = service.retry_permit() else {
                break;
            };
            _retry_permit = Some(permit);
            backoff(attempt, deadline).await;
        }
        let picked = match service.pick(&tried, hash) {
            Ok(picked) => picked,
            Err(_) if last.is_none() => return Err(no_healthy_upstream(service, ctx)),
            // No other target to try: the last answer stands.
            Err(_) => break,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let Some((payload, outcome)) = body.for_try() else {
            break;
        };
        if attempt > 0 {
            service.count_retry();
        }
        // The previous answer is given up only now that another try goes.
        drop(last.take());
        tried.add(picked.index);
        ctx.tries = attempt + 1;
        ctx.target = Some(picked.target.clone());
        ctx.upstream_error = None;
        let target = &picked.target.config;
        let request = outgoing.request(&target.upstream, target.address, ctx)?;
        let result = exchange(request.timeout(remaining), payload, &outcome, ctx).await;
        let verdict = verdict(&result);
        if let Some(verdict) = verdict {
            service.report(picked, verdict);
        }
        let done = verdict != Some(Verdict::Failure);
        last = Some(result);
        if done {
            break;
        }
    }
    match last {
        Some(Ok(response)) => Ok(client_response(method, response, outgoing.route.timeout)),
        Some(Err(error)) => Err(error),
        None => Err(GatewayError::GatewayTimeout),
    }
}

/// A place among the service's requests in flight, waiting at most `wait`
/// for one; or the `503` that says why there is none.
pub(super) async fn admit<'a>(
    service: &'a Service,
    wait: Duration,
    ctx: &mut RequestCtx,
) -> Result<Admission<'a>, GatewayError> {
    service.admit(wait).await.map_err(|refusal| {
        ctx.upstream_error = Some(refusal.describe().into());
        match refusal {
            Refusal::Overloaded => GatewayError::UpstreamOverloaded,
            Refusal::CircuitOpen => GatewayError::CircuitOpen {
                retry_after: service.breaker_retry_after(),
            },
        }
    })
}

/// The answer when no target of the service can take a request.
pub(super) fn no_healthy_upstream(service: &Service, ctx: &mut RequestCtx) -> GatewayError {
    ctx.upstream_error = Some("no target of the service is healthy".into());
    GatewayError::NoHealthyUpstream {
        retry_after: service.retry_after(),
    }
}

/// The request's key for a consistent-hashing service, hashed; `None`
/// when the request lacks it (or the service does not hash).
pub(super) fn hash_of(balance: &Balance, req: &HttpRequest, ctx: &RequestCtx) -> Option<u32> {
    let Balance::Hash(key) = balance else {
        return None;
    };
    let hash = |bytes: &[u8]| Some(HashRing::hash(bytes));
    match key {
        HashKey::ClientIp => hash(ctx.client_ip.to_string().as_bytes()),
        HashKey::Header(name) => hash(req.headers().get(name)?.as_bytes()),
        HashKey::Cookie(name) => {
            hash(crate::auth::session_cookie_value(req.headers(), name)?.as_bytes())
        }
        HashKey::User => hash(ctx.principal.as_ref()?.0.name.as_bytes()),
    }
}

/// Waits before retry `attempt` (1, 2, ...): full jitter over an
/// exponentially growing bound, never past `deadline`.
async fn backoff(attempt: u32, deadline: Instant) {
    let bound = BACKOFF_BASE
        .saturating_mul(1 << (attempt - 1).min(8))
        .min(BACKOFF_CAP);
    let wait = rand::thread_rng().gen_range(Duration::ZERO..=bound);
    tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
}
