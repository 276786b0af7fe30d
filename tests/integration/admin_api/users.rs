//! Users and the gateway's sessions through the API: accounts, passwords,
//! roles, disabling; sessions listed with their device (never a token),
//! issued and revoked.

use reqwest::Method;
use serde_json::{json, Value};

use super::Api;
use crate::auth::{add_user, login, login_token, protected, setup, with_token, PASSWORD};
use crate::common::{client, Echo, Gateway};

/// The status of `GET /p/x` on the proxy with a session token.
async fn status_with(gateway: &Gateway, token: &str) -> u16 {
    with_token(Method::GET, &gateway.url("/p/x"), token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn users_are_made_listed_changed_and_deleted() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    let api = Api::token(&gateway);
    let created = api
        .post(
            "/users",
            json!({"username": "alice", "password": PASSWORD, "roles": ["staff"], "permissions": ["read"]}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["username"], "alice");
    assert_eq!(created["roles"], json!(["staff"]));
    assert_eq!(created["permissions"], json!(["read"]));
    assert_eq!(created["disabled"], false);
    assert_eq!(created["must_change_password"], false);
    assert!(!created.to_string().contains(PASSWORD));
    assert_eq!(api.get("/users/alice").await.expect(200).body, created);
    let listed = api.get("/users").await.expect(200).body;
    assert!(listed.as_array().unwrap().contains(&created), "{listed}");
    assert!(!listed.to_string().contains("$argon2"), "no password hash");

    let token = login_token(&gateway, "alice").await;
    let changed = api
        .patch("/users/alice", json!({"roles": ["staff", "ops"]}))
        .await
        .expect(200)
        .body;
    assert_eq!(changed["user"]["roles"], json!(["staff", "ops"]));
    assert_eq!(changed["user"]["permissions"], json!(["read"]));
    assert_eq!(changed["sessions_revoked"], 1);
    assert_eq!(status_with(&gateway, &token).await, 401);

    let token = login_token(&gateway, "alice").await;
    api.delete("/users/alice").await.expect(204);
    assert_eq!(status_with(&gateway, &token).await, 401);
    api.get("/users/alice").await.expect_error(404, "not_found");
    api.delete("/users/alice")
        .await
        .expect_error(404, "not_found");
    api.patch("/users/alice", json!({"disabled": true}))
        .await
        .expect_error(404, "not_found");
    let answer = api.delete("/users/alice/sessions").await.expect(200);
    assert_eq!(answer.body, json!({"revoked": 0}));
}

#[tokio::test]
async fn setting_a_password_and_disabling_end_every_session() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &["admin"], &[]).await;
    let api = Api::token(&gateway);
    let new_password = "alice's brand new password";

    let token = login_token(&gateway, "alice").await;
    let console = Api::console(&gateway, "alice").await;
    let answer = api
        .patch("/users/alice", json!({"password": new_password}))
        .await
        .expect(200)
        .body;
    assert_eq!(answer["sessions_revoked"], 1, "{answer}");
    assert_eq!(status_with(&gateway, &token).await, 401);
    console
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 401);
    assert_eq!(login(&gateway, "alice", new_password).await.status(), 200);

    let console = Api::sign_in(&gateway, "alice", new_password).await;
    let answer = api
        .patch("/users/alice", json!({"disabled": true}))
        .await
        .expect(200)
        .body;
    assert_eq!(answer["user"]["disabled"], true);
    assert_eq!(answer["sessions_revoked"], 1, "{answer}");
    console
        .get("/auth/me")
        .await
        .expect_error(401, "unauthorized");
    assert_eq!(login(&gateway, "alice", new_password).await.status(), 401);
    Api::nobody(&gateway)
        .post(
            "/auth/login",
            json!({"username": "alice", "password": new_password}),
        )
        .await
        .expect_error(401, "invalid_credentials");
    api.post("/sessions", json!({"user": "alice"}))
        .await
        .expect_error(409, "conflict");

    let answer = api
        .patch("/users/alice", json!({"disabled": false}))
        .await
        .expect(200)
        .body;
    assert_eq!(answer["user"]["disabled"], false);
    assert_eq!(login(&gateway, "alice", new_password).await.status(), 200);
    Api::sign_in(&gateway, "alice", new_password).await;
}

#[tokio::test]
async fn bad_user_fields_are_all_named_and_nothing_is_applied() {
    let gateway = Gateway::start(setup().login("min_password_length = 16"));
    add_user(&gateway, "alice", &["staff"], &[]).await;
    let api = Api::token(&gateway);
    let before = api.get("/users").await.expect(200).body;

    let answer = api
        .post(
            "/users",
            json!({"username": "no spaces", "password": "short", "roles": ["a,b"], "permissions": [""]}),
        )
        .await
        .expect_error(400, "bad_request");
    assert_eq!(
        answer.error_keys(),
        ["username", "password", "roles", "permissions"],
        "{}",
        answer.text
    );
    let answer = api
        .post(
            "/users",
            json!({"username": "bob", "password": "fifteen chars!!"}),
        )
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["password"]);
    assert!(answer.text.contains("16"), "{}", answer.text);
    api.post("/users", json!({"username": "bob"}))
        .await
        .expect_error(400, "bad_request");
    api.post(
        "/users",
        json!({"username": "bob", "password": PASSWORD, "colour": "red"}),
    )
    .await
    .expect_error(400, "bad_request");
    api.post("/users", json!({"username": "alice", "password": PASSWORD}))
        .await
        .expect_error(409, "conflict");

    // A change with one bad field applies none of the good ones.
    let answer = api
        .patch(
            "/users/alice",
            json!({"password": "a perfectly good password", "roles": ["a,b"], "disabled": true}),
        )
        .await
        .expect_error(400, "bad_request");
    assert_eq!(answer.error_keys(), ["roles"], "{}", answer.text);
    let answer = api
        .patch(
            "/users/alice",
            json!({"password": "short", "permissions": [" "]}),
        )
        .await
        .expect_error(400, "bad_request");
    assert_eq!(
        answer.error_keys(),
        ["password", "permissions"],
        "{}",
        answer.text
    );
    api.patch("/users/alice", json!({"disabled": "yes"}))
        .await
        .expect_error(400, "bad_request");

    assert_eq!(api.get("/users").await.expect(200).body, before);
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 200);
}

/// Logs in to the proxy with a User-Agent; returns the token.
async fn login_as(gateway: &Gateway, user: &str, agent: &str) -> String {
    let response = client()
        .post(gateway.url("/auth/login"))
        .header("user-agent", agent)
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    crate::auth::session_cookie(&response, crate::auth::COOKIE)
        .unwrap()
        .value
}

fn by_id<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no session {id} in {list}"))
}

#[tokio::test]
async fn sessions_are_listed_with_their_device_and_never_their_token() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "bob", &[], &[]).await;
    let api = Api::token(&gateway);
    let alice = login_as(&gateway, "alice", "Listing-Test/1.0 (alice's laptop)").await;
    let bob = login_as(&gateway, "bob", "Listing-Test/2.0").await;
    let issued = api
        .post("/sessions", json!({"user": "alice", "ttl": "1h"}))
        .await
        .expect(201)
        .body;
    let issued_token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&gateway, &issued_token).await, 200);

    let all = api.get("/sessions").await.expect(200);
    for token in [&alice, &bob, &issued_token] {
        assert!(
            !all.text.contains(token.as_str()),
            "a token is listed: {}",
            all.text
        );
    }
    assert_eq!(all.body.as_array().unwrap().len(), 3, "{}", all.text);
    let mine = api.get("/sessions?user=alice").await.expect(200).body;
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
    assert!(mine
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["user"] == "alice"));
    let laptop = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user_agent"] == "Listing-Test/1.0 (alice's laptop)")
        .unwrap_or_else(|| panic!("the login's device: {mine}"));
    assert_eq!(laptop["client_ip"], "127.0.0.1");
    assert_eq!(laptop["revoked"], false);
    for (earlier, later) in [
        ("created_at", "last_seen"),
        ("last_seen", "idle_expires_at"),
        ("idle_expires_at", "expires_at"),
    ] {
        let at = |key: &str| humantime::parse_rfc3339(laptop[key].as_str().unwrap()).unwrap();
        assert!(
            at(earlier) <= at(later),
            "{earlier} after {later}: {laptop}"
        );
    }
    let by_admin = by_id(&mine, issued["id"].as_str().unwrap());
    assert_eq!(
        by_admin["user_agent"],
        "issued by token through the admin API"
    );
    assert_eq!(by_admin["expires_at"], issued["expires_at"]);
    assert_eq!(
        api.get("/sessions?user=carol").await.expect(200).body,
        json!([])
    );

    // Revoking one.
    let laptop_id = laptop["id"].as_str().unwrap().to_owned();
    api.delete(&format!("/sessions/{laptop_id}"))
        .await
        .expect(204);
    assert_eq!(status_with(&gateway, &alice).await, 401);
    assert_eq!(status_with(&gateway, &bob).await, 200);
    let mine = api.get("/sessions?user=alice").await.expect(200).body;
    assert_eq!(by_id(&mine, &laptop_id)["revoked"], true, "{mine}");
    api.delete("/sessions/0123456789abcdef0123456789abcdef")
        .await
        .expect_error(404, "not_found");

    // Revoking all of a user's.
    let answer = api.delete("/users/alice/sessions").await.expect(200).body;
    assert_eq!(answer, json!({"revoked": 1}));
    assert_eq!(status_with(&gateway, &issued_token).await, 401);
    assert_eq!(status_with(&gateway, &bob).await, 200);
}

#[tokio::test]
async fn issuing_a_session_checks_its_fields() {
    let gateway = Gateway::start(setup());
    add_user(&gateway, "alice", &[], &[]).await;
    let api = Api::token(&gateway);
    for ttl in ["0s", "soon", "-1h"] {
        let answer = api
            .post("/sessions", json!({"user": "alice", "ttl": ttl}))
            .await
            .expect_error(400, "bad_request");
        assert_eq!(answer.error_keys(), ["ttl"], "{ttl}: {}", answer.text);
    }
    api.post("/sessions", json!({"ttl": "1h"}))
        .await
        .expect_error(400, "bad_request");
    let answer = api
        .post("/sessions", json!({"user": "ghost"}))
        .await
        .expect_error(404, "not_found");
    assert!(answer.body.get("token").is_none());
    assert_eq!(api.get("/sessions").await.expect(200).body, json!([]));
}
