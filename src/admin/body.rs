//! Request bodies of the admin API, read under the same rules as every
//! body the gateway reads itself: a small size limit and no pause longer
//! than `server.body_timeout`, so a slow client cannot hold a request open.

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::GatewayError;
use crate::proxy::read_body;
use crate::state::AppState;

/// Largest admin API body accepted.
pub const BODY_LIMIT: u64 = 64 * 1024;

/// A JSON request body (`Content-Type: application/json`).
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = GatewayError;
    type Future = LocalBoxFuture<'static, Result<Self, GatewayError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = web::Payload::from_request(&req, payload).into_inner();
        Box::pin(async move {
            let json = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase()
                })
                .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
            if !json {
                return Err(GatewayError::BadRequest(
                    "the body must be JSON (Content-Type: application/json)".into(),
                ));
            }
            let timeout = req
                .app_data::<web::Data<AppState>>()
                .map(|state| state.runtime.load().config.server.body_timeout)
                .ok_or(GatewayError::Internal)?;
            let payload = payload.map_err(|_| GatewayError::Internal)?;
            let bytes = read_body(&req, payload, BODY_LIMIT, timeout).await?;
            serde_json::from_slice(&bytes)
                .map(Json)
                .map_err(|err| GatewayError::BadRequest(format!("invalid JSON body: {err}").into()))
        })
    }
}
