//! The request pipeline. Every request on the proxy listener runs these
//! phases in order, each returning `Result<_, GatewayError>`:
//!
//! 1. `admit`     — framing, header size, path normalisation
//! 2. `route`     — match the route table
//! 3. `authenticate` — session cookie, CSRF and the route's policy
//!    (the session endpoints — login, logout, session — answer here instead)
//! 4. (rate limit)— sliding-window limits
//! 5. `proxy`     — forward upstream and stream the answer back
//!
//! One outer function, [`handle`], turns an error into its JSON response and
//! arranges for the access log to be written exactly once, when the response
//! body is finished.

mod access;
mod admit;
mod client_ip;
mod ctx;
mod request_id;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix_web::body::MessageBody as _;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::FutureExt as _;

pub use access::{write_access_line, LoggedBody, Unlogged};
pub use client_ip::{is_trusted, resolve as resolve_client_ip};
pub use ctx::RequestCtx;

use crate::auth::{self, csrf, endpoints, Rejection};
use crate::config::{AuthPolicy, Config, Route, RouteUpstream};
use crate::error::GatewayError;
use crate::proxy::{self, UpstreamClient};
use crate::ratelimit;
use crate::route_store::{self, ApiRoute};
use crate::routing::{self, RouteMiss, RouteTable};
use crate::state::AppState;
use crate::storage::RouteRecord;
use crate::upstream::{Service, Services};

/// `X-Request-Id`, sent upstream and back to the client.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(request_id::HEADER);

/// A fresh random request id.
pub fn new_request_id() -> String {
    request_id::generate()
}

/// One configuration compiled for serving: swapped whole on reload, so a
/// request sees either the old or the new configuration, never a mix.
pub struct Runtime {
    /// The configuration as loaded from the file (its `routes` are the
    /// file's alone, kept to compose again after an API change).
    pub config: Config,
    /// Every route served: the file's and the API's.
    pub routes: RouteTable,
    /// The stored API routes and whether each is served.
    pub api_routes: Vec<Arc<ApiRoute>>,
    /// The `[upstreams]` services and their targets' health.
    pub services: Arc<Services>,
    /// Each served route's service (by the route's index), so a request
    /// finds its service without looking up a name.
    route_services: Vec<Option<Arc<Service>>>,
}

impl Runtime {
    /// The file's routes alone.
    pub fn new(config: Config) -> Runtime {
        Runtime::compose(config, Vec::new(), None)
    }

    /// The file's routes and the stored API routes (see [`route_store`](crate::route_store)),
    /// keeping the health of every target `previous` already served.
    pub fn compose(
        config: Config,
        api_routes: Vec<RouteRecord>,
        previous: Option<&Runtime>,
    ) -> Runtime {
        let (routes, api_routes) = route_store::compose(&config, api_routes);
        let services = Services::build(config.upstreams.values(), previous.map(|p| &*p.services));
        let routes = RouteTable::new(routes);
        let route_services = routes
            .routes()
            .iter()
            .map(|route| match &route.upstream {
                RouteUpstream::Service(name) => services.get(name).cloned(),
                RouteUpstream::Url(_) => None,
            })
            .collect();
        Runtime {
            config,
            routes,
            api_routes,
            services: Arc::new(services),
            route_services,
        }
    }

    /// The service of the route at `index`, if it names one.
    pub fn service_of(&self, index: usize) -> Option<&Arc<Service>> {
        self.route_services.get(index)?.as_ref()
    }
}

/// The proxy listener's one handler.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    client: web::Data<UpstreamClient>,
) -> HttpResponse<LoggedBody> {
    let ctx = RequestCtx::new(&req, state.runtime.load_full());
    let conn = ctx.conn.clone();
    let mut request = Unlogged::new(
        ctx,
        state.clone().into_inner(),
        state.metrics.in_flight_guard(),
    );
    match conn.as_ref().map(|conn| conn.begin_request(&req)) {
        Some(Err(refused)) => {
            // Never forwarded, never answered on the wire; still logged, so
            // every request read is accounted for.
            if let Some(conn) = &conn {
                conn.cut_after_flush().await;
            }
            request.ctx().error = Some("bad_request");
            let response = refused.response(&request.ctx().request_id);
            return finish(response, request);
        }
        Some(Ok(answering)) => request.hold(answering),
        None => {}
    }
    let ctx = request.ctx();
    let outcome = catch_panic(run_phases(&req, payload, &state, &client, ctx)).await;
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            ctx.record_error(&error);
            error.to_response(&ctx.request_id)
        }
        Err(panic) => {
            slog::error!(state.logging.logger, "request handler panicked";
                "request_id" => &ctx.request_id, "panic" => panic);
            let error = GatewayError::Internal;
            ctx.record_error(&error);
            error.to_response(&ctx.request_id)
        }
    };
    finish(response, request)
}

/// Runs a future, turning a panic inside it into `Err(panic message)` so one
/// bad request becomes a 500 instead of taking the worker down.
async fn catch_panic<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|panic| crate::telemetry::panic_message(panic.as_ref()))
}

async fn run_phases(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    client: &UpstreamClient,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let runtime = ctx.runtime.clone();
    let config = &runtime.config;
    let path = admit::admit(req, config)?;
    let key = routing::match_key(&path);
    if let Some(endpoint) = endpoints::endpoint(&key, config) {
        return endpoints::dispatch(endpoint, req, payload, state, config, ctx).await;
    }
    let route = route(&runtime, req, &key, ctx)?;
    authenticate(req, route, config, state, ctx).await?;
    rate_limit(req, route, state, ctx).await?;
    ctx.probe = state.probes.is_probe(req);
    let answer = proxy::forward(
        client,
        req,
        payload,
        route,
        &path,
        config,
        &state.tunnels,
        ctx,
    )
    .await;
    if let Some(sent) = ctx.sent_headers.take() {
        state.probes.record(&ctx.request_id, &sent);
    }
    answer
}

/// Validates the session cookie and applies the route's policy. Public
/// routes still identify a valid session (for logs and identity headers)
/// but never reject one.
async fn authenticate(
    req: &HttpRequest,
    route: &Route,
    config: &Config,
    state: &AppState,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let session = &config.session;
    let outcome = match auth::session_cookie_value(req.headers(), &session.cookie_name) {
        None => Err(Rejection::MissingToken),
        Some(token) => state.auth.authenticate(token, session).await,
    };
    if let Ok(principal) = &outcome {
        if let Some(token) = &principal.rotated_token {
            ctx.set_cookie = Some(auth::session_cookie(
                session,
                token,
                principal.session.expires_at,
            ));
        }
    }
    let AuthPolicy::Authenticated { roles, permissions } = &route.policy else {
        match outcome {
            // A cross-site request does not get to speak for the user, even where no session is required.
            Ok(principal) if csrf::allows(req, session, ctx.peer_trusted) => {
                ctx.identify(&principal.user, &principal.session, "public")
            }
            Err(rejection @ Rejection::TokenReused(_)) => {
                ctx.reject(rejection, state);
                ctx.auth = "public";
            }
            _ => ctx.auth = "public",
        }
        return Ok(());
    };
    let principal = match outcome {
        Ok(principal) => principal,
        Err(rejection) => {
            let error = ctx.reject(rejection, state);
            if route.login_redirect && wants_html(req) {
                let target = match req.uri().query() {
                    Some(query) => format!("{}?{query}", req.path()),
                    None => req.path().to_owned(),
                };
                let next = serde_urlencoded::to_string([("next", target)]).unwrap_or_default();
                return Err(GatewayError::LoginRequired {
                    location: format!("{}?{next}", session.login_path),
                });
            }
            return Err(error);
        }
    };
    ctx.identify(&principal.user, &principal.session, "authenticated");
    if route.csrf && !csrf::allows(req, session, ctx.peer_trusted) {
        ctx.auth = "csrf_rejected";
        return Err(GatewayError::CsrfRejected);
    }
    let user = &principal.user;
    let has_role = roles.is_empty() || roles.iter().any(|r| user.roles.contains(r));
    let has_permissions = permissions.iter().all(|p| user.permissions.contains(p));
    if !(has_role && has_permissions) {
        ctx.auth = "forbidden";
        return Err(GatewayError::Forbidden);
    }
    Ok(())
}

/// Applies the route's rate-limit policies, keeping every decision for the
/// response headers and the access log.
async fn rate_limit(
    req: &HttpRequest,
    route: &Route,
    state: &AppState,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    if route.rate_limits.is_empty() {
        return Ok(());
    }
    let who = ratelimit::Requester {
        client: ratelimit::AddressKey::new(
            ctx.client_ip,
            ctx.runtime.config.server.address_prefixes,
        ),
        principal: ctx
            .principal
            .as_ref()
            .map(|(user, session)| (&**user, &**session)),
    };
    let mut outcome = ratelimit::Outcome::default();
    let result = ratelimit::check(&state.counters, route, req, &who, &mut outcome).await;
    ctx.rate_limit = outcome;
    result
}

/// A browser navigation, which may be sent to the login page instead of a 401.
fn wants_html(req: &HttpRequest) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(actix_web::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

fn route<'a>(
    runtime: &'a Runtime,
    req: &HttpRequest,
    key: &str,
    ctx: &mut RequestCtx,
) -> Result<&'a Route, GatewayError> {
    match runtime.routes.match_request(key, req.method()) {
        Ok((index, route)) => {
            ctx.route = Some(index);
            Ok(route)
        }
        Err(RouteMiss::NotFound) => Err(GatewayError::NotFound),
        Err(RouteMiss::MethodNotAllowed(allow)) => Err(GatewayError::MethodNotAllowed { allow }),
    }
}

/// Stamps the request id on the response and hands the context to the body,
/// which writes the access log when the client has received everything.
fn finish(mut response: HttpResponse, mut request: Unlogged) -> HttpResponse<LoggedBody> {
    let ctx = request.ctx();
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    ctx.rate_limit.write_headers(response.headers_mut());
    if ctx.no_store {
        response.headers_mut().insert(
            actix_web::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    if let Some(cookie) = ctx.set_cookie.take() {
        response
            .headers_mut()
            .append(actix_web::http::header::SET_COOKIE, cookie);
    }
    let req = ctx.req.clone();
    if let Some(answering) = request.answering() {
        // Closes the connection after an upgrade the upstream never saw, among others.
        let size = response.body().size();
        answering.prepare(&req, response.head_mut(), size);
    }
    let status = response.status();
    response.map_body(|_, body| request.answer(body, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_panicking_phase_becomes_an_error_not_a_crash() {
        let outcome = catch_panic(async {
            if true {
                panic!("boom");
            }
            1
        })
        .await;
        assert_eq!(outcome, Err("boom".to_string()));
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
    }
}
