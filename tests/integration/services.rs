//! Upstream services: several targets behind one name, balancing, passive
//! ejection, active checks, and retries that never repeat an unsafe request.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::http::{metrics, sample};
use crate::common::{client, closed_port_url, eventually, json, route, Echo, Gateway, Setup, SOON};

/// A gateway with one service `svc` (its section's extra lines after the
/// targets) and a route `/s/...` to it.
fn service_gateway(targets: &str, extra: &str) -> Gateway {
    Gateway::start(
        Setup::new()
            .raw(&format!("[upstreams.svc]\ntargets = {targets}\n{extra}\n"))
            .route(route("svc", "/s/*", "svc")),
    )
}

/// Which upstream answered each of `n` GETs of `path`.
async fn answers(gateway: &Gateway, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let response = client().get(gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        *counts
            .entry(body["upstream"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_honours_weights() {
    let (a, b, c) = (Echo::named("a"), Echo::named("b"), Echo::named("c"));
    let gateway = service_gateway(
        &format!(
            r#"["{}", {{ url = "{}", weight = 1 }}, {{ url = "{}", weight = 2 }}]"#,
            a.url(),
            b.url(),
            c.url()
        ),
        "",
    );
    let counts = answers(&gateway, "/s/x", 200).await;
    assert_eq!(counts["a"], 50, "{counts:?}");
    assert_eq!(counts["b"], 50, "{counts:?}");
    assert_eq!(counts["c"], 100, "{counts:?}");
}

#[tokio::test]
async fn least_requests_spreads_over_every_target() {
    let (a, b) = (Echo::named("a"), Echo::named("b"));
    let gateway = service_gateway(
        &format!(r#"["{}", "{}"]"#, a.url(), b.url()),
        r#"balance = "least_requests""#,
    );
    let counts = answers(&gateway, "/s/x", 100).await;
    assert!(counts["a"] > 20 && counts["b"] > 20, "{counts:?}");
}

#[tokio::test]
async fn a_dead_target_is_retried_past_then_ejected_and_no_client_sees_an_error() {
    let a = Echo::named("a");
    let dead = closed_port_url();
    let gateway = service_gateway(
        &format!(r#"["{}", "{dead}"]"#, a.url()),
        "[upstreams.svc.passive]\nconsecutive_failures = 2\nejection_time = \"1m\"",
    );
    // Every method, even POST with a body: nothing reached the dead target.
    for i in 0..10 {
        let request = if i % 2 == 0 {
            client().get(gateway.url("/s/x"))
        } else {
            client().post(gateway.url("/s/x")).body("payload")
        };
        let response = request
            .header("x-request-id", format!("dead-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let body = json(response).await;
        assert_eq!(body["upstream"], "a");
        if i % 2 == 1 {
            assert_eq!(body["body_bytes"], 7, "the held body was sent again");
        }
    }
    // The first request that met the dead target took two tries.
    let retried = (0..10)
        .map(|i| gateway.access_line(&format!("dead-{i}")))
        .find(|line| line["tries"] == 2)
        .expect("a request was retried");
    assert_eq!(retried["target"], a.url());
    assert_eq!(retried["status"], 200);
    // After two failures the dead target is ejected: later requests go
    // straight to the live one, in one try.
    let line = gateway.access_line("dead-9");
    assert_eq!(line["tries"], 1, "{line}");
    gateway.wait_for_log(
        |l| l["msg"] == "upstream target ejected after failed requests" && l["target"] == dead,
        Duration::from_secs(5),
    );
    let metrics = metrics(&gateway.admin_url("/metrics")).await;
    let labels = [("service", "svc"), ("target", dead.as_str())];
    assert_eq!(
        sample(&metrics, "portcullis_upstream_target_healthy", &labels),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "portcullis_upstream_ejections_total", &labels),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_post_that_reached_a_target_is_never_sent_twice() {
    let (a, b) = (Echo::named("a"), Echo::named("b"));
    let gateway = service_gateway(&format!(r#"["{}", "{}"]"#, a.url(), b.url()), "");
    // Both targets answer 503 on this path.
    let response = client()
        .post(gateway.url("/s/status/503"))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(a.hits() + b.hits(), 1, "a POST is sent once");
    // A GET is retried once, on the other target, and the last answer stands.
    let response = client()
        .get(gateway.url("/s/status/503"))
        .header("x-request-id", "get-503")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.unwrap(), "upstream says 503");
    assert_eq!(a.hits() + b.hits(), 3);
    assert_eq!(gateway.access_line("get-503")["tries"], 2);
    // retries = 0 turns retrying off.
    let gateway = service_gateway(&format!(r#"["{}", "{}"]"#, a.url(), b.url()), "retries = 0");
    let before = a.hits() + b.hits();
    let response = client()
        .get(gateway.url("/s/status/502"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(a.hits() + b.hits(), before + 1);
}

#[tokio::test]
async fn the_last_target_is_never_ejected() {
    let dead = closed_port_url();
    let gateway = service_gateway(
        &format!(r#"["{dead}"]"#),
        "[upstreams.svc.passive]\nconsecutive_failures = 1",
    );
    for _ in 0..5 {
        let response = client().get(gateway.url("/s/x")).send().await.unwrap();
        // Still tried every time: a 502, never a 503 from an empty service.
        assert_eq!(response.status(), 502);
    }
}

#[tokio::test]
async fn active_checks_take_a_target_out_and_no_healthy_target_is_a_fast_503() {
    let a = Echo::named("a");
    let dead = closed_port_url();
    let gateway = service_gateway(
        &format!(r#"["{}", "{dead}"]"#, a.url()),
        "panic_threshold = 0\n[upstreams.svc.health]\npath = \"/status/204\"\ninterval = \"100ms\"\nfall = 2\nrise = 2",
    );
    gateway.wait_for_log(
        |l| l["msg"] == "upstream target down: failed its health checks" && l["target"] == dead,
        Duration::from_secs(10),
    );
    // The dead target is out: every request goes to `a` in one try.
    for i in 0..6 {
        let id = format!("checked-{i}");
        let response = client()
            .get(gateway.url("/s/x"))
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(gateway.access_line(&id)["tries"], 1);
    }
    assert!(
        a.paths().iter().any(|p| p == "/status/204"),
        "checks use the path"
    );

    // A service whose only target fails its checks answers 503 at once.
    let gateway = service_gateway(
        &format!(r#"["{dead}"]"#),
        "panic_threshold = 0\n[upstreams.svc.health]\npath = \"/healthz\"\ninterval = \"100ms\"\nfall = 1",
    );
    let response = eventually(
        "the target to be checked down",
        Duration::from_secs(10),
        || async {
            let response = client().get(gateway.url("/s/x")).send().await.unwrap();
            (response.status() == 503).then_some(response)
        },
    )
    .await;
    assert_eq!(response.headers()["retry-after"], "1");
    let body = json(response).await;
    assert_eq!(body["error"], "no_healthy_upstream");
}

#[tokio::test]
async fn routes_name_services_that_exist_and_services_are_validated() {
    let setup = Setup::new()
        .raw("[upstreams.svc]\ntargets = [\"ftp://x\", { url = \"http://a\", weight = 0 }]\nbalance = \"random\"\n[upstreams.svc.health]\ninterval = \"1s\"")
        .route(route("r", "/r/*", "nosuch"));
    let failed = crate::common::Launch::new(setup).expect_failure();
    let out = failed.stderr;
    for expected in [
        "upstreams.svc.targets[0]",
        "upstreams.svc.targets[1].weight",
        "upstreams.svc.balance",
        "upstreams.svc.health.path",
        "routes[0].upstream: \"nosuch\" is neither an http(s) URL nor a service in [upstreams]",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
}

/// Which upstream each key's requests go to, by `X-Key`.
async fn placement(gateway: &Gateway, keys: &[String]) -> HashMap<String, String> {
    let mut placed = HashMap::new();
    for key in keys {
        let response = client()
            .get(gateway.url("/s/x"))
            .header("x-key", key)
            .send()
            .await
            .unwrap();
        let body = json(response).await;
        placed.insert(key.clone(), body["upstream"].as_str().unwrap().to_owned());
    }
    placed
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_in_place_and_a_new_target_takes_only_its_share() {
    let echoes: Vec<Echo> = ["a", "b", "c", "d"].into_iter().map(Echo::named).collect();
    let setup = |n: usize| {
        let targets: Vec<String> = echoes[..n]
            .iter()
            .map(|e| format!("\"{}\"", e.url()))
            .collect();
        Setup::new()
            .raw(&format!(
                "[upstreams.svc]\ntargets = [{}]\nbalance = \"hash\"\nhash_key = \"header:x-key\"\n",
                targets.join(", ")
            ))
            .route(route("svc", "/s/*", "svc"))
    };
    let gateway = Gateway::start(setup(3));
    let keys: Vec<String> = (0..300).map(|i| format!("customer-{i}")).collect();
    let before = placement(&gateway, &keys).await;
    // The same key always lands on the same target, and every target gets keys.
    assert_eq!(
        placement(&gateway, &keys[..50]).await,
        placement(&gateway, &keys[..50]).await
    );
    for name in ["a", "b", "c"] {
        assert!(
            before.values().filter(|v| *v == name).count() > 50,
            "{name}"
        );
    }

    gateway.write_config(&setup(4));
    gateway.signal("HUP");
    gateway.wait_for_log(
        |l| l["msg"] == "configuration reloaded",
        Duration::from_secs(10),
    );
    let after = placement(&gateway, &keys).await;
    let moved: Vec<&String> = keys.iter().filter(|k| before[*k] != after[*k]).collect();
    assert!(
        moved.iter().all(|k| after[*k] == "d"),
        "keys move only to the new target"
    );
    // A quarter of the keys, give or take the ring's unevenness.
    assert!(
        (30..=105).contains(&moved.len()),
        "{} of 300 keys moved",
        moved.len()
    );
}

#[tokio::test]
async fn a_flood_to_a_hung_service_is_refused_fast_beyond_its_limits() {
    let hung = crate::common::Hanging::start();
    let gateway = Gateway::start(
        crate::auth::setup()
            .raw(&format!(
                "[upstreams.svc]\ntargets = [\"{}\"]\nmax_in_flight = 2\nmax_pending = 1\nretries = 0\n",
                hung.url()
            ))
            .route(route("svc", "/s/*", "svc").extra("timeout = \"30s\"")),
    );
    let url = gateway.url("/s/x");
    // Three take the two slots and the one place in line, and hang.
    let held: Vec<_> = (0..3)
        .map(|_| tokio::spawn(client().get(&url).send()))
        .collect();
    eventually(
        "three requests in flight",
        Duration::from_secs(10),
        || async {
            let listed = crate::admin_api::Api::token(&gateway)
                .get("/upstreams")
                .await
                .body;
            (listed[0]["targets"][0]["in_flight"] == 2).then_some(())
        },
    )
    .await;
    // Every further request is refused at once, while those still hang.
    for _ in 0..10 {
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(json(response).await["error"], "upstream_overloaded");
    }
    assert!(held.iter().all(|h| !h.is_finished()));
    for h in held {
        h.abort();
    }
    let refused = eventually("the refusals counted", Duration::from_secs(5), || async {
        let text = metrics(&gateway.admin_url("/metrics")).await;
        sample(
            &text,
            "portcullis_upstream_refused_total",
            &[("reason", "overloaded")],
        )
        .filter(|n| *n >= 10.0)
    })
    .await;
    assert_eq!(refused, 10.0);
}

#[tokio::test]
async fn the_circuit_breaker_opens_on_failures_and_refuses_at_once() {
    let echo = Echo::named("a");
    let gateway = Gateway::start(
        crate::auth::setup()
            .raw(&format!(
                "[upstreams.svc]\ntargets = [\"{}\"]\nretries = 0\n\
                 [upstreams.svc.breaker]\nfailure_percent = 50\nmin_requests = 4\nopen_time = \"1h\"\n",
                echo.url()
            ))
            .route(route("svc", "/s/*", "svc")),
    );
    for path in ["/s/x", "/s/status/503", "/s/status/502", "/s/status/504"] {
        client().get(gateway.url(path)).send().await.unwrap();
    }
    assert_eq!(echo.hits(), 4);
    let response = client().get(gateway.url("/s/x")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 60, "an hour away, at most a minute said");
    assert_eq!(json(response).await["error"], "circuit_open");
    assert_eq!(echo.hits(), 4, "the open breaker sent nothing upstream");
    let listed = crate::admin_api::Api::token(&gateway)
        .get("/upstreams")
        .await
        .body;
    assert_eq!(listed[0]["breaker_state"], "open");
    gateway.wait_for_log(
        |l| l["msg"] == "upstream circuit breaker opened: too many requests failed",
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn a_body_too_large_to_hold_is_never_sent_twice() {
    let live = Echo::named("live");
    let dead = closed_port_url();
    // The dead target first: a fresh service's first pick.
    let gateway = service_gateway(&format!(r#"["{dead}", "{}"]"#, live.url()), "");
    let big = vec![b'x'; 100 * 1024];
    let response = client()
        .put(gateway.url("/s/x"))
        .header("x-request-id", "big-put")
        .body(big)
        .send()
        .await
        .unwrap();
    // Streamed, not held: the body is gone with the failed try, so no retry.
    assert_eq!(response.status(), 502);
    assert_eq!(live.hits(), 0);
    let line = gateway.access_line("big-put");
    assert_eq!(line["tries"], 1);
    assert_eq!(line["target"], dead);
    // A small body is held: the request that meets the dead target first
    // is sent again, whole, to the live one.
    for i in 0..2 {
        let response = client()
            .put(gateway.url("/s/x"))
            .header("x-request-id", format!("small-put-{i}"))
            .body(vec![b'x'; 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(json(response).await["body_bytes"], 1024);
    }
    let tries: Vec<_> = (0..2)
        .map(|i| gateway.access_line(&format!("small-put-{i}"))["tries"].clone())
        .collect();
    assert!(tries.contains(&serde_json::json!(2)), "{tries:?}");
}

#[tokio::test]
async fn a_target_killed_mid_traffic_costs_no_idempotent_request() {
    let a = Echo::named("a");
    let b = Echo::named("b");
    let b_url = b.url();
    let gateway = service_gateway(
        &format!(r#"["{}", "{b_url}"]"#, a.url()),
        "[upstreams.svc.passive]\nconsecutive_failures = 2\nejection_time = \"1m\"",
    );
    // Both serve, and both have pooled connections open.
    let counts = answers(&gateway, "/s/x", 20).await;
    assert_eq!((counts["a"], counts["b"]), (10, 10));
    drop(b);
    // Every GET still succeeds: a try on the dead target, whether a pooled
    // connection is found closed or a new one refused, goes again to `a`.
    let counts = answers(&gateway, "/s/x", 40).await;
    assert_eq!(counts["a"], 40);
    gateway.wait_for_log(
        |l| l["msg"] == "upstream target ejected after failed requests" && l["target"] == b_url,
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn too_few_healthy_targets_put_the_service_in_panic_mode() {
    let live = Echo::named("live");
    let (dead_1, dead_2) = (closed_port_url(), closed_port_url());
    let gateway = service_gateway(
        &format!(r#"["{dead_1}", "{dead_2}", "{}"]"#, live.url()),
        "retries = 2\n[upstreams.svc.passive]\nconsecutive_failures = 1\nejection_time = \"1h\"",
    );
    // The dead targets are ejected one by one; every request still ends
    // at the live one.
    answers(&gateway, "/s/x", 6).await;
    // One healthy of three is below 50 %: requests spread over all three
    // again (and those on the dead ones are retried on the live one).
    gateway.wait_for_log(
        |l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("upstream service in panic mode"))
        },
        Duration::from_secs(5),
    );
    let text = metrics(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(&text, "portcullis_upstream_panic", &[("service", "svc")]),
        Some(1.0)
    );
    let before = sample(
        &text,
        "portcullis_upstream_target_requests_total",
        &[("target", dead_1.as_str())],
    );
    let counts = answers(&gateway, "/s/x", 12).await;
    assert_eq!(counts["live"], 12, "no client sees the dead targets");
    let after = eventually("the tries counted", Duration::from_secs(5), || async {
        let text = metrics(&gateway.admin_url("/metrics")).await;
        sample(
            &text,
            "portcullis_upstream_target_requests_total",
            &[("target", dead_1.as_str())],
        )
        .filter(|n| Some(*n) > before)
    })
    .await;
    assert!(
        after > before.unwrap_or(0.0),
        "in panic mode the ejected target is tried again"
    );
}

#[tokio::test]
async fn host_names_are_resolved_again_and_each_address_is_a_target() {
    use std::net::{Ipv4Addr, SocketAddr};
    let (two, three) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    // Two upstreams on one port, at two loopback addresses.
    let a = Echo::named_at("two", SocketAddr::from((two, 0)));
    let port = a.addr().port();
    let b = Echo::named_at("three", SocketAddr::from((three, port)));
    let dns = crate::common::dns::Dns::start(&[two]);
    let gateway = Gateway::start(
        Setup::new()
            .admin("token = \"dns-test-admin-token-0123456789\"")
            .upstream(&format!("resolvers = [\"{}\"]", dns.addr()))
            .upstream("resolve_interval = \"200ms\"")
            .raw(&format!(
                "[upstreams.svc]\ntargets = [\"http://api.test:{port}\"]\n"
            ))
            .route(route("svc", "/s/*", "svc")),
    );
    let answered_by = |names: &'static [&'static str]| {
        let gateway = &gateway;
        async move {
            eventually(&format!("answers from {names:?} only"), SOON, || async {
                let counts = answers(gateway, "/s/x", 20).await;
                let mut seen: Vec<&str> = counts.keys().map(String::as_str).collect();
                seen.sort();
                (seen == names).then_some(())
            })
            .await;
        }
    };
    answered_by(&["two"]).await;
    // The upstream is asked for the name, whatever address it was reached at.
    let response = client().get(gateway.url("/s/host")).send().await.unwrap();
    assert_eq!(
        json(response).await["headers"]["host"][0],
        format!("api.test:{port}")
    );

    // A new address is a new target.
    dns.set(&[two, three]);
    answered_by(&["three", "two"]).await;
    let listed = json(
        client()
            .get(gateway.admin_url("/admin/api/upstreams"))
            .bearer_auth("dns-test-admin-token-0123456789")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let targets = listed[0]["targets"].as_array().unwrap().clone();
    let mut addresses: Vec<&str> = targets
        .iter()
        .map(|t| t["address"].as_str().unwrap())
        .collect();
    addresses.sort();
    assert_eq!(
        addresses,
        [format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")]
    );

    // DNS failing: the last answer stays, and traffic with it.
    dns.fail(true);
    gateway.wait_for_log(
        |l| l["msg"] == "upstream host name did not resolve: its last addresses stay in use",
        SOON,
    );
    answered_by(&["three", "two"]).await;
    dns.fail(false);

    // An address gone from the answer is a target gone, metrics included.
    dns.set(&[three]);
    answered_by(&["three"]).await;
    let gone = format!("127.0.0.2:{port}]");
    let kept = format!("127.0.0.3:{port}]");
    eventually("the gone address's series to be dropped", SOON, || async {
        let text = metrics(&gateway.admin_url("/metrics")).await;
        (!text.contains(&gone) && text.contains(&kept)).then_some(())
    })
    .await;
    drop((a, b));
}

/// An upstream whose answers to `/healthz` and `/work` follow a mode the
/// test sets: alternating good and bad (flapping), all bad, or all good.
struct Flapping {
    addr: std::net::SocketAddr,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

const ALTERNATE: u8 = 0;
const FAILING: u8 = 1;
const HEALTHY: u8 = 2;

impl Flapping {
    fn start() -> Flapping {
        use std::io::{BufRead as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(ALTERNATE));
        let shared = mode.clone();
        std::thread::spawn(move || {
            // Checks and requests alternate each on their own.
            let (mut check_turn, mut request_turn) = (false, false);
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                // One request per connection: read its head, answer, close.
                let mut head = String::new();
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                let turn = if head.starts_with("GET /healthz") {
                    &mut check_turn
                } else {
                    &mut request_turn
                };
                *turn = !*turn;
                let good = match shared.load(Ordering::SeqCst) {
                    ALTERNATE => *turn,
                    FAILING => false,
                    _ => true,
                };
                let status = if good {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Flapping { addr, mode }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The state the admin API shows for the service's target at `url`.
async fn target_state(gateway: &Gateway, url: &str) -> String {
    let listed = json(
        client()
            .get(gateway.admin_url("/admin/api/upstreams"))
            .bearer_auth(FLAP_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let targets = listed[0]["targets"].as_array().unwrap();
    let target = targets.iter().find(|t| t["url"] == url).unwrap();
    target["state"].as_str().unwrap().to_owned()
}

const FLAP_TOKEN: &str = "flapping-test-admin-token-0123456789";

#[tokio::test]
async fn a_flapping_target_never_flips_on_single_results() {
    let flapping = Flapping::start();
    let steady = Echo::named("steady");
    let gateway = Gateway::start(
        Setup::new()
            .admin(&format!("token = \"{FLAP_TOKEN}\""))
            .raw(&format!(
                "[upstreams.svc]\ntargets = [\"{}\", \"{}\"]\nretries = 0\n\
                 [upstreams.svc.health]\npath = \"/healthz\"\ninterval = \"50ms\"\nfall = 3\nrise = 2\n",
                flapping.url(),
                steady.url()
            ))
            .route(route("svc", "/s/*", "svc")),
    );
    // Alternating good and bad checks (and requests): never three failures
    // in a row, so never down, and never a passive ejection either.
    let checked_since = std::time::Instant::now();
    let mut served = 0;
    while checked_since.elapsed() < Duration::from_millis(1500) {
        let response = client().get(gateway.url("/s/work")).send().await.unwrap();
        served += usize::from(response.status() == 200);
        assert_eq!(target_state(&gateway, &flapping.url()).await, "up");
    }
    assert!(served > 0);
    let text = metrics(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "portcullis_upstream_ejections_total",
            &[("service", "svc"), ("target", &flapping.url())]
        )
        .unwrap_or(0.0),
        0.0
    );

    // Failing for real: down after `fall` checks.
    flapping.set(FAILING);
    eventually("the failing target to go down", SOON, || async {
        (target_state(&gateway, &flapping.url()).await == "down").then_some(())
    })
    .await;
    // Flapping again: never two good checks in a row, so it stays down.
    flapping.set(ALTERNATE);
    let down_since = std::time::Instant::now();
    while down_since.elapsed() < Duration::from_millis(1000) {
        assert_eq!(target_state(&gateway, &flapping.url()).await, "down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Healthy again: back up after `rise` good checks.
    flapping.set(HEALTHY);
    eventually("the recovered target to come back", SOON, || async {
        (target_state(&gateway, &flapping.url()).await == "up").then_some(())
    })
    .await;
    // One flip each way in the whole run: when it really failed, and when
    // it really recovered (its line written by now).
    gateway.wait_for_log(
        |l| {
            l["msg"] == "upstream target up: passed its health checks"
                && l["target"] == flapping.url()
        },
        SOON,
    );
    let flips = |msg: &str| {
        gateway
            .logs()
            .iter()
            .filter(|l| l["msg"] == msg && l["target"] == flapping.url())
            .count()
    };
    assert_eq!(flips("upstream target down: failed its health checks"), 1);
    assert_eq!(flips("upstream target up: passed its health checks"), 1);
}
