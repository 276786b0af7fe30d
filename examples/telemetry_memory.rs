//! What the admin console's in-memory traffic structures cost at their
//! default sizes, measured as the growth of this process's resident memory
//! while each is filled: the per-second stats with 0, 10 and 256+ routes
//! over the whole window, and the recent-log ring filled (three times over)
//! with access lines of a typical length. BENCHMARKS.md quotes the output.
//!
//! Usage: `cargo run --release --example telemetry_memory`

use std::net::IpAddr;
use std::time::Duration;

use portcullis::telemetry::recent::Keys;
use portcullis::telemetry::stats::{Flags, MAX_ROUTES, WINDOW_SECONDS};
use portcullis::telemetry::{RecentLog, Stats, DEFAULT_RECENT_LOG_BYTES};

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A full window of one request per route per second.
fn fill_stats(routes: usize) -> (Stats, usize) {
    let before = rss();
    let stats = Stats::new();
    let names: Vec<String> = (0..routes).map(|i| format!("route-{i}")).collect();
    for second in 0..WINDOW_SECONDS as u64 {
        for name in &names {
            stats.record(
                Some(name),
                200,
                Duration::from_micros(300 + second),
                Flags::default(),
            );
        }
        stats.record(None, 404, Duration::from_micros(50), Flags::default());
        stats.tick(1_000_000 + second);
    }
    let grown = rss().saturating_sub(before);
    (stats, grown)
}

/// An access line as the log writes it, for a session-authenticated request
/// from a browser (about 560 bytes).
fn access_line(n: usize) -> String {
    format!(
        concat!(
            r#"{{"msg":"access","level":"info","timestamp":"2026-11-30T19:34:08.123Z","#,
            r#""request_id":"{:032x}","method":"GET","path":"/api/v1/items/{}","query":null,"#,
            r#""status":200,"duration_ms":0.512,"upstream_ms":0.42,"bytes_in":0,"bytes_out":1234,"#,
            r#""client_ip":"192.0.2.10","user_agent":"Mozilla/5.0 (X11; Linux x86_64) "#,
            r#"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","#,
            r#""route":"api","upstream":"http://127.0.0.1:8080","user_id":"alice","#,
            r#""session_id":"s_0123456789abcdef","auth":"authenticated","#,
            r#""rate_limit":{{"policy":"per-user","remaining":99,"limited":false}},"#,
            r#""error":null,"upstream_error":null}}"#
        ),
        n,
        n % 10_000
    )
}

/// Each measurement runs in a fresh process, so memory freed by one cannot
/// hide the growth of the next.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["stats", routes] => measure_stats(routes.parse().expect("a number of routes")),
        ["recent"] => measure_recent(),
        _ => {
            println!(
                "stats: {WINDOW_SECONDS} one-second slots per series, at most {MAX_ROUTES} routes"
            );
            let me = std::env::current_exe().expect("this program's path");
            let run = |args: &[&str]| {
                let status = std::process::Command::new(&me).args(args).status();
                assert!(status.is_ok_and(|s| s.success()), "{args:?} failed");
            };
            for routes in [0, 10, 100, MAX_ROUTES, MAX_ROUTES + 50] {
                run(&["stats", &routes.to_string()]);
            }
            run(&["recent"]);
        }
    }
}

fn measure_stats(routes: usize) {
    let (stats, grown) = fill_stats(routes);
    println!(
        "  {routes:>3} routes busy: {} series, resident memory +{}",
        stats.tracked_routes() + 1,
        mib(grown)
    );
}

fn measure_recent() {
    let before = rss();
    let recent = RecentLog::new(DEFAULT_RECENT_LOG_BYTES);
    let client: IpAddr = [192, 0, 2, 10].into();
    let line_len = access_line(0).len();
    let mut pushed = 0;
    while pushed * line_len < DEFAULT_RECENT_LOG_BYTES * 3 {
        let line = access_line(pushed);
        let id = format!("{pushed:032x}");
        let keys = Keys {
            status: 200,
            request_id: &id,
            route: Some("api"),
            user: Some("alice"),
            client,
        };
        recent.push(line.as_bytes(), &keys);
        pushed += 1;
    }
    println!(
        "recent log: capacity {}, {}-byte lines: {} held ({} counted, {} bytes each), resident memory +{}",
        mib(recent.capacity()),
        line_len,
        recent.len(),
        mib(recent.bytes()),
        recent.bytes() / recent.len(),
        mib(rss().saturating_sub(before))
    );
}
