//! The session cookie: reading it, writing it, and keeping it from upstreams.

use actix_web::cookie::{time, Cookie, SameSite as CookieSameSite};
use actix_web::http::header::{HeaderMap, HeaderValue, COOKIE};

use crate::config::{SameSite, SessionConfig};
use crate::storage::now_ms;

/// The value of the session cookie in the request's `Cookie` headers.
pub fn session_cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches('"'))
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
    let kept: Vec<&str> = headers
        .get_all(COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(n, _)| n) != name)
        .collect();
    (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
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
}
