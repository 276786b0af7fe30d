//! The admin listener (loopback by default): metrics, liveness, readiness
//! and the admin API.

pub mod api;
mod body;

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::GatewayError;
use crate::state::AppState;

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Malformed query strings get the gateway's JSON error, not actix's text
    // (bodies are read by `body::Json`, which answers the same way).
    let query = web::QueryConfig::default()
        .error_handler(|err, _| GatewayError::BadRequest(err.to_string().into()).into());
    cfg.app_data(query)
        .route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .configure(api::configure);
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// 200 for as long as the process can answer at all.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the configuration is loaded, storage takes durable writes and
/// the gateway is not shutting down; otherwise 503 naming the failing checks.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let storage = state.storage.clone();
    let storage_failure = web::block(move || storage.probe().err())
        .await
        .unwrap_or_else(|_| Some("the storage probe could not run".into()));
    let checks = [
        ("config", true),
        ("storage", storage_failure.is_none()),
        ("accepting", !state.draining.load(Ordering::Relaxed)),
    ];
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    let mut response = if failing.is_empty() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    let status = if failing.is_empty() {
        "ready"
    } else {
        "not_ready"
    };
    let mut body = json!({
        "status": status,
        "checks": checks.iter().map(|(name, ok)| (name.to_string(), json!(if *ok { "ok" } else { "failing" }))).collect::<serde_json::Map<_, _>>(),
        "failing": failing,
    });
    if let Some(failure) = storage_failure {
        body["storage_error"] = json!(crate::storage::advice(&failure));
    }
    response.json(body)
}
