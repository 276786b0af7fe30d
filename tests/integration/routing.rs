//! Route matching, the gateway's own 404/405 answers and path normalisation.

use serde_json::Value;

use crate::common::http::RawResponse;
use crate::common::{client, get_json, json, raw_request, route, Echo, Gateway, Setup};

/// `GET target` over a raw connection, so the path reaches the gateway exactly as written.
pub fn raw_get(gateway: &Gateway, target: &str) -> RawResponse {
    raw_request(
        gateway.proxy_addr(),
        &format!("GET {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"),
    )
}

/// The path the echo upstream saw for `path` through the gateway.
async fn upstream_path(gateway: &Gateway, path: &str) -> String {
    let (status, body) = get_json(&gateway.url(path)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["path"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn exact_beats_parameter_beats_prefix_regardless_of_order() {
    let echo = Echo::start();
    let base = |name: &str| format!("{}/{name}", echo.url());
    let gateway = Gateway::start(
        Setup::new()
            .route(route("prefix", "/api/*", &base("prefix")))
            .route(route("param", "/api/users/{id}", &base("param")))
            .route(route("exact", "/api/users/me", &base("exact"))),
    );
    assert_eq!(
        upstream_path(&gateway, "/api/users/me").await,
        "/exact/api/users/me"
    );
    assert_eq!(
        upstream_path(&gateway, "/api/users/42").await,
        "/param/api/users/42"
    );
    assert_eq!(
        upstream_path(&gateway, "/api/users/42/posts").await,
        "/prefix/api/users/42/posts"
    );
    assert_eq!(upstream_path(&gateway, "/api").await, "/prefix/api");
}

#[tokio::test]
async fn the_longest_prefix_wins() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("short", "/a/*", &format!("{}/short", echo.url())))
            .route(route("long", "/a/b/*", &format!("{}/long", echo.url()))),
    );
    assert_eq!(upstream_path(&gateway, "/a/b/c").await, "/long/a/b/c");
    assert_eq!(upstream_path(&gateway, "/a/b").await, "/long/a/b");
    assert_eq!(upstream_path(&gateway, "/a/bc").await, "/short/a/bc");
    assert_eq!(upstream_path(&gateway, "/a/x/b/c").await, "/short/a/x/b/c");
}

#[tokio::test]
async fn equally_specific_routes_go_to_the_first_declared() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("first", "/t/*", &format!("{}/first", echo.url())))
            .route(route("second", "/t/*", &format!("{}/second", echo.url()))),
    );
    assert_eq!(upstream_path(&gateway, "/t/x").await, "/first/t/x");
}

#[tokio::test]
async fn version_prefixes_reach_their_own_upstreams() {
    let v1 = Echo::named("v1");
    let v2 = Echo::named("v2");
    let gateway = Gateway::start(
        Setup::new()
            .route(route("v1", "/v1/*", &v1.url()))
            .route(route("v2", "/v2/*", &v2.url())),
    );
    let (status, body) = get_json(&gateway.url("/v1/items")).await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("v1")));
    assert_eq!(body["path"], "/v1/items");
    let (status, body) = get_json(&gateway.url("/v2/items/7")).await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("v2")));
    assert_eq!(body["path"], "/v2/items/7");
    let (status, _) = get_json(&gateway.url("/v3/items")).await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&gateway.url("/v10/items")).await;
    assert_eq!(status, 404);
    assert_eq!((v1.hits(), v2.hits()), (1, 1));
}

/// Asserts the shape of a gateway-made error body and returns it.
pub fn assert_error_body(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    code: &str,
) {
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        "application/json",
        "status {status}"
    );
    let object = body.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["correlation_id", "error", "message", "timestamp"]);
    assert_eq!(body["error"], code);
    assert!(!body["message"].as_str().unwrap().is_empty());
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Request-Id header");
    assert_eq!(body["correlation_id"], request_id);
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(timestamp.ends_with('Z'), "{timestamp}");
    humantime::parse_rfc3339(timestamp).expect("an RFC 3339 timestamp");
}

#[tokio::test]
async fn unmatched_paths_get_a_json_404() {
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().route(route("echo", "/p/*", &echo.url())));
    let response = client().get(gateway.url("/nowhere")).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = json(response).await;
    assert_eq!(status, 404);
    assert_error_body(status, &headers, &body, "not_found");
    assert_eq!(echo.hits(), 0);
}

#[tokio::test]
async fn a_method_the_route_does_not_allow_gets_405_with_allow() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new().route(route("ro", "/ro/*", &echo.url()).methods(&["GET", "HEAD"])),
    );
    let response = client()
        .post(gateway.url("/ro/x"))
        .body("data")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = json(response).await;
    assert_eq!(status, 405);
    assert_eq!(headers.get("allow").unwrap(), "GET, HEAD");
    assert_error_body(status, &headers, &body, "method_not_allowed");
    assert_eq!(echo.hits(), 0);
    let (status, _) = get_json(&gateway.url("/ro/x")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_prefix_route() {
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().route(route("public", "/public/*", &echo.url())));
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/x/../../admin",
    ] {
        let response = raw_get(&gateway, target);
        assert_eq!(response.status, 404, "{target}: {}", response.text());
        assert_eq!(response.json()["error"], "not_found", "{target}");
    }
    assert_eq!(
        echo.hits(),
        0,
        "requests escaping /public reached the upstream"
    );

    for (target, normalised) in [
        ("//public/./x", "/public/x"),
        ("/public/a/../b", "/public/b"),
        ("/public/%2e/c", "/public/c"),
    ] {
        let response = raw_get(&gateway, target);
        assert_eq!(response.status, 200, "{target}: {}", response.text());
        assert_eq!(response.json()["path"], normalised, "{target}");
    }
    let paths = echo.paths();
    assert_eq!(paths.len(), 3);
    assert!(
        paths.iter().all(|p| p.starts_with("/public/")),
        "the upstream saw {paths:?}"
    );
}

#[tokio::test]
async fn encoded_slashes_and_backslashes_are_bad_requests() {
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().route(route("public", "/public/*", &echo.url())));
    for target in [
        "/public/a%2fb",
        "/public/a%2Fb",
        "/public/a%5cb",
        "/public/a%zz",
    ] {
        let response = raw_get(&gateway, target);
        assert_eq!(response.status, 400, "{target}: {}", response.text());
        assert_eq!(response.json()["error"], "bad_request", "{target}");
    }
    assert_eq!(echo.hits(), 0);
}

#[tokio::test]
async fn strip_prefix_and_upstream_base_paths() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(
                route("strip", "/api/v1/*", &format!("{}/base", echo.url()))
                    .extra("strip_prefix = true"),
            )
            .route(route("keep", "/keep/*", &format!("{}/base/", echo.url())))
            .route(route("stripped-root", "/root/*", &echo.url()).extra("strip_prefix = true")),
    );
    let (status, body) = get_json(&gateway.url("/api/v1/users?x=1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["path"], "/base/users");
    assert_eq!(body["query"], "x=1");
    assert_eq!(upstream_path(&gateway, "/api/v1").await, "/base/");
    assert_eq!(upstream_path(&gateway, "/keep/x").await, "/base/keep/x");
    assert_eq!(upstream_path(&gateway, "/root/a/b").await, "/a/b");
    assert_eq!(upstream_path(&gateway, "/root").await, "/");
}
