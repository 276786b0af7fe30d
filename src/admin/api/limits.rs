//! Rate limits and the login throttle: the busiest keys with their counts,
//! and resetting one.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{no_content, Change};
use crate::admin::guard::Caller;
use crate::error::GatewayError;
use crate::state::AppState;

/// Every policy with its busiest keys right now.
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let runtime = state.runtime.load_full();
    let mut policies = Vec::new();
    for policy in &runtime.config.rate_limits {
        let prefix = format!("{}|", policy.name);
        // Unreadable shared counters show as none: the page still lists the policies.
        let busiest: Vec<_> = state
            .counters
            .busiest(&prefix, 10)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(key, count)| json!({"key": &key[prefix.len()..], "count": count}))
            .collect();
        policies.push(json!({
                "name": &*policy.name,
                "limit": policy.limit,
                "window_seconds": policy.window.as_secs_f64(),
                "fail": format!("{:?}", policy.fail).to_lowercase(),
                "roles": policy.roles.iter().cloned().collect::<BTreeMap<_, _>>(),
                "busiest": busiest,
        }));
    }
    HttpResponse::Ok().json(policies)
}

/// Forgets one key's count, e.g. to unblock a client.
pub async fn reset(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let (policy, key) = path.into_inner();
    let result = match state.counters.reset(&format!("{policy}|{key}")).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(GatewayError::NoSuchResource(format!(
            "no counter for key {key:?} of policy {policy:?}"
        ))),
        Err(_) => Err(GatewayError::StorageFailed { applied: false }),
    };
    Change::new(
        &state,
        &caller,
        "rate_limit.reset",
        format!("{policy}/{key}"),
    )
    .finish(result, |_| None)
    .await?;
    Ok(no_content())
}

/// The usernames and addresses with the most recent failed logins.
pub async fn list_login_throttle(state: web::Data<AppState>) -> HttpResponse {
    let config = &state.runtime.load().config.login;
    let entries: Vec<_> = state
        .auth
        .throttle
        .busiest(100)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, failures)| {
            let (kind, value) = key.split_once('|')?;
            let limit = match kind {
                "user" => config.max_failures_per_user,
                _ => config.max_failures_per_ip,
            };
            Some(json!({
                "kind": kind,
                "value": value,
                "failures": failures,
                "locked": failures >= limit,
            }))
        })
        .collect();
    HttpResponse::Ok().json(entries)
}

/// Forgets the failed logins of a username (`user`) or a client address or
/// network (`address`), e.g. to let a locked-out user in again.
pub async fn reset_login_throttle(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, GatewayError> {
    let (kind, value) = path.into_inner();
    if kind != "user" && kind != "address" {
        return Err(GatewayError::NoSuchResource(format!(
            "{kind:?} is not user or address"
        )));
    }
    let result = match state.auth.throttle.reset(&format!("{kind}|{value}")).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(GatewayError::NoSuchResource(format!(
            "no failed logins counted for {kind} {value:?}"
        ))),
        Err(_) => Err(GatewayError::StorageFailed { applied: false }),
    };
    Change::new(
        &state,
        &caller,
        "login_throttle.reset",
        format!("{kind}/{value}"),
    )
    .finish(result, |_| None)
    .await?;
    Ok(no_content())
}
