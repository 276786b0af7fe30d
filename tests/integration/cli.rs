//! The command line: `--version`, `--help`, `check`, environment overrides,
//! profiles and `serve` on the embedded default.

use std::path::Path;
use std::process::Output;

use crate::common::gateway::command;
use crate::common::{get_json, route, Launch, Setup};

/// Runs `portcullis check --config FILE` for a file holding `setup`.
fn check(setup: &Setup, env: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, setup.render(dir.path())).unwrap();
    let output = check_file(&path, env);
    (output, dir)
}

fn check_file(path: &Path, env: &[(&str, &str)]) -> Output {
    command()
        .arg("check")
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run portcullis check")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A valid configuration with fixed listeners, so the summary is predictable.
fn valid() -> Setup {
    Setup::bare()
        .server("listen = \"127.0.0.1:18080\"")
        .admin("listen = \"127.0.0.1:19901\"")
        .route(route("a", "/a/*", "http://127.0.0.1:9000"))
        .route(route("b", "/b/{id}", "http://127.0.0.1:9001/base").methods(&["GET"]))
}

#[test]
fn version_prints_the_package_version_and_the_commit() {
    let output = command().arg("--version").output().unwrap();
    assert!(output.status.success());
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    assert_eq!(
        stdout(&output).trim(),
        format!("portcullis {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

/// A database a newer release wrote is refused with a message saying so
/// (that it is left as it was is a unit test of the storage).
#[test]
fn a_database_from_a_newer_release_is_refused() {
    let mut gateway = Launch::new(Setup::new().storage("path = \"$DIR/data\"")).start();
    let data = gateway.dir().join("data");
    gateway.stop();
    let relaunch = gateway.relaunch();
    {
        let db = sled::open(&data).unwrap();
        db.insert(b"\0schema_version", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let exited = relaunch.expect_failure();
    assert!(!exited.status.success());
    assert!(
        exited
            .stderr
            .contains("written by a newer Portcullis (schema version 99"),
        "{}",
        exited.stderr
    );
}

#[test]
fn serve_and_check_have_help() {
    let serve = command().args(["serve", "--help"]).output().unwrap();
    assert!(serve.status.success());
    let text = stdout(&serve);
    assert!(text.contains("Usage: portcullis serve"), "{text}");
    assert!(text.contains("--config <FILE>"), "{text}");

    let check = command().args(["check", "--help"]).output().unwrap();
    assert!(check.status.success());
    let text = stdout(&check);
    assert!(
        text.contains("Usage: portcullis check --config <FILE>"),
        "{text}"
    );
    assert!(text.contains("Validate"), "{text}");
}

#[test]
fn check_accepts_a_valid_file_with_a_one_line_summary() {
    let (output, dir) = check(&valid(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let expected = format!(
        "{}: valid (prod profile, 2 routes, proxy on 127.0.0.1:18080, admin on 127.0.0.1:19901)",
        dir.path().join("portcullis.toml").display()
    );
    assert_eq!(text.trim_end(), expected);
}

/// Asserts a failed check whose stderr lists exactly these `key: message` starts.
fn assert_problems(output: &Output, expected: &[&str]) {
    assert!(!output.status.success(), "check passed: {}", stdout(output));
    let text = stderr(output);
    let problems: Vec<&str> = text
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for want in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "missing problem {want:?} in:\n{text}"
        );
    }
    assert_eq!(
        problems.len(),
        expected.len(),
        "expected exactly {} problems:\n{text}",
        expected.len()
    );
    assert!(
        text.lines()
            .next()
            .unwrap_or("")
            .contains(&format!("{} configuration problem", expected.len())),
        "{text}"
    );
}

#[test]
fn check_lists_every_problem_with_its_key_path() {
    let setup = Setup::bare()
        .server("listen = \"127.0.0.1:18080\"")
        .server("max_body_bytes = 0")
        .admin("lisen = \"127.0.0.1:9\"")
        .storage("session_cache = 0")
        .route(route("a", "/a/*", "http://127.0.0.1:9000"))
        .route(route("b", "/b/*", "htp://x"))
        .route(route("a", "/c/*", "http://127.0.0.1:9000"))
        .route(route("d", "/d/*", "http://127.0.0.1:9000").methods(&["GET", "FETCH"]))
        .route(route("e", "/e/*", "http://127.0.0.1:9000").extra("timeout = \"soon\""));
    let (output, _dir) = check(&setup, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_problems(
        &output,
        &[
            "server.max_body_bytes: must be greater than zero",
            "admin.lisen: unknown key",
            "storage.session_cache: must be at least 1",
            "routes[1].upstream: \"htp://x\" is not an http(s) URL",
            "routes[2].id: \"a\" is already used by another route",
            "routes[3].methods[1]: \"FETCH\" is not an HTTP method",
            "routes[4].timeout: \"soon\" is not a duration",
        ],
    );
}

#[test]
fn check_validates_the_redis_backend_and_never_shows_its_password() {
    let bad = Setup::bare()
        .server("listen = \"127.0.0.1:18080\"")
        .storage("backend = \"redis\"")
        .raw("[storage.redis]\nurl = \"http://u:hunter2-secret@x\"\nkey_prefix = \"{p}\"\ncommand_timeout = \"0s\"\n");
    let (output, _dir) = check(&bad, &[]);
    assert_eq!(output.status.code(), Some(2));
    let said = |output: &Output| {
        format!(
            "{}{}",
            stdout(output),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let first = said(&output);
    for problem in [
        "storage.redis.url: http://u:***@x",
        "storage.redis.key_prefix: must not contain { or }",
        "storage.redis.command_timeout: must be greater than zero",
    ] {
        assert!(
            first.contains(problem),
            "{problem:?} missing from:\n{first}"
        );
    }
    assert!(!first.contains("hunter2-secret"), "{first}");

    let (output, _dir) = check(
        &Setup::bare()
            .storage("backend = \"memcached\"")
            .raw("[storage.redis]\nurl = \"redis://x\"\n"),
        &[],
    );
    assert!(said(&output).contains("storage.backend: \"memcached\" is not a backend"));

    let (output, _dir) = check(
        &Setup::bare().raw("[storage.redis]\nurl = \"redis://x\"\n"),
        &[],
    );
    let expected = "storage.redis: is only read with storage.backend = \"redis\"";
    assert!(said(&output).contains(expected), "{}", said(&output));

    let (output, _dir) = check(
        &Setup::bare().raw("[storage]\nbackend = \"redis\"\n[storage.redis]\nsentinels = 1\n"),
        &[],
    );
    let expected = "storage.redis.sentinels: unknown key";
    assert!(said(&output).contains(expected), "{}", said(&output));

    let good = Setup::bare()
        .server("listen = \"127.0.0.1:18080\"")
        .storage("backend = \"redis\"")
        .raw("[storage.redis]\nurl = \"rediss://portcullis@redis.internal:6380/2\"\n");
    let (output, _dir) = check(
        &good,
        &[("PORTCULLIS_STORAGE__REDIS__PASSWORD", "env-secret-1")],
    );
    assert!(output.status.success(), "{}", stdout(&output));
}

#[test]
fn check_keeps_route_indices_after_a_route_that_fails_to_parse() {
    let setup = Setup::bare()
        .route(route("a", "/a/*", "http://127.0.0.1:9000").extra("timeout = \"soon\""))
        .route(route("b", "/b/*", "htp://x"))
        .route(route("b", "/c/*", "http://127.0.0.1:9000").methods(&["FETCH"]));
    let (output, _dir) = check(&setup, &[]);
    assert_problems(
        &output,
        &[
            "routes[0].timeout: \"soon\" is not a duration",
            "routes[1].upstream: \"htp://x\" is not an http(s) URL",
            "routes[2].id: \"b\" is already used by another route",
            "routes[2].methods[0]: \"FETCH\" is not an HTTP method",
        ],
    );
}

#[test]
fn check_reports_other_problems_in_a_section_with_an_unknown_key() {
    let setup = Setup::bare()
        .server("lisen = \"127.0.0.1:8080\"")
        .server("max_body_bytes = 0");
    let (output, _dir) = check(&setup, &[]);
    assert_problems(
        &output,
        &[
            "server.lisen: unknown key",
            "server.max_body_bytes: must be greater than zero",
        ],
    );
}

#[test]
fn check_rejects_a_zero_size_and_a_bad_duration_in_server() {
    let (output, _dir) = check(&valid().server("max_header_bytes = \"0KiB\""), &[]);
    assert_problems(
        &output,
        &["server.max_header_bytes: must be greater than zero"],
    );
    let (output, _dir) = check(&valid().server("body_timeout = \"fast\""), &[]);
    assert_problems(
        &output,
        &["server.body_timeout: \"fast\" is not a duration"],
    );
}

#[test]
fn environment_overrides_are_validated_under_their_key_path() {
    let (output, _dir) = check(&valid(), &[("PORTCULLIS_SERVER__LISTEN", "nonsense")]);
    assert_problems(
        &output,
        &["server.listen: \"nonsense\" is not a socket address"],
    );
    // A valid override is applied.
    let (output, _dir) = check(&valid(), &[("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:7777")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("proxy on 127.0.0.1:7777"));

    // `serve` refuses the same override before starting anything.
    let exited = Launch::new(Setup::new())
        .env("PORTCULLIS_SERVER__LISTEN", "nonsense")
        .expect_failure();
    assert_eq!(exited.status.code(), Some(2));
    assert!(
        exited
            .stderr
            .contains("server.listen: \"nonsense\" is not a socket address"),
        "{}",
        exited.stderr
    );
}

fn with_staging_profile() -> Setup {
    valid().raw("[profile.staging.server]\nlisten = \"127.0.0.1:28080\"\n")
}

#[test]
fn profile_tables_apply_when_selected() {
    let (output, _dir) = check(&with_staging_profile(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("(prod profile, 2 routes, proxy on 127.0.0.1:18080"),
        "{}",
        stdout(&output)
    );

    let (output, _dir) = check(
        &with_staging_profile(),
        &[("PORTCULLIS_PROFILE", "staging")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("(staging profile, 2 routes, proxy on 127.0.0.1:28080"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn a_running_gateway_uses_the_selected_profile() {
    let echo = crate::common::Echo::start();
    let setup = Setup::new()
        .route(route("echo", "/p/*", &echo.url()))
        .raw("[profile.staging.server]\nmax_header_bytes = \"2KiB\"\n");
    let big = "x".repeat(3000);

    let prod = Launch::new(setup.clone()).start();
    let response = crate::common::client()
        .get(prod.url("/p/x"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let staging = Launch::new(setup)
        .env("PORTCULLIS_PROFILE", "staging")
        .start();
    staging.wait_for_log(
        |v| v["msg"] == "portcullis started" && v["profile"] == "staging",
        crate::common::SOON,
    );
    let response = crate::common::client()
        .get(staging.url("/p/x"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
}

#[test]
fn unknown_profiles_are_rejected() {
    let (output, _dir) = check(&valid(), &[("PORTCULLIS_PROFILE", "qa")]);
    assert_eq!(output.status.code(), Some(2));
    assert_problems(
        &output,
        &["PORTCULLIS_PROFILE: \"qa\" is not one of dev, staging, prod"],
    );

    let (output, _dir) = check(
        &valid().raw("[profile.qa.server]\nlisten = \"127.0.0.1:1\"\n"),
        &[],
    );
    assert_problems(&output, &["profile.qa: unknown profile"]);
}

#[test]
fn check_on_a_missing_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let output = check_file(&path, &[]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("missing.toml"), "{text}");
    assert!(
        text.contains("cannot read the configuration file"),
        "{text}"
    );
    assert!(stdout(&output).is_empty());
}

#[tokio::test]
async fn serve_without_config_runs_the_embedded_default() {
    let launch = Launch::embedded();
    let data = launch.dir().join("portcullis-data");
    assert!(!data.exists());
    let gateway = launch.start();
    gateway.wait_for_log(
        |v| v["msg"] == "portcullis started" && v["profile"] == "dev" && v["routes"] == 0,
        crate::common::SOON,
    );
    let (status, body) = get_json(&gateway.url("/anything")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    assert!(data.is_dir(), "./portcullis-data was not created");
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.toml");
    let output = check_file(&path, &[]);
    assert!(
        output.status.success(),
        "config/portcullis.toml failed check:\n{}",
        stderr(&output)
    );
    assert!(stdout(&output).contains(": valid ("), "{}", stdout(&output));
}
