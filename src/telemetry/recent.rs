//! The most recent access-log records, for the admin console's live log:
//! a ring bounded in bytes, searchable by status, route, user, client and
//! request id, and a broadcast of each new record for streaming.
//!
//! Each record keeps its JSON text exactly as the access log writes it, so
//! the same truncation and query redaction apply.
//!
//! Records are added on the request path, so adding one allocates nothing
//! and touches nothing another worker writes: it is copied into its
//! thread's own staging buffer (an uncontended lock), stamped with the time.
//! Every [`FLUSH_INTERVAL`], and before any query, [`RecentLog::flush`]
//! moves the staged records, oldest first across all threads, into the
//! ring and sends them to subscribers. The ring is one byte buffer of
//! exactly the configured size, allocated once, that each record is copied
//! into (its length, its text, and its keys in a fixed-size trailer); the
//! oldest are dropped by moving the buffer's start. An [`Entry`] of its own
//! is made only for a query's answers and for subscribers, when there are
//! any.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use serde::Deserialize;
use tokio::sync::broadcast;

/// The ring's size when the configuration does not say.
pub const DEFAULT_RECENT_LOG_BYTES: usize = 4 * 1024 * 1024;

/// New records a subscriber may fall behind by before it skips some.
const SUBSCRIBER_BACKLOG: usize = 512;

/// How often staged records reach the ring and the subscribers.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// Staging buffers: one per recording thread (more threads share one).
const STAGES: usize = 16;

/// What one staging buffer holds between flushes: at 20 ms, some 35,000
/// requests a second on one worker. Beyond it records are left out of the
/// console's view (the log itself still has them) and counted, rather than
/// let a stalled flush grow memory.
const STAGE_BYTES: usize = 512 * 1024;

/// Before a staged record: the time it was added, in nanoseconds since the
/// log was made, to merge the threads' records in order.
const STAMP: usize = 8;

/// What a record is searched by, besides its text.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    pub status: u16,
    pub request_id: &'a str,
    /// The matched route's id, if a route matched.
    pub route: Option<&'a str>,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The client address, as resolved through trusted proxies.
    pub client: IpAddr,
}

/// Where a record's parts lie in its text (the JSON line, then the request
/// id, the route and the user), and the keys that are not text.
#[derive(Debug, Clone, Copy)]
struct Layout {
    json_len: u32,
    request_id_len: u32,
    /// `0`: no route matched.
    route_len: u32,
    /// [`NO_USER`]: nobody was authenticated.
    user_len: u32,
    status: u16,
    client: IpAddr,
}

const NO_USER: u32 = u32::MAX;

impl Layout {
    /// Lengths beyond 4 GiB do not occur (access lines are bounded); they
    /// would read as empty rather than wrong.
    fn of(json: &[u8], keys: &Keys) -> Layout {
        let len = |n: usize| u32::try_from(n).unwrap_or(0);
        Layout {
            json_len: len(json.len()),
            request_id_len: len(keys.request_id.len()),
            route_len: len(keys.route.map_or(0, str::len)),
            user_len: keys.user.map_or(NO_USER, |u| len(u.len())),
            status: keys.status,
            client: keys.client,
        }
    }

    fn user_len(&self) -> u32 {
        if self.user_len == NO_USER {
            0
        } else {
            self.user_len
        }
    }

    /// Bytes of text.
    fn len(&self) -> usize {
        (self.json_len + self.request_id_len + self.route_len + self.user_len()) as usize
    }

    /// (start, length) of the request id, the route and the user.
    fn request_id(&self) -> (usize, usize) {
        (self.json_len as usize, self.request_id_len as usize)
    }

    fn route(&self) -> Option<(usize, usize)> {
        let at = (self.json_len + self.request_id_len) as usize;
        (self.route_len > 0).then_some((at, self.route_len as usize))
    }

    fn user(&self) -> Option<(usize, usize)> {
        let at = (self.json_len + self.request_id_len + self.route_len) as usize;
        (self.user_len != NO_USER).then_some((at, self.user_len as usize))
    }
}

/// Before a record's text in the ring: its whole size, to evict it.
const HEADER: usize = 4;
/// After it: its [`Layout`], to find it walking back from the newest.
const TRAILER: usize = 36;
/// What holding one record costs besides its text.
const RECORD_OVERHEAD: usize = HEADER + TRAILER;

impl Layout {
    fn encode(&self) -> [u8; TRAILER] {
        let mut out = [0u8; TRAILER];
        for (i, n) in [
            self.json_len,
            self.request_id_len,
            self.route_len,
            self.user_len,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&n.to_le_bytes());
        }
        out[16..18].copy_from_slice(&self.status.to_le_bytes());
        match self.client {
            IpAddr::V4(v4) => {
                out[18] = 4;
                out[19..23].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out[18] = 6;
                out[19..35].copy_from_slice(&v6.octets());
            }
        }
        out
    }

    fn decode(bytes: [u8; TRAILER]) -> Layout {
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut v6 = [0u8; 16];
        v6.copy_from_slice(&bytes[19..35]);
        Layout {
            json_len: u32_at(0),
            request_id_len: u32_at(4),
            route_len: u32_at(8),
            user_len: u32_at(12),
            status: u16::from_le_bytes([bytes[16], bytes[17]]),
            client: match bytes[18] {
                4 => Ipv4Addr::new(bytes[19], bytes[20], bytes[21], bytes[22]).into(),
                _ => Ipv6Addr::from(v6).into(),
            },
        }
    }
}

/// One access-log record, as a query answers it or a subscriber gets it.
pub struct Entry {
    text: Box<str>,
    layout: Layout,
}

impl Entry {
    /// A record: its JSON line (one object, no newline) and its keys.
    pub fn new(json: &str, keys: &Keys) -> Entry {
        let mut text = String::with_capacity(json.len() + keys.request_id.len() + 64);
        for part in [json, keys.request_id, keys.route.unwrap_or("")] {
            text.push_str(part);
        }
        text.push_str(keys.user.unwrap_or(""));
        Entry {
            text: text.into_boxed_str(),
            layout: Layout::of(json.as_bytes(), keys),
        }
    }

    /// A record from the ring's bytes, which are UTF-8: they were copied
    /// from `&str`s and serde_json's output.
    fn from_ring(text: Vec<u8>, layout: Layout) -> Entry {
        let text = String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Entry {
            text: text.into_boxed_str(),
            layout,
        }
    }

    /// A record as the ring holds it: its header, text and trailer.
    fn from_record(record: &[u8]) -> Entry {
        let mut trailer = [0u8; TRAILER];
        trailer.copy_from_slice(&record[record.len() - TRAILER..]);
        let text = record[HEADER..record.len() - TRAILER].to_vec();
        Entry::from_ring(text, Layout::decode(trailer))
    }

    fn part(&self, (from, len): (usize, usize)) -> &str {
        self.text.get(from..from + len).unwrap_or("")
    }

    /// The access-log line, a JSON object.
    pub fn json(&self) -> &str {
        self.part((0, self.layout.json_len as usize))
    }

    pub fn request_id(&self) -> &str {
        self.part(self.layout.request_id())
    }

    /// The matched route's id, if a route matched.
    pub fn route(&self) -> Option<&str> {
        self.layout.route().map(|at| self.part(at))
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        self.layout.user().map(|at| self.part(at))
    }

    pub fn status(&self) -> u16 {
        self.layout.status
    }

    /// The client address, as resolved through trusted proxies.
    pub fn client(&self) -> IpAddr {
        self.layout.client
    }

    /// What holding this record in the ring costs.
    pub fn footprint(&self) -> usize {
        self.layout.len() + RECORD_OVERHEAD
    }
}

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
        self.matches_layout(&entry.layout, |at, wanted| {
            entry.part(at).as_bytes() == wanted
        })
    }

    /// Whether a record matches, `text_is(at, value)` telling whether its
    /// text has `value` at `at`.
    fn matches_layout(
        &self,
        layout: &Layout,
        text_is: impl Fn((usize, usize), &[u8]) -> bool,
    ) -> bool {
        let field = |wanted: &Option<String>, at: Option<(usize, usize)>| match wanted {
            None => true,
            Some(wanted) => {
                at.is_some_and(|at| at.1 == wanted.len() && text_is(at, wanted.as_bytes()))
            }
        };
        self.status.is_none_or(|s| s.matches(layout.status))
            && self.client.is_none_or(|client| layout.client == client)
            && field(&self.request_id, Some(layout.request_id()))
            && field(&self.route, layout.route())
            && field(&self.user, layout.user())
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

/// The records held, oldest first, each its [`HEADER`], text and
/// [`TRAILER`].
struct Held {
    ring: VecDeque<u8>,
    records: usize,
}

impl Held {
    /// The bytes from `start` to `end` as up to two slices: the buffer may
    /// wrap inside them.
    fn slices(&self, start: usize, end: usize) -> (&[u8], &[u8]) {
        let (front, back) = self.ring.as_slices();
        if end <= front.len() {
            (&front[start..end], &[])
        } else if start >= front.len() {
            (&back[start - front.len()..end - front.len()], &[])
        } else {
            (&front[start..], &back[..end - front.len()])
        }
    }

    /// Whether the bytes at `start` are `wanted`.
    fn bytes_are(&self, start: usize, wanted: &[u8]) -> bool {
        let (first, second) = self.slices(start, start + wanted.len());
        wanted.starts_with(first) && &wanted[first.len()..] == second
    }

    /// A copy of the `len` bytes at `start`.
    fn copy(&self, start: usize, len: usize) -> Vec<u8> {
        let (first, second) = self.slices(start, start + len);
        [first, second].concat()
    }

    fn read<const N: usize>(&self, start: usize) -> [u8; N] {
        let mut out = [0u8; N];
        let (first, second) = self.slices(start, start + N);
        out[..first.len()].copy_from_slice(first);
        out[first.len()..].copy_from_slice(second);
        out
    }

    /// Adds one record (its header, text and trailer), dropping the oldest
    /// to stay within `capacity`. Takes the buffer from the allocator once.
    fn append(&mut self, record: &[u8], capacity: usize) {
        if self.ring.capacity() == 0 {
            self.ring.reserve_exact(capacity);
        }
        while self.ring.len() + record.len() > capacity && self.records > 0 {
            self.evict();
        }
        self.ring.extend(record);
        self.records += 1;
    }

    /// Drops the oldest record.
    fn evict(&mut self) {
        let size = u32::from_le_bytes(self.read::<HEADER>(0)) as usize;
        self.ring.drain(..size.min(self.ring.len()));
        self.records -= 1;
    }
}

/// The most recent access-log records, at most `capacity` bytes of them
/// (each record's text and 40 bytes for its size and keys); the oldest go
/// first. The ring's buffer is exactly `capacity` bytes; the staging
/// buffers hold at most [`STAGE_BYTES`] each between flushes.
pub struct RecentLog {
    held: Mutex<Held>,
    capacity: usize,
    stages: Box<[Stage]>,
    /// What stamps count from.
    epoch: Instant,
    /// Records left out because their thread's staging buffer was full.
    skipped: IntCounter,
    feed: broadcast::Sender<Arc<Entry>>,
    /// Live [`Subscription`]s. Counted here because the channel's own count
    /// takes a lock every worker would contend on, for every request.
    subscribers: Arc<AtomicUsize>,
}

/// One thread's staged records, each its stamp and its ring record; on
/// its own cache lines, so two workers never share one.
#[repr(align(128))]
struct Stage(Mutex<Vec<u8>>);

/// New records as they are pushed; see [`RecentLog::subscribe`].
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Entry>>,
    subscribers: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next record, or how many were skipped when this subscriber fell
    /// behind.
    pub async fn recv(&mut self) -> Result<Arc<Entry>, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Records are plain bytes: usable after a panic elsewhere.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for RecentLog {
    fn default() -> Self {
        RecentLog::new(DEFAULT_RECENT_LOG_BYTES)
    }
}

impl RecentLog {
    /// A ring of at most `capacity` bytes (taken from the allocator at the
    /// first record); `0` keeps nothing, and subscribers still get new
    /// records.
    pub fn new(capacity: usize) -> RecentLog {
        RecentLog {
            held: Mutex::new(Held {
                ring: VecDeque::new(),
                records: 0,
            }),
            capacity,
            stages: (0..STAGES).map(|_| Stage(Mutex::new(Vec::new()))).collect(),
            epoch: Instant::now(),
            skipped: IntCounter::new("recent_log_skipped", "unregistered").expect("valid"),
            feed: broadcast::channel(SUBSCRIBER_BACKLOG).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts records left out of the ring (a full staging buffer) in
    /// `skipped`, a registered metric.
    pub fn counting_skipped(mut self, skipped: IntCounter) -> RecentLog {
        self.skipped = skipped;
        self
    }

    /// Whether a new record would go anywhere: to the ring or to a
    /// subscriber.
    pub fn wanted(&self) -> bool {
        self.capacity > 0 || self.subscribed()
    }

    fn subscribed(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Adds a record, its JSON line (one object, UTF-8, no newline) and its
    /// keys: staged on this thread, in the ring and sent to subscribers at
    /// the next [`RecentLog::flush`]. Allocates nothing once this thread's
    /// buffer has grown; never waits for another worker or a subscriber.
    pub fn push(&self, json: &[u8], keys: &Keys) {
        let layout = Layout::of(json, keys);
        let size = RECORD_OVERHEAD + layout.len();
        let stamp = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut staged = lock(&self.stages[super::thread_index() % STAGES].0);
        if staged.len() + STAMP + size > STAGE_BYTES {
            drop(staged);
            self.skipped.inc();
            return;
        }
        if staged.capacity() == 0 {
            staged.reserve(STAGE_BYTES / 8);
        }
        staged.extend_from_slice(&stamp.to_le_bytes());
        staged.extend_from_slice(&(size as u32).to_le_bytes());
        staged.extend_from_slice(json);
        staged.extend_from_slice(keys.request_id.as_bytes());
        staged.extend_from_slice(keys.route.unwrap_or("").as_bytes());
        staged.extend_from_slice(keys.user.unwrap_or("").as_bytes());
        staged.extend_from_slice(&layout.encode());
    }

    /// Moves every staged record, oldest first whichever thread added it,
    /// into the ring (evicting the oldest held) and to every subscriber.
    pub fn flush(&self) {
        let mut batches: Vec<(usize, Vec<u8>)> = Vec::new();
        for (at, stage) in self.stages.iter().enumerate() {
            let mut staged = lock(&stage.0);
            if !staged.is_empty() {
                batches.push((at, std::mem::take(&mut *staged)));
            }
        }
        if batches.is_empty() {
            return;
        }
        let subscribed = self.subscribed();
        let mut cursors = vec![0usize; batches.len()];
        {
            let mut held = lock(&self.held);
            // Each batch is in time order: take the oldest next record.
            while let Some(next) = (0..batches.len())
                .filter(|&b| cursors[b] < batches[b].1.len())
                .min_by_key(|&b| staged_stamp(&batches[b].1, cursors[b]))
            {
                let batch = &batches[next].1;
                let start = cursors[next] + STAMP;
                let size = staged_size(batch, start);
                let record = &batch[start..start + size];
                cursors[next] = start + size;
                if size <= self.capacity {
                    held.append(record, self.capacity);
                }
                if subscribed {
                    // An error only says the last subscriber just left.
                    let _ = self.feed.send(Arc::new(Entry::from_record(record)));
                }
            }
        }
        // Each buffer goes back to its stage, emptied, keeping its capacity.
        for (at, mut batch) in batches {
            batch.clear();
            let mut staged = lock(&self.stages[at].0);
            if staged.is_empty() {
                *staged = batch;
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`]; runs until the task is dropped.
    pub async fn run_flusher(&self) {
        loop {
            tokio::time::sleep(FLUSH_INTERVAL).await;
            self.flush();
        }
    }

    /// Up to `limit` held records matching `filter`, newest first.
    pub fn query(&self, filter: &LogFilter, limit: usize) -> Vec<Arc<Entry>> {
        self.flush();
        let held = lock(&self.held);
        let mut found = Vec::new();
        let mut end = held.ring.len();
        for _ in 0..held.records {
            if found.len() >= limit {
                break;
            }
            let layout = Layout::decode(held.read::<TRAILER>(end - TRAILER));
            let text = end - TRAILER - layout.len();
            end = text - HEADER;
            let text_is =
                |(at, _): (usize, usize), wanted: &[u8]| held.bytes_are(text + at, wanted);
            if filter.matches_layout(&layout, text_is) {
                let bytes = held.copy(text, layout.len());
                found.push(Arc::new(Entry::from_ring(bytes, layout)));
            }
        }
        found
    }

    /// Every record pushed from now on. A subscriber more than a few
    /// hundred records behind gets [`broadcast::error::RecvError::Lagged`]
    /// and continues with newer ones; it never holds the producer up.
    /// Apply a [`LogFilter`] on receipt.
    pub fn subscribe(&self) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            receiver: self.feed.subscribe(),
            subscribers: self.subscribers.clone(),
        }
    }

    /// Records held (after a flush).
    pub fn len(&self) -> usize {
        self.flush();
        lock(&self.held).records
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (after a flush): the records' text, sizes and keys.
    pub fn bytes(&self) -> usize {
        self.flush();
        lock(&self.held).ring.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The stamp of the staged record at `at`.
fn staged_stamp(batch: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; STAMP];
    bytes.copy_from_slice(&batch[at..at + STAMP]);
    u64::from_le_bytes(bytes)
}

/// The size of the ring record at `at` in a staging buffer: its header.
fn staged_size(batch: &[u8], at: usize) -> usize {
    let mut bytes = [0u8; HEADER];
    bytes.copy_from_slice(&batch[at..at + HEADER]);
    u32::from_le_bytes(bytes) as usize
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

    /// Record `n` (below 100, so the text lengths differ only by route and
    /// user): its JSON line and keys.
    fn record(n: usize, status: u16) -> (String, String) {
        let id = format!("id{n:02}");
        let json = format!(r#"{{"msg":"access","request_id":"{id}","status":{status}}}"#);
        (json, id)
    }

    fn keys(n: usize, status: u16, id: &str) -> Keys<'_> {
        Keys {
            status,
            request_id: id,
            route: Some(if n.is_multiple_of(2) { "even" } else { "odd" }),
            user: n.is_multiple_of(3).then_some("alice"),
            client: IpAddr::from([192, 0, 2, (n % 4) as u8]),
        }
    }

    fn push(log: &RecentLog, n: usize, status: u16) {
        let (json, id) = record(n, status);
        log.push(json.as_bytes(), &keys(n, status, &id));
    }

    /// What record `n` costs in the ring.
    fn size(n: usize) -> usize {
        let (json, id) = record(n, 200);
        Entry::new(&json, &keys(n, 200, &id)).footprint()
    }

    fn all(log: &RecentLog) -> Vec<Arc<Entry>> {
        log.query(&LogFilter::default(), usize::MAX)
    }

    fn ids(entries: &[Arc<Entry>]) -> Vec<&str> {
        entries.iter().map(|e| e.request_id()).collect()
    }

    #[test]
    fn an_entry_keeps_its_fields() {
        let log = RecentLog::default();
        push(&log, 3, 404);
        push(&log, 4, 200);
        for e in [
            all(&log)[1].clone(),
            Arc::new(Entry::new(&record(3, 404).0, &keys(3, 404, "id03"))),
        ] {
            assert_eq!(
                e.json(),
                r#"{"msg":"access","request_id":"id03","status":404}"#
            );
            assert_eq!(e.request_id(), "id03");
            assert_eq!(e.route(), Some("odd"));
            assert_eq!(e.user(), Some("alice"));
            assert_eq!(e.status(), 404);
            assert_eq!(e.client(), IpAddr::from([192, 0, 2, 3]));
        }
        assert_eq!(all(&log)[0].user(), None);
        let anonymous = Keys {
            status: 200,
            request_id: "r",
            route: None,
            user: None,
            client: [127, 0, 0, 1].into(),
        };
        let empty_user = Keys {
            route: Some("x"),
            user: Some(""),
            ..anonymous
        };
        let v6 = Keys {
            client: "2001:db8::7".parse().unwrap(),
            status: 503,
            ..anonymous
        };
        log.push(b"{}", &anonymous);
        log.push(b"{}", &empty_user);
        log.push(b"{}", &v6);
        let held = all(&log);
        assert_eq!((held[2].route(), held[2].user()), (None, None));
        assert_eq!((held[1].route(), held[1].user()), (Some("x"), Some("")));
        assert_eq!(held[0].client(), v6.client);
        assert_eq!(held[0].status(), 503);
    }

    #[test]
    fn the_ring_stays_within_its_bytes_and_evicts_the_oldest() {
        assert!(size(0) > RECORD_OVERHEAD);
        // Exactly records 15 to 24 fit.
        let log = RecentLog::new((15..25).map(size).sum());
        for n in 0..25 {
            push(&log, n, 200);
            assert!(log.bytes() <= log.capacity());
        }
        assert_eq!(log.len(), 10);
        assert_eq!(log.bytes(), log.capacity());
        let expected: Vec<String> = (15..25).rev().map(|n| format!("id{n:02}")).collect();
        assert_eq!(ids(&all(&log)), expected);
        // A bigger record pushes out as many of the oldest as it needs.
        let big = "x".repeat(size(0) * 3);
        let big_keys = Keys {
            status: 200,
            request_id: "big",
            route: None,
            user: None,
            client: [0u8; 4].into(),
        };
        let mut room = log.capacity() - Entry::new(&big, &big_keys).footprint();
        let mut kept = 25;
        while kept > 15 && size(kept - 1) <= room {
            room -= size(kept - 1);
            kept -= 1;
        }
        assert!(kept > 17, "the big record should evict several");
        log.push(big.as_bytes(), &big_keys);
        assert!(log.bytes() <= log.capacity());
        let expected: Vec<String> = std::iter::once("big".to_string())
            .chain((kept..25).rev().map(|n| format!("id{n:02}")))
            .collect();
        assert_eq!(ids(&all(&log)), expected);
        // Records still read back whole where the buffer wraps, and the
        // buffer never grows.
        let buffer = lock(&log.held).ring.capacity();
        for n in 25..60 {
            push(&log, n, 200);
            let newest = &all(&log)[0];
            assert_eq!(newest.json(), record(n, 200).0);
            assert_eq!(
                newest.route(),
                Some(if n % 2 == 0 { "even" } else { "odd" })
            );
        }
        assert_eq!(lock(&log.held).ring.capacity(), buffer);
        let request_id = LogFilter {
            request_id: Some("id55".into()),
            ..Default::default()
        };
        assert_eq!(ids(&log.query(&request_id, 10)), ["id55"]);
        // One larger than the whole ring is not kept.
        let log = RecentLog::new(size(1));
        push(&log, 1, 200);
        log.push(big.as_bytes(), &big_keys);
        assert_eq!(ids(&all(&log)), ["id01"]);
        let off = RecentLog::new(0);
        push(&off, 1, 200);
        assert!(off.is_empty());
        assert!(!off.wanted());
    }

    #[test]
    fn matching_reads_across_the_wrap() {
        // Small enough that every record soon straddles the buffer's end.
        let log = RecentLog::new(size(0) * 3 + 7);
        for n in 0..40 {
            push(&log, n, 500 + n as u16);
            for back in 0..log.len().min(n + 1) {
                let m = n - back;
                let filter = LogFilter {
                    request_id: Some(format!("id{m:02}")),
                    route: Some(if m % 2 == 0 { "even" } else { "odd" }.into()),
                    user: m.is_multiple_of(3).then(|| "alice".into()),
                    ..Default::default()
                };
                let found = log.query(&filter, 10);
                assert_eq!(ids(&found), [format!("id{m:02}")], "record {m} after {n}");
                assert_eq!(found[0].json(), record(m, 500 + m as u16).0);
            }
        }
    }

    #[test]
    fn queries_are_newest_first_and_limited() {
        let log = RecentLog::default();
        for n in 0..10 {
            push(&log, n, 200);
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
            push(&log, n, status);
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
        let route = |r: &str| LogFilter {
            route: Some(r.into()),
            ..Default::default()
        };
        assert_eq!(query(route("even")), "id06,id04,id02,id00");
        assert_eq!(query(route("eve")), "");
        let user = |u: &str| LogFilter {
            user: Some(u.into()),
            ..Default::default()
        };
        assert_eq!(query(user("alice")), "id06,id03,id00");
        assert_eq!(query(user("alic")), "");
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
        assert_eq!(query(both.clone()), "id05");
        // A subscriber's filter reads an entry the same way.
        let entries = log.query(&LogFilter::default(), 100);
        let matching: Vec<&str> = entries
            .iter()
            .filter(|e| both.matches(e))
            .map(|e| e.request_id())
            .collect();
        assert_eq!(matching, ["id05"]);
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
        push(&log, 0, 200);
        log.flush();
        let mut early = log.subscribe();
        assert!(log.wanted());
        push(&log, 1, 200);
        // Staged records reach subscribers at the next flush.
        assert!(early.receiver.try_recv().is_err());
        log.flush();
        let first = early.recv().await.unwrap();
        assert_eq!(first.request_id(), "id01");
        assert_eq!(first.json(), record(1, 200).0);
        assert_eq!(first.user(), None);
        // A subscriber that stops reading never holds the producer up; it
        // skips what it missed and carries on with the newest.
        for n in 2..SUBSCRIBER_BACKLOG + 12 {
            push(&log, n, 200);
        }
        log.flush();
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
    fn threads_records_merge_in_time_order() {
        let log = Arc::new(RecentLog::default());
        // Interleave two threads' pushes strictly, so the stamps alternate.
        let (turn_tx, turn_rx) = std::sync::mpsc::channel::<usize>();
        let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
        let other = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                while let Ok(n) = turn_rx.recv() {
                    push(&log, n, 200);
                    back_tx.send(()).unwrap();
                }
            })
        };
        for n in 0..20 {
            if n % 2 == 0 {
                push(&log, n, 200);
            } else {
                turn_tx.send(n).unwrap();
                back_rx.recv().unwrap();
            }
        }
        drop(turn_tx);
        other.join().unwrap();
        let got: Vec<String> = all(&log)
            .iter()
            .rev()
            .map(|e| e.request_id().to_owned())
            .collect();
        let expected: Vec<String> = (0..20).map(|n| format!("id{n:02}")).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_full_staging_buffer_skips_and_counts() {
        let skipped = IntCounter::new("skipped", "test").unwrap();
        let log = RecentLog::default().counting_skipped(skipped.clone());
        let mut pushed = 0;
        while skipped.get() == 0 {
            push(&log, pushed, 200);
            pushed += 1;
        }
        let kept = pushed - 1;
        assert!(kept * size(1) >= STAGE_BYTES / 2, "{kept} records staged");
        assert_eq!(log.len(), kept);
        // Once flushed, the thread stages again.
        push(&log, 1, 200);
        assert_eq!(log.len(), kept + 1);
        assert_eq!(skipped.get(), 1);
    }

    #[test]
    fn entries_join_into_a_json_array() {
        let log = RecentLog::default();
        assert_eq!(json_array(&[]), "[]");
        push(&log, 1, 200);
        push(&log, 2, 500);
        let text = json_array(&all(&log));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed[0]["request_id"], "id02");
        assert_eq!(parsed[1]["status"], 200);
    }
}
