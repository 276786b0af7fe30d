//! Request smuggling: raw probes for RFC 9112 §6 (message body length) and
//! §11.2 (request smuggling), family by family: CL.TE and TE.CL, TE.TE
//! obfuscations, Content-Length variants, chunk grammar, bare CR / LF and
//! other header syntax, odd HTTP versions, upgrades, pipelining and `Expect`.
//!
//! The upstream is the strict recording server (`common::recorder`), which
//! stands for any backend. Each probe is written on a fresh connection with
//! a canary request right behind it on the same connection; then a request
//! on a new connection checks that the gateway still serves and that no
//! pooled upstream connection was left in the middle of a message. After
//! every probe:
//! - every request the upstream parsed carries an `x-request-id` that the
//!   gateway logged, with the same method and path: nothing reached it that
//!   the gateway did not route and log itself (in particular no request for a
//!   `/SMUGGLED` path hidden in a body);
//! - the upstream parsed exactly as many requests as the gateway logged 2xx
//!   answers for, never bytes it could not frame, and never an `Expect`;
//! - every answer that came from the upstream went to the request with the
//!   same id, in request order (no response-queue poisoning);
//! - the probe got a 2xx if well-formed, a 4xx or a closed connection if not,
//!   never a 5xx, and its canary was answered, or not, as the probe demands.
//!
//! A test runs all the probes of its family against one gateway and reports
//! every failing probe with the bytes sent, the answers, what the upstream
//! parsed and what the gateway logged.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::http::{Outcome, RawResponse};
use crate::common::recorder::{Recorded, Recorder, Refused};
use crate::common::{echo_gateway, route, Echo, Gateway, RawConn, Setup};

/// How long an access line may lag behind the answer it belongs to.
const LOG_LAG: Duration = Duration::from_secs(5);

/// What the probe's own (first) answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Well-formed: forwarded, and answered with a 2xx.
    Forwarded,
    /// Malformed or ambiguous framing: a 4xx or a closed connection, and the
    /// probe's request never reaches the upstream.
    Refused,
    /// The RFC lets a server reject it or read it leniently: 2xx, 4xx or a
    /// close, as long as the gateway and the upstream agree on what it was.
    Either,
}

/// What must become of the canary written right behind the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Canary {
    /// Answered, with its own answer.
    Served,
    /// Never answered, and nothing after the probe's own request reaches the
    /// upstream: the probe ends the connection or swallows the canary.
    NotServed,
    /// Either way; if answered, with its own answer.
    Any,
}

struct Probe {
    /// Unique within a test; every path and request id of the probe has it.
    name: &'static str,
    answer: Answer,
    canary: Canary,
    /// The body the upstream must receive for the probe's own request, if
    /// it is forwarded.
    body: Option<&'static [u8]>,
    /// Which answers (counting from 0) are to HEAD requests, so have no body.
    heads: &'static [usize],
    build: fn(&Tag) -> Vec<u8>,
}

fn probe(name: &'static str, answer: Answer, canary: Canary, build: fn(&Tag) -> Vec<u8>) -> Probe {
    Probe {
        name,
        answer,
        canary,
        body: None,
        heads: &[],
        build,
    }
}

/// A well-formed probe: forwarded, and the connection goes on to the canary.
fn forwarded(name: &'static str, build: fn(&Tag) -> Vec<u8>) -> Probe {
    probe(name, Answer::Forwarded, Canary::Served, build)
}

/// A malformed probe: refused, and the connection ends with it.
fn refused(name: &'static str, build: fn(&Tag) -> Vec<u8>) -> Probe {
    probe(name, Answer::Refused, Canary::NotServed, build)
}

/// A probe the RFC lets the gateway refuse or read leniently.
fn either(name: &'static str, build: fn(&Tag) -> Vec<u8>) -> Probe {
    probe(name, Answer::Either, Canary::Any, build)
}

impl Probe {
    fn canary(mut self, canary: Canary) -> Probe {
        self.canary = canary;
        self
    }

    fn body(mut self, body: &'static [u8]) -> Probe {
        self.body = Some(body);
        self
    }

    fn heads(mut self, heads: &'static [usize]) -> Probe {
        self.heads = heads;
        self
    }
}

/// Paths and request ids of one probe: `/p/<name>/...` and `<name>-...`.
struct Tag(&'static str);

impl Tag {
    fn path(&self, what: &str) -> String {
        format!("/p/{}/{what}", self.0)
    }

    fn id(&self, what: &str) -> String {
        format!("{}-{what}", self.0)
    }

    /// The head of the probe's own request (`/p/<name>/probe`, id
    /// `<name>-probe`) with `headers` (CRLF-terminated lines) added.
    fn head(&self, method: &str, headers: &str) -> String {
        format!(
            "{method} {} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {}\r\n{headers}\r\n",
            self.path("probe"),
            self.id("probe")
        )
    }

    /// The probe's own request: its head, then `body` as it is.
    fn request(&self, method: &str, headers: &str, body: &str) -> Vec<u8> {
        format!("{}{body}", self.head(method, headers)).into_bytes()
    }

    /// A plain GET for `/p/<name>/<what>` with the id `<name>-<what>`.
    fn get(&self, what: &str) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {}\r\n\r\n",
            self.path(what),
            self.id(what)
        )
    }

    /// The request hidden in bodies: the marker path `/p/<name>/SMUGGLED`.
    fn smuggled(&self) -> String {
        self.get("SMUGGLED")
    }

    fn canary(&self) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {}\r\nConnection: close\r\n\r\n",
            self.path("canary"),
            self.id("canary")
        )
    }
}

/// One chunk of a chunked body.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// CL.TE with this `Transfer-Encoding` line: a reader that believes the
/// Content-Length takes the whole body; one that believes the chunked coding
/// stops at the last chunk and reads the smuggled request as the next one.
fn cl_te(t: &Tag, te_line: &str) -> Vec<u8> {
    let body = format!("0\r\n\r\n{}", t.smuggled());
    let headers = format!("Content-Length: {}\r\n{te_line}\r\n", body.len());
    t.request("POST", &headers, &body)
}

/// TE.CL with this `Transfer-Encoding` line: a reader that believes the
/// chunked coding takes one chunk holding the smuggled request; one that
/// believes the Content-Length takes only the chunk-size line.
fn te_cl(t: &Tag, te_line: &str) -> Vec<u8> {
    let smuggled = t.smuggled();
    let size_line = format!("{:x}\r\n", smuggled.len());
    let body = format!("{size_line}{smuggled}\r\n0\r\n\r\n");
    let headers = format!("{te_line}\r\nContent-Length: {}\r\n", size_line.len());
    t.request("POST", &headers, &body)
}

/// Only a (perhaps obfuscated) `Transfer-Encoding` line: a chunked "hello",
/// then the smuggled request. Read as chunked, that request is the client's
/// own next request and must be logged as such; read otherwise, it must
/// never reach the upstream.
fn te_only(t: &Tag, te_line: &str) -> Vec<u8> {
    let body = format!("{}0\r\n\r\n{}", chunk("hello"), t.smuggled());
    t.request("POST", &format!("{te_line}\r\n"), &body)
}

/// A chunked POST with this body, as it is.
fn chunked(t: &Tag, body: &str) -> Vec<u8> {
    t.request("POST", "Transfer-Encoding: chunked\r\n", body)
}

/// A POST with this Content-Length value and body.
fn with_length(t: &Tag, value: &str, body: &str) -> Vec<u8> {
    t.request("POST", &format!("Content-Length: {value}\r\n"), body)
}

/// A request line of our own, then the probe's Host and request id.
fn line(t: &Tag, request_line: &str, headers: &str) -> Vec<u8> {
    format!(
        "{request_line}\r\nHost: gw\r\nX-Request-Id: {}\r\n{headers}\r\n",
        t.id("probe")
    )
    .into_bytes()
}

/// The gateway under test: `/p/*` to the recorder, one worker (so the
/// follow-up request reuses the upstream connection a probe used) and short
/// timeouts (so a probe that leaves the gateway waiting for bytes ends soon).
fn gateway_for(recorder: &Recorder) -> Gateway {
    Gateway::start(
        Setup::new()
            .server("workers = 1")
            .server("header_timeout = \"1s\"")
            .server("body_timeout = \"1s\"")
            .server("keep_alive = \"2s\"")
            .route(route("recorder", "/p/*", &recorder.url()).extra("timeout = \"5s\"")),
    )
}

/// Where the recorder and the log stood before a probe.
struct Mark {
    requests: usize,
    refused: usize,
    logs: usize,
}

/// Everything one probe produced, for its checks and its failure report.
#[derive(Default)]
struct Exchange {
    sent: Vec<u8>,
    canary_sent: bool,
    interim: Vec<u16>,
    answers: Vec<RawResponse>,
    /// How the connection ended: `None` when the gateway closed it.
    stuck: Option<String>,
    after: Option<Result<RawResponse, String>>,
    requests: Vec<Recorded>,
    refused: Vec<Refused>,
    truncated: usize,
    access: Vec<Value>,
}

/// A gateway and its recording upstream, running the probes of one test.
struct Suite {
    gateway: Gateway,
    recorder: Recorder,
    failures: Vec<String>,
    probes: usize,
}

impl Suite {
    fn start() -> Suite {
        let recorder = Recorder::start();
        let gateway = gateway_for(&recorder);
        Suite {
            gateway,
            recorder,
            failures: Vec::new(),
            probes: 0,
        }
    }

    fn run(&mut self, probes: &[Probe]) {
        let mut names = HashSet::new();
        for probe in probes {
            assert!(names.insert(probe.name), "two probes named {}", probe.name);
            self.run_one(probe);
        }
    }

    /// Panics with every failing probe's report, if any failed.
    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} probes failed:\n\n{}",
            self.failures.len(),
            self.probes,
            self.failures.join("\n\n")
        );
    }

    fn mark(&self) -> Mark {
        Mark {
            requests: self.recorder.requests().len(),
            refused: self.recorder.refused().len(),
            logs: self.gateway.logs().len(),
        }
    }

    fn run_one(&mut self, probe: &Probe) {
        self.probes += 1;
        let tag = Tag(probe.name);
        let mark = self.mark();
        let truncated = self.recorder.truncated().len();
        let mut exchange = Exchange {
            sent: (probe.build)(&tag),
            ..Exchange::default()
        };
        let mut conn = RawConn::connect(self.gateway.proxy_addr()).expect("connect to the gateway");
        if let Err(err) = conn.send(&exchange.sent) {
            exchange.stuck = Some(format!("writing the probe failed: {err}"));
        }
        // Right behind the probe, as the next request on a reused connection
        // would be: whatever the probe leaves unread, the canary meets.
        exchange.canary_sent = conn.send(tag.canary().as_bytes()).is_ok();
        read_until_closed(&mut conn, probe.heads, &mut exchange);
        drop(conn);
        exchange.after = Some(self.follow_up(&tag));

        // Everything the gateway answered is logged before it is counted.
        let mut ids: Vec<String> = exchange
            .answers
            .iter()
            .filter_map(|a| a.header("x-request-id").map(str::to_owned))
            .collect();
        ids.push(tag.id("after"));
        for id in &ids {
            self.wait_for_access_line(id);
        }
        exchange.requests = self.recorder.requests()[mark.requests..].to_vec();
        exchange.refused = self.recorder.refused()[mark.refused..].to_vec();
        exchange.truncated = self.recorder.truncated().len() - truncated;

        let problems = self.check(probe, &tag, &mut exchange, &mark);
        if !problems.is_empty() {
            self.failures.push(report(probe, &problems, &exchange));
        }
    }

    /// A request on a new connection: the gateway is alive and its upstream
    /// connections are not in the middle of someone else's message.
    fn follow_up(&self, tag: &Tag) -> Result<RawResponse, String> {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {}\r\nConnection: close\r\n\r\n",
            tag.path("after"),
            tag.id("after")
        );
        let mut conn = RawConn::connect(self.gateway.proxy_addr())
            .map_err(|e| format!("cannot connect to the gateway: {e}"))?;
        conn.send(request.as_bytes())
            .map_err(|e| format!("cannot write: {e}"))?;
        conn.read_response().map_err(|e| format!("no answer: {e}"))
    }

    fn access_line(&self, id: &str) -> Option<Value> {
        self.gateway
            .logs()
            .into_iter()
            .find(|v| v["msg"] == "access" && v["request_id"] == id)
    }

    /// Polls for the access line of `id` until [`LOG_LAG`] has passed.
    fn wait_for_access_line(&self, id: &str) -> Option<Value> {
        let deadline = Instant::now() + LOG_LAG;
        loop {
            if let Some(line) = self.access_line(id) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn check(&self, probe: &Probe, tag: &Tag, exchange: &mut Exchange, mark: &Mark) -> Vec<String> {
        let mut problems = Vec::new();
        let canary_id = tag.id("canary");
        let probe_id = tag.id("probe");
        let after_id = tag.id("after");

        // The connection ends: the gateway answers or hangs up, never stalls.
        if let Some(stuck) = &exchange.stuck {
            problems.push(format!("the connection did not end cleanly: {stuck}"));
        }
        for answer in &exchange.answers {
            if answer.status >= 500 {
                problems.push(format!("a {} answer", answer.status));
            }
        }
        match (probe.answer, exchange.answers.first().map(|a| a.status)) {
            (Answer::Forwarded, Some(200..=299)) => {}
            (Answer::Forwarded, other) => {
                problems.push(format!("a well-formed probe was answered {other:?}"))
            }
            (Answer::Refused, None | Some(400..=499)) => {}
            (Answer::Refused, Some(status)) => {
                problems.push(format!("a malformed probe was answered {status}"))
            }
            (Answer::Either, None | Some(200..=299 | 400..=499)) => {}
            (Answer::Either, Some(status)) => problems.push(format!("answered {status}")),
        }

        // Every answer from the upstream belongs to the request it went to,
        // and answers come in request order.
        let order = request_ids(&exchange.sent, &canary_id);
        let mut last = None;
        for (index, answer) in exchange.answers.iter().enumerate() {
            let id = answer.header("x-request-id");
            let text = answer.text();
            if answer.status == 200
                && !probe.heads.contains(&index)
                && !text.starts_with("recorded ")
            {
                problems.push(format!(
                    "the answer to {id:?} does not carry the upstream's body: the answers are out of step with their framing"
                ));
            }
            if let Some(served) = text.strip_prefix("recorded ") {
                let upstream_id = served.trim_end().rsplit(" id=").next().unwrap_or("");
                if Some(upstream_id) != id {
                    problems.push(format!(
                        "the answer to {id:?} is the upstream's answer to {upstream_id:?}"
                    ));
                }
            }
            if let Some(position) = id.and_then(|id| order.iter().position(|o| o == id)) {
                if last.is_some_and(|l| position <= l) {
                    problems.push(format!("the answer to {id:?} came out of order"));
                }
                last = Some(position);
            }
        }

        let canary = exchange
            .answers
            .iter()
            .find(|a| a.header("x-request-id") == Some(canary_id.as_str()));
        match (probe.canary, canary) {
            (Canary::Served, None) if !exchange.canary_sent => {
                problems.push("the connection closed before the canary could be written".into())
            }
            (Canary::Served, None) => problems.push("the canary was not answered".into()),
            (Canary::NotServed, Some(answer)) => problems.push(format!(
                "the canary was answered {} after a probe that must end the connection",
                answer.status
            )),
            (_, Some(answer)) if !is_own_answer(answer, &tag.path("canary"), &canary_id) => {
                problems.push(format!(
                    "the canary got {} {:?}",
                    answer.status,
                    answer.text()
                ))
            }
            _ => {}
        }
        match &exchange.after {
            Some(Ok(answer)) if is_own_answer(answer, &tag.path("after"), &after_id) => {}
            Some(Ok(answer)) => problems.push(format!(
                "the follow-up request on a new connection got {} {:?}",
                answer.status,
                answer.text()
            )),
            Some(Err(err)) => problems.push(format!(
                "the follow-up request on a new connection failed (is the gateway alive?): {err}"
            )),
            None => {}
        }

        // What the upstream parsed: only requests the gateway made and logged.
        let mut seen = HashSet::new();
        for request in &exchange.requests {
            let what = format!("{} {}", request.method, request.target);
            if request.header("expect").is_some() {
                problems.push(format!(
                    "the upstream received an Expect header with {what}: {:?}",
                    request.header("expect")
                ));
            }
            let Some(id) = request.request_id() else {
                problems.push(format!(
                    "the upstream received {what} without an x-request-id: a request the gateway did not make"
                ));
                continue;
            };
            if !seen.insert(id.to_owned()) {
                problems.push(format!("the upstream received {id:?} twice"));
            }
            match self.wait_for_access_line(id) {
                None if request.target.contains("SMUGGLED") => problems.push(format!(
                    "SMUGGLED: the upstream received {what} (id {id:?}) and the gateway never logged it"
                )),
                None => problems.push(format!(
                    "the upstream received {what} (id {id:?}) and the gateway never logged it"
                )),
                Some(line) => {
                    let status = line["status"].as_u64().unwrap_or(0);
                    let path = line["path"].as_str().unwrap_or("");
                    if line["method"] != request.method.as_str()
                        || normalise(path) != request.path()
                        || !(200..300).contains(&status)
                    {
                        problems.push(format!(
                            "the upstream received {what} (id {id:?}) but the gateway logged {} {path} {status}",
                            line["method"]
                        ));
                    }
                }
            }
            if id == probe_id && probe.answer == Answer::Refused {
                problems.push(format!("a malformed probe reached the upstream as {what}"));
            }
            if probe.canary == Canary::NotServed && id != probe_id && id != after_id {
                problems.push(format!(
                    "{what} (id {id:?}) reached the upstream after a probe that must end the connection"
                ));
            }
            if let (Some(body), true) = (probe.body, id == probe_id) {
                if request.body != body {
                    problems.push(format!(
                        "the upstream received the body {:?}, not {:?}",
                        String::from_utf8_lossy(&request.body),
                        String::from_utf8_lossy(body)
                    ));
                }
            }
        }
        for refused in &exchange.refused {
            problems.push(format!(
                "the gateway sent the upstream bytes it could not parse on connection {} ({}): {}",
                refused.connection,
                refused.reason,
                escape(&refused.bytes)
            ));
        }

        exchange.access = self.gateway.logs()[mark.logs..]
            .iter()
            .filter(|v| v["msg"] == "access")
            .cloned()
            .collect();
        let forwarded = exchange
            .access
            .iter()
            .filter(|v| {
                v["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
                    && v["path"].as_str().is_some_and(|p| p.starts_with("/p/"))
            })
            .count();
        if forwarded != exchange.requests.len() {
            problems.push(format!(
                "the gateway logged {forwarded} forwarded requests, the upstream parsed {}",
                exchange.requests.len()
            ));
        }
        problems
    }
}

/// Reads answers until the gateway closes the connection (the canary asks it
/// to), or the read timeout says it never will.
fn read_until_closed(conn: &mut RawConn, heads: &[usize], exchange: &mut Exchange) {
    loop {
        let head = heads.contains(&exchange.answers.len());
        // Answers out of step with their framing can leave bytes that are
        // no status line, which the reader refuses by panicking.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| conn.read_outcome_for(head)));
        let Ok(outcome) = outcome else {
            exchange.stuck =
                Some("the answers became unreadable: no status line where one was due".into());
            return;
        };
        match outcome {
            Ok(Outcome::Response(r)) if (100..200).contains(&r.status) => {
                exchange.interim.push(r.status)
            }
            Ok(Outcome::Response(r)) => exchange.answers.push(r),
            Ok(Outcome::Closed) => return,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return
            }
            Err(e) => {
                exchange.stuck = Some(format!("neither answered nor closed: {e}"));
                return;
            }
        }
        if exchange.answers.len() > 64 {
            exchange.stuck = Some("more than 64 answers".into());
            return;
        }
    }
}

/// The recorder's answer to the request for `path` with this id (whatever
/// the method: a probe may legitimately prefix the canary's).
fn is_own_answer(answer: &RawResponse, path: &str, id: &str) -> bool {
    let text = answer.text();
    answer.status == 200
        && answer.header("x-request-id") == Some(id)
        && text.starts_with("recorded ")
        && text.ends_with(&format!(" {path} id={id}\n"))
}

/// The request ids written in `sent`, in order, then the canary's.
fn request_ids(sent: &[u8], canary_id: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(sent).to_ascii_lowercase();
    let original = String::from_utf8_lossy(sent);
    let mut ids = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("x-request-id:") {
        let start = from + at + "x-request-id:".len();
        let value: String = original[start..]
            .chars()
            .take_while(|c| *c != '\r' && *c != '\n')
            .collect();
        ids.push(value.trim().to_owned());
        from = start;
    }
    ids.push(canary_id.to_owned());
    ids
}

/// The path as the gateway forwards it: empty and dot segments removed.
fn normalise(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    let trailing = matches!(path.rsplit('/').next(), Some("" | "." | ".."));
    if trailing && out != "/" {
        out.push('/');
    }
    out
}

fn escape(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).escape_debug().collect();
    if text.len() > 700 {
        format!("\"{}…\" ({} bytes)", &text[..700], bytes.len())
    } else {
        format!("\"{text}\"")
    }
}

fn report(probe: &Probe, problems: &[String], exchange: &Exchange) -> String {
    let mut out = format!(
        "probe {} (expected {:?}, canary {:?}):\n",
        probe.name, probe.answer, probe.canary
    );
    for problem in problems {
        out.push_str(&format!("  - {problem}\n"));
    }
    out.push_str(&format!("  sent: {}\n", escape(&exchange.sent)));
    if !exchange.interim.is_empty() {
        out.push_str(&format!("  interim answers: {:?}\n", exchange.interim));
    }
    for answer in &exchange.answers {
        out.push_str(&format!(
            "  answer: {} id={:?} {}\n",
            answer.status,
            answer.header("x-request-id"),
            escape(&answer.body)
        ));
    }
    if exchange.answers.is_empty() {
        out.push_str("  answer: none, the connection closed\n");
    }
    for request in &exchange.requests {
        out.push_str(&format!(
            "  upstream parsed: {} {} id={:?} on connection {} with a body of {}\n",
            request.method,
            request.target,
            request.request_id(),
            request.connection,
            escape(&request.body)
        ));
    }
    if exchange.truncated > 0 {
        out.push_str(&format!(
            "  upstream connections cut mid-request: {}\n",
            exchange.truncated
        ));
    }
    for line in &exchange.access {
        out.push_str(&format!(
            "  gateway logged: {} {} {} id={}\n",
            line["method"], line["path"], line["status"], line["request_id"]
        ));
    }
    out
}

/// The harness itself: the recorder parses what a naive proxy would pass on
/// as two requests, and refuses what it cannot frame. Without this, the
/// probes below could pass for want of a backend that can be fooled.
#[test]
fn the_recorder_is_a_backend_that_a_smuggled_request_would_fool() {
    let recorder = Recorder::start();
    let mut conn = RawConn::connect(recorder.addr()).unwrap();
    conn.send(
        b"POST /p/x HTTP/1.1\r\nHost: r\r\nX-Request-Id: outer\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n\
          GET /p/SMUGGLED HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let first = conn.read_response().unwrap();
    assert_eq!(first.text(), "recorded POST /p/x id=outer\n");
    let second = conn.read_response().unwrap();
    assert_eq!(second.text(), "recorded GET /p/SMUGGLED id=-\n");
    let targets: Vec<String> = recorder.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/p/x", "/p/SMUGGLED"]);

    for garbage in [
        &b"POST /p/y HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"GET /p/y HTTP/1.1\nHost: r\n\n",
        b"GET /p/y HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(recorder.addr()).unwrap();
        conn.send(garbage).unwrap();
        assert_eq!(conn.read_response().unwrap().status, 400);
    }
    assert_eq!(recorder.refused().len(), 3, "{:?}", recorder.refused());
    assert_eq!(recorder.requests().len(), 2);
}

/// CL.TE and TE.CL: both framing headers, a request hidden in the body.
/// RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and such a
/// message "ought to be handled as an error"; the gateway refuses it.
#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let mut suite = Suite::start();
    suite.run(&[
        refused("cl-te", |t| cl_te(t, "Transfer-Encoding: chunked")),
        refused("te-cl", |t| te_cl(t, "Transfer-Encoding: chunked")),
        refused("te-before-cl", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            let headers = format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                body.len()
            );
            t.request("POST", &headers, &body)
        }),
        refused("cl-zero-te", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            t.request(
                "POST",
                "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                &body,
            )
        }),
        refused("cl-te-get", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            let headers = format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            );
            t.request("GET", &headers, &body)
        }),
        // The smuggled request is a POST whose body swallows the next
        // client's request (the classic "GPOST" prefix).
        refused("cl-te-prefix", |t| {
            let prefix = format!(
                "POST {} HTTP/1.1\r\nHost: gw\r\nContent-Length: 200\r\n\r\nx=",
                t.path("SMUGGLED")
            );
            let body = format!("0\r\n\r\n{prefix}");
            let headers = format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            );
            t.request("POST", &headers, &body)
        }),
        refused("te-cl-prefix", |t| {
            let prefix = format!(
                "POST {} HTTP/1.1\r\nHost: gw\r\nContent-Length: 200\r\n\r\nx=",
                t.path("SMUGGLED")
            );
            let size_line = format!("{:x}\r\n", prefix.len());
            let body = format!("{size_line}{prefix}\r\n0\r\n\r\n");
            let headers = format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                size_line.len()
            );
            t.request("POST", &headers, &body)
        }),
        refused("cl-te-and-te-cl-twice", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            let headers = format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                body.len()
            );
            t.request("POST", &headers, &body)
        }),
    ]);
    suite.finish();
}

/// TE.TE: obfuscated Transfer-Encoding values and field names, each with a
/// Content-Length beside it (refused whatever the obfuscation) and alone
/// (read as chunked when the value is really `chunked`, refused otherwise;
/// either way the gateway and the upstream agree on where the body ends).
#[test]
fn obfuscated_transfer_encodings_are_read_as_chunked_or_refused() {
    let mut suite = Suite::start();
    suite.run(&[
        refused("cl-te-xchunked", |t| {
            cl_te(t, "Transfer-Encoding: xchunked")
        }),
        refused("te-xchunked", |t| te_only(t, "Transfer-Encoding: xchunked")),
        refused("cl-te-leading-space", |t| {
            cl_te(t, "Transfer-Encoding:   chunked")
        }),
        forwarded("te-leading-space", |t| {
            te_only(t, "Transfer-Encoding:   chunked")
        })
        .body(b"hello"),
        refused("cl-te-trailing-space", |t| {
            cl_te(t, "Transfer-Encoding: chunked  ")
        }),
        forwarded("te-trailing-space", |t| {
            te_only(t, "Transfer-Encoding: chunked  ")
        })
        .body(b"hello"),
        refused("cl-te-tab", |t| cl_te(t, "Transfer-Encoding:\tchunked")),
        forwarded("te-tab", |t| te_only(t, "Transfer-Encoding:\tchunked\t")).body(b"hello"),
        refused("cl-te-chunked-identity", |t| {
            cl_te(t, "Transfer-Encoding: chunked, identity")
        }),
        refused("te-chunked-identity", |t| {
            te_only(t, "Transfer-Encoding: chunked, identity")
        }),
        refused("cl-te-identity-chunked", |t| {
            cl_te(t, "Transfer-Encoding: identity, chunked")
        }),
        refused("te-identity-chunked", |t| {
            te_only(t, "Transfer-Encoding: identity, chunked")
        }),
        refused("te-identity", |t| te_only(t, "Transfer-Encoding: identity")),
        refused("te-chunked-chunked", |t| {
            te_only(t, "Transfer-Encoding: chunked, chunked")
        }),
        refused("cl-te-duplicated", |t| {
            cl_te(
                t,
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            )
        }),
        refused("te-duplicated", |t| {
            te_only(
                t,
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            )
        }),
        refused("te-duplicated-identity", |t| {
            te_only(
                t,
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            )
        }),
        refused("te-duplicated-other", |t| {
            te_only(
                t,
                "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
            )
        }),
        // RFC 9112 §5.1: whitespace before the colon must be refused.
        refused("cl-te-space-before-colon", |t| {
            cl_te(t, "Transfer-Encoding : chunked")
        }),
        refused("te-space-before-colon", |t| {
            te_only(t, "Transfer-Encoding : chunked")
        }),
        refused("cl-te-tab-before-colon", |t| {
            cl_te(t, "Transfer-Encoding\t: chunked")
        }),
        refused("te-tab-before-colon", |t| {
            te_only(t, "Transfer-Encoding\t: chunked")
        }),
        refused("cl-te-mixed-case", |t| {
            cl_te(t, "tRaNsFeR-eNcOdInG: cHuNkEd")
        }),
        forwarded("te-mixed-case", |t| {
            te_only(t, "tRaNsFeR-eNcOdInG: cHuNkEd")
        })
        .body(b"hello"),
        refused("cl-te-parameter", |t| {
            cl_te(t, "Transfer-Encoding: chunked;foo")
        }),
        refused("te-parameter", |t| {
            te_only(t, "Transfer-Encoding: chunked;foo")
        }),
        refused("te-quoted", |t| {
            te_only(t, "Transfer-Encoding: \"chunked\"")
        }),
        refused("te-leading-comma", |t| {
            te_only(t, "Transfer-Encoding: ,chunked")
        }),
        refused("cl-te-empty", |t| cl_te(t, "Transfer-Encoding: ")),
        refused("te-vertical-tab", |t| {
            te_only(t, "Transfer-Encoding:\u{b}chunked")
        }),
        refused("te-non-ascii-space", |t| {
            let mut bytes = t.head("POST", "").into_bytes();
            bytes.truncate(bytes.len() - 2);
            bytes.extend_from_slice(b"Transfer-Encoding: \xa0chunked\r\n\r\n0\r\n\r\n");
            bytes.extend_from_slice(t.smuggled().as_bytes());
            bytes
        }),
        // `Transfer_Encoding` is a different (unknown) field: the body is
        // framed by its Content-Length, smuggled request and all.
        forwarded("cl-te-underscore", |t| {
            cl_te(t, "Transfer_Encoding: chunked")
        }),
    ]);
    suite.finish();
}

/// Content-Length variants (RFC 9112 §6.3, RFC 9110 §8.6): one value of
/// digits frames the body exactly; anything else is refused, except that a
/// list of identical values may be read as that one value.
#[test]
fn content_length_frames_exactly_or_is_refused() {
    let mut suite = Suite::start();
    suite.run(&[
        forwarded("cl-plain", |t| with_length(t, "5", "hello")).body(b"hello"),
        either("cl-duplicate-same", |t| {
            t.request(
                "POST",
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                "hello",
            )
        }),
        refused("cl-duplicate-different", |t| {
            t.request(
                "POST",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "hello!",
            )
        }),
        either("cl-list-same", |t| with_length(t, "1,1", "x")),
        refused("cl-list-different", |t| with_length(t, "5, 6", "hello!")),
        refused("cl-plus", |t| with_length(t, "+5", "hello")),
        refused("cl-minus", |t| with_length(t, "-1", "hello")),
        refused("cl-minus-zero", |t| with_length(t, "-0", "hello")),
        forwarded("cl-padded", |t| with_length(t, "  5  ", "hello")).body(b"hello"),
        refused("cl-hex", |t| with_length(t, "0x5", "hello")),
        refused("cl-huge", |t| {
            with_length(t, "99999999999999999999999", "hello")
        }),
        refused("cl-u64-max", |t| {
            with_length(t, "18446744073709551615", "hello")
        }),
        refused("cl-over-the-body-limit", |t| {
            with_length(t, "20000000", "hello")
        }),
        forwarded("cl-leading-zeros", |t| with_length(t, "0005", "hello")).body(b"hello"),
        refused("cl-non-digit", |t| with_length(t, "5a", "hello")),
        refused("cl-decimal", |t| with_length(t, "5.0", "hello")),
        refused("cl-two-numbers", |t| with_length(t, "5 5", "hello")),
        refused("cl-empty", |t| with_length(t, "", "hello")),
        // What follows a body of the declared length is the client's next
        // request, and is logged as one.
        forwarded("cl-zero-then-request", |t| {
            with_length(t, "0", &t.smuggled())
        }),
        forwarded("cl-then-request", |t| {
            format!(
                "{}{}",
                String::from_utf8(with_length(t, "5", "hello")).unwrap(),
                t.smuggled()
            )
            .into_bytes()
        })
        .body(b"hello"),
        // A body shorter than declared takes the canary with it.
        forwarded("cl-shorter-than-declared", |t| with_length(t, "3", "hello"))
            .canary(Canary::Any)
            .body(b"hel"),
        refused("cl-longer-than-sent", |t| with_length(t, "500", "hello")),
        forwarded("cl-get-with-body", |t| {
            let body = t.smuggled();
            t.request("GET", &format!("Content-Length: {}\r\n", body.len()), &body)
        }),
    ]);
    suite.finish();
}

/// Chunk grammar (RFC 9112 §7.1): sizes, line ends, extensions, trailers.
#[test]
fn chunked_bodies_are_parsed_strictly() {
    let mut suite = Suite::start();
    suite.run(&[
        forwarded("chunk-valid", |t| chunked(t, "5\r\nhello\r\n0\r\n\r\n")).body(b"hello"),
        forwarded("chunk-many", |t| {
            chunked(
                t,
                "1\r\nh\r\n1\r\ne\r\n1\r\nl\r\n1\r\nl\r\n1\r\no\r\n0\r\n\r\n",
            )
        })
        .body(b"hello"),
        forwarded("chunk-upper-hex", |t| {
            chunked(t, "A\r\n0123456789\r\n0\r\n\r\n")
        })
        .body(b"0123456789"),
        forwarded("chunk-leading-zeros", |t| {
            chunked(t, "0005\r\nhello\r\n000\r\n\r\n")
        })
        .body(b"hello"),
        forwarded("chunk-extension", |t| {
            chunked(t, "5;name=value\r\nhello\r\n0\r\n\r\n")
        })
        .body(b"hello"),
        forwarded("chunk-extension-quoted", |t| {
            chunked(t, "5;name=\"a;b\"\r\nhello\r\n0;last\r\n\r\n")
        })
        .body(b"hello"),
        forwarded("chunk-trailers", |t| {
            chunked(t, "5\r\nhello\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n")
        })
        .body(b"hello"),
        // Chunk data is data, even when it looks like the end and a request.
        forwarded("chunk-data-looks-like-a-request", |t| {
            let inner = format!("0\r\n\r\n{}", t.smuggled());
            chunked(t, &format!("{}0\r\n\r\n", chunk(&inner)))
        }),
        forwarded("chunk-zero-then-request", |t| {
            chunked(t, &format!("0\r\n\r\n{}", t.smuggled()))
        }),
        refused("chunk-bad-hex", |t| chunked(t, "zz\r\nhello\r\n0\r\n\r\n")),
        refused("chunk-size-overflow", |t| {
            chunked(t, "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-size-17-digits", |t| {
            chunked(t, "10000000000000005\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-size-u64-max", |t| {
            chunked(t, "ffffffffffffffff\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-negative-size", |t| {
            chunked(t, "-5\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-plus-size", |t| {
            chunked(t, "+5\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-0x-size", |t| chunked(t, "0x5\r\nhello\r\n0\r\n\r\n")),
        refused("chunk-space-before-size", |t| {
            chunked(t, " 5\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-empty-size", |t| chunked(t, "\r\nhello\r\n0\r\n\r\n")),
        either("chunk-space-after-size", |t| {
            chunked(t, "5 \r\nhello\r\n0\r\n\r\n")
        })
        .body(b"hello"),
        refused("chunk-no-crlf-after-data", |t| {
            chunked(t, "5\r\nhello0\r\n\r\n")
        }),
        refused("chunk-data-longer-than-size", |t| {
            chunked(t, "3\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-data-shorter-than-size", |t| {
            chunked(t, "8\r\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-bare-lf-after-size", |t| {
            chunked(t, "5\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-bare-lf-after-data", |t| {
            chunked(t, "5\r\nhello\n0\r\n\r\n")
        }),
        refused("chunk-bare-lf-last-chunk", |t| {
            chunked(t, "5\r\nhello\r\n0\n\n")
        }),
        refused("chunk-bare-lf-only", |t| chunked(t, "0\n\n")),
        refused("chunk-bare-cr-after-size", |t| {
            chunked(t, "5\rhello\r\n0\r\n\r\n")
        }),
        refused("chunk-bare-lf-in-extension", |t| {
            chunked(t, "5;a\nhello\r\n0\r\n\r\n")
        }),
        refused("chunk-nul-in-extension", |t| {
            chunked(t, "5;\0\r\nhello\r\n0\r\n\r\n")
        }),
        // No last chunk: the canary is read as a chunk size.
        refused("chunk-last-missing", |t| chunked(t, "5\r\nhello\r\n")),
        // No empty line after the last chunk: the canary's lines are read as
        // trailer fields, so the canary is gone but the body is complete.
        forwarded("chunk-end-missing", |t| chunked(t, "5\r\nhello\r\n0\r\n"))
            .canary(Canary::NotServed)
            .body(b"hello"),
        // A trailer line holding a bare LF and a request line.
        either("chunk-trailer-bare-lf", |t| {
            chunked(
                t,
                &format!(
                    "5\r\nhello\r\n0\r\nX-Trailer: a\nGET {} HTTP/1.1\r\n\r\n",
                    t.path("SMUGGLED")
                ),
            )
        }),
    ]);
    suite.finish();
}

/// A chunked body that stops coming is answered 408 with `Connection:
/// close`, and the connection really ends (RFC 9112 §9.6): what the client
/// writes afterwards (the rest of the chunk, the last chunk and a request
/// behind them) is never read as a request.
#[test]
fn a_stalled_chunked_body_is_answered_408_and_ends_the_connection() {
    let recorder = Recorder::start();
    let gateway = gateway_for(&recorder);
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    conn.send(
        b"POST /p/stalled/probe HTTP/1.1\r\nHost: gw\r\nX-Request-Id: stalled-probe\r\n\
          Transfer-Encoding: chunked\r\n\r\n10\r\nhello",
    )
    .unwrap();
    let answer = conn.read_response().expect("an answer to the stalled body");
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(answer.header("connection"), Some("close"));
    // Writing may fail once the gateway has closed; that is the point.
    let _ = conn.send(
        b"0123456789a\r\n0\r\n\r\n\
          GET /p/stalled/SMUGGLED HTTP/1.1\r\nHost: gw\r\nX-Request-Id: stalled-SMUGGLED\r\n\
          Connection: close\r\n\r\n",
    );
    let after = conn.read_outcome();
    let received: Vec<String> = recorder
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    match after {
        Ok(Outcome::Closed) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(Outcome::Response(answer)) => panic!(
            "after its 408 with `Connection: close` the gateway read on and answered {} {:?}; \
             the upstream received {received:?}",
            answer.status,
            answer.text()
        ),
        Err(e) => panic!(
            "after its 408 with `Connection: close` the connection stayed open: {e}; \
             the upstream received {received:?}"
        ),
    }
    assert!(received.is_empty(), "the upstream received {received:?}");
}

/// Line ends and field syntax (RFC 9112 §2.2, §5): bare CR, bare LF,
/// obs-fold, NUL and other controls, malformed field names, the forms of the
/// request target and the request line's separators.
#[test]
fn line_ends_and_header_syntax_never_desynchronise() {
    let mut suite = Suite::start();
    suite.run(&[
        // A recipient may take a bare LF as a line end (§2.2).
        either("request-line-bare-lf", |t| {
            format!(
                "GET {} HTTP/1.1\nHost: gw\nX-Request-Id: {}\n\n",
                t.path("probe"),
                t.id("probe")
            )
            .into_bytes()
        }),
        either("header-bare-lf", |t| {
            format!(
                "GET {} HTTP/1.1\r\nHost: gw\nX-Request-Id: {}\r\n\r\n",
                t.path("probe"),
                t.id("probe")
            )
            .into_bytes()
        }),
        either("bare-lf-hides-te", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            let headers = format!(
                "Content-Length: {}\r\nX-Note: x\nTransfer-Encoding: chunked\r\n",
                body.len()
            );
            t.request("POST", &headers, &body)
        }),
        // A bare CR must be refused or read as a space (§2.2).
        refused("request-line-bare-cr", |t| {
            format!(
                "GET {} HTTP/1.1\rHost: gw\r\nX-Request-Id: {}\r\n\r\n",
                t.path("probe"),
                t.id("probe")
            )
            .into_bytes()
        }),
        either("header-bare-cr", |t| t.request("GET", "X-Note: a\rb\r\n", "")),
        either("bare-cr-hides-te", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            let headers = format!(
                "Content-Length: {}\r\nX-Note: x\rTransfer-Encoding: chunked\r\n",
                body.len()
            );
            t.request("POST", &headers, &body)
        }),
        either("bare-cr-in-target", |t| {
            line(t, &format!("GET {}\rx HTTP/1.1", t.path("probe")), "")
        }),
        // obs-fold must be refused or replaced by a space (§5.2).
        either("obs-fold", |t| t.request("GET", "X-Folded: a\r\n b\r\n", "")),
        either("obs-fold-tab", |t| t.request("GET", "X-Folded: a\r\n\tb\r\n", "")),
        either("obs-fold-hides-te", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            let headers = format!(
                "Content-Length: {}\r\nX-Note: x\r\n Transfer-Encoding: chunked\r\n",
                body.len()
            );
            t.request("POST", &headers, &body)
        }),
        refused("obs-fold-te-value", |t| {
            cl_te(t, "Transfer-Encoding:\r\n chunked")
        }),
        refused("obs-fold-cl-value", |t| {
            t.request("POST", "Content-Length:\r\n 5\r\n", "hello")
        }),
        // Whitespace before the first field line: refuse, or drop the line (§2.2).
        either("space-before-first-header", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            format!(
                "POST {} HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: gw\r\nX-Request-Id: {}\r\nContent-Length: {}\r\n\r\n{body}",
                t.path("probe"),
                t.id("probe"),
                body.len()
            )
            .into_bytes()
        }),
        refused("nul-in-header-value", |t| t.request("GET", "X-Note: a\0b\r\n", "")),
        refused("nul-in-header-name", |t| t.request("GET", "X-No\0te: a\r\n", "")),
        refused("nul-in-target", |t| {
            line(t, &format!("GET {}\0x HTTP/1.1", t.path("probe")), "")
        }),
        refused("nul-in-cl", |t| with_length(t, "5\0", "hello")),
        refused("del-in-header-value", |t| {
            t.request("GET", "X-Note: a\u{7f}b\r\n", "")
        }),
        refused("escape-in-header-value", |t| {
            t.request("GET", "X-Note: a\u{1b}b\r\n", "")
        }),
        either("obs-text-in-header-value", |t| {
            let mut bytes = t.head("GET", "").into_bytes();
            bytes.truncate(bytes.len() - 2);
            bytes.extend_from_slice(b"X-Note: caf\xe9\r\n\r\n");
            bytes
        }),
        refused("space-in-header-name", |t| t.request("GET", "X Note: a\r\n", "")),
        refused("cl-space-before-colon", |t| {
            t.request("POST", "Content-Length : 5\r\n", "hello")
        }),
        refused("header-without-colon", |t| t.request("GET", "X-Note a\r\n", "")),
        refused("empty-header-name", |t| t.request("GET", ": a\r\n", "")),
        refused("non-token-header-name", |t| t.request("GET", "X(Note): a\r\n", "")),
        refused("missing-host", |t| {
            format!(
                "GET {} HTTP/1.1\r\nX-Request-Id: {}\r\n\r\n",
                t.path("probe"),
                t.id("probe")
            )
            .into_bytes()
        }),
        refused("duplicate-host", |t| t.request("GET", "Host: other\r\n", "")),
        forwarded("absolute-form", |t| {
            line(t, &format!("GET http://gw{} HTTP/1.1", t.path("probe")), "")
        }),
        forwarded("absolute-form-other-authority", |t| {
            line(
                t,
                &format!("GET http://elsewhere.test:81{} HTTP/1.1", t.path("probe")),
                "",
            )
        }),
        either("request-line-double-space", |t| {
            line(t, &format!("GET  {} HTTP/1.1", t.path("probe")), "")
        }),
        either("request-line-tabs", |t| {
            line(t, &format!("GET\t{}\tHTTP/1.1", t.path("probe")), "")
        }),
        either("request-line-trailing-space", |t| {
            line(t, &format!("GET {} HTTP/1.1 ", t.path("probe")), "")
        }),
        either("request-line-space-in-target", |t| {
            line(t, &format!("GET {} x HTTP/1.1", t.path("probe")), "")
        }),
        // At least one empty line before a request line should be ignored (§2.2).
        either("empty-line-before-request", |t| {
            let mut bytes = b"\r\n".to_vec();
            bytes.extend(t.request("GET", "", ""));
            bytes
        }),
    ]);
    suite.finish();
}

/// HTTP versions: HTTP/1.0 with and without keep-alive (§9.3), with
/// Transfer-Encoding (RFC 9112 §6.1: faulty framing, close after),
/// HTTP/0.9-looking lines and versions the gateway does not speak on an
/// HTTP/1 connection.
#[test]
fn http_versions_other_than_1_1_never_desynchronise() {
    let mut suite = Suite::start();
    suite.run(&[
        // Without keep-alive an HTTP/1.0 connection ends after the answer
        // (RFC 9112 §9.3): nothing behind the request is served, not even a
        // request that came in the same write.
        forwarded("http10-get", |t| {
            let mut bytes = line(t, &format!("GET {} HTTP/1.0", t.path("probe")), "");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        })
        .canary(Canary::NotServed),
        forwarded("http10-keep-alive", |t| {
            line(
                t,
                &format!("GET {} HTTP/1.0", t.path("probe")),
                "Connection: keep-alive\r\n",
            )
        })
        .canary(Canary::Served),
        forwarded("http10-post", |t| {
            let mut bytes = line(
                t,
                &format!("POST {} HTTP/1.0", t.path("probe")),
                "Content-Length: 5\r\n",
            );
            bytes.extend_from_slice(b"hello");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        })
        .canary(Canary::NotServed)
        .body(b"hello"),
        either("http10-te", |t| {
            let mut bytes = line(
                t,
                &format!("POST {} HTTP/1.0", t.path("probe")),
                "Transfer-Encoding: chunked\r\n",
            );
            bytes.extend(format!("0\r\n\r\n{}", t.smuggled()).into_bytes());
            bytes
        })
        .canary(Canary::NotServed),
        either("http10-te-and-cl", |t| {
            let body = format!("0\r\n\r\n{}", t.smuggled());
            let mut bytes = line(
                t,
                &format!("POST {} HTTP/1.0", t.path("probe")),
                &format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                    body.len()
                ),
            );
            bytes.extend(body.into_bytes());
            bytes
        })
        .canary(Canary::NotServed),
        either("http10-post-without-length", |t| {
            let mut bytes = line(t, &format!("POST {} HTTP/1.0", t.path("probe")), "");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        }),
        refused("http09", |t| {
            format!("GET {}\r\n\r\n", t.path("probe")).into_bytes()
        }),
        refused("http09-with-headers", |t| {
            line(t, &format!("GET {}", t.path("probe")), "")
        }),
        // A higher minor version should be read as HTTP/1.1 (RFC 9110 §2.5).
        either("http12", |t| {
            line(t, &format!("GET {} HTTP/1.2", t.path("probe")), "")
        }),
        refused("http20-request-line", |t| {
            line(t, &format!("GET {} HTTP/2.0", t.path("probe")), "")
        }),
        refused("http2-preface", |_| {
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
        }),
        refused("http3-request-line", |t| {
            line(t, &format!("GET {} HTTP/3", t.path("probe")), "")
        }),
        refused("http-lowercase", |t| {
            line(t, &format!("GET {} http/1.1", t.path("probe")), "")
        }),
        refused("http-leading-zero", |t| {
            line(t, &format!("GET {} HTTP/01.1", t.path("probe")), "")
        }),
        refused("http-major-only", |t| {
            line(t, &format!("GET {} HTTP/1", t.path("probe")), "")
        }),
        refused("http-no-version", |t| {
            line(t, &format!("GET {} ", t.path("probe")), "")
        }),
    ]);
    suite.finish();
}

/// The other direction of RFC 9112 §6.1: a server must not answer an
/// HTTP/1.0 request with a Transfer-Encoding, which an HTTP/1.0 client or
/// proxy cannot read (it would take the chunk framing for body, or, on a
/// kept-alive connection, never find the end of the answer).
#[test]
fn an_http10_request_never_gets_a_chunked_answer() {
    let echo = Echo::start();
    let gateway = echo_gateway(&echo);
    for request in [
        "GET /p/bytes?n=10 HTTP/1.0\r\nX-Request-Id: http10-streamed\r\n\r\n",
        "GET /p/bytes?n=10 HTTP/1.0\r\nX-Request-Id: http10-streamed-ka\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
        conn.send(request.as_bytes()).unwrap();
        let answer = conn.read_response().expect("an answer");
        assert_eq!(answer.status, 200, "{request:?}: {}", answer.text());
        assert_eq!(
            answer.header("transfer-encoding"),
            None,
            "{request:?} was answered {:?}",
            answer.headers
        );
        assert_eq!(answer.body, b"xxxxxxxxxx", "{request:?}");
    }
}

/// Upgrades on plain routes: the gateway does not upgrade, so it forwards the
/// request without the upgrade and ends the connection; nothing the client
/// sends after the head (meant for the new protocol) reaches the upstream as
/// a request.
#[test]
fn upgrade_requests_serve_nothing_after_the_head() {
    let mut suite = Suite::start();
    suite.run(&[
        forwarded("upgrade-websocket", |t| {
            let headers = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
                           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
            t.request("GET", headers, &t.smuggled())
        })
        .canary(Canary::NotServed)
        .body(b""),
        forwarded("upgrade-h2c", |t| {
            let headers = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                           HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
            t.request("GET", headers, &t.smuggled())
        })
        .canary(Canary::NotServed)
        .body(b""),
        forwarded("upgrade-h2c-without-connection", |t| {
            t.request("GET", "Upgrade: h2c\r\n", &t.smuggled())
        })
        .canary(Canary::NotServed)
        .body(b""),
        forwarded("upgrade-websocket-without-connection", |t| {
            t.request("GET", "Upgrade: websocket\r\n", &t.smuggled())
        })
        .canary(Canary::NotServed)
        .body(b""),
        forwarded("upgrade-unknown-protocol", |t| {
            t.request(
                "GET",
                "Connection: Upgrade\r\nUpgrade: foo/1\r\n",
                &t.smuggled(),
            )
        })
        .canary(Canary::NotServed)
        .body(b""),
        forwarded("upgrade-websocket-with-length", |t| {
            let body = t.smuggled();
            let headers = format!(
                "Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: {}\r\n",
                body.len()
            );
            t.request("POST", &headers, &body)
        })
        .canary(Canary::NotServed)
        .body(b""),
        either("upgrade-websocket-chunked", |t| {
            let body = format!("{}0\r\n\r\n{}", chunk("hello"), t.smuggled());
            t.request(
                "POST",
                "Connection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n",
                &body,
            )
        })
        .canary(Canary::NotServed),
        either("upgrade-http10", |t| {
            let mut bytes = line(
                t,
                &format!("GET {} HTTP/1.0", t.path("probe")),
                "Connection: Upgrade\r\nUpgrade: websocket\r\n",
            );
            bytes.extend(t.smuggled().into_bytes());
            bytes
        })
        .canary(Canary::NotServed),
        // `Connection: upgrade` without an Upgrade field asks for nothing.
        forwarded("connection-upgrade-alone", |t| t.request("GET", "Connection: Upgrade\r\n", ""))
            .canary(Canary::Any),
        refused("connect-method", |t| {
            let mut bytes = format!(
                "CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\nX-Request-Id: {}\r\n\r\n",
                t.id("probe")
            )
            .into_bytes();
            bytes.extend(t.smuggled().into_bytes());
            bytes
        }),
    ]);
    suite.finish();
}

/// Pipelining (RFC 9112 §9.3.2): several requests in one write are each
/// routed, logged and answered in order, each answer framed for its own
/// request; after a request refused for its framing, or one that ends the
/// connection (`Connection: close`, §9.6), nothing more is served on it.
#[test]
fn pipelined_requests_are_each_routed_logged_and_answered_in_order() {
    let mut suite = Suite::start();
    suite.run(&[
        forwarded("pipeline-three", |t| {
            format!("{}{}{}", t.get("probe"), t.get("two"), t.get("three")).into_bytes()
        }),
        forwarded("pipeline-twenty", |t| {
            let mut text = t.get("probe");
            for i in 1..20 {
                text.push_str(&t.get(&format!("n{i}")));
            }
            text.into_bytes()
        }),
        forwarded("pipeline-methods", |t| {
            let mut text = t.head("DELETE", "");
            for method in ["PUT", "OPTIONS", "PATCH"] {
                text.push_str(&format!(
                    "{method} {} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {}\r\nContent-Length: 2\r\n\r\nok",
                    t.path(method),
                    t.id(method)
                ));
            }
            text.into_bytes()
        }),
        forwarded("pipeline-after-length", |t| {
            let mut bytes = with_length(t, "5", "hello");
            bytes.extend(t.get("next").into_bytes());
            bytes
        })
        .body(b"hello"),
        forwarded("pipeline-after-chunked", |t| {
            let mut bytes = chunked(t, "5\r\nhello\r\n0\r\n\r\n");
            bytes.extend(t.get("next").into_bytes());
            bytes
        })
        .body(b"hello"),
        forwarded("pipeline-get-with-a-request-as-body", |t| {
            let body = t.smuggled();
            let mut text = t.head("GET", &format!("Content-Length: {}\r\n", body.len()));
            text.push_str(&body);
            text.push_str(&t.get("next"));
            text.into_bytes()
        }),
        // RFC 9112 §9.6: after a request with `Connection: close` the server
        // must not process any further request on the connection.
        forwarded("pipeline-after-connection-close", |t| {
            let mut bytes = t.request("GET", "Connection: close\r\n", "");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        })
        .canary(Canary::NotServed),
        // Each answer is framed by its own request: a HEAD answer has no
        // body, whatever its neighbours are.
        forwarded("pipeline-head-then-get", |t| {
            format!("{}{}", t.head("HEAD", ""), t.get("next")).into_bytes()
        })
        .heads(&[0]),
        forwarded("pipeline-get-then-head", |t| {
            let head = format!(
                "HEAD {} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {}\r\n\r\n",
                t.path("head"),
                t.id("head")
            );
            format!("{}{head}{}", t.get("probe"), t.get("next")).into_bytes()
        })
        .heads(&[1]),
        // A well-framed request the gateway answers itself keeps the
        // connection usable.
        either("pipeline-after-404", |t| {
            format!(
                "GET /nowhere-{} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {}\r\n\r\n{}",
                t.0,
                t.id("probe"),
                t.get("next")
            )
            .into_bytes()
        })
        .canary(Canary::Served),
        refused("pipeline-after-bad-length", |t| {
            let mut bytes = with_length(t, "abc", "");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        }),
        refused("pipeline-after-cl-te", |t| {
            let mut bytes = cl_te(t, "Transfer-Encoding: chunked");
            bytes.extend(t.get("next").into_bytes());
            bytes
        }),
        refused("pipeline-after-bad-chunk", |t| {
            let mut bytes = chunked(t, "zz\r\nhello\r\n0\r\n\r\n");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        }),
        refused("pipeline-after-too-large", |t| {
            let mut bytes = with_length(t, "20000000", "");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        }),
        refused("pipeline-after-bad-version", |t| {
            let mut bytes = line(t, &format!("GET {} HTTP/1.2.3", t.path("probe")), "");
            bytes.extend(t.smuggled().into_bytes());
            bytes
        }),
        // The last request's head is cut short; the canary's request line
        // lands among its fields, which makes it malformed.
        forwarded("pipeline-partial-last", |t| {
            let third = t.get("third");
            format!(
                "{}{}{}",
                t.get("probe"),
                t.get("two"),
                &third[..third.len() - 2]
            )
            .into_bytes()
        })
        .canary(Canary::Any),
    ]);
    suite.finish();
}

/// An answer is framed by its own request, not by the one read after it: a
/// GET answered while the HEAD pipelined behind it has already been read
/// keeps its body. Without it the client takes the next answer's bytes for
/// the GET's body, and every answer after that is out of step.
#[test]
fn an_answer_is_framed_by_its_own_request_not_the_next_one() {
    let recorder = Recorder::start();
    let gateway = gateway_for(&recorder);
    let mut conn = RawConn::connect(gateway.proxy_addr()).unwrap();
    conn.send(
        b"GET /p/framing/get HTTP/1.1\r\nHost: gw\r\nX-Request-Id: framing-get\r\n\r\n\
          HEAD /p/framing/head HTTP/1.1\r\nHost: gw\r\nX-Request-Id: framing-head\r\n\r\n",
    )
    .unwrap();
    let get = conn.read_response().expect("the GET's answer");
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(
        get.text(),
        "recorded GET /p/framing/get id=framing-get\n",
        "the GET's answer ({:?}) does not carry its own body",
        get.headers
    );
    let Outcome::Response(head) = conn.read_outcome_for(true).expect("the HEAD's answer") else {
        panic!("the connection closed before the HEAD was answered");
    };
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("x-request-id"), Some("framing-head"));
}

/// `Expect: 100-continue` without a body: there is nothing to continue, so the
/// gateway answers the request and keeps the field to itself.
#[test]
fn expect_100_continue_without_a_body_is_answered_and_not_forwarded() {
    // fails until Expect is handled by the gateway
    let mut suite = Suite::start();
    suite.run(&[
        forwarded("expect-get", |t| {
            t.request("GET", "Expect: 100-continue\r\n", "")
        }),
        forwarded("expect-post-empty", |t| {
            t.request("POST", "Content-Length: 0\r\nExpect: 100-continue\r\n", "")
        })
        .body(b""),
        forwarded("expect-get-then-request", |t| {
            let mut bytes = t.request("GET", "Expect: 100-continue\r\n", "");
            bytes.extend(t.get("next").into_bytes());
            bytes
        }),
    ]);
    suite.finish();
}

/// `Expect: 100-continue` with a body: the gateway answers `100 Continue`
/// itself, reads the body, and forwards the request without the field.
#[test]
fn expect_100_continue_with_a_body_gets_100_then_the_final_answer() {
    // fails until Expect is handled by the gateway
    let mut suite = Suite::start();
    // The client waits for the interim answer before it sends the body.
    let mut problems = Vec::new();
    let mut conn = RawConn::connect(suite.gateway.proxy_addr()).unwrap();
    conn.send(
        b"POST /p/expect-wait/probe HTTP/1.1\r\nHost: gw\r\nX-Request-Id: expect-wait-probe\r\n\
          Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    match conn.read_outcome() {
        Ok(Outcome::Response(interim)) if interim.status == 100 => {
            conn.send(b"hello").unwrap();
            match conn.read_response() {
                Ok(answer)
                    if is_own_answer(&answer, "/p/expect-wait/probe", "expect-wait-probe") => {}
                Ok(answer) => problems.push(format!(
                    "the final answer was {} {:?}",
                    answer.status,
                    answer.text()
                )),
                Err(e) => problems.push(format!("no final answer: {e}")),
            }
        }
        other => problems.push(format!("no 100 Continue before the body: {other:?}")),
    }
    for request in suite.recorder.requests() {
        if request.body != b"hello" {
            problems.push(format!("the upstream received the body {:?}", request.body));
        }
        if let Some(expect) = request.header("expect") {
            problems.push(format!("the upstream received `Expect: {expect}`"));
        }
    }
    suite.probes += 1;
    // Its access line is in before the table's probes start counting.
    suite.wait_for_access_line("expect-wait-probe");
    if !problems.is_empty() {
        suite.failures.push(format!(
            "expect-wait (100-continue, body sent after the interim answer):\n  - {}",
            problems.join("\n  - ")
        ));
    }

    // Clients may also send the body without waiting (RFC 9110 §10.1.1).
    suite.run(&[
        forwarded("expect-eager-body", |t| {
            t.request(
                "POST",
                "Content-Length: 5\r\nExpect: 100-continue\r\n",
                "hello",
            )
        })
        .body(b"hello"),
        forwarded("expect-eager-chunked", |t| {
            t.request(
                "POST",
                "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            )
        })
        .body(b"hello"),
        forwarded("expect-mixed-case", |t| {
            t.request(
                "PUT",
                "Content-Length: 5\r\nexpect: 100-Continue\r\n",
                "hello",
            )
        })
        .body(b"hello"),
    ]);
    suite.finish();
}

/// `Expect` with other values: the gateway may refuse them with 417 (RFC 9110
/// §10.1.1) or ignore them, but never forwards them nor fails with a 5xx.
#[test]
fn expect_with_other_values_is_never_forwarded() {
    // fails until Expect is handled by the gateway
    let mut suite = Suite::start();
    suite.run(&[
        either("expect-other-get", |t| {
            t.request("GET", "Expect: x-custom\r\n", "")
        }),
        either("expect-other-post", |t| {
            t.request("POST", "Content-Length: 5\r\nExpect: x-custom\r\n", "hello")
        }),
        either("expect-list", |t| {
            t.request(
                "POST",
                "Content-Length: 5\r\nExpect: 100-continue, x-custom\r\n",
                "hello",
            )
        }),
        either("expect-empty", |t| t.request("GET", "Expect: \r\n", "")),
        either("expect-http10", |t| {
            let mut bytes = line(
                t,
                &format!("POST {} HTTP/1.0", t.path("probe")),
                "Content-Length: 5\r\nExpect: 100-continue\r\n",
            );
            bytes.extend_from_slice(b"hello");
            bytes
        }),
    ]);
    suite.finish();
}
