//! Every response the gateway makes itself, and the one place that turns an
//! error into its HTTP status and JSON body.

use std::time::SystemTime;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

/// An error the gateway answers itself instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no route matches this path")]
    NotFound,
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
    #[error("the upstream service did not answer in time")]
    GatewayTimeout,
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
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::HeaderTooLarge => "header_too_large",
            GatewayError::BodyTimeout => "request_timeout",
            GatewayError::Internal => "internal_error",
            GatewayError::BadGateway(_) => "bad_gateway",
            GatewayError::ServiceUnavailable => "service_unavailable",
            GatewayError::GatewayTimeout => "gateway_timeout",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            GatewayError::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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
        }
        let body = Body {
            error: self.code(),
            message: self.to_string(),
            correlation_id: request_id,
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        };
        let mut response = HttpResponse::build(self.status());
        response.content_type("application/json");
        if let GatewayError::MethodNotAllowed { allow } = self {
            if let Ok(value) = HeaderValue::from_str(allow) {
                response.insert_header((header::ALLOW, value));
            }
        }
        if matches!(
            self,
            GatewayError::BodyTimeout | GatewayError::PayloadTooLarge
        ) {
            // The rest of the body is unread; the connection cannot be reused.
            response.insert_header((header::CONNECTION, "close"));
        }
        response.body(serde_json::to_string(&body).unwrap_or_default())
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
