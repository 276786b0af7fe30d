//! The session cookie's attributes and name, fresh tokens, session fixation.

use serde_json::json;

use super::{
    add_user, browser, error_of, login, login_body, login_token, outcome, protected,
    session_cookie, setup, SetCookie, ADMIN_TOKEN, COOKIE, PASSWORD,
};
use crate::common::{client, route, Echo, Gateway, Setup};

/// Logs in as alice and returns the `Set-Cookie` named `name`.
async fn login_cookie(gateway: &Gateway, name: &str) -> SetCookie {
    let response = login(gateway, "alice", PASSWORD).await;
    assert_eq!(response.status(), 200);
    session_cookie(&response, name)
        .unwrap_or_else(|| panic!("a {name} cookie in {:?}", response.headers()))
}

/// A token as the gateway makes them: a 128-bit session id and a 256-bit
/// secret in unpadded base64url.
fn assert_token_shape(token: &str) {
    assert_eq!(token.len(), 64, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
}

#[tokio::test]
async fn the_session_cookie_is_httponly_lax_host_only_and_lives_max_lifetime() {
    let gateway = Gateway::start(setup().session("max_lifetime = \"2h\""));
    add_user(&gateway, "alice", &[], &[]).await;
    let cookie = login_cookie(&gateway, COOKIE).await;
    assert_token_shape(&cookie.value);
    assert!(cookie.has_flag("HttpOnly"), "{}", cookie.raw);
    assert_eq!(
        cookie.attribute("SameSite"),
        Some(Some("Lax")),
        "{}",
        cookie.raw
    );
    assert_eq!(cookie.attribute("Path"), Some(Some("/")), "{}", cookie.raw);
    assert_eq!(cookie.attribute("Domain"), None, "{}", cookie.raw);
    assert_eq!(cookie.attribute("Secure"), None, "{}", cookie.raw);
    let max_age = cookie.max_age().expect("a Max-Age");
    assert!(
        (7190..=7200).contains(&max_age),
        "Max-Age {max_age} is about max_lifetime (2h)"
    );
}

#[tokio::test]
async fn same_site_strict_when_configured() {
    let gateway = Gateway::start(setup().session("same_site = \"strict\""));
    add_user(&gateway, "alice", &[], &[]).await;
    let cookie = login_cookie(&gateway, COOKIE).await;
    assert_eq!(
        cookie.attribute("SameSite"),
        Some(Some("Strict")),
        "{}",
        cookie.raw
    );
    assert!(cookie.has_flag("HttpOnly"), "{}", cookie.raw);
}

#[tokio::test]
async fn secure_cookies_get_the_host_prefix() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .session("secure = true")
            .admin(&format!("token = \"{ADMIN_TOKEN}\""))
            .route(route("private", "/p/*", &echo.url()).authenticated()),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let name = "__Host-portcullis_session";
    let cookie = login_cookie(&gateway, name).await;
    assert!(cookie.has_flag("Secure"), "{}", cookie.raw);
    assert!(cookie.has_flag("HttpOnly"), "{}", cookie.raw);
    // What the __Host- prefix demands of the cookie.
    assert_eq!(cookie.attribute("Path"), Some(Some("/")), "{}", cookie.raw);
    assert_eq!(cookie.attribute("Domain"), None, "{}", cookie.raw);

    // The gateway reads the cookie under that name.
    let response = client()
        .get(gateway.url("/p/x"))
        .header("cookie", format!("{name}={}", cookie.value))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // ... and not under the plain one.
    let response = client()
        .get(gateway.url("/p/x"))
        .header("cookie", format!("{COOKIE}={}", cookie.value))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (401, "missing_token".into()));

    // Logout clears the same cookie, with the same attributes.
    let response = client()
        .post(gateway.url("/auth/logout"))
        .header("cookie", format!("{name}={}", cookie.value))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cleared = session_cookie(&response, name).expect("a clearing cookie");
    assert_eq!(cleared.max_age(), Some(0), "{}", cleared.raw);
    assert!(cleared.has_flag("Secure"), "{}", cleared.raw);
}

#[tokio::test]
async fn a_custom_cookie_name_is_used() {
    let echo = Echo::start();
    for secure in [true, false] {
        let gateway = Gateway::start(
            Setup::new()
                .session(&format!("secure = {secure}"))
                .session("cookie_name = \"app_sid\"")
                .admin(&format!("token = \"{ADMIN_TOKEN}\""))
                .route(route("private", "/p/*", &echo.url()).authenticated()),
        );
        add_user(&gateway, "alice", &[], &[]).await;
        let response = login(&gateway, "alice", PASSWORD).await;
        assert_eq!(response.status(), 200);
        let cookies = super::set_cookies(&response);
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        assert_eq!(cookies[0].name, "app_sid", "secure = {secure}");
        assert_eq!(cookies[0].has_flag("Secure"), secure, "{}", cookies[0].raw);

        let response = client()
            .get(gateway.url("/p/x"))
            .header("cookie", format!("app_sid={}", cookies[0].value))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "secure = {secure}");
    }
}

#[tokio::test]
async fn every_login_gets_a_fresh_token_and_session() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let (first, first_body) = login_body(&gateway, "alice").await;
    let (second, second_body) = login_body(&gateway, "alice").await;
    assert_ne!(first, second);
    assert_ne!(first_body["session_id"], second_body["session_id"]);
    // Both sessions are live.
    assert_eq!(outcome(&gateway, "/p/x", &first).await.0, 200);
    assert_eq!(outcome(&gateway, "/p/x", &second).await.0, 200);
}

#[tokio::test]
async fn a_cookie_brought_to_login_is_never_adopted() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    // Well-formed, so only the session store can tell it is made up.
    let planted = "AttackerChosenTokenValue0123456789abcdefghijklmnopqrstuvwxyzABCD";
    assert_token_shape(planted);

    for form in [false, true] {
        let request = client()
            .post(gateway.url("/auth/login"))
            .header("cookie", format!("{COOKIE}={planted}"));
        let request = if form {
            request.form(&[("username", "alice"), ("password", PASSWORD)])
        } else {
            request.json(&json!({"username": "alice", "password": PASSWORD}))
        };
        let response = request.send().await.unwrap();
        assert!(response.status().is_success() || response.status() == 303);
        let issued = session_cookie(&response, COOKIE).expect("a session cookie");
        assert_ne!(issued.value, planted, "form = {form}");
        assert_eq!(outcome(&gateway, "/p/x", &issued.value).await.0, 200);
        assert_eq!(
            outcome(&gateway, "/p/x", planted).await,
            (401, "invalid_token".into()),
            "the planted value is still no session (form = {form})"
        );
    }

    // A valid session brought to login is replaced, not reused.
    let jar = browser();
    let old = login_token(&gateway, "alice").await;
    let response = jar
        .post(gateway.url("/auth/login"))
        .header("cookie", format!("{COOKIE}={old}"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let new = session_cookie(&response, COOKIE).expect("a session cookie");
    assert_ne!(new.value, old);
    let response = jar.get(gateway.url("/p/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}
