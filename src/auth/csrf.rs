//! Cross-site request forgery defence at the gateway. Cookies are ambient
//! credentials, so an unsafe request authenticated by cookie must come from
//! the request's own origin or a configured trusted origin.

use actix_web::http::header::{HeaderName, ORIGIN};
use actix_web::http::Method;
use actix_web::HttpRequest;

use crate::config::SessionConfig;
use crate::proxy::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// True when the request may proceed. `behind_trusted_proxy` says whether the
/// peer is a trusted proxy, whose `X-Forwarded-Proto`/`-Host` then describe
/// the origin the browser saw (TLS terminated in front of the gateway).
pub fn allows(req: &HttpRequest, config: &SessionConfig, behind_trusted_proxy: bool) -> bool {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return true;
    }
    let headers = req.headers();
    let origin = headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    // An operator's explicit trust wins, even for another site.
    if origin
        .as_ref()
        .is_some_and(|o| config.trusted_origins.contains(o))
    {
        return true;
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return false;
    }
    // Browsers send Origin on every unsafe cross-origin request: without
    // one, this is not a page of another site speaking.
    let Some(origin) = origin else {
        return true;
    };
    let forwarded = |name: &HeaderName| {
        behind_trusted_proxy
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .map(str::to_owned)
    };
    let scheme = forwarded(&X_FORWARDED_PROTO).unwrap_or_else(|| {
        if crate::listener::Connection::of(req).is_some_and(|conn| conn.is_tls()) {
            "https"
        } else {
            "http"
        }
        .to_owned()
    });
    let host = forwarded(&X_FORWARDED_HOST).or_else(|| {
        crate::proxy::request_host(req).and_then(|h| h.to_str().ok().map(str::to_owned))
    });
    host.is_some_and(|host| {
        origin
            == format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            )
    })
}
