//! The most recent access-log records, for the admin console's live log:
//! a ring bounded in bytes, searchable by status, route, user, client and
//! request id, and a broadcast of each new record for streaming.
//!
//! Each entry keeps the record's JSON text exactly as the access log writes
//! it, so the same truncation and query redaction apply.

use std::collections::VecDeque;
use std::fmt;
use std::mem::size_of;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Deserialize;
use tokio::sync::broadcast;

/// The ring's size when the configuration does not say.
pub const DEFAULT_RECENT_LOG_BYTES: usize = 4 * 1024 * 1024;

/// New records a subscriber may fall behind by before it skips some.
const SUBSCRIBER_BACKLOG: usize = 512;

/// What one heap block costs beyond what was asked for (glibc: an 8-byte
/// header, rounded up to 16 bytes).
const ALLOCATION_OVERHEAD: usize = 16;

/// One access-log record.
pub struct Entry {
    /// The JSON line, then the request id, the route and the user: one
    /// allocation for all the text.
    text: Box<str>,
    json_len: u32,
    request_id_len: u32,
    route_len: u32,
    /// `None` is stored as `u32::MAX`.
    user_len: u32,
    status: u16,
    client: IpAddr,
}

impl Entry {
    /// A record: its JSON line (one object, no newline) and the fields it
    /// can be searched by. Values longer than 4 GiB do not occur: access
    /// lines are bounded.
    pub fn new(
        json: &str,
        status: u16,
        request_id: &str,
        route: Option<&str>,
        user: Option<&str>,
        client: IpAddr,
    ) -> Entry {
        let route = route.unwrap_or("");
        let mut text = String::with_capacity(
            json.len() + request_id.len() + route.len() + user.map_or(0, str::len),
        );
        for part in [json, request_id, route, user.unwrap_or("")] {
            text.push_str(part);
        }
        let len = |s: &str| u32::try_from(s.len()).unwrap_or(u32::MAX - 1);
        Entry {
            text: text.into_boxed_str(),
            json_len: len(json),
            request_id_len: len(request_id),
            route_len: len(route),
            user_len: user.map_or(u32::MAX, len),
            status,
            client,
        }
    }

    fn part(&self, from: u32, len: u32) -> &str {
        let from = from as usize;
        self.text.get(from..from + len as usize).unwrap_or("")
    }

    /// The access-log line, a JSON object.
    pub fn json(&self) -> &str {
        self.part(0, self.json_len)
    }

    pub fn request_id(&self) -> &str {
        self.part(self.json_len, self.request_id_len)
    }

    /// The matched route's id, if a route matched.
    pub fn route(&self) -> Option<&str> {
        let route = self.part(self.json_len + self.request_id_len, self.route_len);
        (!route.is_empty()).then_some(route)
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        (self.user_len != u32::MAX).then(|| {
            self.part(
                self.json_len + self.request_id_len + self.route_len,
                self.user_len,
            )
        })
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The client address, as resolved through trusted proxies.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// What holding this entry in the ring costs: the entry in its `Arc`,
    /// the ring's pointer to it and its text, each heap block with the
    /// allocator's overhead.
    pub fn footprint(&self) -> usize {
        ENTRY_FIXED_BYTES + self.text.len()
    }
}

/// The bytes an entry costs besides its text.
const ENTRY_FIXED_BYTES: usize =
    2 * size_of::<usize>() + size_of::<Entry>() + size_of::<Arc<Entry>>() + 2 * ALLOCATION_OVERHEAD;

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

/// Which records a query or a subscriber wants. Every field given must
/// match; an empty one (`route=`) matches everything.
///
/// Deserialises from the query string of `GET /admin/api/logs`
/// (`status`, `route`, `user`, `client`, `request_id`; other keys, such as
/// `limit`, are ignored), with a message naming the key for a bad value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawFilter")]
pub struct LogFilter {
    pub status: Option<StatusFilter>,
    pub route: Option<String>,
    pub user: Option<String>,
    pub client: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, entry: &Entry) -> bool {
        self.status.is_none_or(|s| s.matches(entry.status))
            && self
                .route
                .as_deref()
                .is_none_or(|route| entry.route() == Some(route))
            && self
                .user
                .as_deref()
                .is_none_or(|user| entry.user() == Some(user))
            && self.client.is_none_or(|client| entry.client == client)
            && self
                .request_id
                .as_deref()
                .is_none_or(|id| entry.request_id() == id)
    }
}

/// The query-string form of a [`LogFilter`].
#[derive(Deserialize)]
struct RawFilter {
    status: Option<String>,
    route: Option<String>,
    user: Option<String>,
    client: Option<String>,
    request_id: Option<String>,
}

impl TryFrom<RawFilter> for LogFilter {
    type Error = String;

    fn try_from(raw: RawFilter) -> Result<LogFilter, String> {
        let given = |value: Option<String>| value.filter(|v| !v.is_empty());
        Ok(LogFilter {
            status: given(raw.status)
                .map(|s| s.parse())
                .transpose()
                .map_err(|problem| format!("status: {problem}"))?,
            route: given(raw.route),
            user: given(raw.user),
            client: given(raw.client)
                .map(|c| c.parse())
                .transpose()
                .map_err(|_| "client: expected an IP address".to_string())?,
            request_id: given(raw.request_id),
        })
    }
}

/// A status (`404`) or a status class (`4xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// The hundreds digit: `4` for `4xx`.
    Class(u16),
    Exact(u16),
}

impl StatusFilter {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusFilter::Class(class) => status / 100 == class,
            StatusFilter::Exact(exact) => status == exact,
        }
    }
}

impl FromStr for StatusFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<StatusFilter, String> {
        let problem = || format!("{text:?} is neither a status (404) nor a class (1xx to 5xx)");
        match text.as_bytes() {
            [digit @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                Ok(StatusFilter::Class((digit - b'0') as u16))
            }
            [b'1'..=b'9', b'0'..=b'9', b'0'..=b'9'] => {
                text.parse().map(StatusFilter::Exact).map_err(|_| problem())
            }
            _ => Err(problem()),
        }
    }
}

/// The entries held, newest last.
struct Held {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
}

/// The most recent access-log records, at most `capacity` bytes of them
/// (see [`Entry::footprint`]); the oldest go first.
pub struct RecentLog {
    held: Mutex<Held>,
    capacity: usize,
    feed: broadcast::Sender<Arc<Entry>>,
}

fn lock(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for RecentLog {
    fn default() -> Self {
        RecentLog::new(DEFAULT_RECENT_LOG_BYTES)
    }
}

impl RecentLog {
    /// A ring of at most `capacity` bytes; `0` keeps nothing (subscribers
    /// still get new records).
    pub fn new(capacity: usize) -> RecentLog {
        RecentLog {
            held: Mutex::new(Held {
                entries: VecDeque::new(),
                bytes: 0,
            }),
            capacity,
            feed: broadcast::channel(SUBSCRIBER_BACKLOG).0,
        }
    }

    /// Whether a new record would go anywhere: to the ring or to a
    /// subscriber.
    pub fn wanted(&self) -> bool {
        self.capacity > 0 || self.feed.receiver_count() > 0
    }

    /// Adds a record, evicting the oldest ones to stay within the capacity,
    /// and sends it to every subscriber. Never waits for a subscriber.
    pub fn push(&self, entry: Entry) {
        let entry = Arc::new(entry);
        let size = entry.footprint();
        if size <= self.capacity {
            let mut held = lock(&self.held);
            while held.bytes + size > self.capacity {
                let Some(oldest) = held.entries.pop_front() else {
                    break;
                };
                held.bytes -= oldest.footprint();
            }
            held.bytes += size;
            held.entries.push_back(entry.clone());
        }
        // An error only says nobody is listening.
        let _ = self.feed.send(entry);
    }

    /// Up to `limit` held records matching `filter`, newest first.
    pub fn query(&self, filter: &LogFilter, limit: usize) -> Vec<Arc<Entry>> {
        let held = lock(&self.held);
        held.entries
            .iter()
            .rev()
            .filter(|entry| filter.matches(entry))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Every record pushed from now on. A subscriber more than a few
    /// hundred records behind gets [`broadcast::error::RecvError::Lagged`]
    /// and continues with newer ones; it never holds the producer up.
    /// Apply a [`LogFilter`] on receipt.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.feed.subscribe()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        lock(&self.held).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, by [`Entry::footprint`].
    pub fn bytes(&self) -> usize {
        lock(&self.held).bytes
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Entries as one JSON array (`GET /admin/api/logs`), from their text as is.
pub fn json_array(entries: &[Arc<Entry>]) -> String {
    let mut out =
        String::with_capacity(2 + entries.iter().map(|e| e.json().len() + 1).sum::<usize>());
    out.push('[');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(entry.json());
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entry `n` (below 100, so every entry has the same size).
    fn entry(n: usize, status: u16) -> Entry {
        let json = format!(r#"{{"msg":"access","request_id":"id{n:02}","status":{status}}}"#);
        Entry::new(
            &json,
            status,
            &format!("id{n:02}"),
            Some(if n.is_multiple_of(2) { "even" } else { "odd" }),
            n.is_multiple_of(3).then_some("alice"),
            IpAddr::from([192, 0, 2, (n % 4) as u8]),
        )
    }

    fn ids(entries: &[Arc<Entry>]) -> Vec<&str> {
        entries.iter().map(|e| e.request_id()).collect()
    }

    #[test]
    fn an_entry_keeps_its_fields() {
        let e = entry(3, 404);
        assert_eq!(
            e.json(),
            r#"{"msg":"access","request_id":"id03","status":404}"#
        );
        assert_eq!(e.request_id(), "id03");
        assert_eq!(e.route(), Some("odd"));
        assert_eq!(e.user(), Some("alice"));
        assert_eq!(e.status(), 404);
        assert_eq!(e.client(), IpAddr::from([192, 0, 2, 3]));
        let anonymous = Entry::new("{}", 200, "r", None, None, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((anonymous.route(), anonymous.user()), (None, None));
        let empty_user = Entry::new("{}", 200, "r", Some("x"), Some(""), [0u8; 4].into());
        assert_eq!(
            (empty_user.route(), empty_user.user()),
            (Some("x"), Some(""))
        );
    }

    #[test]
    fn the_ring_stays_within_its_bytes_and_evicts_the_oldest() {
        let size = |n: usize| entry(n, 200).footprint();
        assert!(size(0) > ENTRY_FIXED_BYTES);
        // Exactly entries 15 to 24 fit.
        let log = RecentLog::new((15..25).map(size).sum());
        for n in 0..25 {
            log.push(entry(n, 200));
            assert!(log.bytes() <= log.capacity());
        }
        assert_eq!(log.len(), 10);
        assert_eq!(log.bytes(), log.capacity());
        let all = log.query(&LogFilter::default(), usize::MAX);
        let expected: Vec<String> = (15..25).rev().map(|n| format!("id{n:02}")).collect();
        assert_eq!(ids(&all), expected);
        // A bigger entry pushes out as many of the oldest as it needs.
        let big = "x".repeat(size(0) * 3);
        let big_entry = Entry::new(&big, 200, "big", None, None, [0u8; 4].into());
        let mut room = log.capacity() - big_entry.footprint();
        let mut kept = 25;
        while kept > 15 && size(kept - 1) <= room {
            room -= size(kept - 1);
            kept -= 1;
        }
        assert!(kept > 17, "the big entry should evict several");
        log.push(big_entry);
        assert!(log.bytes() <= log.capacity());
        let all = log.query(&LogFilter::default(), usize::MAX);
        let expected: Vec<String> = std::iter::once("big".to_string())
            .chain((kept..25).rev().map(|n| format!("id{n:02}")))
            .collect();
        assert_eq!(ids(&all), expected);
        let size = size(1);
        // One larger than the whole ring is not kept.
        let log = RecentLog::new(size);
        log.push(entry(1, 200));
        log.push(Entry::new(&big, 200, "huge", None, None, [0u8; 4].into()));
        assert_eq!(ids(&log.query(&LogFilter::default(), 10)), ["id01"]);
        let off = RecentLog::new(0);
        off.push(entry(1, 200));
        assert!(off.is_empty());
        assert!(!off.wanted());
    }

    #[test]
    fn queries_are_newest_first_and_limited() {
        let log = RecentLog::default();
        for n in 0..10 {
            log.push(entry(n, 200));
        }
        assert_eq!(
            ids(&log.query(&LogFilter::default(), 3)),
            ["id09", "id08", "id07"]
        );
        assert!(log.query(&LogFilter::default(), 0).is_empty());
    }

    #[test]
    fn every_filter_applies() {
        let log = RecentLog::default();
        let statuses = [200, 201, 302, 404, 429, 500, 502, 101];
        for (n, status) in statuses.into_iter().enumerate() {
            log.push(entry(n, status));
        }
        let query = |filter: LogFilter| ids(&log.query(&filter, 100)).join(",");
        let status = |s: &str| LogFilter {
            status: Some(s.parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(query(status("2xx")), "id01,id00");
        assert_eq!(query(status("4XX")), "id04,id03");
        assert_eq!(query(status("5xx")), "id06,id05");
        assert_eq!(query(status("1xx")), "id07");
        assert_eq!(query(status("429")), "id04");
        assert_eq!(query(status("418")), "");
        let route = LogFilter {
            route: Some("even".into()),
            ..Default::default()
        };
        assert_eq!(query(route), "id06,id04,id02,id00");
        let user = LogFilter {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(query(user), "id06,id03,id00");
        let client = LogFilter {
            client: Some(IpAddr::from([192, 0, 2, 1])),
            ..Default::default()
        };
        assert_eq!(query(client), "id05,id01");
        let request_id = LogFilter {
            request_id: Some("id02".into()),
            ..Default::default()
        };
        assert_eq!(query(request_id), "id02");
        // Filters combine.
        let both = LogFilter {
            status: Some(StatusFilter::Class(5)),
            route: Some("odd".into()),
            ..Default::default()
        };
        assert_eq!(query(both), "id05");
    }

    #[test]
    fn filters_parse_from_the_query_string() {
        let parse = |q: &str| serde_urlencoded::from_str::<LogFilter>(q);
        assert_eq!(
            parse("status=4xx&route=&user=&client=&request_id=&limit=200").unwrap(),
            LogFilter {
                status: Some(StatusFilter::Class(4)),
                ..Default::default()
            }
        );
        assert_eq!(
            parse("status=503&route=api&user=bob&client=2001:db8::1&request_id=abc").unwrap(),
            LogFilter {
                status: Some(StatusFilter::Exact(503)),
                route: Some("api".into()),
                user: Some("bob".into()),
                client: Some("2001:db8::1".parse().unwrap()),
                request_id: Some("abc".into()),
            }
        );
        assert_eq!(parse("").unwrap(), LogFilter::default());
        for (query, key) in [
            ("status=6xx", "status"),
            ("status=40", "status"),
            ("status=abc", "status"),
            ("client=example.com", "client"),
        ] {
            let err = parse(query).unwrap_err().to_string();
            assert!(err.starts_with(key), "{query}: {err}");
        }
    }

    #[tokio::test]
    async fn subscribers_get_new_records_and_skip_when_behind() {
        let log = RecentLog::new(0);
        log.push(entry(0, 200));
        let mut early = log.subscribe();
        assert!(log.wanted());
        log.push(entry(1, 200));
        assert_eq!(early.recv().await.unwrap().request_id(), "id01");
        // A subscriber that stops reading never holds the producer up; it
        // skips what it missed and carries on with the newest.
        for n in 2..SUBSCRIBER_BACKLOG + 12 {
            log.push(entry(n, 200));
        }
        match early.recv().await {
            Err(broadcast::error::RecvError::Lagged(skipped)) => assert_eq!(skipped, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(early.recv().await.unwrap().request_id(), "id12");
        let late = log.subscribe();
        drop(early);
        drop(late);
        assert!(!log.wanted());
    }

    #[test]
    fn entries_join_into_a_json_array() {
        let log = RecentLog::default();
        assert_eq!(json_array(&[]), "[]");
        log.push(entry(1, 200));
        log.push(entry(2, 500));
        let text = json_array(&log.query(&LogFilter::default(), 10));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed[0]["request_id"], "id02");
        assert_eq!(parsed[1]["status"], 200);
    }
}
