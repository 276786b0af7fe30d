//! Ending sessions: logout, revoke-all (admin API and CLI), and the account
//! changes that revoke every session of a user.

use reqwest::Method;
use serde_json::json;

use super::{
    add_user, admin, browser, error_of, login, login_token, outcome, protected, session_cookie,
    with_token, COOKIE, PASSWORD,
};
use crate::common::{client, Echo, Gateway};

#[tokio::test]
async fn logout_revokes_the_session_and_clears_the_cookie() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let other = login_token(&gateway, "alice").await;

    let jar = browser();
    let response = jar
        .post(gateway.url("/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let token = session_cookie(&response, COOKIE).unwrap().value;
    assert_eq!(
        jar.get(gateway.url("/p/x")).send().await.unwrap().status(),
        200
    );

    let response = jar.post(gateway.url("/auth/logout")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let cleared = session_cookie(&response, COOKIE).expect("a clearing Set-Cookie");
    assert_eq!(cleared.value, "", "{}", cleared.raw);
    assert_eq!(cleared.max_age(), Some(0), "{}", cleared.raw);
    assert_eq!(
        cleared.attribute("Path"),
        Some(Some("/")),
        "{}",
        cleared.raw
    );
    assert_eq!(json_status(response).await, "logged_out");

    // The jar dropped the cookie; the old value is revoked.
    let response = jar.get(gateway.url("/p/x")).send().await.unwrap();
    assert_eq!(error_of(response).await, (401, "missing_token".into()));
    assert_eq!(
        outcome(&gateway, "/p/x", &token).await,
        (401, "token_revoked".into())
    );
    // Logout ends that session only.
    assert_eq!(outcome(&gateway, "/p/x", &other).await.0, 200);

    // Logging out again, or without any session, still answers and clears.
    for request in [
        with_token(Method::POST, &gateway.url("/auth/logout"), &token),
        client().post(gateway.url("/auth/logout")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            session_cookie(&response, COOKIE).unwrap().max_age(),
            Some(0)
        );
    }
    // Logout is POST only: a link cannot log anyone out.
    let response = with_token(Method::GET, &gateway.url("/auth/logout"), &other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(outcome(&gateway, "/p/x", &other).await.0, 200);
}

async fn json_status(response: reqwest::Response) -> String {
    crate::common::json(response).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_admin_api_revokes_every_session_of_a_user() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "bob", &[], &[]).await;
    let alice = [
        login_token(&gateway, "alice").await,
        login_token(&gateway, "alice").await,
    ];
    let bob = login_token(&gateway, "bob").await;

    let (status, body) = admin(
        &gateway,
        Method::DELETE,
        "/admin/api/users/alice/sessions",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], 2);
    for token in &alice {
        assert_eq!(
            outcome(&gateway, "/p/x", token).await,
            (401, "token_revoked".into())
        );
    }
    assert_eq!(outcome(&gateway, "/p/x", &bob).await.0, 200);

    // Alice can sign in again.
    let fresh = login_token(&gateway, "alice").await;
    assert_eq!(outcome(&gateway, "/p/x", &fresh).await.0, 200);
    let (_, body) = admin(
        &gateway,
        Method::DELETE,
        "/admin/api/users/alice/sessions",
        None,
    )
    .await;
    assert_eq!(
        body["revoked"], 1,
        "already revoked sessions are not counted again"
    );
}

#[tokio::test]
async fn the_cli_revokes_every_session_of_a_user_on_a_stopped_gateway() {
    let echo = Echo::start();
    let mut gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "bob", &[], &[]).await;
    let alice = login_token(&gateway, "alice").await;
    let bob = login_token(&gateway, "bob").await;
    gateway.stop();

    let output = gateway.cli(&["session", "revoke", "--user", "alice"], None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 session(s) of alice revoked"), "{stdout}");

    let gateway = gateway.relaunch().start();
    assert_eq!(
        outcome(&gateway, "/p/x", &alice).await,
        (401, "token_revoked".into())
    );
    assert_eq!(outcome(&gateway, "/p/x", &bob).await.0, 200);
}

#[tokio::test]
async fn account_changes_revoke_every_session_of_the_user() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    let changes = [
        (
            "pw",
            Method::PATCH,
            Some(json!({"password": "a brand new passphrase"})),
        ),
        ("roles", Method::PATCH, Some(json!({"roles": ["auditor"]}))),
        (
            "perms",
            Method::PATCH,
            Some(json!({"permissions": ["read"]})),
        ),
        ("disabled", Method::PATCH, Some(json!({"disabled": true}))),
        ("deleted", Method::DELETE, None),
    ];
    add_user(&gateway, "bystander", &[], &[]).await;
    let bystander = login_token(&gateway, "bystander").await;
    for (user, method, body) in changes {
        add_user(&gateway, user, &["staff"], &[]).await;
        let tokens = [
            login_token(&gateway, user).await,
            login_token(&gateway, user).await,
        ];
        let (status, answer) =
            admin(&gateway, method, &format!("/admin/api/users/{user}"), body).await;
        if user == "deleted" {
            assert_eq!(status, 204, "{answer}");
        } else {
            assert_eq!(status, 200, "{user}: {answer}");
            assert_eq!(answer["sessions_revoked"], 2, "{user}: {answer}");
        }
        for token in &tokens {
            assert_eq!(
                outcome(&gateway, "/p/x", token).await,
                (401, "token_revoked".into()),
                "{user}"
            );
        }
    }
    assert_eq!(outcome(&gateway, "/p/x", &bystander).await.0, 200);

    // After a password change only the new password works.
    let response = login(&gateway, "pw", PASSWORD).await;
    assert_eq!(
        error_of(response).await,
        (401, "invalid_credentials".into())
    );
    let response = login(&gateway, "pw", "a brand new passphrase").await;
    assert_eq!(response.status(), 200);
    // After a role change a new session carries the new roles.
    let token = login_token(&gateway, "roles").await;
    let response = super::get_with(&gateway, "/p/x", &token).await;
    let body = crate::common::json(response).await;
    assert_eq!(super::echoed(&body, "x-user-roles"), ["auditor"]);
    // Disabled and deleted users cannot sign in.
    for user in ["disabled", "deleted"] {
        let response = login(&gateway, user, PASSWORD).await;
        assert_eq!(
            error_of(response).await,
            (401, "invalid_credentials".into()),
            "{user}"
        );
    }
    let (status, _) = admin(&gateway, Method::GET, "/admin/api/users/deleted", None).await;
    assert_eq!(status, 404);
}
