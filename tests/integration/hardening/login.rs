//! Login cannot be turned into a denial of service: attempts are counted
//! before they are hashed, hashing is bounded, usernames are checked first,
//! every counter store is capped, IPv6 clients count by network, and no
//! rate-limit policy can reach the login throttle.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;

use super::metric;
use crate::auth::{add_user, admin, login, setup, PASSWORD};
use crate::common::{client, eventually, json, route, Echo, Gateway, SOON};

/// Posts a JSON login with `X-Forwarded-For: xff`.
async fn login_from(gateway: &Gateway, xff: &str, username: &str, password: &str) -> u16 {
    client()
        .post(gateway.url("/auth/login"))
        .header("x-forwarded-for", xff)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("a login")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_verifies_only_the_allowed_number() {
    let gateway = Gateway::start(
        setup()
            .login("max_failures_per_user = 5")
            .login("max_failures_per_ip = 1000"),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let attempts = (0..40).map(|_| login(&gateway, "alice", "not the password!"));
    let mut statuses: Vec<u16> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    statuses.sort_unstable();
    let wrong = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(wrong + throttled, 40, "{statuses:?}");
    assert!(wrong <= 5, "{wrong} passwords were checked: {statuses:?}");
    let verified = metric(&gateway, "portcullis_password_verifications_total", &[]).await;
    assert_eq!(
        verified as usize, wrong,
        "argon2 ran once per 401, never for a 429"
    );
}

#[tokio::test]
async fn excess_logins_wait_a_bounded_time_then_get_503() {
    let gateway = Gateway::start(
        setup()
            .login("max_concurrent_hashes = 1")
            .login("max_hash_wait = \"20ms\"")
            .login("max_failures_per_user = 100")
            .login("max_failures_per_ip = 1000"),
    );
    let attempts = (0..20).map(|i| {
        let gateway = &gateway;
        async move {
            let response = login(gateway, &format!("user{i}"), "not the password!").await;
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                response.status().as_u16(),
                retry_after,
                json(response).await,
            )
        }
    });
    let results = join_all(attempts).await;
    let busy: Vec<_> = results.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "one slot and a 20ms wait: {results:?}");
    for (_, retry_after, body) in &busy {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"], "busy", "{body}");
    }
    assert!(results.iter().all(|(s, _, _)| *s == 503 || *s == 401));
    // A login that was never checked is not counted as a failure.
    let metrics = crate::common::http::metrics(&gateway.admin_url("/metrics")).await;
    let failures = crate::common::http::sample(
        &metrics,
        "portcullis_logins_total",
        &[("outcome", "failure")],
    );
    assert_eq!(failures, Some((results.len() - busy.len()) as f64));
}

#[tokio::test]
async fn simultaneous_logins_do_not_balloon_memory() {
    let gateway = Gateway::start(setup().login("max_failures_per_ip = 100000"));
    add_user(&gateway, "alice", &[], &[]).await;
    // Warm up the blocking pool and the decoy hash.
    login(&gateway, "warmup", "not the password!").await;
    let before = gateway.peak_rss();
    let names: Vec<String> = (0..150).map(|i| format!("user{i}")).collect();
    let attempts = names
        .iter()
        .map(|name| login(&gateway, name, "not the password!"));
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    // Checked (401), or turned away after waiting for a slot (503).
    assert!(
        statuses.iter().all(|&s| s == 401 || s == 503),
        "{statuses:?}"
    );
    let growth = gateway.peak_rss().saturating_sub(before) as f64 / (1024.0 * 1024.0);
    println!("150 simultaneous logins raised peak memory by {growth:.1} MiB");
    // Each check takes ~19 MiB, so only the bounded slots may run at once.
    assert!(growth < 100.0, "peak memory grew {growth:.1} MiB");
}

#[tokio::test]
async fn invalid_usernames_are_refused_before_anything_is_counted() {
    let gateway = Gateway::start(setup());
    let long = "a".repeat(65);
    let huge = "x".repeat(15 * 1024);
    for name in ["", &long, "a b", "ünïcode", "nul\u{0}", "semi;colon", &huge] {
        let response = login(&gateway, name, PASSWORD).await;
        assert_eq!(response.status(), 401, "{name:?}");
        assert_eq!(json(response).await["error"], "invalid_credentials");
    }
    // The form answers the same page as for a wrong password.
    let form = client()
        .post(gateway.url("/auth/login"))
        .form(&[("username", "a b"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 401);
    assert!(form
        .text()
        .await
        .unwrap()
        .contains("Invalid username or password."));
    assert_eq!(
        metric(&gateway, "portcullis_password_verifications_total", &[]).await,
        0.0
    );
    // Nothing was counted: no throttle key exists.
    let keys = metric(
        &gateway,
        "portcullis_counter_keys",
        &[("store", "login_throttle")],
    )
    .await;
    assert_eq!(keys, 0.0);
}

#[tokio::test]
async fn ten_thousand_huge_usernames_cost_no_memory() {
    let gateway = Gateway::start(setup().storage("flush_interval = \"100ms\""));
    let send = |i: usize| {
        let gateway = &gateway;
        async move {
            let name: String = format!("{i}-{}", "q".repeat(15 * 1024));
            login(gateway, &name, "whatever").await.status().as_u16()
        }
    };
    // The first batch settles buffers and pools; growth is measured after it.
    for status in join_all((0..100).map(send)).await {
        assert_eq!(status, 401);
    }
    let before = gateway.peak_rss();
    for batch in 1..100 {
        let statuses = join_all((0..100).map(|i| send(batch * 100 + i))).await;
        assert!(statuses.iter().all(|&s| s == 401));
    }
    let growth = gateway.peak_rss().saturating_sub(before) as f64 / (1024.0 * 1024.0);
    println!("10,000 logins with 15 KiB usernames grew peak memory by {growth:.1} MiB");
    assert!(growth < 16.0, "peak memory grew {growth:.1} MiB");
    let keys = metric(
        &gateway,
        "portcullis_counter_keys",
        &[("store", "login_throttle")],
    )
    .await;
    assert_eq!(
        keys, 0.0,
        "no key was created for a name that cannot log in"
    );
}

#[tokio::test]
async fn counter_stores_are_capped_and_a_flood_cannot_free_a_limited_key() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .storage("rate_limit_keys = 64")
            .storage("login_throttle_keys = 32")
            .storage("flush_interval = \"100ms\"")
            .login("max_failures_per_ip = 100000")
            .raw("[rate_limits.per-key]\nkey = [\"header:x-key\"]\nlimit = 3\nwindow = \"1m\"\n")
            .route(route("limited", "/p/*", &echo.url()).extra("rate_limit = \"per-key\"")),
    );
    let get = |key: String| {
        let gateway = &gateway;
        async move {
            client()
                .get(gateway.url("/p/x"))
                .header("x-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(get("attacker".into()).await, 200);
    }
    assert_eq!(get("attacker".into()).await, 429);
    for chunk in (0..2000).collect::<Vec<_>>().chunks(100) {
        join_all(chunk.iter().map(|i| get(format!("flood-{i}")))).await;
    }
    assert_eq!(
        get("attacker".into()).await,
        429,
        "evicting the least-used keys never frees a key at its limit"
    );
    eventually("the rate-limit store to report its size", SOON, || async {
        let keys = metric(
            &gateway,
            "portcullis_counter_keys",
            &[("store", "rate_limit")],
        )
        .await;
        (keys > 0.0).then_some(())
    })
    .await;
    let keys = metric(
        &gateway,
        "portcullis_counter_keys",
        &[("store", "rate_limit")],
    )
    .await;
    assert!(keys <= 64.0, "{keys} rate-limit keys held");
    let evicted = metric(
        &gateway,
        "portcullis_counter_evictions_total",
        &[("store", "rate_limit")],
    )
    .await;
    assert!(evicted >= 1900.0, "{evicted} evictions");

    // The login throttle is capped the same way.
    let names: Vec<String> = (0..200).map(|i| format!("guess{i}")).collect();
    join_all(names.iter().map(|name| login(&gateway, name, "wrong"))).await;
    eventually("the login throttle to evict", SOON, || async {
        let evicted = metric(
            &gateway,
            "portcullis_counter_evictions_total",
            &[("store", "login_throttle")],
        )
        .await;
        (evicted > 0.0).then_some(())
    })
    .await;
    let keys = metric(
        &gateway,
        "portcullis_counter_keys",
        &[("store", "login_throttle")],
    )
    .await;
    assert!(keys <= 32.0, "{keys} login-throttle keys held");
}

#[tokio::test]
async fn ipv6_clients_count_by_their_network() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .server("trusted_proxies = [\"127.0.0.1\"]")
            .login("max_failures_per_ip = 2")
            .login("max_failures_per_user = 100")
            .raw("[rate_limits.per-ip]\nkey = [\"ip\"]\nlimit = 3\nwindow = \"1m\"\n")
            .route(route("limited", "/p/*", &echo.url()).extra("rate_limit = \"per-ip\"")),
    );
    let get = |xff: &'static str| {
        let gateway = &gateway;
        async move {
            client()
                .get(gateway.url("/p/x"))
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Four addresses of one /64 share one count.
    for xff in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::c"] {
        assert_eq!(get(xff).await, 200, "{xff}");
    }
    assert_eq!(get("2001:db8:1:2::d").await, 429);
    // The next /64 is someone else; so is every IPv4 address.
    assert_eq!(get("2001:db8:1:3::a").await, 200);
    assert_eq!(get("192.0.2.1").await, 200);
    assert_eq!(get("192.0.2.2").await, 200);

    // Login throttling counts the same way.
    for xff in ["2001:db8:9:9::1", "2001:db8:9:9::2"] {
        assert_eq!(login_from(&gateway, xff, "nobody", "wrong").await, 401);
    }
    assert_eq!(
        login_from(&gateway, "2001:db8:9:9::3", "nobody", "wrong").await,
        429
    );
    assert_eq!(
        login_from(&gateway, "2001:db8:9:8::1", "nobody", "wrong").await,
        401
    );
}

#[tokio::test]
async fn a_full_ipv6_prefix_counts_every_address_apart() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        setup()
            .server("trusted_proxies = [\"127.0.0.1\"]")
            .server("client_ipv6_prefix = 128")
            .raw("[rate_limits.per-ip]\nkey = [\"ip\"]\nlimit = 1\nwindow = \"1m\"\n")
            .route(route("limited", "/p/*", &echo.url()).extra("rate_limit = \"per-ip\"")),
    );
    for xff in ["2001:db8::1", "2001:db8::2", "2001:db8::3"] {
        let status = client()
            .get(gateway.url("/p/x"))
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{xff}");
    }
}

#[tokio::test]
async fn no_rate_limit_policy_can_reach_the_login_throttle() {
    let echo = Echo::start();
    // Policies named like the throttle's own keys, keyed by a header a
    // client controls.
    let gateway = Gateway::start(
        setup()
            .login("max_failures_per_user = 2")
            .login("max_failures_per_ip = 1000")
            .raw("[rate_limits.user]\nkey = [\"header:x-k\"]\nlimit = 1000\nwindow = \"1m\"\n")
            .raw(
                "[rate_limits.login-user]\nkey = [\"header:x-k\"]\nlimit = 1000\nwindow = \"1m\"\n",
            )
            .route(
                route("p", "/p/*", &echo.url()).extra("rate_limit = [\"user\", \"login-user\"]"),
            ),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    for _ in 0..2 {
        assert_eq!(
            login(&gateway, "alice", "wrong password").await.status(),
            401
        );
    }
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 429);
    // Requests counted under keys spelled like the throttle's...
    for key in ["alice", "user|alice", "login-user|alice"] {
        let status = client()
            .get(gateway.url("/p/x"))
            .header("x-k", key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    // ...and resetting them through the admin API leaves alice locked out.
    for path in [
        "/admin/api/rate-limits/user/alice",
        "/admin/api/rate-limits/login-user/alice",
        "/admin/api/rate-limits/user/user%7Calice",
    ] {
        admin(&gateway, Method::DELETE, path, None).await;
    }
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 429);
    // The throttle's own endpoints show and clear it.
    let (status, listed) = admin(&gateway, Method::GET, "/admin/api/login-throttle", None).await;
    assert_eq!(status, 200);
    let alice = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "user" && e["value"] == "alice")
        .unwrap_or_else(|| panic!("alice is not listed: {listed}"));
    assert_eq!(alice["locked"], true, "{alice}");
    let (status, _) = admin(
        &gateway,
        Method::DELETE,
        "/admin/api/login-throttle/user/alice",
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(login(&gateway, "alice", PASSWORD).await.status(), 200);
}
