//! What a newcomer tripped on: configuration problems reported once, every
//! answer of the session endpoints uncacheable, and a 502 or 504 that says why.

use crate::auth::{add_user, login, setup, PASSWORD};
use crate::common::{client, closed_port_url, route, Echo, Gateway, Hanging, Launch, Setup, SOON};

/// `portcullis check` on a configuration file with this text.
fn check(text: &str) -> String {
    let launch = Launch::new(Setup::file(text));
    let out = launch.cli(&["check"], None);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_problem_is_reported_once() {
    let stderr = check("[server]\nlisten = \"127.0.0.1:8080\n");
    assert!(stderr.contains("1 configuration problem:"), "{stderr}");
    assert_eq!(stderr.matches("TOML parse error").count(), 1, "{stderr}");
    // A broken policy is reported where it is broken, not again by every
    // route that names it.
    let stderr = check(
        "[rate_limits.p]\nkey = [\"ip\"]\nlimit = \"ten\"\nwindow = \"1m\"\n\
         [[routes]]\nid = \"a\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\nrate_limit = \"p\"\n\
         [[routes]]\nid = \"b\"\npath = \"/b\"\nupstream = \"http://127.0.0.1:1\"\nrate_limit = \"p\"\n",
    );
    assert!(stderr.contains("1 configuration problem:"), "{stderr}");
    assert!(stderr.contains("rate_limits.p.limit"), "{stderr}");
    assert!(!stderr.contains("not a defined policy"), "{stderr}");
    // A policy that really is missing is still named.
    let stderr = check(
        "[[routes]]\nid = \"a\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\nrate_limit = \"nope\"\n",
    );
    assert!(
        stderr.contains("\"nope\" is not a defined policy"),
        "{stderr}"
    );
}

#[tokio::test]
async fn every_answer_of_the_session_endpoints_is_uncacheable() {
    let gateway = Gateway::start(setup().login("max_failures_per_user = 1"));
    add_user(&gateway, "alice", &[], &[]).await;
    login(&gateway, "alice", "wrong password").await;
    let throttled = login(&gateway, "alice", PASSWORD).await;
    let not_allowed = client()
        .get(gateway.url("/auth/logout"))
        .send()
        .await
        .unwrap();
    let bad = client()
        .post(gateway.url("/auth/login"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    let cross_site = client()
        .post(gateway.url("/auth/login"))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let page = client()
        .get(gateway.url("/auth/login"))
        .send()
        .await
        .unwrap();
    for (what, response, status) in [
        ("throttled", throttled, 429),
        ("wrong method", not_allowed, 405),
        ("bad body", bad, 400),
        ("cross-site", cross_site, 403),
        ("login page", page, 200),
    ] {
        assert_eq!(response.status(), status, "{what}");
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "{what} may be cached"
        );
    }
}

#[tokio::test]
async fn a_bad_gateway_says_why() {
    let hanging = Hanging::start();
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("down", "/down/*", &closed_port_url()))
            .route(route("stuck", "/stuck/*", &hanging.url()).extra("timeout = \"300ms\""))
            .route(route("up", "/up/*", &echo.url())),
    );
    for (path, status, kind, reason) in [
        ("/down/x", 502, "connect", "refused"),
        ("/stuck/x", 504, "timeout", "Timeout"),
    ] {
        let response = client().get(gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let line = gateway.access_line(&id);
        assert_eq!(line["upstream_error"], kind, "{line}");
        let warning = gateway.wait_for_log(
            |v| v["msg"] == "upstream request failed" && v["request_id"] == id.as_str(),
            SOON,
        );
        assert_eq!(warning["level"], "warn");
        assert_eq!(warning["kind"], kind);
        assert!(warning["upstream"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"));
        let error = warning["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error}");
    }
    let response = client().get(gateway.url("/up/x")).send().await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(gateway.access_line(&id)["upstream_error"].is_null());
}
