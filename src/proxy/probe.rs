//! Test requests the admin console sends through the proxy listener ("send
//! a test request" on a route). They carry a per-process secret in a
//! header; for them alone the proxy keeps the headers it sent upstream, so
//! the console can show what the upstream received. The header never
//! reaches an upstream, and without the secret it means nothing.

use std::collections::VecDeque;
use std::sync::Mutex;

use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::HttpRequest;
use base64::Engine as _;
use rand::RngCore as _;
use subtle::ConstantTimeEq;

/// The header a test request carries the secret in.
pub const PROBE_HEADER: HeaderName = HeaderName::from_static("x-portcullis-probe");

/// How many test requests' headers are kept for their caller to collect.
const KEPT: usize = 16;

/// Headers as sent upstream: name and value, in order.
pub type SentHeaders = Vec<(String, String)>;

/// The secret, and the headers sent upstream for the latest test requests.
pub struct Probes {
    secret: String,
    sent: Mutex<VecDeque<(String, SentHeaders)>>,
}

impl Default for Probes {
    fn default() -> Self {
        let mut bytes = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Probes {
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            sent: Mutex::new(VecDeque::with_capacity(KEPT)),
        }
    }
}

impl Probes {
    /// The value a test request sends in [`PROBE_HEADER`].
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `req` is a test request of this process.
    pub fn is_probe(&self, req: &HttpRequest) -> bool {
        req.headers()
            .get(PROBE_HEADER)
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(self.secret.as_bytes())))
    }

    /// Keeps what was sent upstream for the test request `request_id`.
    pub fn record(&self, request_id: &str, headers: &HeaderMap) {
        let sent = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut kept = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((request_id.to_owned(), sent));
    }

    /// What was sent upstream for the test request `request_id`, once.
    pub fn take(&self, request_id: &str) -> Option<SentHeaders> {
        let mut kept = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let at = kept.iter().position(|(id, _)| id == request_id)?;
        kept.remove(at).map(|(_, sent)| sent)
    }
}
