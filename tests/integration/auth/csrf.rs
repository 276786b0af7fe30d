//! Cross-site request forgery: unsafe cookie-authenticated requests must come
//! from the gateway's own origin or a trusted one.

use reqwest::Method;
use serde_json::json;

use super::{add_user, error_of, login_token, outcome, setup, with_token, PASSWORD};
use crate::common::{client, route, Echo, Gateway};

const EVIL: &str = "http://evil.example";

fn csrf_gateway(echo: &Echo) -> Gateway {
    Gateway::start(
        setup()
            .session("trusted_origins = [\"https://app.example.com\"]")
            .route(route("private", "/p/*", &echo.url()).authenticated())
            .route(
                route("hook", "/hook/*", &echo.url())
                    .authenticated()
                    .extra("csrf = false"),
            ),
    )
}

/// Sends `method path` with the session and these extra headers; returns the
/// status and the error code (empty for a forwarded 200).
async fn send(
    gateway: &Gateway,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = with_token(method, &gateway.url(path), token).body("{}");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    if response.status() == 200 {
        return (200, String::new());
    }
    error_of(response).await
}

#[tokio::test]
async fn cross_site_unsafe_requests_are_rejected_and_not_forwarded() {
    let echo = Echo::start();
    let gateway = csrf_gateway(&echo);
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;

    let rejected = (403, "csrf_rejected".to_owned());
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        for headers in [
            &[("origin", EVIL)][..],
            &[("origin", "null")],
            &[("origin", "https://app.example.com.evil.example")],
            // Same host, other scheme or port: another origin.
            &[("origin", &format!("https://{}", gateway.proxy_addr()))],
            &[("sec-fetch-site", "cross-site")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", &format!("http://{}", gateway.proxy_addr())),
            ],
        ] {
            assert_eq!(
                send(&gateway, method.clone(), "/p/x", &token, headers).await,
                rejected,
                "{method} with {headers:?}"
            );
        }
    }
    assert_eq!(echo.hits(), 0, "rejected requests are never forwarded");
    // The session itself is fine.
    assert_eq!(outcome(&gateway, "/p/x", &token).await.0, 200);
}

#[tokio::test]
async fn same_origin_trusted_origins_and_safe_methods_are_allowed() {
    let echo = Echo::start();
    let gateway = csrf_gateway(&echo);
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;
    let own = format!("http://{}", gateway.proxy_addr());

    let allowed = [
        (Method::POST, "/p/x", vec![("origin", own.as_str())]),
        (
            Method::DELETE,
            "/p/x",
            vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        ),
        (
            Method::POST,
            "/p/x",
            vec![("origin", "https://app.example.com")],
        ),
        (
            Method::PUT,
            "/p/x",
            vec![("origin", "https://APP.example.com/")],
        ),
        // No Origin at all: not a browser's cross-origin request.
        (Method::POST, "/p/x", vec![]),
        (
            Method::POST,
            "/p/x",
            vec![("sec-fetch-site", "same-origin")],
        ),
        (Method::POST, "/p/x", vec![("sec-fetch-site", "none")]),
        // A route that opted out.
        (Method::POST, "/hook/x", vec![("origin", EVIL)]),
        (
            Method::POST,
            "/hook/x",
            vec![("sec-fetch-site", "cross-site")],
        ),
        // Safe methods change nothing.
        (
            Method::GET,
            "/p/x",
            vec![("origin", EVIL), ("sec-fetch-site", "cross-site")],
        ),
        (Method::HEAD, "/p/x", vec![("origin", EVIL)]),
        (Method::OPTIONS, "/p/x", vec![("origin", EVIL)]),
    ];
    for (method, path, headers) in &allowed {
        assert_eq!(
            send(&gateway, method.clone(), path, &token, headers).await,
            (200, String::new()),
            "{method} {path} with {headers:?}"
        );
    }
    assert_eq!(echo.hits(), allowed.len());
}

#[tokio::test]
async fn login_and_logout_from_a_foreign_origin_are_rejected() {
    let echo = Echo::start();
    let gateway = csrf_gateway(&echo);
    add_user(&gateway, "alice", &[], &[]).await;

    for foreign in [("origin", EVIL), ("sec-fetch-site", "cross-site")] {
        // Login CSRF, as JSON and as a form.
        let response = client()
            .post(gateway.url("/auth/login"))
            .header(foreign.0, foreign.1)
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("set-cookie").is_none());
        assert_eq!(
            error_of(response).await,
            (403, "csrf_rejected".into()),
            "{foreign:?}"
        );
        let response = client()
            .post(gateway.url("/auth/login"))
            .header(foreign.0, foreign.1)
            .form(&[
                ("username", "alice"),
                ("password", PASSWORD),
                ("next", "/p/x"),
            ])
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("set-cookie").is_none());
        assert_eq!(
            error_of(response).await,
            (403, "csrf_rejected".into()),
            "{foreign:?}"
        );
    }
    let (_, sessions) = super::admin(&gateway, Method::GET, "/admin/api/sessions", None).await;
    assert_eq!(sessions, json!([]), "no session was created");

    // Logout CSRF: the session survives.
    let token = login_token(&gateway, "alice").await;
    for foreign in [("origin", EVIL), ("sec-fetch-site", "cross-site")] {
        let response = with_token(Method::POST, &gateway.url("/auth/logout"), &token)
            .header(foreign.0, foreign.1)
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("set-cookie").is_none());
        assert_eq!(
            error_of(response).await,
            (403, "csrf_rejected".into()),
            "{foreign:?}"
        );
    }
    assert_eq!(outcome(&gateway, "/p/x", &token).await.0, 200);

    // From the gateway's own origin both work.
    let own = format!("http://{}", gateway.proxy_addr());
    let response = client()
        .post(gateway.url("/auth/login"))
        .header("origin", &own)
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = with_token(Method::POST, &gateway.url("/auth/logout"), &token)
        .header("origin", &own)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        outcome(&gateway, "/p/x", &token).await,
        (401, "token_revoked".into())
    );
}
