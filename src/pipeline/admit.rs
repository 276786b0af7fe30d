//! The first phase: refuse what the gateway will not forward (CONNECT, an
//! oversized head, a missing, repeated or malformed `Host`) and normalise
//! the path.

use std::borrow::Cow;

use actix_web::http::{header, Method, Version};
use actix_web::HttpRequest;

use crate::config::Config;
use crate::error::GatewayError;
use crate::routing;

/// Admits a request, returning its normalised path.
pub fn admit<'r>(req: &'r HttpRequest, config: &Config) -> Result<Cow<'r, str>, GatewayError> {
    if *req.method() == Method::CONNECT {
        return Err(GatewayError::BadRequest(
            "CONNECT tunnels are not supported".into(),
        ));
    }
    if head_bytes(req) > config.server.max_header_bytes {
        return Err(GatewayError::HeaderTooLarge);
    }
    check_host(req)?;
    routing::normalize(req.uri().path())
        .map_err(|err| GatewayError::BadRequest(err.to_string().into()))
}

/// The size of the request head as the client sent it, near enough.
fn head_bytes(req: &HttpRequest) -> usize {
    let uri = req.uri();
    let request_line = req.method().as_str().len()
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
        + 11;
    request_line
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`, and any
/// `Host` is a valid `host[:port]` (RFC 3986 authority, without user info).
/// An absolute-form target's authority wins over `Host` later on, but a
/// malformed `Host` is refused all the same.
fn check_host(req: &HttpRequest) -> Result<(), GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST);
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest(
            "the request has more than one Host header".into(),
        ));
    }
    match host {
        Some(value) if !is_authority(value.as_bytes()) => Err(GatewayError::BadRequest(
            "the Host header is not a valid host[:port]".into(),
        )),
        None if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => Err(
            GatewayError::BadRequest("an HTTP/1.1 request needs a Host header".into()),
        ),
        _ => Ok(()),
    }
}

/// `host[:port]`: a bracketed IPv6 literal or a reg-name (unreserved,
/// percent-encoded and sub-delimiter characters), then optional port digits.
pub fn is_authority(text: &[u8]) -> bool {
    let (host, port) = match text.iter().rposition(|&b| b == b':') {
        Some(colon) if !text[colon..].contains(&b']') => (&text[..colon], &text[colon + 1..]),
        _ => (text, &b""[..]),
    };
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    let host_ok = match host {
        [b'[', literal @ .., b']'] => {
            !literal.is_empty()
                && literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        _ => !host.is_empty() && is_reg_name(host),
    };
    port_ok && host_ok
}

fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                let escape = host.get(i + 1..i + 3);
                if !escape.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if REG_NAME[usize::from(b)] => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// The bytes a reg-name may hold as they are: unreserved and sub-delims.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_authorities_without_user_info() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "[2001:db8::1]",
            "xn--bcher-kva.example",
            "host%41name",
            "example.com:",
        ] {
            assert!(is_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "exa mple.com",
            "example.com/path",
            "example.com?q",
            "example.com#f",
            "user@example.com",
            "<script>",
            "example.com:80:80",
            "example.com:http",
            "[::1",
            "[]",
            "[::1]x",
            "host%4",
            "example.com:123456",
            "exa\"mple",
        ] {
            assert!(!is_authority(bad.as_bytes()), "{bad}");
        }
    }
}
