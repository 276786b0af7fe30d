//! The system and access log: slog records, formatted as JSON by slog-json on
//! a dedicated thread (slog-async), so a slow sink never blocks a request.
//!
//! Records that arrive while the channel is full are dropped and counted in
//! `portcullis_log_dropped_total` rather than blocking the request path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus::IntCounter;
use slog::{o, Drain, Level, Logger, OwnedKVList, Record};

use crate::config::{LogConfig, LogFormat, LogOutput};

/// The running logger and the handles to reconfigure it.
pub struct Logging {
    pub logger: Logger,
    level: Arc<AtomicUsize>,
    sink: LogSink,
    guard: Mutex<Option<slog_async::AsyncGuard>>,
}

impl Logging {
    /// Builds the logger described by `config`. Fails only when the output
    /// file cannot be opened.
    pub fn new(config: &LogConfig, dropped: IntCounter) -> io::Result<Logging> {
        let sink = LogSink::open(&config.output)?;
        let json = slog_json::Json::new(sink.clone())
            .set_newlines(true)
            .set_flush(true)
            .set_pretty(config.format == LogFormat::Pretty)
            .add_key_value(o!(
                "timestamp" => slog::PushFnValue(|_, ser| {
                    ser.emit(humantime::format_rfc3339_millis(SystemTime::now()).to_string())
                }),
                "level" => slog::FnValue(|record| level_name(record.level())),
                "msg" => slog::PushFnValue(|record, ser| ser.emit(record.msg())),
            ))
            .build();
        let (core, guard) = slog_async::AsyncCore::custom(slog::IgnoreResult::new(json))
            .chan_size(config.buffer)
            .thread_name("portcullis-log".into())
            .build_with_guard();
        let level = Arc::new(AtomicUsize::new(config.level.as_usize()));
        let drain = RuntimeLevel {
            level: level.clone(),
            drain: CountDrops { core, dropped },
        };
        Ok(Logging {
            logger: Logger::root(drain.fuse(), o!()),
            level,
            sink,
            guard: Mutex::new(Some(guard)),
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

    /// Reopens the output file (after logrotate moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        self.sink.reopen()
    }

    /// Writes out every queued record; called once at shutdown.
    pub fn flush(&self) {
        if let Ok(mut guard) = self.guard.lock() {
            // Dropping the guard waits for the logging thread to drain.
            guard.take();
        }
        let _ = self.sink.flush_now();
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

/// Hands records to the logging thread, counting the ones a full channel drops.
struct CountDrops {
    core: slog_async::AsyncCore,
    dropped: IntCounter,
}

impl Drain for CountDrops {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if self.core.log(record, values).is_err() {
            self.dropped.inc();
        }
        Ok(())
    }
}

/// Where formatted lines are written: stdout, stderr or a reopenable file.
#[derive(Clone)]
struct LogSink {
    target: LogOutput,
    writer: Arc<Mutex<BufWriter<Box<dyn Write + Send>>>>,
}

impl LogSink {
    fn open(target: &LogOutput) -> io::Result<LogSink> {
        Ok(LogSink {
            target: target.clone(),
            writer: Arc::new(Mutex::new(BufWriter::with_capacity(
                64 * 1024,
                Self::open_writer(target)?,
            ))),
        })
    }

    fn open_writer(target: &LogOutput) -> io::Result<Box<dyn Write + Send>> {
        Ok(match target {
            LogOutput::Stdout => Box::new(io::stdout()),
            LogOutput::Stderr => Box::new(io::stderr()),
            LogOutput::File(path) => Box::new(append(path)?),
        })
    }

    fn reopen(&self) -> io::Result<()> {
        if let LogOutput::File(_) = self.target {
            let fresh = Self::open_writer(&self.target)?;
            let mut writer = self
                .writer
                .lock()
                .map_err(|_| io::Error::other("log sink poisoned"))?;
            writer.flush()?;
            *writer = BufWriter::with_capacity(64 * 1024, fresh);
        }
        Ok(())
    }

    fn flush_now(&self) -> io::Result<()> {
        match self.writer.lock() {
            Ok(mut writer) => writer.flush(),
            Err(_) => Ok(()),
        }
    }
}

fn append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot open log file {}: {err}", path.display()),
            )
        })
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.writer.lock() {
            Ok(mut writer) => writer.write(buf),
            Err(_) => Err(io::Error::other("log sink poisoned")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_now()
    }
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
