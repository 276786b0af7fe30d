//! Sessions on disk: they survive restarts and crashes, and the storage
//! never holds a token that could be replayed.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;

use super::{
    add_user, admin, login_body, login_token, outcome, protected, session_cookie, with_token,
    COOKIE, PASSWORD,
};
use crate::common::{client, eventually, json, Echo, Gateway, SOON};

#[tokio::test]
async fn sessions_survive_a_restart() {
    let echo = Echo::start();
    let mut gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &["staff"], &[]).await;
    let (token, login) = login_body(&gateway, "alice").await;
    let (_, issued) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice", "ttl": "1h"})),
    )
    .await;
    let issued = issued["token"].as_str().unwrap().to_owned();
    gateway.stop();

    let gateway = gateway.relaunch().start();
    for token in [&token, &issued] {
        assert_eq!(outcome(&gateway, "/p/x", token).await.0, 200);
    }
    let response = super::get_with(&gateway, "/auth/session", &token).await;
    let body = json(response).await;
    assert_eq!(body["user"], "alice");
    assert_eq!(body["roles"], json!(["staff"]));
    assert_eq!(body["session_id"], login["session_id"]);
    assert_eq!(body["expires_at"], login["expires_at"]);
}

#[tokio::test]
async fn logins_and_logouts_survive_sigkill() {
    let echo = Echo::start();
    let mut gateway = Gateway::start(protected(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let kept = login_token(&gateway, "alice").await;
    let logged_out = login_token(&gateway, "alice").await;
    let response = with_token(Method::POST, &gateway.url("/auth/logout"), &logged_out)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Killed the moment the login is answered.
    let last = login_token(&gateway, "alice").await;
    gateway.kill();

    let gateway = gateway.relaunch().start();
    assert_eq!(outcome(&gateway, "/p/x", &kept).await.0, 200);
    assert_eq!(outcome(&gateway, "/p/x", &last).await.0, 200);
    assert_eq!(
        outcome(&gateway, "/p/x", &logged_out).await,
        (401, "token_revoked".into())
    );
}

#[tokio::test]
async fn a_rotated_token_survives_sigkill() {
    let echo = Echo::start();
    let mut gateway = Gateway::start(
        protected(&echo)
            .session("rotate_after = \"500ms\"")
            .session("rotation_grace = \"1h\""),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let old = login_token(&gateway, "alice").await;
    let new = eventually("the token to rotate", SOON, || async {
        let response = super::get_with(&gateway, "/p/x", &old).await;
        assert_eq!(response.status(), 200);
        session_cookie(&response, COOKIE).map(|c| c.value)
    })
    .await;
    gateway.kill();

    // The old token first: a token in its grace period is never rotated,
    // while the new one may be due for rotation again by now.
    let gateway = gateway.relaunch().start();
    assert_eq!(
        outcome(&gateway, "/p/x", &old).await.0,
        200,
        "still within its grace period"
    );
    assert_eq!(outcome(&gateway, "/p/x", &new).await.0, 200);
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the storage directory") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .any(|(i, &b)| b == first && haystack[i + 1..].starts_with(rest))
}

/// A token as text, as its 48 raw bytes (16 of session id, which is public,
/// then 32 of secret), its secret alone in raw and hex, and every base64
/// spelling of the token and the secret.
fn spellings(token: &str) -> Vec<(String, Vec<u8>)> {
    let raw = URL_SAFE_NO_PAD.decode(token).expect("a base64url token");
    assert_eq!(raw.len(), 48);
    let secret = raw[16..].to_vec();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![
        ("text".to_owned(), token.as_bytes().to_vec()),
        ("raw bytes".to_owned(), raw.clone()),
        ("secret".to_owned(), secret.clone()),
        ("secret in hex".to_owned(), hex.into_bytes()),
    ];
    for (name, engine) in [
        ("standard", &STANDARD),
        ("standard, unpadded", &STANDARD_NO_PAD),
        ("url-safe", &URL_SAFE),
    ] {
        out.push((
            format!("{name} base64 of the bytes"),
            engine.encode(&raw).into_bytes(),
        ));
        out.push((
            format!("{name} base64 of the text"),
            engine.encode(token).into_bytes(),
        ));
        out.push((
            format!("{name} base64 of the secret"),
            engine.encode(&secret).into_bytes(),
        ));
    }
    out
}

#[tokio::test]
async fn the_storage_never_holds_a_token() {
    let echo = Echo::start();
    let mut gateway = Gateway::start(
        protected(&echo)
            .session("rotate_after = \"500ms\"")
            .session("rotation_grace = \"1h\""),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "bob", &[], &[]).await;
    let mut tokens = Vec::new();
    let (alice, login) = login_body(&gateway, "alice").await;
    let session_id = login["session_id"].as_str().unwrap().to_owned();
    tokens.push(alice.clone());
    let response = client()
        .post(gateway.url("/auth/login"))
        .form(&[("username", "bob"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    tokens.push(session_cookie(&response, COOKIE).unwrap().value);
    let (_, issued) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice", "ttl": "1h"})),
    )
    .await;
    tokens.push(issued["token"].as_str().unwrap().to_owned());
    let rotated = eventually("the token to rotate", SOON, || async {
        let response = super::get_with(&gateway, "/p/x", &alice).await;
        session_cookie(&response, COOKIE).map(|c| c.value)
    })
    .await;
    tokens.push(rotated);
    gateway.stop();
    // A session issued by the command line, on the stopped gateway's storage.
    let output = gateway.cli(&["session", "issue", "--user", "bob"], None);
    assert!(output.status.success(), "{output:?}");
    let issued: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    tokens.push(issued["token"].as_str().unwrap().to_owned());

    let files = files_under(&gateway.dir().join("data"));
    assert!(!files.is_empty());
    let contents: Vec<(PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    // The scan sees the sessions: their (public) ids are stored.
    assert!(
        contents
            .iter()
            .any(|(_, bytes)| contains(bytes, session_id.as_bytes())),
        "no file holds session id {session_id}; is this the storage directory?"
    );
    for token in &tokens {
        for (spelling, needle) in spellings(token) {
            for (path, bytes) in &contents {
                assert!(
                    !contains(bytes, &needle),
                    "{} holds a token ({spelling})",
                    path.display()
                );
            }
        }
    }
    for (path, bytes) in &contents {
        assert!(
            !contains(bytes, PASSWORD.as_bytes()),
            "{} holds a password",
            path.display()
        );
    }
}

#[tokio::test]
async fn sessions_beyond_the_memory_cache_are_read_from_storage() {
    let echo = Echo::start();
    // One session in memory at a time: every switch reads the other from storage.
    let gateway = Gateway::start(protected(&echo).storage("session_cache = 1"));
    add_user(&gateway, "alice", &[], &[]).await;
    add_user(&gateway, "bob", &[], &[]).await;
    let (first, first_login) = login_body(&gateway, "alice").await;
    let second = login_token(&gateway, "alice").await;
    let bobs = login_token(&gateway, "bob").await;
    for _ in 0..3 {
        for token in [&first, &second, &bobs] {
            assert_eq!(outcome(&gateway, "/p/x", token).await.0, 200);
        }
    }

    // Revoked while out of memory: read back revoked.
    let id = first_login["session_id"].as_str().unwrap();
    assert_eq!(outcome(&gateway, "/p/x", &second).await.0, 200);
    let (status, _) = admin(
        &gateway,
        Method::DELETE,
        &format!("/admin/api/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        outcome(&gateway, "/p/x", &first).await,
        (401, "token_revoked".into())
    );
    assert_eq!(outcome(&gateway, "/p/x", &second).await.0, 200);

    // A user's sessions are found in storage, not only in memory.
    let (status, body) = admin(
        &gateway,
        Method::DELETE,
        "/admin/api/users/bob/sessions",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], 1);
    assert_eq!(
        outcome(&gateway, "/p/x", &bobs).await,
        (401, "token_revoked".into())
    );
    let (_, list) = admin(&gateway, Method::GET, "/admin/api/sessions", None).await;
    let revoked: Vec<bool> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["revoked"].as_bool().unwrap())
        .collect();
    assert_eq!(revoked, [true, false, true], "{list}");
    // Unknown tokens still miss cleanly after a storage read.
    assert_eq!(
        outcome(&gateway, "/p/x", &super::tamper(&second)).await,
        (401, "invalid_token".into())
    );
}
