//! The command line: `serve`, `check`, and offline `user` / `session`
//! management against the storage directory.

mod accounts;
pub mod manual;
mod migrate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigError, ConfigSource};
pub use accounts::{run as run_accounts, Accounts};
pub use migrate::run as run_storage;

/// `portcullis --version`: the release and the commit it was built from.
/// Loads the configuration a command names (`--config`, else the embedded
/// default); an invalid one is reported, and its exit code returned.
pub fn load_config(path: Option<PathBuf>) -> Result<(Config, ConfigSource), ExitCode> {
    let source = path.map_or(ConfigSource::Embedded, ConfigSource::File);
    match config::load(&source) {
        Ok(config) => Ok((config, source)),
        Err(errors) => Err(report_invalid(&source, &errors)),
    }
}

/// Prints every configuration problem with its key path; exit code 2.
pub fn report_invalid(source: &ConfigSource, errors: &[ConfigError]) -> ExitCode {
    eprintln!(
        "{source}: {} configuration problem{}:",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for error in errors {
        eprintln!("  {error}");
    }
    ExitCode::from(2)
}

pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PORTCULLIS_COMMIT"),
    ")"
);

/// Portcullis: a single-node API gateway.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version = VERSION,
    about,
    long_about = LONG_ABOUT,
    after_long_help = manual::help_sections(),
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (on the embedded development default without --config).
    Serve {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and list every problem with its key path.
    Check {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage users in the storage directory (while no gateway is running).
    User {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Issue, list and revoke sessions in the storage directory (while no gateway is running).
    Session {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Move users, sessions and API routes between this node's database and
    /// the shared Redis of `[storage.redis]` (while no gateway is running).
    Storage {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Write the man pages (portcullis.1 and one per subcommand) into DIR, for packaging.
    #[command(hide = true)]
    Manual {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

const LONG_ABOUT: &str = "\
Portcullis: a single-node API gateway. One process in front of a team's HTTP \
services: a routing reverse proxy with session-cookie authentication it runs \
itself, rate limits, one JSON access-log line per request, Prometheus \
metrics, and a browser console to manage routes, users and sessions.

`portcullis serve --config FILE` runs it; without --config it runs on an \
embedded development default (proxy on 127.0.0.1:8080, console on \
127.0.0.1:9901, data in ./portcullis-data). `portcullis check` validates a \
configuration and lists every problem with its key path.";

/// Which storage directory to act on.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// The configuration whose `storage.path` to use (default: the embedded default).
    #[arg(long, short, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (the password is prompted for, or read from stdin).
    Add {
        name: String,
        /// A role (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// A permission (repeatable).
        #[arg(long = "permission", value_name = "PERMISSION")]
        permissions: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Change a user's password (revokes their sessions).
    SetPassword {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace a user's roles (revokes their sessions).
    SetRoles { name: String, roles: Vec<String> },
    /// Replace a user's permissions (revokes their sessions).
    SetPermissions {
        name: String,
        permissions: Vec<String>,
    },
    /// Disable a user (revokes their sessions).
    Disable { name: String },
    /// Re-enable a disabled user.
    Enable { name: String },
    /// Delete a user and their sessions.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Issue a session for a user and print its token (shown once).
    Issue {
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. "1h" (default: session.max_lifetime).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List sessions.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one session by id, or every session of --user.
    Revoke {
        /// The session id.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

/// `portcullis storage ...`.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Copy users, sessions (still valid where they land: only token hashes
    /// move) and API routes from one store to the other; a record the
    /// target already holds is kept as it is. The configuration
    /// names both: `storage.path` and `[storage.redis]`, with
    /// `storage.backend = "redis"`. Rate-limit counts and the audit trail
    /// stay where they are.
    Migrate {
        /// Where the records go: `redis` (from this node's database) or
        /// `sled` (from Redis into this node's database).
        #[arg(long, value_enum)]
        to: MigrateTarget,
    },
}

/// Where `storage migrate` copies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateTarget {
    Redis,
    Sled,
}
