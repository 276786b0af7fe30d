//! Who is calling the admin API, and whether they may: the one gate in
//! front of every `/admin/api` handler.
//!
//! In order: the `Host` must be one of `admin.hosts` (a DNS-rebinding page
//! names its own host); the caller is either automation with the bearer
//! token (cookies are then ignored) or a console session of a user holding
//! `admin.role` or `admin.viewer_role`; a console call that changes
//! anything must carry the session's CSRF token *and* come from the
//! console's own origin; a viewer changes nothing; a user whose password
//! was generated at first start may do nothing but change it.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{session_cookie_value, Principal};
use crate::config::AdminConfig;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::storage::now_ms;

/// The header a console call that changes something carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Paths under `/admin/api` anyone on an allowed host may call.
const OPEN_PATHS: &[&str] = &["/admin/api/auth/login", "/admin/api/openapi.json"];

/// What a user whose password must change may still do.
const PASSWORD_CHANGE_PATHS: &[&str] = &[
    "/admin/api/auth/me",
    "/admin/api/auth/password",
    "/admin/api/auth/logout",
];

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Every read, no change.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    /// The console role of a user holding `roles`, if any.
    pub fn of(roles: &[String], config: &AdminConfig) -> Option<Role> {
        if roles.contains(&config.role) {
            Some(Role::Admin)
        } else if roles.contains(&config.viewer_role) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    /// `Authorization: Bearer <admin.token>`.
    Token,
    /// A console session.
    Console(Principal),
}

/// The authenticated caller of an admin API request, for handlers and the
/// audit trail.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user name, or `token` for the bearer token.
    pub name: Arc<str>,
    pub role: Role,
    pub via: Via,
    pub address: IpAddr,
}

impl Caller {
    pub fn via_str(&self) -> &'static str {
        match self.via {
            Via::Token => "token",
            Via::Console(_) => "console",
        }
    }
}

impl FromRequest for Caller {
    type Error = GatewayError;
    type Future = std::future::Ready<Result<Caller, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        // Set by `guard`; absent only on a path the guard leaves open.
        std::future::ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or(GatewayError::Unauthorized),
        )
    }
}

/// The gate in front of `/admin/api`.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or(GatewayError::Internal)?
        .clone();
    let runtime = state.runtime.load_full();
    let config = &runtime.config.admin;
    let http = req.request();
    check_host(http, &state)?;
    let path = http.path();
    let changes = changes_state(http.method());
    if OPEN_PATHS.contains(&path) {
        if changes && !same_origin(http, &state) {
            return Err(GatewayError::CsrfRejected.into());
        }
        return next.call(req).await;
    }
    let caller = identify(http, &state, config).await?;
    if changes {
        if let Via::Console(_) = &caller.via {
            if !same_origin(http, &state) || !csrf_matches(http.headers(), config) {
                return Err(GatewayError::CsrfRejected.into());
            }
        }
        if caller.role == Role::Viewer {
            return Err(GatewayError::ReadOnly.into());
        }
    }
    if let Via::Console(principal) = &caller.via {
        if principal.user.must_change_password && !PASSWORD_CHANGE_PATHS.contains(&path) {
            return Err(GatewayError::PasswordChangeRequired.into());
        }
    }
    req.extensions_mut().insert(caller);
    next.call(req).await
}

/// Whether a method may change state: everything but reads.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The bearer token (checked in constant time) or a console session.
async fn identify(
    req: &HttpRequest,
    state: &AppState,
    config: &AdminConfig,
) -> Result<Caller, GatewayError> {
    let address = client_address(req);
    if let Some(presented) = req.headers().get(header::AUTHORIZATION) {
        let expected = config.token.as_deref().ok_or(GatewayError::Unauthorized)?;
        let presented = presented
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(GatewayError::Unauthorized)?;
        let same: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        return same
            .then(|| Caller {
                name: "token".into(),
                role: Role::Admin,
                via: Via::Token,
                address,
            })
            .ok_or(GatewayError::Unauthorized);
    }
    let token = session_cookie_value(req.headers(), cookie_name(config))
        .ok_or(GatewayError::Unauthorized)?;
    let principal = state
        .auth
        .authenticate_console(token, config)
        .await
        .map_err(|_| GatewayError::Unauthorized)?;
    // The role is read from the account on every call: taking it away
    // takes effect at once.
    let role = Role::of(&principal.user.roles, config).ok_or(GatewayError::Unauthorized)?;
    Ok(Caller {
        name: principal.user.name.clone(),
        role,
        via: Via::Console(principal),
        address,
    })
}

/// The admin listener's peer: it is reached directly, never through a proxy.
pub fn client_address(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip())
}

/// Refuses a `Host` that is not one of `admin.hosts` on this listener's port.
pub fn check_host(req: &HttpRequest, state: &AppState) -> Result<(), GatewayError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if names_this_listener(host, state) => Ok(()),
        _ => Err(GatewayError::Misdirected),
    }
}

/// Whether `authority` (`host[:port]`) names the admin listener: an allowed
/// host name, and the port it listens on (or none, for the scheme's default).
fn names_this_listener(authority: &str, state: &AppState) -> bool {
    let runtime = state.runtime.load();
    let config = &runtime.config.admin;
    let Some(local_port) = state.admin_address.get().map(|a| a.port()) else {
        return false;
    };
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority.as_str(), None),
    };
    let default_port = if config.tls.is_some() { 443 } else { 80 };
    let port_ok = match port {
        Some(port) => port.parse::<u16>().ok() == Some(local_port),
        None => local_port == default_port,
    };
    port_ok && config.hosts.iter().any(|allowed| allowed == host)
}

/// Whether a browser sent this request from the console's own origin:
/// `Origin` names this listener, or (for browsers that send no `Origin`)
/// `Sec-Fetch-Site: same-origin`.
fn same_origin(req: &HttpRequest, state: &AppState) -> bool {
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let scheme = if state.runtime.load().config.admin.tls.is_some() {
            "https://"
        } else {
            "http://"
        };
        return origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix(scheme))
            .is_some_and(|authority| names_this_listener(authority, state));
    }
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v == "same-origin")
}

/// Whether the request carries the CSRF token of its console session.
fn csrf_matches(headers: &HeaderMap, config: &AdminConfig) -> bool {
    let Some(token) = session_cookie_value(headers, cookie_name(config)) else {
        return false;
    };
    let expected = csrf_token(token);
    headers
        .get(CSRF_HEADER)
        .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(expected.as_bytes())))
}

/// The CSRF token of a console session: derived from its session token, so
/// it is never stored, and worthless without the cookie it comes from.
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"portcullis console csrf\0")
        .chain_update(session_token.as_bytes())
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// The console cookie's name: `__Host-` prefixed over TLS, where browsers
/// then refuse it any `Domain` or a non-secure origin.
pub fn cookie_name(config: &AdminConfig) -> &'static str {
    if config.tls.is_some() {
        "__Host-portcullis_console"
    } else {
        "portcullis_console"
    }
}

/// `Set-Cookie` for a console session: HttpOnly, SameSite=Strict, Path=/,
/// Secure over TLS, for the session's absolute lifetime.
pub fn console_cookie(config: &AdminConfig, token: &str, expires_at: u64) -> HeaderValue {
    let remaining = expires_at.saturating_sub(now_ms()) / 1000;
    build_cookie(config, token, time::Duration::seconds(remaining as i64))
}

/// `Set-Cookie` that removes the console cookie.
pub fn clear_console_cookie(config: &AdminConfig) -> HeaderValue {
    build_cookie(config, "", time::Duration::ZERO)
}

fn build_cookie(config: &AdminConfig, value: &str, max_age: time::Duration) -> HeaderValue {
    let cookie = Cookie::build(cookie_name(config), value)
        .http_only(true)
        .secure(config.tls.is_some())
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(max_age)
        .finish();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The console session token of a request, if any.
pub fn console_token<'r>(req: &'r HttpRequest, config: &AdminConfig) -> Option<&'r str> {
    session_cookie_value(req.headers(), cookie_name(config))
}
