//! Upstream services the tests put behind the gateway, on real loopback sockets.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

/// A gzip stream (of a repeated sentence) the echo answers `/gzip` with.
pub const GZIP_BYTES: [u8; 64] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x2b, 0xc8, 0x2f, 0x2a, 0x49, 0x2e,
    0xcd, 0xc9, 0xc9, 0x2c, 0x56, 0x28, 0x48, 0x2c, 0x2e, 0x4e, 0x2d, 0x56, 0x48, 0xaf, 0xca, 0x2c,
    0x50, 0x28, 0xc9, 0x28, 0xca, 0x2f, 0x4d, 0xcf, 0x50, 0x28, 0xcd, 0x2b, 0xc9, 0x2f, 0x4d, 0xce,
    0x48, 0x4d, 0xe1, 0x2a, 0x18, 0x38, 0x85, 0x00, 0x54, 0x87, 0x00, 0x67, 0xa4, 0x00, 0x00, 0x00,
];

/// The two `Set-Cookie` values `/status/{code}` answers with.
pub const UPSTREAM_COOKIES: [&str; 2] = [
    "upstream_a=SETCOOKIE-SECRET-ONE; Path=/; HttpOnly",
    "upstream_b=SETCOOKIE-SECRET-TWO; Path=/",
];

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

#[derive(Default)]
struct EchoState {
    name: String,
    hits: AtomicUsize,
    paths: Mutex<Vec<String>>,
}

/// An actix-web echo server on its own thread and actix System.
///
/// Every request is counted. The default handler answers JSON describing what
/// it received; paths ending in these names behave differently:
/// `/status/{code}`, `/slow?ms=N`, `/bytes?n=N[&sized=1]`, `/redirect`, `/gzip`.
pub struct Echo {
    addr: SocketAddr,
    https: bool,
    state: Arc<EchoState>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// A plain-HTTP echo server.
    pub fn start() -> Echo {
        Echo::named("echo")
    }

    /// A plain-HTTP echo server that reports `name` in its answers.
    pub fn named(name: &str) -> Echo {
        Echo::spawn(name, None)
    }

    /// An HTTPS echo server with this certificate.
    pub fn start_tls(tls: rustls::ServerConfig) -> Echo {
        Echo::spawn("echo-tls", Some(tls))
    }

    /// A plain-HTTP echo server reporting `name`, bound to `addr` (another
    /// loopback address, say, on a port another echo uses).
    pub fn named_at(name: &str, addr: SocketAddr) -> Echo {
        Echo::spawn_at(name, None, addr)
    }

    fn spawn(name: &str, tls: Option<rustls::ServerConfig>) -> Echo {
        Echo::spawn_at(name, tls, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn spawn_at(name: &str, tls: Option<rustls::ServerConfig>, bind: SocketAddr) -> Echo {
        let state = Arc::new(EchoState {
            name: name.to_owned(),
            ..EchoState::default()
        });
        let https = tls.is_some();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_state = state.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let data = web::Data::from(thread_state);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(handle))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1);
                let server = match tls {
                    Some(tls) => server.bind_rustls_0_23(bind, tls),
                    None => server.bind(bind),
                }
                .expect("bind the echo server");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().expect("the echo server starts");
        Echo {
            addr,
            https,
            state,
            handle,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` (or https).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests the echo has received.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// The paths of every request received, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // stop() sends its command at once; the future only awaits completion.
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    req.query_string()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

async fn handle(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<EchoState>,
) -> HttpResponse {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state
        .paths
        .lock()
        .unwrap()
        .push(req.uri().path().to_owned());
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.last().copied().unwrap_or("");
    let parent = segments.len().checked_sub(2).map_or("", |i| segments[i]);

    if parent == "status" {
        let code: u16 = last.parse().unwrap_or(500);
        let mut response =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap());
        response.insert_header(("x-upstream-custom", "kept"));
        for cookie in UPSTREAM_COOKIES {
            response.append_header(("set-cookie", cookie));
        }
        return response.body(format!("upstream says {code}"));
    }
    match last {
        "redirect" => {
            return HttpResponse::Found()
                .insert_header(("location", "/elsewhere"))
                .body("see /elsewhere");
        }
        "gzip" => {
            return HttpResponse::Ok()
                .insert_header(("content-encoding", "gzip"))
                .insert_header(("content-type", "text/plain"))
                .body(GZIP_BYTES.to_vec());
        }
        "bytes" => {
            let n: u64 = query_param(&req, "n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let stream = futures_util::stream::unfold(n, |left| async move {
                if left == 0 {
                    return None;
                }
                let take = left.min(CHUNK.len() as u64);
                let chunk = Bytes::from_static(&CHUNK[..take as usize]);
                Some((Ok::<_, actix_web::Error>(chunk), left - take))
            });
            return if query_param(&req, "sized").is_some() {
                HttpResponse::Ok().body(SizedStream::new(n, Box::pin(stream)))
            } else {
                HttpResponse::Ok().streaming(stream)
            };
        }
        "slow" => {
            let ms: u64 = query_param(&req, "ms")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000);
            actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }

    let mut body_bytes: u64 = 0;
    let mut body_error = Value::Null;
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) => body_bytes += chunk.len() as u64,
            Err(err) => {
                body_error = json!(err.to_string());
                break;
            }
        }
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    HttpResponse::Ok().json(json!({
        "upstream": state.name,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
        "body_bytes": body_bytes,
        "body_error": body_error,
        "peer_port": req.peer_addr().map(|a| a.port()),
    }))
}

/// An upstream that accepts connections and never answers.
pub struct Hanging {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hanging {
    pub fn start() -> Hanging {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    held.push(conn);
                }
            }
        });
        Hanging {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An `http://` URL on a loopback port nothing listens on.
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// An upstream that answers every request with the same raw bytes and closes,
/// for responses actix-web would not let a handler write (e.g. its own
/// `Connection` header).
pub struct Fixed {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fixed {
    pub fn start(response: &'static [u8]) -> Fixed {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_hits, thread_stop) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                thread_hits.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match std::io::Read::read(&mut conn, &mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let _ = std::io::Write::write_all(&mut conn, response);
            }
        });
        Fixed {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
