//! Header rules at the proxy boundary: hop-by-hop removal (RFC 9110 §7.6.1),
//! the headers only the gateway may speak, and the forwarding headers it adds
//! on the way upstream.
//!
//! Only the gateway speaks for the client. What it writes itself, replacing
//! anything a client sent (extending or keeping it only for a trusted
//! proxy): `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
//! `X-Real-IP`; `X-Forwarded-Prefix` when the route strips a prefix. `Via`
//! is the one the gateway appends its own entry to, whoever sent it (RFC
//! 9110 §7.6.3). Passed on from trusted proxies only, removed from anyone else:
//! `Forwarded`, `X-Forwarded-Port`, `X-Forwarded-Prefix`, `X-Forwarded-Server`.
//! Never passed on from anyone: `X-Original-URL` and `X-Rewrite-URL` (they
//! would let a client choose the path an upstream serves after the gateway
//! authorised another one) and `Expect` (the gateway answers `100 Continue`
//! itself). Header names with `_` are dropped unless
//! `server.allow_underscore_headers` is on, as nginx does: CGI-style
//! upstreams read `X_User_Id` as `X-User-Id`. Even when on, a name that
//! reads as a withheld one with `_` as `-` (`X_Forwarded_For`) is dropped.

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
    // Bytes, not text: one item outside ASCII must not void the whole list.
    let named: Vec<&[u8]> = from
        .get_all(header::CONNECTION)
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.is_empty())
        .collect();
    for (name, value) in from.iter() {
        if is_hop_by_hop(name)
            || named
                .iter()
                .any(|n| name.as_str().as_bytes().eq_ignore_ascii_case(n))
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

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub const X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// What the gateway knows about the inbound request, for the headers it
/// writes on the way upstream.
pub struct Forwarding<'a> {
    /// The socket peer.
    pub peer: IpAddr,
    pub peer_trusted: bool,
    /// The client as resolved through trusted proxies.
    pub client: IpAddr,
    pub https: bool,
    /// The host the client asked for.
    pub host: Option<HeaderValue>,
    /// The path prefix the route removed before forwarding, if any.
    pub stripped_prefix: Option<&'a str>,
    /// Whether header names with `_` are passed on.
    pub allow_underscores: bool,
}

impl Forwarding<'_> {
    /// Whether an inbound header must not be copied upstream as it is: the
    /// gateway writes it itself, does not believe it from this peer, or never
    /// forwards it.
    pub fn withholds(&self, name: &HeaderName) -> bool {
        let text = name.as_str();
        if !text.contains('_') {
            return self.withholds_name(text);
        }
        // An upstream may read `_` as `-`: a look-alike of a withheld name
        // is withheld too.
        !self.allow_underscores || self.withholds_name(&text.replace('_', "-"))
    }

    fn withholds_name(&self, text: &str) -> bool {
        matches!(
            text,
            "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-forwarded-prefix"
                | "x-real-ip"
                | "via"
                | "expect"
                | "x-original-url"
                | "x-rewrite-url"
        ) || (!self.peer_trusted
            && matches!(
                text,
                "forwarded" | "x-forwarded-port" | "x-forwarded-server"
            ))
    }

    /// Writes the forwarding headers into `outbound`: a trusted proxy's
    /// values are extended (`X-Forwarded-For`, `Via`, `X-Forwarded-Prefix`)
    /// or kept (`-Proto`, `-Host`); anyone else's are replaced by the
    /// gateway's own.
    pub fn write(&self, inbound: &HeaderMap, outbound: &mut HeaderMap) {
        let trusted =
            |name: &HeaderName| self.peer_trusted.then(|| joined(inbound, name)).flatten();
        let peer = self.peer.to_string();
        let peer_value = HeaderValue::from_str(&peer).ok();
        match trusted(&X_FORWARDED_FOR) {
            Some(chain) => insert(outbound, X_FORWARDED_FOR, &format!("{chain}, {peer}")),
            None => {
                if let Some(value) = peer_value.clone() {
                    outbound.insert(X_FORWARDED_FOR, value);
                }
            }
        }
        match trusted(&X_FORWARDED_PROTO) {
            Some(proto) => insert(outbound, X_FORWARDED_PROTO, &proto),
            None => {
                let proto = if self.https { "https" } else { "http" };
                outbound.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            }
        }
        match trusted(&X_FORWARDED_HOST) {
            Some(host) => insert(outbound, X_FORWARDED_HOST, &host),
            None => {
                if let Some(host) = self.host.clone() {
                    outbound.insert(X_FORWARDED_HOST, host);
                }
            }
        }
        if let (true, Some(value)) = (self.client == self.peer, peer_value) {
            outbound.insert(X_REAL_IP, value);
        } else {
            insert(outbound, X_REAL_IP, &self.client.to_string());
        }
        let prefix = match (trusted(&X_FORWARDED_PREFIX), self.stripped_prefix) {
            (Some(outer), Some(ours)) => Some(format!("{}{ours}", outer.trim_end_matches('/'))),
            (outer, ours) => outer.or_else(|| ours.map(str::to_owned)),
        };
        if let Some(prefix) = prefix {
            insert(outbound, X_FORWARDED_PREFIX, &prefix);
        }
        match joined(inbound, &header::VIA) {
            Some(existing) => insert(
                outbound,
                header::VIA,
                &format!("{existing}, 1.1 portcullis"),
            ),
            None => {
                outbound.insert(header::VIA, HeaderValue::from_static("1.1 portcullis"));
            }
        }
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
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

    fn forwarding(peer_trusted: bool) -> Forwarding<'static> {
        Forwarding {
            peer: "203.0.113.1".parse().unwrap(),
            peer_trusted,
            client: "203.0.113.1".parse().unwrap(),
            https: false,
            host: Some(HeaderValue::from_static("example.com")),
            stripped_prefix: None,
            allow_underscores: false,
        }
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
    fn only_the_gateway_speaks_for_an_untrusted_client() {
        let inbound = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-server", "evil"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("expect", "100-continue"),
            ("x_user_id", "root"),
            ("accept", "a"),
        ]);
        let fwd = forwarding(false);
        let mut out = HeaderMap::new();
        copy_end_to_end(&inbound, &mut out, |name| fwd.withholds(name));
        assert_eq!(
            out.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["accept"]
        );
        fwd.write(&inbound, &mut out);
        assert_eq!(out.get("x-forwarded-for").unwrap(), "203.0.113.1");
        assert_eq!(out.get("x-real-ip").unwrap(), "203.0.113.1");
        assert_eq!(out.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(out.get("x-forwarded-host").unwrap(), "example.com");
        assert!(out.get("x-forwarded-port").is_none());
        assert!(out.get("forwarded").is_none());
        assert_eq!(out.get("via").unwrap(), "1.1 portcullis");
        assert!(out.get("x-forwarded-prefix").is_none());
    }

    #[test]
    fn a_trusted_proxy_is_extended() {
        let inbound = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/outer/"),
            ("x-forwarded-server", "edge"),
            ("x-original-url", "/admin"),
        ]);
        let fwd = Forwarding {
            peer: "2001:db8::7".parse().unwrap(),
            client: "6.6.6.6".parse().unwrap(),
            stripped_prefix: Some("/api"),
            ..forwarding(true)
        };
        let mut out = HeaderMap::new();
        copy_end_to_end(&inbound, &mut out, |name| fwd.withholds(name));
        assert_eq!(out.get("x-forwarded-server").unwrap(), "edge");
        assert_eq!(out.get("x-forwarded-port").unwrap(), "443");
        assert_eq!(out.get("forwarded").unwrap(), "for=6.6.6.6;proto=https");
        assert!(out.get("x-original-url").is_none());
        fwd.write(&inbound, &mut out);
        assert_eq!(out.get("x-forwarded-for").unwrap(), "6.6.6.6, 2001:db8::7");
        assert_eq!(out.get("x-real-ip").unwrap(), "6.6.6.6");
        assert_eq!(out.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(out.get("x-forwarded-prefix").unwrap(), "/outer/api");
    }

    #[test]
    fn underscores_pass_only_when_allowed() {
        let fwd = Forwarding {
            allow_underscores: true,
            ..forwarding(false)
        };
        assert!(!fwd.withholds(&HeaderName::from_static("x_custom")));
        assert!(forwarding(false).withholds(&HeaderName::from_static("x_custom")));
    }
}
