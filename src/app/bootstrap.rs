//! First start: with no enabled user holding `admin.role`, the gateway
//! creates one, so the console can be reached without a shell. Its random
//! password is written once to `<storage.path>/initial-admin-password`
//! (mode 0600) before the user exists, and only the file's path is logged;
//! the console asks for a new password at the first login and then deletes
//! the file.

use std::io::Write as _;

use base64::Engine as _;
use rand::RngCore as _;
use slog::info;

use super::StartupError;
use crate::admin::api::INITIAL_PASSWORD_FILE;
use crate::auth::AccountError;
use crate::state::AppState;

/// Creates the first admin when nobody can administer the gateway.
pub async fn first_admin(state: &AppState) -> Result<(), StartupError> {
    let runtime = state.runtime.load_full();
    let config = &runtime.config;
    let role = &config.admin.role;
    if state.auth.anyone_holds(role) {
        return Ok(());
    }
    let name = std::iter::once("admin".to_owned())
        .chain((2..).map(|n| format!("admin{n}")))
        .find(|name| state.auth.find_user(name).is_none())
        .expect("an unused name");
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let path = config.storage.path.join(INITIAL_PASSWORD_FILE);
    write_secret(&path, &password)
        .map_err(|err| StartupError::Bootstrap(format!("{}: {err}", path.display())))?;
    match state.auth.add_first_admin(&name, password, role).await {
        Ok(_) => {}
        Err(AccountError::UserExists(_)) => {
            // Another node sharing the store created it first: its password
            // file is on that node.
            let _ = std::fs::remove_file(&path);
            state
                .auth
                .reload_users()
                .map_err(|err| StartupError::Bootstrap(err.to_string()))?;
            info!(state.logging.logger, "first start: another node sharing the store created the first admin; its password file is on that node";
                "user" => name);
            return Ok(());
        }
        Err(err) => return Err(StartupError::Bootstrap(err.to_string())),
    }
    info!(state.logging.logger, "first start: created an admin user; its password is in the file named here, and the console asks for a new one at the first login";
        "user" => name, "role" => role, "password_file" => path.display().to_string());
    Ok(())
}

/// Writes `secret` to a file only its owner can read, durably.
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through open: set it again.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()
}
