//! The console's own sign-in: login, logout, who am I, and the password
//! change (forced after first start).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use slog::warn;

use super::Change;
use crate::admin::body::Json;
use crate::admin::guard::{self, Caller, Role, Via};
use crate::auth::{rfc3339, AccountError, Issued, Origin, User};
use crate::config::Config;
use crate::error::{FieldError, GatewayError};
use crate::state::AppState;

/// The file the first admin's generated password is written to.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    username: String,
    password: String,
}

/// Signs in a user holding the admin or viewer role: the same checks as the
/// gateway's login (throttled, counted before hashing), and a console
/// session of its own.
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<Credentials>,
) -> Result<HttpResponse, GatewayError> {
    let runtime = state.runtime.load_full();
    let config = &runtime.config;
    let address = guard::client_address(&req);
    let Credentials { username, password } = body.into_inner();
    let checked = state
        .auth
        .check_login(config, &username, password, address)
        .await;
    state
        .metrics
        .logins
        .with_label_values(&[checked.as_ref().map_or_else(|e| e.outcome(), |_| "success")])
        .inc();
    // Failures go to the system log only: storing them would let anyone
    // push the real changes out of the bounded audit trail.
    let user = checked.inspect_err(|err| {
        warn!(state.logging.logger, "admin: console login refused";
            "address" => address.to_string(), "outcome" => err.outcome());
    })?;
    // A user without a console role gets the answer a wrong password gets.
    let role = Role::of(&user.roles, &config.admin).ok_or(GatewayError::InvalidCredentials)?;
    let caller = Caller {
        name: user.name.clone(),
        role,
        via: Via::Token,
        address,
    };
    let issued = Change::new(&state, &caller, "console.login", &*user.name)
        .finish(start_session(&req, &state, config, &user).await, |issued| {
            Some(json!({"session_id": &*issued.session.id}))
        })
        .await?;
    Ok(signed_in(config, &user, role, &issued))
}

async fn start_session(
    req: &HttpRequest,
    state: &AppState,
    config: &Config,
    user: &User,
) -> Result<Issued, GatewayError> {
    let origin = Origin::new(
        Some(guard::client_address(req).to_string()),
        req.headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    Ok(state
        .auth
        .issue_console(user, config.admin.session_lifetime, origin)
        .await?)
}

/// The answer to a sign-in: the cookie, and what the console needs to know.
fn signed_in(config: &Config, user: &User, role: Role, issued: &Issued) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::SET_COOKIE,
            guard::console_cookie(&config.admin, &issued.token, issued.session.expires_at),
        ))
        .json(json!({
            "user": &*user.name,
            "role": role.as_str(),
            "must_change_password": user.must_change_password,
            "csrf_token": guard::csrf_token(&issued.token),
            "expires_at": rfc3339(issued.session.expires_at),
        }))
}

/// Ends the console session; the cookie goes whatever happens.
pub async fn logout(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, GatewayError> {
    let config = &state.runtime.load().config.admin;
    if let Via::Console(principal) = &caller.via {
        Change::new(&state, &caller, "console.logout", &*principal.user.name)
            .finish(
                state
                    .auth
                    .revoke_console(&principal.session.id)
                    .await
                    .map_err(GatewayError::from),
                |_| None,
            )
            .await?;
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, guard::clear_console_cookie(config)))
        .json(json!({"status": "logged_out"})))
}

/// Who is calling, with the CSRF token the console sends on every change.
pub async fn me(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, GatewayError> {
    let config = &state.runtime.load().config.admin;
    let mut body = json!({
        "user": &*caller.name,
        "role": caller.role.as_str(),
        "via": caller.via_str(),
    });
    if let Via::Console(principal) = &caller.via {
        let token = guard::console_token(&req, config).unwrap_or_default();
        let session = &principal.session;
        body["must_change_password"] = json!(principal.user.must_change_password);
        body["csrf_token"] = json!(guard::csrf_token(token));
        body["session_id"] = json!(&*session.id);
        body["expires_at"] = json!(rfc3339(session.expires_at));
    }
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the signed-in user's own password (checked like a login). Every
/// session of the user ends, so a new console session is started and its
/// CSRF token returned. The first admin's generated password file goes.
pub async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<PasswordChange>,
) -> Result<HttpResponse, GatewayError> {
    let Via::Console(principal) = &caller.via else {
        return Err(GatewayError::BadRequest(
            "only a console session has a password to change".into(),
        ));
    };
    let runtime = state.runtime.load_full();
    let config = &runtime.config;
    let PasswordChange {
        current_password,
        new_password,
    } = body.into_inner();
    let name = principal.user.name.clone();
    let result = change(
        &state,
        config,
        &caller,
        &name,
        current_password,
        new_password,
    )
    .await;
    let user = Change::new(&state, &caller, "user.password", &*name)
        .finish(result, |_| None)
        .await?;
    if principal.user.must_change_password {
        let file = config.storage.path.join(INITIAL_PASSWORD_FILE);
        if let Err(err) = std::fs::remove_file(&file) {
            if err.kind() != std::io::ErrorKind::NotFound {
                warn!(state.logging.logger, "cannot remove the initial admin password file";
                    "path" => file.display().to_string(), "error" => err.to_string());
            }
        }
    }
    let issued = start_session(&req, &state, config, &user).await?;
    Ok(signed_in(config, &user, caller.role, &issued))
}

async fn change(
    state: &AppState,
    config: &Config,
    caller: &Caller,
    name: &str,
    current: String,
    new: String,
) -> Result<Arc<User>, GatewayError> {
    if new == current {
        return Err(field(
            "new_password",
            "must differ from the current password",
        ));
    }
    state
        .auth
        .check_login(config, name, current, caller.address)
        .await?;
    let min = config.login.min_password_length;
    match state.auth.set_password(name, new, min).await {
        Err(AccountError::PasswordTooShort(min)) => Err(field(
            "new_password",
            &format!("must be at least {min} characters"),
        )),
        other => other.map_err(GatewayError::from),
    }?;
    state
        .auth
        .find_user(name)
        .ok_or_else(|| AccountError::NoSuchUser(name.into()).into())
}

/// A 400 naming one field.
pub(super) fn field(key: &str, problem: &str) -> GatewayError {
    GatewayError::InvalidFields(vec![FieldError {
        key: key.into(),
        problem: problem.into(),
    }])
}
