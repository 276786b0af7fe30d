//! Cross-site request forgery defence at the gateway. Cookies are ambient
//! credentials, so an unsafe request authenticated by cookie must come from
//! the request's own origin or a configured trusted origin.

use actix_web::http::header::ORIGIN;
use actix_web::http::Method;
use actix_web::HttpRequest;

use crate::config::SessionConfig;

/// True when the request may proceed.
pub fn allows(req: &HttpRequest, config: &SessionConfig) -> bool {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return true;
    }
    let headers = req.headers();
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return false;
    }
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        // No Origin: not a browser cross-origin request (browsers send Origin on every unsafe one).
        return true;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    let own = crate::proxy::request_host(req).and_then(|h| {
        h.to_str()
            .ok()
            .map(|host| format!("{scheme}://{}", host.to_ascii_lowercase()))
    });
    own.as_deref() == Some(origin.as_str()) || config.trusted_origins.contains(&origin)
}
