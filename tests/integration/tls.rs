//! TLS on the proxy listener (HTTP/1.1 and HTTP/2 by ALPN), bad certificate
//! files, and untrusted `https://` upstreams.

use reqwest::Version;
use serde_json::Value;

use crate::common::gateway::command;
use crate::common::http::{metrics, sample};
use crate::common::tls::{self_signed, TestCert};
use crate::common::{client_builder, eventually, json, route, Echo, Gateway, Launch, Setup, SOON};

fn tls_setup(echo: &Echo) -> Setup {
    Setup::new()
        .server("tls_cert = \"$DIR/cert.pem\"")
        .server("tls_key = \"$DIR/key.pem\"")
        .route(route("echo", "/p/*", &echo.url()))
}

/// Starts a TLS gateway with a fresh self-signed certificate for localhost.
fn tls_gateway(echo: &Echo) -> (Gateway, TestCert) {
    let cert = self_signed();
    let launch = Launch::new(tls_setup(echo));
    cert.write(launch.dir());
    (launch.start(), cert)
}

/// A client trusting `cert`, with `localhost` pinned to the gateway.
fn https_client(gateway: &Gateway, cert: &TestCert, http1_only: bool) -> reqwest::Client {
    let mut builder = client_builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert.reqwest_root())
        .resolve("localhost", gateway.proxy_addr());
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn https_url(gateway: &Gateway, path: &str) -> String {
    format!("https://localhost:{}{}", gateway.proxy_addr().port(), path)
}

fn received<'a>(body: &'a Value, name: &str) -> Vec<&'a str> {
    body["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_proxy_serves_https_over_http1_and_http2() {
    let echo = Echo::start();
    let (gateway, cert) = tls_gateway(&echo);
    gateway.wait_for_log(
        |v| v["msg"] == "portcullis started" && v["tls"] == true,
        SOON,
    );

    let response = https_client(&gateway, &cert, true)
        .get(https_url(&gateway, "/p/h1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    let body = json(response).await;
    assert_eq!(received(&body, "x-forwarded-proto"), ["https"]);

    let response = https_client(&gateway, &cert, false)
        .get(https_url(&gateway, "/p/h2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    let body = json(response).await;
    assert_eq!(body["path"], "/p/h2");
    assert_eq!(received(&body, "x-forwarded-proto"), ["https"]);

    // Plain HTTP on the TLS port is not served.
    let plain = crate::common::client()
        .get(gateway.url("/p/plain"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn http2_requests_get_x_forwarded_host_and_preserved_host() {
    let echo = Echo::start();
    let cert = self_signed();
    let launch = Launch::new(
        tls_setup(&echo).route(route("keep", "/k/*", &echo.url()).extra("preserve_host = true")),
    );
    cert.write(launch.dir());
    let gateway = launch.start();
    let client = https_client(&gateway, &cert, false);
    let host = format!("localhost:{}", gateway.proxy_addr().port());

    let response = client
        .get(https_url(&gateway, "/p/h2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = json(response).await;
    assert_eq!(received(&body, "x-forwarded-host"), [host.as_str()]);

    let response = client
        .get(https_url(&gateway, "/k/h2"))
        .send()
        .await
        .unwrap();
    let body = json(response).await;
    assert_eq!(received(&body, "host"), [host.as_str()]);
}

#[tokio::test]
async fn http2_streamed_request_bodies_are_forwarded() {
    let echo = Echo::start();
    let (gateway, cert) = tls_gateway(&echo);
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![5u8; 10_000]))),
    );
    let response = https_client(&gateway, &cert, false)
        .post(https_url(&gateway, "/p/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["body_bytes"], 100_000);
}

#[tokio::test]
async fn http2_sized_request_bodies_are_forwarded() {
    let echo = Echo::start();
    let (gateway, cert) = tls_gateway(&echo);
    let response = https_client(&gateway, &cert, false)
        .post(https_url(&gateway, "/p/upload"))
        .body(vec![5u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = json(response).await;
    assert_eq!(body["body_bytes"], 100_000);
}

#[test]
fn a_garbage_certificate_fails_check_and_serve() {
    let echo = Echo::start();
    let launch = Launch::new(tls_setup(&echo));
    std::fs::write(launch.dir().join("cert.pem"), "this is not a certificate\n").unwrap();
    std::fs::write(launch.dir().join("key.pem"), self_signed().key_pem).unwrap();

    let config = launch.dir().join("check.toml");
    std::fs::write(&config, tls_setup(&echo).render(launch.dir())).unwrap();
    let output = command()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.tls_cert"), "{stderr}");

    let exited = launch.expect_failure();
    assert!(!exited.status.success());
    assert!(
        exited.stderr.contains("server.tls_cert"),
        "{}",
        exited.stderr
    );
}

#[tokio::test]
async fn an_untrusted_https_upstream_is_a_502() {
    let upstream = Echo::start_tls(self_signed().server_config());
    let gateway = Gateway::start(Setup::new().route(route("secure", "/s/*", &upstream.url())));
    let response = crate::common::client()
        .get(gateway.url("/s/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(json(response).await["error"], "bad_gateway");
    assert_eq!(upstream.hits(), 0);
    let url = gateway.admin_url("/metrics");
    eventually("a tls upstream error to be counted", SOON, || async {
        let text = metrics(&url).await;
        sample(
            &text,
            "portcullis_upstream_errors_total",
            &[("route", "secure"), ("kind", "tls")],
        )
        .filter(|n| *n == 1.0)
    })
    .await;
}

/// The console over an admin listener with TLS: its cookie is `__Host-`
/// prefixed and `Secure`, and a change is accepted only from the `https`
/// origin — `http://` on the same host and port is another origin.
#[tokio::test]
async fn the_console_over_tls_has_a_host_prefixed_secure_cookie() {
    let cert = self_signed();
    let launch = Launch::new(
        crate::auth::setup()
            .admin("tls_cert = \"$DIR/cert.pem\"")
            .admin("tls_key = \"$DIR/key.pem\""),
    );
    cert.write(launch.dir());
    let gateway = launch.start();
    let client = client_builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert.reqwest_root())
        .resolve("localhost", gateway.admin_addr())
        .build()
        .unwrap();
    let origin = format!("https://localhost:{}", gateway.admin_addr().port());
    let url = |path: &str| format!("{origin}/admin/api{path}");

    let created = client
        .post(url("/users"))
        .bearer_auth(crate::auth::ADMIN_TOKEN)
        .json(&serde_json::json!({
            "username": "tls-admin",
            "password": crate::auth::PASSWORD,
            "roles": ["admin"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let login = client
        .post(url("/auth/login"))
        .header("origin", &origin)
        .json(&serde_json::json!({"username": "tls-admin", "password": crate::auth::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    let (name, token) = attributes[0].split_once('=').unwrap();
    assert_eq!(name, "__Host-portcullis_console", "{set_cookie}");
    for wanted in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            attributes.contains(&wanted),
            "{wanted} missing: {set_cookie}"
        );
    }
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain="),
        "{set_cookie}"
    );
    let csrf = json(login).await["csrf_token"].as_str().unwrap().to_owned();
    let cookie = format!("{name}={token}");

    let me = |origin: &str| {
        client
            .post(url("/auth/logout"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("origin", origin)
    };
    let plain_origin = format!("http://localhost:{}", gateway.admin_addr().port());
    let refused = me(&plain_origin).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(json(refused).await["error"], "csrf_rejected");
    let accepted = me(&origin).send().await.unwrap();
    assert!(accepted.status().is_success(), "{}", accepted.status());
    // Logged out: the same cookie no longer opens anything.
    let after = client
        .get(url("/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}
