//! Clients: reqwest for well-formed traffic, raw TCP for everything else.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A client that talks to the gateway directly (no proxy from the
/// environment) and never follows redirects itself.
pub fn client() -> reqwest::Client {
    client_builder().build().expect("a reqwest client")
}

/// The builder behind [`client`], for tests that need more settings.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
}

/// The body of a response as JSON, panicking with the text if it is not.
pub async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("a response body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

/// GETs a URL and returns the status and JSON body.
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.expect("the request");
    let status = response.status().as_u16();
    (status, json(response).await)
}

/// Polls until `check` returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The admin listener's metrics text.
pub async fn metrics(admin_url: &str) -> String {
    client()
        .get(admin_url)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the first sample of `name` whose labels include all of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let Some(rest) = line.strip_prefix(name) else {
                return false;
            };
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return false;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// True once `GET /healthz` on the admin address answers 200, polling until `timeout`.
pub fn wait_until_healthy(admin: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut conn) = RawConn::connect(admin) {
            if conn
                .send(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
                .is_ok()
            {
                if let Ok(response) = conn.read_response() {
                    if response.status == 200 {
                        return true;
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, panicking with the response if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not a JSON body: {self:?}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What became of a connection the test is waiting on.
#[derive(Debug)]
pub enum Outcome {
    Response(RawResponse),
    /// The peer closed (or reset) the connection without a response.
    Closed,
}

/// A raw HTTP/1.1 connection for requests reqwest would refuse to send.
pub struct RawConn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// How long any raw read may block before the test gives up.
pub const RAW_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl RawConn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(RAW_READ_TIMEOUT))?;
        stream.set_write_timeout(Some(RAW_READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (not to a HEAD request), or the connection closing.
    pub fn read_outcome(&mut self) -> std::io::Result<Outcome> {
        self.read_outcome_for(false)
    }

    /// Reads one response, or the connection closing; `head` for HEAD requests.
    pub fn read_outcome_for(&mut self, head: bool) -> std::io::Result<Outcome> {
        let header_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end;
            }
            match self.fill() {
                Ok(0) => return Ok(Outcome::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset && self.buffer.is_empty() => {
                    return Ok(Outcome::Closed)
                }
                Err(e) => return Err(e),
            }
        };
        let head_text = String::from_utf8_lossy(&self.buffer[..header_end]).into_owned();
        self.buffer.drain(..header_end + 4);
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let bodiless = head || status == 204 || status == 304 || (100..200).contains(&status);
        let body = if bodiless {
            Vec::new()
        } else if let Some(length) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buffer.len() < length {
                if self.fill()? == 0 {
                    break;
                }
            }
            let take = length.min(self.buffer.len());
            self.buffer.drain(..take).collect()
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked()?
        } else {
            loop {
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                    Err(e) => return Err(e),
                }
            }
            std::mem::take(&mut self.buffer)
        };
        Ok(Outcome::Response(RawResponse {
            status,
            headers,
            body,
        }))
    }

    fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.buffer, b"\r\n") {
                    break end;
                }
                if self.fill()? == 0 {
                    return Ok(body);
                }
            };
            let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            self.buffer.drain(..line_end + 2);
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                while find(&self.buffer, b"\r\n").is_none() {
                    if self.fill()? == 0 {
                        return Ok(body);
                    }
                }
                let end = find(&self.buffer, b"\r\n").unwrap();
                self.buffer.drain(..end + 2);
                return Ok(body);
            }
            while self.buffer.len() < size + 2 {
                if self.fill()? == 0 {
                    return Ok(body);
                }
            }
            body.extend(self.buffer.drain(..size));
            self.buffer.drain(..2);
        }
    }

    /// Reads one response, panicking if the connection closes first.
    pub fn read_response(&mut self) -> std::io::Result<RawResponse> {
        match self.read_outcome()? {
            Outcome::Response(r) => Ok(r),
            Outcome::Closed => Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed without a response",
            )),
        }
    }

    /// Reads until at least `n` bytes have arrived (or the peer closes);
    /// returns how many bytes have been received so far.
    pub fn read_at_least(&mut self, n: usize) -> std::io::Result<usize> {
        while self.buffer.len() < n {
            if self.fill()? == 0 {
                break;
            }
        }
        Ok(self.buffer.len())
    }

    /// True if the peer has closed the connection (reading hits EOF or a
    /// reset within the raw read timeout), false if it stays open and silent.
    pub fn is_closed(&mut self) -> bool {
        loop {
            match self.fill() {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(e) => panic!("reading the connection: {e}"),
            }
        }
    }
}

/// Sends one raw request on a fresh connection and reads the answer.
pub fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    let mut conn = RawConn::connect(addr).expect("connect");
    conn.send(request.as_bytes()).expect("send");
    conn.read_response().expect("a response")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
