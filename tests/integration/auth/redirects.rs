//! Where the gateway sends browsers: never off-site after login, and to the
//! login page from a `login_redirect` route.

use super::{add_user, browser, error_of, setup, PASSWORD};
use crate::common::{client, json, route, Echo, Gateway};

#[tokio::test]
async fn form_login_never_redirects_off_site() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "alice", &[], &[]).await;
    let cases = [
        ("https://evil.example", "/"),
        ("//evil.example", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/app\r\nSet-Cookie: x=1", "/"),
        ("/\t/evil.example", "/"),
        ("", "/"),
        ("/app?x=1", "/app?x=1"),
        ("/", "/"),
        ("/deep/path?a=1&b=%2F#frag", "/deep/path?a=1&b=%2F#frag"),
    ];
    for (next, expected) in cases {
        let response = client()
            .post(gateway.url("/auth/login"))
            .form(&[
                ("username", "alice"),
                ("password", PASSWORD),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "next = {next:?}");
        assert_eq!(response.headers()["location"], expected, "next = {next:?}");
    }
}

/// The `next` parameter of a login-page location.
fn next_of(location: &str) -> String {
    let (path, query) = location.split_once('?').expect("a query");
    assert_eq!(path, "/auth/login", "{location}");
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("a query");
    params
        .into_iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("next in {location}"))
}

#[tokio::test]
async fn browser_navigations_without_a_session_go_to_the_login_page() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .route(
                route("app", "/app/*", &echo.url())
                    .authenticated()
                    .extra("login_redirect = true"),
            )
            .route(route("api", "/api/*", &echo.url()).authenticated()),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    let jar = browser();
    let response = jar
        .get(gateway.url("/app/reports?year=2024&q=a%20b"))
        .header("accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(next_of(&location), "/app/reports?year=2024&q=a%20b");
    assert_eq!(echo.hits(), 0);

    // The page it points to carries next into the form, and signing in goes back.
    let page = jar
        .get(gateway.url(&location))
        .header("accept", html)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("name=\"next\" value=\"/app/reports?year=2024&amp;q=a%20b\""),
        "{page}"
    );
    let response = jar
        .post(gateway.url("/auth/login"))
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("next", &next_of(&location)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/app/reports?year=2024&q=a%20b"
    );
    let response = jar
        .get(gateway.url("/app/reports?year=2024&q=a%20b"))
        .header("accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["query"], "year=2024&q=a%20b");
}

#[tokio::test]
async fn api_clients_and_other_routes_get_a_401_not_a_redirect() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .route(
                route("app", "/app/*", &echo.url())
                    .authenticated()
                    .extra("login_redirect = true"),
            )
            .route(route("api", "/api/*", &echo.url()).authenticated()),
    );
    // No Accept, or JSON only: a 401 with the JSON error.
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut request = client().get(gateway.url("/app/x"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert!(response.headers().get("location").is_none(), "{accept:?}");
        assert_eq!(
            error_of(response).await,
            (401, "missing_token".into()),
            "{accept:?}"
        );
    }
    // A form post is not a navigation to redirect.
    let response = client()
        .post(gateway.url("/app/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (401, "missing_token".into()));
    // A route without login_redirect never redirects.
    let response = client()
        .get(gateway.url("/api/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (401, "missing_token".into()));
    // A bad token is redirected like a missing one.
    let response = client()
        .get(gateway.url("/app/x"))
        .header("accept", "text/html")
        .header("cookie", format!("{}=nonsense", super::COOKIE))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(echo.hits(), 0);
}
