//! The crash loop: what the gateway acknowledged survives SIGKILL, round
//! after round, on one storage.
//!
//! A bench-tier run, ignored in CI: it takes minutes and is meant to be
//! run in release mode (every login is an argon2 check):
//!
//! ```text
//! CRASH_ROUNDS=100 cargo test --release --test integration crash_loop -- --ignored --nocapture
//! ```
//!
//! Each round, several tasks log in, log out, revoke sessions through the
//! admin API and call a protected route, all at once, while the gateway is
//! killed with SIGKILL at a random moment; then it is relaunched on the same
//! storage and the next round runs on it. The gateway promises (README,
//! "Durability") that logins, logouts and revocations are on disk before
//! they are answered, so whatever a client saw acknowledged must hold after
//! any crash, however soon after the answer it came:
//!
//! - the database always opens again;
//! - a session whose logout (`200 {"status":"logged_out"}`) or revocation
//!   (`204`) was acknowledged answers `401 token_revoked`, never anything
//!   else: revoked sessions are only swept once expired, and nothing expires
//!   here;
//! - a session whose login was acknowledged (`200` with the cookie) and that
//!   nobody ended answers `200`: not `invalid_token` (lost), not
//!   `token_expired` (the lifetimes are set far beyond any run, so an expiry
//!   could only mean lost state), not `token_revoked`;
//! - a logout or revocation whose answer the kill cut off may have happened
//!   or not, but the session must be one or the other, and stays what the
//!   restart showed from then on.
//!
//! Nothing is timed by `storage.flush_interval`: it keeps its default, since
//! durability must not depend on it. Every violation of a round is collected
//! and reported together (round, what was acknowledged, what came back).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};

use crate::auth::{add_user, session_cookie, setup, ADMIN_TOKEN, COOKIE, PASSWORD};
use crate::common::{client, route, Echo, Gateway, Setup};

/// Rounds when `CRASH_ROUNDS` is not set.
const DEFAULT_ROUNDS: usize = 100;
/// Users the sessions are spread over.
const USERS: usize = 4;
/// Concurrent load tasks.
const WORKERS: usize = 8;
/// The kill comes this many milliseconds into a round's load.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 50..=1000;
/// Sessions from earlier rounds re-checked after each restart, besides
/// every one this round touched (all of them after the last round).
const RECHECKED: usize = 64;
/// Requests in flight at once while checking after a restart.
const CHECKS_IN_FLIGHT: usize = 16;

/// A session the client was given, and what the client knows became of it.
#[derive(Debug, Clone)]
struct Tracked {
    user: String,
    session_id: String,
    token: String,
    /// The round whose gateway acknowledged the login.
    issued_in: usize,
    /// The last round that issued it or changed its state.
    changed_in: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Login acknowledged; nothing was sent to end it.
    Live,
    /// Ended, and known to be: acknowledged, or seen revoked after a restart.
    Ended(End),
    /// A logout or revocation was sent, and the kill cut off its answer.
    Unanswered(End),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Logout,
    Revocation,
    /// An unanswered logout or revocation that a restart showed in force.
    SeenRevoked,
}

/// The counts printed at the end.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    logins: usize,
    logouts: usize,
    revocations: usize,
    /// Protected requests during the load (live → 200, ended → 401).
    load_checks: usize,
    /// Sessions checked after a restart.
    restart_checks: usize,
    /// Logouts and revocations whose answer the kill cut off...
    unanswered: usize,
    /// ...and of those, how many the restart showed in force.
    unanswered_in_force: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.logins += other.logins;
        self.logouts += other.logouts;
        self.revocations += other.revocations;
        self.load_checks += other.load_checks;
        self.restart_checks += other.restart_checks;
        self.unanswered += other.unanswered;
        self.unanswered_in_force += other.unanswered_in_force;
    }
}

/// Where one round's load goes, shared by its tasks.
struct Target {
    client: reqwest::Client,
    proxy: String,
    admin: String,
    round: usize,
    /// Set just before the kill: from then on a failed request is expected.
    killed: AtomicBool,
}

/// A request failed without an answer (the gateway is gone).
struct Cut(reqwest::Error);

/// Sends a request; `Err` when no complete answer came back.
async fn answer(request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), Cut> {
    let response = request.send().await.map_err(Cut)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(Cut)?;
    Ok((status, body.to_vec()))
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The JSON `error` code of a body, or the body itself.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text(body))
}

impl Target {
    fn with_cookie(
        &self,
        request: reqwest::RequestBuilder,
        token: &str,
    ) -> reqwest::RequestBuilder {
        request.header("cookie", format!("{COOKIE}={token}"))
    }

    /// A JSON login; the new session when it was acknowledged.
    async fn login(&self, user: &str) -> Result<Tracked, Cut> {
        let response = self
            .client
            .post(format!("{}/auth/login", self.proxy))
            .json(&json!({"username": user, "password": PASSWORD}))
            .send()
            .await
            .map_err(Cut)?;
        let status = response.status().as_u16();
        let cookie = session_cookie(&response, COOKIE);
        let body = response.bytes().await.map_err(Cut)?;
        assert_eq!(
            status,
            200,
            "round {}: login as {user} before the kill: {}",
            self.round,
            text(&body)
        );
        let token = cookie
            .unwrap_or_else(|| panic!("round {}: a login without a cookie", self.round))
            .value;
        let body: Value = serde_json::from_slice(&body).expect("a JSON login answer");
        Ok(Tracked {
            user: user.to_owned(),
            session_id: body["session_id"]
                .as_str()
                .expect("a session_id")
                .to_owned(),
            token,
            issued_in: self.round,
            changed_in: self.round,
            state: State::Live,
        })
    }

    /// `POST /auth/logout` with the session's cookie; `Ok` once acknowledged.
    async fn logout(&self, session: &Tracked) -> Result<(), Cut> {
        let request = self.client.post(format!("{}/auth/logout", self.proxy));
        let (status, body) = answer(self.with_cookie(request, &session.token)).await?;
        let body: Option<Value> = serde_json::from_slice(&body).ok();
        assert!(
            status == 200 && body == Some(json!({"status": "logged_out"})),
            "round {}: logout of {} before the kill: {status} {body:?}",
            self.round,
            session.session_id
        );
        Ok(())
    }

    /// `DELETE /admin/api/sessions/{id}`; `Ok` once acknowledged.
    async fn revoke(&self, session: &Tracked) -> Result<(), Cut> {
        let request = self
            .client
            .delete(format!(
                "{}/admin/api/sessions/{}",
                self.admin, session.session_id
            ))
            .bearer_auth(ADMIN_TOKEN);
        let (status, body) = answer(request).await?;
        assert_eq!(
            status,
            204,
            "round {}: revoking {} before the kill: {}",
            self.round,
            session.session_id,
            text(&body)
        );
        Ok(())
    }

    /// The status and error code of a protected request with the session's
    /// token (`(200, "")` when it passed).
    async fn outcome(&self, session: &Tracked) -> Result<(u16, String), Cut> {
        let request = self.client.get(format!("{}/p/x", self.proxy));
        let (status, body) = answer(self.with_cookie(request, &session.token)).await?;
        let code = if status == 200 {
            String::new()
        } else {
            error_code(&body)
        };
        Ok((status, code))
    }

    /// A protected request during the load: a live session passes, an
    /// ended one is refused as revoked.
    async fn use_session(&self, session: &Tracked) -> Result<(), Cut> {
        let seen = self.outcome(session).await?;
        let expected = match session.state {
            State::Live => (200, String::new()),
            _ => (401, "token_revoked".to_owned()),
        };
        assert_eq!(
            seen, expected,
            "round {}: {:?} session {} (of {}, issued in round {}) during the load",
            self.round, session.state, session.session_id, session.user, session.issued_in
        );
        Ok(())
    }
}

/// One load task: logs in, ends its own live sessions (logout or
/// revocation) and uses them, until the gateway is killed. It owns the
/// sessions it is handed, so no other task changes them under it. Returns
/// them, with those it created, in their new states.
async fn drive(
    target: Arc<Target>,
    mut mine: Vec<Tracked>,
    ended: Vec<Tracked>,
    seed: u64,
) -> (Vec<Tracked>, Counts) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = Counts::default();
    let round = target.round;
    while !target.killed.load(Ordering::SeqCst) {
        let live: Vec<usize> = (0..mine.len())
            .filter(|&i| mine[i].state == State::Live)
            .collect();
        // A few more logins than ends, so that live sessions pile up over
        // the rounds and every restart has old ones to check.
        let roll = rng.gen_range(0..100);
        let step = if live.is_empty() || roll < 35 {
            let user = format!("crash-{}", rng.gen_range(0..USERS));
            target.login(&user).await.map(|session| {
                mine.push(session);
                counts.logins += 1;
            })
        } else if roll < 65 {
            let i = *live.choose(&mut rng).unwrap();
            let how = if roll < 50 {
                End::Logout
            } else {
                End::Revocation
            };
            // Unanswered until the answer says otherwise.
            mine[i].state = State::Unanswered(how);
            mine[i].changed_in = round;
            let sent = match how {
                End::Logout => target.logout(&mine[i]).await,
                _ => target.revoke(&mine[i]).await,
            };
            sent.map(|()| {
                mine[i].state = State::Ended(how);
                match how {
                    End::Logout => counts.logouts += 1,
                    _ => counts.revocations += 1,
                }
            })
        } else {
            let session = match ended.choose(&mut rng) {
                Some(session) if roll >= 95 => session,
                _ => &mine[*live.choose(&mut rng).unwrap()],
            };
            target
                .use_session(session)
                .await
                .map(|()| counts.load_checks += 1)
        };
        if let Err(Cut(err)) = step {
            assert!(
                target.killed.load(Ordering::SeqCst),
                "round {round}: a request failed before the kill: {err}"
            );
            break;
        }
    }
    counts.unanswered = mine
        .iter()
        .filter(|s| matches!(s.state, State::Unanswered(_)))
        .count();
    (mine, counts)
}

/// The gateway under test: a plain-HTTP cookie, the admin API, `/p/*`
/// protected in front of `echo`. Lifetimes far beyond any run, so that
/// nothing expires or rotates: every outcome below is exact.
///
/// The login throttle is out of the way: a login takes its place in the
/// failure counts before the password check and gives it back on success,
/// and counts are written behind, so every kill turns the logins in flight
/// (and those answered since the last write) into failures that outlive the
/// restart. From one client address, a few rounds would reach the per-address
/// limit and every later login would be refused with `429`.
fn crash_setup(echo: &Echo) -> Setup {
    setup()
        .session("idle_timeout = \"12h\"")
        .session("max_lifetime = \"12h\"")
        .session("rotate_after = \"12h\"")
        .login("max_failures_per_ip = 1000000")
        .login("max_failures_per_user = 1000000")
        .route(route("private", "/p/*", &echo.url()).authenticated())
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Relaunches a killed gateway on its storage; a gateway that cannot start
/// (the database does not open) fails the round.
fn relaunch(gateway: Gateway, round: usize) -> Gateway {
    let launch = gateway.relaunch();
    std::panic::catch_unwind(AssertUnwindSafe(move || launch.start())).unwrap_or_else(|payload| {
        panic!(
            "round {round}: the gateway did not start again after SIGKILL:\n{}",
            panic_message(payload.as_ref())
        )
    })
}

/// Runs futures `CHECKS_IN_FLIGHT` at a time, in order.
async fn bounded<T, F: Future<Output = T>>(futures: impl IntoIterator<Item = F>) -> Vec<T> {
    futures_util::stream::iter(futures)
        .buffered(CHECKS_IN_FLIGHT)
        .collect()
        .await
}

/// Checks sessions on the relaunched gateway against what the client knows;
/// settles unanswered ends by what the restart shows. Returns a line per
/// violation.
async fn check_after_restart(
    target: &Target,
    sessions: &mut [&mut Tracked],
    counts: &mut Counts,
) -> Vec<String> {
    let seen = bounded(sessions.iter().map(|s| target.outcome(s))).await;
    let mut violations = Vec::new();
    for (session, seen) in sessions.iter_mut().zip(seen) {
        counts.restart_checks += 1;
        let seen = match seen {
            Ok(seen) => seen,
            Err(Cut(err)) => {
                violations.push(format!(
                    "session {}: no answer from the relaunched gateway: {err}",
                    session.session_id
                ));
                continue;
            }
        };
        let what = format!(
            "session {} of {} (login acknowledged in round {})",
            session.session_id, session.user, session.issued_in
        );
        let revoked = (401, "token_revoked".to_owned());
        match session.state {
            State::Live if seen.0 != 200 => violations.push(format!(
                "{what}, never ended: expected 200, got {} {}",
                seen.0, seen.1
            )),
            State::Ended(how) if seen != revoked => violations.push(format!(
                "{what}, {how:?} acknowledged in round {}: expected 401 token_revoked, got {} {}",
                session.changed_in, seen.0, seen.1
            )),
            State::Unanswered(how) => {
                if seen == revoked {
                    session.state = State::Ended(End::SeenRevoked);
                    counts.unanswered_in_force += 1;
                } else if seen.0 == 200 {
                    session.state = State::Live;
                } else {
                    violations.push(format!(
                        "{what}, {how:?} sent in round {} without an answer: expected 200 or \
                         401 token_revoked, got {} {}",
                        session.changed_in, seen.0, seen.1
                    ));
                }
            }
            _ => {}
        }
    }
    violations
}

fn target_of(gateway: &Gateway, client: &reqwest::Client, round: usize) -> Arc<Target> {
    Arc::new(Target {
        client: client.clone(),
        proxy: format!("http://{}", gateway.proxy_addr()),
        admin: format!("http://{}", gateway.admin_addr()),
        round,
        killed: AtomicBool::new(false),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bench tier: minutes of crash loop; run with --release --ignored"]
async fn acknowledged_logouts_and_revocations_survive_sigkill() {
    let rounds: usize = std::env::var("CRASH_ROUNDS").map_or(DEFAULT_ROUNDS, |v| {
        v.parse().expect("CRASH_ROUNDS is a number of rounds")
    });
    let started = Instant::now();
    let mut rng = StdRng::from_entropy();
    let echo = Echo::start();
    let mut gateway = Gateway::start(crash_setup(&echo));
    for n in 0..USERS {
        add_user(&gateway, &format!("crash-{n}"), &[], &[]).await;
    }
    let mut ledger: Vec<Tracked> = Vec::new();
    let mut counts = Counts::default();

    for round in 1..=rounds {
        // One client (connection pool) per gateway process.
        let http = client();
        let target = target_of(&gateway, &http, round);
        let (mut live, rest): (Vec<Tracked>, Vec<Tracked>) =
            ledger.drain(..).partition(|s| s.state == State::Live);
        ledger = rest;
        live.shuffle(&mut rng);
        let ended: Vec<Tracked> = ledger
            .choose_multiple(&mut rng, 16)
            .filter(|s| matches!(s.state, State::Ended(_)))
            .cloned()
            .collect();
        let mut shares: Vec<Vec<Tracked>> = vec![Vec::new(); WORKERS];
        for (i, session) in live.into_iter().enumerate() {
            shares[i % WORKERS].push(session);
        }
        let tasks: Vec<_> = shares
            .into_iter()
            .map(|share| tokio::spawn(drive(target.clone(), share, ended.clone(), rng.gen())))
            .collect();

        // The point of the test: the kill lands anywhere in the load.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(KILL_AFTER_MS))).await;
        target.killed.store(true, Ordering::SeqCst);
        gateway.kill();
        for task in tasks {
            let (sessions, worked) = match task.await {
                Ok(done) => done,
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            };
            ledger.extend(sessions);
            counts.add(worked);
        }

        gateway = relaunch(gateway, round);
        let after = target_of(&gateway, &client(), round);
        // Everything this round touched, a sample of the rest; all at the end.
        let last = round == rounds;
        let older: Vec<usize> = (0..ledger.len())
            .filter(|&i| ledger[i].changed_in != round)
            .collect();
        let mut sampled = vec![false; ledger.len()];
        for &i in older.choose_multiple(&mut rng, if last { older.len() } else { RECHECKED }) {
            sampled[i] = true;
        }
        let mut checked: Vec<&mut Tracked> = ledger
            .iter_mut()
            .zip(sampled)
            .filter(|(s, sampled)| s.changed_in == round || *sampled)
            .map(|(s, _)| s)
            .collect();
        let violations = check_after_restart(&after, &mut checked, &mut counts).await;
        assert!(
            violations.is_empty(),
            "round {round}: {} acknowledged change(s) lost across SIGKILL:\n{}",
            violations.len(),
            violations.join("\n")
        );
        if round % 10 == 0 {
            println!(
                "crash loop: round {round}/{rounds}, {} sessions tracked, {:.0?}",
                ledger.len(),
                started.elapsed()
            );
        }
    }

    let live = ledger.iter().filter(|s| s.state == State::Live).count();
    println!(
        "crash loop summary: {rounds} rounds in {:.1?}; acknowledged: {} logins, {} logouts, \
         {} revocations; {} checks after restarts + {} during load; {} ends cut off by a kill \
         ({} found in force, the rest live); {} sessions tracked, {live} live; nothing lost",
        started.elapsed(),
        counts.logins,
        counts.logouts,
        counts.revocations,
        counts.restart_checks,
        counts.load_checks,
        counts.unanswered,
        counts.unanswered_in_force,
        ledger.len(),
    );
}
