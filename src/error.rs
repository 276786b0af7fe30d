//! Every response the gateway makes itself, and the one place that turns an
//! error into its HTTP status and JSON body.

use std::borrow::Cow;
use std::time::SystemTime;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

/// An error the gateway answers itself instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// A request body with problems in named fields (key path, problem),
    /// every one of them listed.
    #[error("the request has {} problem(s); see errors", .0.len())]
    InvalidFields(Vec<FieldError>),
    #[error("no route matches this path")]
    NotFound,
    /// A named resource of the admin API does not exist.
    #[error("{0}")]
    NoSuchResource(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no session cookie was presented")]
    MissingToken,
    #[error("the session token is not valid")]
    InvalidToken,
    #[error("the session has expired")]
    TokenExpired,
    #[error("the session has been revoked")]
    TokenRevoked,
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The admin API's bearer token is missing or wrong.
    #[error("a valid admin token is required")]
    Unauthorized,
    /// Authenticated, but the route's policy denies it. Deliberately vague.
    #[error("access to this resource is not allowed")]
    Forbidden,
    #[error("cross-site request rejected")]
    CsrfRejected,
    /// A console viewer tried to change something.
    #[error("the viewer role can look at everything and change nothing")]
    ReadOnly,
    /// The console user must replace the password generated at first start first.
    #[error("change the initial password first (POST /admin/api/auth/password)")]
    PasswordChangeRequired,
    /// The admin listener was reached under a host name it does not serve.
    #[error("this listener does not answer to that host name (see admin.hosts)")]
    Misdirected,
    /// A browser navigation without a session, sent to the login page.
    #[error("sign in to continue")]
    LoginRequired { location: String },
    /// Over a rate limit (or the login throttle): `limit` requests per `window` seconds.
    #[error("rate limit exceeded; retry later")]
    RateLimited {
        limit: u64,
        window: u64,
        retry_after: u64,
    },
    #[error("this route does not allow the method")]
    MethodNotAllowed { allow: String },
    #[error("the request body is larger than the gateway accepts")]
    PayloadTooLarge,
    #[error("the request headers are larger than the gateway accepts")]
    HeaderTooLarge,
    #[error("the client sent the request body too slowly")]
    BodyTimeout,
    #[error("the gateway failed to handle the request")]
    Internal,
    #[error("the upstream service could not be reached")]
    BadGateway(UpstreamFailure),
    #[error("the service is not available")]
    ServiceUnavailable,
    /// No target of the route's upstream service can take the request.
    #[error("no target of the upstream service is healthy; retry later")]
    NoHealthyUpstream { retry_after: u64 },
    /// The service has its most requests in flight and waiting.
    #[error("the upstream service has too many requests in flight; retry later")]
    UpstreamOverloaded,
    /// The service's circuit breaker is open after too many failures.
    #[error("the upstream service is failing; its circuit breaker is open, retry later")]
    CircuitOpen { retry_after: u64 },
    /// Every password-checking slot stayed busy for the whole wait.
    #[error("the gateway is too busy to check passwords right now; retry shortly")]
    Busy,
    /// Storage refused a write. `applied`: the change holds on this gateway
    /// anyway (revocations, logouts); otherwise nothing was changed.
    #[error("{}", if *applied {
        "done on this gateway, but storage is failing: the change was not saved and is lost if the gateway restarts before storage recovers"
    } else {
        "storage is failing: nothing was changed; retry later"
    })]
    StorageFailed { applied: bool },
    #[error("the upstream service did not answer in time")]
    GatewayTimeout,
}

/// One problem with one field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's key path, as in the configuration file (`methods[1]`).
    pub key: String,
    pub problem: String,
}

/// Why an upstream exchange failed, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Tls,
    Dns,
    Send,
    Response,
}

impl UpstreamFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Dns => "dns",
            UpstreamFailure::Send => "send",
            UpstreamFailure::Response => "response",
        }
    }
}

impl GatewayError {
    /// The stable, machine-readable error code in the JSON body and access log.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) | GatewayError::InvalidFields(_) => "bad_request",
            GatewayError::NotFound | GatewayError::NoSuchResource(_) => "not_found",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::MissingToken => "missing_token",
            GatewayError::InvalidToken => "invalid_token",
            GatewayError::TokenExpired => "token_expired",
            GatewayError::TokenRevoked => "token_revoked",
            GatewayError::InvalidCredentials => "invalid_credentials",
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::Forbidden => "forbidden",
            GatewayError::CsrfRejected => "csrf_rejected",
            GatewayError::ReadOnly => "read_only",
            GatewayError::PasswordChangeRequired => "password_change_required",
            GatewayError::Misdirected => "misdirected_request",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::LoginRequired { .. } => "login_required",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::HeaderTooLarge => "header_too_large",
            GatewayError::BodyTimeout => "request_timeout",
            GatewayError::Internal => "internal_error",
            GatewayError::BadGateway(_) => "bad_gateway",
            GatewayError::ServiceUnavailable => "service_unavailable",
            GatewayError::NoHealthyUpstream { .. } => "no_healthy_upstream",
            GatewayError::UpstreamOverloaded => "upstream_overloaded",
            GatewayError::CircuitOpen { .. } => "circuit_open",
            GatewayError::Busy => "busy",
            GatewayError::StorageFailed { .. } => "storage_unavailable",
            GatewayError::GatewayTimeout => "gateway_timeout",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) | GatewayError::InvalidFields(_) => StatusCode::BAD_REQUEST,
            GatewayError::NotFound | GatewayError::NoSuchResource(_) => StatusCode::NOT_FOUND,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::MissingToken
            | GatewayError::InvalidToken
            | GatewayError::TokenExpired
            | GatewayError::TokenRevoked
            | GatewayError::InvalidCredentials
            | GatewayError::Unauthorized => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden
            | GatewayError::CsrfRejected
            | GatewayError::ReadOnly
            | GatewayError::PasswordChangeRequired => StatusCode::FORBIDDEN,
            GatewayError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::LoginRequired { .. } => StatusCode::FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            GatewayError::ServiceUnavailable
            | GatewayError::NoHealthyUpstream { .. }
            | GatewayError::UpstreamOverloaded
            | GatewayError::CircuitOpen { .. }
            | GatewayError::Busy
            | GatewayError::StorageFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON response: `{"error", "message", "correlation_id", "timestamp"}`.
    pub fn to_response(&self, request_id: &str) -> HttpResponse {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: String,
            correlation_id: &'a str,
            timestamp: String,
            #[serde(flatten)]
            limits: Option<Limits>,
            #[serde(skip_serializing_if = "Option::is_none")]
            errors: Option<&'a [FieldError]>,
        }
        #[derive(Serialize)]
        struct Limits {
            retry_after: u64,
            limit: u64,
            window: u64,
        }
        let limits = match *self {
            GatewayError::RateLimited {
                limit,
                window,
                retry_after,
            } => Some(Limits {
                retry_after,
                limit,
                window,
            }),
            _ => None,
        };
        let body = Body {
            error: self.code(),
            message: self.to_string(),
            correlation_id: request_id,
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            limits,
            errors: match self {
                GatewayError::InvalidFields(errors) => Some(errors),
                _ => None,
            },
        };
        let mut response = HttpResponse::build(self.status());
        response.content_type("application/json");
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    response.insert_header((header::ALLOW, value));
                }
            }
            GatewayError::RateLimited { retry_after, .. }
            | GatewayError::NoHealthyUpstream { retry_after }
            | GatewayError::CircuitOpen { retry_after } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            GatewayError::Busy | GatewayError::UpstreamOverloaded => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            GatewayError::StorageFailed { applied: false } => {
                response.insert_header((header::RETRY_AFTER, "10"));
            }
            GatewayError::LoginRequired { location } => {
                if let Ok(value) = HeaderValue::from_str(location) {
                    response.insert_header((header::LOCATION, value));
                }
            }
            GatewayError::BodyTimeout | GatewayError::PayloadTooLarge => {
                // The rest of the body is unread; the connection cannot be reused.
                response.force_close();
            }
            _ => {}
        }
        if matches!(self.status(), StatusCode::UNAUTHORIZED | StatusCode::FOUND) {
            // Answers that depend on credentials must never be cached.
            response.insert_header((header::CACHE_CONTROL, "no-store"));
        }
        response.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

impl From<crate::proxy::BodyFailure> for GatewayError {
    fn from(failure: crate::proxy::BodyFailure) -> Self {
        match failure {
            crate::proxy::BodyFailure::TooLarge => GatewayError::PayloadTooLarge,
            crate::proxy::BodyFailure::Timeout => GatewayError::BodyTimeout,
            crate::proxy::BodyFailure::Client => {
                GatewayError::BadRequest("the request body was malformed or cut short".into())
            }
        }
    }
}

/// Lets admin handlers use `?`; the response is built by [`GatewayError::to_response`].
impl actix_web::ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.to_response(&crate::pipeline::new_request_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn errors_render_as_json_with_code_and_correlation_id() {
        let response = GatewayError::MethodNotAllowed {
            allow: "GET, PUT".into(),
        }
        .to_response("req-1");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get("allow").unwrap(), "GET, PUT");
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "application/json"
        );
        let bytes = response.into_body().try_into_bytes().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "method_not_allowed");
        assert_eq!(body["correlation_id"], "req-1");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
