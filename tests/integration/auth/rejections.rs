//! Why a protected route refuses a request: each 401 code, and 403 for
//! roles (any of) and permissions (all of).

use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;

use super::{
    add_user, admin, error_of, get_with, login_body, login_token, outcome, protected, setup, tamper,
};
use crate::common::{client, eventually, json, route, Echo, Gateway, Setup, SOON};

/// Turns off the background session upkeep (write-behind and sweeping), so
/// an expired session stays in memory and is reported as expired.
fn without_upkeep(setup: Setup) -> Setup {
    setup
        .session("touch_interval = \"1h\"")
        .storage("sweep_interval = \"1h\"")
        .storage("flush_interval = \"1h\"")
}

/// Asserts a 401 with this code and `Cache-Control: no-store`.
async fn assert_401(response: reqwest::Response, code: &str, what: &str) {
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "{what}"
    );
    assert_eq!(error_of(response).await, (401, code.to_owned()), "{what}");
}

#[tokio::test]
async fn other_cookies_without_the_session_cookie_are_missing_token() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    let response = client()
        .get(gateway.url("/p/x"))
        .header("cookie", "theme=dark; portcullis_sessionx=abc")
        .send()
        .await
        .unwrap();
    assert_401(response, "missing_token", "no session cookie").await;
    assert_eq!(echo.hits(), 0);
}

#[tokio::test]
async fn malformed_unknown_and_tampered_tokens_are_invalid_token() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;

    let unknown = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY";
    assert_eq!(unknown.len(), 43);
    let cases = [
        ("garbage".to_owned(), "a short word"),
        (String::new(), "an empty value"),
        ("!".repeat(43), "43 characters outside base64url"),
        (format!("{token}="), "the real token with padding"),
        (format!("{token}A"), "the real token, one character longer"),
        (
            token[..42].to_owned(),
            "the real token, one character shorter",
        ),
        (unknown.to_owned(), "a well-formed token nobody issued"),
        (tamper(&token), "the real token with one character flipped"),
        (token.to_uppercase(), "the real token upper-cased"),
    ];
    for (value, what) in &cases {
        let response = get_with(&gateway, "/p/x", value).await;
        assert_401(response, "invalid_token", what).await;
    }
    assert_eq!(echo.hits(), 0);
    // None of that disturbed the real session.
    assert_eq!(outcome(&gateway, "/p/x", &token).await.0, 200);
}

/// When the session goes idle, as the admin API reports it (reading the
/// list never counts as activity).
async fn idle_expiry(gateway: &Gateway, session_id: &str) -> SystemTime {
    let (status, list) = admin(gateway, Method::GET, "/admin/api/sessions", None).await;
    assert_eq!(status, 200, "{list}");
    let session = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == session_id)
        .unwrap_or_else(|| panic!("session {session_id} listed: {list}"));
    humantime::parse_rfc3339(session["idle_expires_at"].as_str().unwrap()).unwrap()
}

/// Lets the wall clock pass `at`: the session under test must see no
/// activity, so there is nothing to poll.
async fn wait_past(at: SystemTime) {
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_idle_session_expires_and_activity_keeps_it_alive() {
    let echo = Echo::start();
    let gateway = Gateway::start(without_upkeep(protected(&echo)).session("idle_timeout = \"1s\""));
    add_user(&gateway, "alice", &[], &[]).await;
    let (token, login) = login_body(&gateway, "alice").await;
    let session_id = login["session_id"].as_str().unwrap();

    // Steady activity keeps the session for well past the idle timeout.
    let started = Instant::now();
    eventually("activity for 1.5 × idle_timeout", SOON, || async {
        assert_eq!(outcome(&gateway, "/p/x", &token).await.0, 200);
        (started.elapsed() > Duration::from_millis(1500)).then_some(())
    })
    .await;
    // Then silence, past the idle expiry the gateway itself reports.
    wait_past(idle_expiry(&gateway, session_id).await).await;
    let response = get_with(&gateway, "/p/x", &token).await;
    assert_401(response, "token_expired", "an idle session").await;
    let response = get_with(&gateway, "/auth/session", &token).await;
    assert_401(
        response,
        "token_expired",
        "an idle session, at /auth/session",
    )
    .await;
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_despite_activity() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        without_upkeep(protected(&echo))
            .session("max_lifetime = \"1s\"")
            .session("idle_timeout = \"10m\"")
            .session("rotate_after = \"1h\""),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;
    assert_eq!(outcome(&gateway, "/p/x", &token).await.0, 200);
    // Busy all along, the session still ends.
    let (status, code) = eventually("the session to end", SOON, || async {
        let result = outcome(&gateway, "/p/x", &token).await;
        (result.0 != 200).then_some(result)
    })
    .await;
    assert_eq!((status, code.as_str()), (401, "token_expired"));
    let response = get_with(&gateway, "/p/x", &token).await;
    assert_401(response, "token_expired", "after the absolute lifetime").await;
}

#[tokio::test]
async fn an_expired_session_stays_token_expired_until_the_sweep_interval() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        protected(&echo)
            .session("idle_timeout = \"1s\"")
            .session("touch_interval = \"100ms\"")
            .storage("sweep_interval = \"1h\""),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let (token, login) = login_body(&gateway, "alice").await;
    let expiry = idle_expiry(&gateway, login["session_id"].as_str().unwrap()).await;
    // Past the idle expiry and several upkeep ticks (100 ms), far before the
    // sweep interval (1h).
    wait_past(expiry + Duration::from_secs(1)).await;
    let response = get_with(&gateway, "/p/x", &token).await;
    assert_401(
        response,
        "token_expired",
        "an expired, not yet swept session",
    )
    .await;
}

#[tokio::test]
async fn a_revoked_session_is_token_revoked() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let (token, body) = login_body(&gateway, "alice").await;
    let (other, _) = login_body(&gateway, "alice").await;
    let id = body["session_id"].as_str().unwrap();

    let (status, _) = admin(
        &gateway,
        Method::DELETE,
        &format!("/admin/api/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let response = get_with(&gateway, "/p/x", &token).await;
    assert_401(response, "token_revoked", "a revoked session").await;
    // Only that session.
    assert_eq!(outcome(&gateway, "/p/x", &other).await.0, 200);

    // Revoking it again, or a session that never existed, is a 404.
    for id in [id, "0123456789abcdef0123456789abcdef"] {
        let (status, body) = admin(
            &gateway,
            Method::DELETE,
            &format!("/admin/api/sessions/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "not_found");
    }
}

/// A 403 body must not tell the client what the route wanted.
async fn assert_forbidden(response: reqwest::Response, secrets: &[&str], who: &str) {
    assert_eq!(response.status(), 403, "{who}");
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "forbidden", "{who}: {text}");
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{who}: the 403 names {secret:?}: {text}"
        );
    }
}

#[tokio::test]
async fn roles_admit_any_one_of_them() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup().route(
            route("ops", "/ops/*", &echo.url())
                .authenticated()
                .extra("roles = [\"superuser\", \"operator\"]"),
        ),
    );
    add_user(&gateway, "olga", &["operator"], &[]).await;
    add_user(&gateway, "sam", &["superuser", "auditor"], &[]).await;
    add_user(&gateway, "dev", &["developer"], &[]).await;
    add_user(&gateway, "nobody", &[], &["superuser"]).await;

    for user in ["olga", "sam"] {
        let token = login_token(&gateway, user).await;
        let response = get_with(&gateway, "/ops/x", &token).await;
        assert_eq!(response.status(), 200, "{user}");
        let body = json(response).await;
        assert_eq!(super::echoed(&body, "x-user-id"), [user]);
    }
    let hits = echo.hits();
    // A permission of the same name is not a role.
    for user in ["dev", "nobody"] {
        let token = login_token(&gateway, user).await;
        let response = get_with(&gateway, "/ops/x", &token).await;
        assert_forbidden(response, &["superuser", "operator"], user).await;
    }
    assert_eq!(echo.hits(), hits, "forbidden requests are not forwarded");
}

#[tokio::test]
async fn permissions_must_all_be_held() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .route(
                route("docs", "/docs/*", &echo.url())
                    .authenticated()
                    .extra("permissions = [\"docs.read\", \"docs.write\"]"),
            )
            .route(
                route("deploy", "/deploy/*", &echo.url())
                    .authenticated()
                    .extra("roles = [\"ops\"]")
                    .extra("permissions = [\"deploy\"]"),
            ),
    );
    add_user(&gateway, "reader", &[], &["docs.read"]).await;
    add_user(
        &gateway,
        "writer",
        &["ops"],
        &["docs.write", "docs.read", "extra"],
    )
    .await;
    add_user(&gateway, "deployer", &["ops"], &["deploy"]).await;
    add_user(&gateway, "outsider", &["dev"], &["deploy"]).await;

    let reader = login_token(&gateway, "reader").await;
    let writer = login_token(&gateway, "writer").await;
    let deployer = login_token(&gateway, "deployer").await;
    let outsider = login_token(&gateway, "outsider").await;

    let secrets = ["docs.read", "docs.write", "deploy", "ops"];
    assert_forbidden(
        get_with(&gateway, "/docs/a", &reader).await,
        &secrets,
        "reader",
    )
    .await;
    assert_eq!(get_with(&gateway, "/docs/a", &writer).await.status(), 200);
    // Roles and permissions together: the role and every permission.
    assert_forbidden(
        get_with(&gateway, "/deploy/a", &writer).await,
        &secrets,
        "writer",
    )
    .await;
    assert_forbidden(
        get_with(&gateway, "/deploy/a", &outsider).await,
        &secrets,
        "outsider",
    )
    .await;
    assert_eq!(
        get_with(&gateway, "/deploy/a", &deployer).await.status(),
        200
    );
    assert_eq!(echo.hits(), 2);
    // No session at all is still a 401, not a 403.
    let response = client().get(gateway.url("/docs/a")).send().await.unwrap();
    assert_eq!(error_of(response).await, (401, "missing_token".into()));
}
