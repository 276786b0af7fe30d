//! Signals: SIGHUP reloads (and reopens the log file), SIGTERM and SIGINT
//! drain in-flight requests and stop cleanly.

use std::time::Duration;

use crate::common::http::{metrics, sample};
use crate::common::{client, eventually, get_json, json, route, Echo, Gateway, Setup, SOON};

async fn status(url: &str) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn sighup_loads_a_valid_new_configuration() {
    let echo = Echo::start();
    let setup = Setup::new().route(route("echo", "/p/*", &echo.url()));
    let gateway = Gateway::start(setup.clone());
    assert_eq!(status(&gateway.url("/new/x")).await, 404);

    gateway.write_config(&setup.route(route("new", "/new/*", &echo.url())));
    gateway.signal("HUP");
    let url = gateway.url("/new/x");
    eventually("the new route to be served", SOON, || async {
        (status(&url).await == 200).then_some(())
    })
    .await;
    let line = gateway.wait_for_log(|v| v["msg"] == "configuration reloaded", SOON);
    assert_eq!(line["routes"], 2);
    assert_eq!(status(&gateway.url("/p/x")).await, 200);
    let text = metrics(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "portcullis_config_reloads_total",
            &[("outcome", "success")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn sighup_with_an_invalid_file_keeps_the_running_configuration() {
    let echo = Echo::start();
    let setup = Setup::new().route(route("echo", "/p/*", &echo.url()));
    let gateway = Gateway::start(setup.clone());

    gateway.write_config(
        &Setup::new()
            .route(route("echo", "/p/*", &echo.url()).extra("timeout = \"soon\""))
            .route(route("new", "/new/*", &echo.url())),
    );
    gateway.signal("HUP");
    let rejected = gateway.wait_for_log(
        |v| v["msg"] == "configuration reload rejected; keeping the running configuration",
        SOON,
    );
    assert_eq!(rejected["level"], "error");
    let problem = gateway.wait_for_log(|v| v["msg"] == "invalid configuration", SOON);
    assert_eq!(problem["key"], "routes[0].timeout");
    assert_eq!(problem["level"], "error");
    assert!(problem["problem"].as_str().unwrap().contains("soon"));

    assert_eq!(status(&gateway.url("/p/x")).await, 200);
    assert_eq!(status(&gateway.url("/new/x")).await, 404);

    // A file that is not even TOML is rejected the same way.
    std::fs::write(gateway.config_path(), "[server\nlisten = \n").unwrap();
    gateway.signal("HUP");
    let rejections = || {
        gateway
            .logs()
            .iter()
            .filter(|v| {
                v["msg"] == "configuration reload rejected; keeping the running configuration"
            })
            .count()
    };
    eventually("a second rejected reload", SOON, || {
        let count = rejections();
        async move { (count == 2).then_some(()) }
    })
    .await;
    let text = metrics(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "portcullis_config_reloads_total",
            &[("outcome", "failure")]
        ),
        Some(2.0)
    );
    assert_eq!(status(&gateway.url("/p/x")).await, 200);
    assert!(gateway.stderr().is_empty(), "{}", gateway.stderr());
}

#[tokio::test]
async fn sighup_reopens_a_rotated_log_file() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .log("output = \"$DIR/portcullis.log\"")
            .route(route("echo", "/p/*", &echo.url())),
    );
    let current = gateway.dir().join("portcullis.log");
    let rotated = gateway.dir().join("portcullis.log.1");
    std::fs::rename(&current, &rotated).unwrap();
    gateway.signal("HUP");
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    eventually("a new log file with the reload line", SOON, || {
        let text = read(current.clone());
        async move { text.contains("configuration reloaded").then_some(()) }
    })
    .await;

    let response = client()
        .get(gateway.url("/p/after-rotate"))
        .header("x-request-id", "after-rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually("the access line in the new file", SOON, || {
        let text = read(current.clone());
        async move {
            text.contains("\"request_id\":\"after-rotate\"")
                .then_some(())
        }
    })
    .await;
    let old = read(rotated);
    assert!(old.contains("portcullis started"));
    assert!(!old.contains("after-rotate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let echo = Echo::start();
    let mut gateway = Gateway::start(Setup::new().route(route("echo", "/p/*", &echo.url())));
    let slow_url = gateway.url("/p/slow?ms=2000");
    let in_flight = tokio::spawn(async move {
        // A client of its own, dropped (closing its connection) when done.
        let response = client()
            .get(slow_url)
            .send()
            .await
            .expect("the slow request");
        (response.status().as_u16(), json(response).await)
    });
    eventually("the slow request to reach the upstream", SOON, || async {
        (echo.hits() == 1).then_some(())
    })
    .await;

    gateway.signal("TERM");
    gateway.wait_for_log(
        |v| v["msg"] == "shutting down: finishing in-flight requests",
        SOON,
    );
    let readyz = gateway.admin_url("/readyz");
    let (ready_status, ready) = get_json(&readyz).await;
    assert_eq!(ready_status, 503, "{ready}");
    assert_eq!(ready["failing"], serde_json::json!(["accepting"]));

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["path"], "/p/slow");
    let exit = gateway.wait_exit(Duration::from_secs(20));
    assert!(exit.success(), "exit status {exit}");
    let stopped = gateway
        .logs()
        .into_iter()
        .find(|v| v["msg"] == "portcullis stopped");
    assert!(stopped.is_some(), "no 'portcullis stopped' line");
    let line = gateway
        .logs()
        .into_iter()
        .find(|v| v["msg"] == "access" && v["path"] == "/p/slow" && v["status"] == 200);
    assert!(line.is_some(), "the drained request was not logged");
}

#[test]
fn a_signal_right_after_startup_is_handled() {
    let mut gateway = Gateway::start(Setup::new());
    // An operator (or supervisor) reloading as soon as the gateway says it started.
    gateway.signal_now("HUP");
    gateway.signal("TERM");
    let exit = gateway.wait_exit(Duration::from_secs(20));
    assert!(exit.success(), "exit status {exit}");
    gateway.wait_for_log(|v| v["msg"] == "portcullis stopped", SOON);
    assert!(gateway.stderr().is_empty(), "{}", gateway.stderr());
}

#[test]
fn sigint_stops_cleanly() {
    let mut gateway = Gateway::start(Setup::new());
    gateway.signal("INT");
    let exit = gateway.wait_exit(Duration::from_secs(20));
    assert!(exit.success(), "exit status {exit}");
    let line = gateway.wait_for_log(
        |v| v["msg"] == "shutting down: finishing in-flight requests",
        SOON,
    );
    assert_eq!(line["signal"], "SIGINT");
    gateway.wait_for_log(|v| v["msg"] == "portcullis stopped", SOON);
    assert!(gateway.stderr().is_empty(), "{}", gateway.stderr());
}
