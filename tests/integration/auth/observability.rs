//! What authentication leaves in the access log and metrics, and what it
//! must never leave there: tokens and passwords.

use reqwest::Method;
use serde_json::{json, Value};

use super::{
    add_user, admin, get_with, login, login_body, protected, session_cookie, tamper, with_token,
    COOKIE, PASSWORD,
};
use crate::common::http::{metrics, sample};
use crate::common::{client, eventually, Echo, Gateway, SOON};

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_access_log_names_the_user_session_and_auth_outcome() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let response = login(&gateway, "alice", PASSWORD).await;
    let login_id = request_id(&response);
    let token = session_cookie(&response, COOKIE).unwrap().value;
    let session_id = crate::common::json(response).await["session_id"].clone();

    let line = gateway.access_line(&login_id);
    assert_eq!(line["auth"], "login", "{line}");
    assert_eq!(line["user_id"], "alice", "{line}");
    assert_eq!(line["session_id"], session_id, "{line}");

    let cases: [(&str, Option<&str>, &str, bool); 5] = [
        ("/p/x", Some(token.as_str()), "authenticated", true),
        ("/pub/x", Some(token.as_str()), "public", true),
        ("/pub/x", None, "public", false),
        ("/p/x", None, "missing_token", false),
        ("/p/x", Some("nonsense"), "invalid_token", false),
    ];
    for (path, token, auth, identified) in cases {
        let response = match token {
            Some(token) => get_with(&gateway, path, token).await,
            None => client().get(gateway.url(path)).send().await.unwrap(),
        };
        let id = request_id(&response);
        let line = gateway.access_line(&id);
        assert_eq!(line["auth"], auth, "{path} {token:?}: {line}");
        if identified {
            assert_eq!(line["user_id"], "alice", "{line}");
            assert_eq!(line["session_id"], session_id, "{line}");
        } else {
            assert_eq!(line["user_id"], Value::Null, "{line}");
            assert_eq!(line["session_id"], Value::Null, "{line}");
        }
        if auth.ends_with("_token") {
            assert_eq!(line["error"], auth, "{line}");
        }
    }
}

#[tokio::test]
async fn no_token_or_password_ever_reaches_the_log() {
    let echo = Echo::start();
    let mut gateway = Gateway::start(
        protected(&echo)
            .log("level = \"debug\"")
            .session("rotate_after = \"500ms\"")
            .session("rotation_grace = \"1h\""),
    );
    let new_password = "a second secret passphrase";
    let wrong_password = "a wrong secret passphrase";
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "bob", &[], &[]).await;
    let mut tokens = Vec::new();
    let mut session_ids = Vec::new();

    let (token, body) = login_body(&gateway, "alice").await;
    session_ids.push(body["session_id"].as_str().unwrap().to_owned());
    tokens.push(token.clone());
    let response = client()
        .post(gateway.url("/auth/login"))
        .form(&[
            ("username", "bob"),
            ("password", PASSWORD),
            ("next", "/p/x"),
        ])
        .send()
        .await
        .unwrap();
    tokens.push(session_cookie(&response, COOKIE).unwrap().value);
    assert_eq!(login(&gateway, "alice", wrong_password).await.status(), 401);
    let response = client()
        .post(gateway.url("/auth/login"))
        .form(&[("username", "bob"), ("password", wrong_password)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (_, issued) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "bob", "ttl": "1h"})),
    )
    .await;
    session_ids.push(issued["id"].as_str().unwrap().to_owned());
    tokens.push(issued["token"].as_str().unwrap().to_owned());
    // Use every token on every kind of endpoint, including a rotation.
    let rotated = eventually("the token to rotate", SOON, || async {
        let response = get_with(&gateway, "/p/x", &token).await;
        session_cookie(&response, COOKIE).map(|c| c.value)
    })
    .await;
    tokens.push(rotated);
    for token in tokens.clone() {
        for path in ["/p/x", "/pub/x", "/auth/session"] {
            get_with(&gateway, path, &token)
                .await
                .bytes()
                .await
                .unwrap();
        }
        get_with(&gateway, "/p/x", &tamper(&token))
            .await
            .bytes()
            .await
            .unwrap();
        with_token(Method::POST, &gateway.url("/p/x"), &token)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
    }
    with_token(Method::POST, &gateway.url("/auth/logout"), &tokens[0])
        .send()
        .await
        .unwrap();
    let (status, _) = admin(
        &gateway,
        Method::PATCH,
        "/admin/api/users/bob",
        Some(json!({"password": new_password})),
    )
    .await;
    assert_eq!(status, 200);
    gateway.stop();

    let log = gateway.raw_log();
    for session_id in &session_ids {
        assert!(
            log.contains(session_id.as_str()),
            "the log names session {session_id}"
        );
    }
    for token in &tokens {
        assert!(
            !log.contains(token.as_str()),
            "a token is in the log:\n{log}"
        );
        assert!(
            !log.contains(&tamper(token)),
            "a tampered token is in the log:\n{log}"
        );
    }
    for password in [PASSWORD, new_password, wrong_password] {
        assert!(!log.contains(password), "a password is in the log:\n{log}");
        let form_encoded: String = serde_urlencoded::to_string([("p", password)]).unwrap();
        assert!(
            !log.contains(&form_encoded[2..]),
            "a form-encoded password is in the log:\n{log}"
        );
    }
}

/// A metric, its labels and the value it should reach.
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

#[tokio::test]
async fn metrics_count_logins_auth_outcomes_and_live_sessions() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;

    let (first, _) = login_body(&gateway, "alice").await;
    let (second, _) = login_body(&gateway, "alice").await;
    let response = client()
        .post(gateway.url("/auth/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let third = session_cookie(&response, COOKIE).unwrap().value;
    assert_eq!(
        login(&gateway, "alice", "wrong password!").await.status(),
        401
    );
    assert_eq!(
        login(&gateway, "nobody", "wrong password!").await.status(),
        401
    );
    let response = with_token(Method::POST, &gateway.url("/auth/logout"), &third)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for (path, token) in [
        ("/p/x", Some(first.as_str())),
        ("/p/x", Some(second.as_str())),
        ("/p/x", None),
        ("/p/x", Some("nonsense")),
        ("/p/x", Some(third.as_str())),
        ("/pub/x", None),
    ] {
        let response = match token {
            Some(token) => get_with(&gateway, path, token).await,
            None => client().get(gateway.url(path)).send().await.unwrap(),
        };
        response.bytes().await.unwrap();
    }

    let url = gateway.admin_url("/metrics");
    let expected: [Expected; 9] = [
        ("portcullis_logins_total", &[("outcome", "success")], 3.0),
        ("portcullis_logins_total", &[("outcome", "failure")], 2.0),
        (
            "portcullis_auth_outcomes_total",
            &[("outcome", "login")],
            3.0,
        ),
        (
            "portcullis_auth_outcomes_total",
            &[("outcome", "authenticated")],
            2.0,
        ),
        (
            "portcullis_auth_outcomes_total",
            &[("outcome", "missing_token")],
            1.0,
        ),
        (
            "portcullis_auth_outcomes_total",
            &[("outcome", "invalid_token")],
            1.0,
        ),
        (
            "portcullis_auth_outcomes_total",
            &[("outcome", "token_revoked")],
            1.0,
        ),
        (
            "portcullis_auth_outcomes_total",
            &[("outcome", "public")],
            1.0,
        ),
        // Three sessions, one logged out.
        ("portcullis_sessions_active", &[], 2.0),
    ];
    // Poll until every value is there (or time is up), then report each.
    let deadline = std::time::Instant::now() + SOON;
    let text = loop {
        let text = metrics(&url).await;
        let all = expected
            .iter()
            .all(|(name, labels, value)| sample(&text, name, labels) == Some(*value));
        if all || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    for (name, labels, value) in expected {
        assert_eq!(
            sample(&text, name, labels),
            Some(value),
            "{name} {labels:?}:\n{text}"
        );
    }
}
