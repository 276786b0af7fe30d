//! Forwarding a routed request upstream with awc and streaming the answer back.

mod body;
pub mod headers;
pub mod probe;
mod retry;
pub mod tunnel;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, BoxBody, MessageBody, SizedStream};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{ConnectError, SendRequestError};

pub use body::{read_body, BodyFailure, BodyOutcome};
pub use tunnel::Tunnels;

use retry::HeldBody;

use crate::config::{
    Config, HeaderVars, Route, RouteUpstream, ServerConfig, Upstream, UpstreamConfig,
};
use crate::error::{GatewayError, UpstreamFailure};
use crate::listener::Connection;
use crate::pipeline::RequestCtx;

/// The upstream client of one worker: built once, pooled, never per request.
pub struct UpstreamClient {
    client: awc::Client,
    /// Clients of their own for HTTPS targets at a resolved address: the
    /// pool is keyed by host name, and each address needs its own
    /// connections (a plain-HTTP URL names the address instead).
    by_address: RefCell<HashMap<SocketAddr, awc::Client>>,
    config: UpstreamConfig,
    request_timeout: Duration,
    /// For the connections of WebSocket tunnels, made without awc.
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

/// HTTPS addresses with a client of their own at most (past it, they are
/// all dropped and made again as needed: addresses gone from DNS go too).
const MAX_ADDRESS_CLIENTS: usize = 256;

impl UpstreamClient {
    /// Builds the worker's client: connection limit and timeouts from config,
    /// no redirects followed, TLS verified against the system roots, HTTP/1.1.
    pub fn new(
        config: &UpstreamConfig,
        request_timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        UpstreamClient {
            client: build_client(config, request_timeout, tls.clone()),
            by_address: RefCell::new(HashMap::new()),
            config: config.clone(),
            request_timeout,
            tls,
            connect_timeout: config.connect_timeout,
        }
    }

    /// The pooled client itself, for requests of the gateway's own (health checks).
    pub fn http(&self) -> &awc::Client {
        &self.client
    }

    /// A request with the client for `upstream` at `address`: the shared
    /// pool, or for HTTPS at a resolved address, that address's own.
    fn request(
        &self,
        method: Method,
        uri: Uri,
        upstream: &Upstream,
        address: Option<SocketAddr>,
    ) -> awc::ClientRequest {
        let Some(address) = address.filter(|_| upstream.https) else {
            return self.client.request(method, uri);
        };
        let mut by_address = self.by_address.borrow_mut();
        if by_address.len() >= MAX_ADDRESS_CLIENTS && !by_address.contains_key(&address) {
            by_address.clear();
        }
        by_address
            .entry(address)
            .or_insert_with(|| build_client(&self.config, self.request_timeout, self.tls.clone()))
            .request(method, uri)
    }
}

/// An awc client with its own connection pool, as [`UpstreamClient::new`] describes.
fn build_client(
    config: &UpstreamConfig,
    request_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> awc::Client {
    let connector = awc::Connector::new()
        .rustls_0_23(tls)
        .limit(config.max_connections)
        .timeout(config.connect_timeout)
        .handshake_timeout(config.connect_timeout)
        .conn_keep_alive(config.idle_timeout)
        .conn_lifetime(Duration::from_secs(600));
    awc::ClientBuilder::new()
        .connector(connector)
        .disable_redirects()
        .timeout(request_timeout)
        .finish()
}

/// The rustls client configuration for `https://` upstreams: the system's root
/// certificates, and ALPN limited to HTTP/1.1 (awc's HTTP/2 over TLS is slow).
pub fn client_tls_config() -> (Arc<rustls::ClientConfig>, usize) {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), added)
}

/// Forwards the request to the route's upstream (its URL, or a target of
/// its service) and streams the response back; or, for a WebSocket
/// upgrade the route accepts, opens a tunnel.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    client: &UpstreamClient,
    req: &HttpRequest,
    payload: web::Payload,
    route: &Route,
    path: &str,
    config: &Config,
    tunnels: &Arc<Tunnels>,
    ctx: &mut RequestCtx,
) -> Result<HttpResponse, GatewayError> {
    let (prefix, rest) = if route.strip_prefix {
        split_segments(path, route.pattern.literal_prefix_segments())
    } else {
        ("", path)
    };
    let outgoing = Outgoing {
        client,
        req,
        route,
        config,
        prefix,
        rest,
    };
    let mut response = match &route.upstream {
        _ if route.websocket && tunnel::requested(req) => {
            // Boxed: the handshake's state would otherwise enlarge every
            // request's future, tunnel or not.
            Box::pin(tunnel::open(&outgoing, payload, tunnels, ctx)).await?
        }
        RouteUpstream::Url(upstream) => {
            let request = outgoing.request(upstream, None, ctx)?;
            let outcome = Rc::new(BodyOutcome::default());
            let body = request_body(
                req,
                payload,
                &config.server,
                outcome.clone(),
                ctx.conn.clone(),
            )?;
            ctx.tries = 1;
            let response = exchange(request.timeout(route.timeout), body, &outcome, ctx).await?;
            client_response(req.method(), response, route.timeout)
        }
        RouteUpstream::Service(_) => {
            let service = ctx.service()?;
            let body = HeldBody::take(req, payload, &config.server, &service, ctx).await?;
            retry::forward(&outgoing, &service, body, ctx).await?
        }
    };
    if !route.response_headers.is_empty() {
        route
            .response_headers
            .apply(response.headers_mut(), &header_vars(route, ctx));
    }
    Ok(response)
}

/// What a route's header rules may fill in.
fn header_vars<'a>(route: &'a Route, ctx: &'a RequestCtx) -> HeaderVars<'a> {
    HeaderVars {
        request_id: &ctx.request_id,
        client_ip: ctx.client_ip,
        user: ctx.principal.as_ref().map_or("", |(user, _)| &user.name),
        route: &route.id,
    }
}

/// What every try of one request shares: the request, its route and the
/// path to send.
struct Outgoing<'a> {
    client: &'a UpstreamClient,
    req: &'a HttpRequest,
    route: &'a Route,
    config: &'a Config,
    /// The literal prefix stripped from the path, if any.
    prefix: &'a str,
    rest: &'a str,
}

impl Outgoing<'_> {
    /// The request to `upstream` (at `address`, when its name was
    /// resolved), its headers cleaned and completed.
    fn request(
        &self,
        upstream: &Upstream,
        address: Option<SocketAddr>,
        ctx: &mut RequestCtx,
    ) -> Result<awc::ClientRequest, GatewayError> {
        let (req, route) = (self.req, self.route);
        let server = &self.config.server;
        let session = &self.config.session;
        let uri = upstream_uri(upstream, address, self.rest, req.uri().query())?;
        let mut request = self
            .client
            .request(req.method().clone(), uri, upstream, address)
            .no_decompress();
        if let Some(address) = address {
            request = request.address(address);
        }
        let host = request_host(req);
        let outbound = request.headers_mut();
        // Identity headers are the gateway's alone: client-supplied copies
        // never pass, nor look-alikes with '_' for '-' (CGI-style upstreams
        // read `X_User_Id` as `X-User-Id`).
        let identity = session.identity_headers();
        let forwarding = headers::Forwarding {
            peer: ctx.peer_ip,
            peer_trusted: ctx.peer_trusted,
            client: ctx.client_ip,
            https: ctx.conn.as_ref().is_some_and(|conn| conn.is_tls()),
            host: host.clone(),
            stripped_prefix: (!self.prefix.is_empty()).then_some(self.prefix),
            allow_underscores: server.allow_underscore_headers,
        };
        headers::copy_end_to_end(req.headers(), outbound, |name| {
            *name == header::HOST
                || *name == header::COOKIE
                || *name == crate::pipeline::REQUEST_ID_HEADER
                || *name == probe::PROBE_HEADER
                || forwarding.withholds(name)
                || identity.iter().any(|id| headers::same_header(name, id))
        });
        if let Some(cookies) =
            crate::auth::strip_session_cookie(req.headers(), &session.cookie_name)
        {
            outbound.insert(header::COOKIE, cookies);
        }
        // The route's rules, before the identity headers: those stay the gateway's.
        if !route.request_headers.is_empty() {
            route
                .request_headers
                .apply(outbound, &header_vars(route, ctx));
        }
        if let Some((user, session_state)) = &ctx.principal {
            if let Ok(value) = HeaderValue::from_str(&user.name) {
                outbound.insert(session.user_id_header.clone(), value);
            }
            outbound.insert(session.roles_header.clone(), user.roles_header.clone());
            if let Ok(value) = HeaderValue::from_str(&session_state.id) {
                outbound.insert(session.session_id_header.clone(), value);
            }
        }
        forwarding.write(req.headers(), outbound);
        if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
            outbound.insert(crate::pipeline::REQUEST_ID_HEADER, id);
        }
        if route.preserve_host {
            if let Some(host) = host {
                outbound.insert(header::HOST, host);
            }
        } else if let Ok(host) = HeaderValue::from_str(upstream.authority.as_str()) {
            outbound.insert(header::HOST, host);
        }
        if ctx.probe {
            ctx.sent_headers = Some(outbound.clone());
        }
        Ok(request)
    }
}

/// Sends one request and waits for the response head, recording the time
/// it took and, on failure, why.
async fn exchange(
    request: awc::ClientRequest,
    body: BoxBody,
    outcome: &BodyOutcome,
    ctx: &mut RequestCtx,
) -> Result<awc::ClientResponse, GatewayError> {
    let sent = Instant::now();
    let result = request.send_body(body).await;
    ctx.upstream_time = Some(sent.elapsed());
    ctx.bytes_in = outcome.bytes.get();
    result.map_err(|err| {
        let error = classify(&err, outcome.failure.get());
        if matches!(
            error,
            GatewayError::BadGateway(_) | GatewayError::GatewayTimeout
        ) {
            // Why, in the operator's words (the OS error, the TLS problem), for the log.
            ctx.upstream_error = Some(err.to_string());
        }
        error
    })
}

/// The host the client asked for: the authority of an absolute-form target
/// or an HTTP/2 request, which wins over `Host` (RFC 9112 §3.2.2), else `Host`.
pub fn request_host(req: &HttpRequest) -> Option<HeaderValue> {
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| req.headers().get(header::HOST).cloned())
}

/// The URL to request at `upstream` (or the `address` its name resolved to).
fn upstream_uri(
    upstream: &Upstream,
    address: Option<SocketAddr>,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, GatewayError> {
    upstream
        .url_of(address, path, query)
        .parse()
        .map_err(|_| GatewayError::BadRequest("the request target cannot be forwarded".into()))
}

/// `path` split after its first `n` segments: those matched the route's
/// literal prefix, whatever their case or `;` parameters.
fn split_segments(path: &str, n: usize) -> (&str, &str) {
    let mut cut = 0;
    for _ in 0..n {
        match path[cut + 1..].find('/') {
            Some(end) => cut += end + 1,
            None => {
                cut = path.len();
                break;
            }
        }
    }
    path.split_at(cut)
}

/// The body to send upstream: none, a sized stream, or a chunked stream.
fn request_body(
    req: &HttpRequest,
    payload: web::Payload,
    server: &ServerConfig,
    outcome: Rc<BodyOutcome>,
    conn: Option<Rc<Connection>>,
) -> Result<BoxBody, GatewayError> {
    // A websocket or CONNECT request's "payload" is whatever the client sends
    // after the head, meant for a tunnel the upstream never agreed to: never forward it.
    let upgrade = req.headers().contains_key(header::UPGRADE) || req.method() == Method::CONNECT;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // HTTP/2 frames bodies itself: without a Content-Length, a request that
    // can carry a body is streamed.
    let streamed = req.headers().contains_key(header::TRANSFER_ENCODING)
        || (req.version() == actix_web::http::Version::HTTP_2
            && length.is_none()
            && !matches!(
                *req.method(),
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            ));
    if upgrade || (!streamed && length.unwrap_or(0) == 0) {
        return Ok(BoxBody::new(()));
    }
    if length.is_some_and(|n| n > server.max_body_bytes) {
        return Err(GatewayError::PayloadTooLarge);
    }
    if conn
        .as_ref()
        .is_some_and(|conn| conn.declared_body() > server.max_body_bytes)
    {
        // A chunk already declared more than fits: refused before any upstream sees it.
        return Err(GatewayError::PayloadTooLarge);
    }
    let stream = body::LimitedBody::new(
        payload,
        server.max_body_bytes,
        server.body_timeout,
        outcome,
        conn,
    );
    Ok(match length {
        Some(length) => SizedStream::new(length, stream).boxed(),
        None => BodyStream::new(stream).boxed(),
    })
}

/// Maps a failed exchange to the gateway's answer: a body the client cut
/// off is the client's fault, whatever else the exchange then reported.
fn classify(err: &SendRequestError, body: Option<BodyFailure>) -> GatewayError {
    if let Some(failure) = body {
        return failure.into();
    }
    match err {
        SendRequestError::Body(_) => BodyFailure::Client.into(),
        SendRequestError::Timeout => GatewayError::GatewayTimeout,
        SendRequestError::Connect(
            ConnectError::Resolver(_) | ConnectError::NoRecords | ConnectError::Unresolved,
        ) => GatewayError::BadGateway(UpstreamFailure::Dns),
        SendRequestError::Connect(ConnectError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            GatewayError::BadGateway(UpstreamFailure::Tls)
        }
        SendRequestError::Connect(ConnectError::SslIsNotSupported) => {
            GatewayError::BadGateway(UpstreamFailure::Tls)
        }
        SendRequestError::Connect(_) => GatewayError::BadGateway(UpstreamFailure::Connect),
        SendRequestError::Send(_) => GatewayError::BadGateway(UpstreamFailure::Send),
        _ => GatewayError::BadGateway(UpstreamFailure::Response),
    }
}

/// The upstream's status, end-to-end headers and streamed body, unchanged.
fn client_response<S>(
    method: &Method,
    upstream: awc::ClientResponse<S>,
    idle: Duration,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>
        + Unpin
        + 'static,
{
    let (response, length) = response_head(upstream.status(), upstream.headers());
    with_body(response, length, method, upstream, idle)
}

/// The client's response to an upstream answer, with its status and
/// end-to-end headers, and the body length the upstream declared.
pub(super) fn response_head(
    status: StatusCode,
    headers: &header::HeaderMap,
) -> (HttpResponse, Option<u64>) {
    let mut response = HttpResponse::new(status);
    headers::copy_end_to_end(headers, response.headers_mut(), |_| false);
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    (response, length)
}

/// Streams `upstream` as the response's body, framed as the upstream
/// framed it (none for a bodiless answer; a HEAD answer keeps its length).
pub(super) fn with_body<S>(
    response: HttpResponse,
    length: Option<u64>,
    method: &Method,
    upstream: S,
    idle: Duration,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>
        + Unpin
        + 'static,
{
    let status = response.status();
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless {
        // A HEAD answer advertises the length of a body it never sends.
        let advertised = if *method == Method::HEAD {
            length
        } else {
            None
        };
        return response.set_body(BoxBody::new(NoBody(advertised)));
    }
    let stream = body::IdleTimeout::new(upstream, idle);
    let body = match length {
        Some(length) => SizedStream::new(length, stream).boxed(),
        None => BodyStream::new(stream).boxed(),
    };
    response.set_body(body)
}

/// An empty response body that may still advertise a length (for HEAD).
struct NoBody(Option<u64>);

impl MessageBody for NoBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        match self.0 {
            Some(length) => actix_web::body::BodySize::Sized(length),
            None => actix_web::body::BodySize::None,
        }
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_upstream_uris_with_base_path_and_query() {
        let upstream = Upstream::parse("http://127.0.0.1:9000/base").unwrap();
        assert_eq!(
            upstream_uri(&upstream, None, "/api/v1/users", Some("a=1")).unwrap(),
            "http://127.0.0.1:9000/base/api/v1/users?a=1"
        );
        assert_eq!(
            upstream_uri(&upstream, None, "", None).unwrap(),
            "http://127.0.0.1:9000/base/"
        );
    }

    #[test]
    fn strip_prefix_removes_whole_segments() {
        assert_eq!(split_segments("/api/v1/users", 2), ("/api/v1", "/users"));
        assert_eq!(split_segments("/api/v1", 2), ("/api/v1", ""));
        assert_eq!(split_segments("/api/v1/", 2), ("/api/v1", "/"));
        assert_eq!(
            split_segments("/API/v1;x=1/users/", 2),
            ("/API/v1;x=1", "/users/")
        );
        assert_eq!(split_segments("/anything", 0), ("", "/anything"));
    }
}
