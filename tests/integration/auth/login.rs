//! Logging in: JSON and form posts, the login page, failed credentials.

use reqwest::Method;
use serde_json::{json, Value};

use super::{
    add_user, admin, browser, echoed, error_of, login, login_body, protected, session_cookie,
    COOKIE, PASSWORD,
};
use crate::common::{client, json, Echo, Gateway};

#[tokio::test]
async fn json_login_answers_the_session_but_never_the_token() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &["staff"], &[]).await;

    let jar = browser();
    let response = jar
        .post(gateway.url("/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let token = session_cookie(&response, COOKIE)
        .expect("a session cookie")
        .value;
    let text = response.text().await.unwrap();
    assert!(!text.contains(&token), "the token is in the body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires_at", "session_id", "user"], "{body}");
    assert_eq!(body["user"], "alice");
    let session_id = body["session_id"].as_str().unwrap();
    assert_eq!(session_id.len(), 32, "{body}");
    assert!(session_id.bytes().all(|b| b.is_ascii_hexdigit()), "{body}");
    let expires_at = body["expires_at"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(expires_at).is_ok(),
        "expires_at is RFC 3339: {expires_at}"
    );

    // The jar now carries the session to a protected route.
    let response = jar.get(gateway.url("/p/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo_body = json(response).await;
    assert_eq!(echoed(&echo_body, "x-user-id"), ["alice"]);
    assert_eq!(echoed(&echo_body, "x-session-id"), [session_id]);
}

#[tokio::test]
async fn form_login_redirects_to_next_and_sets_the_cookie() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;

    let jar = browser();
    let response = jar
        .post(gateway.url("/auth/login"))
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("next", "/p/after?tab=2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/p/after?tab=2");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(session_cookie(&response, COOKIE).is_some());

    // Follow the redirect as a browser would.
    let response = jar.get(gateway.url("/p/after?tab=2")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["path"], "/p/after");
    assert_eq!(echoed(&body, "x-user-id"), ["alice"]);

    // Without `next` the form goes to the site root.
    let response = client()
        .post(gateway.url("/auth/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/");
}

#[tokio::test]
async fn the_login_page_is_an_html_form() {
    let gateway = Gateway::start(super::setup());
    let response = client()
        .get(gateway.url("/auth/login?next=%2Fapp%3Fx%3D1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let html = response.text().await.unwrap();
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(html.contains("name=\"username\""), "{html}");
    assert!(
        html.contains("name=\"password\" type=\"password\""),
        "{html}"
    );
    assert!(
        html.contains("name=\"next\" value=\"/app?x=1\""),
        "the page carries next: {html}"
    );

    // A foreign next is never put into the page.
    let html = client()
        .get(gateway.url("/auth/login?next=https%3A%2F%2Fevil.example"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"next\" value=\"/\""), "{html}");
    assert!(!html.contains("evil.example"), "{html}");

    // Only GET, HEAD and POST.
    let response = client()
        .put(gateway.url("/auth/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

/// A 401 body with the per-response fields removed.
fn without_ids(mut body: Value) -> Value {
    let object = body.as_object_mut().unwrap();
    assert!(object.remove("correlation_id").is_some(), "{body:?}");
    assert!(object.remove("timestamp").is_some());
    body
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let gateway = Gateway::start(super::setup());
    add_user(&gateway, "alice", &[], &[]).await;

    let mut answers = Vec::new();
    for (user, password) in [
        ("alice", "not the right password"),
        ("nobody", "not the right password"),
        ("nobody", PASSWORD),
    ] {
        let response = login(&gateway, user, password).await;
        assert_eq!(response.status(), 401, "{user}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert!(session_cookie(&response, COOKIE).is_none(), "{user}");
        let content_type = response.headers()["content-type"].clone();
        let body = json(response).await;
        assert_eq!(body["error"], "invalid_credentials", "{body}");
        answers.push((content_type, without_ids(body)));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);

    // A failed form login shows the page again, with no cookie, the same
    // for a wrong password and an unknown user.
    let mut pages = Vec::new();
    for user in ["alice", "nobody"] {
        let response = client()
            .post(gateway.url("/auth/login"))
            .form(&[("username", user), ("password", "nope"), ("next", "/app")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert!(session_cookie(&response, COOKIE).is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains("Invalid username or password."), "{html}");
        assert!(html.contains("name=\"next\" value=\"/app\""), "{html}");
        pages.push(html);
    }
    assert_eq!(pages[0], pages[1]);
}

#[tokio::test]
async fn a_disabled_user_cannot_log_in() {
    let gateway = Gateway::start(super::setup());
    add_user(&gateway, "alice", &[], &[]).await;
    let (status, _) = admin(
        &gateway,
        Method::PATCH,
        "/admin/api/users/alice",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 200);

    let response = login(&gateway, "alice", PASSWORD).await;
    assert!(session_cookie(&response, COOKIE).is_none());
    assert_eq!(
        error_of(response).await,
        (401, "invalid_credentials".into())
    );

    // Enabled again, the same password works.
    let (status, _) = admin(
        &gateway,
        Method::PATCH,
        "/admin/api/users/alice",
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = login_body(&gateway, "alice").await;
    assert_eq!(body["user"], "alice");
}

#[tokio::test]
async fn malformed_login_bodies_are_400() {
    let gateway = Gateway::start(super::setup());
    for body in ["", "{}", "{\"username\":\"alice\"}", "not json"] {
        let response = client()
            .post(gateway.url("/auth/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (400, "bad_request".into()),
            "{body:?}"
        );
    }
}

#[tokio::test]
async fn the_session_endpoint_describes_the_session_but_never_the_token() {
    let gateway = Gateway::start(super::setup().session("idle_timeout = \"10m\""));
    add_user(&gateway, "alice", &["staff", "ops"], &["read", "write"]).await;
    let (token, login) = login_body(&gateway, "alice").await;

    let response = super::get_with(&gateway, "/auth/session", &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    assert!(!text.contains(&token), "the token is in the body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["user"], "alice");
    assert_eq!(body["roles"], json!(["staff", "ops"]));
    assert_eq!(body["permissions"], json!(["read", "write"]));
    assert_eq!(body["session_id"], login["session_id"]);
    assert_eq!(body["expires_at"], login["expires_at"]);
    let time = |key: &str| {
        humantime::parse_rfc3339(
            body[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: {body}")),
        )
        .unwrap_or_else(|_| panic!("{key} is RFC 3339: {body}"))
    };
    let (created, idle, expires) = (
        time("created_at"),
        time("idle_expires_at"),
        time("expires_at"),
    );
    assert!(created < idle && idle <= expires, "{body}");
    let idle_after = idle.duration_since(created).unwrap();
    assert!(
        idle_after >= std::time::Duration::from_secs(590)
            && idle_after <= std::time::Duration::from_secs(610),
        "idle expiry is about idle_timeout after creation: {body}"
    );

    // HEAD works too; other methods do not.
    let response = super::with_token(Method::HEAD, &gateway.url("/auth/session"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = super::with_token(Method::POST, &gateway.url("/auth/session"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);

    // Without a session it answers like a protected route.
    let response = client()
        .get(gateway.url("/auth/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(error_of(response).await, (401, "missing_token".into()));
    let response = super::get_with(&gateway, "/auth/session", &super::tamper(&token)).await;
    assert_eq!(error_of(response).await, (401, "invalid_token".into()));
}
