//! The JSON access log: fields, levels, filtering, secrets and file output.

use serde_json::Value;

use crate::common::{client, closed_port_url, route, Echo, Gateway, Setup};

/// Sends a GET with a chosen request id through a fresh client.
async fn get_with_id(gateway: &Gateway, path: &str, id: &str) -> u16 {
    client()
        .get(gateway.url(path))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn each_request_writes_one_access_line_with_every_field() {
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().log("redact_query = [\"token\"]").route(route(
        "echo",
        "/p/*",
        &echo.url(),
    )));
    let response = client()
        .post(gateway.url("/p/fields?token=s3cret-query&a=1"))
        .header("x-request-id", "log-fields-1")
        .header("user-agent", "itest/1.0")
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body_len = response.bytes().await.unwrap().len() as u64;

    let line = gateway.access_line("log-fields-1");
    let timestamp = line["timestamp"].as_str().expect("a timestamp");
    assert!(timestamp.ends_with('Z'), "{timestamp}");
    assert_eq!(
        timestamp.len(),
        "2024-01-01T00:00:00.000Z".len(),
        "{timestamp}"
    );
    assert_eq!(&timestamp[19..20], ".", "milliseconds: {timestamp}");
    humantime::parse_rfc3339(timestamp).expect("RFC 3339");
    assert_eq!(line["level"], "info");
    assert_eq!(line["msg"], "access");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/p/fields");
    assert_eq!(line["query"], "token=REDACTED&a=1");
    assert_eq!(line["status"], 200);
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(line["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(line["bytes_in"], 11);
    assert_eq!(line["bytes_out"], body_len);
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["user_agent"], "itest/1.0");
    assert_eq!(line["route"], "echo");
    assert_eq!(line["upstream"], echo.url());
    assert!(line["error"].is_null(), "{line}");

    let access_lines = gateway
        .logs()
        .into_iter()
        .filter(|v| v["request_id"] == "log-fields-1")
        .count();
    assert_eq!(access_lines, 1, "one line per request");
    assert!(!gateway.raw_log().contains("s3cret-query"));
}

#[tokio::test]
async fn levels_follow_the_status_and_errors_name_their_code() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("echo", "/p/*", &echo.url()))
            .route(route("down", "/down/*", &closed_port_url())),
    );
    assert_eq!(get_with_id(&gateway, "/p/ok", "lvl-200").await, 200);
    assert_eq!(get_with_id(&gateway, "/nowhere", "lvl-404").await, 404);
    assert_eq!(get_with_id(&gateway, "/down/x", "lvl-502").await, 502);
    assert_eq!(get_with_id(&gateway, "/p/status/503", "lvl-503").await, 503);
    assert_eq!(
        get_with_id(&gateway, "/p/status/404", "lvl-u404").await,
        404
    );

    let ok = gateway.access_line("lvl-200");
    assert_eq!(
        (ok["level"].as_str(), ok["error"].clone()),
        (Some("info"), Value::Null)
    );

    let not_found = gateway.access_line("lvl-404");
    assert_eq!(not_found["level"], "warn");
    assert_eq!(not_found["error"], "not_found");
    assert_eq!(not_found["route"], "none");
    assert!(not_found["upstream"].is_null());
    assert!(not_found["upstream_ms"].is_null());
    assert!(not_found["query"].is_null());

    let bad_gateway = gateway.access_line("lvl-502");
    assert_eq!(bad_gateway["level"], "error");
    assert_eq!(bad_gateway["error"], "bad_gateway");
    assert_eq!(bad_gateway["route"], "down");

    // Upstream answers are logged by status, with no gateway error code.
    let upstream_503 = gateway.access_line("lvl-503");
    assert_eq!(upstream_503["level"], "error");
    assert!(upstream_503["error"].is_null());
    let upstream_404 = gateway.access_line("lvl-u404");
    assert_eq!(upstream_404["level"], "warn");
    assert!(upstream_404["error"].is_null());
}

#[tokio::test]
async fn level_warn_skips_successes_and_keeps_client_errors() {
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().log("level = \"warn\"").route(route(
        "echo",
        "/p/*",
        &echo.url(),
    )));
    // One client, one connection: the second request's line is written after the first's.
    let client = client();
    let ok = client
        .get(gateway.url("/p/ok"))
        .header("x-request-id", "quiet-200")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    let missing = client
        .get(gateway.url("/missing"))
        .header("x-request-id", "quiet-404")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    missing.bytes().await.unwrap();

    let line = gateway.access_line("quiet-404");
    assert_eq!(line["level"], "warn");
    assert!(
        !gateway
            .logs()
            .iter()
            .any(|v| v["request_id"] == "quiet-200"),
        "a 200 was logged at level warn"
    );
    assert!(
        !gateway.logs().iter().any(|v| v["level"] == "info"),
        "info records were written at level warn"
    );
}

#[tokio::test]
async fn secrets_in_cookies_and_authorization_never_reach_the_log() {
    let secrets = [
        "COOKIE-SECRET-1",
        "AUTH-SECRET-2",
        "SETCOOKIE-SECRET-ONE",
        "SETCOOKIE-SECRET-TWO",
        "PROXY-AUTH-SECRET-3",
    ];
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("echo", "/p/*", &echo.url()))
            .route(route("down", "/down/*", &closed_port_url())),
    );
    for (i, path) in [
        "/p/status/200",
        "/p/echo",
        "/nowhere",
        "/down/x",
        "/p/a%2fb",
    ]
    .iter()
    .enumerate()
    {
        let response = client()
            .get(gateway.url(path))
            .header("x-request-id", format!("secret-{i}"))
            .header("cookie", "session=COOKIE-SECRET-1; theme=dark")
            .header("authorization", "Bearer AUTH-SECRET-2")
            .header("proxy-authorization", "Basic PROXY-AUTH-SECRET-3")
            .send()
            .await
            .unwrap();
        response.bytes().await.unwrap();
        gateway.access_line(&format!("secret-{i}"));
    }
    let log = gateway.raw_log();
    for secret in secrets {
        for line in log.lines() {
            assert!(
                !line.contains(secret),
                "{secret} appears in the log: {line}"
            );
        }
    }
}

#[tokio::test]
async fn log_output_can_be_a_file() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .log("output = \"$DIR/portcullis.log\"")
            .route(route("echo", "/p/*", &echo.url())),
    );
    assert_eq!(get_with_id(&gateway, "/p/file", "to-file-1").await, 200);
    gateway.access_line("to-file-1");
    let text = std::fs::read_to_string(gateway.dir().join("portcullis.log")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect();
    assert!(lines.iter().any(|v| v["msg"] == "portcullis started"));
    assert!(lines
        .iter()
        .any(|v| v["msg"] == "access" && v["request_id"] == "to-file-1"));
    assert!(
        gateway.stdout().trim().is_empty(),
        "log records went to stdout too: {}",
        gateway.stdout()
    );
}

const CONSOLE_TOKEN: &str = "console-test-token-0123456789abcdef";

/// A GET on the admin API with the bearer token; the JSON answer.
async fn admin_get(gateway: &Gateway, path: &str) -> Value {
    let response = client()
        .get(gateway.admin_url(path))
        .bearer_auth(CONSOLE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_console_sees_every_request_in_its_stats_and_recent_records() {
    let echo = Echo::start();
    // The log file keeps only warnings; the console still sees everything.
    let gateway = Gateway::start(
        Setup::new()
            .log("level = \"warn\"")
            .admin(&format!("token = \"{CONSOLE_TOKEN}\""))
            .route(route("echo", "/p/*", &echo.url()))
            .route(route("down", "/down/*", &closed_port_url())),
    );
    assert_eq!(get_with_id(&gateway, "/p/ok", "console-200").await, 200);
    assert_eq!(get_with_id(&gateway, "/nowhere", "console-404").await, 404);
    assert_eq!(get_with_id(&gateway, "/down/x", "console-502").await, 502);

    // The ring holds the line the log writes, byte for byte the same record.
    let written = gateway.access_line("console-502");
    let kept = admin_get(&gateway, "/admin/api/logs?request_id=console-502").await;
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
    assert_eq!(kept[0], written);
    let ok = admin_get(&gateway, "/admin/api/logs?request_id=console-200").await;
    assert_eq!(
        ok[0]["status"], 200,
        "below the log level, still kept: {ok}"
    );
    assert!(!gateway.raw_log().contains("console-200"));
    let by_route = admin_get(&gateway, "/admin/api/logs?route=echo&status=2xx").await;
    assert_eq!(by_route.as_array().map(Vec::len), Some(1), "{by_route}");

    // The seconds close once a second: wait for all three to be counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stats = loop {
        let stats = admin_get(&gateway, "/admin/api/stats?seconds=30").await;
        if stats["totals"]["requests"] == 3 || std::time::Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], 3, "{stats}");
    assert_eq!(
        (
            totals["s2xx"].as_u64(),
            totals["s4xx"].as_u64(),
            totals["s5xx"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(totals["upstream_errors"], 1);
    let sum = |series: &Value| {
        series["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum(&stats["routes"]["echo"]), 1);
    assert_eq!(sum(&stats["routes"]["down"]), 1);
    let p99 = stats["overall"]["p99_ms"].as_array().unwrap();
    assert!(
        p99.iter().any(|p| p.as_f64().is_some_and(|ms| ms > 0.0)),
        "{stats}"
    );
}
