//! Live traffic through the API: per-second statistics, the most recent
//! access-log records and their stream, fed by requests made through the
//! proxy here.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{validate_event, Api};
use crate::auth::{add_user, login_token, setup, with_token};
use crate::common::{client, closed_port_url, eventually, route, Echo, Gateway, SOON};
use crate::rate_limits::{policy, uses};

/// `GET path` on the proxy with a request id; returns the status.
async fn request(gateway: &Gateway, path: &str, id: &str) -> u16 {
    let response = client()
        .get(gateway.url(path))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

fn sum(series: &Value) -> u64 {
    series
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

fn traffic_gateway(echo: &Echo) -> Gateway {
    Gateway::start(
        setup()
            .log("redact_query = [\"token\"]")
            .route(route("echo", "/p/*", &echo.url()))
            .route(route("private", "/private/*", &echo.url()).authenticated())
            .route(route("down", "/down/*", &closed_port_url()))
            .route(route("tight", "/t/*", &echo.url()).extra(&uses("one")))
            .raw(&policy(
                "one",
                &["key = [\"ip\"]", "limit = 1", "window = \"1h\""],
            )),
    )
}

#[tokio::test]
async fn stats_count_every_request_per_second_overall_and_per_route() {
    let echo = Echo::start();
    let gateway = traffic_gateway(&echo);
    let api = Api::token(&gateway);
    for (path, status) in [
        ("/p/a", 200),
        ("/p/b", 200),
        ("/p/c", 200),
        ("/nowhere", 404),
        ("/private/x", 401),
        ("/down/x", 502),
        ("/t/x", 200),
        ("/t/x", 429),
    ] {
        assert_eq!(
            request(&gateway, path, &format!("stats-{path}")).await,
            status,
            "{path}"
        );
    }
    let stats = eventually("every request counted", SOON, || async {
        let stats = api.get("/stats?seconds=60").await.expect(200).body;
        (stats["totals"]["requests"] == 8).then_some(stats)
    })
    .await;
    assert_eq!(
        stats["totals"],
        json!({
            "requests": 8, "s2xx": 4, "s3xx": 0, "s4xx": 3, "s5xx": 1,
            "rate_limited": 1, "auth_failures": 1, "upstream_errors": 1,
        }),
        "{stats}"
    );
    assert_eq!(stats["interval_seconds"], 1);
    assert_eq!(stats["seconds"], 60);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let end = stats["start"].as_u64().unwrap() + 60;
    assert!(end.abs_diff(now) <= 5, "the last slot is now: {stats}");
    for series in [&stats["overall"], &stats["routes"]["echo"]] {
        for column in series.as_object().unwrap().values() {
            assert_eq!(column.as_array().unwrap().len(), 60, "{series}");
        }
    }
    let echo_route = &stats["routes"]["echo"];
    assert_eq!(sum(&echo_route["requests"]), 3, "{stats}");
    assert_eq!(sum(&echo_route["s2xx"]), 3, "{stats}");
    assert!(
        echo_route["p99_ms"]
            .as_array()
            .unwrap()
            .iter()
            .any(Value::is_f64),
        "a latency for the seconds with requests: {echo_route}"
    );
    assert_eq!(sum(&stats["routes"]["down"]["upstream_errors"]), 1);
    assert_eq!(sum(&stats["routes"]["tight"]["rate_limited"]), 1);
    assert_eq!(sum(&stats["routes"]["private"]["auth_failures"]), 1);
    // The admin listener's own calls are not traffic.
    assert_eq!(sum(&stats["overall"]["requests"]), 8);

    let full = api.get("/stats").await.expect(200).body;
    assert_eq!(full["seconds"], 900);
    api.get("/stats?seconds=many")
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn recent_records_are_filtered_and_redacted_like_the_access_log() {
    let echo = Echo::start();
    let gateway = traffic_gateway(&echo);
    add_user(&gateway, "alice", &[], &[]).await;
    let token = login_token(&gateway, "alice").await;
    let api = Api::token(&gateway);
    request(&gateway, "/p/x?token=SECRET-VALUE&page=2", "rec-redacted").await;
    request(&gateway, "/nowhere", "rec-404").await;
    let response = with_token(reqwest::Method::GET, &gateway.url("/private/y"), &token)
        .header("x-request-id", "rec-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    request(&gateway, "/p/last", "rec-last").await;

    let records = eventually("the records kept", SOON, || async {
        let records = api.get("/logs").await.expect(200).body;
        (records[0]["request_id"] == "rec-last").then_some(records)
    })
    .await;
    let ids: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .filter(|id| id.starts_with("rec-"))
        .collect();
    assert_eq!(
        ids,
        ["rec-last", "rec-alice", "rec-404", "rec-redacted"],
        "newest first"
    );

    // Each is the access log's own line, redaction included.
    let answer = api.get("/logs?request_id=rec-redacted").await.expect(200);
    assert!(!answer.text.contains("SECRET-VALUE"), "{}", answer.text);
    let record = &answer.body[0];
    assert_eq!(record["query"], "token=REDACTED&page=2");
    let line = gateway.access_line("rec-redacted");
    for (key, value) in record.as_object().unwrap() {
        assert_eq!(&line[key], value, "{key}: {record} vs the log's {line}");
    }

    let only = |query: &'static str| {
        let api = &api;
        async move {
            let records = api.get(&format!("/logs?{query}")).await.expect(200).body;
            records
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["request_id"].as_str().unwrap_or_default().to_owned())
                .filter(|id| id.starts_with("rec-"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(only("status=4xx").await, ["rec-404"]);
    assert_eq!(only("status=404").await, ["rec-404"]);
    assert_eq!(only("route=private").await, ["rec-alice"]);
    assert_eq!(only("user=alice").await, ["rec-alice"]);
    assert_eq!(
        only("client=127.0.0.1&route=echo").await,
        ["rec-last", "rec-redacted"]
    );
    assert_eq!(only("limit=1").await, ["rec-last"]);
    assert_eq!(only("client=10.9.9.9").await, Vec::<String>::new());
    for query in ["status=teapot", "client=not-an-address", "limit=many"] {
        api.get(&format!("/logs?{query}"))
            .await
            .expect_error(400, "bad_request");
    }
}

/// Reads the stream until an event matching `want` arrives; returns the
/// events read, each checked against the document.
async fn events_until(stream: &mut reqwest::Response, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                continue; // a comment or keep-alive
            }
            assert!(
                !event.lines().any(|l| l.starts_with("event:")),
                "an event other than a record (a reader this slow lags): {event:?}"
            );
            let value: Value = serde_json::from_str(&data).unwrap_or_else(|_| panic!("{data:?}"));
            validate_event(&value);
            let done = want(&value);
            events.push(value);
            if done {
                return events;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("an event in time")
            .expect("the stream")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn new_records_stream_as_server_sent_events_through_the_filters() {
    let echo = Echo::start();
    let gateway = traffic_gateway(&echo);
    add_user(&gateway, "vera", &["viewer"], &[]).await;
    let viewer = Api::console(&gateway, "vera").await;
    let mut everything = Api::token(&gateway)
        .get("/logs/stream")
        .await
        .expect(200)
        .stream
        .expect("an event stream");
    let mut only_echo = viewer
        .get("/logs/stream?route=echo")
        .await
        .expect(200)
        .stream
        .expect("an event stream");

    request(&gateway, "/nowhere", "live-404").await;
    request(&gateway, "/p/x?token=SECRET-VALUE", "live-echo").await;
    let seen = events_until(&mut everything, |e| e["request_id"] == "live-echo").await;
    let ids: Vec<&str> = seen
        .iter()
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    assert_eq!(ids, ["live-404", "live-echo"]);
    assert_eq!(seen[1]["query"], "token=REDACTED");
    let seen = events_until(&mut only_echo, |e| e["request_id"] == "live-echo").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
}
