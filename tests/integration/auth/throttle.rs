//! Failed-login throttling, per username and per client IP.

use super::{add_user, login, login_token, setup, PASSWORD};
use crate::common::{json, Gateway};

/// Asserts a 429 `rate_limit_exceeded` with a usable `Retry-After`.
async fn assert_throttled(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 429, "{what}");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    assert!(response.headers().get("set-cookie").is_none(), "{what}");
    let body = json(response).await;
    assert_eq!(body["error"], "rate_limit_exceeded", "{what}: {body}");
    assert_eq!(body["retry_after"], retry_after, "{what}: {body}");
}

#[tokio::test]
async fn failed_logins_throttle_the_username() {
    let gateway = Gateway::start(
        setup()
            .login("max_failures_per_user = 3")
            .login("max_failures_per_ip = 100"),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "bob", &[], &[]).await;

    // A success clears the username's failures.
    for _ in 0..2 {
        assert_eq!(
            login(&gateway, "alice", "wrong password!").await.status(),
            401
        );
    }
    login_token(&gateway, "alice").await;

    for attempt in 1..=3 {
        let response = login(&gateway, "alice", "wrong password!").await;
        assert_eq!(response.status(), 401, "failure {attempt}");
    }
    // The 4th attempt is refused, even with the right password.
    assert_throttled(login(&gateway, "alice", PASSWORD).await, "right password").await;
    assert_throttled(
        login(&gateway, "alice", "wrong password!").await,
        "wrong password",
    )
    .await;
    // Another username from the same client is not affected.
    login_token(&gateway, "bob").await;
}

#[tokio::test]
async fn failed_logins_throttle_the_client_ip() {
    let gateway = Gateway::start(
        setup()
            .login("max_failures_per_user = 100")
            .login("max_failures_per_ip = 3"),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    for user in ["ghost1", "ghost2", "alice"] {
        assert_eq!(login(&gateway, user, "wrong password!").await.status(), 401);
    }
    // Any username, even with the right password, from this client.
    assert_throttled(login(&gateway, "alice", PASSWORD).await, "alice").await;
    assert_throttled(login(&gateway, "ghost3", "whatever").await, "ghost3").await;
    // Claiming to be someone else through X-Forwarded-For does not help: the
    // gateway trusts no proxy here.
    let response = crate::common::client()
        .post(gateway.url("/auth/login"))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_throttled(response, "with X-Forwarded-For").await;
}

#[tokio::test]
async fn the_login_throttle_survives_a_restart() {
    let mut gateway = Gateway::start(
        setup()
            .login("max_failures_per_user = 3")
            .login("max_failures_per_ip = 100"),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    for _ in 0..3 {
        assert_eq!(
            login(&gateway, "alice", "wrong password!").await.status(),
            401
        );
    }
    gateway.stop();

    let gateway = gateway.relaunch().start();
    assert_throttled(login(&gateway, "alice", PASSWORD).await, "after a restart").await;
}
