//! Operations endpoints: Prometheus metrics, liveness and readiness.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// 200 for as long as the process can answer at all.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the configuration is loaded, storage takes durable writes, the
/// shared Redis (if any) answers and the gateway is not shutting down;
/// otherwise 503 naming the failing checks.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let storage = state.storage.clone();
    let storage_failure = web::block(move || storage.probe().err())
        .await
        .unwrap_or_else(|_| Some("the storage probe could not run".into()));
    let shared = state.storage.shared();
    let mut checks = vec![
        ("config", true),
        ("storage", storage_failure.is_none()),
        ("accepting", !state.draining.load(Ordering::Relaxed)),
    ];
    if let Some(shared) = shared {
        checks.push(("redis", shared.is_up()));
    }
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
    if let Some(down) = shared.and_then(|shared| shared.down_for()) {
        body["redis_error"] = json!(format!(
            "Redis has not answered for {:.1} s; see the log and portcullis_redis_up",
            down.as_secs_f64()
        ));
    }
    response.json(body)
}
