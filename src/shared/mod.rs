//! The Redis (or Valkey) server several nodes share (`storage.backend =
//! "redis"`): one connection, its health, and the feed of changes.
//!
//! actix-web runs one single-threaded runtime per worker, and the redis
//! crate's connection manager reconnects on the runtime that polls it. So
//! each worker thread has a connection of its own, made and used only on
//! that thread (no hop to another thread on the request path);
//! code off any runtime (blocking reads of records) hands its call to a
//! thread of its own that owns one more connection, with the health check
//! and the change feed. Every call waits at most `command_timeout`, even one
//! queued behind a reconnection. A call that timed out is never sent again:
//! what it meant is for the caller to decide (a rate limit's `fail` mode, a
//! `503`).
//!
//! Every write to shared records appends to a stream, the change feed
//! ([`feed`]); each node tails it to drop what it holds in memory that
//! another node changed.

pub mod feed;
mod health;
pub mod keys;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

pub use feed::Change;

use crate::config::{redact_url_password, RedisConfig};
use crate::storage::now_ms;
use crate::telemetry::Metrics;

/// A call to Redis that did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis refused the call: {0}")]
    Failed(String),
    #[error("the Redis connection is shut down")]
    Closed,
    #[error("Redis is down (it has not answered its health checks)")]
    Down,
}

impl From<SharedError> for sled::Error {
    /// The stored records speak sled's error type on both backends, so a
    /// Redis failure takes the same path as a disk failure (a clear `503`).
    fn from(err: SharedError) -> sled::Error {
        sled::Error::Io(std::io::Error::other(err.to_string()))
    }
}

type Job = Box<dyn FnOnce(ConnectionManager) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The shared server: cheap to clone, usable from any thread or runtime.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::UnboundedSender<Job>,
    keys: keys::Keys,
    /// This process, on the change feed: random at every start.
    node: String,
    command_timeout: Duration,
    /// The last pings were answered: calls are worth sending.
    answering: AtomicBool,
    /// Answering, and following the change feed: what this node holds in
    /// memory is current.
    up: AtomicBool,
    /// When `up` last turned false (Unix ms), 0 while up.
    down_since: AtomicU64,
    /// The two halves of `up`, changed together under this lock.
    health: Mutex<Health>,
    client: redis::Client,
    config: RedisConfig,
    /// Bumped when the health check gives up on a connection that stopped
    /// answering: the workers' connections are made afresh too.
    generation: AtomicU64,
    /// Tells this connection apart from others in the same process (for
    /// the workers' connections).
    id: u64,
    metrics: Metrics,
    /// The changes other nodes made, until the application takes them.
    changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

impl Shared {
    /// Starts the connection thread and waits (at most `connect_timeout`,
    /// a few times) for Redis to answer a first `PING`: a node does not
    /// start serving on a store it cannot reach.
    pub fn connect(
        config: &RedisConfig,
        metrics: &Metrics,
        logger: &slog::Logger,
    ) -> Result<Shared, String> {
        let client = client(config)?;
        let (jobs, queue) = mpsc::unbounded_channel();
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let shared = Shared {
            inner: Arc::new(Inner {
                jobs,
                keys: keys::Keys::new(&config.key_prefix),
                node: crate::auth::token::to_hex(&rand::random::<[u8; 8]>()),
                command_timeout: config.command_timeout,
                // Answering until the first call says otherwise: that call is
                // the startup's own check.
                answering: AtomicBool::new(true),
                up: AtomicBool::new(false),
                down_since: AtomicU64::new(now_ms()),
                health: Mutex::new(Health {
                    answering: true,
                    following: false,
                }),
                client: client.clone(),
                config: config.clone(),
                generation: AtomicU64::new(0),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                metrics: metrics.clone(),
                changes: Mutex::new(Some(changes)),
            }),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start the Redis thread: {err}"))?;
        let thread = ConnectionThread {
            client,
            config: config.clone(),
            shared: shared.clone(),
            logger: logger.clone(),
            changes: changes_tx,
        };
        std::thread::Builder::new()
            .name("redis".into())
            .spawn(move || runtime.block_on(thread.run(queue)))
            .map_err(|err| format!("cannot start the Redis thread: {err}"))?;
        let deadline = Instant::now() + (config.connect_timeout * 4).max(Duration::from_secs(2));
        loop {
            match shared.call_blocking("ping", |mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            }) {
                Ok(_) => break,
                Err(err) if Instant::now() >= deadline => {
                    return Err(format!(
                        "storage.redis.url {}: cannot reach Redis: {err}",
                        redact_url_password(&config.url)
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        // Serving starts in step with the other nodes: following the feed.
        while !shared.is_up() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "storage.redis.url {}: cannot read the change feed ({})",
                    redact_url_password(&config.url),
                    shared.keys().changes()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(shared)
    }

    /// The names of the shared keys.
    pub fn keys(&self) -> &keys::Keys {
        &self.inner.keys
    }

    /// This process's name on the change feed.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Adds the feed entry announcing `change` to `pipe`.
    pub fn announce(&self, pipe: &mut redis::Pipeline, change: &Change) {
        feed::append(pipe, self.keys().changes(), self.node(), change);
    }

    /// Whether Redis answers and this node follows the change feed, so
    /// what it holds in memory is current.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// How long Redis has been down, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        match self.inner.down_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }

    /// The changes other nodes make, for the one task that applies them.
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.inner
            .changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Records whether pings are answered (`answering`) or the feed is
    /// followed (`following`), and logs when the node goes out of step
    /// with Redis or back.
    fn mark(&self, change: impl FnOnce(&mut Health), why: &str, logger: &slog::Logger) {
        let mut health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let was = health.answering && health.following;
        change(&mut health);
        let up = health.answering && health.following;
        self.inner
            .answering
            .store(health.answering, Ordering::Relaxed);
        self.inner.up.store(up, Ordering::Relaxed);
        self.inner.metrics.redis_up.set(i64::from(up));
        if was == up {
            return;
        }
        if up {
            self.inner.down_since.store(0, Ordering::Relaxed);
            slog::info!(logger, "Redis answers again; resynchronising");
        } else {
            self.inner.down_since.store(now_ms(), Ordering::Relaxed);
            slog::error!(logger, "Redis is down: sessions are served from memory for storage.redis.session_fallback, logins and admin changes answer 503, and /readyz reports not ready";
                "error" => why);
        }
    }

    /// Runs `call` on the connection and waits for its answer, at most
    /// `command_timeout`. `name` labels its metrics.
    pub async fn call<T, F, Fut>(&self, name: &'static str, call: F) -> Result<T, SharedError>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let started = Instant::now();
        let result = if self.inner.answering.load(Ordering::Relaxed) {
            let (conn, fresh) = self.worker_connection();
            // A first call also connects (and authenticates).
            let patience = if fresh {
                self.inner.command_timeout + self.inner.config.connect_timeout
            } else {
                self.inner.command_timeout
            };
            match tokio::time::timeout(patience, call(conn)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(err)) => {
                    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
                        self.drop_worker_connection();
                    }
                    Err(SharedError::Failed(describe(&err)))
                }
                Err(_) => {
                    // The connection may be dead without knowing it (a
                    // silently dropped idle connection): the next call
                    // makes a new one.
                    self.drop_worker_connection();
                    Err(SharedError::Timeout(patience))
                }
            }
        } else {
            Err(SharedError::Down)
        };
        self.observe(name, started, result.is_ok());
        result
    }

    /// Says that the node has read everything again after missing part
    /// of the change feed: it is in step with the other nodes once more.
    pub fn resynced(&self, logger: &slog::Logger) {
        self.mark(|h| h.following = true, "", logger);
    }

    /// Makes every worker connect afresh on its next call.
    fn renew_connections(&self) {
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// This thread's own connection (an actix worker's, made on its
    /// runtime, where its reconnections then run too), and whether it is
    /// new: made on first use, after a failure, and after the health check
    /// gave up on the old ones.
    fn worker_connection(&self) -> (ConnectionManager, bool) {
        let generation = self.inner.generation.load(Ordering::Relaxed);
        WORKER_CONNECTION.with(|held| {
            let mut held = held.borrow_mut();
            match &*held {
                Some((id, g, conn)) if *id == self.inner.id && *g == generation => {
                    (conn.clone(), false)
                }
                _ => {
                    let conn = new_manager(&self.inner.client, &self.inner.config);
                    *held = Some((self.inner.id, generation, conn.clone()));
                    (conn, true)
                }
            }
        })
    }

    fn drop_worker_connection(&self) {
        WORKER_CONNECTION.with(|held| held.borrow_mut().take());
    }

    /// [`call`](Shared::call) for code that cannot await: blocks the calling
    /// thread for at most `command_timeout`.
    pub fn call_blocking<T, F, Fut>(&self, name: &'static str, call: F) -> Result<T, SharedError>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let started = Instant::now();
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let submitted = self.submit(call, move |result| {
            let _ = reply.send(result);
        });
        let result = match submitted {
            Err(err) => Err(err),
            Ok(()) => match answer.recv_timeout(self.inner.command_timeout) {
                Ok(result) => result.map_err(|err| SharedError::Failed(describe(&err))),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    Err(SharedError::Timeout(self.inner.command_timeout))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(SharedError::Closed),
            },
        };
        self.observe(name, started, result.is_ok());
        result
    }

    /// Hands `call` to the connection thread. While the health checks say
    /// Redis is down, refuses at once instead: every caller would otherwise
    /// wait out `command_timeout` on each call of an outage.
    fn submit<T, F, Fut>(
        &self,
        call: F,
        reply: impl FnOnce(redis::RedisResult<T>) + Send + 'static,
    ) -> Result<(), SharedError>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        if !self.inner.answering.load(Ordering::Relaxed) {
            return Err(SharedError::Down);
        }
        let job: Job = Box::new(move |conn| Box::pin(async move { reply(call(conn).await) }));
        self.inner.jobs.send(job).map_err(|_| SharedError::Closed)
    }

    fn observe(&self, name: &'static str, started: Instant, ok: bool) {
        let metrics = &self.inner.metrics;
        if ok {
            metrics
                .redis_call_duration
                .with_label_values(&[name])
                .observe(started.elapsed().as_secs_f64());
        } else {
            metrics.redis_errors.with_label_values(&[name]).inc();
        }
    }
}

/// Ids of connections to Redis made by this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// A worker thread's connection: whose (the `Shared` id), of which
    /// generation, and the connection.
    static WORKER_CONNECTION: std::cell::RefCell<Option<(u64, u64, ConnectionManager)>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether pings are answered, and whether the change feed is followed.
struct Health {
    answering: bool,
    following: bool,
}

/// A Redis error as logs and answers may show it: its kind and detail,
/// never the URL (which may hold a password).
fn describe(err: &redis::RedisError) -> String {
    match err.detail() {
        Some(detail) => format!("{:?}: {detail}", err.kind()),
        None => format!("{:?}", err.kind()),
    }
}

/// The client for `config`, with the password from the setting (best given
/// through the environment) in place of any in the URL.
fn client(config: &RedisConfig) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo as _;
    let invalid = |err: redis::RedisError| {
        format!(
            "storage.redis.url {}: {}",
            redact_url_password(&config.url),
            describe(&err)
        )
    };
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(invalid)?;
    if let Some(password) = &config.password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    match &config.tls_ca_file {
        None => redis::Client::open(info).map_err(invalid),
        Some(path) => {
            let root_cert = std::fs::read(path)
                .map_err(|err| format!("storage.redis.tls_ca_file {}: {err}", path.display()))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(info, certificates).map_err(invalid)
        }
    }
}

/// The thread that owns the connection.
struct ConnectionThread {
    client: redis::Client,
    config: RedisConfig,
    shared: Shared,
    logger: slog::Logger,
    changes: mpsc::UnboundedSender<Change>,
}

impl ConnectionThread {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Job>) {
        let manager = Arc::new(arc_swap::ArcSwap::from_pointee(self.manager()));
        tokio::spawn(health::watch(
            self.shared.clone(),
            manager.clone(),
            self.config.clone(),
            self.client.clone(),
            self.logger.clone(),
        ));
        tokio::spawn(feed::tail(
            self.shared.clone(),
            self.client.clone(),
            self.config.clone(),
            self.changes.clone(),
            self.logger.clone(),
        ));
        while let Some(job) = queue.recv().await {
            // Each call its own task, so calls share the one multiplexed
            // connection instead of waiting for each other.
            tokio::spawn(job((**manager.load()).clone()));
        }
    }

    fn manager(&self) -> ConnectionManager {
        new_manager(&self.client, &self.config)
    }
}

/// A connection manager that connects on first use and reconnects after a
/// broken connection; its own timeouts match the configuration's.
fn new_manager(client: &redis::Client, config: &RedisConfig) -> ConnectionManager {
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client.clone(), settings)
        .expect("a lazy manager does not connect, so it cannot fail")
}
