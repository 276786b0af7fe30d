//! Following the framing of HTTP/1 requests on a connection's raw bytes,
//! alongside actix-http, which stays the one parser the gateway serves from.
//!
//! actix-http reads ahead: it parses every request already buffered on a
//! connection before the first is answered, and frames an answer by the
//! last head it parsed (HEAD or not, HTTP version, `Connection`), so a
//! pipelined GET then HEAD gets a GET answer without its body. Knowing where
//! each request ends lets the listener hand actix one request at a time (see
//! `watched`), and it shows a chunk that could never fit the body limit as
//! soon as its size line arrives, before any of its data.
//!
//! Heads are parsed with httparse, as actix parses them, and the body
//! framing follows actix's own rules (RFC 9112 §6: chunked, else
//! Content-Length, else none; the conflicting combinations actix refuses).
//! Whatever this cannot follow the same way is [`Framing::is_lost`]: its
//! bytes pass straight through and the connection ends after the request.

use std::mem::MaybeUninit;

/// Longest head actix buffers before it gives up (its `MAX_BUFFER_SIZE`).
const MAX_HEAD: usize = 131_072;
/// Header fields actix parses at most.
const MAX_HEADERS: usize = 96;

/// Where the current request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a head; its bytes so far are in `Framing::head`.
    Head,
    /// A body of this many more bytes.
    Length(u64),
    Chunked(Chunk),
    /// Everything that follows belongs to this request (an upgrade, CONNECT).
    Stream,
    /// Framing this cannot follow as actix does.
    Lost,
}

/// The chunked-body grammar, state by state, as actix reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    SizeFirst,
    SizeRest(u64),
    SizeSpace(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// What [`Framing::feed`] made of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// How many of the bytes belong to the current request.
    pub taken: usize,
    /// The current request ended with them: the rest belongs to the next.
    pub ended: bool,
}

/// One connection's request framing.
#[derive(Debug)]
pub struct Framing {
    phase: Phase,
    head: Vec<u8>,
    /// Body bytes declared so far by the current request's chunk sizes.
    declared: u64,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            phase: Phase::Head,
            head: Vec::new(),
            declared: 0,
        }
    }
}

impl Framing {
    /// Whether part of a head has arrived and its end has not.
    pub fn in_head(&self) -> bool {
        self.phase == Phase::Head && !self.head.is_empty()
    }

    /// Whether the framing could not be followed (bytes now pass straight through).
    pub fn is_lost(&self) -> bool {
        self.phase == Phase::Lost
    }

    /// The body bytes the current request's chunk size lines have declared
    /// so far: known as each size line arrives, before the chunk's data.
    pub fn declared(&self) -> u64 {
        self.declared
    }

    /// Follows `data`, the next bytes of the connection; stops at the end
    /// of the current request.
    pub fn feed(&mut self, data: &[u8]) -> Fed {
        let mut taken = 0;
        while taken < data.len() {
            let rest = &data[taken..];
            let (used, ended) = match self.phase {
                Phase::Head => self.feed_head(rest),
                Phase::Length(left) => {
                    let used = left.min(rest.len() as u64);
                    self.phase = Phase::Length(left - used);
                    (used as usize, left == used)
                }
                Phase::Chunked(state) => self.feed_chunked(state, rest),
                Phase::Stream | Phase::Lost => (rest.len(), false),
            };
            taken += used;
            if ended {
                self.start_next();
                return Fed { taken, ended: true };
            }
        }
        Fed {
            taken,
            ended: false,
        }
    }

    fn start_next(&mut self) {
        self.phase = Phase::Head;
        self.head.clear();
        self.declared = 0;
    }

    /// Adds head bytes; when the head is complete, returns how many of
    /// `rest` it took and moves on to the body (or ends a bodiless request).
    fn feed_head(&mut self, rest: &[u8]) -> (usize, bool) {
        // A head can only end with a line end: no need to parse before one.
        if !rest.contains(&b'\n') {
            self.head.extend_from_slice(rest);
            if self.head.len() >= MAX_HEAD {
                self.phase = Phase::Lost;
            }
            return (rest.len(), false);
        }
        // Usually a whole head arrives at once: parse it where it is.
        let before = self.head.len();
        if before > 0 {
            self.head.extend_from_slice(rest);
        }
        let text = if before > 0 { &self.head[..] } else { rest };
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = request.parse_with_uninit_headers(text, &mut headers);
        let phase = match parsed {
            Ok(httparse::Status::Complete(length)) => Ok((length, body_framing(&request))),
            Ok(httparse::Status::Partial) if text.len() < MAX_HEAD => Err(Phase::Head),
            _ => Err(Phase::Lost),
        };
        match phase {
            Ok((length, phase)) => {
                self.phase = phase;
                self.head.clear();
                (length - before, phase == Phase::Head)
            }
            Err(phase) => {
                if before == 0 {
                    self.head.extend_from_slice(rest);
                }
                self.phase = phase;
                (rest.len(), false)
            }
        }
    }

    fn feed_chunked(&mut self, state: Chunk, rest: &[u8]) -> (usize, bool) {
        if let Chunk::Data(left) = state {
            let used = left.min(rest.len() as u64);
            self.phase = Phase::Chunked(if left == used {
                Chunk::DataCr
            } else {
                Chunk::Data(left - used)
            });
            return (used as usize, false);
        }
        let next = match (state, rest[0]) {
            (Chunk::SizeFirst, b) => hex(b).map(Chunk::SizeRest),
            (Chunk::SizeRest(size), b) => match (hex(b), b) {
                (Some(digit), _) => size.checked_mul(16).map(|s| Chunk::SizeRest(s + digit)),
                (None, b'\t' | b' ') => Some(Chunk::SizeSpace(size)),
                (None, b';') => Some(Chunk::Extension(size)),
                (None, b'\r') => Some(Chunk::SizeLf(size)),
                _ => None,
            },
            (Chunk::SizeSpace(size), b'\t' | b' ') => Some(Chunk::SizeSpace(size)),
            (Chunk::SizeSpace(size), b';') => Some(Chunk::Extension(size)),
            (Chunk::SizeSpace(size) | Chunk::Extension(size), b'\r') => Some(Chunk::SizeLf(size)),
            (Chunk::Extension(_), 0x00..=0x08 | 0x0a..=0x1f | 0x7f) => None,
            (Chunk::Extension(size), _) => Some(Chunk::Extension(size)),
            (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
            (Chunk::SizeLf(size), b'\n') => {
                self.declared = self.declared.saturating_add(size);
                Some(Chunk::Data(size))
            }
            (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => Some(Chunk::SizeFirst),
            (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
            (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
            (Chunk::EndCr | Chunk::Trailer, _) => Some(Chunk::Trailer),
            (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
            (Chunk::EndLf, b'\n') => return (1, true),
            _ => None,
        };
        self.phase = next.map_or(Phase::Lost, Phase::Chunked);
        (1, false)
    }
}

fn hex(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

/// How the body of a parsed head is framed, by actix's rules; `Head` for a
/// request without a body (the next head follows at once).
fn body_framing(request: &httparse::Request) -> Phase {
    let http11 = request.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut websocket = false;
    for header in request.headers.iter() {
        let value = || std::str::from_utf8(header.value).map(str::trim);
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match value().ok().filter(|v| !v.starts_with('+')).map(str::parse) {
                Some(Ok(n)) if length.is_none() => length = Some(n),
                _ => return Phase::Lost,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding || !http11 {
                return Phase::Lost;
            }
            transfer_encoding = true;
            chunked = value().is_ok_and(|v| v.eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("upgrade") {
            websocket |= value().is_ok_and(|v| v.eq_ignore_ascii_case("websocket"));
        }
    }
    let method = request.method.unwrap_or_default();
    match (transfer_encoding, chunked, length) {
        (true, false, _) | (true, true, Some(_)) => Phase::Lost,
        (true, true, None) => Phase::Chunked(Chunk::SizeFirst),
        _ if websocket => Phase::Stream,
        (_, _, Some(0)) => Phase::Head,
        (_, _, Some(n)) => Phase::Length(n),
        _ if !http11 && method == "POST" => Phase::Lost,
        _ if method == "CONNECT" => Phase::Stream,
        _ => Phase::Head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the offsets where requests ended.
    fn ends(input: &[u8], step: usize) -> (Vec<usize>, Framing) {
        let mut framing = Framing::default();
        let mut ends = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let piece = &input[offset..(offset + step).min(input.len())];
            let fed = framing.feed(piece);
            offset += fed.taken;
            if fed.ended {
                ends.push(offset);
            }
        }
        (ends, framing)
    }

    /// The request ends of `input` fed whole and byte by byte, which must agree.
    fn both_ways(input: &[u8]) -> (Vec<usize>, Framing) {
        let (whole, framing) = ends(input, input.len());
        let (bytewise, _) = ends(input, 1);
        assert_eq!(whole, bytewise, "{:?}", String::from_utf8_lossy(input));
        (whole, framing)
    }

    #[test]
    fn pipelined_requests_end_where_actix_ends_them() {
        let get = &b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        let post = &b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"[..];
        let chunked = &b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n"[..];
        let head = &b"\r\nHEAD /d HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        let input = [get, post, chunked, head].concat();
        let (found, framing) = both_ways(&input);
        let mut at = 0;
        let expected: Vec<usize> = [get, post, chunked, head]
            .iter()
            .map(|r| {
                at += r.len();
                at
            })
            .collect();
        assert_eq!(found, expected);
        assert!(!framing.in_head());
        assert!(!framing.is_lost());
    }

    #[test]
    fn bare_line_feeds_and_zero_lengths_are_read_as_actix_reads_them() {
        let first = &b"GET /a HTTP/1.1\nHost: x\n\n"[..];
        let second = &b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..];
        let (found, _) = both_ways(&[first, second].concat());
        assert_eq!(found, vec![first.len(), first.len() + second.len()]);
    }

    #[test]
    fn ambiguous_framing_is_lost_not_guessed() {
        for input in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
        ] {
            let (found, framing) = both_ways(input);
            assert!(found.is_empty(), "{:?}", String::from_utf8_lossy(input));
            assert!(framing.is_lost(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn upgrades_and_connect_take_the_rest_of_the_connection() {
        for input in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\n\r\n"[..],
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        ] {
            let (found, framing) = both_ways(input);
            assert!(found.is_empty());
            assert!(!framing.is_lost());
        }
    }

    #[test]
    fn chunk_sizes_are_known_before_their_data() {
        let mut framing = Framing::default();
        framing.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        framing.feed(b"200\r\n");
        assert_eq!(framing.declared(), 0x200);
        framing.feed(&[b'x'; 0x200]);
        framing.feed(b"\r\n201\r\n");
        assert_eq!(framing.declared(), 0x401, "the chunks add up");
        let mut framing = Framing::default();
        framing.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        framing.feed(b"ffffffffffffffff\r\n");
        assert_eq!(framing.declared(), u64::MAX);
    }

    #[test]
    fn a_head_in_progress_is_known_until_it_ends() {
        let mut framing = Framing::default();
        assert!(!framing.in_head());
        framing.feed(b"GET / HTTP/1.1\r\nHo");
        assert!(framing.in_head());
        let fed = framing.feed(b"st: x\r\n\r\nGET");
        assert_eq!(
            fed,
            Fed {
                taken: 9,
                ended: true
            }
        );
        assert!(!framing.in_head());
    }
}
