//! Routes: the file's (read-only here) and the API's, made, changed and
//! deleted at runtime. Validation is the configuration file's own; a change
//! is stored durably, then the whole route table is rebuilt and swapped in
//! at once for new requests. See `route_store` for which origin wins.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{no_content, unsaved, Change};
use crate::admin::body::Json;
use crate::admin::guard::Caller;
use crate::config::{self, ConfigError, RouteOrigin};
use crate::error::{FieldError, GatewayError};
use crate::pipeline::Runtime;
use crate::proxy::probe::PROBE_HEADER;
use crate::state::AppState;

/// Every route: the file's in file order, then the API's, oldest first.
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let runtime = state.runtime.load();
    let mut routes: Vec<Value> = runtime
        .routes
        .routes()
        .iter()
        .filter(|r| r.origin == RouteOrigin::File)
        .map(|r| file_summary(r.summary()))
        .collect();
    routes.extend(runtime.api_routes.iter().map(|api| {
        let served = runtime
            .routes
            .routes()
            .iter()
            .find(|r| r.origin == RouteOrigin::Api && r.id == api.record.id);
        api.summary(served)
    }));
    HttpResponse::Ok().json(routes)
}

fn file_summary(mut summary: Value) -> Value {
    summary["serving"] = json!(true);
    summary["shadowed"] = json!(false);
    summary["problems"] = json!([]);
    summary
}

pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    Ok(HttpResponse::Ok().json(summary_of(&state.runtime.load(), &id)?))
}

fn summary_of(runtime: &Runtime, id: &str) -> Result<Value, GatewayError> {
    if let Some(api) = runtime.api_routes.iter().find(|a| a.record.id == id) {
        if !matches!(api.status, crate::route_store::ApiRouteStatus::Shadowed) {
            let served = runtime
                .routes
                .routes()
                .iter()
                .find(|r| r.origin == RouteOrigin::Api && r.id == id);
            return Ok(api.summary(served));
        }
    }
    runtime
        .config
        .routes
        .iter()
        .find(|r| r.id == id)
        .map(|r| file_summary(r.summary()))
        .ok_or_else(|| no_such_route(id))
}

fn no_such_route(id: &str) -> GatewayError {
    GatewayError::NoSuchResource(format!("no route {id:?}"))
}

/// Creates an API route.
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<Value>,
) -> Result<HttpResponse, GatewayError> {
    let spec = body.into_inner();
    let id = spec["id"].as_str().unwrap_or_default().to_owned();
    let result = store(&state, &caller, &id, spec, false).await;
    let route = Change::new(&state, &caller, "route.create", &id)
        .finish(result, |route| Some(route.clone()))
        .await?;
    Ok(HttpResponse::Created().json(route))
}

/// Replaces an API route's spec.
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: Json<Value>,
) -> Result<HttpResponse, GatewayError> {
    let mut spec = body.into_inner();
    if let Some(fields) = spec.as_object_mut() {
        match fields.get("id") {
            None => {
                fields.insert("id".into(), json!(id.as_str()));
            }
            Some(given) if given != id.as_str() => {
                return Err(super::account::field(
                    "id",
                    "must be the id in the path (a route cannot be renamed)",
                ))
            }
            Some(_) => {}
        }
    }
    let before = summary_of(&state.runtime.load(), &id).ok();
    let result = store(&state, &caller, &id, spec, true).await;
    let route = Change::new(&state, &caller, "route.update", id.as_str())
        .before(before)
        .finish(result, |route| Some(route.clone()))
        .await?;
    Ok(HttpResponse::Ok().json(route))
}

/// Validates, stores and serves a route spec; `replace` for an update.
async fn store(
    state: &AppState,
    caller: &Caller,
    id: &str,
    spec: Value,
    replace: bool,
) -> Result<Value, GatewayError> {
    let _changing = state.routes.changes.lock().await;
    let runtime = state.runtime.load_full();
    config::api_route(&runtime.config, spec.clone()).map_err(invalid)?;
    if runtime.config.routes.iter().any(|r| r.id == id) {
        return Err(from_file(id));
    }
    let exists = state.routes.get(id).map_err(unsaved)?.is_some();
    match (exists, replace) {
        (true, false) => {
            return Err(GatewayError::Conflict(format!(
                "a route with id {id:?} exists; PUT /admin/api/routes/{id} changes it"
            )))
        }
        (false, true) => return Err(no_such_route(id)),
        _ => {}
    }
    state
        .routes
        .save(id, spec, &caller.name)
        .await
        .map_err(unsaved)?;
    let runtime = state.serve(runtime.config.clone()).map_err(unsaved)?;
    summary_of(&runtime, id)
}

/// Deletes an API route.
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let before = summary_of(&state.runtime.load(), &id).ok();
    let result = remove(&state, &id).await;
    Change::new(&state, &caller, "route.delete", id.as_str())
        .before(before)
        .finish(result, |_| None)
        .await?;
    Ok(no_content())
}

async fn remove(state: &AppState, id: &str) -> Result<(), GatewayError> {
    let _changing = state.routes.changes.lock().await;
    let runtime = state.runtime.load_full();
    if runtime.config.routes.iter().any(|r| r.id == id) {
        return Err(from_file(id));
    }
    if !state.routes.remove(id).await.map_err(unsaved)? {
        return Err(no_such_route(id));
    }
    state.serve(runtime.config.clone()).map_err(unsaved)?;
    Ok(())
}

fn from_file(id: &str) -> GatewayError {
    GatewayError::Conflict(format!(
        "route {id:?} is defined in the configuration file; change it there"
    ))
}

/// Every validation problem, each under its key.
fn invalid(errors: Vec<ConfigError>) -> GatewayError {
    GatewayError::InvalidFields(
        errors
            .into_iter()
            .map(|e| FieldError {
                key: e.path,
                problem: e.message,
            })
            .collect(),
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    method: Option<String>,
    path: Option<String>,
}

/// Largest part of a test answer's body shown.
const TEST_BODY_SHOWN: usize = 4096;

/// Sends one request through the gateway's own proxy listener to a path of
/// the route, as a client would, and reports what came back.
pub async fn test(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Json<TestRequest>,
) -> Result<HttpResponse, GatewayError> {
    let runtime = state.runtime.load_full();
    let route = runtime
        .routes
        .routes()
        .iter()
        .find(|r| r.id == *id)
        .ok_or_else(|| no_such_route(&id))?;
    let path = match &body.path {
        Some(path) if path.starts_with('/') => path.clone(),
        Some(_) => return Err(super::account::field("path", "must start with '/'")),
        None => route.pattern.example(),
    };
    let method_name = body.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let method = actix_web::http::Method::from_bytes(method_name.as_bytes())
        .map_err(|_| super::account::field("method", "is not an HTTP method"))?;
    let address = state
        .proxy_address
        .get()
        .copied()
        .ok_or(GatewayError::ServiceUnavailable)?;
    let scheme = if runtime.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let client = awc::Client::builder()
        .timeout(route.timeout + std::time::Duration::from_secs(1))
        .finish();
    let request_id = crate::pipeline::new_request_id();
    let started = Instant::now();
    let mut response = client
        .request(method, format!("{scheme}://{address}{path}"))
        .insert_header((crate::pipeline::REQUEST_ID_HEADER, request_id.as_str()))
        .insert_header((PROBE_HEADER, state.probes.secret()))
        .send()
        .await
        .map_err(|err| {
            GatewayError::BadRequest(format!("the test request failed: {err}").into())
        })?;
    let body = response
        .body()
        .limit(TEST_BODY_SHOWN * 64)
        .await
        .unwrap_or_default();
    let latency = started.elapsed();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                json!(String::from_utf8_lossy(value.as_bytes())),
            )
        })
        .collect();
    let shown = &body[..body.len().min(TEST_BODY_SHOWN)];
    Ok(HttpResponse::Ok().json(json!({
        "method": method_name,
        "path": path,
        "status": response.status().as_u16(),
        "latency_ms": latency.as_secs_f64() * 1000.0,
        "response_headers": headers,
        "request_id": request_id,
        // Absent when the gateway answered itself (no route, 401, 429, ...).
        "upstream_request_headers": state.probes.take(&request_id).map(|sent| {
            sent.into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect::<Vec<_>>()
        }),
        "body": String::from_utf8_lossy(shown),
        "body_truncated": body.len() > TEST_BODY_SHOWN,
    })))
}
