//! Request ids: kept from the client when sane, generated otherwise.

use actix_web::http::header::HeaderMap;
use rand::RngCore;

/// The header carrying the request id in both directions.
pub const HEADER: &str = "x-request-id";
const MAX_LEN: usize = 128;

/// The client's `X-Request-Id` when it is 1–128 visible ASCII characters,
/// otherwise a fresh random 128-bit id in hex.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty() && v.len() <= MAX_LEN && v.iter().all(|b| b.is_ascii_graphic()))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map_or_else(generate, str::to_owned)
}

pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    crate::auth::token::to_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(HEADER),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(from_headers(&with("abc-123")), "abc-123");
        let long = "a".repeat(129);
        assert_ne!(from_headers(&with(&long)), long);
        assert_ne!(from_headers(&with("has space")), "has space");
        let generated = from_headers(&HeaderMap::new());
        assert_eq!(generated.len(), 32);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(from_headers(&with(&"b".repeat(128))), "b".repeat(128));
    }
}
