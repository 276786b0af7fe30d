//! The per-request context: filled in by each phase, read by the access log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use actix_web::HttpRequest;

use crate::auth::{Session, User};

use crate::config::Route;
use crate::error::GatewayError;
use crate::pipeline::Runtime;

/// What the pipeline learned about one request.
pub struct RequestCtx {
    pub started: Instant,
    pub req: HttpRequest,
    pub request_id: String,
    /// The socket peer.
    pub peer_ip: IpAddr,
    pub peer_trusted: bool,
    /// The client as resolved through trusted proxies.
    pub client_ip: IpAddr,
    /// The configuration this request was served with.
    pub runtime: Arc<Runtime>,
    /// Index of the matched route in `runtime.routes`.
    pub route: Option<usize>,
    pub upstream_time: Option<Duration>,
    pub bytes_in: u64,
    /// The error code when the gateway produced the response itself.
    pub error: Option<&'static str>,
    /// How the upstream exchange failed, for `portcullis_upstream_errors_total`.
    pub upstream_failure: Option<&'static str>,
    /// The authenticated user and session, if any.
    pub principal: Option<(Arc<User>, Arc<Session>)>,
    /// The authentication outcome, for the access log and metrics.
    pub auth: &'static str,
    /// A `Set-Cookie` to add to whatever response is sent (token rotation).
    pub set_cookie: Option<HeaderValue>,
    /// The rate-limit decisions made for this request.
    pub rate_limit: crate::ratelimit::Outcome,
}

impl RequestCtx {
    /// Notes who made the request, for logs and metrics.
    pub fn identify(&mut self, user: &Arc<User>, session: &Arc<Session>, outcome: &'static str) {
        self.principal = Some((user.clone(), session.clone()));
        self.auth = outcome;
    }

    /// Notes an error the gateway is about to answer with.
    pub fn record_error(&mut self, error: &GatewayError) {
        self.error = Some(error.code());
        self.upstream_failure = match error {
            GatewayError::BadGateway(kind) => Some(kind.as_str()),
            GatewayError::GatewayTimeout => Some("timeout"),
            _ => None,
        };
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.runtime.routes.routes()[i])
    }
}
