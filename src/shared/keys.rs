//! The names of everything Portcullis keeps in Redis, all under
//! `storage.redis.key_prefix`.

/// Key names, built once from the prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    changes: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            changes: format!("{prefix}changes"),
        }
    }

    /// The hash holding one kind of record (`users`, `sessions`, `routes`).
    pub fn records(&self, kind: &str) -> String {
        format!("{}{kind}", self.prefix)
    }

    /// The stream every change to shared records is appended to.
    pub fn changes(&self) -> &str {
        &self.changes
    }

    /// One rate-limit counter: its store's name, the window (so a reload
    /// that changes a window starts afresh rather than mixing units), then
    /// the counter key. One key per counter, so a decision touches exactly
    /// one key, as Redis Cluster requires of a script.
    pub fn counter(&self, store: &str, window_ms: u64, key: &str) -> String {
        format!("{}{store}:{window_ms}:{key}", self.prefix)
    }

    /// Where a store's counters start, for scanning them.
    pub fn counter_prefix(&self, store: &str) -> String {
        format!("{}{store}:", self.prefix)
    }

    /// The admin audit trail, a stream.
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }
}
