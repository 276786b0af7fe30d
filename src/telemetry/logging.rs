//! The system and access log: slog records formatted as JSON by slog-json,
//! written by a dedicated thread so a slow sink never blocks a request.
//!
//! Each record is formatted on the thread that logs it, into a reusable
//! per-thread buffer, and the finished line is queued for the writer thread.
//! (Queuing the record itself, as slog-async does, means boxing every field
//! value so it can cross threads — per request, that cost more than the
//! formatting.) The writer batches whatever is queued into one write.
//! Lines that arrive while the queue is full are dropped and counted in
//! `portcullis_log_dropped_total` rather than blocking the request path.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use prometheus::IntCounter;
use slog::{o, Drain, Level, Logger, OwnedKVList, Record};

use crate::config::{LogConfig, LogFormat, LogOutput};

/// The running logger and the handles to reconfigure it.
pub struct Logging {
    pub logger: Logger,
    level: Arc<AtomicUsize>,
    queue: SyncSender<Message>,
}

/// What the writer thread is asked to do.
enum Message {
    Line(Vec<u8>),
    Reopen(SyncSender<io::Result<()>>),
    Flush(SyncSender<()>),
}

impl Logging {
    /// Builds the logger described by `config` and starts its writer thread.
    /// Fails only when the output file cannot be opened.
    pub fn new(config: &LogConfig, dropped: IntCounter) -> io::Result<Logging> {
        let writer = open(&config.output)?;
        let (queue, lines) = mpsc::sync_channel(config.buffer);
        let target = config.output.clone();
        std::thread::Builder::new()
            .name("portcullis-log".into())
            .spawn(move || write_lines(lines, writer, target))?;
        let level = Arc::new(AtomicUsize::new(config.level.as_usize()));
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let drain = RuntimeLevel {
            level: level.clone(),
            drain: FormatAndQueue {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                pretty: config.format == LogFormat::Pretty,
                queue: queue.clone(),
                dropped,
            },
        };
        Ok(Logging {
            logger: Logger::root(drain.fuse(), o!()),
            level,
            queue,
        })
    }

    /// Whether records at `level` are written at all; checked before building
    /// an access-log record so filtered requests cost nothing.
    pub fn enabled(&self, level: Level) -> bool {
        level.as_usize() <= self.level.load(Ordering::Relaxed)
    }

    /// Applies a reloaded configuration's level.
    pub fn set_level(&self, level: Level) {
        self.level.store(level.as_usize(), Ordering::Relaxed);
    }

    /// Reopens the output file (after logrotate moved it away), once every
    /// line queued before it has been written to the old one.
    pub fn reopen(&self) -> io::Result<()> {
        let (done, result) = mpsc::sync_channel(1);
        self.queue
            .send(Message::Reopen(done))
            .map_err(|_| io::Error::other("the log writer has stopped"))?;
        result
            .recv()
            .map_err(|_| io::Error::other("the log writer has stopped"))?
    }

    /// Waits until every queued line is written; called at shutdown.
    pub fn flush(&self) {
        let (done, flushed) = mpsc::sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() {
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

/// Formats a record with slog-json on the calling thread and queues the line.
struct FormatAndQueue {
    /// Tells this logger's per-thread formatter from another's (tests, benches).
    id: usize,
    pretty: bool,
    queue: SyncSender<Message>,
    dropped: IntCounter,
}

/// A slog-json formatter writing into a buffer the caller can take from.
struct Formatter {
    id: usize,
    json: slog_json::Json<LineBuffer>,
    buffer: Rc<RefCell<Vec<u8>>>,
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
        let json = slog_json::Json::new(LineBuffer(buffer.clone()))
            .set_newlines(true)
            .set_pretty(self.pretty)
            .add_key_value(o!(
                "timestamp" => slog::PushFnValue(|_, ser| {
                    ser.emit(format_args!("{}", humantime::format_rfc3339_millis(SystemTime::now())))
                }),
                "level" => slog::FnValue(|record| level_name(record.level())),
                "msg" => slog::PushFnValue(|record, ser| ser.emit(record.msg())),
            ))
            .build();
        Formatter {
            id: self.id,
            json,
            buffer,
        }
    }
}

impl Drain for FormatAndQueue {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let line = FORMATTER.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|f| f.id != self.id) {
                *slot = Some(self.formatter());
            }
            let formatter = slot.as_mut()?;
            formatter.buffer.borrow_mut().clear();
            formatter.json.log(record, values).ok()?;
            let line = formatter.buffer.borrow().clone();
            Some(line)
        });
        if let Some(line) = line {
            if let Err(TrySendError::Full(_)) = self.queue.try_send(Message::Line(line)) {
                self.dropped.inc();
            }
        }
        Ok(())
    }
}

/// The writer thread: writes lines as they come, in batches, flushing
/// whenever the queue runs dry.
fn write_lines(lines: Receiver<Message>, writer: Box<dyn Write + Send>, target: LogOutput) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    while let Ok(message) = lines.recv() {
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Reopen(done) => {
                    let _ = out.flush();
                    let result =
                        open(&target).map(|fresh| out = BufWriter::with_capacity(64 * 1024, fresh));
                    let _ = done.send(result);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
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
