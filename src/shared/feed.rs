//! The change feed: a Redis stream that every write to shared records
//! appends to, in the same atomic step as the write, and that every node
//! tails with a blocking `XREAD`.
//!
//! A node holds users, routes and its active sessions in memory. When
//! another node changes one, the entry on the feed tells this node to drop
//! or reload its copy, one round trip after the write. A stream rather
//! than pub/sub because a reader continues from the last entry it read:
//! and whenever the tail had to reconnect, the node resynchronises
//! everything anyway, since it cannot know what it missed while away.

use std::time::Duration;

use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;

use super::Shared;
use crate::config::RedisConfig;

/// How long one `XREAD` waits for entries before asking again.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries kept on the feed; a node that is connected reads them in
/// milliseconds, so only a node that is away falls behind, and that node
/// resynchronises whatever the feed still holds.
pub const KEPT: usize = 10_000;

/// Something another node (or this one) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session was rotated, revoked, touched or removed.
    Session(String),
    /// A user was created, changed or deleted.
    User(String),
    /// An API route was created, changed or deleted.
    Route(String),
    /// The feed was interrupted: anything may have changed.
    Resync,
}

impl Change {
    /// Sessions are skipped on the feed by the node that changed them: it
    /// holds the new state already, and they change often (every write
    /// behind of activity). Users and routes change rarely and are read
    /// again everywhere, the writer included, so a write whose answer was
    /// lost to a timeout is still taken in.
    fn is_session(&self) -> bool {
        matches!(self, Change::Session(_))
    }

    /// How the change is written on the feed.
    pub fn encode(&self) -> String {
        match self {
            Change::Session(id) => format!("session:{id}"),
            Change::User(name) => format!("user:{name}"),
            Change::Route(id) => format!("route:{id}"),
            Change::Resync => "resync:".to_owned(),
        }
    }

    fn decode(text: &str) -> Option<Change> {
        let (kind, name) = text.split_once(':')?;
        Some(match kind {
            "session" => Change::Session(name.to_owned()),
            "user" => Change::User(name.to_owned()),
            "route" => Change::Route(name.to_owned()),
            "resync" => Change::Resync,
            _ => return None,
        })
    }
}

/// Adds the feed entry for `change`, made by `node`, to `pipe` (which
/// should be atomic with the write it reports).
pub fn append(pipe: &mut redis::Pipeline, feed: &str, node: &str, change: &Change) {
    pipe.cmd("XADD")
        .arg(feed)
        .arg("MAXLEN")
        .arg("~")
        .arg(KEPT)
        .arg("*")
        .arg("c")
        .arg(change.encode())
        .arg("n")
        .arg(node)
        .ignore();
}

/// Tails the feed for ever, handing each change other nodes made to
/// `changes`. After an interruption it goes on from the last entry it read
/// when it can: a connection lost and made again at once, with the feed
/// still holding that entry, loses nothing. Otherwise (an outage, or the
/// feed trimmed past it) it hands a [`Change::Resync`], and the node counts
/// as following again once that is applied ([`Shared::resynced`]).
pub(super) async fn tail(
    shared: Shared,
    client: redis::Client,
    config: RedisConfig,
    changes: mpsc::UnboundedSender<Change>,
    logger: slog::Logger,
) {
    let key = shared.keys().changes().to_owned();
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(BLOCK + config.command_timeout));
    // The last entry read; none before the first connection.
    let mut last: Option<String> = None;
    // Whether this node has missed entries since it last followed.
    let mut lost = false;
    loop {
        let connected = match client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
        {
            Ok(mut conn) => ends(&mut conn, &key).await.map(|ends| (conn, ends)),
            Err(err) => Err(err),
        };
        let (mut conn, (oldest, newest)) = match connected {
            Ok(connected) => connected,
            Err(err) => {
                if !lost {
                    lost = true;
                    let why = format!("the change feed is out of reach: {}", super::describe(&err));
                    shared.mark(|h| h.following = false, &why, &logger);
                }
                tokio::time::sleep(config.health_interval).await;
                continue;
            }
        };
        let mut from = match last.take() {
            // First connection: the node has just read everything.
            None => {
                shared.mark(|h| h.following = true, "", &logger);
                newest
            }
            Some(read) if !lost && !after(&oldest, &read) => read,
            Some(_) => {
                // Missed entries: everything is read again, and the node
                // follows once that is done.
                if changes.send(Change::Resync).is_err() {
                    return;
                }
                newest
            }
        };
        lost = false;
        loop {
            let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&key)
                .arg(&from)
                .query_async(&mut conn)
                .await;
            let Ok(reply) = read else {
                // Made again at once, above; only a failure there counts.
                break;
            };
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                let mine = entry.get::<String>("n").as_deref() == Some(shared.node());
                let change = entry
                    .get::<String>("c")
                    .as_deref()
                    .and_then(Change::decode)
                    .filter(|change| !(mine && change.is_session()));
                from = entry.id;
                if let Some(change) = change {
                    if changes.send(change).is_err() {
                        return;
                    }
                }
            }
        }
        last = Some(from);
    }
}

/// The ids of the feed's oldest and newest entries (`0-0` when empty).
async fn ends(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<(String, String)> {
    let first = |reply: redis::streams::StreamRangeReply| {
        reply
            .ids
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |entry| entry.id)
    };
    let (oldest, newest): (
        redis::streams::StreamRangeReply,
        redis::streams::StreamRangeReply,
    ) = redis::pipe()
        .cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok((first(oldest), first(newest)))
}

/// Whether stream id `a` comes after `b` (ids are `milliseconds-sequence`).
fn after(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) > parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_the_feed() {
        for change in [
            Change::Session("abc".into()),
            Change::User("a:b@c".into()),
            Change::Route("r1".into()),
            Change::Resync,
        ] {
            assert_eq!(Change::decode(&change.encode()), Some(change));
        }
        assert_eq!(Change::decode("nonsense"), None);
    }

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(after("1700000000001-0", "1700000000000-5"));
        assert!(!after("10-2", "10-10"));
        assert!(after("10-10", "9-99"));
        assert!(!after("0-0", "0-0"));
    }
}
