//! Routes made through the admin API: kept in the database, validated with
//! the same code as the file's routes, and served beside them.
//!
//! The file wins. The API cannot create, change or delete a route whose id
//! the file uses (409). When a reload brings a file route with the id of a
//! stored API route, the API route stays in the database but is not served
//! (`shadowed`) until the file drops that id again. A reload keeps every API
//! route; one that no longer validates against the new configuration (it
//! names a rate-limit policy the file removed, say) is not served, and the
//! admin API lists it with its problems.

use std::sync::Arc;

use serde_json::json;

use crate::config::{self, Config, ConfigError, Route};
use crate::storage::{now_ms, RouteRecord, Storage, SCHEMA_VERSION};

/// Why a stored API route is or is not served.
#[derive(Debug, Clone)]
pub enum ApiRouteStatus {
    Serving,
    /// A file route has the same id.
    Shadowed,
    /// It does not validate against the running configuration.
    Invalid(Vec<ConfigError>),
}

/// A stored API route and what the running configuration made of it.
#[derive(Debug, Clone)]
pub struct ApiRoute {
    pub record: RouteRecord,
    pub status: ApiRouteStatus,
}

impl ApiRoute {
    /// The route as the admin API lists it: the compiled route when it is
    /// served, else the stored spec, with its state and history.
    pub fn summary(&self, served: Option<&Route>) -> serde_json::Value {
        let mut out = match served {
            Some(route) => route.summary(),
            None => {
                let mut spec = self.record.spec.clone();
                spec["origin"] = json!("api");
                spec
            }
        };
        let problems: &[ConfigError] = match &self.status {
            ApiRouteStatus::Invalid(problems) => problems,
            _ => &[],
        };
        out["serving"] = json!(matches!(self.status, ApiRouteStatus::Serving));
        out["shadowed"] = json!(matches!(self.status, ApiRouteStatus::Shadowed));
        out["problems"] = problems
            .iter()
            .map(|p| json!({"key": p.path, "problem": p.message}))
            .collect();
        out["created_at"] = json!(crate::auth::rfc3339(self.record.created_at));
        out["updated_at"] = json!(crate::auth::rfc3339(self.record.updated_at));
        out["updated_by"] = json!(self.record.updated_by);
        out
    }
}

/// The database side of API routes. Changes are serialised by the caller
/// (the admin API holds one lock across store-and-swap, shared with reload).
pub struct RouteStore {
    storage: Storage,
    records: crate::storage::Records<RouteRecord>,
    /// Held while an API change or a reload builds and swaps the runtime,
    /// so two of them never interleave and lose one another's routes.
    pub changes: tokio::sync::Mutex<()>,
}

impl RouteStore {
    pub fn open(storage: &Storage) -> sled::Result<RouteStore> {
        Ok(RouteStore {
            storage: storage.clone(),
            records: storage.routes()?,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// Every stored API route, oldest first.
    pub fn load(&self) -> sled::Result<Vec<RouteRecord>> {
        let mut records = self.records.all()?;
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(records)
    }

    pub fn get(&self, id: &str) -> sled::Result<Option<RouteRecord>> {
        self.records.get(id)
    }

    /// Stores a route durably (created now, or updated keeping its creation time).
    pub async fn save(
        &self,
        id: &str,
        spec: serde_json::Value,
        by: &str,
    ) -> sled::Result<RouteRecord> {
        let now = now_ms();
        let created_at = self.records.get(id)?.map_or(now, |r| r.created_at);
        let record = RouteRecord {
            v: SCHEMA_VERSION,
            id: id.to_owned(),
            spec,
            created_at,
            updated_at: now,
            updated_by: by.to_owned(),
        };
        self.records.put(id, &record)?;
        self.storage.flush_async().await?;
        Ok(record)
    }

    /// Removes a route durably; false when there was none.
    pub async fn remove(&self, id: &str) -> sled::Result<bool> {
        let removed = self.records.delete(id)?;
        self.storage.flush_async().await?;
        Ok(removed)
    }
}

/// The routes to serve under `config`: the file's, then every stored API
/// route that validates and is not shadowed, oldest first; and the state of
/// each API route.
pub fn compose(config: &Config, records: Vec<RouteRecord>) -> (Vec<Route>, Vec<Arc<ApiRoute>>) {
    let mut routes = config.routes.clone();
    let file_ids: std::collections::HashSet<&str> =
        config.routes.iter().map(|r| r.id.as_str()).collect();
    let mut served = Vec::new();
    let api = records
        .into_iter()
        .map(|record| {
            let status = if file_ids.contains(record.id.as_str()) {
                ApiRouteStatus::Shadowed
            } else {
                match config::api_route(config, record.spec.clone()) {
                    Ok(route) => {
                        served.push(route);
                        ApiRouteStatus::Serving
                    }
                    Err(problems) => ApiRouteStatus::Invalid(problems),
                }
            };
            Arc::new(ApiRoute { record, status })
        })
        .collect();
    routes.extend(served);
    (routes, api)
}
