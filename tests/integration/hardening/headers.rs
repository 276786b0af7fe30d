//! Only the gateway speaks for the client: forwarding headers from untrusted
//! peers, header names with `_`, `Expect` and malformed `Host` headers.

use serde_json::Value;

use crate::common::http::{RawConn, RawResponse};
use crate::common::{route, Echo, Gateway, Setup};

/// Sends `head` (request line and headers, no final blank line) plus `body`
/// on a fresh connection and reads the final answer (after any `100 Continue`).
fn send(gateway: &Gateway, head: &str, body: &str) -> RawResponse {
    let mut conn = RawConn::connect(gateway.proxy_addr()).expect("connect");
    conn.send(format!("{head}\r\nConnection: close\r\n\r\n{body}").as_bytes())
        .expect("send");
    loop {
        let response = conn.read_response().expect("a response");
        if response.status >= 200 {
            return response;
        }
    }
}

/// The headers the echo upstream received, by lower-case name.
fn received(response: &RawResponse) -> Value {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["headers"].clone()
}

fn echo_gateway(echo: &Echo, extra: Setup) -> Gateway {
    Gateway::start(extra.route(route("echo", "/p/*", &echo.url())))
}

const SPOOFED: &[(&str, &str)] = &[
    ("Forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/evil"),
    ("X-Forwarded-Server", "evil"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
];

fn spoofing_request() -> String {
    let mut head = String::from("GET /p/x HTTP/1.1\r\nHost: gateway.test");
    for (name, value) in SPOOFED {
        head.push_str(&format!("\r\n{name}: {value}"));
    }
    head
}

#[test]
fn an_untrusted_client_cannot_speak_for_itself() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo, Setup::new());
    let headers = received(&send(&gateway, &spoofing_request(), ""));
    assert_eq!(headers["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(headers["x-real-ip"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(
        headers["x-forwarded-host"],
        serde_json::json!(["gateway.test"])
    );
    for gone in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(headers.get(gone).is_none(), "{gone}: {headers}");
    }
}

#[test]
fn a_trusted_proxy_is_believed() {
    let echo = Echo::start();
    let gateway = echo_gateway(
        &echo,
        Setup::new().server("trusted_proxies = [\"127.0.0.1\"]"),
    );
    let headers = received(&send(&gateway, &spoofing_request(), ""));
    assert_eq!(
        headers["x-forwarded-for"],
        serde_json::json!(["6.6.6.6, 127.0.0.1"])
    );
    assert_eq!(headers["x-real-ip"], serde_json::json!(["6.6.6.6"]));
    assert_eq!(headers["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(
        headers["x-forwarded-host"],
        serde_json::json!(["evil.example"])
    );
    assert_eq!(headers["x-forwarded-port"], serde_json::json!(["443"]));
    assert_eq!(headers["x-forwarded-prefix"], serde_json::json!(["/evil"]));
    assert_eq!(headers["x-forwarded-server"], serde_json::json!(["evil"]));
    assert_eq!(
        headers["forwarded"],
        serde_json::json!(["for=6.6.6.6;host=evil.example;proto=https"])
    );
    // Path overrides are never believed, not even from a trusted proxy.
    assert!(headers.get("x-original-url").is_none());
    assert!(headers.get("x-rewrite-url").is_none());
}

#[test]
fn a_stripped_prefix_is_reported_upstream() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new().route(route("api", "/api/v1/*", &echo.url()).extra("strip_prefix = true")),
    );
    let response = send(&gateway, "GET /API/v1/users HTTP/1.1\r\nHost: g.test", "");
    let body = response.json();
    assert_eq!(body["path"], "/users");
    assert_eq!(
        body["headers"]["x-forwarded-prefix"],
        serde_json::json!(["/API/v1"])
    );
}

#[test]
fn header_names_with_underscores_are_dropped_unless_allowed() {
    let echo = Echo::start();
    let head = "GET /p/x HTTP/1.1\r\nHost: g.test\r\nX_Custom: 1\r\nX-Custom-Dash: 2";
    let gateway = echo_gateway(&echo, Setup::new());
    let headers = received(&send(&gateway, head, ""));
    assert!(headers.get("x_custom").is_none(), "{headers}");
    assert_eq!(headers["x-custom-dash"], serde_json::json!(["2"]));
    let gateway = echo_gateway(
        &echo,
        Setup::new().server("allow_underscore_headers = true"),
    );
    let headers = received(&send(&gateway, head, ""));
    assert_eq!(headers["x_custom"], serde_json::json!(["1"]));
}

#[test]
fn expect_is_answered_by_the_gateway_and_never_forwarded() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo, Setup::new());
    // A bodiless request with Expect used to be a 502 counted as an outage.
    let response = send(
        &gateway,
        "GET /p/x HTTP/1.1\r\nHost: g.test\r\nExpect: 100-continue",
        "",
    );
    let headers = received(&response);
    assert!(headers.get("expect").is_none(), "{headers}");
    // With a body: the gateway's own 100 Continue, then the upstream's answer.
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    conn.send(
        b"POST /p/x HTTP/1.1\r\nHost: g.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let interim = conn.read_response().unwrap();
    assert_eq!(interim.status, 100);
    conn.send(b"hello").unwrap();
    let last = conn.read_response().unwrap();
    assert_eq!(last.status, 200, "{}", last.text());
    let body = last.json();
    assert_eq!(body["body_bytes"], 5);
    assert!(body["headers"].get("expect").is_none());
    // Another expectation is not forwarded either.
    let response = send(
        &gateway,
        "GET /p/x HTTP/1.1\r\nHost: g.test\r\nExpect: something-else",
        "",
    );
    assert!(received(&response).get("expect").is_none());
}

#[test]
fn invalid_or_missing_hosts_are_refused() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo, Setup::new());
    for host in [
        "exa mple.com",
        "example.com/evil",
        "example.com?x",
        "example.com#x",
        "user@example.com",
        "<script>",
        "example.com:80:80",
        "",
    ] {
        let response = send(&gateway, &format!("GET /p/x HTTP/1.1\r\nHost: {host}"), "");
        assert_eq!(response.status, 400, "Host: {host:?}: {}", response.text());
    }
    let twice = send(
        &gateway,
        "GET /p/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test",
        "",
    );
    assert_eq!(twice.status, 400, "{}", twice.text());
    let missing = send(&gateway, "GET /p/x HTTP/1.1", "");
    assert_eq!(missing.status, 400, "{}", missing.text());
    // HTTP/1.0 needs no Host; a valid one with a port is fine.
    assert_eq!(send(&gateway, "GET /p/x HTTP/1.0", "").status, 200);
    assert_eq!(
        send(&gateway, "GET /p/x HTTP/1.1\r\nHost: [::1]:8080", "").status,
        200
    );
    assert_eq!(echo.hits(), 2);
}

#[test]
fn an_absolute_form_target_wins_over_host() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("echo", "/p/*", &echo.url()))
            .route(route("kept", "/kept/*", &echo.url()).extra("preserve_host = true")),
    );
    let response = send(
        &gateway,
        "GET http://target.example/p/x HTTP/1.1\r\nHost: other.example",
        "",
    );
    let headers = received(&response);
    assert_eq!(
        headers["x-forwarded-host"],
        serde_json::json!(["target.example"])
    );
    let response = send(
        &gateway,
        "GET http://target.example:8443/kept/x HTTP/1.1\r\nHost: other.example",
        "",
    );
    assert_eq!(
        received(&response)["host"],
        serde_json::json!(["target.example:8443"])
    );
}
