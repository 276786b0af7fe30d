//! Rate limiting: sliding-window counters, policies and their attachment to
//! routes, keys, headers, persistence, the admin API, observability and the
//! login throttle, against the real binary.
//!
//! Windows are aligned to multiples of their length in Unix milliseconds, so
//! the tests that are about window boundaries read the wall clock and sleep
//! until a boundary: that is the behaviour under test, not a wait for the
//! gateway. Their assertions are the inequalities the algorithm guarantees,
//! with the time of each decision bracketed by the client's clock (sent
//! before, answered after); an attempt whose requests were too slow to say
//! anything is retried on a fresh counter key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::common::gateway::command;
use crate::common::http::{metrics, sample};
use crate::common::{client, eventually, json, route, Echo, Gateway, Setup, SOON};

/// The admin API's bearer token in these tests.
const TOKEN: &str = "rate-limit-tests-admin-token";
/// The password of every user these tests create.
const PASSWORD: &str = "correct horse battery staple";

/// A `[rate_limits.NAME]` table with these `key = value` lines.
pub fn policy(name: &str, lines: &[&str]) -> String {
    format!("[rate_limits.{name}]\n{}\n", lines.join("\n"))
}

/// `rate_limit = "NAME"` for a route.
pub fn uses(name: &str) -> String {
    format!("rate_limit = \"{name}\"")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Sleeps until the wall clock reads `at` (Unix milliseconds).
async fn sleep_until_ms(at: u64) {
    let now = now_ms();
    if at > now {
        tokio::time::sleep(Duration::from_millis(at - now)).await;
    }
}

/// GETs `path` with extra headers; returns the status and headers.
async fn get(
    client: &reqwest::Client,
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap) {
    let mut request = client.get(gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    response.bytes().await.expect("the body");
    (status, headers)
}

/// Sends `n` GETs one after the other; returns how many were answered 200,
/// asserting that every other answer was a 429.
async fn admitted(gateway: &Gateway, path: &str, headers: &[(&str, &str)], n: usize) -> usize {
    let client = client();
    let mut ok = 0;
    for _ in 0..n {
        let (status, _) = get(&client, gateway, path, headers).await;
        match status {
            200 => ok += 1,
            429 => {}
            other => panic!("GET {path} {headers:?} answered {other}"),
        }
    }
    ok
}

/// The value of a header as text.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .expect("a text header")
}

/// The value of a numeric header.
fn number(headers: &HeaderMap, name: &str) -> u64 {
    header(headers, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {headers:?}"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /admin/api/rate-limits` with the token.
async fn rate_limits(gateway: &Gateway) -> Value {
    let response = client()
        .get(gateway.admin_url("/admin/api/rate-limits"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /admin/api/rate-limits");
    assert_eq!(response.status(), 200);
    json(response).await
}

/// The busiest keys the admin API reports for one policy, as (key, count).
async fn busiest(gateway: &Gateway, policy: &str) -> Vec<(String, u64)> {
    let listed = rate_limits(gateway).await;
    let entry = listed
        .as_array()
        .expect("a list of policies")
        .iter()
        .find(|p| p["name"] == policy)
        .unwrap_or_else(|| panic!("no policy {policy:?} in {listed}"));
    entry["busiest"]
        .as_array()
        .expect("busiest keys")
        .iter()
        .map(|k| {
            (
                k["key"].as_str().expect("a key").to_owned(),
                k["count"].as_u64().expect("a count"),
            )
        })
        .collect()
}

/// `DELETE /admin/api/rate-limits/{policy}/{key}` (the key URL-encoded here).
async fn reset(gateway: &Gateway, policy: &str, key: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = client().delete(gateway.admin_url(&format!(
        "/admin/api/rate-limits/{}/{}",
        encode(policy),
        encode(key)
    )));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("DELETE a rate-limit key");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates a user through the admin API.
async fn add_user(gateway: &Gateway, name: &str, roles: &[&str]) {
    let response = client()
        .post(gateway.admin_url("/admin/api/users"))
        .bearer_auth(TOKEN)
        .json(&json!({"username": name, "password": PASSWORD, "roles": roles}))
        .send()
        .await
        .expect("POST /admin/api/users");
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// `POST /auth/login` with JSON credentials.
async fn try_login(gateway: &Gateway, name: &str, password: &str) -> reqwest::Response {
    client()
        .post(gateway.url("/auth/login"))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .expect("POST /auth/login")
}

/// Logs in and returns the `Cookie` header value for the session.
async fn login(gateway: &Gateway, name: &str) -> String {
    let response = try_login(gateway, name, PASSWORD).await;
    assert_eq!(response.status(), 200, "login of {name}");
    let set_cookie = header(response.headers(), "set-cookie");
    set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .trim()
        .to_owned()
}

/// A configuration with the admin token and plain-HTTP session cookies.
fn with_accounts() -> Setup {
    Setup::new()
        .admin(&format!("token = \"{TOKEN}\""))
        .raw("[session]\nsecure = false\n")
}

// Exact admission under concurrency.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_limit_is_admitted_under_concurrency() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("burst")))
            .raw(&policy(
                "burst",
                &["key = [\"ip\"]", "limit = 50", "window = \"1h\""],
            )),
    );
    let shared = client();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            // Half the requests share one client (and its pool), the rest
            // come from clients of their own.
            let client = if i % 2 == 0 { shared.clone() } else { client() };
            let url = gateway.url(&format!("/p/{i}"));
            tokio::spawn(async move {
                let response = client.get(url).send().await.expect("the request");
                let status = response.status().as_u16();
                response.bytes().await.expect("the body");
                status
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (50, 150));
    assert_eq!(echo.hits(), 50);
    assert_eq!(
        busiest(&gateway, "burst").await,
        vec![("127.0.0.1".to_owned(), 50)]
    );
}

// The sliding window across a boundary.

/// Why an attempt could not be judged (the machine was too slow for it).
type Inconclusive = String;

/// One request of the sliding-window test: (sent, status, answered) in Unix ms.
async fn timed_get(client: &reqwest::Client, gateway: &Gateway, key: &str) -> (u64, u16, u64) {
    let sent = now_ms();
    let (status, _) = get(client, gateway, "/p/slide", &[("x-attempt", key)]).await;
    (sent, status, now_ms())
}

/// Fills the limit late in one window, then checks the next window against
/// the sliding estimate `limit * (1 - elapsed/window) + admitted_since`:
/// the n-th request admitted after the boundary needs `elapsed >= n*window/limit`,
/// and a rejection with `n` admitted means `elapsed < (n+1)*window/limit`.
async fn sliding_attempt(gateway: &Gateway, key: &str) -> Result<(), Inconclusive> {
    const W: u64 = 1000;
    const LIMIT: u64 = 10;
    let client = client();

    // Fill the limit 60% into a window.
    let now = now_ms();
    let mut fill_at = now - now % W + 600;
    if now > fill_at {
        fill_at += W;
    }
    let boundary = fill_at - 600 + W;
    sleep_until_ms(fill_at).await;
    for i in 0..LIMIT {
        let (_, status, _) = timed_get(&client, gateway, key).await;
        assert_eq!(status, 200, "request {i} of the fill");
    }
    let (_, status, answered) = timed_get(&client, gateway, key).await;
    if answered >= boundary {
        return Err(format!("the fill ended {}ms late", answered - boundary));
    }
    assert_eq!(status, 429, "one request over the limit");

    // Check one request's outcome against the estimate.
    let mut since = 0u64;
    let judge = |since: &mut u64,
                 (sent, status, answered): (u64, u16, u64)|
     -> Result<bool, Inconclusive> {
        if answered >= boundary + W {
            return Err("the next window ended before the checks did".into());
        }
        match status {
            200 => {
                *since += 1;
                let elapsed = answered - boundary;
                assert!(
                    *since * W <= LIMIT * elapsed,
                    "request {since} after the boundary admitted at most {elapsed}ms into it"
                );
                Ok(true)
            }
            429 => {
                let elapsed = sent.saturating_sub(boundary);
                assert!(
                    (*since + 1) * W > LIMIT * elapsed,
                    "rejected {elapsed}ms after the boundary with only {since} admitted since"
                );
                Ok(false)
            }
            other => panic!("unexpected status {other}"),
        }
    };

    // Right after the boundary the full previous window still weighs almost
    // fully: no fresh limit.
    sleep_until_ms(boundary + 5).await;
    let mut last = 0;
    for _ in 0..LIMIT {
        let outcome = timed_get(&client, gateway, key).await;
        last = outcome.2;
        judge(&mut since, outcome)?;
    }
    if last - boundary > W / 4 {
        return Err(format!(
            "the burst after the boundary took until {}ms",
            last - boundary
        ));
    }
    // Implied by the checks above; stated for the reader.
    assert!(since <= 2, "{since} admitted right after the boundary");

    // Half a window in, about half the limit has come back.
    sleep_until_ms(boundary + W / 2).await;
    let mut rejected_at = None;
    for _ in 0..2 * LIMIT {
        let outcome = timed_get(&client, gateway, key).await;
        if !judge(&mut since, outcome)? {
            rejected_at = Some(outcome.0);
            break;
        }
    }
    let rejected_at = rejected_at.expect("a rejection in the middle of the window");
    if rejected_at - boundary > W * 6 / 10 {
        return Err("the half-window probe was slow".into());
    }
    assert!(
        (LIMIT / 2 - 1..=LIMIT / 2 + 1).contains(&since),
        "{since} admitted by half a window after the boundary"
    );

    // With a whole window without traffic in between, the full limit is back.
    sleep_until_ms(boundary + 2 * W + 5).await;
    let mut statuses = Vec::new();
    for _ in 0..=LIMIT {
        let (_, status, answered) = timed_get(&client, gateway, key).await;
        if answered >= boundary + 3 * W {
            return Err("the final burst crossed a boundary".into());
        }
        statuses.push(status);
    }
    let mut expected = vec![200; LIMIT as usize];
    expected.push(429);
    assert_eq!(statuses, expected, "after two windows");
    Ok(())
}

#[tokio::test]
async fn the_sliding_window_allows_no_double_burst_at_a_boundary() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("slide")))
            .raw(&policy(
                "slide",
                &[
                    "key = [\"header:x-attempt\"]",
                    "limit = 10",
                    "window = \"1s\"",
                ],
            )),
    );
    let mut reasons = Vec::new();
    for attempt in 0..3 {
        match sliding_attempt(&gateway, &format!("attempt-{attempt}")).await {
            Ok(()) => return,
            Err(why) => reasons.push(why),
        }
    }
    panic!("every attempt was too slow to judge: {reasons:?}");
}

// Persistence across restarts.

/// A gateway on the storage directory of `first` (which must have exited).
fn restart_on(first: &Gateway, setup: Setup) -> Gateway {
    let data = first.dir().join("data");
    Gateway::start(setup.storage(&format!(
        "path = \"{}\"",
        data.display().to_string().replace('\\', "\\\\")
    )))
}

fn persisted(echo: &Echo) -> Setup {
    Setup::new()
        .route(route("r", "/p/*", &echo.url()).extra(&uses("daily")))
        .raw(&policy(
            "daily",
            &["key = [\"ip\"]", "limit = 3", "window = \"1h\""],
        ))
}

#[tokio::test]
async fn counts_survive_a_graceful_restart() {
    let echo = Echo::start();
    let mut first = Gateway::start(persisted(&echo));
    assert_eq!(admitted(&first, "/p/x", &[], 4).await, 3);
    first.signal("TERM");
    assert!(first.wait_exit(SOON).success());

    let second = restart_on(&first, persisted(&echo));
    let (status, headers) = get(&client(), &second, "/p/x", &[]).await;
    assert_eq!(status, 429);
    assert_eq!(number(&headers, "x-ratelimit-remaining"), 0);
    assert_eq!(echo.hits(), 3);
}

/// With `storage.flush_interval = "50ms"` counts are handed to sled at most
/// every 50 ms and sled writes them to disk at most every 50 ms, so a crash
/// loses only the requests admitted in roughly the last two flush intervals:
/// after a restart those few could be admitted again. Everything older
/// survives a SIGKILL, which this test waits out (10 intervals) before killing.
#[tokio::test]
async fn counts_survive_a_crash_after_the_flush_interval() {
    let echo = Echo::start();
    let setup = || persisted(&echo).storage("flush_interval = \"50ms\"");
    let mut first = Gateway::start(setup());
    assert_eq!(admitted(&first, "/p/x", &[], 4).await, 3);
    // The durability window under test, not a wait for an event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = libc::pid_t::try_from(first.pid()).unwrap();
    // SAFETY: kill(2) with a valid signal number has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(!first.wait_exit(SOON).success());

    let second = restart_on(&first, setup());
    assert_eq!(admitted(&second, "/p/x", &[], 2).await, 0);
    assert_eq!(echo.hits(), 3);
}

// Attaching policies to routes; role limits.

#[tokio::test]
async fn each_route_applies_its_own_policy() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("a", "/a/*", &echo.url()).extra(&uses("two")))
            .route(route("b", "/b/*", &echo.url()).extra(&uses("four")))
            .raw(&policy(
                "two",
                &["key = [\"ip\"]", "limit = 2", "window = \"1h\""],
            ))
            .raw(&policy(
                "four",
                &["key = [\"ip\"]", "limit = 4", "window = \"1h\""],
            )),
    );
    assert_eq!(admitted(&gateway, "/a/x", &[], 5).await, 2);
    // A different policy has a counter of its own, even for the same client.
    assert_eq!(admitted(&gateway, "/b/x", &[], 6).await, 4);
    assert_eq!(echo.hits(), 6);
}

#[tokio::test]
async fn none_opts_a_route_out_of_the_server_default() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .server(&uses("default"))
            .route(route("limited", "/limited/*", &echo.url()))
            .route(route("free", "/free/*", &echo.url()).extra(&uses("none")))
            .raw(&policy(
                "default",
                &["key = [\"ip\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    assert_eq!(admitted(&gateway, "/limited/x", &[], 4).await, 2);
    assert_eq!(admitted(&gateway, "/free/x", &[], 10).await, 10);
    let (_, headers) = get(&client(), &gateway, "/free/x", &[]).await;
    assert!(headers.get("x-ratelimit-limit").is_none(), "{headers:?}");
}

#[tokio::test]
async fn every_policy_in_a_list_must_admit() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra("rate_limit = [\"wide\", \"narrow\"]"))
            .route(route("w", "/w/*", &echo.url()).extra(&uses("wide")))
            .raw(&policy(
                "wide",
                &["key = [\"ip\"]", "limit = 100", "window = \"1h\""],
            ))
            .raw(&policy(
                "narrow",
                &["key = [\"ip\"]", "limit = 3", "window = \"1h\""],
            )),
    );
    // The tighter policy rejects, whichever order they are listed in.
    assert_eq!(admitted(&gateway, "/p/x", &[], 5).await, 3);
    assert_eq!(echo.hits(), 3);
    let (status, headers) = get(&client(), &gateway, "/p/x", &[]).await;
    assert_eq!(status, 429);
    assert_eq!(number(&headers, "x-ratelimit-limit"), 3);
    // The wider policy alone still admits on another route.
    assert_eq!(admitted(&gateway, "/w/x", &[], 2).await, 2);
}

/// A request one policy rejects never reaches the upstream, so it should not
/// use up the quota of the other policies of the route either (a single
/// policy never counts the requests it rejects).
#[tokio::test]
async fn a_request_rejected_by_one_policy_does_not_count_against_the_others() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra("rate_limit = [\"per-ip\", \"per-key\"]"))
            .raw(&policy(
                "per-ip",
                &["key = [\"ip\"]", "limit = 3", "window = \"1h\""],
            ))
            .raw(&policy(
                "per-key",
                &["key = [\"header:x-key\"]", "limit = 1", "window = \"1h\""],
            )),
    );
    // One admitted, then three rejected by per-key.
    assert_eq!(admitted(&gateway, "/p/x", &[("x-key", "a")], 4).await, 1);
    // Only one request got through, so per-ip has room for two more.
    assert_eq!(admitted(&gateway, "/p/x", &[("x-key", "b")], 1).await, 1);
    assert_eq!(admitted(&gateway, "/p/x", &[("x-key", "c")], 1).await, 1);
    assert_eq!(echo.hits(), 3);
}

/// Naming a policy twice in a route's list must not count every request
/// twice (silently halving the limit): either `check` refuses the list, or
/// the policy applies once.
#[tokio::test]
async fn a_policy_listed_twice_is_refused_or_applied_once() {
    let echo = Echo::start();
    let setup = Setup::new()
        .route(route("r", "/p/*", &echo.url()).extra("rate_limit = [\"dup\", \"dup\"]"))
        .raw(&policy(
            "dup",
            &["key = [\"ip\"]", "limit = 4", "window = \"1h\""],
        ));
    let (ok, stderr) = check(&setup);
    if !ok {
        assert!(
            problems(&stderr)
                .iter()
                .any(|p| p.starts_with("routes[0].rate_limit")),
            "{stderr}"
        );
        return;
    }
    let gateway = Gateway::start(setup);
    assert_eq!(admitted(&gateway, "/p/x", &[], 6).await, 4);
}

#[tokio::test]
async fn role_limits_raise_the_limit_for_their_users() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("tiered")))
            .raw(&policy(
                "tiered",
                &["key = [\"user\"]", "limit = 2", "window = \"1h\""],
            ))
            .raw("[rate_limits.tiered.roles]\npremium = 4\ngold = 6\n"),
    );
    add_user(&gateway, "alice", &["premium"]).await;
    add_user(&gateway, "bob", &["basic"]).await;
    add_user(&gateway, "carol", &["premium", "gold"]).await;
    let alice = login(&gateway, "alice").await;
    let bob = login(&gateway, "bob").await;
    let carol = login(&gateway, "carol").await;

    for (who, cookie, limit) in [("alice", &alice, 4), ("bob", &bob, 2), ("carol", &carol, 6)] {
        let client = client();
        let (status, headers) = get(&client, &gateway, "/p/x", &[("cookie", cookie)]).await;
        assert_eq!(status, 200, "{who}");
        assert_eq!(number(&headers, "x-ratelimit-limit"), limit, "{who}");
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            format!("\"tiered\";q={limit};w=3600"),
            "{who}"
        );
        let more = admitted(&gateway, "/p/x", &[("cookie", cookie)], limit as usize + 2).await;
        assert_eq!(more + 1, limit as usize, "{who}");
        let response = client
            .get(gateway.url("/p/x"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{who}");
        assert_eq!(json(response).await["limit"], limit, "{who}");
    }
    // Anonymous requests get the base limit.
    assert_eq!(admitted(&gateway, "/p/x", &[], 4).await, 2);
    assert_eq!(echo.hits(), 4 + 2 + 6 + 2);
}

#[tokio::test]
async fn limits_apply_after_authentication() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(
                route("private", "/p/*", &echo.url())
                    .authenticated()
                    .extra(&uses("one")),
            )
            .raw(&policy(
                "one",
                &["key = [\"ip\"]", "limit = 1", "window = \"1h\""],
            )),
    );
    let client = client();
    // Refused by authentication, which runs first: nothing is counted.
    for _ in 0..3 {
        let (status, headers) = get(&client, &gateway, "/p/x", &[]).await;
        assert_eq!(status, 401);
        assert!(headers.get("x-ratelimit-limit").is_none(), "{headers:?}");
    }
    add_user(&gateway, "alice", &[]).await;
    let cookie = login(&gateway, "alice").await;
    assert_eq!(
        admitted(&gateway, "/p/x", &[("cookie", &cookie)], 3).await,
        1
    );
}

// Counter keys.

#[tokio::test]
async fn composite_keys_count_each_method_separately() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("by-method")))
            .raw(&policy(
                "by-method",
                &["key = [\"ip\", \"method\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    let client = client();
    let mut statuses = Vec::new();
    for method in ["GET", "POST", "GET", "POST", "GET", "POST", "PUT"] {
        let response = client
            .request(method.parse().unwrap(), gateway.url("/p/x"))
            .send()
            .await
            .unwrap();
        statuses.push((method, response.status().as_u16()));
    }
    assert_eq!(
        statuses,
        [
            ("GET", 200),
            ("POST", 200),
            ("GET", 200),
            ("POST", 200),
            ("GET", 429),
            ("POST", 429),
            ("PUT", 200)
        ]
    );
    let mut keys = busiest(&gateway, "by-method").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            ("127.0.0.1|GET".to_owned(), 2),
            ("127.0.0.1|POST".to_owned(), 2),
            ("127.0.0.1|PUT".to_owned(), 1)
        ]
    );
}

#[tokio::test]
async fn header_keys_count_each_value_separately() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("per-key")))
            .raw(&policy(
                "per-key",
                &[
                    "key = [\"header:X-Api-Key\"]",
                    "limit = 2",
                    "window = \"1h\"",
                ],
            )),
    );
    assert_eq!(
        admitted(&gateway, "/p/x", &[("x-api-key", "k1")], 3).await,
        2
    );
    assert_eq!(
        admitted(&gateway, "/p/x", &[("X-API-KEY", "k2")], 3).await,
        2
    );
    // The same key is shared by every request (and client) that sends it.
    assert_eq!(
        admitted(&gateway, "/p/other", &[("x-api-key", "k1")], 1).await,
        0
    );
    // Requests without the header share the empty value's counter.
    assert_eq!(admitted(&gateway, "/p/x", &[], 3).await, 2);
    assert_eq!(echo.hits(), 6);
}

#[tokio::test]
async fn route_keys_count_each_route_separately() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .server(&uses("per-route"))
            .route(route("a", "/a/*", &echo.url()))
            .route(route("b", "/b/*", &echo.url()))
            .raw(&policy(
                "per-route",
                &["key = [\"route\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    // Every client of a route shares its counter.
    assert_eq!(
        admitted(&gateway, "/a/1", &[("x-api-key", "one")], 1).await,
        1
    );
    assert_eq!(
        admitted(&gateway, "/a/2", &[("x-api-key", "two")], 3).await,
        1
    );
    assert_eq!(admitted(&gateway, "/b/1", &[], 3).await, 2);
    let mut keys = busiest(&gateway, "per-route").await;
    keys.sort();
    assert_eq!(keys, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
}

// The client address behind proxies.

#[tokio::test]
async fn a_forwarded_for_header_from_an_untrusted_peer_cannot_dodge_the_limit() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("per-ip")))
            .raw(&policy(
                "per-ip",
                &["key = [\"ip\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    let client = client();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let xff = format!("203.0.113.{i}");
        statuses.push(
            get(&client, &gateway, "/p/x", &[("x-forwarded-for", &xff)])
                .await
                .0,
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(echo.hits(), 2);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_key() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .server("trusted_proxies = [\"127.0.0.1/32\"]")
            .route(route("r", "/p/*", &echo.url()).extra(&uses("per-ip")))
            .raw(&policy(
                "per-ip",
                &["key = [\"ip\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    assert_eq!(admitted(&gateway, "/p/x", &xff("203.0.113.1"), 3).await, 2);
    assert_eq!(admitted(&gateway, "/p/x", &xff("203.0.113.2"), 3).await, 2);
    // The right-most address that is not a trusted proxy is the client:
    // the spoofable left part of the chain does not matter...
    assert_eq!(
        admitted(&gateway, "/p/x", &xff("198.51.100.9, 203.0.113.1"), 1).await,
        0
    );
    // ...and trusted hops on the right are skipped.
    assert_eq!(
        admitted(&gateway, "/p/x", &xff("203.0.113.3, 127.0.0.1"), 3).await,
        2
    );
    // Without the header the proxy itself is the client.
    assert_eq!(admitted(&gateway, "/p/x", &[], 3).await, 2);
    let mut keys = busiest(&gateway, "per-ip").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            ("127.0.0.1".to_owned(), 2),
            ("203.0.113.1".to_owned(), 2),
            ("203.0.113.2".to_owned(), 2),
            ("203.0.113.3".to_owned(), 2)
        ]
    );
}

// User keys on a public route.

#[tokio::test]
async fn user_keys_fall_back_to_the_address_and_count_each_user_separately() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("public", "/p/*", &echo.url()).extra(&uses("per-user")))
            .raw(&policy(
                "per-user",
                &["key = [\"user\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    add_user(&gateway, "alice", &[]).await;
    add_user(&gateway, "bob", &[]).await;
    let alice = login(&gateway, "alice").await;
    let bob = login(&gateway, "bob").await;

    assert_eq!(admitted(&gateway, "/p/x", &[], 3).await, 2);
    assert_eq!(
        admitted(&gateway, "/p/x", &[("cookie", &alice)], 3).await,
        2
    );
    assert_eq!(admitted(&gateway, "/p/x", &[("cookie", &bob)], 3).await, 2);
    // An invalid session is anonymous again, on the address's counter.
    assert_eq!(
        admitted(
            &gateway,
            "/p/x",
            &[("cookie", "portcullis_session=not-a-token")],
            1
        )
        .await,
        0
    );
    let mut keys = busiest(&gateway, "per-user").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            ("ip:127.0.0.1".to_owned(), 2),
            ("user:alice".to_owned(), 2),
            ("user:bob".to_owned(), 2)
        ]
    );
    assert_eq!(echo.hits(), 6);
}

#[tokio::test]
async fn session_keys_count_each_session_separately() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("public", "/p/*", &echo.url()).extra(&uses("per-session")))
            .raw(&policy(
                "per-session",
                &["key = [\"session\"]", "limit = 1", "window = \"1h\""],
            )),
    );
    add_user(&gateway, "alice", &[]).await;
    let first = login(&gateway, "alice").await;
    let second = login(&gateway, "alice").await;
    assert_ne!(first, second);
    assert_eq!(
        admitted(&gateway, "/p/x", &[("cookie", &first)], 2).await,
        1
    );
    assert_eq!(
        admitted(&gateway, "/p/x", &[("cookie", &second)], 2).await,
        1
    );
    assert_eq!(admitted(&gateway, "/p/x", &[], 2).await, 1);
    let keys = busiest(&gateway, "per-session").await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|(k, _)| k.starts_with("session:"))
            .count(),
        2,
        "{keys:?}"
    );
    assert!(keys.contains(&("ip:127.0.0.1".to_owned(), 1)), "{keys:?}");
}

// Headers and the 429 body.

/// Parses `"name";a=1;b=2, "other";a=3` into (name, [(param, value)]).
fn structured_list(text: &str) -> Vec<(String, Vec<(String, u64)>)> {
    text.split(',')
        .map(|item| {
            let mut parts = item.trim().split(';');
            let name = parts.next().unwrap().trim_matches('"').to_owned();
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("param=value");
                    (k.to_owned(), v.parse().expect("a number"))
                })
                .collect();
            (name, params)
        })
        .collect()
}

#[tokio::test]
async fn allowed_responses_carry_the_limit_headers() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("hdr")))
            .route(route("free", "/free/*", &echo.url()))
            .raw(&policy(
                "hdr",
                &["key = [\"ip\"]", "limit = 5", "window = \"1h\""],
            )),
    );
    let client = client();
    for expected_remaining in (0..5).rev() {
        let before = now_secs();
        let (status, headers) = get(&client, &gateway, "/p/x", &[]).await;
        let after = now_secs();
        assert_eq!(status, 200);
        assert_eq!(number(&headers, "x-ratelimit-limit"), 5);
        assert_eq!(
            number(&headers, "x-ratelimit-remaining"),
            expected_remaining
        );
        // Windows are aligned, so the current one ends on the next full hour.
        let reset = number(&headers, "x-ratelimit-reset");
        let next_hour = |secs: u64| (secs / 3600 + 1) * 3600;
        assert!(
            reset == next_hour(before) || reset == next_hour(after),
            "reset {reset} is not the end of the hour after {before}"
        );
        assert_eq!(header(&headers, "ratelimit-policy"), "\"hdr\";q=5;w=3600");
        let state = structured_list(header(&headers, "ratelimit"));
        assert_eq!(state.len(), 1, "{state:?}");
        assert_eq!(state[0].0, "hdr");
        assert_eq!(state[0].1[0], ("r".to_owned(), expected_remaining));
        let (name, t) = &state[0].1[1];
        assert_eq!(name, "t");
        assert!(*t <= 3600, "t={t}");
        assert!(
            before + t <= reset + 1 && reset <= after + t + 1,
            "t={t} disagrees with reset {reset}"
        );
    }
    assert_eq!(echo.hits(), 5);

    // A route without a policy carries none of them.
    let (status, headers) = get(&client, &gateway, "/free/x", &[]).await;
    assert_eq!(status, 200);
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
        "retry-after",
    ] {
        assert!(headers.get(name).is_none(), "{name} in {headers:?}");
    }
}

#[tokio::test]
async fn a_limited_request_gets_429_with_retry_after_and_never_reaches_the_upstream() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("tight")))
            .raw(&policy(
                "tight",
                &["key = [\"ip\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    assert_eq!(admitted(&gateway, "/p/x", &[], 2).await, 2);
    assert_eq!(echo.hits(), 2);
    for _ in 0..3 {
        let response = client()
            .post(gateway.url("/p/x"))
            .header("x-request-id", "limited-request-1")
            .body("a body that must not be forwarded")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "content-type"), "application/json");
        let retry_after = number(&headers, "retry-after");
        // The current window holds the whole limit: one more request fits
        // once the window has ended and its weight has decayed by 1/limit.
        assert!(
            (1..=3600 + 1800 + 1).contains(&retry_after),
            "Retry-After {retry_after}"
        );
        assert_eq!(number(&headers, "x-ratelimit-remaining"), 0);
        assert_eq!(number(&headers, "x-ratelimit-limit"), 2);
        let state = structured_list(header(&headers, "ratelimit"));
        assert_eq!(state[0].1[0], ("r".to_owned(), 0));
        assert_eq!(state[0].1[1], ("t".to_owned(), retry_after));
        let body = json(response).await;
        assert_eq!(body["error"], "rate_limit_exceeded");
        assert_eq!(body["retry_after"], retry_after);
        assert_eq!(body["limit"], 2);
        assert_eq!(body["window"], 3600);
        assert_eq!(body["correlation_id"], "limited-request-1");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(echo.hits(), 2);
}

#[tokio::test]
async fn with_two_policies_the_headers_report_the_closest_and_list_both() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra("rate_limit = [\"wide\", \"narrow\"]"))
            .raw(&policy(
                "wide",
                &["key = [\"ip\"]", "limit = 10", "window = \"1h\""],
            ))
            .raw(&policy(
                "narrow",
                &["key = [\"ip\"]", "limit = 3", "window = \"1m\""],
            )),
    );
    let client = client();
    for i in 1..=3u64 {
        let (status, headers) = get(&client, &gateway, "/p/x", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(number(&headers, "x-ratelimit-limit"), 3);
        assert_eq!(number(&headers, "x-ratelimit-remaining"), 3 - i);
        let reset = number(&headers, "x-ratelimit-reset");
        assert!(reset <= now_secs() + 60, "narrow resets within the minute");
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            "\"wide\";q=10;w=3600, \"narrow\";q=3;w=60"
        );
        let state = structured_list(header(&headers, "ratelimit"));
        let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["wide", "narrow"]);
        assert_eq!(state[0].1[0], ("r".to_owned(), 10 - i));
        assert_eq!(state[1].1[0], ("r".to_owned(), 3 - i));
        assert!(
            state[0].1[1].1 <= 3600 && state[1].1[1].1 <= 60,
            "{state:?}"
        );
    }
    let (status, headers) = get(&client, &gateway, "/p/x", &[]).await;
    assert_eq!(status, 429);
    assert_eq!(number(&headers, "x-ratelimit-limit"), 3);
    assert_eq!(number(&headers, "x-ratelimit-remaining"), 0);
    assert!(number(&headers, "retry-after") <= 60 + 20);
}

// Expiry and the sweeper.

#[tokio::test]
async fn counters_expire_and_are_swept_after_two_windows() {
    const W: u64 = 300;
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .storage("flush_interval = \"50ms\"")
            .storage("sweep_interval = \"50ms\"")
            .route(route("r", "/p/*", &echo.url()).extra(&uses("short")))
            .raw(&policy(
                "short",
                &[
                    "key = [\"header:x-client\"]",
                    "limit = 5",
                    "window = \"300ms\"",
                ],
            )),
    );
    let client = client();
    // Traffic from several keys inside one window, so the counts are exact.
    let mut last_traffic = None;
    for attempt in 0..5 {
        let now = now_ms();
        let start = now - now % W + W;
        sleep_until_ms(start + 5).await;
        let names: Vec<String> = (0..3).map(|k| format!("{attempt}-{k}")).collect();
        for (k, name) in names.iter().enumerate() {
            for _ in 0..3 - k {
                assert_eq!(
                    get(&client, &gateway, "/p/x", &[("x-client", name)])
                        .await
                        .0,
                    200
                );
            }
        }
        let listed = busiest(&gateway, "short").await;
        if now_ms() >= start + W {
            continue;
        }
        assert_eq!(
            listed,
            [
                (names[0].clone(), 3),
                (names[1].clone(), 2),
                (names[2].clone(), 1)
            ]
        );
        last_traffic = Some((start, names));
        break;
    }
    let (start, names) = last_traffic.expect("one round of traffic within a window");

    // After two windows no key counts any more...
    eventually("the busiest keys to be gone", SOON, || async {
        busiest(&gateway, "short").await.is_empty().then_some(())
    })
    .await;
    // ...and the sweeper (every sweep interval) drops them from memory and
    // disk, so resetting one finds nothing. The keys expire at start + 2W.
    sleep_until_ms(start + 2 * W + 10 * 50).await;
    for name in &names {
        let (status, body) = reset(&gateway, "short", name, Some(TOKEN)).await;
        assert_eq!(status, 404, "key {name} was not swept: {body}");
    }
}

// The admin API.

#[tokio::test]
async fn the_admin_api_lists_policies_with_their_busiest_keys() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("a", "/a/*", &echo.url()).extra(&uses("alpha")))
            .route(route("b", "/b/*", &echo.url()).extra(&uses("beta")))
            .raw(&policy(
                "alpha",
                &[
                    "key = [\"ip\"]",
                    "limit = 3",
                    "window = \"1m\"",
                    "fail = \"closed\"",
                ],
            ))
            .raw("[rate_limits.alpha.roles]\npremium = 10\n")
            .raw(&policy(
                "beta",
                &["key = [\"header:x-k\"]", "limit = 5", "window = \"1h\""],
            )),
    );
    assert_eq!(admitted(&gateway, "/a/x", &[], 2).await, 2);
    assert_eq!(admitted(&gateway, "/b/x", &[("x-k", "x")], 3).await, 3);
    assert_eq!(admitted(&gateway, "/b/x", &[("x-k", "y")], 1).await, 1);

    let listed = rate_limits(&gateway).await;
    assert_eq!(
        listed,
        json!([
            {
                "name": "alpha",
                "limit": 3,
                "window_seconds": 60.0,
                "fail": "closed",
                "roles": {"premium": 10},
                "busiest": [{"key": "127.0.0.1", "count": 2}],
            },
            {
                "name": "beta",
                "limit": 5,
                "window_seconds": 3600.0,
                "fail": "open",
                "roles": {},
                "busiest": [{"key": "x", "count": 3}, {"key": "y", "count": 1}],
            },
        ])
    );
}

#[tokio::test]
async fn the_admin_rate_limit_api_needs_the_token() {
    let gateway = Gateway::start(with_accounts().raw(&policy(
        "p",
        &["key = [\"ip\"]", "limit = 1", "window = \"1h\""],
    )));
    let url = gateway.admin_url("/admin/api/rate-limits");
    for token in [None, Some("wrong-token-of-enough-length")] {
        let mut request = client().get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "GET with {token:?}");
        assert_eq!(json(response).await["error"], "unauthorized");
        let (status, _) = reset(&gateway, "p", "127.0.0.1", token).await;
        assert_eq!(status, 401, "DELETE with {token:?}");
    }
}

#[tokio::test]
async fn an_admin_reset_readmits_the_client() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("comp")))
            .raw(&policy(
                "comp",
                &["key = [\"ip\", \"method\"]", "limit = 1", "window = \"1h\""],
            )),
    );
    assert_eq!(admitted(&gateway, "/p/x", &[], 2).await, 1);
    // The key holds a '|', sent URL-encoded.
    let (status, _) = reset(&gateway, "comp", "127.0.0.1|GET", Some(TOKEN)).await;
    assert_eq!(status, 204);
    assert_eq!(admitted(&gateway, "/p/x", &[], 2).await, 1);
    assert_eq!(echo.hits(), 2);

    let (status, body) = reset(&gateway, "comp", "127.0.0.1|PATCH", Some(TOKEN)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let (status, _) = reset(&gateway, "nonexistent", "127.0.0.1|GET", Some(TOKEN)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_admin_reset_works_for_keys_with_reserved_characters() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        with_accounts()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("team")))
            .raw(&policy(
                "team",
                &["key = [\"header:x-team\"]", "limit = 1", "window = \"1h\""],
            )),
    );
    for team in ["team/a b", "50%+x?y#z"] {
        assert_eq!(admitted(&gateway, "/p/x", &[("x-team", team)], 2).await, 1);
        assert_eq!(busiest(&gateway, "team").await[0], (team.to_owned(), 1));
        let (status, body) = reset(&gateway, "team", team, Some(TOKEN)).await;
        assert_eq!(status, 204, "reset of {team:?}: {body}");
        assert_eq!(admitted(&gateway, "/p/x", &[("x-team", team)], 1).await, 1);
    }
}

// Configuration errors.

/// Runs `portcullis check` on `setup`; returns (success, stderr).
fn check(setup: &Setup) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, setup.render(dir.path())).unwrap();
    let output = command()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run portcullis check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The problem lines of a failed check.
fn problems(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .skip(1)
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

fn valid_policy(name: &str) -> String {
    policy(name, &["key = [\"ip\"]", "limit = 5", "window = \"1m\""])
}

#[test]
fn check_accepts_every_form_of_rate_limit_setting() {
    let setup = Setup::bare()
        .server(&uses("base"))
        .route(route("a", "/a/*", "http://127.0.0.1:9000"))
        .route(route("b", "/b/*", "http://127.0.0.1:9000").extra(&uses("none")))
        .route(route("c", "/c/*", "http://127.0.0.1:9000").extra("rate_limit = [\"base\", \"full\"]"))
        .raw(&valid_policy("base"))
        .raw(&policy(
            "full",
            &[
                "key = [\"ip\", \"user\", \"session\", \"route\", \"method\", \"header:X-Api-Key\"]",
                "limit = 100",
                "window = \"250ms\"",
                "fail = \"closed\"",
            ],
        ))
        .raw("[rate_limits.full.roles]\npremium = 1000\n");
    let (ok, stderr) = check(&setup);
    assert!(ok, "{stderr}");
}

#[test]
fn check_reports_rate_limit_problems_with_their_key_paths() {
    let setup = Setup::bare()
        .server(&uses("missing-default"))
        .route(route("a", "/a/*", "http://127.0.0.1:9000").extra(&uses("ghost")))
        .route(
            route("b", "/b/*", "http://127.0.0.1:9000").extra("rate_limit = [\"ok\", \"phantom\"]"),
        )
        .raw(&valid_policy("ok"))
        .raw(&policy(
            "zero",
            &["key = [\"ip\"]", "limit = 0", "window = \"1m\""],
        ))
        .raw(&policy(
            "instant",
            &["key = [\"ip\"]", "limit = 1", "window = \"0s\""],
        ))
        .raw(&policy(
            "colour",
            &["key = [\"ip\", \"colour\"]", "limit = 1", "window = \"1m\""],
        ))
        .raw(&policy(
            "empty",
            &["key = []", "limit = 1", "window = \"1m\""],
        ))
        .raw(&policy(
            "sideways",
            &[
                "key = [\"ip\"]",
                "limit = 1",
                "window = \"1m\"",
                "fail = \"sideways\"",
            ],
        ))
        .raw(&valid_policy("roles"))
        .raw("[rate_limits.roles.roles]\npremium = 0\n");
    let (ok, stderr) = check(&setup);
    assert!(!ok, "check passed");
    let found = problems(&stderr);
    let expected = [
        "server.rate_limit: \"missing-default\" is not a defined policy",
        "routes[0].rate_limit: \"ghost\" is not a defined policy",
        "routes[1].rate_limit: \"phantom\" is not a defined policy",
        "rate_limits.zero.limit: must be greater than zero",
        "rate_limits.instant.window: must be at least 1ms",
        "rate_limits.colour.key[1]: \"colour\" is not a key part",
        "rate_limits.empty.key: must name at least one part",
        "rate_limits.sideways.fail: \"sideways\" is not one of open, closed",
        "rate_limits.roles.roles.premium: must be greater than zero",
    ];
    for want in expected {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "missing {want:?} in:\n{stderr}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{stderr}");
    // Unknown names come with the defined ones.
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("routes[0].rate_limit") && p.contains("ok")),
        "{stderr}"
    );
}

#[test]
fn check_rejects_incomplete_and_misnamed_policies() {
    let (ok, stderr) = check(
        &Setup::bare()
            .raw("[rate_limits.bare]\n")
            .raw(&valid_policy("none"))
            .raw(&policy(
                "badheader",
                &[
                    "key = [\"header:bad header\"]",
                    "limit = 1",
                    "window = \"1m\"",
                ],
            )),
    );
    assert!(!ok);
    let found = problems(&stderr);
    for want in [
        "rate_limits.bare.key: is required",
        "rate_limits.bare.limit: is required",
        "rate_limits.bare.window: is required",
        "rate_limits.none: ",
        "rate_limits.badheader.key[0]: ",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "missing {want:?} in:\n{stderr}"
        );
    }
    assert_eq!(found.len(), 5, "{stderr}");
}

// Observability.

#[tokio::test]
async fn the_access_log_and_metrics_record_each_decision() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("r", "/p/*", &echo.url()).extra(&uses("logged")))
            .route(route("free", "/free/*", &echo.url()))
            .raw(&policy(
                "logged",
                &["key = [\"ip\"]", "limit = 2", "window = \"1h\""],
            )),
    );
    let client = client();
    for (id, path) in [
        ("rl-log-1", "/p/x"),
        ("rl-log-2", "/p/x"),
        ("rl-log-3", "/p/x"),
        ("rl-log-4", "/free/x"),
    ] {
        client
            .get(gateway.url(path))
            .header("x-request-id", id)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let line = gateway.access_line("rl-log-1");
    assert_eq!(
        line["rate_limit"],
        json!({"policy": "logged", "remaining": 1, "limited": false})
    );
    assert_eq!(line["status"], 200);
    let line = gateway.access_line("rl-log-2");
    assert_eq!(
        line["rate_limit"],
        json!({"policy": "logged", "remaining": 0, "limited": false})
    );
    let line = gateway.access_line("rl-log-3");
    assert_eq!(
        line["rate_limit"],
        json!({"policy": "logged", "remaining": 0, "limited": true})
    );
    assert_eq!(line["status"], 429);
    assert_eq!(line["error"], "rate_limit_exceeded");
    assert_eq!(line["level"], "warn");
    assert_eq!(line["upstream_ms"], Value::Null);
    let line = gateway.access_line("rl-log-4");
    assert_eq!(line["rate_limit"], Value::Null);

    let url = gateway.admin_url("/metrics");
    eventually("the decisions to be counted", SOON, || async {
        let text = metrics(&url).await;
        let count = |outcome| {
            sample(
                &text,
                "portcullis_rate_limit_decisions_total",
                &[("policy", "logged"), ("outcome", outcome)],
            )
        };
        (count("allowed") == Some(2.0) && count("limited") == Some(1.0)).then_some(())
    })
    .await;
}

// The login throttle.

#[tokio::test]
async fn failed_logins_are_throttled_per_username() {
    let gateway = Gateway::start(with_accounts().raw("[login]\nmax_failures_per_user = 2\n"));
    add_user(&gateway, "alice", &[]).await;
    for _ in 0..2 {
        let response = try_login(&gateway, "alice", "not the password").await;
        assert_eq!(response.status(), 401);
        assert_eq!(json(response).await["error"], "invalid_credentials");
    }
    // Even the right password is refused while the username is throttled.
    for password in ["not the password", PASSWORD] {
        let response = try_login(&gateway, "alice", password).await;
        assert_eq!(response.status(), 429);
        let retry_after = number(response.headers(), "retry-after");
        assert!((1..=900 + 450 + 1).contains(&retry_after), "{retry_after}");
        let body = json(response).await;
        assert_eq!(body["error"], "rate_limit_exceeded");
        assert_eq!(body["retry_after"], retry_after);
        assert_eq!(body["limit"], 2);
        assert_eq!(body["window"], 900);
    }
    // Another username from the same address is not affected.
    add_user(&gateway, "bob", &[]).await;
    let response = try_login(&gateway, "bob", "not the password").await;
    assert_eq!(response.status(), 401);
    login(&gateway, "bob").await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let gateway = Gateway::start(with_accounts().raw("[login]\nmax_failures_per_ip = 3\n"));
    for name in ["u1", "u2", "u3"] {
        let response = try_login(&gateway, name, "not the password").await;
        assert_eq!(response.status(), 401, "{name}");
    }
    let response = try_login(&gateway, "u4", "not the password").await;
    assert_eq!(response.status(), 429);
    assert!(number(response.headers(), "retry-after") >= 1);
    let body = json(response).await;
    assert_eq!(body["error"], "rate_limit_exceeded");
    assert_eq!(body["limit"], 3);
}

#[tokio::test]
async fn the_login_throttle_survives_a_restart() {
    let setup = || with_accounts().raw("[login]\nmax_failures_per_user = 1\n");
    let mut first = Gateway::start(setup());
    add_user(&first, "alice", &[]).await;
    let response = try_login(&first, "alice", "not the password").await;
    assert_eq!(response.status(), 401);
    first.signal("TERM");
    assert!(first.wait_exit(SOON).success());

    let second = restart_on(&first, setup());
    let response = try_login(&second, "alice", PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert_eq!(json(response).await["error"], "rate_limit_exceeded");
}
