//! `portcullis user ...` and `portcullis session ...`: offline management
//! against the storage directory, through the same code the gateway uses.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{SessionCommand, UserCommand};
use crate::auth::{rfc3339, AccountError, Auth, Origin};
use crate::config::Config;
use crate::storage::{Storage, StorageError};
use crate::telemetry::Metrics;

/// What to do: a user or a session command.
pub enum Accounts {
    User(UserCommand),
    Session(SessionCommand),
}

/// Runs an account command; prints its outcome and returns the exit code.
pub fn run(config_path: Option<PathBuf>, command: Accounts) -> ExitCode {
    let config = match super::load_config(config_path) {
        Ok((config, _)) => config,
        Err(code) => return code,
    };
    let metrics = Metrics::new();
    let quiet = slog::Logger::root(slog::Discard, slog::o!());
    let storage = match Storage::open_with_backend(&config.storage, &metrics, &quiet) {
        Ok(storage) => storage,
        Err(StorageError::Locked { path }) => {
            eprintln!(
                "portcullis: the database at {path} is in use by a running gateway.\n\
                 Stop the gateway first, or act on the live gateway through its admin API \
                 (http://{}/admin/api/users and /admin/api/sessions, with \"Authorization: Bearer <admin.token>\").",
                config.admin.listen
            );
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("portcullis: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = actix_web::rt::System::new().block_on(async {
        let auth = Auth::open(&storage, &config, &metrics)?;
        match command {
            Accounts::User(command) => user(&auth, &config, command).await,
            Accounts::Session(command) => session(&auth, &config, command).await,
        }
    });
    let _ = storage.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("portcullis: {err}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error("{0}")]
    Storage(#[from] sled::Error),
    #[error("{0}")]
    Usage(String),
}

async fn user(auth: &Auth, config: &Config, command: UserCommand) -> Result<(), CommandError> {
    let min = config.login.min_password_length;
    match command {
        UserCommand::Add {
            name,
            roles,
            permissions,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            auth.add_user(&name, password, roles, permissions, min)
                .await?;
            println!("user {name} added");
        }
        UserCommand::List => {
            println!(
                "{:<24} {:<24} {:<32} STATUS",
                "USERNAME", "ROLES", "PERMISSIONS"
            );
            for user in auth.users() {
                println!(
                    "{:<24} {:<24} {:<32} {}",
                    user.name,
                    user.roles.join(","),
                    user.permissions.join(","),
                    if user.disabled { "disabled" } else { "active" }
                );
            }
        }
        UserCommand::SetPassword {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let revoked = auth.set_password(&name, password, min).await?;
            println!("password of {name} changed; {revoked} session(s) revoked");
        }
        UserCommand::SetRoles { name, roles } => {
            let revoked = auth.set_privileges(&name, Some(roles), None).await?;
            println!("roles of {name} set; {revoked} session(s) revoked");
        }
        UserCommand::SetPermissions { name, permissions } => {
            let revoked = auth.set_privileges(&name, None, Some(permissions)).await?;
            println!("permissions of {name} set; {revoked} session(s) revoked");
        }
        UserCommand::Disable { name } => {
            let revoked = auth.set_disabled(&name, true).await?;
            println!("user {name} disabled; {revoked} session(s) revoked");
        }
        UserCommand::Enable { name } => {
            auth.set_disabled(&name, false).await?;
            println!("user {name} enabled");
        }
        UserCommand::Delete { name } => {
            let revoked = auth.delete_user(&name).await?;
            println!("user {name} deleted; {revoked} session(s) revoked");
        }
    }
    Ok(())
}

async fn session(
    auth: &Auth,
    config: &Config,
    command: SessionCommand,
) -> Result<(), CommandError> {
    match command {
        SessionCommand::Issue { user, ttl } => {
            let ttl = match ttl {
                None => config.session.max_lifetime,
                Some(text) => crate::admin::api::parse_ttl(&text)
                    .map_err(|problem| CommandError::Usage(format!("--ttl: {problem}")))?,
            };
            let origin = Origin::new(None, Some("portcullis session issue (command line)"));
            let issued = auth.issue_for(&user, ttl, origin).await?;
            let out = serde_json::json!({
                "id": &*issued.session.id,
                "token": issued.token,
                "cookie_name": config.session.cookie_name,
                "expires_at": rfc3339(issued.session.expires_at),
            });
            println!("{out}");
        }
        SessionCommand::List { user } => {
            println!(
                "{:<34} {:<20} {:<26} {:<26} STATE",
                "ID", "USER", "LAST SEEN", "EXPIRES"
            );
            for s in auth.sessions(user.as_deref())? {
                let state = if s.revoked_at().is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!(
                    "{:<34} {:<20} {:<26} {:<26} {state}",
                    s.id,
                    s.user,
                    rfc3339(s.last_seen()),
                    rfc3339(s.expires_at)
                );
            }
        }
        SessionCommand::Revoke { id: Some(id), .. } => {
            if !auth.revoke(&id).await? {
                return Err(AccountError::NoSuchSession(id).into());
            }
            println!("session {id} revoked");
        }
        SessionCommand::Revoke {
            user: Some(user), ..
        } => {
            let revoked = auth.revoke_user(&user).await?;
            println!("{revoked} session(s) of {user} revoked");
        }
        SessionCommand::Revoke { .. } => {
            return Err(CommandError::Usage("give a session id or --user".into()))
        }
    }
    Ok(())
}

/// The new password: from stdin with --password-stdin, else prompted for
/// twice without echo on a terminal.
fn read_password(from_stdin: bool) -> Result<String, CommandError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CommandError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::Usage(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
                .into(),
        ));
    }
    let first =
        rpassword::prompt_password("Password: ").map_err(|e| CommandError::Usage(e.to_string()))?;
    let second = rpassword::prompt_password("Repeat password: ")
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    if first != second {
        return Err(CommandError::Usage("the passwords do not match".into()));
    }
    Ok(first)
}
