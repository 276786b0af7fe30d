//! Several gateways on one Redis (`storage.backend = "redis"`): three real
//! gateway processes and a private `redis-server` per test, which the tests
//! kill, pause and restart.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{
    add_user, admin, login, login_body, login_token, outcome, setup, with_token, PASSWORD,
};
use crate::common::http::metrics;
use crate::common::redis::Redis;
use crate::common::{client, eventually, get_json, route, Echo, Gateway, Launch, Setup, SOON};

/// Timeouts for a loaded test machine: generous for calls, short for
/// noticing that Redis is gone.
const REDIS: &[&str] = &[
    "command_timeout = \"500ms\"",
    "connect_timeout = \"500ms\"",
    "health_interval = \"100ms\"",
];

/// A node on `redis`: [`setup`] (plain-HTTP cookie, admin token) with the
/// Redis backend, a protected `/p/*` and a public `/pub/*` to `echo`.
fn node(redis: &Redis, echo: &Echo, extra: &[&str]) -> Setup {
    let mut lines = REDIS.to_vec();
    lines.extend_from_slice(extra);
    setup()
        .log("level = \"debug\"")
        .storage("backend = \"redis\"")
        .route(route("private", "/p/*", &echo.url()).authenticated())
        .route(route("public", "/pub/*", &echo.url()))
        .raw(&redis.storage_toml(&lines))
}

fn nodes(setup: &Setup, n: usize) -> Vec<Gateway> {
    (0..n).map(|_| Gateway::start(setup.clone())).collect()
}

/// `GET path` with a session token: the status, and the gateway's error code.
async fn status(gateway: &Gateway, path: &str, token: &str) -> u16 {
    outcome(gateway, path, token).await.0
}

/// Makes a public route `id` on `path` to `echo` through the admin API.
async fn add_public_route(gateway: &Gateway, id: &str, path: &str, echo: &Echo) {
    let route = json!({"id": id, "path": path, "upstream": echo.url(), "auth": "public"});
    let (code, body) = admin(gateway, Method::POST, "/admin/api/routes", Some(route)).await;
    assert_eq!(code, 201, "{body}");
}

/// Logs out the session of `token`.
async fn logout(gateway: &Gateway, token: &str) -> reqwest::Response {
    with_token(Method::POST, &gateway.url("/auth/logout"), token)
        .send()
        .await
        .expect("the logout request")
}

async fn readiness(gateway: &Gateway) -> (u16, Value) {
    get_json(&gateway.admin_url("/readyz")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn users_sessions_routes_and_the_audit_trail_are_shared() {
    let redis = Redis::start();
    let echo = Echo::start();
    let setup = node(&redis, &echo, &[]).server("workers = 2");
    let [a, b, c] = <[Gateway; 3]>::try_from(nodes(&setup, 3)).ok().unwrap();

    // Only the first node made the first admin.
    let admins = [&a, &b, &c]
        .iter()
        .filter(|g| g.dir().join("data/initial-admin-password").exists())
        .count();
    assert_eq!(admins, 1);

    // A user made on A logs in on B; the session works on every node.
    add_user(&a, "alice", &["staff"], &[]).await;
    let token = login_token(&b, "alice").await;
    for gateway in [&a, &b, &c] {
        assert_eq!(status(gateway, "/p/x", &token).await, 200);
    }
    // The record holds only the token's hash.
    let stored = redis
        .command("HGETALL portcullis:sessions")
        .expect("the sessions hash");
    assert!(stored.contains("token_hash"), "{stored}");
    assert!(!stored.contains(&token), "a token is stored as it is");

    // A session issued by A's admin API works on C.
    let (code, issued) = admin(
        &a,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice", "ttl": "1h"})),
    )
    .await;
    assert_eq!(code, 201, "{issued}");
    let issued = issued["token"].as_str().unwrap();
    assert_eq!(status(&c, "/p/x", issued).await, 200);
    // ...and B lists it.
    let (_, sessions) = admin(&b, Method::GET, "/admin/api/sessions?user=alice", None).await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(2), "{sessions}");

    // A role change on C ends alice's sessions everywhere.
    let (code, body) = admin(
        &c,
        Method::PATCH,
        "/admin/api/users/alice",
        Some(json!({"roles": ["ops"]})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    eventually("alice's old session refused on A", SOON, || async {
        (status(&a, "/p/x", &token).await == 401).then_some(())
    })
    .await;

    // A route made through B's admin API is served by A.
    add_public_route(&b, "made-on-b", "/made/*", &echo).await;
    eventually("the route served by A", SOON, || async {
        let response = client().get(a.url("/made/x")).send().await.unwrap();
        (response.status() == 200).then_some(())
    })
    .await;

    // C's audit trail shows what A and B did.
    let (_, audit) = admin(&c, Method::GET, "/admin/api/audit", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for action in ["user.create", "session.issue", "route.create"] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
}

/// Sends `per_node` requests to each node at once; returns how many were admitted.
async fn burst(gateways: &[Gateway], path: &str, per_node: usize) -> usize {
    let mut requests = Vec::new();
    for gateway in gateways {
        for _ in 0..per_node {
            let url = gateway.url(path);
            requests.push(tokio::spawn(async move {
                client().get(url).send().await.unwrap().status().as_u16()
            }));
        }
    }
    let mut admitted = 0;
    for request in requests {
        match request.await.unwrap() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_spread_over_three_nodes_admits_exactly_the_limit() {
    let redis = Redis::start();
    let echo = Echo::start();
    let setup = node(&redis, &echo, &[])
        .server("workers = 2")
        .raw("[rate_limits.shared]\nkey = [\"route\"]\nlimit = 40\nwindow = \"1h\"\n")
        .route(route("limited", "/limited/*", &echo.url()).extra("rate_limit = \"shared\""));
    let gateways = nodes(&setup, 3);
    assert_eq!(burst(&gateways, "/limited/x", 30).await, 40);
    // Refusals are not counted: the next window of the key is as full as before.
    assert_eq!(burst(&gateways, "/limited/x", 5).await, 0);
    let response = client()
        .get(gateways[1].url("/limited/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-ratelimit-limit"], "40");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_or_revocation_on_one_node_is_refused_by_the_others_at_once() {
    let redis = Redis::start();
    let echo = Echo::start();
    let setup = node(&redis, &echo, &[]);
    let gateways = nodes(&setup, 3);
    let (a, others) = (&gateways[0], &gateways[1..]);
    add_user(a, "alice", &[], &[]).await;

    for how in ["logout", "revoke"] {
        let (token, body) = login_body(a, "alice").await;
        // Every node holds the session in memory.
        for gateway in &gateways {
            assert_eq!(status(gateway, "/p/x", &token).await, 200);
        }
        let started = Instant::now();
        match how {
            "logout" => {
                let response = logout(a, &token).await;
                assert_eq!(response.status(), 200);
            }
            _ => {
                let id = body["session_id"].as_str().unwrap();
                let (code, _) = admin(
                    &gateways[2],
                    Method::DELETE,
                    &format!("/admin/api/sessions/{id}"),
                    None,
                )
                .await;
                assert_eq!(code, 204);
            }
        }
        let answered = started.elapsed();
        for gateway in others {
            loop {
                if status(gateway, "/p/x", &token).await == 401 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "a node still accepts the session 1 s after the {how}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        eprintln!(
            "{how}: answered in {answered:?}; refused by every other node {:?} after it was sent",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_redis_dies_policies_logins_and_readiness_behave_and_all_recovers() {
    let mut redis = Redis::persistent();
    let echo = Echo::start();
    let setup = node(&redis, &echo, &["session_fallback = \"3s\""])
        .raw("[rate_limits.open]\nkey = [\"route\"]\nlimit = 3\nwindow = \"1h\"\nfail = \"open\"\n")
        .raw("[rate_limits.closed]\nkey = [\"route\"]\nlimit = 100\nwindow = \"1h\"\nfail = \"closed\"\n")
        .route(route("open", "/open/*", &echo.url()).extra("rate_limit = \"open\""))
        .route(route("closed", "/closed/*", &echo.url()).extra("rate_limit = \"closed\""));
    let gateways = nodes(&setup, 2);
    let a = &gateways[0];
    add_user(a, "alice", &[], &[]).await;
    let token = login_token(a, "alice").await;
    assert_eq!(status(&gateways[1], "/p/x", &token).await, 200);
    assert_eq!(readiness(a).await.0, 200);

    redis.kill();
    eventually("readiness to report Redis down", SOON, || async {
        let (code, body) = readiness(a).await;
        (code == 503 && body["failing"] == json!(["redis"])).then_some(body)
    })
    .await;
    a.wait_for_log(
        |l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("Redis is down"))
        },
        SOON,
    );
    let metrics = metrics(&a.admin_url("/metrics")).await;
    assert!(metrics.contains("portcullis_redis_up 0"), "{metrics}");

    // fail = "open": this node's own counters decide (limit 3); "closed": 503.
    let mut open = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let response = client().get(a.url("/open/x")).send().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        open.push(response.status().as_u16());
    }
    assert_eq!(open, [200, 200, 200, 429, 429]);
    let response = client().get(a.url("/closed/x")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    // A login answers 503 without checking the password; an admin change
    // answers 503 and says nothing was stored.
    let response = login(a, "alice", PASSWORD).await;
    assert_eq!(response.status(), 503);
    let (code, body) = admin(
        a,
        Method::POST,
        "/admin/api/users",
        Some(json!({"username": "bob", "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (503, Some("storage_unavailable")),
        "{body}"
    );
    // The session both nodes hold works for session_fallback, then fails closed.
    let held = outcome(a, "/p/x", &token).await;
    assert_eq!(held.0, 200, "{held:?}\n{}", a.raw_log());
    eventually("the held session to fail closed", SOON, || async {
        (status(a, "/p/x", &token).await == 503).then_some(())
    })
    .await;

    // Back, with its data: no node restarts.
    redis.restart();
    for gateway in &gateways {
        eventually("readiness back", SOON, || async {
            (readiness(gateway).await.0 == 200).then_some(())
        })
        .await;
        assert_eq!(status(gateway, "/p/x", &token).await, 200);
    }
    gateways[1].wait_for_log(|l| l["msg"] == "Redis answers again; resynchronising", SOON);
    assert_eq!(login(&gateways[1], "alice", PASSWORD).await.status(), 200);
    let response = client().get(a.url("/closed/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_redis_means_timeouts_not_hangs() {
    let redis = Redis::start();
    let echo = Echo::start();
    let setup = node(&redis, &echo, &[])
        .raw("[rate_limits.open]\nkey = [\"route\"]\nlimit = 100\nwindow = \"1h\"\nfail = \"open\"\n")
        .raw("[rate_limits.closed]\nkey = [\"route\"]\nlimit = 100\nwindow = \"1h\"\nfail = \"closed\"\n")
        .route(route("open", "/open/*", &echo.url()).extra("rate_limit = \"open\""))
        .route(route("closed", "/closed/*", &echo.url()).extra("rate_limit = \"closed\""));
    let gateway = Gateway::start(setup);
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;

    redis.pause();
    for (path, expected) in [("/open/x", 200), ("/closed/x", 503)] {
        let started = Instant::now();
        let response = client().get(gateway.url(path)).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), expected, "{path}");
        // One command timeout (500 ms), not a hang.
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
    }
    let started = Instant::now();
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually("readiness to turn", SOON, || async {
        (readiness(&gateway).await.0 == 503).then_some(())
    })
    .await;
    // The session held in memory still works (session_fallback, 30 s by default).
    let held = outcome(&gateway, "/p/x", &token).await;
    assert_eq!(held.0, 200, "{held:?}\n{}", gateway.raw_log());

    redis.resume();
    eventually("readiness back", SOON, || async {
        (readiness(&gateway).await.0 == 200).then_some(())
    })
    .await;
    let response = client().get(gateway.url("/closed/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_migrates_from_sled_to_redis_and_back_with_sessions_valid() {
    let redis = Redis::start();
    let echo = Echo::start();
    let sled_setup = setup().route(route("private", "/p/*", &echo.url()).authenticated());
    let mut single = Gateway::start(sled_setup.clone());
    add_user(&single, "alice", &["staff"], &[]).await;
    let token = login_token(&single, "alice").await;
    add_public_route(&single, "api-route", "/api/*", &echo).await;
    single.stop();

    // The same node, now on Redis, after `storage migrate --to redis`.
    let redis_setup = node(&redis, &echo, &[]);
    let launch = single.relaunch().with_setup(redis_setup.clone());
    let migrated = launch.cli(&["storage", "migrate", "--to", "redis"], None);
    let said = String::from_utf8_lossy(&migrated.stdout);
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(
        said.contains("2 users, 1 sessions and 1 API routes"),
        "{said}"
    );
    let first = launch.start();
    let second = Gateway::start(redis_setup.clone());
    for gateway in [&first, &second] {
        assert_eq!(status(gateway, "/p/x", &token).await, 200);
        let response = client().get(gateway.url("/api/x")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(login(&second, "alice", PASSWORD).await.status(), 200);

    // And back to a node of its own, in a fresh directory.
    let back = Launch::new(redis_setup);
    let migrated = back.cli(&["storage", "migrate", "--to", "sled"], None);
    assert!(migrated.status.success(), "{migrated:?}");
    let alone = back.with_setup(sled_setup).start();
    assert_eq!(status(&alone, "/p/x", &token).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_user_with_its_password_from_the_environment_is_enough() {
    let redis = Redis::start();
    let reply = redis
        .command("ACL SETUSER portcullis on >s3cret-redis-pass ~portcullis:* +@all -@dangerous")
        .unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    redis.command("ACL SETUSER default off").unwrap();
    let echo = Echo::start();
    let url = redis.url().replace("redis://", "redis://portcullis@");
    let setup = |url: &str| {
        setup()
            .storage("backend = \"redis\"")
            .raw(&format!(
                "[storage.redis]\nurl = \"{url}\"\ncommand_timeout = \"500ms\"\n"
            ))
            .raw("[rate_limits.few]\nkey = [\"ip\"]\nlimit = 2\nwindow = \"1h\"\n")
            .route(
                route("private", "/p/*", &echo.url())
                    .authenticated()
                    .extra("rate_limit = \"few\""),
            )
    };
    let gateway = Launch::new(setup(&url))
        .env("PORTCULLIS_STORAGE__REDIS__PASSWORD", "s3cret-redis-pass")
        .start();
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;
    let statuses = [
        status(&gateway, "/p/x", &token).await,
        status(&gateway, "/p/x", &token).await,
        status(&gateway, "/p/x", &token).await,
    ];
    assert_eq!(statuses, [200, 200, 429]);
    let (_, audit) = admin(&gateway, Method::GET, "/admin/api/audit", None).await;
    assert!(audit.as_array().is_some_and(|a| !a.is_empty()));

    // A wrong password: the node does not start, says why, and never shows it.
    let failed = Launch::new(setup(&url))
        .env("PORTCULLIS_STORAGE__REDIS__PASSWORD", "wrong-password-123")
        .expect_failure();
    assert!(
        failed.stderr.contains("cannot reach Redis"),
        "{}",
        failed.stderr
    );
    assert!(
        !failed.stderr.contains("wrong-password-123"),
        "{}",
        failed.stderr
    );
    // Nor a password written in the URL.
    let failed = Launch::new(setup(
        &url.replace("portcullis@", "portcullis:in-url-pass@"),
    ))
    .expect_failure();
    assert!(!failed.stderr.contains("in-url-pass"), "{}", failed.stderr);
    assert!(failed.stderr.contains("***"), "{}", failed.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_checks_the_servers_certificate() {
    let cert = crate::common::tls::self_signed();
    let redis = Redis::tls(&cert);
    let echo = Echo::start();
    let setup = |ca: &str| {
        setup()
            .storage("backend = \"redis\"")
            .raw(&format!(
                "[storage.redis]\nurl = \"rediss://localhost:{}\"\ncommand_timeout = \"500ms\"\nconnect_timeout = \"500ms\"\n{ca}",
                redis.port()
            ))
            .route(route("private", "/p/*", &echo.url()).authenticated())
    };
    // Trusted through tls_ca_file: works.
    let launch = Launch::new(setup("tls_ca_file = \"$DIR/ca.pem\"\n"));
    std::fs::write(launch.dir().join("ca.pem"), &cert.cert_pem).unwrap();
    let gateway = launch.start();
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;
    assert_eq!(status(&gateway, "/p/x", &token).await, 200);
    // Not trusted (the system's roots): the node refuses to start.
    let failed = Launch::new(setup("")).expect_failure();
    assert!(
        failed.stderr.contains("cannot reach Redis"),
        "{}",
        failed.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_cut_by_redis_are_made_again_and_nothing_is_missed() {
    let redis = Redis::start();
    let echo = Echo::start();
    let setup = node(&redis, &echo, &[]);
    let gateways = nodes(&setup, 2);
    let (a, b) = (&gateways[0], &gateways[1]);
    add_user(a, "alice", &[], &[]).await;
    let token = login_token(a, "alice").await;
    assert_eq!(status(b, "/p/x", &token).await, 200);

    // Every client connection cut at once: the workers', the health
    // check's and the change feed's.
    let reply = redis.command("CLIENT KILL TYPE normal").unwrap();
    assert!(reply.starts_with(':'), "{reply}");
    eventually("the logout to succeed on A", SOON, || async {
        let response = logout(a, &token).await;
        (response.status() == 200).then_some(())
    })
    .await;
    let started = Instant::now();
    eventually("B to refuse the session", SOON, || async {
        (status(b, "/p/x", &token).await == 401).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for gateway in &gateways {
        eventually("readiness", SOON, || async {
            (readiness(gateway).await.0 == 200).then_some(())
        })
        .await;
    }
}
