//! The admin listener (loopback by default): metrics, liveness and
//! readiness ([`ops`]), the admin API ([`api`]) behind its [`guard`], the
//! audit trail ([`audit`]) and the browser [`console`].

pub mod api;
pub mod audit;
mod body;
pub mod console;
pub mod guard;
mod ops;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::web;

use crate::error::GatewayError;

/// The console's Content-Security-Policy: its own scripts, styles and API,
/// nothing inline, nothing from elsewhere, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Registers every admin route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Malformed query strings get the gateway's JSON error, not actix's text
    // (bodies are read by `body::Json`, which answers the same way).
    let query = web::QueryConfig::default()
        .error_handler(|err, _| GatewayError::BadRequest(err.to_string().into()).into());
    let path = web::PathConfig::default()
        .error_handler(|err, _| GatewayError::BadRequest(err.to_string().into()).into());
    cfg.app_data(query).app_data(path).service(
        web::scope("")
            .wrap(from_fn(security_headers))
            .route("/metrics", web::get().to(ops::metrics))
            .route("/healthz", web::get().to(ops::healthz))
            .route("/readyz", web::get().to(ops::readyz))
            .configure(api::configure)
            .configure(console::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(GatewayError::NotFound)
            })),
    );
}

/// Security headers on every admin answer, errors included; API answers
/// are never cached.
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let api = req.path().starts_with("/admin/api/");
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ] {
        headers.insert(name, value);
    }
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(response)
}
