//! The admin listener (health, readiness, metrics) and storage start-up failures.

use crate::common::http::{metrics, sample};
use crate::common::{
    client, closed_port_url, eventually, get_json, route, Echo, Gateway, Launch, Setup, SOON,
};

#[tokio::test]
async fn health_and_readiness() {
    let gateway = Gateway::start(Setup::new());
    let (status, body) = get_json(&gateway.admin_url("/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    let (status, body) = get_json(&gateway.admin_url("/readyz")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["storage"], "ok");
    assert_eq!(body["checks"]["accepting"], "ok");
    assert_eq!(body["failing"], serde_json::json!([]));
}

#[tokio::test]
async fn metrics_describe_the_traffic() {
    let echo = Echo::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("echo", "/p/*", &echo.url()))
            .route(route("down", "/down/*", &closed_port_url())),
    );
    let client = client();
    for path in ["/p/a", "/p/b", "/nowhere", "/down/x"] {
        client
            .get(gateway.url(path))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let url = gateway.admin_url("/metrics");
    let text = eventually("the requests to be counted", SOON, || async {
        let text = metrics(&url).await;
        let counted = |labels: &[(&str, &str)]| {
            sample(&text, "portcullis_requests_total", labels).unwrap_or(0.0)
        };
        (counted(&[("route", "echo"), ("method", "GET"), ("status", "2xx")]) == 2.0
            && counted(&[("route", "none"), ("method", "GET"), ("status", "4xx")]) == 1.0
            && counted(&[("route", "down"), ("method", "GET"), ("status", "5xx")]) == 1.0
            // Finished requests leave the in-flight gauge.
            && sample(&text, "portcullis_requests_in_flight", &[]) == Some(0.0))
        .then_some(text)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "portcullis_upstream_errors_total",
            &[("route", "down"), ("kind", "connect")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "portcullis_request_duration_seconds_count",
            &[("route", "echo")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "portcullis_upstream_duration_seconds_count",
            &[("route", "echo")]
        ),
        Some(2.0)
    );
    assert!(text.contains("portcullis_request_duration_seconds_bucket{"));
    for gauge in [
        "portcullis_requests_in_flight",
        "portcullis_log_dropped_total",
        "portcullis_process_resident_memory_bytes",
    ] {
        assert!(
            sample(&text, gauge, &[]).is_some(),
            "{gauge} missing:\n{text}"
        );
    }
    assert!(sample(&text, "portcullis_process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert_eq!(
        sample(&text, "portcullis_log_dropped_total", &[]),
        Some(0.0)
    );

    let response = client.get(&url).send().await.unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
}

#[tokio::test]
async fn the_admin_listener_is_separate_from_the_proxy() {
    let gateway = Gateway::start(Setup::new());
    assert_ne!(gateway.proxy_addr(), gateway.admin_addr());
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, body) = get_json(&gateway.url(path)).await;
        assert_eq!(status, 404, "{path} on the proxy listener");
        assert_eq!(body["error"], "not_found");
    }
    let response = client()
        .get(gateway.admin_url("/p/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[test]
fn a_second_gateway_on_the_same_storage_is_refused() {
    let first = Gateway::start(Setup::new());
    let data = first.dir().join("data");
    let exited = Launch::new(Setup::new().storage(&format!("path = \"{}\"", data.display())))
        .expect_failure();
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("storage.path"), "{}", exited.stderr);
    assert!(exited.stderr.contains("locked"), "{}", exited.stderr);
}

#[test]
fn a_storage_path_that_cannot_be_created_is_reported() {
    let launch = Launch::new(Setup::new().storage("path = \"$DIR/not-a-dir/data\""));
    std::fs::write(launch.dir().join("not-a-dir"), "a regular file").unwrap();
    let exited = launch.expect_failure();
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("storage.path"), "{}", exited.stderr);
    assert!(exited.stderr.contains("not-a-dir"), "{}", exited.stderr);
}
