//! Console sign-in: the first admin and its forced password change, the
//! console cookie, idle expiry, throttling, sign-out and `GET /auth/me`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;

use super::{Api, CONSOLE_COOKIE};
use crate::auth::admin_sessions::assert_about;
use crate::auth::{add_user, login, login_token, setup, with_token, PASSWORD};
use crate::common::{Gateway, Launch, Setup, SOON};
use crate::hardening::metric;

const WRONG: &str = "not the password at all";

fn credentials(user: &str, password: &str) -> serde_json::Value {
    json!({"username": user, "password": password})
}

#[tokio::test]
async fn first_start_creates_an_admin_whose_generated_password_must_be_changed() {
    let mut gateway = Gateway::start(Setup::new());
    let file = gateway.dir().join("data").join("initial-admin-password");
    let line = gateway.wait_for_log(|v| v["password_file"].is_string(), SOON);
    assert_eq!(line["level"], "info", "{line}");
    assert_eq!(line["user"], "admin");
    assert_eq!(line["password_file"], file.display().to_string());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the password file's mode: {mode:o}");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(password.len() >= 20, "a long random password: {password:?}");
    assert!(
        !gateway.raw_log().contains(&password),
        "the log shows the password"
    );

    let answer = Api::nobody(&gateway)
        .post("/auth/login", credentials("admin", &password))
        .await
        .expect(200);
    assert_eq!(answer.body["role"], "admin");
    assert_eq!(answer.body["must_change_password"], true);
    let first = Api::nobody(&gateway).signed_in(&answer);

    // Nothing but the password change, until it is done.
    first
        .get("/routes")
        .await
        .expect_error(403, "password_change_required");
    first
        .get("/users")
        .await
        .expect_error(403, "password_change_required");
    first
        .post("/users", json!({"username": "bob", "password": PASSWORD}))
        .await
        .expect_error(403, "password_change_required");
    first
        .put("/log-level", json!({"level": "debug"}))
        .await
        .expect_error(403, "password_change_required");
    let me = first.get("/auth/me").await.expect(200).body;
    assert_eq!(me["must_change_password"], true);
    let answer = first
        .post(
            "/auth/password",
            json!({"current_password": password, "new_password": password}),
        )
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["new_password"]);
    assert!(
        file.exists(),
        "the file stays until the password is changed"
    );

    let new_password = "the admin's own passphrase";
    let answer = first
        .post(
            "/auth/password",
            json!({"current_password": password, "new_password": new_password}),
        )
        .await
        .expect(200);
    assert_eq!(answer.body["must_change_password"], false);
    assert!(!file.exists(), "the password file is deleted once changed");
    let admin = first.signed_in(&answer);
    first
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    admin.get("/routes").await.expect(200);
    admin
        .post("/users", json!({"username": "bob", "password": PASSWORD}))
        .await
        .expect(201);
    assert!(!gateway.raw_log().contains(&password));
    assert!(!gateway.raw_log().contains(new_password));

    // A restart finds an admin: no new user, no new file.
    gateway.stop();
    let gateway = gateway.relaunch().start();
    assert!(!file.exists());
    assert!(!gateway.raw_log().contains("password_file"));
    let admin = Api::sign_in(&gateway, "admin", new_password).await;
    let users = admin.get("/users").await.expect(200).body;
    let mut names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["admin", "bob"], "{users}");
}

#[tokio::test]
async fn an_existing_admin_gets_no_generated_password() {
    let launch = Launch::new(setup());
    let out = launch.cli(
        &["user", "add", "root", "--role", "admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{out:?}");
    let gateway = launch.start();
    assert!(!gateway
        .dir()
        .join("data")
        .join("initial-admin-password")
        .exists());
    let answer = Api::nobody(&gateway)
        .post("/auth/login", credentials("root", PASSWORD))
        .await
        .expect(200);
    assert_eq!(answer.body["must_change_password"], false);
    Api::nobody(&gateway)
        .post("/auth/login", credentials("admin", WRONG))
        .await
        .expect_error(401, "invalid_credentials");
}

#[tokio::test]
async fn the_console_cookie_is_http_only_same_site_strict_and_not_secure_without_tls() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "ada", &["admin"], &[]).await;
    let answer = Api::nobody(&gateway)
        .post("/auth/login", credentials("ada", PASSWORD))
        .await
        .expect(200);
    let cookie = answer.cookie(CONSOLE_COOKIE).expect("the console cookie");
    assert!(cookie.has_flag("HttpOnly"), "{}", cookie.raw);
    assert_eq!(
        cookie.attribute("SameSite"),
        Some(Some("Strict")),
        "{}",
        cookie.raw
    );
    assert_eq!(cookie.attribute("Path"), Some(Some("/")), "{}", cookie.raw);
    assert_eq!(cookie.attribute("Secure"), None, "{}", cookie.raw);
    assert_eq!(cookie.attribute("Domain"), None, "{}", cookie.raw);
    let max_age = cookie.max_age().expect("a Max-Age");
    assert!(
        (8 * 3600 - 60..=8 * 3600).contains(&max_age),
        "the session's lifetime: {}",
        cookie.raw
    );
    assert_about(&answer.body["expires_at"], Duration::from_secs(8 * 3600));
    let console = Api::nobody(&gateway).signed_in(&answer);
    let me = console.get("/auth/me").await.expect(200).body;
    assert_eq!(me["csrf_token"], answer.body["csrf_token"]);
    assert_eq!(me["via"], "console");

    // The gateway's own session cookie is no console session, and the other
    // way round.
    let proxy_token = login_token(&gateway, "ada").await;
    let proxied = Api {
        gateway: &gateway,
        caller: super::Caller::Console {
            cookie: proxy_token,
            csrf: String::new(),
        },
    };
    proxied
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    let super::Caller::Console { cookie, .. } = &console.caller else {
        unreachable!()
    };
    let response = with_token(Method::GET, &gateway.url("/anything"), cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "no route: the cookie means nothing there"
    );
}

#[tokio::test]
async fn sign_out_ends_the_console_session_and_clears_its_cookie() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "ada", &["admin"], &[]).await;
    let console = Api::console(&gateway, "ada").await;
    let other = Api::console(&gateway, "ada").await;
    let answer = console.sign_out().await.expect(200);
    assert_eq!(answer.body["status"], "logged_out");
    let cleared = answer
        .cookie(CONSOLE_COOKIE)
        .expect("a cookie that clears it");
    assert_eq!(cleared.value, "");
    assert_eq!(cleared.max_age(), Some(0), "{}", cleared.raw);
    console
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    console.sign_out().await.expect_error(401, "unauthorized");
    // The user's other console session is another sign-in: it stays.
    other.get("/auth/me").await.expect(200);
}

#[tokio::test]
async fn console_sessions_end_after_the_idle_timeout() {
    let gateway = Gateway::start(setup().admin("session_idle_timeout = \"3s\""));
    add_user(&gateway, "ada", &["admin"], &[]).await;
    let console = Api::console(&gateway, "ada").await;
    // Activity keeps it going well past the timeout.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        console.get("/auth/me").await.expect(200);
    }
    // Time must pass without a call: no polling here.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    console
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    console
        .put("/log-level", json!({"level": "debug"}))
        .await
        .expect_error(401, "unauthorized");
    Api::console(&gateway, "ada")
        .await
        .get("/auth/me")
        .await
        .expect(200);
}

#[tokio::test]
async fn console_sign_in_is_throttled_before_the_password_is_checked() {
    let gateway = Gateway::start(
        setup()
            .login("max_failures_per_user = 3")
            .login("max_failures_per_ip = 1000"),
    );
    add_user(&gateway, "ada", &["admin"], &[]).await;
    let nobody = Api::nobody(&gateway);
    let burst = (0..20).map(|_| nobody.post("/auth/login", credentials("ada", WRONG)));
    let statuses: Vec<u16> = join_all(burst).await.iter().map(|a| a.status).collect();
    let wrong = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(wrong + throttled, 20, "{statuses:?}");
    assert!(wrong <= 3, "{wrong} passwords were checked: {statuses:?}");
    let verified = metric(&gateway, "portcullis_password_verifications_total", &[]).await;
    assert_eq!(
        verified as usize, wrong,
        "argon2 ran once per 401, never for a 429"
    );

    // The right password is refused too, with a usable Retry-After.
    let answer = nobody
        .post("/auth/login", credentials("ada", PASSWORD))
        .await
        .expect_error(429, "rate_limit_exceeded");
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(answer.body["retry_after"], retry_after);
    assert!(answer.cookie(CONSOLE_COOKIE).is_none());

    // The admin sees and lifts it.
    let token = Api::token(&gateway);
    let listed = token.get("/login-throttle").await.expect(200).body;
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "user" && e["value"] == "ada")
        .unwrap_or_else(|| panic!("ada is listed: {listed}"));
    assert_eq!(entry["locked"], true, "{listed}");
    token.delete("/login-throttle/user/ada").await.expect(204);
    Api::console(&gateway, "ada").await;

    // It is the gateway login's throttle: failures there count here.
    for _ in 0..3 {
        assert_eq!(login(&gateway, "ada", WRONG).await.status(), 401);
    }
    nobody
        .post("/auth/login", credentials("ada", PASSWORD))
        .await
        .expect_error(429, "rate_limit_exceeded");
}

#[tokio::test]
async fn sign_in_refusals_look_alike_whatever_the_reason() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "alice", &["staff"], &[]).await;
    add_user(&gateway, "ada", &["admin"], &[]).await;
    add_user(&gateway, "dora", &["admin"], &[]).await;
    Api::token(&gateway)
        .patch("/users/dora", json!({"disabled": true}))
        .await
        .expect(200);
    let nobody = Api::nobody(&gateway);
    let mut messages = Vec::new();
    for (user, password) in [
        ("ada", WRONG),
        ("alice", PASSWORD),
        ("nobody-at-all", PASSWORD),
        ("dora", PASSWORD),
        ("not a valid name!", PASSWORD),
    ] {
        let answer = nobody
            .post("/auth/login", credentials(user, password))
            .await
            .expect_error(401, "invalid_credentials");
        assert!(answer.cookie(CONSOLE_COOKIE).is_none());
        messages.push(answer.body["message"].clone());
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "{messages:?}");
    // A malformed body is a 400.
    nobody
        .post("/auth/login", json!({"username": "ada"}))
        .await
        .expect_error(400, "bad_request");
    nobody
        .call(Method::POST, "/auth/login")
        .header("content-type", "text/plain")
        .send()
        .await
        .expect_error(400, "bad_request");
    // Refused sign-ins go to the system log, not the audit trail.
    gateway.wait_for_log(|v| v["msg"] == "admin: console login refused", SOON);
    let audit = Api::token(&gateway)
        .get("/audit?action=console")
        .await
        .expect(200);
    assert_eq!(audit.body, json!([]), "{}", audit.text);
}

#[tokio::test]
async fn a_password_change_is_checked_like_a_login_and_starts_a_new_session() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "ada", &["admin"], &[]).await;
    let console = Api::console(&gateway, "ada").await;
    let proxy_session = login_token(&gateway, "ada").await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});

    console
        .post("/auth/password", change(WRONG, "a brand new passphrase"))
        .await
        .expect_error(401, "invalid_credentials");
    let answer = console
        .post("/auth/password", change(PASSWORD, "short"))
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["new_password"]);
    console
        .post(
            "/auth/password",
            json!({"new_password": "a brand new passphrase"}),
        )
        .await
        .expect_error(400, "bad_request");
    // The bearer token has no password to change.
    Api::token(&gateway)
        .post("/auth/password", change(PASSWORD, "a brand new passphrase"))
        .await
        .expect_error(400, "bad_request");

    let answer = console
        .post("/auth/password", change(PASSWORD, "a brand new passphrase"))
        .await
        .expect(200);
    let renewed = console.signed_in(&answer);
    let super::Caller::Console { csrf: old_csrf, .. } = &console.caller else {
        unreachable!()
    };
    assert_ne!(answer.body["csrf_token"], old_csrf.as_str());
    console
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    renewed.get("/auth/me").await.expect(200);
    // Every session of the user ended: the gateway's too.
    let response = with_token(Method::GET, &gateway.url("/auth/session"), &proxy_session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    Api::nobody(&gateway)
        .post("/auth/login", credentials("ada", PASSWORD))
        .await
        .expect_error(401, "invalid_credentials");
    Api::sign_in(&gateway, "ada", "a brand new passphrase").await;
}

#[tokio::test]
async fn me_describes_the_caller() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "vera", &["viewer"], &[]).await;
    let me = Api::token(&gateway).get("/auth/me").await.expect(200).body;
    assert_eq!(
        me,
        json!({"user": "token", "role": "admin", "via": "token"})
    );
    let answer = Api::nobody(&gateway)
        .post("/auth/login", credentials("vera", PASSWORD))
        .await
        .expect(200);
    let viewer = Api::nobody(&gateway).signed_in(&answer);
    let me = viewer.get("/auth/me").await.expect(200).body;
    assert_eq!(me["user"], "vera");
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["via"], "console");
    assert_eq!(me["must_change_password"], false);
    assert_eq!(me["csrf_token"], answer.body["csrf_token"]);
    assert_eq!(me["expires_at"], answer.body["expires_at"]);
    assert!(me["session_id"].as_str().is_some_and(|id| !id.is_empty()));
}
