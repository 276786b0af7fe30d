//! `portcullis user ...` against a stopped gateway's storage, and its
//! refusals: short passwords, a database in use, no password source.

use std::process::Output;

use reqwest::Method;
use serde_json::json;

use super::{
    admin, error_of, get_with, login, outcome, protected, session_cookie, COOKIE, PASSWORD,
};
use crate::common::{json, Echo, Gateway, Launch};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "the command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts failure and returns stderr.
fn refused(output: Output) -> String {
    assert!(
        !output.status.success(),
        "the command succeeded:\n{}",
        stdout(&output)
    );
    stderr(&output)
}

/// The `user list` row of `name`, split on whitespace.
fn row(listing: &str, name: &str) -> Option<Vec<String>> {
    listing
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(name))
}

/// Logs in and returns the token, or the error code.
async fn try_login(gateway: &Gateway, user: &str, password: &str) -> Result<String, String> {
    let response = login(gateway, user, password).await;
    if response.status() == 200 {
        return Ok(session_cookie(&response, COOKIE).unwrap().value);
    }
    Err(error_of(response).await.1)
}

#[tokio::test]
async fn the_cli_manages_users_of_a_stopped_gateway() {
    let echo = Echo::start();
    let launch = Launch::new(protected(&echo));
    let new_password = "an entirely different passphrase";

    let out = ok(launch.cli(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "admin",
            "--role",
            "ops",
            "--permission",
            "read",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    ));
    assert!(out.contains("user alice added"), "{out}");
    ok(launch.cli(
        &["user", "add", "bob", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    ));
    let listing = ok(launch.cli(&["user", "list"], None));
    assert!(listing.starts_with("USERNAME"), "{listing}");
    assert_eq!(
        row(&listing, "alice"),
        Some(vec![
            "alice".into(),
            "admin,ops".into(),
            "read".into(),
            "active".into()
        ]),
        "{listing}"
    );
    assert!(row(&listing, "bob").is_some(), "{listing}");
    // Adding the same name again is refused.
    let err = refused(launch.cli(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    ));
    assert!(err.contains("already exists"), "{err}");

    // The gateway sees the users.
    let mut gateway = launch.start();
    let token = try_login(&gateway, "alice", PASSWORD).await.unwrap();
    let body = json(get_with(&gateway, "/auth/session", &token).await).await;
    assert_eq!(body["roles"], json!(["admin", "ops"]));
    assert_eq!(body["permissions"], json!(["read"]));
    gateway.stop();

    // Password change: the session is revoked, only the new password works.
    let out = ok(gateway.cli(
        &["user", "set-password", "alice", "--password-stdin"],
        Some(&format!("{new_password}\n")),
    ));
    assert!(
        out.contains("password of alice changed; 1 session(s) revoked"),
        "{out}"
    );
    let mut gateway = gateway.relaunch().start();
    assert_eq!(
        outcome(&gateway, "/p/x", &token).await,
        (401, "token_revoked".into())
    );
    assert_eq!(
        try_login(&gateway, "alice", PASSWORD).await,
        Err("invalid_credentials".into())
    );
    let token = try_login(&gateway, "alice", new_password).await.unwrap();
    gateway.stop();

    // New roles, with the session revoked again.
    let out = ok(gateway.cli(&["user", "set-roles", "alice", "auditor"], None));
    assert!(
        out.contains("roles of alice set; 1 session(s) revoked"),
        "{out}"
    );
    let listing = ok(gateway.cli(&["user", "list"], None));
    assert_eq!(row(&listing, "alice").unwrap()[1], "auditor", "{listing}");
    let mut gateway = gateway.relaunch().start();
    assert_eq!(
        outcome(&gateway, "/p/x", &token).await,
        (401, "token_revoked".into())
    );
    let token = try_login(&gateway, "alice", new_password).await.unwrap();
    let body = json(get_with(&gateway, "/auth/session", &token).await).await;
    assert_eq!(body["roles"], json!(["auditor"]));
    gateway.stop();

    // Disabled: no session, no login.
    let out = ok(gateway.cli(&["user", "disable", "alice"], None));
    assert!(
        out.contains("user alice disabled; 1 session(s) revoked"),
        "{out}"
    );
    let listing = ok(gateway.cli(&["user", "list"], None));
    assert_eq!(
        row(&listing, "alice").unwrap().last().unwrap(),
        "disabled",
        "{listing}"
    );
    let mut gateway = gateway.relaunch().start();
    assert_eq!(
        outcome(&gateway, "/p/x", &token).await,
        (401, "token_revoked".into())
    );
    assert_eq!(
        try_login(&gateway, "alice", new_password).await,
        Err("invalid_credentials".into())
    );
    gateway.stop();

    // Enabled again, then deleted.
    ok(gateway.cli(&["user", "enable", "alice"], None));
    let mut gateway = gateway.relaunch().start();
    let token = try_login(&gateway, "alice", new_password).await.unwrap();
    gateway.stop();
    let out = ok(gateway.cli(&["user", "delete", "alice"], None));
    assert!(
        out.contains("user alice deleted; 1 session(s) revoked"),
        "{out}"
    );
    let listing = ok(gateway.cli(&["user", "list"], None));
    assert!(row(&listing, "alice").is_none(), "{listing}");
    assert!(row(&listing, "bob").is_some(), "{listing}");
    let gateway = gateway.relaunch().start();
    assert_eq!(
        outcome(&gateway, "/p/x", &token).await,
        (401, "token_revoked".into())
    );
    assert_eq!(
        try_login(&gateway, "alice", new_password).await,
        Err("invalid_credentials".into())
    );
    assert!(try_login(&gateway, "bob", PASSWORD).await.is_ok());
}

#[test]
fn commands_on_an_unknown_user_fail_clearly() {
    let launch = Launch::new(super::setup());
    for args in [
        &["user", "set-roles", "ghost", "x"][..],
        &["user", "disable", "ghost"],
        &["user", "delete", "ghost"],
    ] {
        let err = refused(launch.cli(args, None));
        assert!(err.contains("no user named \"ghost\""), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn short_passwords_are_refused() {
    let launch = Launch::new(super::setup().login("min_password_length = 16"));
    let short = "fifteen chars!!";
    assert_eq!(short.len(), 15);

    let err = refused(launch.cli(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{short}\n")),
    ));
    assert!(err.contains("too short") && err.contains("16"), "{err}");
    let listing = ok(launch.cli(&["user", "list"], None));
    assert!(row(&listing, "alice").is_none(), "{listing}");

    // Exactly the minimum is enough; a shorter new password is refused too.
    ok(launch.cli(
        &["user", "add", "alice", "--password-stdin"],
        Some("sixteen chars!!!\n"),
    ));
    let err = refused(launch.cli(
        &["user", "set-password", "alice", "--password-stdin"],
        Some(&format!("{short}\n")),
    ));
    assert!(err.contains("too short") && err.contains("16"), "{err}");

    // The admin API applies the same minimum.
    let gateway = launch.start();
    assert!(try_login(&gateway, "alice", "sixteen chars!!!")
        .await
        .is_ok());
    let (status, body) = admin(
        &gateway,
        Method::POST,
        "/admin/api/users",
        Some(json!({"username": "bob", "password": short})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["key"], "password", "{body}");
    assert!(
        body["errors"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("too short"),
        "{body}"
    );
    let (status, body) = admin(
        &gateway,
        Method::PATCH,
        "/admin/api/users/alice",
        Some(json!({"password": short})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[test]
fn the_cli_refuses_a_database_in_use_and_points_to_the_admin_api() {
    let gateway = Gateway::start(super::setup());
    let err = refused(gateway.cli(
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    ));
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains("admin API"), "{err}");
    assert!(err.contains("/admin/api/users"), "{err}");
    // Reading is refused as well: the gateway owns the database.
    let err = refused(gateway.cli(&["user", "list"], None));
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn without_password_stdin_a_non_terminal_stdin_is_explained() {
    let launch = Launch::new(super::setup());
    for args in [
        &["user", "add", "alice"][..],
        &["user", "set-password", "alice"],
    ] {
        // Standard input is empty and not a terminal.
        let err = refused(launch.cli(args, None));
        assert!(err.contains("not a terminal"), "{args:?}: {err}");
        assert!(err.contains("--password-stdin"), "{args:?}: {err}");
    }
    let listing = ok(launch.cli(&["user", "list"], None));
    assert!(row(&listing, "alice").is_none(), "{listing}");
}
