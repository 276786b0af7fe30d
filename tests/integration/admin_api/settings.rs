//! The effective configuration, the runtime log level, the API's own
//! document and the headers on every admin answer.

use reqwest::Method;
use serde_json::json;

use super::{assert_security_headers, Api, DOCUMENT};
use crate::auth::{setup, ADMIN_TOKEN};
use crate::common::{client, route, Echo, Gateway, SOON};

#[tokio::test]
async fn the_effective_configuration_masks_the_admin_token() {
    let echo = Echo::start();
    let gateway = Gateway::start(setup().route(route("echo", "/p/*", &echo.url())));
    let answer = Api::token(&gateway).get("/config").await.expect(200);
    assert!(!answer.text.contains(ADMIN_TOKEN), "{}", answer.text);
    let config = answer.body;
    assert_eq!(config["admin"]["token"], "********");
    assert_eq!(config["session"]["secure"], false);
    assert_eq!(config["log"]["level"], "info");
    assert_eq!(config["routes"][0]["id"], "echo");
    assert_eq!(config["routes"][0]["upstream"], echo.url());
}

#[tokio::test]
async fn the_log_level_changes_at_runtime_until_the_next_reload() {
    let echo = Echo::start();
    let config = setup().route(route("echo", "/p/*", &echo.url()));
    let gateway = Gateway::start(config.clone());
    let api = Api::token(&gateway);
    let request = |path: &'static str, id: &'static str| {
        let url = gateway.url(path);
        async move {
            client()
                .get(url)
                .header("x-request-id", id)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
    };

    let answer = api
        .put("/log-level", json!({"level": "debug"}))
        .await
        .expect(200);
    assert_eq!(answer.body, json!({"level": "debug"}));
    assert_eq!(
        api.get("/config").await.expect(200).body["log"]["level"],
        "debug"
    );
    api.get("/users").await.expect(200);
    let debug = gateway.wait_for_log(
        |v| v["level"] == "debug" && v["path"] == "/admin/api/users",
        SOON,
    );
    assert_eq!(debug["actor"], "token", "{debug}");

    // At warn, a 200 is not logged but a 404 is.
    api.put("/log-level", json!({"level": "warn"}))
        .await
        .expect(200);
    request("/p/x", "quiet-200").await;
    request("/nowhere", "loud-404").await;
    gateway.access_line("loud-404");
    assert!(
        !gateway
            .logs()
            .iter()
            .any(|v| v["request_id"] == "quiet-200"),
        "a 200 was logged at warn"
    );
    api.put("/log-level", json!({"level": "info"}))
        .await
        .expect(200);
    request("/p/x", "heard-200").await;
    gateway.access_line("heard-200");

    for body in [json!({"level": "loud"}), json!({"level": "DEBUG "})] {
        let answer = api
            .put("/log-level", body)
            .await
            .expect_error(400, "bad_request");
        assert_eq!(answer.error_keys(), ["level"], "{}", answer.text);
    }
    api.put("/log-level", json!({}))
        .await
        .expect_error(400, "bad_request");

    // A reload sets the file's level again.
    api.put("/log-level", json!({"level": "error"}))
        .await
        .expect(200);
    gateway.write_config(&config);
    gateway.signal("HUP");
    crate::common::eventually("the file's level back", SOON, || async {
        let config = Api::token(&gateway).get("/config").await.expect(200).body;
        (config["log"]["level"] == "info").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_served_document_is_the_one_these_tests_check_against() {
    let gateway = Gateway::start(setup());
    let answer = Api::nobody(&gateway).get("/openapi.json").await.expect(200);
    assert_eq!(answer.body, *DOCUMENT);
    assert_eq!(answer.body["openapi"], "3.1.0");
}

#[tokio::test]
async fn every_admin_answer_carries_the_security_headers() {
    let gateway = Gateway::start(setup());
    for (method, path, token) in [
        (Method::GET, "/healthz", false),
        (Method::GET, "/readyz", false),
        (Method::GET, "/metrics", false),
        (Method::GET, "/", false),
        (Method::GET, "/admin", false),
        (Method::GET, "/admin/", false),
        (Method::GET, "/admin/no-such-file.js", false),
        (Method::GET, "/nowhere", false),
        (Method::POST, "/healthz", false),
        (Method::GET, "/admin/api/nowhere", false),
        (Method::GET, "/admin/api/nowhere", true),
        (Method::POST, "/admin/api/routes/x/y/z", true),
    ] {
        let mut request = client().request(method.clone(), gateway.admin_url(path));
        if token {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let response = request.send().await.unwrap();
        let what = format!("{method} {path} → {}", response.status());
        let headers = response.headers().clone();
        if path.starts_with("/admin/api/") {
            assert_security_headers(&headers, &what);
        } else {
            // Everything but no-store, which only API answers need.
            let mut with_no_store = headers.clone();
            with_no_store.insert("cache-control", "no-store".parse().unwrap());
            assert_security_headers(&with_no_store, &what);
        }
    }
}
