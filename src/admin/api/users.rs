//! Users and the gateway's sessions: accounts, passwords, roles, disabling,
//! and sessions issued or revoked by an admin. Tokens are shown once, when
//! issued, and never listed.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{no_content, Change};
use crate::admin::body::Json;
use crate::admin::guard::Caller;
use crate::auth::{rfc3339, AccountError, Origin};
use crate::error::GatewayError;
use crate::state::AppState;

pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let users: Vec<_> = state.auth.users().iter().map(|u| u.summary()).collect();
    HttpResponse::Ok().json(users)
}

pub async fn get(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    Ok(HttpResponse::Ok().json(summary(&state, &name)?))
}

fn summary(state: &AppState, name: &str) -> Result<serde_json::Value, GatewayError> {
    state
        .auth
        .find_user(name)
        .map(|u| u.summary())
        .ok_or_else(|| AccountError::NoSuchUser(name.into()).into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewUser>,
) -> Result<HttpResponse, GatewayError> {
    let min = state.runtime.load().config.login.min_password_length;
    let NewUser {
        username,
        password,
        roles,
        permissions,
    } = body.into_inner();
    let result = state
        .auth
        .add_user(&username, password, roles, permissions, min)
        .await
        .map(|user| user.summary())
        .map_err(GatewayError::from);
    let user = Change::new(&state, &caller, "user.create", &username)
        .finish(result, |user| Some(user.clone()))
        .await?;
    Ok(HttpResponse::Created().json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    password: Option<String>,
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// Applies the given changes; any of them ends the user's sessions.
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    body: Json<UserChange>,
) -> Result<HttpResponse, GatewayError> {
    let before = summary(&state, &name)?;
    let change = body.into_inner();
    let action = match (&change.password, &change.disabled) {
        (Some(_), _) => "user.password",
        (None, Some(true)) => "user.disable",
        (None, Some(false)) => "user.enable",
        (None, None) => "user.update",
    };
    let result = apply(&state, &name, change).await;
    let revoked = Change::new(&state, &caller, action, name.as_str())
        .before(Some(before))
        .finish(result, |_| summary(&state, &name).ok())
        .await?;
    Ok(HttpResponse::Ok()
        .json(json!({"user": summary(&state, &name)?, "sessions_revoked": revoked})))
}

async fn apply(state: &AppState, name: &str, change: UserChange) -> Result<usize, GatewayError> {
    let min = state.runtime.load().config.login.min_password_length;
    let UserChange {
        password,
        roles,
        permissions,
        disabled,
    } = change;
    let mut revoked = 0;
    if let Some(password) = password {
        revoked += state.auth.set_password(name, password, min).await?;
    }
    if roles.is_some() || permissions.is_some() {
        revoked += state.auth.set_privileges(name, roles, permissions).await?;
    }
    if let Some(disabled) = disabled {
        revoked += state.auth.set_disabled(name, disabled).await?;
    }
    Ok(revoked)
}

pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let before = summary(&state, &name)?;
    let result = state
        .auth
        .delete_user(&name)
        .await
        .map_err(GatewayError::from);
    Change::new(&state, &caller, "user.delete", name.as_str())
        .before(Some(before))
        .finish(result, |revoked| Some(json!({"sessions_revoked": revoked})))
        .await?;
    Ok(no_content())
}

pub async fn revoke_sessions(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let result = state
        .auth
        .revoke_user(&name)
        .await
        .map_err(GatewayError::from);
    let revoked = Change::new(&state, &caller, "session.revoke_all", name.as_str())
        .finish(result, |revoked| Some(json!({"revoked": revoked})))
        .await?;
    Ok(HttpResponse::Ok().json(json!({"revoked": revoked})))
}

#[derive(Deserialize)]
pub struct SessionFilter {
    user: Option<String>,
}

pub async fn list_sessions(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueSession {
    user: String,
    ttl: Option<String>,
}

/// Issues a session for a user; its token is in this answer and nowhere else.
pub async fn issue_session(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<IssueSession>,
) -> Result<HttpResponse, GatewayError> {
    let session_config = state.runtime.load().config.session.clone();
    let ttl = match &body.ttl {
        None => session_config.max_lifetime,
        Some(text) => parse_ttl(text).map_err(|problem| super::account::field("ttl", &problem))?,
    };
    let origin = Origin::new(
        Some(caller.address.to_string()),
        Some(&format!("issued by {} through the admin API", caller.name)),
    );
    let result = state
        .auth
        .issue_for(&body.user, ttl, origin)
        .await
        .map_err(GatewayError::from);
    let issued = Change::new(&state, &caller, "session.issue", body.user.as_str())
        .finish(result, |issued| {
            Some(json!({"session_id": &*issued.session.id, "expires_at": rfc3339(issued.session.expires_at)}))
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "id": &*issued.session.id,
            "token": issued.token,
            "cookie_name": session_config.cookie_name,
            "expires_at": rfc3339(issued.session.expires_at),
        })))
}

pub async fn revoke_session(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let result = match state.auth.revoke(&id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AccountError::NoSuchSession(id.to_string()).into()),
        Err(err) => Err(err.into()),
    };
    Change::new(&state, &caller, "session.revoke", id.as_str())
        .finish(result, |_| None)
        .await?;
    Ok(no_content())
}

/// Parses a session's `--ttl`/`ttl`: a positive duration of at most ten years.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be longer than zero")),
        d => Ok(d),
    }
}
