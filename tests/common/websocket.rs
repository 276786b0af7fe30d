//! A real WebSocket echo upstream (tokio-tungstenite) on its own thread and
//! runtime, and a client helper.
//!
//! The echo sends every text and binary message back, accepts the first
//! subprotocol offered from `chat.v1`/`chat.v2`, refuses an upgrade of
//! `/refuse` with `403` and a body, and records each handshake's headers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Default)]
struct State {
    handshakes: Mutex<Vec<HeaderMap>>,
    open: AtomicUsize,
}

/// The echo upstream; stops when dropped.
pub struct WsEcho {
    addr: SocketAddr,
    https: bool,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WsEcho {
    /// A plain (`ws://`) echo.
    pub fn start() -> WsEcho {
        WsEcho::spawn(None)
    }

    /// A `wss://` echo serving this certificate (for `localhost`).
    pub fn start_tls(tls: rustls::ServerConfig) -> WsEcho {
        WsEcho::spawn(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
    }

    fn spawn(tls: Option<tokio_rustls::TlsAcceptor>) -> WsEcho {
        let https = tls.is_some();
        let state = Arc::new(State::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let accept = async {
                    loop {
                        let Ok((socket, _)) = listener.accept().await else {
                            continue;
                        };
                        let state = thread_state.clone();
                        match tls.clone() {
                            None => drop(tokio::spawn(serve(socket, state))),
                            Some(tls) => drop(tokio::spawn(async move {
                                if let Ok(socket) = tls.accept(socket).await {
                                    serve(socket, state).await;
                                }
                            })),
                        }
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        WsEcho {
            addr: addr_rx.recv().expect("the WebSocket echo starts"),
            https,
            state,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:<port>`, or `https://localhost:<port>` (the
    /// certificate's name).
    pub fn url(&self) -> String {
        if self.https {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The headers of every upgrade request received, in order.
    pub fn handshakes(&self) -> Vec<HeaderMap> {
        self.state.handshakes.lock().unwrap().clone()
    }

    /// WebSocket connections open at the echo now.
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// tungstenite's callback signature returns its (large) error response by value.
#[allow(clippy::result_large_err)]
async fn serve<S>(socket: S, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let record = |request: &Request, mut response: Response| {
        state
            .handshakes
            .lock()
            .unwrap()
            .push(request.headers().clone());
        if request.uri().path().ends_with("/refuse") {
            let mut refusal = ErrorResponse::new(Some("no tunnels here".into()));
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(chosen) = offered
            .split(',')
            .map(str::trim)
            .find(|p| *p == "chat.v1" || *p == "chat.v2")
        {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(chosen).unwrap(),
            );
        }
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(socket, record).await else {
        return;
    };
    state.open.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    state.open.fetch_sub(1, Ordering::SeqCst);
}

/// A client WebSocket through the gateway.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url` (`ws://...`) with these extra headers;
/// returns the socket and the `101` response, or the refusal's status.
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<(Client, Response), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => Ok((ws, response.map(|_| ()))),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(err) => panic!("the WebSocket handshake failed: {err}"),
    }
}
