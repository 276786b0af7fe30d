//! Sliding-window counters held in memory and written behind to sled.
//!
//! Decisions are made under a per-shard mutex, so they are exact under
//! concurrency; sled sees the counts every `storage.flush_interval`, so a
//! crash loses at most that interval of counts, and a restart within the
//! window resumes from the persisted counts.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use super::window::{Decision, WindowCounter};
use crate::storage::{now_ms, Storage};

const SHARDS: usize = 16;
const TREE: &str = "ratelimit_counters";

struct Entry {
    counter: WindowCounter,
    window_ms: u64,
    dirty: bool,
}

/// All counters, keyed by policy-specific strings.
pub struct CounterStore {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
    tree: sled::Tree,
}

/// The counter store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit counter store: {0}")]
pub struct StoreError(String);

impl StoreError {
    #[cfg(test)]
    pub fn for_tests() -> StoreError {
        StoreError("injected failure".into())
    }
}

impl CounterStore {
    /// Opens the counters persisted in `storage`, dropping expired ones.
    pub fn open(storage: &Storage) -> Result<CounterStore, sled::Error> {
        let tree = storage.db().open_tree(TREE)?;
        let store = CounterStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            tree,
        };
        let now = now_ms();
        for item in store.tree.iter() {
            let (key, value) = item?;
            let (Ok(key), Some(entry)) = (String::from_utf8(key.to_vec()), decode(&value)) else {
                continue;
            };
            if !entry.counter.is_expired(now, entry.window_ms) {
                store
                    .shard(&key)
                    .lock()
                    .map_err(poisoned)?
                    .insert(key, entry);
            }
        }
        Ok(store)
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Entry>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn with_entry<T>(
        &self,
        key: &str,
        window: Duration,
        f: impl FnOnce(&mut Entry, u64) -> T,
    ) -> Result<T, StoreError> {
        let window_ms = (window.as_millis() as u64).max(1);
        let mut shard = self
            .shard(key)
            .lock()
            .map_err(|_| StoreError("a counter shard is poisoned".into()))?;
        let entry = match shard.get_mut(key) {
            Some(entry) => entry,
            None => shard.entry(key.to_owned()).or_insert(Entry {
                counter: WindowCounter::default(),
                window_ms,
                dirty: false,
            }),
        };
        if entry.window_ms != window_ms {
            // The policy's window changed (reload): start afresh rather than mix units.
            *entry = Entry {
                counter: WindowCounter::default(),
                window_ms,
                dirty: false,
            };
        }
        Ok(f(entry, window_ms))
    }

    /// Admits and counts one request if the key is under `limit`.
    pub fn acquire(&self, key: &str, window: Duration, limit: u64) -> Result<Decision, StoreError> {
        self.with_entry(key, window, |entry, w| {
            let decision = entry.counter.acquire(now_ms(), w, limit);
            entry.dirty |= decision.allowed;
            decision
        })
    }

    /// Gives back one request counted in the current window (when a later
    /// policy rejected it).
    pub fn release(&self, key: &str, window: Duration) -> Result<(), StoreError> {
        self.with_entry(key, window, |entry, w| entry.counter.release(now_ms(), w))
    }

    /// Reports where the key stands without counting.
    pub fn peek(&self, key: &str, window: Duration, limit: u64) -> Result<Decision, StoreError> {
        self.with_entry(key, window, |entry, w| {
            entry.counter.peek(now_ms(), w, limit)
        })
    }

    /// Counts one event whatever the limit (failed logins).
    pub fn record(&self, key: &str, window: Duration) -> Result<(), StoreError> {
        self.with_entry(key, window, |entry, w| {
            entry.counter.record(now_ms(), w);
            entry.dirty = true;
        })
    }

    /// Forgets a key, in memory and on disk.
    pub fn reset(&self, key: &str) -> Result<bool, StoreError> {
        let removed = self
            .shard(key)
            .lock()
            .map_err(|_| StoreError("a counter shard is poisoned".into()))?
            .remove(key)
            .is_some();
        let on_disk = self
            .tree
            .remove(key.as_bytes())
            .map_err(|e| StoreError(e.to_string()))?
            .is_some();
        Ok(removed || on_disk)
    }

    /// Writes changed counters to sled and, with `sweep`, drops expired ones
    /// everywhere; run periodically off the request path. Returns (written, removed).
    pub fn persist(&self, sweep: bool) -> Result<(usize, usize), StoreError> {
        let now = now_ms();
        let (mut written, mut removed) = (0, 0);
        for shard in &self.shards {
            // Collect under the lock, write after releasing it.
            let mut changes: Vec<(Vec<u8>, Option<[u8; 32]>)> = Vec::new();
            shard
                .lock()
                .map_err(|_| StoreError("a counter shard is poisoned".into()))?
                .retain(|key, entry| {
                    if sweep && entry.counter.is_expired(now, entry.window_ms) {
                        changes.push((key.as_bytes().to_vec(), None));
                        removed += 1;
                        return false;
                    }
                    if entry.dirty {
                        changes.push((key.as_bytes().to_vec(), Some(encode(entry))));
                        entry.dirty = false;
                        written += 1;
                    }
                    true
                });
            // One write per key: sled holds a batch's writes in memory out
            // of all proportion to their size (a million counters written in
            // batches of 1,024 took 1.3-2 GiB; one by one, a tenth of that).
            for (key, value) in changes {
                match value {
                    Some(value) => self.tree.insert(key, value.as_slice()).map(|_| ()),
                    None => self.tree.remove(key).map(|_| ()),
                }
                .map_err(|e| StoreError(e.to_string()))?;
            }
        }
        Ok((written, removed))
    }

    /// The `n` keys starting with `prefix` that are nearest their limit now,
    /// with their sliding-window counts.
    pub fn busiest(&self, prefix: &str, n: usize) -> Vec<(String, u64)> {
        let now = now_ms();
        let mut found: Vec<(String, u64)> = Vec::new();
        for shard in &self.shards {
            let Ok(shard) = shard.lock() else { continue };
            for (key, entry) in shard.iter().filter(|(k, _)| k.starts_with(prefix)) {
                let used = entry.counter.used(now, entry.window_ms);
                if used > 0 {
                    found.push((key.clone(), used));
                }
            }
        }
        found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        found.truncate(n);
        found
    }

    /// Number of keys held in memory.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn poisoned<T>(_: T) -> sled::Error {
    sled::Error::Unsupported("a counter shard is poisoned".into())
}

/// Fixed 32-byte encoding: window start, current, previous, window length.
fn encode(entry: &Entry) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[0..8].copy_from_slice(&entry.counter.window_start.to_be_bytes());
    out[8..16].copy_from_slice(&entry.counter.current.to_be_bytes());
    out[16..24].copy_from_slice(&entry.counter.previous.to_be_bytes());
    out[24..32].copy_from_slice(&entry.window_ms.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    let field = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    Some(Entry {
        counter: WindowCounter {
            window_start: field(0)?,
            current: field(1)?,
            previous: field(2)?,
        },
        window_ms: field(3)?.max(1),
        dirty: false,
    })
}
