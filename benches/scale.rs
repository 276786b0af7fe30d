//! Scale runs: memory, disk and per-decision latency with 1,000 and
//! 1,000,000 stored sessions and rate-limit keys. Each scenario runs in a
//! fresh process so its memory is its own. Run with `cargo bench --bench scale`
//! (or `-- sessions 1000000` for one scenario).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use portcullis::auth::{token, Auth};
use portcullis::config::{self, ConfigSource};
use portcullis::ratelimit::{CounterStore, COUNTER_TREE};
use portcullis::storage::{now_ms, SessionRecord, Storage, SCHEMA_VERSION};
use portcullis::telemetry::Metrics;
use rand::Rng;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.is_empty() {
        // `cargo test --all-targets` runs bench targets too; the scale runs
        // take minutes, so they only run under `cargo bench --bench scale`.
        println!("scale runs are skipped outside `cargo bench --bench scale`");
        return;
    }
    let args: Vec<String> = raw.into_iter().filter(|a| a != "--bench").collect();
    match args.as_slice() {
        [kind, n] => scenario(kind, n.parse().expect("a count")),
        [measure, dir, n] if measure == "measure-sessions" => {
            measure_sessions(Path::new(dir), n.parse().unwrap())
        }
        _ => {
            println!("| scenario | n | process RSS | on disk | p50 | p99 | run |");
            println!("|---|---|---|---|---|---|---|");
            for kind in ["sessions", "counters"] {
                for n in ["1000", "1000000"] {
                    let out = Command::new(std::env::current_exe().unwrap())
                        .args([kind, n])
                        .output()
                        .unwrap();
                    print!("{}", String::from_utf8_lossy(&out.stdout));
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
    }
}

fn scenario(kind: &str, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("SCALE_KEEP").is_some() {
        eprintln!("keeping {}", dir.path().display());
    }
    let file = dir.path().join("scale.toml");
    std::fs::write(
        &file,
        format!(
            "[storage]\npath = {:?}\n[session]\nsecure = false\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let config = config::load(&ConfigSource::File(file)).unwrap();
    let started = Instant::now();
    let mut samples = Vec::with_capacity(20_000);
    let (rss, disk) = match kind {
        "sessions" => {
            let storage = Storage::open(&config.storage).unwrap();
            let tokens = seed_sessions(&storage, &config, n);
            storage.flush().unwrap();
            drop(storage);
            std::fs::write(dir.path().join("tokens"), tokens.join("\n") + "\n").unwrap();
            // A fresh process loads what is stored, as a restarted gateway would,
            // so its memory is not the seeding's.
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "measure-sessions",
                    dir.path().to_str().unwrap(),
                    &n.to_string(),
                ])
                .output()
                .unwrap();
            for row in String::from_utf8_lossy(&out.stdout).lines() {
                println!("{row} {:.1} s |", started.elapsed().as_secs_f64());
            }
            if std::env::var_os("SCALE_KEEP").is_some() {
                std::mem::forget(dir);
            }
            return;
        }
        "counters" => {
            let storage = Storage::open(&config.storage).unwrap();
            // Room for every key: this measures memory at scale, not eviction.
            let evictions = Metrics::new().counter_evictions("rate_limit");
            let counters = CounterStore::open(&storage, COUNTER_TREE, n, evictions).unwrap();
            let window = Duration::from_secs(3600);
            let key = |i: usize| {
                format!(
                    "per-ip|10.{}.{}.{}",
                    (i >> 16) & 255,
                    (i >> 8) & 255,
                    i & 255
                )
            };
            for i in 0..n {
                counters.acquire(&key(i), window, 100).unwrap();
            }
            let in_memory = rss_mib();
            counters.persist(false).unwrap();
            storage.flush().unwrap();
            let rss = rss_mib();
            eprintln!("counters: {in_memory:.1} MiB before writing to storage, {rss:.1} MiB after");
            let mut rng = rand::thread_rng();
            for _ in 0..20_000 {
                let k = key(rng.gen_range(0..n));
                let t = Instant::now();
                let _ = counters.acquire(&k, window, 100).unwrap();
                samples.push(t.elapsed());
            }
            (rss, dir_size(dir.path()))
        }
        other => panic!("unknown scenario {other}"),
    };
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "| {kind} | {n} | {rss:.1} MiB | {:.1} MiB | {:.2} µs | {:.2} µs | {:.1} s |",
        disk as f64 / (1 << 20) as f64,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        started.elapsed().as_secs_f64()
    );
}

/// The measuring half of the sessions scenario, in its own process: 20,000
/// random sessions validated once (read from storage) and again (from memory).
fn measure_sessions(dir: &Path, n: usize) {
    let file = dir.join("scale.toml");
    let config = config::load(&ConfigSource::File(file)).unwrap();
    let sample = sample_tokens(&dir.join("tokens"), n, 20_000);
    let storage = Storage::open(&config.storage).unwrap();
    let auth = Auth::open(&storage, &config, &Metrics::new()).unwrap();
    eprintln!("sessions: {:.1} MiB after opening", rss_mib());
    let validate = |token: &str| {
        let t = Instant::now();
        let ok = auth
            .authenticate(token, &config.session)
            .now_or_never()
            .unwrap()
            .is_ok();
        assert!(ok);
        t.elapsed()
    };
    let first: Vec<Duration> = sample.iter().map(|t| validate(t)).collect();
    let again: Vec<Duration> = sample.iter().map(|t| validate(t)).collect();
    // The whole process, as a gateway holding this database would be:
    // sled's cache, the sessions validated (held in memory up to
    // `storage.session_cache`) and the runtime.
    let rss = rss_mib();
    let disk = dir_size(&dir.join("data")) as f64 / (1 << 20) as f64;
    for (case, mut samples) in [("first use", first), ("in memory", again)] {
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        println!(
            "| sessions, {case} | {n} | {rss:.1} MiB | {disk:.1} MiB | {:.2} µs | {:.2} µs |",
            pct(0.50).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6,
        );
    }
}

/// `count` random tokens of the `n` in `path` (one per line, all the same
/// length), read without loading the rest.
fn sample_tokens(path: &Path, n: usize, count: usize) -> Vec<String> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).unwrap();
    let mut first = String::new();
    std::io::BufReader::new(&mut file)
        .read_line(&mut first)
        .unwrap();
    let line = first.len() as u64;
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|_| {
            let mut token = vec![0u8; line as usize - 1];
            file.seek(SeekFrom::Start(rng.gen_range(0..n as u64) * line))
                .unwrap();
            file.read_exact(&mut token).unwrap();
            String::from_utf8(token).unwrap()
        })
        .collect()
}

/// Writes `n` sessions of one user straight to storage, as a long-running
/// gateway would have; returns their tokens.
fn seed_sessions(storage: &Storage, config: &config::Config, n: usize) -> Vec<String> {
    actix_web::rt::System::new().block_on(async {
        Auth::open(storage, config, &Metrics::new())
            .unwrap()
            .add_user(
                "scale",
                "a long enough password".into(),
                vec!["dev".into()],
                vec![],
                8,
            )
            .await
            .unwrap();
    });
    let records = storage
        .sessions(portcullis::storage::SESSIONS_TREE)
        .unwrap();
    let now = now_ms();
    (0..n)
        .map(|_| {
            let id = token::new_session_id();
            let (token, hash) = token::new_token(&id).unwrap();
            let record = SessionRecord {
                v: SCHEMA_VERSION,
                id: id.clone(),
                user: "scale".into(),
                user_generation: 0,
                token_hash: token::to_hex(&hash),
                previous_token_hash: None,
                previous_valid_until: 0,
                retired_token_hashes: Vec::new(),
                created_at: now,
                token_issued_at: now,
                last_seen: now,
                expires_at: now + 3_600_000,
                revoked_at: None,
                client_ip: None,
                user_agent: None,
            };
            records.put(&id, &record).unwrap();
            token
        })
        .collect()
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}
