//! The access log: one JSON line per request, written when the response body
//! has been sent (or the client went away), with metrics recorded at the
//! same moment. A request is [`Unlogged`] from the moment it is read; if
//! the client goes away before an answer is made, it is still logged, as
//! `499 client_closed`, so every request read is accounted for.
//!
//! The same moment feeds the admin console: the request is counted in the
//! per-second [`Stats`], and its access line, formatted once for the log,
//! is kept in the [`RecentLog`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use slog::{Level, Record, Serializer, KV};

use crate::listener::Answering;
use crate::pipeline::RequestCtx;
use crate::state::AppState;
use crate::telemetry::recent::Keys;
use crate::telemetry::stats::Flags;
use crate::telemetry::{method_label, status_class, InFlight, Logging, RecentLog, Stats, Tap};

/// A response body that writes the access log line when it is dropped.
pub struct LoggedBody {
    body: BoxBody,
    done: Option<Completion>,
}

/// Status logged for a request whose client went away before it was answered.
const CLIENT_CLOSED: u16 = 499;

struct Completion {
    status: StatusCode,
    bytes_out: u64,
    ctx: RequestCtx,
    state: Arc<AppState>,
    _in_flight: InFlight,
    /// Holds the connection between requests until the response is done.
    answering: Option<Answering>,
}

/// A request being handled, not logged yet: dropped before it is answered
/// (the client went away and actix dropped the handler), it logs itself as
/// `499 client_closed`.
pub struct Unlogged(Option<Completion>);

impl Unlogged {
    pub fn new(ctx: RequestCtx, state: Arc<AppState>, in_flight: InFlight) -> Unlogged {
        Unlogged(Some(Completion {
            status: StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST),
            bytes_out: 0,
            ctx,
            state,
            _in_flight: in_flight,
            answering: None,
        }))
    }

    fn completion(&mut self) -> &mut Completion {
        self.0.as_mut().expect("present until answered")
    }

    /// The request's context, for the phases to fill in.
    pub fn ctx(&mut self) -> &mut RequestCtx {
        &mut self.completion().ctx
    }

    /// Holds the connection's request slot until the answer is done.
    pub fn hold(&mut self, answering: Answering) {
        self.completion().answering = Some(answering);
    }

    /// The request's connection slot, to fit the response to it.
    pub fn answering(&mut self) -> Option<&mut Answering> {
        self.completion().answering.as_mut()
    }

    /// The answer is made: the line is written when `body` is done.
    pub fn answer(mut self, body: BoxBody, status: StatusCode) -> LoggedBody {
        let mut done = self.0.take().expect("present until answered");
        done.status = status;
        LoggedBody {
            body,
            done: Some(done),
        }
    }
}

impl Drop for Unlogged {
    fn drop(&mut self) {
        if let Some(mut done) = self.0.take() {
            done.ctx.error.get_or_insert("client_closed");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done.record()));
        }
    }
}

impl MessageBody for LoggedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_next(cx);
        if let (Poll::Ready(Some(Ok(chunk))), Some(done)) = (&polled, this.done.as_mut()) {
            done.bytes_out += chunk.len() as u64;
        }
        polled
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            // A panic while logging must not take the worker thread down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done.record()));
        }
    }
}

impl Completion {
    fn record(self) {
        let ctx = &self.ctx;
        let elapsed = ctx.started.elapsed();
        let route_id = ctx.route().map_or("none", |r| r.id.as_str());
        let metrics = &self.state.metrics;
        metrics
            .requests
            .with_label_values(&[
                route_id,
                method_label(ctx.req.method()),
                status_class(self.status.as_u16()),
            ])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[route_id])
            .observe(elapsed.as_secs_f64());
        if let Some(upstream) = ctx.upstream_time {
            metrics
                .upstream_duration
                .with_label_values(&[route_id])
                .observe(upstream.as_secs_f64());
        }
        metrics.auth_outcomes.with_label_values(&[ctx.auth]).inc();
        for applied in &ctx.rate_limit.applied {
            let outcome = if applied.decision.allowed {
                "allowed"
            } else {
                "limited"
            };
            metrics
                .rate_limit_decisions
                .with_label_values(&[&applied.policy.name, outcome])
                .inc();
        }
        for policy in &ctx.rate_limit.store_errors {
            metrics
                .rate_limit_decisions
                .with_label_values(&[policy, "error"])
                .inc();
            slog::warn!(self.state.logging.logger, "rate-limit counter store failed";
                "policy" => &**policy, "request_id" => &ctx.request_id);
        }
        if let Some(kind) = ctx.upstream_failure {
            metrics
                .upstream_errors
                .with_label_values(&[route_id, kind])
                .inc();
            slog::warn!(self.state.logging.logger, "upstream request failed";
                "route" => route_id,
                "upstream" => ctx.route().map_or("none", |r| r.upstream.label()),
                "target" => ctx.target.as_ref().map_or("", |t| t.name()),
                "kind" => kind,
                "error" => ctx.upstream_error.as_deref().unwrap_or("timed out"),
                "request_id" => &ctx.request_id);
        }
        record_stats(&self.state.stats, ctx, self.status, elapsed);
        write_access_line(
            &self.state.logging,
            &self.state.recent,
            ctx,
            self.status,
            elapsed,
            self.bytes_out,
        );
    }
}

/// Counts a finished request in the console's per-second statistics.
fn record_stats(stats: &Stats, ctx: &RequestCtx, status: StatusCode, elapsed: Duration) {
    let status = status.as_u16();
    let flags = Flags {
        rate_limited: status == 429,
        auth_failure: ctx.error.is_some_and(is_auth_failure),
        upstream_error: ctx.upstream_failure.is_some(),
    };
    stats.record(ctx.route().map(|r| r.id.as_str()), status, elapsed, flags);
}

/// Whether the gateway's error code says it refused the request's
/// credentials or its rights (as opposed to a malformed or limited request).
fn is_auth_failure(code: &str) -> bool {
    matches!(
        code,
        "missing_token"
            | "invalid_token"
            | "token_expired"
            | "token_revoked"
            | "invalid_credentials"
            | "unauthorized"
            | "forbidden"
            | "csrf_rejected"
            | "login_required"
    )
}

/// Writes the access-log line of a finished request: `error` for 5xx,
/// `warn` for 4xx, `info` otherwise, and nothing below the configured level.
/// The same line, whatever the level, goes to `recent`.
pub fn write_access_line(
    logging: &Logging,
    recent: &RecentLog,
    ctx: &RequestCtx,
    status: StatusCode,
    elapsed: Duration,
    bytes_out: u64,
) {
    let level = match status.as_u16() {
        500.. => Level::Error,
        400..=499 => Level::Warning,
        _ => Level::Info,
    };
    let route = ctx.route().map(|r| r.id.as_str());
    let line = AccessLine {
        ctx,
        status: status.as_u16(),
        route_id: route.unwrap_or("none"),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        bytes_out,
    };
    let keys = Keys {
        status: status.as_u16(),
        request_id: &ctx.request_id,
        route,
        user: ctx.principal.as_ref().map(|(user, _)| &*user.name),
        client: ctx.client_ip,
    };
    let mut keep = |json: &[u8]| recent.push(json, &keys);
    let tap: Option<Tap> = if recent.wanted() {
        Some(&mut keep)
    } else {
        None
    };
    logging.log_and_tap(level, "access", &line, tap);
}

/// The fields of one access-log line.
struct AccessLine<'a> {
    ctx: &'a RequestCtx,
    status: u16,
    route_id: &'a str,
    duration_ms: f64,
    bytes_out: u64,
}

impl KV for AccessLine<'_> {
    fn serialize(&self, _record: &Record, s: &mut dyn Serializer) -> slog::Result {
        let ctx = self.ctx;
        let req = &ctx.req;
        let redact = &ctx.runtime.config.log.redact_query;
        s.emit_str("request_id", &ctx.request_id)?;
        s.emit_str("method", &truncated(req.method().as_str(), MAX_METHOD))?;
        s.emit_str("path", &truncated(req.path(), MAX_PATH))?;
        match req.uri().query() {
            Some(query) => {
                s.emit_str("query", &truncated(&redact_query(query, redact), MAX_PATH))?
            }
            None => s.emit_none("query")?,
        }
        s.emit_u16("status", self.status)?;
        s.emit_f64("duration_ms", round3(self.duration_ms))?;
        match ctx.upstream_time {
            Some(t) => s.emit_f64("upstream_ms", round3(t.as_secs_f64() * 1000.0))?,
            None => s.emit_none("upstream_ms")?,
        }
        let tunnelled_in = ctx
            .tunnel
            .as_ref()
            .map_or(0, |t| t.bytes_in.load(std::sync::atomic::Ordering::Relaxed));
        s.emit_u64("bytes_in", ctx.bytes_in + tunnelled_in)?;
        s.emit_u64("bytes_out", self.bytes_out)?;
        s.emit_arguments("client_ip", &format_args!("{}", ctx.client_ip))?;
        match req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            Some(ua) => s.emit_str("user_agent", &truncated(ua, MAX_USER_AGENT))?,
            None => s.emit_none("user_agent")?,
        }
        s.emit_str("route", self.route_id)?;
        match ctx.route() {
            Some(route) => s.emit_str("upstream", route.upstream.label())?,
            None => s.emit_none("upstream")?,
        }
        // Only for services: which target answered, after how many tries.
        if let Some(target) = &ctx.target {
            s.emit_str("target", target.name())?;
            s.emit_u32("tries", ctx.tries)?;
        }
        // Only for WebSocket tunnels: what ended it (the client, when
        // nothing else did before it went away).
        if let Some(tunnel) = &ctx.tunnel {
            let end = tunnel
                .end_reason()
                .unwrap_or(crate::proxy::tunnel::End::Client);
            s.emit_str("tunnel_end", end.as_str())?;
        }
        match &ctx.principal {
            Some((user, session)) => {
                s.emit_str("user_id", &user.name)?;
                s.emit_str("session_id", &session.id)?;
            }
            None => {
                s.emit_none("user_id")?;
                s.emit_none("session_id")?;
            }
        }
        s.emit_str("auth", ctx.auth)?;
        match ctx.rate_limit.closest() {
            Some(applied) => s.emit_serde(
                "rate_limit",
                &RateLimitField {
                    policy: applied.policy.name.clone(),
                    remaining: applied.decision.remaining,
                    limited: !applied.decision.allowed,
                },
            )?,
            None => s.emit_none("rate_limit")?,
        }
        match ctx.error {
            Some(code) => s.emit_str("error", code)?,
            None => s.emit_none("error")?,
        }
        match ctx.upstream_failure {
            Some(kind) => s.emit_str("upstream_error", kind)?,
            None => s.emit_none("upstream_error")?,
        }
        Ok(())
    }
}

/// The access log's `rate_limit` object.
#[derive(Clone, serde::Serialize)]
struct RateLimitField {
    policy: std::sync::Arc<str>,
    remaining: u64,
    limited: bool,
}

impl slog::Value for RateLimitField {
    fn serialize(&self, _: &Record, key: slog::Key, s: &mut dyn Serializer) -> slog::Result {
        s.emit_serde(key, self)
    }
}

impl slog::SerdeValue for RateLimitField {
    fn as_serde(&self) -> &dyn erased_serde::Serialize {
        self
    }

    fn to_sendable(&self) -> Box<dyn slog::SerdeValue + Send + 'static> {
        Box::new(self.clone())
    }
}

/// Longest path (and query) written into an access line; longer ones are cut.
const MAX_PATH: usize = 2048;
/// Longest user agent written into an access line.
const MAX_USER_AGENT: usize = 512;
/// Longest method written (extension methods can be long tokens).
const MAX_METHOD: usize = 32;

/// `value`, or its first `max` bytes (at a character boundary) and a marker
/// saying how much was cut: `…[+1234 bytes]`. A client cannot make one
/// access line arbitrarily long.
pub fn truncated(value: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if value.len() <= max {
        return value.into();
    }
    let mut cut = max;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[+{} bytes]", &value[..cut], value.len() - cut).into()
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Replaces the values of the named query parameters with `REDACTED`.
pub fn redact_query<'q>(query: &'q str, names: &[String]) -> std::borrow::Cow<'q, str> {
    if names.is_empty() {
        return query.into();
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if names.iter().any(|n| n == name) => format!("{name}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect();
    redacted.join("&").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_with_a_marker() {
        assert_eq!(truncated("short", 10), "short");
        assert_eq!(truncated("abcdefghij", 4), "abcd…[+6 bytes]");
        // Never inside a character.
        assert_eq!(truncated("ééé", 3), "é…[+4 bytes]");
    }

    #[test]
    fn redacts_only_the_named_parameters() {
        let names = vec!["token".to_string(), "key".to_string()];
        assert_eq!(
            redact_query("a=1&token=s3cret&key=k&b=2", &names),
            "a=1&token=REDACTED&key=REDACTED&b=2"
        );
        assert_eq!(redact_query("token", &names), "token");
        assert_eq!(redact_query("a=1", &[]), "a=1");
    }
}
