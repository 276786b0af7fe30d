//! The admin API (`/admin/api`) against the real binary: every endpoint,
//! every kind of caller, and every answer checked against the OpenAPI
//! document the binary serves.
//!
//! Calls go through [`Api`]: the bearer token, a console session (signed in
//! through `POST /auth/login`, sending its CSRF token and a same-origin
//! `Origin` on every change) or nobody. [`Call::send`] checks each answer
//! with [`check_answer`]: the status must be one the document lists for the
//! operation, the body must match that answer's schema (and, for a success,
//! the request body the operation's), and the security headers must be
//! there. A shape that differs from the document fails the test that saw it.
//!
//! Each resource has its own file under `admin_api/`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{SetCookie, PASSWORD};
use crate::common::{client, Gateway};

#[path = "admin_api/account.rs"]
mod account;
#[path = "admin_api/audit.rs"]
mod audit;
#[path = "admin_api/callers.rs"]
mod callers;
#[path = "admin_api/limits.rs"]
mod limits;
#[path = "admin_api/routes.rs"]
mod routes;
#[path = "admin_api/settings.rs"]
mod settings;
#[path = "admin_api/traffic.rs"]
mod traffic;
#[path = "admin_api/upstreams.rs"]
mod upstreams;
#[path = "admin_api/users.rs"]
mod users;

/// The OpenAPI document as compiled into the binary (a test checks that it
/// is what the binary serves).
pub const OPENAPI: &str = include_str!("../../src/admin/api/openapi.json");

/// Where the API lives on the admin listener (the document's `servers` URL).
pub const BASE: &str = "/admin/api";

/// The console cookie's name without TLS.
pub const CONSOLE_COOKIE: &str = "portcullis_console";

static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(OPENAPI).expect("openapi.json is JSON"));

/// Compiled schemas, by where they are in the document.
static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
    LazyLock::new(Mutex::default);

/// The value a local `$ref` points at (or the value itself).
fn resolve(value: &Value) -> &Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            resolve(
                DOCUMENT
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("$ref {reference} points at nothing")),
            )
        }
        None => value,
    }
}

/// The documented path template (`/routes/{id}`) a concrete API path
/// (`/routes/echo?x=1`) is an instance of: literal segments must be equal,
/// `{name}` segments take any one segment; the most literal match wins.
pub fn template_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    DOCUMENT["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter_map(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if part.starts_with('{') {
                    if segment.is_empty() {
                        return None;
                    }
                } else if part == segment {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, template))
        })
        .max()
        .map(|(_, template)| template.clone())
        .unwrap_or_else(|| panic!("{path} is not a path of the OpenAPI document"))
}

/// Validates `instance` against the schema at `pointer` in the document,
/// panicking with every difference.
fn validate(pointer: &str, instance: &Value, what: &str) {
    let validator = {
        let mut cache = VALIDATORS.lock().unwrap();
        cache
            .entry(pointer.to_owned())
            .or_insert_with(|| {
                let schema = DOCUMENT
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("no schema at {pointer}"))
                    .clone();
                // The document itself is the root, so its `#/components/...`
                // references resolve; its own keys are no schema keywords.
                let mut root = DOCUMENT.clone();
                root["allOf"] = json!([schema]);
                let validator = jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&root)
                    .unwrap_or_else(|err| panic!("the schema at {pointer} compiles: {err}"));
                Arc::new(validator)
            })
            .clone()
    };
    let problems: Vec<String> = validator
        .iter_errors(instance)
        .map(|err| format!("  at {:?}: {err}", err.instance_path().to_string()))
        .collect();
    assert!(
        problems.is_empty(),
        "{what} differs from the OpenAPI document ({pointer}):\n{}\nthe JSON:\n{}",
        problems.join("\n"),
        serde_json::to_string_pretty(instance).unwrap()
    );
}

/// Checks one event of `GET /logs/stream` against the document.
pub fn validate_event(event: &Value) {
    validate(
        "/paths/~1logs~1stream/get/responses/200/content/text~1event-stream/x-event-data",
        event,
        "an event of /logs/stream",
    );
}

/// A JSON pointer token (`/` and `~` escaped).
fn token(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// Asserts the headers every admin API answer carries.
pub fn assert_security_headers(headers: &HeaderMap, what: &str) {
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: {name}"
        );
    }
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: CSP {csp:?}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: CSP {csp:?}");
}

/// Checks one answer of the API against the OpenAPI document: the status
/// is one the operation lists, the body matches that answer's schema (an
/// answer without content has no body), the security headers are there,
/// and for a success the request body matched the operation's schema too.
pub fn check_answer(
    method: &Method,
    path: &str,
    status: u16,
    headers: &HeaderMap,
    body: &str,
    request: Option<&Value>,
) {
    let template = template_of(path);
    let what = format!("{method} {BASE}{path} → {status}");
    let operation_pointer = format!(
        "/paths/{}/{}",
        token(&template),
        method.as_str().to_lowercase()
    );
    let operation = DOCUMENT
        .pointer(&operation_pointer)
        .unwrap_or_else(|| panic!("{method} {template} is not in the OpenAPI document"));
    let listed = &operation["responses"][status.to_string()];
    assert!(
        !listed.is_null(),
        "{what}: the document lists no {status} for {method} {template}; body: {body}"
    );
    assert_security_headers(headers, &what);
    // Follow a `$ref` to `#/components/responses/...` to where the content is.
    let response_pointer = match listed.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference.trim_start_matches('#').to_owned(),
        None => format!("{operation_pointer}/responses/{status}"),
    };
    let response = resolve(listed);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match response.get("content") {
        None => assert!(
            body.is_empty(),
            "{what}: a body where none is documented: {body}"
        ),
        Some(content) if content.get("application/json").is_some() => {
            assert!(
                content_type.starts_with("application/json"),
                "{what}: Content-Type {content_type:?}"
            );
            let value: Value =
                serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body:?}"));
            validate(
                &format!("{response_pointer}/content/application~1json/schema"),
                &value,
                &format!("the answer of {what}"),
            );
        }
        Some(content) if content.get("text/event-stream").is_some() => assert!(
            content_type.starts_with("text/event-stream"),
            "{what}: Content-Type {content_type:?}"
        ),
        Some(other) => panic!("{what}: undocumented content {other}"),
    }
    if let (true, Some(request)) = ((200..300).contains(&status), request) {
        let documented = operation
            .pointer("/requestBody/content/application~1json/schema")
            .is_some();
        assert!(documented, "{what}: a body was sent, none is documented");
        validate(
            &format!("{operation_pointer}/requestBody/content/application~1json/schema"),
            request,
            &format!("the request of {what}"),
        );
    }
}

/// Who calls.
#[derive(Debug, Clone)]
pub enum Caller {
    Nobody,
    /// `Authorization: Bearer <admin token>`.
    Token(String),
    /// A console session: its cookie and CSRF token.
    Console {
        cookie: String,
        csrf: String,
    },
}

/// The admin API of one gateway, as one caller.
#[derive(Clone)]
pub struct Api<'g> {
    pub gateway: &'g Gateway,
    pub caller: Caller,
}

impl<'g> Api<'g> {
    /// The bearer token of [`crate::auth::setup`].
    pub fn token(gateway: &'g Gateway) -> Api<'g> {
        Api {
            gateway,
            caller: Caller::Token(crate::auth::ADMIN_TOKEN.to_owned()),
        }
    }

    /// No credentials at all.
    pub fn nobody(gateway: &'g Gateway) -> Api<'g> {
        Api {
            gateway,
            caller: Caller::Nobody,
        }
    }

    /// Signs in to the console as a browser on the console's page would.
    pub async fn sign_in(gateway: &'g Gateway, user: &str, password: &str) -> Api<'g> {
        let answer = Api::nobody(gateway)
            .post(
                "/auth/login",
                json!({"username": user, "password": password}),
            )
            .await
            .expect(200);
        Api::nobody(gateway).signed_in(&answer)
    }

    /// The console session a sign-in or password change answered with.
    pub fn signed_in(&self, answer: &Answer) -> Api<'g> {
        let cookie = answer
            .cookie(CONSOLE_COOKIE)
            .expect("a console cookie")
            .value;
        Api {
            gateway: self.gateway,
            caller: Caller::Console {
                cookie,
                csrf: answer.body["csrf_token"]
                    .as_str()
                    .expect("a CSRF token")
                    .to_owned(),
            },
        }
    }

    /// The console of a user [`crate::auth::add_user`] made with [`PASSWORD`].
    pub async fn console(gateway: &'g Gateway, user: &str) -> Api<'g> {
        Api::sign_in(gateway, user, PASSWORD).await
    }

    /// `http://<admin listener>`: the console's own origin.
    pub fn origin(&self) -> String {
        format!("http://{}", self.gateway.admin_addr())
    }

    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            api: self,
            method,
            path: path.to_owned(),
            body: None,
            raw: None,
            headers: Vec::new(),
            csrf: true,
            origin: Some(self.origin()),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path).send().await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path).json(body).send().await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path).json(body).send().await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path).json(body).send().await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path).send().await
    }

    /// `POST /auth/logout` (no body).
    pub async fn sign_out(&self) -> Answer {
        self.call(Method::POST, "/auth/logout").send().await
    }
}

/// One call being built.
pub struct Call<'a> {
    api: &'a Api<'a>,
    method: Method,
    path: String,
    body: Option<Value>,
    raw: Option<(String, String)>,
    headers: Vec<(String, String)>,
    /// Send the console session's CSRF token on a change.
    csrf: bool,
    /// `Origin` sent on a change by a browser (console or nobody).
    origin: Option<String>,
}

impl Call<'_> {
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// A body sent as it is, not checked against the document.
    pub fn raw(mut self, content_type: &str, body: &str) -> Self {
        self.raw = Some((content_type.to_owned(), body.to_owned()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without_csrf(mut self) -> Self {
        self.csrf = false;
        self
    }

    /// Sends this `Origin` (or none) instead of the console's own.
    pub fn origin(mut self, origin: Option<&str>) -> Self {
        self.origin = origin.map(str::to_owned);
        self
    }

    /// Sends the call and checks the answer against the document.
    pub async fn send(self) -> Answer {
        let url = self.api.gateway.admin_url(&format!("{BASE}{}", self.path));
        let mut request = client().request(self.method.clone(), url);
        let change = !matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS);
        match &self.api.caller {
            Caller::Nobody => {}
            Caller::Token(token) => request = request.bearer_auth(token),
            Caller::Console { cookie, csrf } => {
                request = request.header("cookie", format!("{CONSOLE_COOKIE}={cookie}"));
                if change && self.csrf {
                    request = request.header("x-csrf-token", csrf);
                }
            }
        }
        let browser = !matches!(self.api.caller, Caller::Token(_));
        if let (true, true, Some(origin)) = (change, browser, &self.origin) {
            request = request.header("origin", origin);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &self.body {
            request = request.json(body);
        }
        if let Some((content_type, body)) = &self.raw {
            request = request
                .header("content-type", content_type)
                .body(body.clone());
        }
        let response = request.send().await.expect("an admin API request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let streaming = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let (text, stream) = if streaming {
            (String::new(), Some(response))
        } else {
            (response.text().await.expect("an answer body"), None)
        };
        check_answer(
            &self.method,
            &self.path,
            status,
            &headers,
            &text,
            self.body.as_ref(),
        );
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Answer {
            what: format!("{} {}", self.method, self.path),
            status,
            headers,
            body,
            text,
            stream,
        }
    }
}

/// An answer of the API, already checked against the document.
#[derive(Debug)]
pub struct Answer {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// `Null` when empty.
    pub body: Value,
    pub text: String,
    /// An event stream, unread.
    pub stream: Option<reqwest::Response>,
}

impl Answer {
    /// Asserts the status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Answer {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text);
        self
    }

    /// Asserts an error answer with this status and code.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Answer {
        assert_eq!(
            (self.status, self.error()),
            (status, code),
            "{}: {}",
            self.what,
            self.text
        );
        self
    }

    /// The error code, `""` if none.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    /// The keys of the field errors, in order.
    pub fn error_keys(&self) -> Vec<&str> {
        self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["key"].as_str())
            .collect()
    }

    /// The `Set-Cookie` for `name`, if any.
    pub fn cookie(&self, name: &str) -> Option<SetCookie> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| SetCookie::parse(v.to_str().expect("an ASCII Set-Cookie")))
            .find(|c| c.name == name)
    }
}

#[test]
fn the_check_refuses_what_the_document_does_not_describe() {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; frame-ancestors 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    let user = json!({
        "username": "alice", "roles": [], "permissions": [], "disabled": false,
        "must_change_password": false,
        "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
    });
    let check = |status: u16, body: &Value| {
        let body = body.to_string();
        let headers = headers.clone();
        std::panic::catch_unwind(move || {
            check_answer(&Method::GET, "/users/alice", status, &headers, &body, None)
        })
        .is_ok()
    };
    assert!(check(200, &user), "the document's own shape passes");
    let mut extra = user.clone();
    extra["password_hash"] = json!("$argon2id$...");
    let mut missing = user.clone();
    missing.as_object_mut().unwrap().remove("disabled");
    let mut mistyped = user.clone();
    mistyped["roles"] = json!("admin");
    let mut not_a_time = user.clone();
    not_a_time["created_at"] = json!("yesterday");
    for (what, body) in [
        ("an undocumented key", extra),
        ("a missing key", missing),
        ("a wrong type", mistyped),
        ("a bad date-time", not_a_time),
    ] {
        assert!(!check(200, &body), "{what} passed the check");
    }
    assert!(
        !check(418, &user),
        "an undocumented status passed the check"
    );
    let not_found = json!({"error": "unauthorized", "message": "m", "correlation_id": "c", "timestamp": "2026-01-01T00:00:00.000Z"});
    assert!(
        !check(404, &not_found),
        "the wrong code for a status passed"
    );
}
