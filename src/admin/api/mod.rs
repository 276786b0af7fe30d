//! The admin JSON API (`/admin/api/*`), one module per resource.
//!
//! Every endpoint is listed once, in [`ENDPOINTS`]: the listener registers
//! them from it and the OpenAPI test compares it with the document. Every
//! call passes [`guard`](super::guard) first; every change is recorded in
//! the audit trail, whatever its outcome.

mod account;
mod limits;
mod routes;
mod settings;
mod traffic;
mod users;

use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use serde_json::Value;

use super::audit::AuditRecord;
use super::guard::{self, Caller};
use crate::error::GatewayError;
use crate::state::AppState;

pub use account::INITIAL_PASSWORD_FILE;
pub use users::parse_ttl;

/// One endpoint: method, path under `/admin/api`, and its handler.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    handler: fn() -> actix_web::Route,
}

macro_rules! endpoints {
    ($($method:ident $path:literal => $handler:path,)*) => {
        &[$(Endpoint {
            method: Method::$method,
            path: $path,
            handler: || web::route().method(Method::$method).to($handler),
        },)*]
    };
}

/// Every endpoint of the admin API.
pub const ENDPOINTS: &[Endpoint] = endpoints! {
    POST "/auth/login" => account::login,
    POST "/auth/logout" => account::logout,
    GET "/auth/me" => account::me,
    POST "/auth/password" => account::change_password,
    GET "/openapi.json" => settings::openapi,
    GET "/routes" => routes::list,
    POST "/routes" => routes::create,
    GET "/routes/{id}" => routes::get,
    PUT "/routes/{id}" => routes::update,
    DELETE "/routes/{id}" => routes::delete,
    POST "/routes/{id}/test" => routes::test,
    GET "/users" => users::list,
    POST "/users" => users::create,
    GET "/users/{name}" => users::get,
    PATCH "/users/{name}" => users::update,
    DELETE "/users/{name}" => users::delete,
    DELETE "/users/{name}/sessions" => users::revoke_sessions,
    GET "/sessions" => users::list_sessions,
    POST "/sessions" => users::issue_session,
    DELETE "/sessions/{id}" => users::revoke_session,
    GET "/rate-limits" => limits::list,
    DELETE "/rate-limits/{policy}/{key}" => limits::reset,
    GET "/login-throttle" => limits::list_login_throttle,
    DELETE "/login-throttle/{kind}/{value}" => limits::reset_login_throttle,
    GET "/stats" => traffic::stats,
    GET "/logs" => traffic::logs,
    GET "/logs/stream" => traffic::stream,
    GET "/config" => settings::config,
    PUT "/log-level" => settings::set_log_level,
    GET "/audit" => settings::audit,
};

/// Registers the API under `/admin/api`, behind the guard.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut scope = web::scope("/admin/api").wrap(from_fn(guard::guard));
    for endpoint in ENDPOINTS {
        scope = scope.route(endpoint.path, (endpoint.handler)());
    }
    cfg.service(scope);
}

/// One admin change on its way to the audit trail.
pub(super) struct Change<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    action: &'static str,
    target: String,
    before: Option<Value>,
}

impl<'a> Change<'a> {
    pub fn new(
        state: &'a AppState,
        caller: &'a Caller,
        action: &'static str,
        target: impl Into<String>,
    ) -> Self {
        Change {
            state,
            caller,
            action,
            target: target.into(),
            before: None,
        }
    }

    /// What the target looked like before (never a secret).
    pub fn before(mut self, before: Option<Value>) -> Self {
        self.before = before;
        self
    }

    /// Records the change's outcome (and, on success, `after` of its
    /// result), durably, then passes the result on.
    pub async fn finish<T>(
        self,
        result: Result<T, GatewayError>,
        after: impl FnOnce(&T) -> Option<Value>,
    ) -> Result<T, GatewayError> {
        let (outcome, error, after) = match &result {
            Ok(done) => ("success", None, after(done)),
            Err(err) => ("failure", Some(err.code().to_owned()), None),
        };
        let record = AuditRecord {
            id: 0,
            at: String::new(),
            actor: self.caller.name.to_string(),
            via: self.caller.via_str().to_owned(),
            address: self.caller.address.to_string(),
            action: self.action.to_owned(),
            target: self.target,
            before: self.before,
            after,
            outcome: outcome.to_owned(),
            error,
        };
        let keep = self.state.runtime.load().config.admin.audit_records;
        if let Err(err) = self.state.audit.record(record, keep).await {
            // The change itself stands (it is durable, and in the system
            // log); only its stored audit record is missing.
            slog::error!(self.state.logging.logger, "cannot store an audit record";
                "error" => err.to_string());
        }
        result
    }
}

/// `204 No Content`.
fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// A storage failure that changed nothing.
fn unsaved(_: sled::Error) -> GatewayError {
    GatewayError::StorageFailed { applied: false }
}
