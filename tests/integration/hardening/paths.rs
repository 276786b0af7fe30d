//! Paths mean the same thing to the gateway and to every upstream: dot
//! segments with `;` parameters are refused, and case, `;` parameters and a
//! trailing slash never move a request from a protected route to another.

use crate::common::http::RawResponse;
use crate::common::{raw_request, route, Echo, Gateway, Launch, Setup};

/// The shipped example configuration, its upstreams replaced by `echo`, on
/// ephemeral ports and its own storage.
fn example_gateway(echo: &Echo) -> Gateway {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/portcullis.toml"
    ))
    .expect("the example configuration");
    let text = text
        .replace("http://127.0.0.1:9001", &echo.url())
        .replace("http://127.0.0.1:9002", &echo.url());
    let launch = Launch::new(Setup::file(&text));
    let storage = launch.dir().join("data").display().to_string();
    launch
        .env("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS_ADMIN__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS_STORAGE__PATH", &storage)
        .start()
}

fn get(gateway: &Gateway, target: &str) -> RawResponse {
    raw_request(
        gateway.proxy_addr(),
        &format!(
            "GET {target} HTTP/1.1\r\nHost: gateway.test\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// The route the gateway logged for the request it answered with `response`.
fn logged_route(gateway: &Gateway, response: &RawResponse) -> String {
    let id = response.header("x-request-id").expect("a request id");
    gateway.access_line(id)["route"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn dot_segments_with_parameters_are_refused_in_every_spelling() {
    let echo = Echo::start();
    let gateway = example_gateway(&echo);
    for target in [
        "/status/..;/api/users/me",
        "/status/..;jsessionid=x/api/users/me",
        "/status/.;/x",
        "/status/%2e%2e;/api/users/me",
        "/status/%2E%2E;x/api/users/me",
        "/status/..%3b/api/users/me",
        "/status/..%3B/billing/invoices",
        "/status/.%2e%3Bx/api/users/1",
    ] {
        let response = get(&gateway, target);
        assert_eq!(response.status, 400, "{target}: {}", response.text());
        assert_eq!(response.json()["error"], "bad_request", "{target}");
    }
    assert_eq!(echo.hits(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn no_spelling_of_a_protected_path_is_authorised_by_another_route() {
    let echo = Echo::start();
    let gateway = example_gateway(&echo);
    // Every spelling an upstream could read as a protected route's path is
    // matched by that route (and so refused without a session).
    let protected = [
        ("/api/users/me", "users-me"),
        ("/API/Users/ME", "users-me"),
        ("/api/users/me/", "users-me"),
        ("/api/users/me;v=2", "users-me"),
        ("/api;x=1/users/me", "users-me"),
        ("/api/;x/users/me", "users-me"),
        ("/status;x/../api/users/me", "users-me"),
        ("/status/%2e%2e/api/users/me", "users-me"),
        ("/api/users/42", "users"),
        ("/api/users/42/", "users"),
        ("/Api/USERS/42;jsessionid=abc", "users"),
        ("/billing", "billing"),
        ("/billing/", "billing"),
        ("/BILLING/invoices/7", "billing"),
        ("/billing;a=b/invoices", "billing"),
    ];
    for (target, route_id) in protected {
        let response = get(&gateway, target);
        assert_eq!(response.status, 401, "{target}: {}", response.text());
        assert_eq!(logged_route(&gateway, &response), route_id, "{target}");
    }
    // The public route answers for its own spellings only. (The echo
    // upstream reads `/status/` as `/status/{code}`, hence no status check.)
    for target in ["/status", "/STATUS", "/status/", "/status;v=1"] {
        let response = get(&gateway, target);
        assert_ne!(response.status, 401, "{target}: {}", response.text());
        assert_eq!(logged_route(&gateway, &response), "status", "{target}");
    }
    assert_eq!(echo.hits(), 4, "only the public route reached the upstream");
}

#[tokio::test]
async fn a_public_catch_all_never_serves_a_protected_path() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("public", "/*", &echo.url()))
            .route(route("admin", "/admin/*", &echo.url()).authenticated())
            .route(route("secret", "/api/secret", &echo.url()).authenticated())
            .route(route("bang", "/a!b/*", &echo.url()).authenticated())
            .route(route("cafe", "/café/*", &echo.url()).authenticated()),
    );
    for target in [
        // Upstreams decode escapes the gateway keeps: so does the match.
        "/a%21b/x",
        "/A%21B",
        "/a!b/x",
        "/caf%C3%A9/menu",
        "/CAF%c3%a9",
        "/admin",
        "/ADMIN/x",
        "/Admin;x=1/users",
        "/admin/;x/users",
        "/api/secret/",
        "/api/SECRET",
        "/api;v=1/secret",
        "/api//secret",
        "/public/../admin/x",
    ] {
        let response = get(&gateway, target);
        assert_eq!(response.status, 401, "{target}: {}", response.text());
    }
    assert_eq!(echo.hits(), 0);
    // What is forwarded is the normalised path, parameters and case kept.
    let response = get(&gateway, "/Files;v=1/Report.PDF");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["path"], "/Files;v=1/Report.PDF");
}
