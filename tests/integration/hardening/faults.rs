//! Faults lose nothing that was acknowledged, and say so: a full disk fails
//! closed, account changes leave no session behind (even one from a login
//! racing the change), durations cannot overflow, and access-log lines
//! stay bounded.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{
    add_user, admin, get_with, login, login_token, protected, setup, with_token, COOKIE, PASSWORD,
};
use crate::common::{client, eventually, json, Echo, Gateway, Launch, SOON};

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it as root, directly or through passwordless sudo. Without
    /// either, `None` (the caller skips, saying so) — except in CI, which
    /// runs as root and must not skip.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let size = format!("size={size}");
        let mount = ["mount", "-t", "tmpfs", "-o", &size, "tmpfs"];
        let mounted = as_root(&mount, at);
        if !mounted {
            assert!(
                std::env::var_os("CI").is_none(),
                "this test mounts a tmpfs and must run as root (or with passwordless sudo) in CI"
            );
            eprintln!(
                "SKIPPED: filling a disk needs root or passwordless sudo to mount a tmpfs at {}",
                at.display()
            );
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }

    /// Fills the filesystem with one file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        as_root(&["umount", "-l"], &self.0);
    }
}

/// Runs `command path` as root: directly when root, else with `sudo -n`.
fn as_root(command: &[&str], path: &Path) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut run = if root {
        Command::new(command[0])
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-n").arg(command[0]);
        sudo
    };
    run.args(&command[1..])
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

async fn readyz(gateway: &Gateway) -> (u16, Value) {
    let response = client()
        .get(gateway.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, json(response).await)
}

#[tokio::test]
async fn a_full_disk_fails_closed_and_says_so() {
    let echo = Echo::start();
    let launch = Launch::new(
        protected(&echo)
            .storage("path = \"$DIR/disk/data\"")
            .storage("sweep_interval = \"1s\""),
    );
    let Some(disk) = Tmpfs::mount(&launch.dir().join("disk"), "16m") else {
        return;
    };
    let mut gateway = launch.start();
    add_user(&gateway, "alice", &[], &[]).await;
    let (logged_out, kept) = (
        login_token(&gateway, "alice").await,
        login_token(&gateway, "alice").await,
    );
    assert_eq!(readyz(&gateway).await.0, 200);

    let filler = disk.fill();
    // sled may still have room in pages it holds: write until it has none.
    for attempt in 0.. {
        let (status, _) = admin(
            &gateway,
            Method::POST,
            "/admin/api/users",
            Some(json!({"username": format!("filler{attempt}"), "password": PASSWORD})),
        )
        .await;
        if status == 503 {
            break;
        }
        assert!(attempt < 500, "the disk never filled up");
    }
    // A logout that cannot be saved still ends the session here, clears the
    // cookie, and says what happened.
    let response = with_token(Method::POST, &gateway.url("/auth/logout"), &logged_out)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cleared.starts_with(&format!("{COOKIE}=;")), "{cleared}");
    let body = json(response).await;
    assert_eq!(body["error"], "storage_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not saved"),
        "{body}"
    );
    assert_eq!(get_with(&gateway, "/p/x", &logged_out).await.status(), 401);

    // Logins and admin changes are refused, clearly, and issue nothing.
    let response = login(&gateway, "alice", PASSWORD).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("set-cookie").is_none());
    assert_eq!(json(response).await["error"], "storage_unavailable");
    let (status, body) = admin(
        &gateway,
        Method::POST,
        "/admin/api/users",
        Some(json!({"username": "bob", "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("storage_unavailable"))
    );
    // A route that cannot be saved is not served either: nothing
    // acknowledged, nothing half-applied.
    let (status, body) = admin(
        &gateway,
        Method::POST,
        "/admin/api/routes",
        Some(json!({"id": "unsaved", "path": "/unsaved/*", "upstream": echo.url(), "auth": "public"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("storage_unavailable")),
        "{body}"
    );
    let unsaved = client()
        .get(gateway.url("/unsaved/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsaved.status(), 404);
    // A revocation is in force here even though it is not saved.
    let sessions = admin(
        &gateway,
        Method::GET,
        "/admin/api/sessions?user=alice",
        None,
    )
    .await
    .1;
    let kept_id = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["revoked"] == false)
        .expect("alice's other session")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get_with(&gateway, "/p/x", &kept).await.status(), 200);
    let (status, body) = admin(
        &gateway,
        Method::DELETE,
        &format!("/admin/api/sessions/{kept_id}"),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(get_with(&gateway, "/p/x", &kept).await.status(), 401);

    // Readiness says so, and what to do.
    let (status, body) = readyz(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["storage"], "failing");
    let advice = body["storage_error"].as_str().unwrap();
    assert!(advice.contains("restart"), "{advice}");

    // Space returns; the open database cannot recover, and keeps saying so.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(readyz(&gateway).await.0, 503);
    gateway.wait_for_log(
        |v| v["msg"] == "storage is failing: changes are not saved" && v["level"] == "error",
        SOON,
    );
    // A restart with room to spare serves again.
    gateway.stop();
    let gateway = gateway.relaunch().start();
    assert_eq!(readyz(&gateway).await.0, 200);
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_login_racing_an_account_change_never_outlives_it() {
    let echo = Echo::start();
    let gateway = Gateway::start(protected(&echo).login("max_failures_per_user = 1000"));
    add_user(&gateway, "alice", &[], &[]).await;
    let patch = |change: Value| {
        admin(
            &gateway,
            Method::PATCH,
            "/admin/api/users/alice",
            Some(change),
        )
    };
    let mut current = PASSWORD.to_owned();
    let (mut raced, mut survivors) = (0, 0);
    for round in 0..45 {
        // A login with the current password and a change to the account
        // (its password, its roles, or disabling it) at the same moment.
        let next = format!("the password of round {round:03}");
        let change = match round % 3 {
            0 => json!({"password": next}),
            1 => json!({"roles": [format!("role{round}")]}),
            _ => json!({"disabled": true}),
        };
        let (logged_in, (status, body)) =
            tokio::join!(login(&gateway, "alice", &current), patch(change));
        assert_eq!(status, 200, "{body}");
        if logged_in.status() == 200 {
            raced += 1;
            let token = crate::auth::session_cookie(&logged_in, COOKIE)
                .unwrap()
                .value;
            let answer = get_with(&gateway, "/p/x", &token).await;
            if answer.status() != 401 {
                // Only a login that saw the account *after* the change may
                // keep its session: a roles change leaves the password
                // valid, and that session must carry the new roles.
                let roles = crate::auth::echoed(&json(answer).await, "x-user-roles").join(",");
                if round % 3 != 1 || roles != format!("role{round}") {
                    survivors += 1;
                }
            }
        }
        match round % 3 {
            0 => current = next,
            2 => assert_eq!(patch(json!({"disabled": false})).await.0, 200),
            _ => {}
        }
    }
    println!("45 rounds: {raced} logins succeeded beside the change, {survivors} outlived it");
    assert_eq!(survivors, 0);
}

#[tokio::test]
async fn durations_that_overflow_clocks_are_refused() {
    let mut gateway = Gateway::start(setup());
    add_user(&gateway, "alice", &[], &[]).await;
    let (status, body) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice", "ttl": "10000y"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["key"], "ttl", "{body}");
    assert!(
        body["errors"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("too long"),
        "{body}"
    );
    let (status, _) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice", "ttl": "3650d"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, listing) = admin(&gateway, Method::GET, "/admin/api/sessions", None).await;
    assert_eq!(status, 200, "{listing}");
    gateway.stop();
    let out = gateway.cli(
        &["session", "issue", "--user", "alice", "--ttl", "10000y"],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too long"), "{stderr}");
    let out = gateway.cli(&["session", "list"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn over_long_fields_are_cut_in_the_access_log() {
    let echo = Echo::start();
    let gateway = crate::common::echo_gateway(&echo);
    let path = format!("/p/{}", "a".repeat(5000));
    let response = client()
        .get(gateway.url(&path))
        .header("user-agent", "u".repeat(2000))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let line = gateway.access_line(&id);
    let logged = line["path"].as_str().unwrap();
    assert!(logged.len() < 2100, "{} bytes", logged.len());
    assert!(
        logged.ends_with(&format!("…[+{} bytes]", path.len() - 2048)),
        "{logged}"
    );
    let agent = line["user_agent"].as_str().unwrap();
    assert!(agent.ends_with("…[+1488 bytes]"), "{agent}");
}

#[tokio::test]
async fn a_token_presented_after_its_rotation_revokes_the_session() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        protected(&echo)
            .session("rotate_after = \"200ms\"")
            .session("rotation_grace = \"100ms\""),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let stolen = login_token(&gateway, "alice").await;
    let fresh = eventually("the token to rotate", SOON, || async {
        let response = get_with(&gateway, "/p/x", &stolen).await;
        crate::auth::session_cookie(&response, COOKIE).map(|c| c.value)
    })
    .await;
    // Past the grace period, the copy is used: the whole session ends.
    eventually("the stolen copy to be refused", SOON, || async {
        let status = get_with(&gateway, "/p/x", &stolen).await.status();
        (status == 401).then_some(())
    })
    .await;
    assert_eq!(get_with(&gateway, "/p/x", &fresh).await.status(), 401);
    let event = gateway.wait_for_log(|v| v["event"] == "token_reuse", SOON);
    assert_eq!(event["user_id"], "alice");
    assert!(event["client_ip"].is_string() && event["request_id"].is_string());
}
