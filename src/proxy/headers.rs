//! Header rules at the proxy boundary: hop-by-hop removal (RFC 9110 §7.6.1)
//! and the `X-Forwarded-*` / `Via` headers added on the way upstream.

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message: removed in both
/// directions, along with every header the `Connection` header names.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            // Framing is re-derived from the body the gateway sends.
            | "content-length"
    )
}

/// Copies `from` into `to` without hop-by-hop headers, framing headers, the
/// headers `Connection` names, and any header for which `skip` is true.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap, skip: impl Fn(&HeaderName) -> bool) {
    let named: Vec<&str> = from
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    for (name, value) in from.iter() {
        if is_hop_by_hop(name)
            || named.iter().any(|n| name.as_str().eq_ignore_ascii_case(n))
            || skip(name)
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Whether two header names are the same once `_` is read as `-`.
pub fn same_header(name: &HeaderName, other: &HeaderName) -> bool {
    let (a, b) = (name.as_str().as_bytes(), other.as_str().as_bytes());
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || (*x == b'_' && *y == b'-'))
}

/// What the gateway knows about the inbound connection.
pub struct Forwarding {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub https: bool,
    pub host: Option<HeaderValue>,
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers the gateway writes itself; inbound copies are only believed from
/// trusted proxies, and are handled by [`add_forwarding`].
pub fn is_forwarding_header(name: &HeaderName) -> bool {
    *name == X_FORWARDED_FOR || *name == X_FORWARDED_PROTO || *name == X_FORWARDED_HOST
}

/// Adds `X-Forwarded-For` (appended to a trusted proxy's chain, otherwise
/// replacing any client-supplied value), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `Via`.
pub fn add_forwarding(inbound: &HeaderMap, outbound: &mut HeaderMap, fwd: &Forwarding) {
    let peer = fwd.peer.to_string();
    let chain = fwd
        .peer_trusted
        .then(|| joined(inbound, &X_FORWARDED_FOR))
        .flatten();
    let xff = match chain {
        Some(chain) => format!("{chain}, {peer}"),
        None => peer,
    };
    if let Ok(value) = HeaderValue::from_str(&xff) {
        outbound.insert(X_FORWARDED_FOR, value);
    }
    let trusted_value = |name: &HeaderName| {
        fwd.peer_trusted
            .then(|| inbound.get(name).cloned())
            .flatten()
    };
    let proto =
        trusted_value(&X_FORWARDED_PROTO).unwrap_or(HeaderValue::from_static(if fwd.https {
            "https"
        } else {
            "http"
        }));
    outbound.insert(X_FORWARDED_PROTO, proto);
    if let Some(host) = trusted_value(&X_FORWARDED_HOST).or_else(|| fwd.host.clone()) {
        outbound.insert(X_FORWARDED_HOST, host);
    }
    let via = match joined(inbound, &header::VIA) {
        Some(existing) => HeaderValue::from_str(&format!("{existing}, 1.1 portcullis")).ok(),
        None => Some(HeaderValue::from_static("1.1 portcullis")),
    };
    if let Some(via) = via {
        outbound.insert(header::VIA, via);
    }
}

/// All values of a header joined with `, `, when there are any.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let inbound = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("content-length", "4"),
            ("accept", "a"),
            ("accept", "b"),
        ]);
        let mut out = HeaderMap::new();
        copy_end_to_end(&inbound, &mut out, |_| false);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
        assert_eq!(out.get_all("accept").count(), 2);
    }

    #[test]
    fn forwarded_for_is_replaced_for_untrusted_peers_and_appended_for_trusted() {
        let inbound = map(&[("x-forwarded-for", "6.6.6.6"), ("host", "example.com")]);
        let host = inbound.get("host").cloned();
        let mut out = HeaderMap::new();
        let fwd = Forwarding {
            peer: "203.0.113.1".parse().unwrap(),
            peer_trusted: false,
            https: false,
            host,
        };
        add_forwarding(&inbound, &mut out, &fwd);
        assert_eq!(out.get("x-forwarded-for").unwrap(), "203.0.113.1");
        assert_eq!(out.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(out.get("x-forwarded-host").unwrap(), "example.com");
        assert_eq!(out.get("via").unwrap(), "1.1 portcullis");

        let mut out = HeaderMap::new();
        let fwd = Forwarding {
            peer_trusted: true,
            ..fwd
        };
        add_forwarding(&inbound, &mut out, &fwd);
        assert_eq!(out.get("x-forwarded-for").unwrap(), "6.6.6.6, 203.0.113.1");
    }
}
