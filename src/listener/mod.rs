//! The listeners: TCP accept, a cap on open connections, TLS, and HTTP/1.1
//! or HTTP/2 (by ALPN) into an actix-web app, with what actix-http leaves
//! to its user on a connection facing hostile clients:
//! - `header_timeout` for every request head, not only the first (actix
//!   times the first only, so a kept-alive connection could trickle its
//!   second head for ever);
//! - one HTTP/1 request at a time, so pipelined requests are each framed by
//!   their own head (see `framing`);
//! - nothing read or served after an answer that ends the connection;
//! - a chunk declaring more body than allowed is known before its data.
//!
//! Each accepted socket is wrapped in a [`watched::Watched`] stream that
//! shares a [`Connection`] record with the requests served on it: a request
//! takes an [`Answering`] from it when its head is read and drops it when
//! its answer is done.

mod framing;
mod watched;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::header;
use actix_http::{ConnectionType, HttpService, Protocol, Request, Response, ResponseHead, Version};
use actix_server::{Server, ServerBuilder};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{AppConfig, Service, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::HttpRequest;
use prometheus::{IntCounter, IntGauge};
use tokio::net::TcpStream;

use crate::error::GatewayError;
use crate::telemetry::Metrics;
use watched::{Counted, Watched};

/// How one listener is set up.
pub struct Listener {
    /// `proxy` or `admin`: names the listener in metrics and errors.
    pub name: &'static str,
    pub addr: SocketAddr,
    pub tls: Option<rustls::ServerConfig>,
    pub workers: usize,
    pub keep_alive: Duration,
    pub header_timeout: Duration,
    /// How long in-flight requests may run after a stop.
    pub shutdown_grace: Duration,
    /// Open connections allowed across all workers; more are closed at once.
    pub max_connections: usize,
}

/// One accepted connection, shared by its socket and its requests.
pub struct Connection {
    tls: bool,
    header_timeout: Duration,
    http2: bool,
    /// Requests being answered on this connection.
    in_flight: Cell<u32>,
    /// HTTP/1 requests handed to actix whole, and answers finished: while
    /// more have been handed than answered, the next request waits.
    requests_handed: Cell<u64>,
    requests_answered: Cell<u64>,
    /// actix's task, last seen waiting to read.
    reader: RefCell<Option<Waker>>,
    /// Bytes of a next request are held back until the current answer is done.
    next_held: Cell<bool>,
    /// The body the current request's chunk sizes have declared so far.
    declared_body: Cell<u64>,
    /// The current request could not be framed alongside actix: it is the last.
    framing_lost: Cell<bool>,
    /// An answer that ends the connection was sent: nothing more is read.
    closing: Cell<bool>,
    /// The connection is cut: reads and writes fail.
    aborted: Cell<bool>,
    /// Completed flushes of everything actix had to write, and who waits for the next.
    flushes: Cell<u64>,
    flush_waiter: RefCell<Option<Waker>>,
}

/// Why a request read on a connection is not answered by the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It came behind a request whose answer ended the connection (RFC 9112
    /// §9.6: nothing after it may be processed).
    #[error("the request was sent after one that ends the connection")]
    AfterClose,
}

impl Refused {
    /// The answer to a refused request: a 400 that closes the connection.
    pub fn response(self, request_id: &str) -> actix_web::HttpResponse {
        let mut response =
            GatewayError::BadRequest(self.to_string().into()).to_response(request_id);
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        response
    }
}

impl Connection {
    fn new(tls: bool, header_timeout: Duration, http2: bool) -> Connection {
        Connection {
            tls,
            header_timeout,
            http2,
            in_flight: Cell::new(0),
            requests_handed: Cell::new(0),
            requests_answered: Cell::new(0),
            reader: RefCell::new(None),
            next_held: Cell::new(false),
            declared_body: Cell::new(0),
            framing_lost: Cell::new(false),
            closing: Cell::new(false),
            aborted: Cell::new(false),
            flushes: Cell::new(0),
            flush_waiter: RefCell::new(None),
        }
    }

    /// The connection a request arrived on (for requests of these listeners).
    pub fn of(req: &HttpRequest) -> Option<&Rc<Connection>> {
        req.conn_data::<Rc<Connection>>()
    }

    /// Whether the client connected over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The body bytes the request being read has declared in chunk sizes so
    /// far, known before their data arrives.
    pub fn declared_body(&self) -> u64 {
        self.declared_body.get()
    }

    /// Notes that `req`'s head has been read and is being answered, until
    /// the returned guard is dropped (when its answer is done); or refuses
    /// it, when it must not be processed at all.
    pub fn begin_request(self: &Rc<Self>, req: &HttpRequest) -> Result<Answering, Refused> {
        if self.closing.get() {
            return Err(Refused::AfterClose);
        }
        self.in_flight.set(self.in_flight.get() + 1);
        let head = req.head();
        Ok(Answering {
            conn: self.clone(),
            // The gateway performs no upgrade: after one, the connection ends.
            // (HTTP/2 streams never end their connection.)
            ends_connection: !self.http2
                && (head.connection_type() != ConnectionType::KeepAlive
                    || head.headers().contains_key(header::UPGRADE)),
        })
    }

    /// Whether a request has been handed to actix and is not answered yet.
    fn awaiting_answer(&self) -> bool {
        self.requests_handed.get() > self.requests_answered.get()
    }

    /// Has actix woken when the current answer is done.
    fn wake_reader_later(&self, cx: &Context<'_>) {
        let mut reader = self.reader.borrow_mut();
        if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *reader = Some(cx.waker().clone());
        }
    }

    /// Everything actix had to write is written.
    fn flushed(&self) {
        self.flushes.set(self.flushes.get() + 1);
        if let Some(waiter) = self.flush_waiter.borrow_mut().take() {
            waiter.wake();
        }
    }

    /// Cuts the connection now: reads and writes fail from here on, and
    /// the HTTP layer is woken to notice (even while it waits to write to a
    /// client that stopped reading).
    pub fn abort(&self) {
        self.aborted.set(true);
        if let Some(reader) = self.reader.borrow().as_ref() {
            reader.wake_by_ref();
        }
    }

    /// Waits until everything answered before on this connection has been
    /// written out, then cuts the connection: the answer to a refused
    /// request never reaches the wire, so the client reads nothing after
    /// the last answer it is owed.
    pub async fn cut_after_flush(&self) {
        let start = self.flushes.get();
        std::future::poll_fn(|cx| {
            if self.flushes.get() > start {
                return Poll::Ready(());
            }
            *self.flush_waiter.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        self.aborted.set(true);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("tls", &self.tls)
            .field("in_flight", &self.in_flight.get())
            .finish()
    }
}

/// A request being answered on a [`Connection`]; dropped when its answer is done.
pub struct Answering {
    conn: Rc<Connection>,
    ends_connection: bool,
}

impl Answering {
    /// Fits the response head to its request and connection before it is
    /// sent: a request that ends the connection (an upgrade the gateway does
    /// not perform, `Connection: close`) gets an answer that says so, a
    /// streamed answer to HTTP/1.0 is delimited by closing the connection
    /// (1.0 has no chunked encoding), a request the gateway could not frame
    /// is the connection's last, and an answer that closes the connection
    /// makes it read nothing more.
    pub fn prepare(&mut self, req: &HttpRequest, head: &mut ResponseHead, size: BodySize) {
        if head.status == actix_http::StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel: the connection is the upstream's until it ends, then closes.
            return;
        }
        if req.version() == Version::HTTP_10 && size == BodySize::Stream {
            head.no_chunking(true);
        }
        let close = self.ends_connection
            || self.conn.framing_lost.get()
            || (req.version() == Version::HTTP_10 && size == BodySize::Stream);
        if close && !self.conn.http2 {
            head.set_connection_type(ConnectionType::Close);
        }
        if head.connection_type() == ConnectionType::Close && !self.conn.http2 {
            self.ends_connection = true;
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let conn = &self.conn;
        conn.in_flight.set(conn.in_flight.get().saturating_sub(1));
        conn.requests_answered.set(conn.requests_answered.get() + 1);
        if self.ends_connection {
            conn.closing.set(true);
        }
        // A held-back request may go to actix now, or the end of the
        // connection be read; otherwise actix waits on the socket as usual.
        if self.ends_connection || conn.next_held.get() {
            if let Some(reader) = conn.reader.borrow().as_ref() {
                reader.wake_by_ref();
            }
        }
    }
}

/// Tracks every request of an app until its response body is done (the
/// proxy does this itself, in its access-log body).
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let conn = Connection::of(req.request()).cloned();
    let answering = match conn.as_ref().map(|c| c.begin_request(req.request())) {
        Some(Err(refused)) => {
            if let Some(conn) = &conn {
                conn.cut_after_flush().await;
            }
            let response = refused.response(&crate::pipeline::new_request_id());
            return Ok(req.into_response(response).map_into_right_body());
        }
        Some(Ok(answering)) => Some(answering),
        None => None,
    };
    let mut response = next.call(req).await?;
    let mut answering = answering;
    if let Some(answering) = &mut answering {
        let size = response.response().body().size();
        let request = response.request().clone();
        answering.prepare(&request, response.response_mut().head_mut(), size);
    }
    Ok(response
        .map_body(|_, body| Answered {
            body: body.boxed(),
            _answering: answering,
        })
        .map_into_left_body())
}

/// A response body holding its request's [`Answering`] until it is done.
struct Answered {
    body: BoxBody,
    _answering: Option<Answering>,
}

impl MessageBody for Answered {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// The count of open connections across workers, and its limit.
struct Gate {
    open: AtomicUsize,
    max: usize,
    open_metric: IntGauge,
    refused: IntCounter,
}

/// One open connection's place under the limit, given back on drop.
struct Admitted(Arc<Gate>);

impl Gate {
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.refused.inc();
            return None;
        }
        self.open_metric.inc();
        Some(Admitted(self.clone()))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.open_metric.dec();
    }
}

/// Binds the listener and builds its server around the app `factory`
/// (called once per worker). Returns the server, not yet awaited, and the
/// address it listens on.
pub fn start<F, I, S, B>(
    listener: Listener,
    metrics: &Metrics,
    factory: F,
) -> io::Result<(Server, SocketAddr)>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let name = listener.name;
    let std_listener = std::net::TcpListener::bind(listener.addr)?;
    let local = std_listener.local_addr()?;
    let accept = Accept {
        gate: Arc::new(Gate {
            open: AtomicUsize::new(0),
            max: listener.max_connections,
            open_metric: metrics.connections_open.with_label_values(&[name]),
            refused: metrics.connections_refused.with_label_values(&[name]),
        }),
        timeouts: metrics.head_timeouts.with_label_values(&[name]),
        header_timeout: listener.header_timeout,
    };
    let builder = ServerBuilder::new()
        .workers(listener.workers)
        // Whole seconds, rounded up, and one more: what is still open at
        // the end of the grace period is ended by the app, then the workers stop.
        .shutdown_timeout(listener.shutdown_grace.as_millis().div_ceil(1000) as u64 + 1)
        .disable_signals();
    let settings = HttpSettings {
        keep_alive: listener.keep_alive,
        header_timeout: listener.header_timeout,
        local,
        shutdown: builder.graceful_shutdown_signal(),
    };
    let app = move || {
        map_config(
            factory()
                .into_factory()
                .map_err(|err| err.into().error_response()),
            |_| AppConfig::default(),
        )
    };
    let service_name = format!("portcullis-{name}");
    let builder = match listener.tls {
        None => builder.listen(service_name, std_listener, move || {
            let accept = accept.clone();
            accept
                .counted()
                .and_then(fn_service(move |io: Counted<TcpStream>| {
                    let peer = io.peer_addr();
                    let watched = accept.watched(io, false, false);
                    async move { Ok((watched, Protocol::Http1, peer)) }
                }))
                .and_then(
                    settings
                        .builder()
                        .on_connect_ext(|io: &Watched<Counted<TcpStream>>, ext| {
                            ext.insert(io.conn.clone());
                        })
                        .finish(app()),
                )
        })?,
        Some(mut tls) => {
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            builder.listen(service_name, std_listener, move || {
                let accept = accept.clone();
                accept
                    .counted()
                    .and_then(
                        Acceptor::new(tls.clone())
                            .map_err(|err| DispatchError::Io(io::Error::other(format!("{err:?}")))),
                    )
                    .and_then(fn_service(move |io: TlsStream<Counted<TcpStream>>| {
                        let (counted, session) = io.get_ref();
                        let http2 = session.alpn_protocol() == Some(b"h2");
                        let peer = counted.peer_addr();
                        let watched = accept.watched(io, true, http2);
                        let protocol = if http2 {
                            Protocol::Http2
                        } else {
                            Protocol::Http1
                        };
                        async move { Ok((watched, protocol, peer)) }
                    }))
                    .and_then(
                        settings
                            .builder()
                            .on_connect_ext(|io: &Watched<TlsStream<Counted<TcpStream>>>, ext| {
                                ext.insert(io.conn.clone());
                            })
                            .finish(app()),
                    )
            })?
        }
    };
    Ok((builder.run(), local))
}

/// The HTTP side of every worker: keep-alive, the first-head timeout
/// (answered 408 by actix itself) and graceful shutdown of idle connections.
#[derive(Clone)]
struct HttpSettings {
    keep_alive: Duration,
    header_timeout: Duration,
    local: SocketAddr,
    shutdown: actix_server::GracefulShutdownSignal,
}

impl HttpSettings {
    fn builder<T, S, B>(&self) -> actix_http::HttpServiceBuilder<T, S>
    where
        S: ServiceFactory<Request, Config = ()>,
        S::Error: Into<Response<BoxBody>> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as Service<Request>>::Future: 'static,
        B: MessageBody + 'static,
    {
        let shutdown = self.shutdown.clone();
        HttpService::<T, S, B>::build()
            .keep_alive(self.keep_alive)
            .client_request_timeout(self.header_timeout)
            .local_addr(self.local)
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
    }
}

/// What every accepted socket goes through, on every worker.
#[derive(Clone)]
struct Accept {
    gate: Arc<Gate>,
    timeouts: IntCounter,
    header_timeout: Duration,
}

impl Accept {
    /// Admits a socket under the connection limit, or closes it at once.
    fn counted(
        &self,
    ) -> impl ServiceFactory<
        TcpStream,
        Config = (),
        Response = Counted<TcpStream>,
        Error = DispatchError,
        InitError = (),
    > {
        let gate = self.gate.clone();
        fn_service(move |io: TcpStream| {
            let admitted = gate.admit();
            async move {
                let admitted = admitted.ok_or_else(|| {
                    DispatchError::Io(io::Error::other("server.max_connections reached"))
                })?;
                let _ = io.set_nodelay(true);
                Ok(Counted::new(io, admitted))
            }
        })
    }

    /// Wraps an admitted (and, with TLS, decrypted) stream for actix.
    fn watched<IO>(&self, io: IO, tls: bool, http2: bool) -> Watched<IO> {
        let conn = Rc::new(Connection::new(tls, self.header_timeout, http2));
        Watched::new(io, conn, http2, self.timeouts.clone())
    }
}
