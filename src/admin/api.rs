//! The admin JSON API (`/admin/api/*`): users and sessions of the live
//! gateway. Every call needs `Authorization: Bearer <admin.token>`; without
//! a configured token the API refuses everything.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{self, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use slog::info;
use subtle::ConstantTimeEq;

use super::body::Json;
use crate::auth::{rfc3339, AccountError};
use crate::error::GatewayError;
use crate::state::AppState;

/// Registers the API routes under `/admin/api`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/api")
            // The token is checked before anything else, the request body included.
            .wrap(middleware::from_fn(require_token))
            .route("/sessions", web::post().to(issue_session))
            .route("/sessions", web::get().to(list_sessions))
            .route("/sessions/{id}", web::delete().to(revoke_session))
            .route("/users", web::get().to(list_users))
            .route("/users", web::post().to(add_user))
            .route("/users/{name}", web::get().to(get_user))
            .route("/users/{name}", web::patch().to(update_user))
            .route("/users/{name}", web::delete().to(delete_user))
            .route(
                "/users/{name}/sessions",
                web::delete().to(revoke_user_sessions),
            )
            .route("/rate-limits", web::get().to(list_rate_limits))
            .route(
                "/rate-limits/{policy}/{key}",
                web::delete().to(reset_rate_limit),
            )
            .route("/login-throttle", web::get().to(list_login_throttle))
            .route(
                "/login-throttle/{kind}/{value}",
                web::delete().to(reset_login_throttle),
            ),
    );
}

/// Refuses every API request without the right bearer token.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or(GatewayError::Internal)?;
    authorize(req.request(), state)?;
    next.call(req).await
}

/// Checks the bearer token in constant time.
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), GatewayError> {
    let runtime = state.runtime.load();
    let expected = runtime
        .config
        .admin
        .token
        .as_deref()
        .ok_or(GatewayError::Unauthorized)?;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(GatewayError::Unauthorized)?;
    let same: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
    same.then_some(()).ok_or(GatewayError::Unauthorized)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueSession {
    user: String,
    ttl: Option<String>,
}

async fn issue_session(
    state: web::Data<AppState>,
    body: Json<IssueSession>,
) -> Result<HttpResponse, GatewayError> {
    let session_config = state.runtime.load().config.session.clone();
    let ttl = match &body.ttl {
        None => session_config.max_lifetime,
        Some(text) => parse_ttl(text)
            .map_err(|problem| GatewayError::BadRequest(format!("ttl: {problem}").into()))?,
    };
    let issued = state.auth.issue_for(&body.user, ttl).await?;
    info!(state.logging.logger, "admin: session issued"; "user" => &body.user, "session_id" => &*issued.session.id);
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "id": &*issued.session.id,
            "token": issued.token,
            "cookie_name": session_config.cookie_name,
            "expires_at": rfc3339(issued.session.expires_at),
        })))
}

#[derive(Deserialize)]
struct SessionFilter {
    user: Option<String>,
}

async fn list_sessions(
    state: web::Data<AppState>,
    filter: web::Query<SessionFilter>,
) -> Result<HttpResponse, GatewayError> {
    let idle = state.runtime.load().config.session.idle_timeout;
    let sessions: Vec<_> = state
        .auth
        .sessions(filter.user.as_deref())?
        .iter()
        .map(|s| s.summary(idle))
        .collect();
    Ok(HttpResponse::Ok().json(sessions))
}

async fn revoke_session(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    if !state.auth.revoke(&id).await? {
        return Err(AccountError::NoSuchSession(id.into_inner()).into());
    }
    info!(state.logging.logger, "admin: session revoked"; "session_id" => id.as_str());
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_user_sessions(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let revoked = state.auth.revoke_user(&name).await?;
    info!(state.logging.logger, "admin: user sessions revoked"; "user" => name.as_str(), "revoked" => revoked);
    Ok(HttpResponse::Ok().json(serde_json::json!({"revoked": revoked})))
}

async fn list_users(state: web::Data<AppState>) -> Result<HttpResponse, GatewayError> {
    let users: Vec<_> = state.auth.users().iter().map(|u| u.summary()).collect();
    Ok(HttpResponse::Ok().json(users))
}

async fn get_user(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let user = state
        .auth
        .find_user(&name)
        .ok_or_else(|| AccountError::NoSuchUser(name.into_inner()))?;
    Ok(HttpResponse::Ok().json(user.summary()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

async fn add_user(
    state: web::Data<AppState>,
    body: Json<NewUser>,
) -> Result<HttpResponse, GatewayError> {
    let min = state.runtime.load().config.login.min_password_length;
    let NewUser {
        username,
        password,
        roles,
        permissions,
    } = body.into_inner();
    let user = state
        .auth
        .add_user(&username, password, roles, permissions, min)
        .await?;
    info!(state.logging.logger, "admin: user added"; "user" => &username);
    Ok(HttpResponse::Created().json(user.summary()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    password: Option<String>,
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// Applies the given changes; any of them revokes the user's sessions.
async fn update_user(
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: Json<UserChange>,
) -> Result<HttpResponse, GatewayError> {
    let min = state.runtime.load().config.login.min_password_length;
    let UserChange {
        password,
        roles,
        permissions,
        disabled,
    } = body.into_inner();
    let mut revoked = 0;
    if let Some(password) = password {
        revoked += state.auth.set_password(&name, password, min).await?;
    }
    if roles.is_some() || permissions.is_some() {
        revoked += state.auth.set_privileges(&name, roles, permissions).await?;
    }
    if let Some(disabled) = disabled {
        revoked += state.auth.set_disabled(&name, disabled).await?;
    }
    info!(state.logging.logger, "admin: user updated"; "user" => name.as_str(), "sessions_revoked" => revoked);
    let user = state
        .auth
        .find_user(&name)
        .ok_or_else(|| AccountError::NoSuchUser(name.into_inner()))?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"user": user.summary(), "sessions_revoked": revoked})))
}

async fn delete_user(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let revoked = state.auth.delete_user(&name).await?;
    info!(state.logging.logger, "admin: user deleted"; "user" => name.as_str(), "sessions_revoked" => revoked);
    Ok(HttpResponse::NoContent().finish())
}

/// Every policy with its busiest keys right now.
async fn list_rate_limits(state: web::Data<AppState>) -> Result<HttpResponse, GatewayError> {
    let runtime = state.runtime.load();
    let policies: Vec<_> = runtime
        .config
        .rate_limits
        .iter()
        .map(|policy| {
            let prefix = format!("{}|", policy.name);
            let busiest: Vec<_> = state
                .counters
                .busiest(&prefix, 10)
                .into_iter()
                .map(
                    |(key, count)| serde_json::json!({"key": &key[prefix.len()..], "count": count}),
                )
                .collect();
            serde_json::json!({
                "name": &*policy.name,
                "limit": policy.limit,
                "window_seconds": policy.window.as_secs_f64(),
                "fail": format!("{:?}", policy.fail).to_lowercase(),
                "roles": policy.roles.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "busiest": busiest,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(policies))
}

/// Forgets one key's count, e.g. to unblock a client.
async fn reset_rate_limit(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let (policy, key) = path.into_inner();
    let full = format!("{policy}|{key}");
    let removed = state
        .counters
        .reset(&full)
        .map_err(|_| GatewayError::ServiceUnavailable)?;
    if !removed {
        return Err(GatewayError::NoSuchResource(format!(
            "no counter for key {key:?} of policy {policy:?}"
        )));
    }
    info!(state.logging.logger, "admin: rate-limit key reset"; "policy" => &policy, "key" => &key);
    Ok(HttpResponse::NoContent().finish())
}

/// Parses a session's `--ttl`/`ttl`: a positive duration of at most ten years.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be longer than zero")),
        d => Ok(d),
    }
}

/// The usernames and addresses with the most recent failed logins.
async fn list_login_throttle(state: web::Data<AppState>) -> Result<HttpResponse, GatewayError> {
    let config = &state.runtime.load().config.login;
    let entries: Vec<_> = state
        .auth
        .throttle
        .busiest(100)
        .into_iter()
        .filter_map(|(key, failures)| {
            let (kind, value) = key.split_once('|')?;
            let limit = match kind {
                "user" => config.max_failures_per_user,
                _ => config.max_failures_per_ip,
            };
            Some(serde_json::json!({
                "kind": kind,
                "value": value,
                "failures": failures,
                "locked": failures >= limit,
            }))
        })
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}

/// Forgets the failed logins of a username (`user`) or a client address or
/// network (`address`), e.g. to let a locked-out user in again.
async fn reset_login_throttle(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let (kind, value) = path.into_inner();
    if kind != "user" && kind != "address" {
        return Err(GatewayError::NoSuchResource(format!(
            "{kind:?} is not user or address"
        )));
    }
    let removed = state
        .auth
        .throttle
        .reset(&format!("{kind}|{value}"))
        .map_err(|_| GatewayError::ServiceUnavailable)?;
    if !removed {
        return Err(GatewayError::NoSuchResource(format!(
            "no failed logins counted for {kind} {value:?}"
        )));
    }
    info!(state.logging.logger, "admin: login throttle reset"; "kind" => &kind, "value" => &value);
    Ok(HttpResponse::NoContent().finish())
}
