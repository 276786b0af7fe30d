//! Token rotation after `rotate_after`, with the old token accepted for
//! `rotation_grace` and treated as stolen after it.

use reqwest::Method;

use super::{
    add_user, browser, get_with, login, outcome, protected, session_cookie, with_token, SetCookie,
    COOKIE, PASSWORD,
};
use crate::common::http::{metrics, sample};
use crate::common::{eventually, json, Echo, Gateway, SOON};

fn rotating(echo: &Echo) -> crate::common::Setup {
    protected(echo)
        .session("rotate_after = \"500ms\"")
        .session("rotation_grace = \"1s\"")
}

/// Uses `token` until a response rotates it; returns the new cookie.
async fn next_rotation(gateway: &Gateway, token: &str) -> SetCookie {
    eventually("the token to rotate", SOON, || async {
        let response = get_with(gateway, "/p/x", token).await;
        assert_eq!(response.status(), 200, "the current token is accepted");
        session_cookie(&response, COOKIE)
    })
    .await
}

#[tokio::test]
async fn tokens_rotate_and_the_old_one_is_accepted_for_the_grace_period() {
    let echo = Echo::start();
    let gateway = Gateway::start(rotating(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let response = login(&gateway, "alice", PASSWORD).await;
    let first = session_cookie(&response, COOKIE).unwrap();
    let session_id = json(response).await["session_id"].clone();
    let old = first.value.clone();

    let rotated = next_rotation(&gateway, &old).await;
    assert_ne!(rotated.value, old);
    assert!(rotated.has_flag("HttpOnly"), "{}", rotated.raw);
    assert_eq!(
        rotated.attribute("Path"),
        Some(Some("/")),
        "{}",
        rotated.raw
    );
    assert_eq!(
        rotated.attribute("SameSite"),
        Some(Some("Lax")),
        "{}",
        rotated.raw
    );
    // Rotation never extends the absolute lifetime.
    assert!(
        rotated.max_age().unwrap() <= first.max_age().unwrap(),
        "{} after {}",
        rotated.raw,
        first.raw
    );
    let new = rotated.value;

    // Within the grace period the old token still works, is the same session,
    // and is not rotated again. (Only the old token is used until its grace
    // ends: the new one becomes due for rotation again after rotate_after, and
    // a second rotation replaces the remembered old token.)
    let response = get_with(&gateway, "/auth/session", &old).await;
    assert_eq!(response.status(), 200);
    assert!(session_cookie(&response, COOKIE).is_none());
    assert_eq!(json(response).await["session_id"], session_id);

    // After the grace period the old token is a copy that should no longer
    // exist: presenting it revokes the whole session, as refresh-token
    // rotation does, so a stolen token dies with the session it was stolen from.
    let refused = eventually("the old token to be refused", SOON, || async {
        let result = outcome(&gateway, "/p/x", &old).await;
        (result.0 != 200).then_some(result)
    })
    .await;
    assert_eq!(refused, (401, "token_revoked".into()));
    assert_eq!(
        outcome(&gateway, "/p/x", &new).await,
        (401, "token_revoked".into())
    );
    let event = gateway.wait_for_log(|v| v["event"] == "token_reuse", SOON);
    assert_eq!(event["session_id"], session_id);
    assert_eq!(event["level"], "warn");
    let metrics = metrics(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(&metrics, "portcullis_token_reuse_total", &[]),
        Some(1.0)
    );
}

#[tokio::test]
async fn logging_out_with_the_old_token_ends_the_rotated_session() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        protected(&echo)
            .session("rotate_after = \"500ms\"")
            .session("rotation_grace = \"1h\""),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let response = login(&gateway, "alice", PASSWORD).await;
    let old = session_cookie(&response, COOKIE).unwrap().value;
    let new = next_rotation(&gateway, &old).await.value;

    // A tab still holding the old token logs out: the whole session ends.
    let response = with_token(Method::POST, &gateway.url("/auth/logout"), &old)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for token in [&old, &new] {
        assert_eq!(
            outcome(&gateway, "/p/x", token).await,
            (401, "token_revoked".into())
        );
    }
}

#[tokio::test]
async fn a_browser_keeps_its_session_across_rotations() {
    let echo = Echo::start();
    let gateway = Gateway::start(rotating(&echo));
    add_user(&gateway, "alice", &[], &[]).await;
    let jar = browser();
    let response = jar
        .post(gateway.url("/auth/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);

    let rotations = std::cell::Cell::new(0);
    eventually("two rotations", SOON, || async {
        let response = jar.get(gateway.url("/p/x")).send().await.unwrap();
        assert_eq!(response.status(), 200, "the jar always holds a valid token");
        if session_cookie(&response, COOKIE).is_some() {
            rotations.set(rotations.get() + 1);
        }
        (rotations.get() >= 2).then_some(())
    })
    .await;
}
