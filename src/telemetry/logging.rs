//! The system and access log: slog records formatted as JSON, written by a
//! dedicated thread so a slow sink never blocks a request.
//!
//! Compact lines (`log.format = "json"`, the one per request) are written by
//! [`CompactJson`], a thin slog serializer over serde_json that writes each
//! field straight into the line; indented ones (`pretty`) by slog-json.
//! Both give the same fields: `msg`, `level`, `timestamp`, then the
//! record's own.
//!
//! Each record is formatted on the thread that logs it, into a reusable
//! per-thread buffer, and the finished line is appended to a shared queue.
//! (Queuing the record itself, as slog-async does, means boxing every field
//! value so it can cross threads — per request, that cost more than the
//! formatting.) The writer thread is not woken per line, which would cost a
//! context switch per request: it takes the whole queue every
//! [`WRITE_INTERVAL`] and writes it at once. Lines that arrive while the
//! queue is full (`log.buffer` lines or `log.buffer_bytes` bytes) are
//! dropped and counted in `portcullis_log_dropped_total` rather than
//! blocking the request path.
//!
//! [`Logging::log_and_tap`] writes a record the same way and also hands its
//! compact line to a caller (the access log feeds the admin console's ring
//! from it), so the line is formatted once for both.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use slog::{o, Drain, Level, Logger, OwnedKVList, Record, KV};

use crate::config::{LogConfig, LogFormat, LogOutput};

/// How often the writer thread writes out queued lines.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// The running logger and the handles to reconfigure it.
pub struct Logging {
    pub logger: Logger,
    level: Arc<AtomicUsize>,
    control: Sender<Control>,
    /// The logger's drain, for [`Logging::log_and_tap`].
    drain: Arc<FormatAndQueue>,
    /// The root logger's (empty) values, which every record carries.
    values: OwnedKVList,
}

/// Formatted lines waiting for the writer thread.
struct Queue {
    lines: Mutex<Pending>,
    /// At most this many lines wait; more are dropped.
    capacity: usize,
    /// At most this many bytes wait; more are dropped.
    capacity_bytes: usize,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
}

/// Requests to the writer thread besides writing.
enum Control {
    Reopen(SyncSender<io::Result<()>>),
    Flush(SyncSender<()>),
}

impl Logging {
    /// Builds the logger described by `config` and starts its writer thread.
    /// Fails only when the output file cannot be opened.
    pub fn new(config: &LogConfig, dropped: IntCounter) -> io::Result<Logging> {
        let writer = open(&config.output)?;
        let queue = Arc::new(Queue {
            lines: Mutex::new(Pending::default()),
            capacity: config.buffer,
            capacity_bytes: config.buffer_bytes,
        });
        let (control, requests) = mpsc::channel();
        let target = config.output.clone();
        let pending = queue.clone();
        std::thread::Builder::new()
            .name("portcullis-log".into())
            .spawn(move || write_lines(&pending, &requests, writer, &target))?;
        let level = Arc::new(AtomicUsize::new(config.level.as_usize()));
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let format = Arc::new(FormatAndQueue {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pretty: config.format == LogFormat::Pretty,
            queue,
            dropped,
        });
        let drain = RuntimeLevel {
            level: level.clone(),
            drain: format.clone(),
        };
        Ok(Logging {
            logger: Logger::root(drain.fuse(), o!()),
            level,
            control,
            drain: format,
            values: o!().into(),
        })
    }

    /// Whether records at `level` are written at all; checked before building
    /// an access-log record so filtered requests cost nothing.
    pub fn enabled(&self, level: Level) -> bool {
        level.as_usize() <= self.level.load(Ordering::Relaxed)
    }

    /// The level records are written at now.
    pub fn level(&self) -> Level {
        Level::from_usize(self.level.load(Ordering::Relaxed)).unwrap_or(Level::Info)
    }

    /// Writes a record of `fields` with message `msg`, as `slog::log!` would,
    /// and hands the same record to `tap`, when given, as one compact JSON
    /// line (no newline) — whatever the level, so a reader of recent
    /// traffic sees requests the log file leaves out. In the compact format
    /// the line is formatted once for both.
    pub fn log_and_tap<F: KV>(
        &self,
        level: Level,
        msg: &'static str,
        fields: &F,
        tap: Option<&mut dyn FnMut(&str)>,
    ) {
        let logged = self.enabled(level);
        if !logged && tap.is_none() {
            return;
        }
        let location = slog::record_static!(level, "");
        self.drain.write(
            &Record::new(&location, &format_args!("{msg}"), slog::b!(fields)),
            &self.values,
            logged,
            tap,
        );
    }

    /// Applies a reloaded configuration's level.
    pub fn set_level(&self, level: Level) {
        self.level.store(level.as_usize(), Ordering::Relaxed);
    }

    /// Reopens the output file (after logrotate moved it away), once every
    /// line queued before it has been written to the old one.
    pub fn reopen(&self) -> io::Result<()> {
        let stopped = || io::Error::other("the log writer has stopped");
        let (done, result) = mpsc::sync_channel(1);
        self.control
            .send(Control::Reopen(done))
            .map_err(|_| stopped())?;
        result.recv().map_err(|_| stopped())?
    }

    /// Waits until every queued line is written; called at shutdown.
    pub fn flush(&self) {
        let (done, flushed) = mpsc::sync_channel(1);
        if self.control.send(Control::Flush(done)).is_ok() {
            let _ = flushed.recv();
        }
    }
}

/// Lower-case level names, as operators write them in `log.level`.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical | Level::Error => "error",
        Level::Warning => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// A level filter that can be changed at runtime by a reload.
struct RuntimeLevel<D> {
    level: Arc<AtomicUsize>,
    drain: D,
}

impl<D: Drain<Ok = (), Err = slog::Never>> Drain for RuntimeLevel<D> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if record.level().as_usize() <= self.level.load(Ordering::Relaxed) {
            self.drain.log(record, values)?;
        }
        Ok(())
    }
}

/// Formats a record on the calling thread and queues the line.
struct FormatAndQueue {
    /// Tells this logger's per-thread formatter from another's (tests, benches).
    id: usize,
    pretty: bool,
    queue: Arc<Queue>,
    dropped: IntCounter,
}

/// How records become lines on this thread: a reusable buffer, and for the
/// pretty format a slog-json formatter writing into it.
struct Formatter {
    id: usize,
    pretty: Option<slog_json::Json<LineBuffer>>,
    buffer: Rc<RefCell<Vec<u8>>>,
    /// The last timestamp written and its millisecond: lines come many per
    /// millisecond under load, and formatting a date is not free.
    stamp: RefCell<(u128, String)>,
}

thread_local! {
    static FORMATTER: RefCell<Option<Formatter>> = const { RefCell::new(None) };
}

/// The `io::Write` slog-json writes into.
struct LineBuffer(Rc<RefCell<Vec<u8>>>);

impl Write for LineBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FormatAndQueue {
    fn formatter(&self) -> Formatter {
        let buffer = Rc::new(RefCell::new(Vec::with_capacity(1024)));
        let pretty = self.pretty.then(|| {
            slog_json::Json::new(LineBuffer(buffer.clone()))
                .set_newlines(true)
                .set_pretty(true)
                .add_key_value(o!(
                    "timestamp" => slog::PushFnValue(|_, ser| {
                        ser.emit(format_args!("{}", humantime::format_rfc3339_millis(SystemTime::now())))
                    }),
                    "level" => slog::FnValue(|record| level_name(record.level())),
                    "msg" => slog::PushFnValue(|record, ser| ser.emit(record.msg())),
                ))
                .build()
        });
        Formatter {
            id: self.id,
            pretty,
            buffer,
            stamp: RefCell::new((0, String::new())),
        }
    }
}

impl Formatter {
    /// Formats one record into the buffer, replacing what was there.
    fn format(&self, record: &Record, values: &OwnedKVList) -> bool {
        if let Some(pretty) = &self.pretty {
            self.buffer.borrow_mut().clear();
            return pretty.log(record, values).is_ok();
        }
        self.format_compact(record, values)
    }

    /// Formats one record into the buffer as a compact line, whatever the
    /// configured format.
    fn format_compact(&self, record: &Record, values: &OwnedKVList) -> bool {
        let mut line = self.buffer.borrow_mut();
        line.clear();
        let mut json = CompactJson::new(&mut line);
        json.field("msg", record.msg());
        json.field("level", level_name(record.level()));
        json.value_str("timestamp", &self.timestamp());
        let written = values.serialize(record, &mut json).is_ok()
            && record.kv().serialize(record, &mut json).is_ok();
        line.extend_from_slice(b"}\n");
        written
    }

    /// Now in RFC 3339 with milliseconds, formatted at most once per millisecond.
    fn timestamp(&self) -> std::cell::Ref<'_, str> {
        let now = SystemTime::now();
        let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        if self.stamp.borrow().0 != ms || self.stamp.borrow().1.is_empty() {
            let mut stamp = self.stamp.borrow_mut();
            stamp.1.clear();
            let _ = write!(stamp.1, "{}", humantime::format_rfc3339_millis(now));
            stamp.0 = ms;
        }
        std::cell::Ref::map(self.stamp.borrow(), |(_, text)| text.as_str())
    }
}

/// A slog serializer writing one compact JSON object: serde_json does the
/// escaping and number formatting, straight into the line, with no
/// intermediate values.
struct CompactJson<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> CompactJson<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        CompactJson { out, first: true }
    }

    fn key(&mut self, key: &str) -> serde_json::Serializer<&mut Vec<u8>> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        let mut json = serde_json::Serializer::new(&mut *self.out);
        let _ = serde::Serializer::serialize_str(&mut json, key);
        self.out.push(b':');
        serde_json::Serializer::new(&mut *self.out)
    }

    /// A key and its value as a JSON string.
    fn field(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = serde::Serializer::collect_str(&mut self.key(key), &value);
    }

    fn value_str(&mut self, key: &str, value: &str) {
        let _ = self.value(key, value);
    }

    fn value(&mut self, key: &str, value: impl serde::Serialize) -> slog::Result {
        value
            .serialize(&mut self.key(key))
            .map_err(|e| slog::Error::Io(io::Error::other(e)))
    }
}

impl slog::Serializer for CompactJson<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        self.field(key, value);
        Ok(())
    }

    fn emit_str(&mut self, key: slog::Key, value: &str) -> slog::Result {
        self.value(key, value)
    }

    fn emit_none(&mut self, key: slog::Key) -> slog::Result {
        self.value(key, ())
    }

    fn emit_unit(&mut self, key: slog::Key) -> slog::Result {
        self.value(key, ())
    }

    fn emit_bool(&mut self, key: slog::Key, value: bool) -> slog::Result {
        self.value(key, value)
    }

    fn emit_u16(&mut self, key: slog::Key, value: u16) -> slog::Result {
        self.value(key, value)
    }

    fn emit_u32(&mut self, key: slog::Key, value: u32) -> slog::Result {
        self.value(key, value)
    }

    fn emit_u64(&mut self, key: slog::Key, value: u64) -> slog::Result {
        self.value(key, value)
    }

    fn emit_i64(&mut self, key: slog::Key, value: i64) -> slog::Result {
        self.value(key, value)
    }

    fn emit_usize(&mut self, key: slog::Key, value: usize) -> slog::Result {
        self.value(key, value)
    }

    fn emit_f64(&mut self, key: slog::Key, value: f64) -> slog::Result {
        self.value(key, value)
    }

    fn emit_serde(&mut self, key: slog::Key, value: &dyn slog::SerdeValue) -> slog::Result {
        self.value(key, value.as_serde())
    }
}

impl FormatAndQueue {
    /// Formats `record` on this thread: queued for the writer when `queue`,
    /// and given to `tap` as a compact line.
    fn write(
        &self,
        record: &Record,
        values: &OwnedKVList,
        queue: bool,
        tap: Option<&mut dyn FnMut(&str)>,
    ) {
        FORMATTER.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|f| f.id != self.id) {
                *slot = Some(self.formatter());
            }
            let Some(formatter) = slot.as_mut() else {
                return;
            };
            let mut compact = false;
            if queue && formatter.format(record, values) {
                self.enqueue(&formatter.buffer.borrow());
                compact = formatter.pretty.is_none();
            }
            let Some(tap) = tap else { return };
            if !compact && !formatter.format_compact(record, values) {
                return;
            }
            let line = formatter.buffer.borrow();
            // Always UTF-8: serde_json wrote it from `&str`s.
            if let Ok(text) = std::str::from_utf8(&line) {
                tap(text.trim_end_matches('\n'));
            }
        });
    }

    /// Appends a finished line to the queue, or counts it as dropped.
    fn enqueue(&self, line: &[u8]) {
        let Ok(mut pending) = self.queue.lines.lock() else {
            return;
        };
        if pending.lines >= self.queue.capacity
            || pending.bytes.len() + line.len() > self.queue.capacity_bytes
        {
            self.dropped.inc();
            return;
        }
        pending.bytes.extend_from_slice(line);
        pending.lines += 1;
    }
}

impl Drain for FormatAndQueue {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        self.write(record, values, true, None);
        Ok(())
    }
}

/// The writer thread: every [`WRITE_INTERVAL`] (or when asked) it takes
/// everything queued and writes it in one go.
fn write_lines(
    queue: &Queue,
    requests: &Receiver<Control>,
    writer: Box<dyn Write + Send>,
    target: &LogOutput,
) {
    let mut out = writer;
    let mut batch = Vec::new();
    loop {
        let request = match requests.recv_timeout(WRITE_INTERVAL) {
            Ok(request) => Some(request),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Ok(mut pending) = queue.lines.lock() {
            std::mem::swap(&mut batch, &mut pending.bytes);
            pending.lines = 0;
        }
        if !batch.is_empty() {
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        match request {
            Some(Control::Reopen(done)) => {
                let _ = done.send(open(target).map(|fresh| out = fresh));
            }
            Some(Control::Flush(done)) => {
                let _ = done.send(());
            }
            None => {}
        }
    }
    // The logger is gone: write what is left.
    if let Ok(mut pending) = queue.lines.lock() {
        let _ = out.write_all(&pending.bytes).and_then(|()| out.flush());
        pending.bytes.clear();
    }
}

fn open(target: &LogOutput) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        LogOutput::Stdout => Box::new(io::stdout()),
        LogOutput::Stderr => Box::new(io::stderr()),
        LogOutput::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!("cannot open log file {}: {err}", path.display()),
                    )
                })?,
        ),
    })
}

/// Forwards `log` crate records (from actix-web, awc, sled) into slog.
pub struct LogBridge(pub Logger);

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        match record.level() {
            log::Level::Error => slog::error!(self.0, "{}", record.args(); "target" => target),
            _ => slog::warn!(self.0, "{}", record.args(); "target" => target),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_bytes_as_well_as_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogConfig {
            level: Level::Info,
            format: LogFormat::Json,
            output: LogOutput::File(path.clone()),
            redact_query: Vec::new(),
            buffer: 1_000_000,
            buffer_bytes: 64 * 1024,
        };
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let logging = Logging::new(&config, dropped.clone()).unwrap();
        let big = "x".repeat(4096);
        // 20 MB offered far faster than a file takes it: the 64 KiB bound
        // must drop most of it (however the writer thread is scheduled),
        // and account for every line.
        let offered = 5000;
        for _ in 0..offered {
            slog::info!(logging.logger, "big"; "value" => &big);
        }
        logging.flush();
        let written = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert!(dropped.get() > 0, "nothing was dropped");
        assert!(written < offered / 2, "{written} lines were queued");
        assert_eq!(written + dropped.get(), offered);
    }

    fn config(path: &std::path::Path, level: Level, format: LogFormat) -> LogConfig {
        LogConfig {
            level,
            format,
            output: LogOutput::File(path.to_owned()),
            redact_query: Vec::new(),
            buffer: 1000,
            buffer_bytes: 1 << 20,
        }
    }

    /// Record fields as the access log gives them: a `KV`.
    struct Fields;

    impl KV for Fields {
        fn serialize(&self, _: &Record, s: &mut dyn slog::Serializer) -> slog::Result {
            s.emit_str("path", "/a?\"b\"")?;
            s.emit_u16("status", 404)
        }
    }

    #[test]
    fn the_tap_gets_the_line_the_log_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let logging = Logging::new(&config(&path, Level::Info, LogFormat::Json), dropped).unwrap();
        let mut tapped = Vec::new();
        let mut tap = |line: &str| tapped.push(line.to_owned());
        logging.log_and_tap(Level::Warning, "access", &Fields, Some(&mut tap));
        // Below the level: not written, still tapped.
        logging.log_and_tap(Level::Debug, "access", &Fields, Some(&mut tap));
        logging.log_and_tap(Level::Info, "access", &Fields, None);
        logging.flush();
        let written = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(tapped[0], lines[0]);
        let debug: serde_json::Value = serde_json::from_str(&tapped[1]).unwrap();
        assert_eq!(debug["level"], "debug");
        assert_eq!(debug["msg"], "access");
        assert_eq!(debug["path"], "/a?\"b\"");
        assert_eq!(debug["status"], 404);
        assert!(debug["timestamp"].is_string());
    }

    #[test]
    fn the_tap_gets_a_compact_line_when_the_log_is_pretty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let logging =
            Logging::new(&config(&path, Level::Info, LogFormat::Pretty), dropped).unwrap();
        let mut tapped = String::new();
        logging.log_and_tap(
            Level::Info,
            "access",
            &Fields,
            Some(&mut |line: &str| tapped = line.to_owned()),
        );
        logging.flush();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.lines().count() > 1, "pretty lines are indented");
        assert!(!tapped.contains('\n'));
        let from_log: serde_json::Value = serde_json::from_str(&written).unwrap();
        let from_tap: serde_json::Value = serde_json::from_str(&tapped).unwrap();
        for key in ["msg", "level", "path", "status"] {
            assert_eq!(from_log[key], from_tap[key], "{key}");
        }
    }
}
