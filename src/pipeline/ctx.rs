//! The per-request context: filled in by each phase, read by the access log.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use actix_web::HttpRequest;

use crate::auth::{Rejection, Session, User};

use crate::config::Route;
use crate::error::GatewayError;
use crate::listener::Connection;
use crate::pipeline::Runtime;
use crate::state::AppState;

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
    /// The connection it arrived on (requests of the gateway's listeners).
    pub conn: Option<Rc<Connection>>,
    /// Index of the matched route in `runtime.routes`.
    pub route: Option<usize>,
    pub upstream_time: Option<Duration>,
    /// Requests sent upstream for this one: 0 when none was, more than 1
    /// when it was retried.
    pub tries: u32,
    /// The service target that answered (or failed last).
    pub target: Option<Arc<crate::upstream::Target>>,
    pub bytes_in: u64,
    /// The error code when the gateway produced the response itself.
    pub error: Option<&'static str>,
    /// How the upstream exchange failed, for `portcullis_upstream_errors_total`
    /// and the access log.
    pub upstream_failure: Option<&'static str>,
    /// What the upstream client reported when the exchange failed.
    pub upstream_error: Option<String>,
    /// The authenticated user and session, if any.
    pub principal: Option<(Arc<User>, Arc<Session>)>,
    /// The authentication outcome, for the access log and metrics.
    pub auth: &'static str,
    /// A `Set-Cookie` to add to whatever response is sent (token rotation,
    /// logout).
    pub set_cookie: Option<HeaderValue>,
    /// Whatever the answer, it must not be cached (it depends on credentials).
    pub no_store: bool,
    /// The rate-limit decisions made for this request.
    pub rate_limit: crate::ratelimit::Outcome,
    /// A test request of the admin console (see `proxy::probe`).
    pub probe: bool,
    /// For a test request: the headers sent upstream.
    pub sent_headers: Option<actix_web::http::header::HeaderMap>,
    /// The WebSocket tunnel the request opened, for the access log.
    pub tunnel: Option<Arc<crate::proxy::tunnel::TunnelHandle>>,
}

impl RequestCtx {
    /// The context of a request just received, served with `runtime`.
    pub fn new(req: &HttpRequest, runtime: Arc<Runtime>) -> RequestCtx {
        let peer_ip = req
            .peer_addr()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
        let trusted = &runtime.config.server.trusted_proxies;
        let peer_trusted = super::is_trusted(peer_ip, trusted);
        let client_ip = super::resolve_client_ip(peer_ip, req.headers(), trusted);
        RequestCtx {
            started: Instant::now(),
            req: req.clone(),
            request_id: super::request_id::from_headers(req.headers()),
            peer_ip,
            peer_trusted,
            client_ip,
            runtime,
            conn: Connection::of(req).cloned(),
            route: None,
            upstream_time: None,
            tries: 0,
            target: None,
            bytes_in: 0,
            error: None,
            upstream_failure: None,
            upstream_error: None,
            principal: None,
            auth: "none",
            set_cookie: None,
            no_store: false,
            rate_limit: Default::default(),
            probe: false,
            sent_headers: None,
            tunnel: None,
        }
    }

    /// Notes who made the request, for logs and metrics.
    pub fn identify(&mut self, user: &Arc<User>, session: &Arc<Session>, outcome: &'static str) {
        self.principal = Some((user.clone(), session.clone()));
        self.auth = outcome;
    }

    /// Notes why a session token was refused and returns the answer. A
    /// reused token is a security event: logged with what is known of the
    /// request, and counted.
    pub fn reject(&mut self, rejection: Rejection, state: &AppState) -> GatewayError {
        if let Rejection::TokenReused(session) = &rejection {
            state.metrics.token_reuse.inc();
            slog::warn!(state.logging.logger, "rotated-out session token presented again; session revoked";
                "event" => "token_reuse",
                "session_id" => &*session.id,
                "user_id" => &*session.user,
                "client_ip" => self.client_ip.to_string(),
                "request_id" => &self.request_id);
        }
        self.auth = rejection.outcome();
        rejection.into()
    }

    /// Notes an error the gateway is about to answer with.
    pub fn record_error(&mut self, error: &GatewayError) {
        self.error = Some(error.code());
        self.upstream_failure = match error {
            GatewayError::BadGateway(kind) => Some(kind.as_str()),
            GatewayError::GatewayTimeout => Some("timeout"),
            GatewayError::NoHealthyUpstream { .. } => Some("no_healthy_upstream"),
            GatewayError::UpstreamOverloaded => Some("overloaded"),
            GatewayError::CircuitOpen { .. } => Some("circuit_open"),
            _ => None,
        };
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.runtime.routes.routes()[i])
    }

    /// The service the matched route names. Validation lets no route name a
    /// missing service, so none found is the gateway's own fault.
    pub fn service(&self) -> Result<Arc<crate::upstream::Service>, GatewayError> {
        self.route
            .and_then(|i| self.runtime.service_of(i).cloned())
            .ok_or(GatewayError::Internal)
    }
}
