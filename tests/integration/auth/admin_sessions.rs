//! Sessions issued out of band: the admin API's `POST /admin/api/sessions`
//! (and its bearer token), and `portcullis session issue`.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{json, Value};

use super::{add_user, admin, echoed, get_with, protected, setup, ADMIN_TOKEN, COOKIE, PASSWORD};
use crate::common::{client, json, route, Echo, Gateway, Launch, Setup};

/// Asserts an RFC 3339 time about `from_now` away (within a minute).
pub fn assert_about(expires_at: &Value, from_now: Duration) {
    let text = expires_at.as_str().expect("an expiry time");
    let at = humantime::parse_rfc3339(text).expect("RFC 3339");
    let expected = SystemTime::now() + from_now;
    let off = at
        .duration_since(expected)
        .or_else(|_| expected.duration_since(at))
        .unwrap();
    assert!(
        off < Duration::from_secs(60),
        "{text} is not {from_now:?} from now"
    );
}

#[tokio::test]
async fn the_admin_api_issues_a_session_whose_token_works() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &["staff"], &[]).await;

    let response = client()
        .post(gateway.admin_url("/admin/api/sessions"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"user": "alice", "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = json(response).await;
    let id = body["id"].as_str().expect("an id");
    let token = body["token"].as_str().expect("a token");
    assert_eq!(id.len(), 32, "{body}");
    assert_eq!(token.len(), 64, "{body}");
    assert_eq!(body["cookie_name"], COOKIE);
    assert_about(&body["expires_at"], Duration::from_secs(3600));

    let response = get_with(&gateway, "/p/x", token).await;
    assert_eq!(response.status(), 200);
    let echo_body = json(response).await;
    assert_eq!(echoed(&echo_body, "x-user-id"), ["alice"]);
    assert_eq!(echoed(&echo_body, "x-session-id"), [id]);

    // Listed by the API, which never shows a token again.
    let response = client()
        .get(gateway.admin_url("/admin/api/sessions?user=alice"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(token),
        "the session list shows the token: {text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["user"], "alice");
    assert_eq!(list[0]["revoked"], false);

    // Without a ttl the session gets max_lifetime (12h by default); a bad one is a 400.
    let (status, body) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_about(&body["expires_at"], Duration::from_secs(12 * 3600));
    let (status, body) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice", "ttl": "soon"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn issuing_a_session_for_an_unknown_user_is_404() {
    let gateway = Gateway::start(setup());
    let (status, body) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "ghost", "ttl": "1h"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found");
    assert!(body.get("token").is_none());
}

/// Every admin API call these tests make, with a valid body.
fn api_calls(gateway: &Gateway) -> Vec<reqwest::RequestBuilder> {
    let c = client();
    vec![
        c.post(gateway.admin_url("/admin/api/sessions"))
            .json(&json!({"user": "alice", "ttl": "1h"})),
        c.get(gateway.admin_url("/admin/api/sessions")),
        c.get(gateway.admin_url("/admin/api/users")),
        c.post(gateway.admin_url("/admin/api/users"))
            .json(&json!({"username": "mallory", "password": PASSWORD})),
        c.patch(gateway.admin_url("/admin/api/users/alice"))
            .json(&json!({"roles": ["admin"]})),
        c.delete(gateway.admin_url("/admin/api/users/alice/sessions")),
        c.delete(gateway.admin_url("/admin/api/users/alice")),
    ]
}

#[tokio::test]
async fn the_admin_api_needs_the_bearer_token() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "alice", &[], &[]).await;
    let wrong = [
        None,
        Some("Bearer not-the-admin-token-at-all".to_owned()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_owned()),
    ];
    for authorization in &wrong {
        for request in api_calls(&gateway) {
            let request = match authorization {
                Some(value) => request.header("authorization", value),
                None => request,
            };
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{authorization:?}");
            assert_eq!(json(response).await["error"], "unauthorized");
        }
    }
    // Nothing happened.
    let (_, sessions) = admin(&gateway, Method::GET, "/admin/api/sessions", None).await;
    assert_eq!(sessions, json!([]));
    let (_, users) = admin(&gateway, Method::GET, "/admin/api/users", None).await;
    let users: Vec<&Value> = users
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["username"] != "admin") // made at first start
        .collect();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0]["roles"], json!([]));
}

#[tokio::test]
async fn without_an_admin_token_the_api_refuses_everything() {
    let launch = Launch::new(Setup::new().session("secure = false"));
    let output = launch.cli(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(output.status.success(), "{output:?}");
    let gateway = launch.start();
    for authorization in [None, Some(format!("Bearer {ADMIN_TOKEN}"))] {
        for request in api_calls(&gateway) {
            let request = match &authorization {
                Some(value) => request.header("authorization", value),
                None => request,
            };
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{authorization:?}");
            assert_eq!(json(response).await["error"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn the_cli_issues_a_usable_session() {
    let echo = Echo::start();
    let launch = Launch::new(
        Setup::new()
            .session("secure = false")
            .route(route("private", "/p/*", &echo.url()).authenticated()),
    );
    let output = launch.cli(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "staff",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(output.status.success(), "{output:?}");
    let output = launch.cli(
        &["session", "issue", "--user", "alice", "--ttl", "1h"],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    let issued: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let token = issued["token"].as_str().expect("a token");
    let id = issued["id"].as_str().expect("an id");
    assert_eq!(issued["cookie_name"], COOKIE);
    assert_about(&issued["expires_at"], Duration::from_secs(3600));

    let output = launch.cli(&["session", "list", "--user", "alice"], None);
    assert!(output.status.success(), "{output:?}");
    let listing = String::from_utf8_lossy(&output.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("session {id} listed:\n{listing}"));
    assert!(line.contains("alice") && line.ends_with("live"), "{line}");
    assert!(!listing.contains(token), "{listing}");

    // An unknown user, or a bad ttl, is refused.
    let output = launch.cli(&["session", "issue", "--user", "ghost"], None);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no user named \"ghost\""),
        "{output:?}"
    );
    let output = launch.cli(
        &["session", "issue", "--user", "alice", "--ttl", "soon"],
        None,
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--ttl"),
        "{output:?}"
    );

    let gateway = launch.start();
    let response = get_with(&gateway, "/p/x", token).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(echoed(&body, "x-user-id"), ["alice"]);
    assert_eq!(echoed(&body, "x-session-id"), [id]);
}

#[tokio::test]
async fn the_bearer_token_is_checked_before_the_request_body() {
    let gateway = Gateway::start(setup());
    let requests = [
        (
            Method::POST,
            "/admin/api/sessions",
            "{\"user\": \"alice\", \"ttl\": \"1h\", \"x\": 1}",
        ),
        (Method::POST, "/admin/api/sessions", "not json"),
        (
            Method::POST,
            "/admin/api/users",
            "{\"username\": \"mallory\"}",
        ),
        (
            Method::PATCH,
            "/admin/api/users/alice",
            "{\"is_admin\": true}",
        ),
    ];
    for (method, path, body) in requests {
        let response = client()
            .request(method.clone(), gateway.admin_url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 401, "{method} {path} {body}: {text}");
        assert!(
            !text.contains("expected"),
            "the API describes itself to a stranger: {text}"
        );
    }
}
