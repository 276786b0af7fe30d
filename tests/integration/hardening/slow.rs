//! Slow clients cannot hold the gateway: every request head has
//! `header_timeout`, bodies the gateway reads itself have `body_timeout`
//! and a size limit, open connections are capped, and a thousand slowloris
//! connections leave other clients served.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::{metric, raise_open_files};
use crate::auth::{setup, ADMIN_TOKEN};
use crate::common::http::{Outcome, RawConn};
use crate::common::{client, eventually, route, Echo, Gateway, Setup, SOON};

/// Writes `bytes` one at a time, `pause` apart, until the gateway closes the
/// connection; returns how long that took, or `None` if it never did.
fn trickle_until_closed(conn: &mut RawConn, bytes: &[u8], pause: Duration) -> Option<Duration> {
    let started = Instant::now();
    for byte in bytes {
        if conn.send(std::slice::from_ref(byte)).is_err() {
            return Some(started.elapsed());
        }
        std::thread::sleep(pause);
    }
    match conn.read_outcome() {
        Ok(Outcome::Closed) => Some(started.elapsed()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Some(started.elapsed()),
        _ => None,
    }
}

#[tokio::test]
async fn a_trickled_second_head_is_cut_off_after_header_timeout() {
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().server("header_timeout = \"1s\"").route(route(
        "echo",
        "/p/*",
        &echo.url(),
    )));
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    // A second request on a kept-alive connection is served as usual...
    for _ in 0..2 {
        conn.send(b"GET /p/x HTTP/1.1\r\nHost: g.test\r\n\r\n")
            .unwrap();
        assert_eq!(conn.read_response().unwrap().status, 200);
    }
    // ...but a head that trickles in is cut off after header_timeout,
    // long before its 60 bytes at 100 ms each would have arrived.
    let head = b"GET /p/slow HTTP/1.1\r\nHost: g.test\r\nX-Slow: aaaaaaaaaaaaaaa\r\n\r\n";
    let closed = trickle_until_closed(&mut conn, head, Duration::from_millis(100));
    let closed = closed.expect("the connection was never closed");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    assert_eq!(
        echo.hits(),
        2,
        "the trickled request never reached the upstream"
    );
    let timeouts = metric(
        &gateway,
        "portcullis_head_timeouts_total",
        &[("listener", "proxy")],
    )
    .await;
    assert!(timeouts >= 1.0);
}

#[tokio::test]
async fn bodies_the_gateway_reads_itself_are_bounded_in_size_and_time() {
    let gateway = Gateway::start(setup().server("body_timeout = \"500ms\""));
    // A login body that stalls.
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    conn.send(
        b"POST /auth/login HTTP/1.1\r\nHost: g.test\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"username\":",
    )
    .unwrap();
    let answer = conn.read_response().unwrap();
    assert_eq!(answer.status, 408, "{}", answer.text());
    // An admin API body that stalls, and one that is too large.
    let mut conn = RawConn::connect(gateway.admin_addr()).unwrap();
    conn.send(
        format!(
            "POST /admin/api/users HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"username\":",
            gateway.admin_addr()
        )
        .as_bytes(),
    )
    .unwrap();
    let answer = conn.read_response().unwrap();
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(answer.json()["error"], "request_timeout");
    let big = format!("{{\"username\":\"{}\"}}", "a".repeat(70 * 1024));
    let response = client()
        .post(gateway.admin_url("/admin/api/users"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Not JSON at all.
    let response = client()
        .post(gateway.admin_url("/admin/api/users"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().server("max_connections = 5").route(route(
        "echo",
        "/p/*",
        &echo.url(),
    )));
    let mut held: Vec<RawConn> = (0..5)
        .map(|_| {
            let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
            conn.send(b"GET /p/x HTTP/1.1\r\nHost: g.test\r\n\r\n")
                .unwrap();
            assert_eq!(conn.read_response().unwrap().status, 200);
            conn
        })
        .collect();
    // The sixth is accepted by the kernel and closed at once.
    let mut extra = RawConn::connect(gateway.proxy_addr()).unwrap();
    let _ = extra.send(b"GET /p/x HTTP/1.1\r\nHost: g.test\r\n\r\n");
    assert!(extra.is_closed(), "a sixth connection was served");
    assert_eq!(
        metric(
            &gateway,
            "portcullis_connections_refused_total",
            &[("listener", "proxy")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gateway,
            "portcullis_connections_open",
            &[("listener", "proxy")]
        )
        .await,
        5.0
    );
    // Held connections still work; once one closes, a new one is welcome.
    held[0]
        .send(b"GET /p/x HTTP/1.1\r\nHost: g.test\r\n\r\n")
        .unwrap();
    assert_eq!(held[0].read_response().unwrap().status, 200);
    drop(held.pop());
    eventually("a freed place to be taken", SOON, || async {
        let response = client().get(gateway.url("/p/x")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_thousand_slowloris_connections_leave_other_clients_served() {
    let limit = raise_open_files(8192);
    assert!(
        limit >= 2500,
        "this test needs 2,500 open files (RLIMIT_NOFILE is {limit}): raise the hard limit"
    );
    let echo = Echo::start();
    let gateway = Gateway::start(Setup::new().route(route("echo", "/p/*", &echo.url())));
    // A thousand connections that each send part of a head and stop.
    let mut slow: Vec<RawConn> = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
        conn.send(format!("GET /p/slow-{i} HTTP/1.1\r\nHost: g.test\r\nX-A").as_bytes())
            .unwrap();
        slow.push(conn);
    }
    eventually("the gateway to hold the slow connections", SOON, || async {
        let open = metric(
            &gateway,
            "portcullis_connections_open",
            &[("listener", "proxy")],
        )
        .await;
        (open >= 1000.0).then_some(())
    })
    .await;
    // Meanwhile, clients that behave are served as usual.
    let client = client();
    let started = Instant::now();
    let answers = join_all((0..50).map(|_| {
        let client = client.clone();
        let url = gateway.url("/p/fast");
        async move {
            let sent = Instant::now();
            let status = client.get(url).send().await.unwrap().status();
            (status, sent.elapsed())
        }
    }))
    .await;
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap();
    println!(
        "50 requests beside 1,000 slowloris connections: all answered in {:?}, slowest {slowest:?}",
        started.elapsed()
    );
    assert!(answers.iter().all(|(s, _)| *s == 200));
    assert!(
        slowest < Duration::from_secs(2),
        "slowest answer took {slowest:?}"
    );
    assert_eq!(
        echo.paths().iter().filter(|p| p.contains("slow")).count(),
        0
    );
}
