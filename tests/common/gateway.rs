//! Running the real `portcullis` binary.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::config::Setup;
use super::http::wait_until_healthy;

/// How long a gateway may take to start or stop.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A `portcullis` command with no `PORTCULLIS_*` variables inherited from the
/// test environment.
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs `portcullis ARGS --config FILE` in `dir` with these environment
/// variables, writing `stdin` (if any) to its standard input; stdin is
/// otherwise empty and not a terminal.
fn run_cli(
    dir: &Path,
    config: &Path,
    env: &[(String, String)],
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = command();
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn portcullis");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("a stdin pipe");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for portcullis")
}

/// Log records collected from the gateway, shared with the reader threads.
#[derive(Default)]
pub struct LogBuffer {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    /// Every complete JSON value read; text that is not JSON is kept as a string.
    entries: Vec<Value>,
    /// Everything read, verbatim.
    raw: String,
    /// Partial (pretty-printed) JSON waiting for its remaining lines.
    pending: String,
}

impl LogBuffer {
    fn push_line(&self, line: &str) {
        let mut state = self.state.lock().unwrap();
        state.raw.push_str(line);
        state.raw.push('\n');
        let text = if state.pending.is_empty() {
            line.to_owned()
        } else {
            format!("{}\n{}", state.pending, line)
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => {
                state.pending.clear();
                state.entries.push(value);
            }
            Err(err) if err.is_eof() => state.pending = text,
            Err(_) => {
                state.pending.clear();
                if !text.trim().is_empty() {
                    state.entries.push(Value::String(text));
                }
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// A snapshot of every record so far.
    pub fn entries(&self) -> Vec<Value> {
        self.state.lock().unwrap().entries.clone()
    }

    /// Everything read so far, verbatim.
    pub fn raw(&self) -> String {
        self.state.lock().unwrap().raw.clone()
    }

    /// Waits for a record matching `pred`, panicking with the log after `timeout`.
    pub fn wait_for(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(found) = state.entries.iter().find(|v| pred(v)) {
                return found.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "no matching log record within {timeout:?}; the log so far:\n{}",
                    state.raw
                );
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// A line-by-line reader of a pipe into a [`LogBuffer`].
fn read_lines(source: impl Read + Send + 'static, into: Arc<LogBuffer>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    into.push_line(text.trim_end_matches(['\n', '\r']));
                }
            }
        }
    })
}

/// Follows a log file by path, like `tail -F`: starts over when the file at
/// the path is replaced (log rotation).
fn tail_file(path: PathBuf, into: Arc<LogBuffer>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut inode = None;
        let mut offset = 0u64;
        let mut partial = String::new();
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if let Ok(meta) = std::fs::metadata(&path) {
                if inode != Some(meta.ino()) {
                    inode = Some(meta.ino());
                    offset = 0;
                    partial.clear();
                }
                if meta.len() > offset {
                    if let Ok(mut file) = std::fs::File::open(&path) {
                        let mut chunk = String::new();
                        if file.seek(SeekFrom::Start(offset)).is_ok()
                            && file.read_to_string(&mut chunk).is_ok()
                        {
                            offset += chunk.len() as u64;
                            partial.push_str(&chunk);
                            while let Some(end) = partial.find('\n') {
                                let line: String = partial.drain(..=end).collect();
                                into.push_line(line.trim_end_matches(['\n', '\r']));
                            }
                        }
                    }
                }
            }
            if stopping {
                return;
            }
            // A polling interval for following the file, not a test wait.
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// How to launch a gateway: the configuration, environment and working directory.
pub struct Launch {
    setup: Option<Setup>,
    env: Vec<(String, String)>,
    dir: TempDir,
}

/// A gateway process that exited instead of starting.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
}

impl Launch {
    /// A gateway run with `serve --config FILE` for this configuration.
    pub fn new(setup: Setup) -> Launch {
        Launch {
            setup: Some(setup),
            env: Vec::new(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// A gateway run with `serve` and no `--config`, in a fresh temporary
    /// working directory, with both listeners moved to ephemeral ports.
    pub fn embedded() -> Launch {
        Launch {
            setup: None,
            env: Vec::new(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
        .env("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS_ADMIN__LISTEN", "127.0.0.1:0")
    }

    /// Sets an environment variable for the gateway.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The temporary directory the gateway runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The same launch with another configuration: a relaunch after the
    /// test rewrote the file starts with what it wrote.
    pub fn with_setup(mut self, setup: Setup) -> Launch {
        self.setup = Some(setup);
        self
    }

    /// Runs the command line (`user ...`, `session ...`) against this
    /// launch's configuration file, as written for the gateway, and so
    /// against the storage the gateway will use.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let setup = self
            .setup
            .as_ref()
            .expect("the command line needs a configuration file");
        let config_path = self.dir.path().join("portcullis.toml");
        std::fs::write(&config_path, setup.render(self.dir.path())).expect("write the config");
        run_cli(self.dir.path(), &config_path, &self.env, args, stdin)
    }

    /// Starts the gateway and waits until it serves; panics if it does not.
    pub fn start(self) -> Gateway {
        match self.try_start() {
            Ok(gateway) => gateway,
            Err(exited) => panic!(
                "the gateway exited with {} instead of starting\nstderr:\n{}\nstdout:\n{}",
                exited.status, exited.stderr, exited.stdout
            ),
        }
    }

    /// Starts the gateway expecting it to fail, and returns how it exited.
    pub fn expect_failure(self) -> Exited {
        match self.try_start() {
            Ok(gateway) => panic!(
                "the gateway started although it should have failed; log:\n{}",
                gateway.raw_log()
            ),
            Err(exited) => exited,
        }
    }

    fn try_start(self) -> Result<Gateway, Exited> {
        let dir = self.dir;
        let config_path = dir.path().join("portcullis.toml");
        let original = self.setup.clone();
        let env = self.env.clone();
        let mut setup = self.setup.clone();
        // A gateway that logs only warnings and errors never prints its
        // "started" line, so give it fixed free ports and poll /healthz instead.
        let quiet = setup.as_ref().is_some_and(|s| {
            matches!(
                s.value("log", "level", dir.path()).as_deref(),
                Some("warn" | "error")
            )
        });
        let mut fixed = None;
        if quiet {
            let proxy = free_port();
            let admin = free_port();
            let s = setup.take().unwrap();
            setup = Some(
                s.server(&format!("listen = \"{proxy}\""))
                    .admin(&format!("listen = \"{admin}\"")),
            );
            fixed = Some((proxy, admin));
        }
        let log_file = setup
            .as_ref()
            .and_then(|s| s.value("log", "output", dir.path()))
            .filter(|o| o != "stdout" && o != "stderr")
            .map(PathBuf::from);

        let mut cmd = command();
        cmd.arg("serve");
        if let Some(setup) = &setup {
            std::fs::write(&config_path, setup.render(dir.path())).expect("write the config");
            cmd.arg("--config").arg(&config_path);
        }
        cmd.current_dir(dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn portcullis");

        let logs = Arc::new(LogBuffer::default());
        let stdout = Arc::new(LogBuffer::default());
        let stderr = Arc::new(LogBuffer::default());
        let stop_tail = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        let child_stdout = child.stdout.take().unwrap();
        match &log_file {
            Some(path) => {
                readers.push(read_lines(child_stdout, stdout.clone()));
                readers.push(tail_file(path.clone(), logs.clone(), stop_tail.clone()));
            }
            None => readers.push(read_lines(child_stdout, logs.clone())),
        }
        readers.push(read_lines(child.stderr.take().unwrap(), stderr.clone()));

        let mut gateway = Gateway {
            child,
            dir: Some(dir),
            setup: original,
            env,
            config_path,
            proxy_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            logs,
            stdout,
            stderr,
            stop_tail,
            readers,
            exit: None,
        };

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = gateway.child.try_wait().expect("try_wait") {
                gateway.exit = Some(status);
                gateway.join_readers();
                return Err(Exited {
                    status,
                    stderr: gateway.stderr.raw(),
                    stdout: format!("{}{}", gateway.stdout.raw(), gateway.logs.raw()),
                });
            }
            if let Some((proxy, admin)) = fixed {
                if wait_until_healthy(admin, Duration::from_millis(100)) {
                    gateway.proxy_addr = proxy;
                    gateway.admin_addr = admin;
                    return Ok(gateway);
                }
            } else if let Some(started) = gateway
                .logs
                .entries()
                .into_iter()
                .find(|v| v["msg"] == "portcullis started")
            {
                gateway.proxy_addr = started["proxy_addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("proxy_addr in the started line");
                gateway.admin_addr = started["admin_addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("admin_addr in the started line");
                return Ok(gateway);
            }
            if Instant::now() > deadline {
                panic!(
                    "the gateway did not start within {START_TIMEOUT:?}\nlog:\n{}\nstderr:\n{}",
                    gateway.logs.raw(),
                    gateway.stderr.raw()
                );
            }
            // Wake on new output, or re-check the process every 50 ms.
            let state = gateway.logs.state.lock().unwrap();
            let seen = state.entries.len();
            let _ =
                gateway
                    .logs
                    .changed
                    .wait_timeout_while(state, Duration::from_millis(50), |s| {
                        s.entries.len() == seen
                    });
        }
    }
}

fn signal_number(name: &str) -> libc::c_int {
    match name {
        "HUP" => libc::SIGHUP,
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        other => panic!("unsupported signal {other}"),
    }
}

/// A free loopback port (bound and released at once).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A running gateway; killed when dropped.
pub struct Gateway {
    child: Child,
    /// Always `Some`, until [`Gateway::relaunch`] hands it on.
    dir: Option<TempDir>,
    /// How it was launched, for [`Gateway::relaunch`].
    setup: Option<Setup>,
    env: Vec<(String, String)>,
    config_path: PathBuf,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    logs: Arc<LogBuffer>,
    stdout: Arc<LogBuffer>,
    stderr: Arc<LogBuffer>,
    stop_tail: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Gateway {
    /// Starts a gateway with this configuration and waits until it serves.
    pub fn start(setup: Setup) -> Gateway {
        Launch::new(setup).start()
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `http://<proxy>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy_addr, path)
    }

    /// `http://<admin>/<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the gateway's directory").path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Rewrites the configuration file (e.g. before a SIGHUP).
    pub fn write_config(&self, setup: &Setup) {
        std::fs::write(&self.config_path, setup.render(self.dir())).expect("rewrite the config");
    }

    /// Waits for a log record matching `pred`.
    pub fn wait_for_log(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        self.logs.wait_for(pred, timeout)
    }

    /// Waits for the access-log record of the request with this id.
    pub fn access_line(&self, request_id: &str) -> Value {
        self.wait_for_log(
            |v| v["msg"] == "access" && v["request_id"] == request_id,
            Duration::from_secs(10),
        )
    }

    /// Every log record so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.entries()
    }

    /// Everything the gateway wrote: its log, stdout and stderr, verbatim.
    pub fn raw_log(&self) -> String {
        format!(
            "{}{}{}",
            self.logs.raw(),
            self.stdout.raw(),
            self.stderr.raw()
        )
    }

    /// What the gateway wrote to stdout, when the log goes to a file.
    pub fn stdout(&self) -> String {
        self.stdout.raw()
    }

    /// What the gateway wrote to stderr.
    pub fn stderr(&self) -> String {
        self.stderr.raw()
    }

    /// Sends a signal: "HUP", "TERM" or "INT", once the gateway has installed
    /// its handler for it.
    ///
    /// The gateway prints "portcullis started" before its signal handlers are
    /// installed, and a signal in that window kills it (see the ignored test
    /// `lifecycle::a_signal_right_after_startup_is_handled`), so this waits for
    /// the signal to show up in the process's caught-signal mask first.
    pub fn signal(&self, name: &str) {
        let signal = signal_number(name);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.catches(signal) {
            if Instant::now() > deadline {
                panic!("the gateway never installed a handler for SIG{name}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.signal_now(name);
    }

    /// Sends a signal at once, whether or not the gateway handles it yet.
    pub fn signal_now(&self, name: &str) {
        let signal = signal_number(name);
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a valid signal number has no memory-safety preconditions.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill -{name} {pid}");
    }

    /// Whether the process has a handler installed for `signal` (SigCgt in
    /// /proc/<pid>/status); panics if the process has already exited.
    fn catches(&self, signal: libc::c_int) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            !field("State:").starts_with('Z'),
            "the gateway has exited; log:\n{}",
            self.logs.raw()
        );
        let caught = u64::from_str_radix(&field("SigCgt:"), 16).expect("a SigCgt mask");
        caught & (1 << (signal - 1)) != 0
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                self.join_readers();
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "the gateway did not exit within {timeout:?}; log:\n{}",
                    self.raw_log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the gateway with SIGTERM and waits until it has exited cleanly.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(START_TIMEOUT);
        assert!(
            status.success(),
            "the gateway exited with {status} on SIGTERM; log:\n{}",
            self.raw_log()
        );
    }

    /// Kills the gateway with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            self.child.kill().expect("kill -9 the gateway");
        }
        self.wait_exit(START_TIMEOUT);
    }

    /// Runs the command line (`user ...`, `session ...`) against this
    /// gateway's configuration file, whether the gateway runs or not.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(self.dir(), &self.config_path, &self.env, args, stdin)
    }

    /// A launch of the same configuration in the same directory (so on the
    /// same storage), for a gateway that has exited. The listeners get new
    /// ephemeral ports.
    pub fn relaunch(mut self) -> Launch {
        assert!(
            self.exit.is_some(),
            "stop or kill the gateway before relaunching it"
        );
        Launch {
            setup: self.setup.clone(),
            env: self.env.clone(),
            dir: self.dir.take().expect("the gateway's directory"),
        }
    }

    /// The peak resident set size (VmHWM) of the gateway process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("a VmHWM line");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("a number of kB");
        kib * 1024
    }

    fn join_readers(&mut self) {
        self.stop_tail.store(true, Ordering::Relaxed);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.join_readers();
    }
}
