//! A private Redis server per test: `redis-server` (Debian's, installed by
//! the test command) on a free loopback port, with its data in a temporary
//! directory, killed when dropped. It can be killed, paused with SIGSTOP
//! and restarted on the same port, to test what the gateway does then.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::gateway::free_port;

/// A running (or stopped) private Redis.
pub struct Redis {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// `appendonly yes` with `appendfsync always`: every acknowledged write
    /// survives a restart.
    persistent: bool,
    /// Serves TLS only, with this certificate and key (PEM files).
    tls: Option<(PathBuf, PathBuf)>,
}

impl Redis {
    /// A Redis without persistence.
    pub fn start() -> Redis {
        Redis::launch(false)
    }

    /// A Redis whose every acknowledged write survives a restart.
    pub fn persistent() -> Redis {
        Redis::launch(true)
    }

    /// A Redis that speaks only TLS, with `cert` for `localhost`.
    pub fn tls(cert: &super::tls::TestCert) -> Redis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = cert.write(dir.path());
        Redis::launch_in(dir, false, Some(files))
    }

    fn launch(persistent: bool) -> Redis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Redis::launch_in(dir, persistent, None)
    }

    fn launch_in(
        dir: tempfile::TempDir,
        persistent: bool,
        tls: Option<(PathBuf, PathBuf)>,
    ) -> Redis {
        let mut redis = Redis {
            child: None,
            addr: free_port(),
            dir,
            persistent,
            tls,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let port = self.addr.port().to_string();
        let dir: PathBuf = self.dir.path().into();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port]),
            Some((cert, key)) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        command
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&dir)
            .args(["--maxmemory-policy", "noeviction"]);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (the test command installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` (over TLS: accepts connections).
    pub fn answers(&self) -> bool {
        if self.tls.is_some() {
            return TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        }
        self.command("PING")
            .is_some_and(|reply| reply.starts_with("+PONG"))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends one inline command; the raw reply, if any came within a second.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 65536];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The `[storage]` and `[storage.redis]` lines of a gateway on this
    /// Redis, with `extra` lines added to `[storage.redis]`.
    pub fn storage_toml(&self, extra: &[&str]) -> String {
        let mut toml = format!("[storage.redis]\nurl = \"{}\"\n", self.url());
        for line in extra {
            toml.push_str(line);
            toml.push('\n');
        }
        toml
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("a running redis-server");
        // SAFETY: kill(2) on the pid of a child this test owns.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
    }
}
