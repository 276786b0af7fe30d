//! WebSocket tunnels through the gateway, against a real WebSocket echo
//! upstream: frames both ways, headers and extensions untouched, the
//! route's policy and limits applied to the upgrade, and every way a tunnel
//! ends (client, upstream, idle, revoked session, shutdown).

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::auth::{add_user, admin, setup, COOKIE};
use crate::common::http::{metrics, sample};
use crate::common::websocket::{connect, Client, WsEcho};
use crate::common::{closed_port_url, eventually, route, Gateway, Setup, SOON};

/// `ws://` for a gateway path.
fn ws_url(gateway: &Gateway, path: &str) -> String {
    format!("ws://{}{path}", gateway.proxy_addr())
}

/// Sends `message` and expects it back.
async fn echoes(ws: &mut Client, message: Message) {
    ws.send(message.clone())
        .await
        .expect("send through the tunnel");
    let back = tokio::time::timeout(SOON, ws.next())
        .await
        .expect("an answer in time")
        .expect("the tunnel is open")
        .expect("a frame");
    assert_eq!(back, message);
}

/// Waits until the server side ends the client's WebSocket.
async fn closed_by_gateway(ws: &mut Client) {
    let ended = tokio::time::timeout(SOON, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel was not closed");
}

/// The access line of the tunnel with this request id, once it is written.
fn tunnel_line(gateway: &Gateway, request_id: &str) -> serde_json::Value {
    gateway.wait_for_log(
        |line| line["request_id"] == request_id && line["tunnel_end"].is_string(),
        SOON,
    )
}

#[tokio::test]
async fn text_and_binary_frames_cross_with_the_subprotocol_and_headers_untouched() {
    let echo = WsEcho::start();
    let gateway = Gateway::start(Setup::new().route(route("ws", "/ws/*", &echo.url())));
    let (mut ws, response) = connect(
        &ws_url(&gateway, "/ws/chat?room=1"),
        &[
            ("sec-websocket-protocol", "chat.v2, chat.v1"),
            ("x-request-id", "ws-frames"),
        ],
    )
    .await
    .expect("the upgrade is accepted");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
    assert_eq!(response.headers()["x-request-id"], "ws-frames");

    echoes(&mut ws, Message::text("hello through the gateway")).await;
    echoes(&mut ws, Message::binary(vec![0u8, 1, 2, 255, 254])).await;
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    echoes(&mut ws, Message::binary(large)).await;

    // What the upstream was sent: the client's own key and headers, the
    // gateway's request id, the original path and query.
    let handshake = &echo.handshakes()[0];
    assert_eq!(handshake["sec-websocket-protocol"], "chat.v2, chat.v1");
    assert_eq!(handshake["sec-websocket-version"], "13");
    assert_eq!(handshake["upgrade"], "websocket");
    assert!(handshake["sec-websocket-key"].to_str().unwrap().len() == 24);
    assert_eq!(handshake["x-request-id"], "ws-frames");
    assert_eq!(handshake["x-forwarded-for"], "127.0.0.1");

    let open = metrics(&gateway.admin_url("/metrics")).await;
    assert_eq!(sample(&open, "portcullis_tunnels_open", &[]), Some(1.0));

    ws.close(None).await.unwrap();
    let line = tunnel_line(&gateway, "ws-frames");
    assert_eq!(line["status"], 101, "{line}");
    assert_eq!(line["path"], "/ws/chat", "{line}");
    assert!(line["bytes_in"].as_u64().unwrap() > 200_000, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 200_000, "{line}");
    assert!(
        ["client", "upstream"].contains(&line["tunnel_end"].as_str().unwrap()),
        "{line}"
    );
    eventually("the tunnel gauge back to 0", SOON, || async {
        let text = metrics(&gateway.admin_url("/metrics")).await;
        (sample(&text, "portcullis_tunnels_open", &[]) == Some(0.0)).then_some(())
    })
    .await;
    eventually("the upstream side closed", SOON, || async {
        (echo.open() == 0).then_some(())
    })
    .await;
}

/// The compressed "Hello" frame of RFC 7692 §7.2.3.1: FIN, RSV1 (compressed), text.
const DEFLATED_HELLO: [u8; 9] = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

#[test]
fn permessage_deflate_is_negotiated_end_to_end_and_compressed_frames_pass_unchanged() {
    // A raw upstream: it answers the handshake itself, offering
    // permessage-deflate back, and sends a compressed frame right behind
    // its 101 (so the frame arrives with the response head).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(SOON)).unwrap();
        let head = read_head(&mut socket);
        let key = header_of(&head, "sec-websocket-key").unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
        )
        .into_bytes();
        answer.extend_from_slice(&DEFLATED_HELLO);
        socket.write_all(&answer).unwrap();
        // The client's masked, compressed frame, byte for byte.
        let mut frame = [0u8; 13];
        socket.read_exact(&mut frame).unwrap();
        (head, frame)
    });
    let gateway = Gateway::start(Setup::new().route(route(
        "ws",
        "/ws/*",
        &format!("http://{upstream_addr}"),
    )));

    let mut client = std::net::TcpStream::connect(gateway.proxy_addr()).unwrap();
    client.set_read_timeout(Some(SOON)).unwrap();
    client
        .write_all(
            b"GET /ws/deflate HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        )
        .unwrap();
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        header_of(&head, "sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(
        header_of(&head, "sec-websocket-extensions").as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    assert!(header_of(&head, "connection")
        .unwrap()
        .eq_ignore_ascii_case("upgrade"));
    let mut frame = [0u8; 9];
    client.read_exact(&mut frame).unwrap();
    assert_eq!(frame, DEFLATED_HELLO);

    // The same message from the client: masked with 37 fa 21 3d.
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut sent = vec![0xc1, 0x80 | 0x07];
    sent.extend_from_slice(&mask);
    sent.extend(
        DEFLATED_HELLO[2..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    client.write_all(&sent).unwrap();

    let (upstream_head, received) = upstream.join().unwrap();
    assert_eq!(&received[..], &sent[..]);
    assert_eq!(
        header_of(&upstream_head, "sec-websocket-extensions").as_deref(),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(
        header_of(&upstream_head, "sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
}

/// Reads an HTTP head, byte by byte, up to its blank line.
fn read_head(socket: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).expect("a complete head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A header's value in a raw head (the first, case-insensitively).
fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

#[tokio::test]
async fn the_route_policy_and_rate_limits_apply_to_the_upgrade() {
    let echo = WsEcho::start();
    let gateway = Gateway::start(
        setup()
            .route(route("ws", "/ws/*", &echo.url()).authenticated())
            .route(route("limited", "/limited/*", &echo.url()).extra("rate_limit = \"two\""))
            .raw("[rate_limits.two]\nkey = [\"ip\"]\nlimit = 2\nwindow = \"1h\"\n"),
    );
    assert_eq!(
        connect(&ws_url(&gateway, "/ws/x"), &[]).await.err(),
        Some(401)
    );
    assert!(echo.handshakes().is_empty(), "refused before the upstream");

    add_user(&gateway, "alice", &["staff"], &[]).await;
    let token = crate::auth::login_token(&gateway, "alice").await;
    let cookie = format!("{COOKIE}={token}");
    let (mut ws, _) = connect(&ws_url(&gateway, "/ws/x"), &[("cookie", &cookie)])
        .await
        .expect("a session opens the tunnel");
    echoes(&mut ws, Message::text("as alice")).await;
    let handshake = &echo.handshakes()[0];
    assert_eq!(handshake["x-user-id"], "alice");
    assert_eq!(handshake["x-user-roles"], "staff");
    assert!(
        handshake.get("cookie").is_none(),
        "the session cookie stays at the gateway"
    );

    for _ in 0..2 {
        connect(&ws_url(&gateway, "/limited/x"), &[])
            .await
            .expect("within the limit");
    }
    assert_eq!(
        connect(&ws_url(&gateway, "/limited/x"), &[]).await.err(),
        Some(429)
    );
}

#[tokio::test]
async fn revoking_the_session_closes_its_tunnel() {
    let echo = WsEcho::start();
    let gateway = Gateway::start(
        setup()
            .session("tunnel_check_interval = \"100ms\"")
            .route(route("ws", "/ws/*", &echo.url()).authenticated()),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let (status, issued) = admin(
        &gateway,
        Method::POST,
        "/admin/api/sessions",
        Some(json!({"user": "alice", "ttl": "1h"})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let cookie = format!("{COOKIE}={}", issued["token"].as_str().unwrap());
    let (mut ws, _) = connect(
        &ws_url(&gateway, "/ws/x"),
        &[("cookie", &cookie), ("x-request-id", "ws-revoked")],
    )
    .await
    .unwrap();
    echoes(&mut ws, Message::text("before")).await;

    let id = issued["id"].as_str().unwrap();
    let revoked_at = Instant::now();
    let (status, _) = admin(
        &gateway,
        Method::DELETE,
        &format!("/admin/api/sessions/{id}"),
        None,
    )
    .await;
    assert!(status == 200 || status == 204, "{status}");
    closed_by_gateway(&mut ws).await;
    let took = revoked_at.elapsed();
    let line = tunnel_line(&gateway, "ws-revoked");
    assert_eq!(line["tunnel_end"], "session", "{line}");
    eventually("the upstream side closed", SOON, || async {
        (echo.open() == 0).then_some(())
    })
    .await;
    let text = metrics(&gateway.admin_url("/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "portcullis_tunnels_closed_total",
            &[("reason", "session")]
        ),
        Some(1.0)
    );
    eprintln!("tunnel closed {took:?} after the revocation (check interval 100ms)");
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let echo = WsEcho::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("ws", "/ws/*", &echo.url()).extra("tunnel_idle_timeout = \"400ms\"")),
    );
    let (mut busy, _) = connect(&ws_url(&gateway, "/ws/busy"), &[]).await.unwrap();
    let (mut idle, _) = connect(
        &ws_url(&gateway, "/ws/idle"),
        &[("x-request-id", "ws-idle")],
    )
    .await
    .unwrap();
    // Traffic every 100 ms keeps one open well past the idle timeout.
    for i in 0..12 {
        echoes(&mut busy, Message::text(format!("tick {i}"))).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    closed_by_gateway(&mut idle).await;
    assert_eq!(tunnel_line(&gateway, "ws-idle")["tunnel_end"], "idle");
    echoes(&mut busy, Message::text("still here")).await;
}

#[tokio::test]
async fn refusals_and_routes_without_websocket() {
    let echo = WsEcho::start();
    let gateway = Gateway::start(
        Setup::new()
            .route(route("ws", "/ws/*", &echo.url()))
            .route(route("plain", "/plain/*", &echo.url()).extra("websocket = false")),
    );
    // The upstream's own refusal, with its body, as it sent it.
    let mut raw = std::net::TcpStream::connect(gateway.proxy_addr()).unwrap();
    raw.set_read_timeout(Some(SOON)).unwrap();
    raw.write_all(
        b"GET /ws/refuse HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.ends_with("no tunnels here"), "{answer}");

    // A route that does not take WebSockets forwards a plain GET: the
    // upstream never sees an upgrade, and the client gets no 101.
    let status = connect(&ws_url(&gateway, "/plain/x"), &[]).await.err();
    assert!(status.is_some_and(|s| s != 101), "{status:?}");
    // (The echo records only upgrade requests: the refused one above.)
    assert_eq!(echo.handshakes().len(), 1);
}

#[tokio::test]
async fn a_service_tunnel_skips_a_dead_target() {
    let echo = WsEcho::start();
    let dead = closed_port_url();
    let gateway = Gateway::start(
        Setup::new()
            .raw(&format!(
                "[upstreams.chat]\ntargets = [\"{dead}\", \"{}\"]\n",
                echo.url()
            ))
            .route(route("ws", "/ws/*", "chat")),
    );
    for i in 0..4 {
        let id = format!("ws-service-{i}");
        let (mut ws, _) = connect(&ws_url(&gateway, "/ws/x"), &[("x-request-id", &id)])
            .await
            .expect("every upgrade reaches the live target");
        echoes(&mut ws, Message::text("hi")).await;
        ws.close(None).await.unwrap();
        let line = tunnel_line(&gateway, &id);
        assert_eq!(line["target"], echo.url(), "{line}");
    }
}

#[test]
fn graceful_shutdown_keeps_tunnels_for_the_grace_period_then_closes_them() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let echo = WsEcho::start();
    let mut gateway = Gateway::start(
        Setup::new()
            .server("shutdown_grace = \"1500ms\"")
            .route(route("ws", "/ws/*", &echo.url())),
    );
    runtime.block_on(async {
        let (mut ws, _) = connect(&ws_url(&gateway, "/ws/x"), &[("x-request-id", "ws-drain")])
            .await
            .unwrap();
        let signalled = Instant::now();
        gateway.signal("TERM");
        // Still carrying traffic during the grace period...
        echoes(&mut ws, Message::text("during the grace period")).await;
        closed_by_gateway(&mut ws).await;
        // ...and closed at its end.
        let after = signalled.elapsed();
        assert!(
            after >= Duration::from_millis(1200),
            "closed after {after:?}"
        );
    });
    gateway.wait_exit(SOON);
    let line = gateway.wait_for_log(|l| l["request_id"] == "ws-drain", SOON);
    assert_eq!(line["tunnel_end"], "shutdown", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_tunnels_are_held_with_bounded_memory() {
    let limit = crate::hardening::raise_open_files(8192);
    assert!(
        limit >= 4500,
        "this test needs 4,500 open files (RLIMIT_NOFILE is {limit}): raise the hard limit"
    );
    let echo = WsEcho::start();
    let gateway = Gateway::start(Setup::new().route(route("ws", "/ws/*", &echo.url())));
    let url = ws_url(&gateway, "/ws/idle");
    let (mut first, _) = connect(&url, &[]).await.unwrap();
    echoes(&mut first, Message::text("warm")).await;
    let before = gateway.peak_rss();
    let mut tunnels = vec![first];
    for _ in 0..10 {
        let batch = futures_util::future::join_all((0..100).map(|_| connect(&url, &[]))).await;
        tunnels.extend(batch.into_iter().map(|t| t.expect("a tunnel").0));
    }
    tunnels.truncate(1000);
    eventually("a thousand tunnels open", SOON, || async {
        let text = metrics(&gateway.admin_url("/metrics")).await;
        (sample(&text, "portcullis_tunnels_open", &[]) == Some(1000.0)).then_some(())
    })
    .await;
    // Every one of them still carries traffic.
    for ws in tunnels.iter_mut().step_by(97) {
        echoes(ws, Message::text("still open")).await;
    }
    let grown = gateway.peak_rss().saturating_sub(before);
    eprintln!(
        "1,000 idle tunnels: {:.1} MiB more resident memory ({} bytes each)",
        grown as f64 / (1024.0 * 1024.0),
        grown / 1000
    );
    assert!(grown < 64 * 1024 * 1024, "{grown} bytes for 1,000 tunnels");
    drop(tunnels);
    eventually("every tunnel closed", SOON, || async {
        let text = metrics(&gateway.admin_url("/metrics")).await;
        (sample(&text, "portcullis_tunnels_open", &[]) == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tunnel_to_an_https_upstream_verifies_its_certificate() {
    let cert = crate::common::tls::self_signed();
    let echo = WsEcho::start_tls(cert.server_config());
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, _) = cert.write(dir.path());
    let setup = Setup::new().route(route("wss", "/wss/*", &echo.url()));
    // Trusted (the system's roots read from SSL_CERT_FILE): a working tunnel.
    let gateway = crate::common::Launch::new(setup.clone())
        .env("SSL_CERT_FILE", cert_file.to_str().unwrap())
        .start();
    let (mut ws, _) = connect(&ws_url(&gateway, "/wss/x"), &[])
        .await
        .expect("a tunnel over TLS");
    echoes(&mut ws, Message::text("encrypted upstream")).await;
    assert_eq!(
        echo.handshakes()[0]["host"],
        format!("localhost:{}", echo.url().rsplit(':').next().unwrap())
    );

    // Untrusted: a 502 from the gateway, and nothing reaches the upstream.
    let untrusted = Gateway::start(setup);
    assert_eq!(
        connect(
            &ws_url(&untrusted, "/wss/x"),
            &[("x-request-id", "wss-untrusted")]
        )
        .await
        .err(),
        Some(502)
    );
    let line = untrusted.access_line("wss-untrusted");
    assert_eq!(line["error"], "bad_gateway", "{line}");
    assert_eq!(echo.handshakes().len(), 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_still_cut_off_when_its_tunnel_ends() {
    // An upstream that, once switched, sends without pause; the client
    // never reads, so the gateway's writes to it back up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let (cut_tx, cut_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let head = read_head(&mut socket);
        let key = header_of(&head, "sec-websocket-key").unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        write!(
            socket,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .unwrap();
        // Binary frames of 60 KiB, until the gateway lets go.
        let mut frame = vec![0x82, 126, 0xf0, 0x00];
        frame.resize(4 + 0xf000, b'x');
        let started = Instant::now();
        while socket.write_all(&frame).is_ok() {}
        let _ = cut_tx.send(started.elapsed());
    });
    let gateway = Gateway::start(
        Setup::new().route(
            route("ws", "/ws/*", &format!("http://{upstream_addr}"))
                .extra("tunnel_idle_timeout = \"500ms\""),
        ),
    );
    let mut client = std::net::TcpStream::connect(gateway.proxy_addr()).unwrap();
    client
        .write_all(
            b"GET /ws/flood HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              X-Request-Id: ws-flood\r\n\r\n",
        )
        .unwrap();
    // Nothing more is read from `client`: nothing crosses, so the tunnel
    // goes idle, and the gateway lets go of both sides.
    let held_for = cut_rx
        .recv_timeout(SOON)
        .expect("the upstream side to be closed");
    assert!(held_for >= Duration::from_millis(400), "{held_for:?}");
    assert_eq!(tunnel_line(&gateway, "ws-flood")["tunnel_end"], "idle");
    eventually("the tunnel gauge back to 0", SOON, || async {
        let text = metrics(&gateway.admin_url("/metrics")).await;
        (sample(&text, "portcullis_tunnels_open", &[]) == Some(0.0)).then_some(())
    })
    .await;
    drop(client);
}

#[tokio::test]
async fn an_open_tunnel_keeps_its_session_from_idling_out() {
    let echo = WsEcho::start();
    let gateway = Gateway::start(
        setup()
            .session("idle_timeout = \"1s\"")
            .session("touch_interval = \"100ms\"")
            .session("tunnel_check_interval = \"100ms\"")
            .storage("sweep_interval = \"200ms\"")
            .route(route("ws", "/ws/*", &echo.url()).authenticated()),
    );
    add_user(&gateway, "alice", &[], &[]).await;
    let token = crate::auth::login_token(&gateway, "alice").await;
    let cookie = format!("{COOKIE}={token}");
    let (mut ws, _) = connect(&ws_url(&gateway, "/ws/x"), &[("cookie", &cookie)])
        .await
        .unwrap();
    // Three idle timeouts with no other request of the session's...
    tokio::time::sleep(Duration::from_secs(3)).await;
    // ...and the tunnel still works, and so does the session.
    echoes(&mut ws, Message::text("still in session")).await;
    let status = crate::common::client()
        .get(gateway.url("/ws/page"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .status();
    assert_ne!(status, 401);
}
