//! The browser console: the files of `web-admin/`, compiled into the binary
//! (so running it needs nothing else), served under `/admin/`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::guard;
use crate::error::GatewayError;
use crate::state::AppState;

#[derive(rust_embed::Embed)]
#[folder = "web-admin/"]
struct Assets;

/// Registers `/admin/*` and the redirects to it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(to_console))
        .route("/admin", web::get().to(to_console))
        .route("/admin/{path:.*}", web::get().to(asset));
}

async fn to_console() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/admin/"))
        .finish()
}

/// One embedded file, `index.html` for the directory itself.
async fn asset(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    guard::check_host(&req, &state)?;
    let path = match path.as_str() {
        "" => "index.html",
        other => other,
    };
    let file = Assets::get(path).ok_or(GatewayError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(file.metadata.mimetype())
        // Revalidated on every load, so an upgrade is seen at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(file.data.into_owned()))
}

/// Every embedded file's path, for tests.
pub fn asset_paths() -> Vec<String> {
    Assets::iter().map(|p| p.into_owned()).collect()
}
