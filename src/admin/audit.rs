//! The admin audit trail: one record per admin change — who, from where,
//! what, before and after, and how it ended — written to the system log
//! and kept in the database (the most recent `admin.audit_records`).
//!
//! A record is on disk before the change is answered, like the change
//! itself. Records never hold a password or a token. With
//! `storage.backend = "redis"` every node's records go to one shared trail
//! (a sorted set by id), so an admin sees the changes made on every node.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use slog::{info, warn, Logger};

use crate::auth::rfc3339;
use crate::storage::{now_ms, Storage};

/// The sled tree of audit records, keyed by big-endian id.
pub const AUDIT_TREE: &str = "audit";

/// Shared records read per step when listing.
const AUDIT_PAGE: usize = 500;

/// One admin change, as kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub id: u64,
    /// RFC 3339 UTC, milliseconds.
    pub at: String,
    /// The user name, `token` for the bearer token, or `console` for a
    /// login that named no known user.
    pub actor: String,
    /// `token` or `console`.
    pub via: String,
    /// The caller's address.
    pub address: String,
    /// What was done: `user.create`, `route.update`, `session.revoke`, …
    pub action: String,
    /// What it was done to: a user name, route id, session id, …
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// `success` or `failure`.
    pub outcome: String,
    /// The error code of a failure.
    pub error: Option<String>,
}

/// What to list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only records older than this id (the `id` of the last one seen), for paging.
    pub before: Option<u64>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
    pub actor: Option<String>,
    /// An action, or its resource (`user` matches `user.create`, …).
    pub action: Option<String>,
    pub target: Option<String>,
}

/// The stored trail.
pub struct AuditLog {
    tree: sled::Tree,
    storage: Storage,
    next_id: AtomicU64,
    logger: Logger,
}

impl AuditLog {
    /// Opens the trail; ids continue after the last stored one.
    pub fn open(storage: &Storage, logger: Logger) -> sled::Result<AuditLog> {
        let tree = storage.db().open_tree(AUDIT_TREE)?;
        let next_id = match tree.last()? {
            Some((key, _)) => id_of(&key) + 1,
            None => 1,
        };
        Ok(AuditLog {
            tree,
            storage: storage.clone(),
            next_id: AtomicU64::new(next_id),
            logger,
        })
    }

    /// Logs and stores a record durably, keeping the newest `keep`; fills in
    /// its id and time. Fails when storage refuses it.
    pub async fn record(&self, mut record: AuditRecord, keep: usize) -> sled::Result<()> {
        record.at = rfc3339(now_ms());
        if let Some(shared) = self.storage.shared() {
            let key = shared.keys().audit();
            let template = record.clone();
            let id = shared
                .call("audit", move |mut conn| async move {
                    let id: u64 = redis::cmd("INCR")
                        .arg(format!("{key}:id"))
                        .query_async(&mut conn)
                        .await?;
                    let mut record = template;
                    record.id = id;
                    let value = serde_json::to_string(&record).expect("an audit record serialises");
                    redis::pipe()
                        .cmd("ZADD")
                        .arg(&key)
                        .arg(id)
                        .arg(value)
                        .ignore()
                        .cmd("ZREMRANGEBYRANK")
                        .arg(&key)
                        .arg(0)
                        .arg(-(keep as i64) - 1)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await?;
                    Ok(id)
                })
                .await;
            // The system log has the record even when the trail could not take it.
            record.id = *id.as_ref().unwrap_or(&0);
            self.log(&record);
            return id.map(|_| ()).map_err(Into::into);
        }
        record.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.log(&record);
        let value = serde_json::to_vec(&record).expect("an audit record serialises");
        self.tree.insert(record.id.to_be_bytes(), value)?;
        if let Some(oldest_kept) = record.id.checked_sub(keep as u64) {
            while let Some((key, _)) = self.tree.first()? {
                if id_of(&key) > oldest_kept {
                    break;
                }
                self.tree.remove(key)?;
            }
        }
        self.storage.flush_async().await.map(|_| ())
    }

    fn log(&self, r: &AuditRecord) {
        let before = r.before.as_ref().map(Value::to_string);
        let after = r.after.as_ref().map(Value::to_string);
        let kv = slog::o!(
            "event" => "audit",
            "audit_id" => r.id,
            "actor" => r.actor.clone(),
            "via" => r.via.clone(),
            "address" => r.address.clone(),
            "action" => r.action.clone(),
            "target" => r.target.clone(),
            "before" => before,
            "after" => after,
            "outcome" => r.outcome.clone(),
            "error" => r.error.clone(),
        );
        let logger = self.logger.new(kv);
        if r.outcome == "success" {
            info!(logger, "admin: {}", r.action);
        } else {
            warn!(logger, "admin: {} failed", r.action);
        }
    }

    /// Records matching `query`, newest first.
    pub fn list(&self, query: &AuditQuery) -> sled::Result<Vec<AuditRecord>> {
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let end = query.before.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut keep_matching = |value: &[u8]| {
            if let Ok(record) = serde_json::from_slice::<AuditRecord>(value) {
                if matches(&record, query) {
                    out.push(record);
                }
            }
            out.len() < limit
        };
        match self.storage.shared() {
            Some(shared) => {
                // Newest first, a page at a time, until enough match.
                let mut below = end;
                loop {
                    let key = shared.keys().audit();
                    let page: Vec<(Vec<u8>, u64)> =
                        shared.call_blocking("audit", move |mut conn| async move {
                            redis::cmd("ZREVRANGEBYSCORE")
                                .arg(key)
                                .arg(format!("({below}"))
                                .arg("-inf")
                                .arg("WITHSCORES")
                                .arg("LIMIT")
                                .arg(0)
                                .arg(AUDIT_PAGE)
                                .query_async(&mut conn)
                                .await
                        })?;
                    let Some(&(_, last)) = page.last() else { break };
                    if !page.iter().all(|(value, _)| keep_matching(value))
                        || page.len() < AUDIT_PAGE
                    {
                        break;
                    }
                    below = last;
                }
            }
            None => {
                for entry in self.tree.range(..end.to_be_bytes()).rev() {
                    let (_, value) = entry?;
                    if !keep_matching(&value) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

fn matches(record: &AuditRecord, query: &AuditQuery) -> bool {
    let action_matches = query.action.as_deref().is_none_or(|a| {
        record.action == a
            || record
                .action
                .split_once('.')
                .is_some_and(|(resource, _)| resource == a)
    });
    action_matches
        && query.actor.as_deref().is_none_or(|a| record.actor == a)
        && query.target.as_deref().is_none_or(|t| record.target == t)
}

fn id_of(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;

    fn record(action: &str, target: &str) -> AuditRecord {
        AuditRecord {
            id: 0,
            at: String::new(),
            actor: "alice".into(),
            via: "console".into(),
            address: "127.0.0.1".into(),
            action: action.into(),
            target: target.into(),
            before: None,
            after: None,
            outcome: "success".into(),
            error: None,
        }
    }

    #[actix_web::test]
    async fn keeps_the_newest_records_and_pages_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageConfig::for_tests(dir.path())).unwrap();
        let logger = Logger::root(slog::Discard, slog::o!());
        let audit = AuditLog::open(&storage, logger.clone()).unwrap();
        for i in 0..10 {
            let action = if i % 2 == 0 {
                "user.create"
            } else {
                "route.update"
            };
            audit
                .record(record(action, &format!("t{i}")), 5)
                .await
                .unwrap();
        }
        let all = audit.list(&AuditQuery::default()).unwrap();
        let ids: Vec<u64> = all.iter().map(|r| r.id).collect();
        assert_eq!(ids, [10, 9, 8, 7, 6]);
        let users = audit
            .list(&AuditQuery {
                action: Some("user".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert!(users.iter().all(|r| r.action == "user.create"));
        let page = audit
            .list(&AuditQuery {
                before: Some(8),
                limit: Some(1),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(page[0].id, 7);
        // Ids continue after a reopen.
        drop(audit);
        let audit = AuditLog::open(&storage, logger).unwrap();
        audit.record(record("user.delete", "x"), 5).await.unwrap();
        assert_eq!(audit.list(&AuditQuery::default()).unwrap()[0].id, 11);
    }
}
