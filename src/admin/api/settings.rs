//! The running configuration (secrets masked), the log level, the audit
//! trail and the API's own OpenAPI document.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{account::field, unsaved, Change};
use crate::admin::audit::AuditQuery;
use crate::admin::body::Json;
use crate::admin::guard::Caller;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::telemetry::level_name;

/// The OpenAPI 3.1 document of this API, checked against [`super::ENDPOINTS`] by a test.
pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// The effective configuration, every secret masked, with the level the
/// log runs at now (which `PUT /log-level` may have changed).
pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    let mut effective = state.runtime.load().config.effective();
    effective["log"]["level"] = json!(level_name(state.logging.level()));
    HttpResponse::Ok().json(effective)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    level: String,
}

/// Changes the log level until the next reload or restart.
pub async fn set_log_level(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<LogLevel>,
) -> Result<HttpResponse, GatewayError> {
    let before = json!(level_name(state.logging.level()));
    let result = crate::config::parse_level(&body.level)
        .map_err(|problem| field("level", &problem))
        .map(|level| {
            state.logging.set_level(level);
            level_name(level)
        });
    let level = Change::new(&state, &caller, "log.level", "log.level")
        .before(Some(before))
        .finish(result, |level| Some(json!(level)))
        .await?;
    Ok(HttpResponse::Ok().json(json!({"level": level})))
}

/// The audit trail, newest first, filtered and paged.
pub async fn audit(
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, GatewayError> {
    let records = state.audit.list(&query).map_err(unsaved)?;
    Ok(HttpResponse::Ok().json(records))
}
