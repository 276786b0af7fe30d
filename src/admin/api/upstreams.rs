//! Upstream services and the state of each target, as the gateway sees
//! them now.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::config::RouteUpstream;
use crate::state::AppState;
use crate::upstream::now_ms;

/// Every service: its settings, the routes using it, and each target's
/// state and counts.
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let runtime = state.runtime.load();
    let now = now_ms();
    let mut services: Vec<_> = runtime.services.iter().collect();
    services.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    let listed: Vec<_> = services
        .into_iter()
        .map(|service| {
            let routes: Vec<&str> = runtime
                .routes
                .routes()
                .iter()
                .filter(|r| matches!(&r.upstream, RouteUpstream::Service(n) if *n == service.config.name))
                .map(|r| r.id.as_str())
                .collect();
            let targets: Vec<_> = service
                .targets
                .iter()
                .map(|target| {
                    let (requests, failures, ejections) = target.counts();
                    json!({
                        "url": target.config.upstream.url,
                        "address": target.config.address.map(|a| a.to_string()),
                        "weight": target.config.weight,
                        "state": target.state_name(now),
                        "in_flight": target.in_flight(),
                        "requests": requests,
                        "failures": failures,
                        "ejections": ejections,
                        "ejected_for_seconds": target
                            .ejected_until()
                            .map(|until| until.saturating_sub(now) as f64 / 1000.0),
                    })
                })
                .collect();
            let mut out = service.config.summary();
            out["name"] = json!(&*service.config.name);
            out["panicking"] = json!(service.panicking());
            out["breaker_state"] = json!(service.breaker_state());
            out["routes"] = json!(routes);
            out["targets"] = json!(targets);
            out
        })
        .collect();
    HttpResponse::Ok().json(listed)
}
