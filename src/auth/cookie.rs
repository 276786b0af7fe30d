//! The session cookie: reading it, writing it, and keeping it from upstreams.

use actix_web::cookie::{time, Cookie, SameSite as CookieSameSite};
use actix_web::http::header::{HeaderMap, HeaderValue, COOKIE};

use crate::config::{SameSite, SessionConfig};
use crate::storage::now_ms;

/// Every `name=value` pair of the request's `Cookie` headers, as bytes:
/// browsers send whatever a page stored, UTF-8 included, and one such
/// cookie must not hide the others.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(COOKIE)
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
}

/// A pair's name: everything before the first `=`, or the whole pair.
fn pair_name(pair: &[u8]) -> &[u8] {
    pair.split(|&b| b == b'=')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// The value of the session cookie in the request's `Cookie` headers
/// (`None` when absent, or when its value is not text: then it is no token).
pub fn session_cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let pair = cookie_pairs(headers)
        .find(|pair| pair.contains(&b'=') && pair_name(pair) == name.as_bytes())?;
    let value = &pair[pair.iter().position(|&b| b == b'=')? + 1..];
    std::str::from_utf8(value.trim_ascii())
        .ok()
        .map(|v| v.trim_matches('"'))
}

/// `Set-Cookie` for a session token: HttpOnly, Secure and SameSite per
/// config, Path=/, no Domain, Max-Age = the remaining absolute lifetime.
pub fn session_cookie(config: &SessionConfig, token: &str, expires_at: u64) -> HeaderValue {
    let remaining = expires_at.saturating_sub(now_ms()) / 1000;
    build(config, token, time::Duration::seconds(remaining as i64))
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(config: &SessionConfig) -> HeaderValue {
    build(config, "", time::Duration::ZERO)
}

fn build(config: &SessionConfig, value: &str, max_age: time::Duration) -> HeaderValue {
    let cookie = Cookie::build(config.cookie_name.as_str(), value)
        .http_only(true)
        .secure(config.secure)
        .same_site(match config.same_site {
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::None => CookieSameSite::None,
        })
        .path("/")
        .max_age(max_age)
        .finish();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The `Cookie` header to send upstream: every cookie but the session
/// cookie, or `None` when nothing is left.
pub fn strip_session_cookie(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let kept: Vec<&[u8]> = cookie_pairs(headers)
        .filter(|pair| pair_name(pair) != name.as_bytes())
        .collect();
    (!kept.is_empty())
        .then(|| HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_static("cookie"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn finds_and_strips_only_the_session_cookie() {
        let h = cookies(&["a=1; sid=tok; b=2", "c=3"]);
        assert_eq!(session_cookie_value(&h, "sid"), Some("tok"));
        assert_eq!(session_cookie_value(&h, "x"), None);
        assert_eq!(strip_session_cookie(&h, "sid").unwrap(), "a=1; b=2; c=3");
        assert_eq!(strip_session_cookie(&cookies(&["sid=tok"]), "sid"), None);
    }

    #[test]
    fn a_cookie_that_is_not_ascii_hides_nothing() {
        let h = cookies(&["lang=français; sid=tok; a=1"]);
        assert_eq!(session_cookie_value(&h, "sid"), Some("tok"));
        assert_eq!(
            strip_session_cookie(&h, "sid").unwrap().as_bytes(),
            "lang=français; a=1".as_bytes()
        );
    }
}
