//! The socket side of a connection: what actix-http reads and writes goes
//! through [`Watched`], which
//! - hands actix one HTTP/1 request at a time: bytes of the next request
//!   that arrive before the current one is answered are held back until it
//!   is (actix would otherwise parse them early and frame the current answer
//!   by them);
//! - closes a connection whose request head takes longer than
//!   `header_timeout` to arrive, for every request, not only the first;
//! - reads nothing more once an answer that ends the connection is done,
//!   and fails every read and write once the connection is cut.
//!
//! [`Counted`] sits under TLS and holds the connection's place under
//! `max_connections` for as long as the socket is open.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_rt::net::{ActixStream, Ready};
use bytes::{Buf, BytesMut};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::Framing;
use super::{Admitted, Connection};

/// Most bytes read ahead of actix and held for the next request.
const MAX_HELD: usize = 64 * 1024;

/// A socket holding its place under the connection limit.
pub struct Counted<IO> {
    io: IO,
    _admitted: Admitted,
}

impl<IO> Counted<IO> {
    pub(super) fn new(io: IO, admitted: Admitted) -> Self {
        Counted {
            io,
            _admitted: admitted,
        }
    }
}

impl Counted<tokio::net::TcpStream> {
    pub(super) fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.peer_addr().ok()
    }
}

/// A connection's stream as actix-http sees it.
pub struct Watched<IO> {
    io: IO,
    pub(super) conn: Rc<Connection>,
    /// Request framing, for HTTP/1 (HTTP/2 frames itself).
    framing: Option<Framing>,
    /// Bytes read from the socket that belong to a request not handed to actix yet.
    held: BytesMut,
    /// The client closed its side; reported once `held` is handed over.
    eof: bool,
    /// When the head being read started to arrive.
    head_started: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    timeouts: IntCounter,
}

impl<IO> Watched<IO> {
    pub(super) fn new(io: IO, conn: Rc<Connection>, http2: bool, timeouts: IntCounter) -> Self {
        Watched {
            io,
            conn,
            framing: (!http2).then(Framing::default),
            held: BytesMut::new(),
            eof: false,
            head_started: None,
            timer: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            timeouts,
        }
    }

    /// Follows the bytes now handed to actix (`bytes`, the first `taken`
    /// of which belong to the current request); returns how many to hand over.
    fn follow(&mut self, bytes: &[u8]) -> usize {
        let Some(framing) = self.framing.as_mut() else {
            return bytes.len();
        };
        let fed = framing.feed(bytes);
        let conn = &self.conn;
        conn.declared_body.set(framing.declared());
        if fed.ended {
            conn.requests_handed.set(conn.requests_handed.get() + 1);
        }
        if framing.is_lost() {
            // Bytes the gateway cannot frame as actix does pass straight
            // through, and this request is the connection's last.
            conn.framing_lost.set(true);
            self.framing = None;
        }
        match (&self.framing, self.head_started) {
            (Some(f), None) if f.in_head() => self.head_started = Some(Instant::now()),
            (Some(f), Some(_)) if f.in_head() => {}
            _ => self.head_started = None,
        }
        fed.taken
    }

    /// While a request is answered, reads what the client sends next into
    /// `held` rather than handing it to actix. Reading the socket all the
    /// same keeps its readiness armed, so a client that sends nothing
    /// early costs no extra wake-up.
    fn hold_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        IO: AsyncRead + Unpin,
    {
        while self.held.len() < MAX_HELD && !self.eof {
            let mut chunk = [const { MaybeUninit::<u8>::uninit() }; 4096];
            let mut read = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => self.eof = true,
                Poll::Ready(Ok(())) => self.held.extend_from_slice(read.filled()),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => break,
            }
        }
        if !self.held.is_empty() || self.eof {
            // Handed over once the answer is done, which wakes this read.
            self.conn.next_held.set(true);
            self.conn.wake_reader_later(cx);
        }
        Poll::Pending
    }

    /// Fails the read once the head being read is past `header_timeout`.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(started) = self.head_started else {
            return false;
        };
        let deadline = started + self.conn.header_timeout;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.timeouts.inc();
            return true;
        }
        false
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let conn = this.conn.clone();
        if conn.aborted.get() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        if conn.closing.get() && conn.in_flight.get() == 0 {
            // The last answer is done: read nothing more, so nothing more is served.
            return Poll::Ready(Ok(()));
        }
        if conn.awaiting_answer() {
            return this.hold_next(cx);
        }
        if !this.held.is_empty() {
            let mut held = std::mem::take(&mut this.held);
            let available = held.len().min(buf.remaining());
            let taken = this.follow(&held[..available]);
            buf.put_slice(&held[..taken]);
            held.advance(taken);
            conn.next_held.set(!held.is_empty() || this.eof);
            this.held = held;
            return Poll::Ready(Ok(()));
        }
        if this.eof {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if read.is_empty() {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                let (read_len, taken) = (read.len(), this.follow(read));
                if taken < read_len {
                    // The next request's bytes wait until this one is answered.
                    this.held.extend_from_slice(&read[taken..]);
                    conn.next_held.set(true);
                    buf.set_filled(before + taken);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.head_overdue(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head did not arrive within server.header_timeout",
            ))),
            Poll::Pending => {
                // Woken when an answer is done too, so a connection that
                // must close reads its end at once.
                conn.wake_reader_later(cx);
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.aborted.get() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.aborted.get() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            // actix flushes only after handing over its whole write buffer.
            this.conn.flushed();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: ActixStream> ActixStream for Counted<IO> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        IO::poll_read_ready(&self.io, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        IO::poll_write_ready(&self.io, cx)
    }
}
