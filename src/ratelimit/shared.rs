//! Rate-limit counters shared by several nodes through Redis.
//!
//! Each decision is one server-side script over one key (a hash holding the
//! window's start and both counts), so it is atomic across nodes and works
//! on Redis Cluster. The time is the Redis server's (`TIME`), never a
//! node's, so nodes whose clocks disagree still share one window. Only an
//! admitted request is written; the key expires once it can no longer
//! affect a decision (two windows). The script applies the same sliding
//! window arithmetic as the local counters ([`WindowCounter`]), and the
//! answer is reported by the same code.
//!
//! When Redis does not answer in time, the call has failed: it is never
//! sent again (it may have counted), and this node's own counters decide
//! instead, for the policies whose `fail = "open"`.

use std::sync::LazyLock;
use std::time::Duration;

use super::store::{CounterStore, StoreError};
use super::window::{Decision, WindowCounter};
use crate::shared::Shared;

/// `KEYS[1]`: the counter. `ARGV`: window (ms), limit, and what to do:
/// `acquire`, `release` or `peek`. Returns the server's time and the
/// counter as it stands, and whether the request was admitted.
static WINDOW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local start = now - now % window
local held = redis.call('HMGET', KEYS[1], 'start', 'current', 'previous')
local held_start = tonumber(held[1]) or 0
local current = tonumber(held[2]) or 0
local previous = tonumber(held[3]) or 0
if held_start ~= start then
  if held_start + window == start then previous = current else previous = 0 end
  current = 0
end
local admitted = 0
if ARGV[3] == 'acquire' then
  local elapsed = (now - start) / window
  if previous * (1 - elapsed) + current + 1 <= limit then
    admitted = 1
    current = current + 1
    redis.call('HSET', KEYS[1], 'start', start, 'current', current, 'previous', previous)
    redis.call('PEXPIREAT', KEYS[1], start + 2 * window)
  end
elseif ARGV[3] == 'release' and held_start == start and current > 0 then
  current = current - 1
  redis.call('HSET', KEYS[1], 'current', current)
end
return {now, start, current, previous, admitted}
",
    )
});

/// Keys read per step when listing the busiest counters, and the most read.
const SCAN_STEP: usize = 1000;
const SCAN_MAX: usize = 20_000;
const SCAN_STEPS: usize = 200;

/// Counters in Redis, with this node's own as the fallback.
pub struct SharedCounters {
    shared: Shared,
    /// Which counters: their sled tree's name, which names them in Redis too.
    store: &'static str,
    local: CounterStore,
}

impl SharedCounters {
    pub fn new(shared: Shared, store: &'static str, local: CounterStore) -> SharedCounters {
        SharedCounters {
            shared,
            store,
            local,
        }
    }

    /// This node's own counters, which decide while Redis does not answer.
    pub fn local(&self) -> &CounterStore {
        &self.local
    }

    async fn run(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
        action: &'static str,
    ) -> Result<Decision, StoreError> {
        let window_ms = (window.as_millis() as u64).max(1);
        let name = self.shared.keys().counter(self.store, window_ms, key);
        let answer = self
            .shared
            .call("rate_limit", move |mut conn| async move {
                WINDOW
                    .key(name)
                    .arg(window_ms)
                    .arg(limit)
                    .arg(action)
                    .invoke_async::<(u64, u64, u64, u64, u8)>(&mut conn)
                    .await
            })
            .await;
        match answer {
            Ok((now, window_start, current, previous, admitted)) => {
                let counter = WindowCounter {
                    window_start,
                    current,
                    previous,
                };
                Ok(counter.report(now, window_ms, limit, admitted == 1))
            }
            Err(err) => Err(StoreError::new(err.to_string())),
        }
    }

    /// Admits and counts one event if the key is under `limit`; when Redis
    /// fails, the error carries this node's own decision.
    pub async fn acquire(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
    ) -> Result<Decision, StoreError> {
        self.run(key, window, limit, "acquire")
            .await
            .map_err(|mut err| {
                err.fallback = self.local.acquire(key, window, limit).ok();
                err
            })
    }

    /// Gives back one event counted in the current window.
    pub async fn release(&self, key: &str, window: Duration) -> Result<(), StoreError> {
        self.run(key, window, u64::MAX, "release").await.map(|_| ())
    }

    /// Where the key stands, without counting.
    pub async fn peek(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
    ) -> Result<Decision, StoreError> {
        self.run(key, window, limit, "peek").await
    }

    /// Forgets a key, whatever its window; true when it existed.
    pub async fn reset(&self, key: &str) -> Result<bool, StoreError> {
        let names: Vec<String> = self
            .scan(&format!("*:{}", glob_escape(key)))
            .await?
            .into_iter()
            .filter(|name| self.split(name).is_some_and(|(_, k)| k == key))
            .collect();
        let found = !names.is_empty();
        if found {
            self.shared
                .call("rate_limit", move |mut conn| async move {
                    redis::cmd("DEL")
                        .arg(names)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await
                .map_err(|err| StoreError::new(err.to_string()))?;
        }
        let _ = self.local.reset(key);
        Ok(found)
    }

    /// The `n` keys starting with `prefix` that are nearest their limit,
    /// from at most [`SCAN_MAX`] keys (so a flood of keys cannot make the
    /// console's page a long scan).
    pub async fn busiest(&self, prefix: &str, n: usize) -> Result<Vec<(String, u64)>, StoreError> {
        let names = self.scan(&format!("*:{}*", glob_escape(prefix))).await?;
        let mut found = Vec::new();
        for chunk in names.chunks(SCAN_STEP) {
            let chunk = chunk.to_vec();
            let read = chunk.clone();
            let rows: Vec<(Option<u64>, Option<u64>, Option<u64>)> = self
                .shared
                .call("rate_limit", move |mut conn| async move {
                    let mut pipe = redis::pipe();
                    for name in &read {
                        pipe.cmd("HMGET")
                            .arg(name)
                            .arg("start")
                            .arg("current")
                            .arg("previous");
                    }
                    pipe.query_async(&mut conn).await
                })
                .await
                .map_err(|err| StoreError::new(err.to_string()))?;
            let now = crate::storage::now_ms();
            for (name, row) in chunk.into_iter().zip(rows) {
                let (Some((window, key)), (Some(window_start), Some(current), previous)) =
                    (self.split(&name), row)
                else {
                    continue;
                };
                if !key.starts_with(prefix) {
                    continue;
                }
                let counter = WindowCounter {
                    window_start,
                    current,
                    previous: previous.unwrap_or(0),
                };
                let used = counter.used(now.max(window_start), window.max(1));
                if used > 0 {
                    found.push((key.to_owned(), used));
                }
            }
        }
        found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        found.truncate(n);
        Ok(found)
    }

    /// A counter's window and key, from its name
    /// (`<key_prefix><store>:<window>:<key>`).
    fn split<'n>(&self, name: &'n str) -> Option<(u64, &'n str)> {
        let rest = name.strip_prefix(&self.shared.keys().counter_prefix(self.store))?;
        let (window, key) = rest.split_once(':')?;
        Some((window.parse().ok()?, key))
    }

    /// The names of this store's counters matching `pattern` (after the
    /// store's own prefix), at most [`SCAN_MAX`].
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!(
            "{}{}",
            glob_escape(&self.shared.keys().counter_prefix(self.store)),
            pattern
        );
        let mut names = Vec::new();
        let mut cursor = 0u64;
        let mut steps = 0;
        let mut seen = std::collections::HashSet::new();
        loop {
            let pattern = pattern.clone();
            let (next, page): (u64, Vec<String>) = self
                .shared
                .call("scan", move |mut conn| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(SCAN_STEP)
                        .query_async(&mut conn)
                        .await
                })
                .await
                .map_err(|err| StoreError::new(err.to_string()))?;
            // A scan may return a name twice (when the keyspace grows under it).
            names.extend(page.into_iter().filter(|name| seen.insert(name.clone())));
            steps += 1;
            // Bounded however many keys the server holds: a listing is a
            // view for the console, not an audit.
            if next == 0 || names.len() >= SCAN_MAX || steps >= SCAN_STEPS {
                names.truncate(SCAN_MAX);
                return Ok(names);
            }
            cursor = next;
        }
    }
}

/// `text` matched literally by a Redis glob pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn glob_characters_are_matched_literally() {
        assert_eq!(glob_escape("p|1.2.3.4"), "p|1.2.3.4");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
