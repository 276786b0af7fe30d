//! Forwarding: what reaches the upstream, what comes back, failures, streaming,
//! connection reuse and request ids.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use serde_json::Value;

use crate::common::http::Outcome;
use crate::common::upstream::{GZIP_BYTES, UPSTREAM_COOKIES};
use crate::common::{
    client, closed_port_url, echo_gateway, get_json, json, route, Echo, Fixed, Gateway, Hanging,
    RawConn, Setup,
};
use crate::routing::assert_error_body;

/// The values the echo upstream received for a header.
fn received<'a>(echo_body: &'a Value, name: &str) -> Vec<&'a str> {
    echo_body["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn method_path_query_and_body_are_kept() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let response = client()
        .put(gateway.url("/p/some/path?a=1&b=two%20x&a=3"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["path"], "/p/some/path");
    assert_eq!(body["query"], "a=1&b=two%20x&a=3");
    assert_eq!(body["body_bytes"], 5);

    for method in ["DELETE", "PATCH", "OPTIONS", "POST"] {
        let response = client()
            .request(method.parse().unwrap(), gateway.url("/p/m"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(json(response).await["method"], method);
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_end_to_end_headers_kept() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    conn.send(
        b"GET /p/headers HTTP/1.1\r\n\
          Host: gateway.test\r\n\
          Connection: close, X-Drop-Me\r\n\
          X-Drop-Me: must-not-arrive\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Trailer: X-Checksum\r\n\
          Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n\
          Proxy-Connection: keep-alive\r\n\
          Upgrade: h2c\r\n\
          X-Multi: one\r\n\
          X-Multi: two\r\n\
          Accept: text/plain\r\n\
          X-Custom: kept\r\n\
          \r\n",
    )
    .unwrap();
    let response = conn.read_response().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    for dropped in [
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            received(&body, dropped).is_empty(),
            "{dropped} reached the upstream: {}",
            body["headers"]
        );
    }
    let connection = received(&body, "connection").join(",").to_ascii_lowercase();
    assert!(
        !connection.contains("x-drop-me") && !connection.contains("close"),
        "the client's Connection header reached the upstream: {connection}"
    );
    assert_eq!(received(&body, "x-multi"), ["one", "two"]);
    assert_eq!(received(&body, "x-custom"), ["kept"]);
    assert_eq!(received(&body, "accept"), ["text/plain"]);
}

#[tokio::test]
async fn hop_by_hop_headers_from_the_upstream_are_dropped() {
    let upstream = Fixed::start(
        b"HTTP/1.1 200 OK\r\n\
          Content-Length: 2\r\n\
          Connection: keep-alive, X-Hop-Named\r\n\
          X-Hop-Named: must-not-arrive\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Authenticate: Basic realm=\"upstream\"\r\n\
          Trailer: X-Checksum\r\n\
          X-End-To-End: kept\r\n\
          X-Repeated: 1\r\n\
          X-Repeated: 2\r\n\
          \r\n\
          ok",
    );
    let gateway = Gateway::start(Setup::new().route(route("fixed", "/f/*", &upstream.url())));
    let response = client().get(gateway.url("/f/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    for dropped in ["x-hop-named", "keep-alive", "proxy-authenticate", "trailer"] {
        assert!(
            headers.get(dropped).is_none(),
            "{dropped} reached the client: {headers:?}"
        );
    }
    let connection = headers
        .get_all("connection")
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",");
    assert!(!connection.contains("x-hop-named"), "{connection}");
    assert_eq!(headers["x-end-to-end"], "kept");
    let repeated: Vec<&str> = headers
        .get_all("x-repeated")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(repeated, ["1", "2"]);
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let response = client()
        .get(gateway.url("/p/fwd"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .header("via", "1.0 corp-proxy")
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = json(response).await;
    assert_eq!(received(&body, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(received(&body, "x-forwarded-proto"), ["http"]);
    let host = gateway.proxy_addr().to_string();
    assert_eq!(received(&body, "x-forwarded-host"), [host.as_str()]);
    let via = received(&body, "via").join(", ");
    assert!(via.contains("portcullis"), "via: {via}");
    assert!(
        via.contains("corp-proxy"),
        "an existing Via was lost: {via}"
    );
    assert_eq!(gateway.access_line(&request_id)["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_extended() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .server("trusted_proxies = [\"127.0.0.1/32\"]")
            .route(route("echo", "/p/*", &echo.url())),
    );
    let response = client()
        .get(gateway.url("/p/fwd"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "public.example.test")
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = json(response).await;
    assert_eq!(received(&body, "x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
    assert_eq!(received(&body, "x-forwarded-proto"), ["https"]);
    assert_eq!(received(&body, "x-forwarded-host"), ["public.example.test"]);
    assert_eq!(gateway.access_line(&request_id)["client_ip"], "6.6.6.6");
}

#[tokio::test]
async fn host_is_rewritten_to_the_upstream_unless_preserved() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("rewrite", "/p/*", &echo.url()))
            .route(route("keep", "/k/*", &echo.url()).extra("preserve_host = true")),
    );
    let body = json(
        client()
            .get(gateway.url("/p/x"))
            .header("host", "api.example.test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let authority = echo.addr().to_string();
    assert_eq!(received(&body, "host"), [authority.as_str()]);
    assert_eq!(received(&body, "x-forwarded-host"), ["api.example.test"]);

    let body = json(
        client()
            .get(gateway.url("/k/x"))
            .header("host", "api.example.test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(received(&body, "host"), ["api.example.test"]);
}

#[tokio::test]
async fn upstream_status_headers_cookies_and_body_pass_through() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    for code in [201u16, 404, 418, 503] {
        let response = client()
            .get(gateway.url(&format!("/p/status/{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(response.headers()["x-upstream-custom"], "kept");
        let cookies: Vec<&str> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, UPSTREAM_COOKIES);
        assert_eq!(
            response.text().await.unwrap(),
            format!("upstream says {code}")
        );
    }
    let response = client()
        .get(gateway.url("/p/status/204"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["x-upstream-custom"], "kept");
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn redirects_are_passed_to_the_client_not_followed() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let response = client()
        .get(gateway.url("/p/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/elsewhere");
    assert_eq!(response.text().await.unwrap(), "see /elsewhere");
    assert_eq!(echo.hits(), 1, "the gateway followed the redirect");
}

#[tokio::test]
async fn compressed_bodies_pass_through_byte_for_byte() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let response = client()
        .get(gateway.url("/p/gzip"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.bytes().await.unwrap().as_ref(), GZIP_BYTES);
    let body = json(
        client()
            .get(gateway.url("/p/what-arrived"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(received(&body, "accept-encoding"), ["gzip"]);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let gateway = Gateway::start(
        Setup::new()
            .upstream("connect_timeout = \"2s\"")
            .route(route("down", "/down/*", &closed_port_url())),
    );
    let response = client().get(gateway.url("/down/x")).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = json(response).await;
    assert_eq!(status, 502);
    assert_error_body(status, &headers, &body, "bad_gateway");
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_after_the_route_timeout() {
    let hanging = Hanging::start();
    let gateway = Gateway::start(
        Setup::new().route(route("hang", "/hang/*", &hanging.url()).extra("timeout = \"300ms\"")),
    );
    let response = client().get(gateway.url("/hang/x")).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = json(response).await;
    assert_eq!(status, 504);
    assert_error_body(status, &headers, &body, "gateway_timeout");
}

#[tokio::test]
async fn large_bodies_stream_in_both_directions_without_buffering() {
    const UPLOAD: u64 = 64 * 1024 * 1024;
    const DOWNLOAD: u64 = 256 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .server("max_body_bytes = \"1GiB\"")
            .route(route("echo", "/p/*", &echo.url())),
    );

    let chunks = (UPLOAD as usize) / CHUNK;
    let stream = futures_util::stream::iter(
        (0..chunks).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[7u8; CHUNK]))),
    );
    let response = client()
        .post(gateway.url("/p/upload"))
        .header("x-request-id", "big-upload")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(received(&body, "transfer-encoding"), ["chunked"]);
    assert_eq!(body["body_bytes"], UPLOAD);

    let response = client()
        .get(gateway.url(&format!("/p/bytes?n={DOWNLOAD}")))
        .header("x-request-id", "big-download")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received_bytes = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received_bytes += chunk.expect("a body chunk").len() as u64;
    }
    assert_eq!(received_bytes, DOWNLOAD);
    assert_eq!(gateway.access_line("big-upload")["bytes_in"], UPLOAD);
    assert_eq!(gateway.access_line("big-download")["bytes_out"], DOWNLOAD);

    let peak = gateway.peak_rss();
    eprintln!("gateway peak RSS: {} MiB", peak / 1024 / 1024);
    assert!(
        peak < 200 * 1024 * 1024,
        "the gateway's peak RSS was {} MiB",
        peak / 1024 / 1024
    );
}

#[tokio::test]
async fn sized_bodies_keep_their_length() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let response = client()
        .post(gateway.url("/p/upload"))
        .body(vec![1u8; 300_000])
        .send()
        .await
        .unwrap();
    let body = json(response).await;
    assert_eq!(received(&body, "content-length"), ["300000"]);
    assert_eq!(body["body_bytes"], 300_000);

    let response = client()
        .get(gateway.url("/p/bytes?n=1000000&sized=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-length"], "1000000");
    assert_eq!(response.bytes().await.unwrap().len(), 1_000_000);
}

#[tokio::test]
async fn head_answers_keep_the_upstream_content_length() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let response = client()
        .head(gateway.url("/p/bytes?n=12345&sized=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "12345");
    assert!(response.bytes().await.unwrap().is_empty());

    // On the wire: the head and nothing after it, and the connection stays usable.
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    conn.send(b"HEAD /p/bytes?n=777&sized=1 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .unwrap();
    let crate::common::http::Outcome::Response(head) = conn.read_outcome_for(true).unwrap() else {
        panic!("no answer to HEAD");
    };
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("777"));
    conn.send(b"GET /p/after-head HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .unwrap();
    let next = conn.read_response().unwrap();
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["path"], "/p/after-head");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let client = client();
    let mut ports: HashMap<u64, usize> = HashMap::new();
    for i in 0..6 {
        let response = client
            .get(gateway.url(&format!("/p/pool/{i}")))
            .send()
            .await
            .unwrap();
        let body = json(response).await;
        *ports
            .entry(body["peer_port"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert!(
        ports.values().any(|&n| n > 1),
        "every request used a new upstream connection: {ports:?}"
    );
}

#[tokio::test]
async fn a_valid_request_id_is_kept_end_to_end() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    let id = "itest-Req_42.abc:XYZ";
    let response = client()
        .get(gateway.url("/p/id"))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], id);
    let body = json(response).await;
    assert_eq!(received(&body, "x-request-id"), [id]);
    assert_eq!(gateway.access_line(id)["request_id"], id);

    let longest = "b".repeat(128);
    let response = client()
        .get(gateway.url("/p/id"))
        .header("x-request-id", &longest)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], longest.as_str());
}

#[tokio::test]
async fn an_invalid_request_id_is_replaced() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    for bad in ["a".repeat(129), "has space".to_owned()] {
        let response = client()
            .get(gateway.url("/p/id"))
            .header("x-request-id", &bad)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let body = json(response).await;
        assert_eq!(received(&body, "x-request-id"), [id.as_str()]);
        gateway.access_line(&id);
    }
    // Gateway-made answers carry a generated id too.
    let (status, body) = get_json(&gateway.url("/none")).await;
    assert_eq!(status, 404);
    assert_eq!(body["correlation_id"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn header_rules_change_the_request_and_the_response_but_never_identity() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new().route(
            route("ruled", "/p/*", &echo.url())
                .extra(r#"request_headers = { remove = ["X-Debug"], set = { "X-Env" = "prod", "X-Trace" = "$request_id@$route" }, add = { "X-From" = "$client_ip" } }"#)
                .extra(r#"response_headers = { remove = ["X-Upstream-Custom"], set = { "X-Served-By" = "gw/$route" }, add = { "X-User" = "[$user]" } }"#),
        ),
    );
    let send = |path: &str, id: &str| {
        client()
            .get(gateway.url(path))
            .header("x-request-id", id)
            .header("x-debug", "secret")
            .header("x-env", "dev")
            .header("x-from", "client-said")
            .send()
    };
    let response = send("/p/status/200", "rules-1").await.unwrap();
    assert_eq!(response.status(), 200);
    // The response: removed, set and added, variables filled in.
    assert!(response.headers().get("x-upstream-custom").is_none());
    assert_eq!(response.headers()["x-served-by"], "gw/ruled");
    assert_eq!(response.headers()["x-user"], "[]", "no session: empty");

    // The request the upstream received.
    let body = json(send("/p/echo", "rules-2").await.unwrap()).await;
    assert!(received(&body, "x-debug").is_empty());
    assert_eq!(received(&body, "x-env"), ["prod"]);
    assert_eq!(received(&body, "x-trace"), ["rules-2@ruled"]);
    assert_eq!(received(&body, "x-from"), ["client-said", "127.0.0.1"]);

    // Identity, framing and the request id are out of reach, with the key path.
    let failed = crate::common::Launch::new(Setup::new().route(
        route("bad", "/b/*", &echo.url())
            .extra(r#"request_headers = { set = { "X-User-Id" = "admin", "Content-Length" = "0" }, remove = ["X-Request-Id"] }"#)
            .extra(r#"response_headers = { add = { "X-Ok" = "$secret" } }"#),
    ))
    .expect_failure();
    for key in [
        "routes[0].request_headers.set.X-User-Id",
        "routes[0].request_headers.set.Content-Length",
        "routes[0].request_headers.remove[0]",
        "routes[0].response_headers.add.X-Ok",
    ] {
        assert!(
            failed.stderr.contains(key),
            "missing {key} in {}",
            failed.stderr
        );
    }
}

/// A raw GET of `/p/x` through a gateway in front of `upstream` (route
/// timeout `timeout`): the answer, and whether the gateway then closed the
/// connection.
fn raw_get_through(upstream: &str, timeout: &str) -> (crate::common::http::RawResponse, bool) {
    let gateway = Gateway::start(
        Setup::new()
            .route(route("chaos", "/p/*", upstream).extra(&format!("timeout = \"{timeout}\""))),
    );
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    conn.send(b"GET /p/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .unwrap();
    let response = conn.read_response().unwrap();
    (response, conn.is_closed())
}

#[test]
fn an_upstream_cut_mid_body_is_never_passed_on_as_complete() {
    let upstream = Fixed::start(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    let gateway = Gateway::start(Setup::new().route(route("chaos", "/p/*", &upstream.url())));
    for _ in 0..5 {
        let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
        conn.send(b"GET /p/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            .unwrap();
        // The cut may come before the head went out (the connection closes
        // with no answer) or after (a head promising 100 bytes, then fewer
        // and the connection closed): a short read either way, never a
        // complete-looking answer.
        match conn.read_outcome().unwrap() {
            Outcome::Closed => {}
            Outcome::Response(response) => {
                assert_eq!(response.header("content-length"), Some("100"));
                assert!(response.body.len() < 100, "{} bytes", response.body.len());
                assert!(conn.is_closed());
            }
        }
    }
}

#[test]
fn malformed_upstream_framing_is_a_502() {
    let upstream = Fixed::start(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\nhello");
    let (response, _) = raw_get_through(&upstream.url(), "5s");
    assert_eq!(response.status, 502);
}

#[test]
fn an_upstream_stalling_after_its_headers_is_cut_after_the_route_timeout() {
    // Sends its head and ten bytes of a hundred, then holds the connection
    // for a minute.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = [0u8; 4096];
                let _ = std::io::Read::read(&mut conn, &mut head);
                let _ = std::io::Write::write_all(
                    &mut conn,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                );
                std::thread::sleep(std::time::Duration::from_secs(60));
            });
        }
    });
    let started = std::time::Instant::now();
    let (response, closed) = raw_get_through(&url, "300ms");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"0123456789");
    assert!(closed, "the stalled stream is cut");
    // Cut by the gateway, not by the upstream giving up a minute later.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
