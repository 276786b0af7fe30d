//! WebSocket tunnels. An `Upgrade: websocket` request that passed its
//! route's authentication and rate limits goes to the upstream over a
//! connection of its own, with every `Sec-WebSocket-*` header unchanged and
//! the gateway's identity headers added. When the upstream switches
//! protocols, the bytes of both directions are copied as they come until
//! either side closes, the tunnel carries nothing for the route's
//! `tunnel_idle_timeout`, or its session stops being valid (checked every
//! `session.tunnel_check_interval` by [`Tunnels::sweep`]).
//!
//! The gateway never reads the frames: extensions (`permessage-deflate`)
//! and subprotocols are negotiated by the client and the upstream. Only
//! WebSocket is tunnelled: actix-http gives a handler the connection's raw
//! bytes for `Upgrade: websocket` alone, so other upgrades are forwarded as
//! plain requests with the `Upgrade` header removed, as before.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::{Decoder as _, Encoder as _};
use actix_http::h1::{ClientCodec, ClientPayloadCodec, Message, MessageType};
use actix_http::{ConnectionType, RequestHead, RequestHeadType, ResponseHead};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode, Version};
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt as _};
use prometheus::{IntCounterVec, IntGauge};
use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::io::ReaderStream;

use super::{headers, retry, Outgoing};
use crate::auth::Session;
use crate::config::{RouteUpstream, Upstream};
use crate::error::{GatewayError, UpstreamFailure};
use crate::listener::Connection;
use crate::pipeline::RequestCtx;
use crate::telemetry::Metrics;
use crate::upstream::{Service, Tried, Verdict};

/// The longest response head an upstream may send to a handshake.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from the upstream at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Whether `req` asks for a WebSocket tunnel: a bodiless HTTP/1.1 `GET`
/// with `Upgrade: websocket` and `Connection: upgrade` (RFC 6455 §4.1), the
/// requests whose following bytes actix-http passes on as they come.
pub fn requested(req: &HttpRequest) -> bool {
    let headers = req.headers();
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req.head().upgrade()
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

/// Opens a tunnel for `req` to the route's upstream (a target of its
/// service, retried on another only when the connection failed before
/// anything was sent), and answers with the upstream's `101`, or with its
/// refusal as it sent it.
pub(super) async fn open(
    outgoing: &Outgoing<'_>,
    payload: web::Payload,
    tunnels: &Arc<Tunnels>,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let deadline = Instant::now() + outgoing.route.timeout;
    let handshake = match &outgoing.route.upstream {
        RouteUpstream::Url(upstream) => {
            ctx.tries = 1;
            handshake(outgoing, upstream, None, deadline, ctx).await?
        }
        RouteUpstream::Service(_) => {
            let service = ctx.service()?;
            handshake_with_service(outgoing, &service, deadline, ctx).await?
        }
    };
    let Handshake {
        head,
        io,
        buffered,
        codec,
    } = handshake;
    if head.status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(refusal(head, io, buffered, codec, outgoing.route.timeout));
    }
    let mut response = HttpResponse::new(StatusCode::SWITCHING_PROTOCOLS);
    headers::copy_end_to_end(&head.headers, response.headers_mut(), |_| false);
    if let Some(protocol) = head.headers.get(header::UPGRADE) {
        response
            .headers_mut()
            .insert(header::UPGRADE, protocol.clone());
    }
    response
        .head_mut()
        .set_connection_type(ConnectionType::Upgrade);
    let tunnel = tunnels.open(ctx.principal.as_ref().map(|(_, s)| s.clone()));
    ctx.tunnel = Some(tunnel.handle.clone());
    let (from_upstream, to_upstream) = tokio::io::split(io);
    actix_rt::spawn(watch(
        payload,
        to_upstream,
        tunnel.handle.clone(),
        ctx.conn.clone(),
        outgoing.route.tunnel_idle_timeout,
    ));
    let body = TunnelBody {
        upstream: ReaderStream::with_capacity(from_upstream, READ_CHUNK),
        early: Some(buffered.freeze()).filter(|b| !b.is_empty()),
        tunnel,
    };
    Ok(response.set_body(BoxBody::new(body)))
}

/// A byte stream to an upstream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// The upstream's answer to the upgrade request, and its connection.
struct Handshake {
    head: ResponseHead,
    io: Box<dyn Io>,
    /// Bytes read after the head: the start of the tunnel or of a body.
    buffered: BytesMut,
    codec: ClientCodec,
}

/// Tries the service's targets: another one only after a failure to
/// connect (nothing was sent), within the retry budget.
async fn handshake_with_service(
    outgoing: &Outgoing<'_>,
    service: &Service,
    deadline: Instant,
    ctx: &mut RequestCtx,
) -> Result<Handshake, GatewayError> {
    let _admission = retry::admit(service, outgoing.route.timeout, ctx).await?;
    let hash = retry::hash_of(&service.config.balance, outgoing.req, ctx);
    let mut tried = Tried::default();
    let mut _retry_permit = None;
    let mut attempt = 0;
    loop {
        let picked = match service.pick(&tried, hash) {
            Ok(picked) => picked,
            Err(_) => return Err(retry::no_healthy_upstream(service, ctx)),
        };
        tried.add(picked.index);
        attempt += 1;
        ctx.tries = attempt;
        ctx.target = Some(picked.target.clone());
        let target = &picked.target.config;
        let result = handshake(outgoing, &target.upstream, target.address, deadline, ctx).await;
        let failed = match &result {
            Ok(handshake) => matches!(handshake.head.status.as_u16(), 502..=504),
            Err(error) => matches!(
                error,
                GatewayError::BadGateway(_) | GatewayError::GatewayTimeout
            ),
        };
        service.report(
            picked,
            if failed {
                Verdict::Failure
            } else {
                Verdict::Success
            },
        );
        let unsent = matches!(
            result,
            Err(GatewayError::BadGateway(
                UpstreamFailure::Connect | UpstreamFailure::Dns | UpstreamFailure::Tls
            ))
        );
        if !unsent || attempt > service.config.retries {
            return result;
        }
        match service.retry_permit() {
            Some(permit) => _retry_permit = Some(permit),
            None => return result,
        }
        service.count_retry();
    }
}

/// Sends the upgrade request to `upstream` on a new connection and reads
/// the answer's head, all before `deadline`.
async fn handshake(
    outgoing: &Outgoing<'_>,
    upstream: &Upstream,
    address: Option<SocketAddr>,
    deadline: Instant,
    ctx: &mut RequestCtx,
) -> Result<Handshake, GatewayError> {
    let request = outgoing.request(upstream, address, ctx)?;
    let mut head = RequestHead::default();
    head.method = Method::GET;
    head.version = Version::HTTP_11;
    head.uri = request
        .get_uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| GatewayError::Internal)?;
    head.headers = request.headers().clone();
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    head.set_connection_type(ConnectionType::Upgrade);
    let sent = Instant::now();
    let result = timeout_at(deadline, async {
        let mut io = connect(outgoing, upstream, address).await?;
        let mut codec = ClientCodec::default();
        let mut out = BytesMut::new();
        codec
            .encode(
                Message::Item((RequestHeadType::Owned(head), BodySize::None)),
                &mut out,
            )
            .map_err(|err| (UpstreamFailure::Send, err.to_string()))?;
        io.write_all(&out)
            .await
            .map_err(|err| (UpstreamFailure::Send, err.to_string()))?;
        let mut buffered = BytesMut::with_capacity(4096);
        loop {
            let invalid = |err: String| (UpstreamFailure::Response, err);
            if let Some(head) = codec
                .decode(&mut buffered)
                .map_err(|err| invalid(format!("invalid response head: {err}")))?
            {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    // An interim answer (100, 103): the real one follows.
                    continue;
                }
                return Ok(Handshake {
                    head,
                    io,
                    buffered,
                    codec,
                });
            }
            if buffered.len() > MAX_HEAD {
                return Err(invalid("response head too large".into()));
            }
            let read = io.read_buf(&mut buffered).await;
            match read {
                Ok(0) => return Err(invalid("connection closed before a response".into())),
                Ok(_) => {}
                Err(err) => return Err(invalid(err.to_string())),
            }
        }
    })
    .await;
    ctx.upstream_time = Some(sent.elapsed());
    match result {
        Ok(Ok(handshake)) => Ok(handshake),
        Ok(Err((failure, why))) => {
            ctx.upstream_error = Some(why);
            Err(GatewayError::BadGateway(failure))
        }
        Err(_) => {
            ctx.upstream_error = Some("the upgrade handshake timed out".into());
            Err(GatewayError::GatewayTimeout)
        }
    }
}

/// A new connection to `upstream` (a tunnel is never pooled), at `address`
/// when its name was resolved; TLS for `https`.
async fn connect(
    outgoing: &Outgoing<'_>,
    upstream: &Upstream,
    address: Option<SocketAddr>,
) -> Result<Box<dyn Io>, (UpstreamFailure, String)> {
    let client = outgoing.client;
    let (host, port) = (upstream.host(), upstream.port());
    let timed_out = |failure| {
        (
            failure,
            format!("no connection within {:?}", client.connect_timeout),
        )
    };
    let addresses: Vec<SocketAddr> = match address {
        Some(address) => vec![address],
        None => tokio::time::timeout(
            client.connect_timeout,
            tokio::net::lookup_host((host, port)),
        )
        .await
        .map_err(|_| timed_out(UpstreamFailure::Dns))?
        .map_err(|err| (UpstreamFailure::Dns, err.to_string()))?
        .collect(),
    };
    let mut last = (UpstreamFailure::Dns, format!("{host} has no address"));
    let mut tcp = None;
    for address in addresses {
        match tokio::time::timeout(client.connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(err)) => last = (UpstreamFailure::Connect, err.to_string()),
            Err(_) => last = timed_out(UpstreamFailure::Connect),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    if !upstream.https {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|err| (UpstreamFailure::Tls, err.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(client.tls.clone());
    let stream = tokio::time::timeout(client.connect_timeout, tls.connect(name, tcp))
        .await
        .map_err(|_| timed_out(UpstreamFailure::Tls))?
        .map_err(|err| (UpstreamFailure::Tls, err.to_string()))?;
    Ok(Box::new(stream))
}

/// The upstream's refusal of the upgrade (a `401`, a `400`...), passed on
/// with its body; the connection to the upstream closes after it.
fn refusal(
    head: ResponseHead,
    io: Box<dyn Io>,
    buffered: BytesMut,
    codec: ClientCodec,
    idle: Duration,
) -> HttpResponse {
    let framed = head.headers.contains_key(header::CONTENT_LENGTH)
        || head.headers.contains_key(header::TRANSFER_ENCODING);
    let framing = if !framed {
        // No length: the body ends when the connection does (RFC 9112
        // §6.3), which actix's client decoder follows for HTTP/1.0 only.
        Framing::UntilClose
    } else if codec.message_type() != MessageType::None {
        Framing::Decoded(codec.into_payload_codec())
    } else {
        Framing::Done
    };
    let body = RefusalBody {
        framing,
        io,
        buffered,
    };
    let (response, length) = super::response_head(head.status, &head.headers);
    super::with_body(response, length, &Method::GET, body, idle)
}

/// How a refusal's body ends.
enum Framing {
    /// As its head declared it (a length or chunks).
    Decoded(ClientPayloadCodec),
    UntilClose,
    Done,
}

/// A refusal's body, read as its head framed it.
struct RefusalBody {
    framing: Framing,
    io: Box<dyn Io>,
    buffered: BytesMut,
}

impl Stream for RefusalBody {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Decoded(codec) => match codec.decode(&mut this.buffered) {
                    Ok(Some(Some(chunk))) => return Poll::Ready(Some(Ok(chunk))),
                    Ok(Some(None)) => this.framing = Framing::Done,
                    Err(err) => return Poll::Ready(Some(Err(err))),
                    Ok(None) => {}
                },
                Framing::UntilClose if !this.buffered.is_empty() => {
                    return Poll::Ready(Some(Ok(this.buffered.split().freeze())));
                }
                Framing::UntilClose => {}
            }
            if matches!(this.framing, Framing::Done) {
                continue;
            }
            this.buffered.reserve(READ_CHUNK);
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buffered);
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                Poll::Ready(Ok(0)) => {
                    let complete = matches!(this.framing, Framing::UntilClose);
                    this.framing = Framing::Done;
                    if !complete {
                        // Cut short: an error, never a body presented as complete.
                        return Poll::Ready(Some(Err(actix_web::error::PayloadError::Incomplete(
                            None,
                        ))));
                    }
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// Runs a tunnel's client side: copies what the client sends to the
/// upstream (telling the upstream when the client stops sending), ends the
/// tunnel when it has been idle too long, and, once it has ended for any
/// way but by its answer's end, cuts the client's connection — at once,
/// even when the client has stopped reading and its answer cannot move.
async fn watch(
    mut payload: web::Payload,
    mut upstream: WriteHalf<Box<dyn Io>>,
    tunnel: Arc<TunnelHandle>,
    conn: Option<Rc<Connection>>,
    idle: Duration,
) {
    let copy = async {
        loop {
            match payload.next().await {
                Some(Ok(chunk)) => {
                    tunnel.touch();
                    tunnel
                        .bytes_in
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if upstream.write_all(&chunk).await.is_err() {
                        tunnel.end(End::Upstream);
                        return;
                    }
                }
                // The client stopped sending: the upstream is told, and
                // its answer may still flow the other way.
                None => {
                    tunnel.client_done.store(true, Ordering::Release);
                    let _ = upstream.shutdown().await;
                    std::future::pending::<()>().await;
                }
                Some(Err(_)) => {
                    tunnel.end(End::Client);
                    return;
                }
            }
        }
    };
    let idle_watch = async {
        loop {
            let idle_until = tunnel.last_active() + idle;
            if Instant::now() >= idle_until {
                tunnel.end(End::Idle);
            }
            tokio::time::sleep_until(idle_until).await;
        }
    };
    tokio::select! {
        () = copy => {}
        () = idle_watch => {}
        () = tunnel.ended() => {}
    }
    // A body that ended by itself finishes its answer in order; otherwise
    // the client may not be reading, and only cutting it frees the tunnel.
    if !tunnel.body_done.load(Ordering::Acquire) {
        if let Some(conn) = conn {
            conn.abort();
        }
    }
}

/// The `101` answer's body: what the upstream sends, as it comes, until
/// the tunnel ends. Dropped (the client went away), it ends the tunnel.
struct TunnelBody {
    upstream: ReaderStream<ReadHalf<Box<dyn Io>>>,
    /// Bytes the upstream sent right behind its `101`.
    early: Option<Bytes>,
    tunnel: Tunnel,
}

impl MessageBody for TunnelBody {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let handle = &this.tunnel.handle;
        handle.body_waker.register(cx.waker());
        if handle.end_reason().is_some() {
            handle.body_done.store(true, Ordering::Release);
            return Poll::Ready(None);
        }
        if let Some(early) = this.early.take() {
            handle.touch();
            return Poll::Ready(Some(Ok(early)));
        }
        match this.upstream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                handle.touch();
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(_) => {
                // After the client stopped sending, the upstream closing
                // is the answer to that: the client ended the tunnel.
                let client_first = handle.client_done.load(Ordering::Acquire);
                handle.body_done.store(true, Ordering::Release);
                handle.end(if client_first {
                    End::Client
                } else {
                    End::Upstream
                });
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        Poll::Pending
    }
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum End {
    Client = 1,
    Upstream,
    Idle,
    /// Its session was revoked, expired or its user changed.
    Session,
    Shutdown,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Client => "client",
            End::Upstream => "upstream",
            End::Idle => "idle",
            End::Session => "session",
            End::Shutdown => "shutdown",
        }
    }

    fn from_u8(n: u8) -> Option<End> {
        [
            End::Client,
            End::Upstream,
            End::Idle,
            End::Session,
            End::Shutdown,
        ]
        .into_iter()
        .find(|end| *end as u8 == n)
    }
}

/// One open tunnel, as every thread sees it.
pub struct TunnelHandle {
    /// The session the upgrade request was made with, if any.
    session: Option<Arc<Session>>,
    end: AtomicU8,
    /// Milliseconds since `epoch` at the last byte either way.
    last_active: AtomicU64,
    epoch: Instant,
    /// Bytes the client sent through the tunnel.
    pub bytes_in: AtomicU64,
    /// The client has stopped sending.
    client_done: AtomicBool,
    /// The `101` answer's body has ended (its end is written in order).
    body_done: AtomicBool,
    body_waker: AtomicWaker,
    upload_waker: AtomicWaker,
}

impl TunnelHandle {
    /// Why the tunnel ended, or `None` while it is open.
    pub fn end_reason(&self) -> Option<End> {
        End::from_u8(self.end.load(Ordering::Acquire))
    }

    /// Ends the tunnel (the first reason given stands) and wakes both directions.
    pub fn end(&self, reason: End) {
        let _ = self
            .end
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.body_waker.wake();
        self.upload_waker.wake();
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active.store(ms, Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_active.load(Ordering::Relaxed))
    }

    /// Resolves once the tunnel has ended.
    async fn ended(&self) {
        std::future::poll_fn(|cx| {
            self.upload_waker.register(cx.waker());
            match self.end_reason() {
                Some(_) => Poll::Ready(()),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// Every open tunnel, so sessions can be checked and shutdown can end them.
pub struct Tunnels {
    open: Mutex<HashMap<u64, Arc<TunnelHandle>>>,
    next_id: AtomicU64,
    gauge: IntGauge,
    closed: IntCounterVec,
}

/// An open tunnel's place in [`Tunnels`], given back when it is dropped.
struct Tunnel {
    id: u64,
    handle: Arc<TunnelHandle>,
    tunnels: Arc<Tunnels>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // Not ended otherwise: the client went away.
        self.handle.end(End::Client);
        let reason = self.handle.end_reason().unwrap_or(End::Client);
        self.tunnels.lock().remove(&self.id);
        self.tunnels.gauge.dec();
        self.tunnels
            .closed
            .with_label_values(&[reason.as_str()])
            .inc();
    }
}

impl Tunnels {
    pub fn new(metrics: &Metrics) -> Tunnels {
        Tunnels {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            gauge: metrics.tunnels_open.clone(),
            closed: metrics.tunnels_closed.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<TunnelHandle>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(self: &Arc<Self>, session: Option<Arc<Session>>) -> Tunnel {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(TunnelHandle {
            session,
            end: AtomicU8::new(0),
            last_active: AtomicU64::new(0),
            epoch: Instant::now(),
            bytes_in: AtomicU64::new(0),
            client_done: AtomicBool::new(false),
            body_done: AtomicBool::new(false),
            body_waker: AtomicWaker::new(),
            upload_waker: AtomicWaker::new(),
        });
        self.lock().insert(id, handle.clone());
        self.gauge.inc();
        Tunnel {
            id,
            handle,
            tunnels: self.clone(),
        }
    }

    /// Ends every tunnel whose session `still_valid` no longer accepts;
    /// returns how many it ended.
    pub fn sweep(&self, still_valid: impl Fn(&Session) -> bool) -> usize {
        let sessions: Vec<_> = self
            .lock()
            .values()
            .filter(|t| t.session.is_some())
            .cloned()
            .collect();
        let mut ended = 0;
        for tunnel in sessions {
            if let Some(session) = &tunnel.session {
                if !still_valid(session) {
                    tunnel.end(End::Session);
                    ended += 1;
                }
            }
        }
        ended
    }

    /// Ends every tunnel (at the end of the shutdown grace period).
    pub fn end_all(&self) {
        for tunnel in self.lock().values() {
            tunnel.end(End::Shutdown);
        }
    }
}
