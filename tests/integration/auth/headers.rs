//! What upstreams learn about the user: identity headers only from the
//! gateway, never from the client, and never the session cookie.

use serde_json::Value;

use super::{add_user, echoed, login_body, protected, setup, with_token, COOKIE};
use crate::common::{client, json, route, Echo, Gateway};

const SPOOFED: [(&str, &str); 3] = [
    ("x-user-id", "mallory"),
    ("x-user-roles", "admin,root"),
    ("x-session-id", "ffffffffffffffffffffffffffffffff"),
];

/// GETs `path`, with `token` if given and the spoofed headers, and returns
/// what the echo saw.
async fn spoofed_get(
    gateway: &Gateway,
    path: &str,
    token: Option<&str>,
    spoofed: &[(&str, &str)],
) -> Value {
    let mut request = match token {
        Some(token) => with_token(reqwest::Method::GET, &gateway.url(path), token),
        None => client().get(gateway.url(path)),
    };
    for (name, value) in spoofed {
        // Twice, in different cases, to catch a filter that only drops one.
        request = request
            .header(*name, *value)
            .header(name.to_ascii_uppercase(), *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    json(response).await
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &["staff", "dev"], &[]).await;
    let (token, login) = login_body(&gateway, "alice").await;
    let session_id = login["session_id"].as_str().unwrap();

    // A public route without a session: none of them arrive.
    let body = spoofed_get(&gateway, "/pub/x", None, &SPOOFED).await;
    for (name, _) in SPOOFED {
        assert_eq!(
            echoed(&body, name),
            Vec::<&str>::new(),
            "{name} on a public route"
        );
    }

    // With a session, on a public and a protected route: only the real ones.
    for path in ["/pub/x", "/p/x"] {
        let body = spoofed_get(&gateway, path, Some(&token), &SPOOFED).await;
        assert_eq!(echoed(&body, "x-user-id"), ["alice"], "{path}");
        assert_eq!(echoed(&body, "x-user-roles"), ["staff,dev"], "{path}");
        assert_eq!(echoed(&body, "x-session-id"), [session_id], "{path}");
    }
}

#[tokio::test]
async fn custom_identity_header_names_are_set_and_stripped() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .session("user_id_header = \"X-Auth-User\"")
            .session("roles_header = \"X-Auth-Roles\"")
            .session("session_id_header = \"X-Auth-Session\"")
            .route(route("private", "/p/*", &echo.url()).authenticated())
            .route(route("public", "/pub/*", &echo.url())),
    );
    add_user(&gateway, "alice", &["staff"], &[]).await;
    let (token, login) = login_body(&gateway, "alice").await;
    let spoofed = [
        ("x-auth-user", "mallory"),
        ("x-auth-roles", "admin"),
        ("x-auth-session", "ffffffffffffffffffffffffffffffff"),
    ];

    let body = spoofed_get(&gateway, "/pub/x", None, &spoofed).await;
    for (name, _) in spoofed {
        assert_eq!(echoed(&body, name), Vec::<&str>::new(), "{name}");
    }
    let body = spoofed_get(&gateway, "/p/x", Some(&token), &spoofed).await;
    assert_eq!(echoed(&body, "x-auth-user"), ["alice"]);
    assert_eq!(echoed(&body, "x-auth-roles"), ["staff"]);
    assert_eq!(
        echoed(&body, "x-auth-session"),
        [login["session_id"].as_str().unwrap()]
    );
    // The default names are not used any more.
    for name in ["x-user-id", "x-user-roles", "x-session-id"] {
        assert_eq!(echoed(&body, name), Vec::<&str>::new(), "{name}");
    }
}

#[tokio::test]
async fn the_session_cookie_is_not_forwarded_but_other_cookies_are() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let (token, _) = login_body(&gateway, "alice").await;

    for path in ["/p/x", "/pub/x"] {
        let response = client()
            .get(gateway.url(path))
            .header(
                "cookie",
                format!("theme=dark; {COOKIE}={token}; cart=a%3Db; lang=\"en\""),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = json(response).await;
        assert_eq!(
            echoed(&body, "cookie"),
            ["theme=dark; cart=a%3Db; lang=\"en\""],
            "{path}"
        );
        assert!(!body.to_string().contains(&token), "{path}: {body}");

        // Only the session cookie: no Cookie header at all.
        let response = with_token(reqwest::Method::GET, &gateway.url(path), &token)
            .send()
            .await
            .unwrap();
        let body = json(response).await;
        assert_eq!(echoed(&body, "cookie"), Vec::<&str>::new(), "{path}");
    }

    // An invalid session cookie on a public route is not passed on either.
    let response = client()
        .get(gateway.url("/pub/x"))
        .header("cookie", format!("{COOKIE}=not-a-real-token; theme=dark"))
        .send()
        .await
        .unwrap();
    let body = json(response).await;
    assert_eq!(echoed(&body, "cookie"), ["theme=dark"]);
    // A cookie whose name merely resembles the session cookie's is someone else's.
    let response = client()
        .get(gateway.url("/pub/x"))
        .header("cookie", format!("{COOKIE}_pref=1; x{COOKIE}=2"))
        .send()
        .await
        .unwrap();
    let body = json(response).await;
    assert_eq!(
        echoed(&body, "cookie"),
        [format!("{COOKIE}_pref=1; x{COOKIE}=2").as_str()]
    );
}
