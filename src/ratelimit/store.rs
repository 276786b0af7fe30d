//! Sliding-window counters held in memory and written behind to sled.
//!
//! Decisions are made under a per-shard mutex, so they are exact under
//! concurrency; sled sees the counts every `storage.flush_interval`, so a
//! crash loses at most that interval of counts, and a restart within the
//! window resumes from the persisted counts.
//!
//! Keys come from what clients send (addresses, usernames, headers), so
//! memory is capped: at most `capacity` keys are held. A new key that finds
//! its shard full first clears the shard's expired keys, then evicts the
//! least-used eighth of it. Keys near their limit are the last to go, so a
//! client flooding the store with new keys cannot erase the count that is
//! holding it back; what it can push out are keys that have seen little
//! traffic, which lose little by starting again from zero.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntCounter;

use super::window::{Decision, WindowCounter};
use crate::storage::{now_ms, Storage};

const SHARDS: usize = 16;

struct Entry {
    counter: WindowCounter,
    window_ms: u64,
    dirty: bool,
}

impl Entry {
    fn new(window_ms: u64) -> Entry {
        Entry {
            counter: WindowCounter::default(),
            window_ms,
            dirty: false,
        }
    }
}

/// One shard: its keys, and the keys it dropped that sled still holds.
#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    /// Evicted keys, removed from sled on the next [`CounterStore::persist`].
    evicted: Vec<String>,
}

/// A capped set of counters, keyed by caller-chosen strings, persisted in
/// its own sled tree (so two stores never share a key space).
pub struct CounterStore {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    tree: sled::Tree,
    /// Keys per shard before eviction starts.
    shard_capacity: usize,
    evictions: IntCounter,
}

/// The counter store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit counter store: {reason}")]
pub struct StoreError {
    reason: String,
    /// What this node's own counters decided instead, for `fail = "open"`
    /// policies (shared counters only).
    pub fallback: Option<Decision>,
}

impl StoreError {
    pub fn new(reason: impl Into<String>) -> StoreError {
        StoreError {
            reason: reason.into(),
            fallback: None,
        }
    }

    #[cfg(test)]
    pub fn for_tests() -> StoreError {
        StoreError::new("injected failure")
    }
}

impl CounterStore {
    /// Opens the counters persisted in the sled tree `tree`, dropping expired
    /// ones; holds at most `capacity` keys, counting evictions in `evictions`.
    pub fn open(
        storage: &Storage,
        tree: &str,
        capacity: usize,
        evictions: IntCounter,
    ) -> Result<CounterStore, sled::Error> {
        let tree = storage.db().open_tree(tree)?;
        let store = CounterStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            tree,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            evictions,
        };
        let now = now_ms();
        for item in store.tree.iter() {
            let (key, value) = item?;
            let (Ok(key), Some(entry)) = (String::from_utf8(key.to_vec()), decode(&value)) else {
                continue;
            };
            if entry.counter.is_expired(now, entry.window_ms) {
                continue;
            }
            let mut shard = store
                .lock(&key)
                .map_err(|e| sled::Error::Unsupported(e.reason))?;
            if shard.entries.len() < store.shard_capacity {
                shard.entries.insert(key, entry);
            }
        }
        Ok(store)
    }

    fn lock(&self, key: &str) -> Result<MutexGuard<'_, Shard>, StoreError> {
        self.shards[self.hasher.hash_one(key) as usize % SHARDS]
            .lock()
            .map_err(|_| StoreError::new("a counter shard is poisoned"))
    }

    /// Runs `f` on the key's entry, creating it (and making room for it) if needed.
    fn with_entry<T>(
        &self,
        key: &str,
        window: Duration,
        f: impl FnOnce(&mut Entry, u64, u64) -> T,
    ) -> Result<T, StoreError> {
        let window_ms = (window.as_millis() as u64).max(1);
        let now = now_ms();
        let mut shard = self.lock(key)?;
        if !shard.entries.contains_key(key) && shard.entries.len() >= self.shard_capacity {
            self.make_room(&mut shard, now);
        }
        let entry = match shard.entries.get_mut(key) {
            Some(entry) => entry,
            None => shard
                .entries
                .entry(key.to_owned())
                .or_insert(Entry::new(window_ms)),
        };
        if entry.window_ms != window_ms {
            // The policy's window changed (reload): start afresh rather than mix units.
            *entry = Entry::new(window_ms);
        }
        Ok(f(entry, now, window_ms))
    }

    /// Drops the shard's expired keys; if that frees nothing, evicts the
    /// least-used eighth, so the cost of the scan is shared by the many
    /// insertions that fit afterwards.
    fn make_room(&self, shard: &mut Shard, now: u64) {
        let Shard { entries, evicted } = shard;
        entries.retain(|key, entry| {
            let expired = entry.counter.is_expired(now, entry.window_ms);
            if expired {
                evicted.push(key.clone());
            }
            !expired
        });
        if entries.len() < self.shard_capacity {
            return;
        }
        let mut by_use: Vec<(u64, &String)> = entries
            .iter()
            .map(|(key, entry)| (entry.counter.used(now, entry.window_ms), key))
            .collect();
        let count = (self.shard_capacity / 8).clamp(1, by_use.len());
        by_use.select_nth_unstable_by_key(count - 1, |(used, _)| *used);
        let victims: Vec<String> = by_use[..count]
            .iter()
            .map(|(_, key)| (*key).clone())
            .collect();
        for key in &victims {
            entries.remove(key);
        }
        evicted.extend(victims);
        self.evictions.inc_by(count as u64);
    }

    /// Admits and counts one event if the key is under `limit`.
    pub fn acquire(&self, key: &str, window: Duration, limit: u64) -> Result<Decision, StoreError> {
        self.with_entry(key, window, |entry, now, w| {
            let decision = entry.counter.acquire(now, w, limit);
            entry.dirty |= decision.allowed;
            decision
        })
    }

    /// Gives back one event counted in the current window (when a later
    /// check refused the request it was counted for).
    pub fn release(&self, key: &str, window: Duration) -> Result<(), StoreError> {
        let window_ms = (window.as_millis() as u64).max(1);
        if let Some(entry) = self.lock(key)?.entries.get_mut(key) {
            if entry.window_ms == window_ms {
                entry.counter.release(now_ms(), window_ms);
                entry.dirty = true;
            }
        }
        Ok(())
    }

    /// Reports where the key stands without counting, and without creating
    /// it: a key nobody has counted is simply empty.
    pub fn peek(&self, key: &str, window: Duration, limit: u64) -> Result<Decision, StoreError> {
        let window_ms = (window.as_millis() as u64).max(1);
        let mut counter = match self.lock(key)?.entries.get(key) {
            Some(entry) if entry.window_ms == window_ms => entry.counter,
            _ => WindowCounter::default(),
        };
        Ok(counter.peek(now_ms(), window_ms, limit))
    }

    /// Forgets a key, in memory and on disk.
    pub fn reset(&self, key: &str) -> Result<bool, StoreError> {
        let removed = self.lock(key)?.entries.remove(key).is_some();
        let on_disk = self
            .tree
            .remove(key.as_bytes())
            .map_err(|e| StoreError::new(e.to_string()))?
            .is_some();
        Ok(removed || on_disk)
    }

    /// Writes changed counters to sled, removes evicted ones and, with
    /// `sweep`, drops expired ones everywhere; run periodically off the
    /// request path. Returns (written, removed).
    pub fn persist(&self, sweep: bool) -> Result<(usize, usize), StoreError> {
        let now = now_ms();
        let (mut written, mut removed) = (0, 0);
        for shard in &self.shards {
            // Collect under the lock, write after releasing it.
            let mut changes: Vec<(Vec<u8>, Option<[u8; 32]>)> = Vec::new();
            {
                let mut shard = shard
                    .lock()
                    .map_err(|_| StoreError::new("a counter shard is poisoned"))?;
                let Shard { entries, evicted } = &mut *shard;
                // Removals first: a key evicted and counted again since must end up written.
                removed += evicted.len();
                changes.extend(evicted.drain(..).map(|key| (key.into_bytes(), None)));
                entries.retain(|key, entry| {
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
            }
            // One write per key: sled holds a batch's writes in memory out
            // of all proportion to their size (a million counters written in
            // batches of 1,024 took 1.3-2 GiB; one by one, a tenth of that).
            for (key, value) in changes {
                match value {
                    Some(value) => self.tree.insert(key, value.as_slice()).map(|_| ()),
                    None => self.tree.remove(key).map(|_| ()),
                }
                .map_err(|e| StoreError::new(e.to_string()))?;
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
            for (key, entry) in shard.entries.iter().filter(|(k, _)| k.starts_with(prefix)) {
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
            .map(|s| s.lock().map_or(0, |s| s.entries.len()))
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;

    fn open(dir: &std::path::Path, capacity: usize) -> CounterStore {
        let storage = Storage::open(&StorageConfig::for_tests(dir)).unwrap();
        let evictions = IntCounter::new("evictions", "test").unwrap();
        CounterStore::open(&storage, "counters", capacity, evictions).unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn peeking_never_creates_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 100);
        let decision = store.peek("nobody", MINUTE, 3).unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 3);
        assert!(store.is_empty());
        store.release("nobody", MINUTE).unwrap();
        assert!(store.is_empty());
    }

    #[test]
    fn memory_is_capped_and_busy_keys_survive_a_flood() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 160);
        for _ in 0..5 {
            assert!(store.acquire("attacker", MINUTE, 5).unwrap().allowed);
        }
        assert!(!store.acquire("attacker", MINUTE, 5).unwrap().allowed);
        for i in 0..10_000 {
            store.acquire(&format!("flood-{i}"), MINUTE, 5).unwrap();
            assert!(store.len() <= 160, "{} keys held", store.len());
        }
        assert!(store.evictions.get() >= 10_000 - 160);
        assert!(
            !store.acquire("attacker", MINUTE, 5).unwrap().allowed,
            "a flood of new keys must not reset a limited one"
        );
        // Evicted keys leave sled too.
        store.persist(false).unwrap();
        assert!(store.tree.len() <= 160);
    }
}
