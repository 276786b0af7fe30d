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
mod upstreams;
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
    GET "/upstreams" => upstreams::list,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::{settings::OPENAPI, ENDPOINTS};

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
    }

    /// The value a local `$ref` (`#/components/...`) points at.
    fn resolve<'d>(doc: &'d Value, value: &'d Value) -> &'d Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("a local $ref");
                resolve(
                    doc,
                    doc.pointer(pointer)
                        .unwrap_or_else(|| panic!("$ref {reference} points at nothing")),
                )
            }
            None => value,
        }
    }

    /// Every `(METHOD, path)` the document describes.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                METHODS
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(|m| (m.to_uppercase(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn the_document_describes_exactly_the_endpoints() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["servers"][0]["url"], "/admin/api");
        let served: BTreeSet<(String, String)> = ENDPOINTS
            .iter()
            .map(|e| (e.method.to_string(), e.path.to_owned()))
            .collect();
        assert_eq!(served.len(), ENDPOINTS.len(), "an endpoint is listed twice");
        let documented = documented(&doc);
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "in ENDPOINTS but not in openapi.json: {undocumented:?}; \
             in openapi.json but not in ENDPOINTS: {unserved:?}"
        );
    }

    #[test]
    fn every_operation_names_its_path_parameters_and_answers() {
        let doc = document();
        for (method, path) in documented(&doc) {
            let operation = &doc["paths"][&path][method.to_lowercase()];
            let what = format!("{method} {path}");
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(&doc, p))
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().expect("a parameter name"))
                .collect();
            assert_eq!(in_path, declared, "{what}: path parameters");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no success answer"
            );
            assert!(responses.contains_key("421"), "{what}: no 421");
            let open = operation["security"].as_array().is_some_and(Vec::is_empty);
            assert!(open || responses.contains_key("401"), "{what}: no 401");
            assert!(operation["tags"][0].is_string(), "{what}: no tag");
            for (status, response) in responses {
                let response = resolve(&doc, response);
                assert!(response["description"].is_string(), "{what} {status}");
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["allOf"][0]["$ref"], "#/components/schemas/Error",
                        "{what} {status}: not the error body"
                    );
                }
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(doc: &Value, value: &Value) {
            match value {
                Value::Object(map) => {
                    if map.contains_key("$ref") {
                        resolve(doc, value);
                    }
                    map.values().for_each(|v| walk(doc, v));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
                _ => {}
            }
        }
        let doc = document();
        walk(&doc, &doc);
    }
}
