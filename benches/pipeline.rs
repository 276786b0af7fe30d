//! Micro benchmarks of the per-request work: route matching, session
//! validation, a rate-limit decision and one access-log line. They guide
//! optimisation; they assert nothing. Run with `cargo bench`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_util::FutureExt;
use portcullis::auth::Auth;
use portcullis::config::{self, Config, ConfigSource};
use portcullis::pipeline::{write_access_line, RequestCtx, Runtime};
use portcullis::ratelimit::{CounterStore, COUNTER_TREE};
use portcullis::routing::RouteTable;
use portcullis::storage::Storage;
use portcullis::telemetry::{Logging, Metrics, RecentLog};

/// A configuration with `routes` prefix, parameter and exact routes, its
/// storage and log under `dir`.
fn config(dir: &Path, routes: usize) -> Config {
    let mut toml = format!(
        "[storage]\npath = {:?}\n[log]\noutput = {:?}\nformat = \"json\"\n[session]\nsecure = false\n",
        dir.join("data"),
        dir.join("access.log")
    );
    for i in 0..routes {
        let path = match i % 3 {
            0 => format!("/svc{i}/*"),
            1 => format!("/svc{i}/items/{{id}}"),
            _ => format!("/svc{i}/health"),
        };
        toml.push_str(&format!(
            "[[routes]]\nid = \"r{i}\"\npath = \"{path}\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"public\"\n"
        ));
    }
    let file = dir.join(format!("bench-{routes}.toml"));
    std::fs::write(&file, toml).unwrap();
    config::load(&ConfigSource::File(file)).unwrap()
}

fn route_matching(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("route_match");
    for routes in [10, 1000] {
        let table = RouteTable::new(config(dir.path(), routes).routes);
        let last = routes - 1 - (routes - 1) % 3;
        let probes = [
            format!("/svc{last}/deep/path/here"),
            format!("/svc{}/items/42", routes - 2 - (routes - 2) % 3 + 1),
            "/nothing/here".to_owned(),
        ];
        group.bench_with_input(BenchmarkId::from_parameter(routes), &probes, |b, probes| {
            b.iter(|| {
                for p in probes {
                    let _ = std::hint::black_box(table.match_request(p, &Method::GET));
                }
            })
        });
    }
    group.finish();
}

fn session_validation(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1);
    let storage = Storage::open(&config.storage).unwrap();
    let auth = Auth::open(&storage, &config, &Metrics::new()).unwrap();
    let token = actix_web::rt::System::new().block_on(async {
        auth.add_user(
            "bench",
            "a long enough password".into(),
            vec!["dev".into()],
            vec![],
            8,
        )
        .await
        .unwrap();
        auth.issue_for(
            "bench",
            Duration::from_secs(3600),
            portcullis::auth::Origin::default(),
        )
        .await
        .unwrap()
        .token
    });
    c.bench_function("session_validate", |b| {
        b.iter(|| {
            let principal = auth.authenticate(&token, &config.session).now_or_never();
            std::hint::black_box(principal.expect("no rotation, so never suspends").unwrap());
        })
    });
}

fn rate_limit_decision(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1);
    let storage = Storage::open(&config.storage).unwrap();
    let evictions = Metrics::new().counter_evictions("rate_limit");
    let counters = CounterStore::open(&storage, COUNTER_TREE, 1000, evictions).unwrap();
    let window = Duration::from_secs(60);
    c.bench_function("rate_limit_acquire", |b| {
        b.iter(|| {
            std::hint::black_box(
                counters
                    .acquire("per-ip|192.0.2.10", window, u64::MAX)
                    .unwrap(),
            )
        })
    });
}

fn access_log_line(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1);
    let logging = Logging::new(&config.log, Metrics::new().log_dropped).unwrap();
    let recent = RecentLog::default();
    let runtime = Arc::new(Runtime::new(config));
    let req = actix_web::test::TestRequest::get()
        .uri("/svc0/users/42?page=2&token=secret")
        .insert_header(("user-agent", "bench/1.0"))
        .to_http_request();
    let mut ctx = RequestCtx::new(&req, runtime);
    ctx.request_id = "0123456789abcdef0123456789abcdef".into();
    ctx.route = Some(0);
    ctx.upstream_time = Some(Duration::from_micros(420));
    ctx.auth = "public";
    c.bench_function("access_log_line", |b| {
        b.iter(|| {
            write_access_line(
                &logging,
                &recent,
                &ctx,
                StatusCode::OK,
                Duration::from_micros(512),
                1234,
            )
        })
    });
    logging.flush();
}

criterion_group!(
    benches,
    route_matching,
    session_validation,
    rate_limit_decision,
    access_log_line
);
criterion_main!(benches);
