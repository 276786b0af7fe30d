//! Session-cookie authentication and route policies, against the real binary
//! with real cookie jars.
//!
//! Shared helpers live here; each area has its own file under `auth/`.
//! Most tests use [`setup`]: a plain-HTTP cookie (`session.secure = false`,
//! since reqwest's jar never sends a `Secure` cookie over http) and the admin
//! API enabled with [`ADMIN_TOKEN`], through which users are created.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::common::{client, client_builder, json, route, Echo, Gateway, Setup};

#[path = "auth/admin_sessions.rs"]
pub mod admin_sessions;
#[path = "auth/cli.rs"]
mod cli;
#[path = "auth/cookies.rs"]
mod cookies;
#[path = "auth/csrf.rs"]
mod csrf;
#[path = "auth/headers.rs"]
mod headers;
#[path = "auth/login.rs"]
mod login;
#[path = "auth/observability.rs"]
mod observability;
#[path = "auth/persistence.rs"]
mod persistence;
#[path = "auth/redirects.rs"]
mod redirects;
#[path = "auth/rejections.rs"]
mod rejections;
#[path = "auth/revocation.rs"]
mod revocation;
#[path = "auth/rotation.rs"]
mod rotation;
#[path = "auth/throttle.rs"]
mod throttle;

/// The admin API bearer token of [`setup`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The password every test user gets (longer than the default minimum of 12).
pub const PASSWORD: &str = "correct horse battery staple";
/// The session cookie's name when `session.secure = false`.
pub const COOKIE: &str = "portcullis_session";

/// A plain-HTTP session cookie and the admin API on, no routes.
pub fn setup() -> Setup {
    Setup::new()
        .session("secure = false")
        .admin(&format!("token = \"{ADMIN_TOKEN}\""))
}

/// [`setup`] with `/p/*` protected (any valid session) and `/pub/*` public,
/// both to `echo`.
pub fn protected(echo: &Echo) -> Setup {
    setup()
        .route(route("private", "/p/*", &echo.url()).authenticated())
        .route(route("public", "/pub/*", &echo.url()))
}

/// A client with a cookie jar, like a browser (never follows redirects).
pub fn browser() -> reqwest::Client {
    client_builder()
        .cookie_store(true)
        .build()
        .expect("a reqwest client")
}

/// Calls the admin API with the bearer token; returns the status and the JSON
/// body (`Null` when empty).
pub async fn admin(
    gateway: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, gateway.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("an admin API request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("an admin API body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
    };
    (status, body)
}

/// Creates a user through the admin API, with [`PASSWORD`].
pub async fn add_user(gateway: &Gateway, name: &str, roles: &[&str], permissions: &[&str]) {
    let (status, body) = admin(
        gateway,
        Method::POST,
        "/admin/api/users",
        Some(json!({
            "username": name,
            "password": PASSWORD,
            "roles": roles,
            "permissions": permissions,
        })),
    )
    .await;
    assert_eq!(status, 201, "creating user {name}: {body}");
}

/// A JSON login with a client that keeps no cookies.
pub async fn login(gateway: &Gateway, username: &str, password: &str) -> Response {
    client()
        .post(gateway.url("/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("the login request")
}

/// Logs in with [`PASSWORD`] and returns the session token from `Set-Cookie`.
pub async fn login_token(gateway: &Gateway, username: &str) -> String {
    let response = login(gateway, username, PASSWORD).await;
    assert_eq!(response.status(), 200, "login as {username}");
    session_cookie(&response, COOKIE)
        .expect("a session cookie")
        .value
}

/// Logs in and returns the token and the JSON body.
pub async fn login_body(gateway: &Gateway, username: &str) -> (String, Value) {
    let response = login(gateway, username, PASSWORD).await;
    assert_eq!(response.status(), 200, "login as {username}");
    let token = session_cookie(&response, COOKIE)
        .expect("a session cookie")
        .value;
    (token, json(response).await)
}

/// A request carrying `token` as the session cookie (no jar involved).
pub fn with_token(method: Method, url: &str, token: &str) -> reqwest::RequestBuilder {
    client()
        .request(method, url)
        .header("cookie", format!("{COOKIE}={token}"))
}

/// GETs `path` on the proxy with `token` as the session cookie.
pub async fn get_with(gateway: &Gateway, path: &str, token: &str) -> Response {
    with_token(Method::GET, &gateway.url(path), token)
        .send()
        .await
        .expect("the request")
}

/// The status and JSON `error` code of a response the gateway made itself.
pub async fn error_of(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body = json(response).await;
    let code = body["error"].as_str().unwrap_or_default().to_owned();
    (status, code)
}

/// The status of `GET path` with `token`, and the error code if any.
pub async fn outcome(gateway: &Gateway, path: &str, token: &str) -> (u16, String) {
    let response = get_with(gateway, path, token).await;
    if response.status() == 200 {
        return (200, String::new());
    }
    error_of(response).await
}

/// One parsed `Set-Cookie` header.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Attributes in order, names as written, values if any.
    pub attributes: Vec<(String, Option<String>)>,
    pub raw: String,
}

impl SetCookie {
    pub fn parse(raw: &str) -> SetCookie {
        let mut parts = raw.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .and_then(|p| p.split_once('='))
            .unwrap_or_else(|| panic!("a name=value pair in {raw:?}"));
        let attributes = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
                None => (p.to_owned(), None),
            })
            .collect();
        SetCookie {
            name: name.to_owned(),
            value: value.trim_matches('"').to_owned(),
            attributes,
            raw: raw.to_owned(),
        }
    }

    /// The attribute (case-insensitive name): `None` if absent,
    /// `Some(None)` for a flag, `Some(Some(v))` for a value.
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn has_flag(&self, name: &str) -> bool {
        self.attribute(name) == Some(None)
    }

    /// `Max-Age` in seconds.
    pub fn max_age(&self) -> Option<i64> {
        self.attribute("max-age")
            .flatten()
            .map(|v| v.parse().expect("a numeric Max-Age"))
    }
}

/// Every `Set-Cookie` of a response.
pub fn set_cookies(response: &Response) -> Vec<SetCookie> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| SetCookie::parse(v.to_str().expect("an ASCII Set-Cookie")))
        .collect()
}

/// The `Set-Cookie` for the cookie `name`, if the response has one.
pub fn session_cookie(response: &Response, name: &str) -> Option<SetCookie> {
    set_cookies(response).into_iter().find(|c| c.name == name)
}

/// The headers the echo upstream received, by lower-case name.
pub fn echoed<'a>(body: &'a Value, name: &str) -> Vec<&'a str> {
    body["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Replaces a character of `token` in the middle with another token character.
pub fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn routes_deny_by_default_without_a_session() {
    let echo = Echo::start();
    let gateway =
        Gateway::start(Setup::new().route(route("private", "/p/*", &echo.url()).authenticated()));
    let response = client().get(gateway.url("/p/x")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(json(response).await["error"], "missing_token");
    assert_eq!(echo.hits(), 0);
}
