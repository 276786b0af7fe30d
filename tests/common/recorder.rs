//! A recording upstream: a small, strict HTTP/1.1 server on raw std sockets.
//!
//! It stands for the backend in request-smuggling tests. Its parser is
//! deliberately simple and unforgiving (RFC 9112 with none of the leniency a
//! front end may allow itself): a request line, header lines until an empty
//! line, then a body framed by `Content-Length` or `chunked`, all with CRLF
//! line ends. Every request it parses is recorded before it is answered, so
//! the recording is exactly what the bytes the gateway sent mean to a backend.
//! Anything it cannot parse is recorded as refused (the gateway must never
//! send it) and the connection is closed.
//!
//! Every request is answered `200` with a text body naming the method, target
//! and `x-request-id` it was received with, and the connection is kept alive.
//! A request with an `Expect` header and a body gets an interim
//! `100 Continue` first, so a forwarded `Expect` cannot stall the exchange.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The largest head the recorder accepts; the gateway sends far smaller ones.
const MAX_HEAD: usize = 64 * 1024;

/// One request as the recorder parsed it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which upstream connection it arrived on, counting from 0.
    pub connection: usize,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn request_id(&self) -> Option<&str> {
        self.header("x-request-id")
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// Bytes the recorder could not parse as a request: bad framing on the
/// gateway's side of the connection.
#[derive(Debug, Clone)]
pub struct Refused {
    pub connection: usize,
    pub reason: String,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    refused: Mutex<Vec<Refused>>,
    /// Bytes left over when a connection closed in the middle of a request.
    truncated: Mutex<Vec<Refused>>,
    streams: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    connections: AtomicUsize,
}

/// The recording upstream; stops (and closes every connection) when dropped.
pub struct Recorder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_shared, accept_stop) = (shared.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let id = accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    accept_shared.streams.lock().unwrap().push(clone);
                }
                let conn_shared = accept_shared.clone();
                let thread = std::thread::spawn(move || serve(stream, id, &conn_shared));
                accept_shared.threads.lock().unwrap().push(thread);
            }
        });
        Recorder {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request parsed so far, in the order they were parsed.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Everything the recorder could not parse so far.
    pub fn refused(&self) -> Vec<Refused> {
        self.shared.refused.lock().unwrap().clone()
    }

    /// Partial requests left when their connection closed (a request body the
    /// gateway abandoned, for instance): never counted as requests.
    pub fn truncated(&self) -> Vec<Refused> {
        self.shared.truncated.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self.shared.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// What the front of a connection's buffer holds.
enum Parsed {
    /// A whole request and how many bytes it took.
    Complete(Recorded, usize),
    /// More bytes are needed; `continue_wanted` once the head is complete and
    /// asks for `100 Continue` before its body.
    Partial {
        continue_wanted: bool,
    },
    Malformed(String),
}

/// Answers requests on one connection until it closes or sends garbage.
fn serve(mut stream: TcpStream, connection: usize, shared: &Shared) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut continued = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Record every complete request in the buffer before answering any,
        // so the recording never lags behind what the gateway has been told.
        let mut out = Vec::new();
        let mut close = false;
        loop {
            match parse(&buffer, connection) {
                Parsed::Complete(request, used) => {
                    buffer.drain(..used);
                    continued = false;
                    let wants_close = request
                        .header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    out.extend(answer(&request, wants_close));
                    shared.requests.lock().unwrap().push(request);
                    if wants_close {
                        close = true;
                        break;
                    }
                }
                Parsed::Partial { continue_wanted } => {
                    if continue_wanted && !continued {
                        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        continued = true;
                    }
                    break;
                }
                Parsed::Malformed(reason) => {
                    shared.refused.lock().unwrap().push(Refused {
                        connection,
                        reason,
                        bytes: std::mem::take(&mut buffer),
                    });
                    out.extend_from_slice(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if !buffer.is_empty() {
        shared.truncated.lock().unwrap().push(Refused {
            connection,
            reason: "the connection closed in the middle of a request".into(),
            bytes: buffer,
        });
    }
}

/// The recorder's answer: which request this is, so a client can tell when
/// it got someone else's.
fn answer(request: &Recorded, close: bool) -> Vec<u8> {
    let body = format!(
        "recorded {} {} id={}\n",
        request.method,
        request.target,
        request.request_id().unwrap_or("-")
    );
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if request.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses the request at the front of `buffer`, strictly.
fn parse(buffer: &[u8], connection: usize) -> Parsed {
    if buffer.is_empty() {
        return Parsed::Partial {
            continue_wanted: false,
        };
    }
    // Every line ends in CRLF: no bare CR, no bare LF, anywhere in the head.
    let mut head_end = None;
    for (i, &b) in buffer.iter().enumerate() {
        if b == b'\n' && (i == 0 || buffer[i - 1] != b'\r') {
            return Parsed::Malformed(format!("bare LF at byte {i}"));
        }
        if b == b'\r' && buffer.get(i + 1).is_some_and(|&next| next != b'\n') {
            return Parsed::Malformed(format!("bare CR at byte {i}"));
        }
        if buffer[..=i].ends_with(b"\r\n\r\n") {
            head_end = Some(i + 1);
            break;
        }
    }
    let Some(head_end) = head_end else {
        if buffer.len() > MAX_HEAD {
            return Parsed::Malformed("a head without an end".into());
        }
        return Parsed::Partial {
            continue_wanted: false,
        };
    };
    // Field values may carry obs-text (RFC 9110 §5.5); read lossily, it
    // stays out of the ASCII the checks below look for.
    let head = String::from_utf8_lossy(&buffer[..head_end - 4]);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Parsed::Malformed(format!("request line {request_line:?}"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Parsed::Malformed(format!("method {method:?}"));
    }
    if target.is_empty() || !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Parsed::Malformed(format!("target {target:?}"));
    }
    if version != "HTTP/1.1" {
        return Parsed::Malformed(format!("version {version:?}"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Parsed::Malformed(format!("obs-fold {line:?}"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Malformed(format!("header line {line:?}"));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Parsed::Malformed(format!("header name {name:?}"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
            return Parsed::Malformed(format!("header value {value:?}"));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    let values = |wanted: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    if lengths.len() > 1 {
        return Parsed::Malformed(format!("several Content-Length: {lengths:?}"));
    }
    if !codings.is_empty() && !lengths.is_empty() {
        return Parsed::Malformed("both Content-Length and Transfer-Encoding".into());
    }
    if codings.len() > 1
        || codings
            .first()
            .is_some_and(|c| !c.eq_ignore_ascii_case("chunked"))
    {
        return Parsed::Malformed(format!("Transfer-Encoding {codings:?}"));
    }
    let expects = !values("expect").is_empty();
    let body_bytes = &buffer[head_end..];
    let (body, used) = if !codings.is_empty() {
        match dechunk(body_bytes) {
            Ok(Some((body, used))) => (body, used),
            Ok(None) => {
                return Parsed::Partial {
                    continue_wanted: expects,
                }
            }
            Err(reason) => return Parsed::Malformed(reason),
        }
    } else if let Some(length) = lengths.first() {
        if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
            return Parsed::Malformed(format!("Content-Length {length:?}"));
        }
        let Ok(length) = length.parse::<usize>() else {
            return Parsed::Malformed(format!("Content-Length {length:?}"));
        };
        if body_bytes.len() < length {
            return Parsed::Partial {
                continue_wanted: expects && length > 0,
            };
        }
        (body_bytes[..length].to_vec(), length)
    } else {
        (Vec::new(), 0)
    };
    Parsed::Complete(
        Recorded {
            connection,
            method: method.to_owned(),
            target: target.to_owned(),
            headers,
            body,
        },
        head_end + used,
    )
}

/// A chunked body at the front of `bytes`: its data and the bytes it took,
/// `None` while incomplete. No extensions and no trailers: the gateway's
/// client never sends them.
fn dechunk(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
            if bytes.len() - at > 32 {
                return Err("a chunk-size line without an end".into());
            }
            return Ok(None);
        };
        let line = &bytes[at..at + line_len];
        if line.is_empty() || line.len() > 16 || !line.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "chunk-size line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let size = usize::from_str_radix(std::str::from_utf8(line).unwrap(), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        at += line_len + 2;
        if size == 0 {
            let rest = &bytes[at..];
            if rest.starts_with(b"\r\n") {
                return Ok(Some((body, at + 2)));
            }
            if rest.is_empty() || rest == b"\r" {
                return Ok(None);
            }
            return Err("trailer fields after the last chunk".into());
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[at..at + size]);
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
}
