use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{report_invalid, run_accounts, run_storage, Accounts, Cli, Command};
use portcullis::config::{self, ConfigSource};

// musl's allocator takes one lock for every allocation, which the workers
// then queue on; the static build uses mimalloc instead.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => {
            serve(config.map_or(ConfigSource::Embedded, ConfigSource::File))
        }
        Command::Check { config } => check(config),
        Command::User { storage, command } => run_accounts(storage.config, Accounts::User(command)),
        Command::Session { storage, command } => {
            run_accounts(storage.config, Accounts::Session(command))
        }
        Command::Storage { storage, command } => run_storage(storage.config, command),
        Command::Manual { dir } => manual(&dir),
    }
}

/// The man pages, from the same definitions as `--help`.
fn manual(dir: &std::path::Path) -> ExitCode {
    match portcullis::cli::manual::write(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "portcullis: cannot write the man pages to {}: {err}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn serve(source: ConfigSource) -> ExitCode {
    tune_malloc();
    let config = match config::load(&source) {
        Ok(config) => config,
        Err(errors) => return report_invalid(&source, &errors),
    };
    match actix_web::rt::System::new().block_on(portcullis::app::run(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("portcullis: cannot start: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Two glibc allocator settings, each with an explicit environment
/// variable still winning:
/// - glibc gives each thread that allocates its own memory pool, up to
///   eight per core, and memory freed into one pool is not reused by
///   another. The gateway's threads (workers, the database's, the background
///   round) all touch the same session and database pages, so with a
///   million sessions that spread added tens of MiB; two pools keep memory
///   close to what is in use (`MALLOC_ARENA_MAX`).
/// - Blocks of 1 MiB and more are mapped on their own and returned to the
///   system when freed. glibc otherwise raises this threshold after the
///   first big free, and each password check's 19 MiB then came from the
///   pools, fragmented them and stayed: 150 logins left 400 MiB resident
///   (`MALLOC_MMAP_THRESHOLD_`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters; it runs before the
    // gateway starts any thread.
    unsafe {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn check(path: std::path::PathBuf) -> ExitCode {
    let source = ConfigSource::File(path.clone());
    let config = match config::check(&path) {
        Ok(config) => config,
        Err(errors) => return report_invalid(&source, &errors),
    };
    if let Some(tls) = &config.server.tls {
        if let Err(err) = portcullis::app::load_server_tls(tls) {
            return report_invalid(&source, &[err]);
        }
    }
    println!(
        "{}: valid ({} profile, {} route{}, proxy on {}, admin on {})",
        path.display(),
        config.profile.name(),
        config.routes.len(),
        if config.routes.len() == 1 { "" } else { "s" },
        config.server.listen,
        config.admin.listen,
    );
    ExitCode::SUCCESS
}
