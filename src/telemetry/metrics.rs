//! Prometheus metrics, all prefixed `portcullis_`. Labels use the route id,
//! never the raw path, so cardinality stays bounded by the configuration.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the gateway exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub in_flight: IntGauge,
    pub log_dropped: IntCounter,
    pub recent_log_skipped: IntCounter,
    pub config_reloads: IntCounterVec,
    pub auth_outcomes: IntCounterVec,
    pub logins: IntCounterVec,
    pub sessions_active: IntGauge,
    pub rate_limit_decisions: IntCounterVec,
    pub counter_keys: IntGaugeVec,
    counter_evictions: IntCounterVec,
    pub token_reuse: IntCounter,
    pub connections_open: IntGaugeVec,
    pub connections_refused: IntCounterVec,
    pub head_timeouts: IntCounterVec,
    pub password_verifications: IntCounter,
    pub upstream_target_requests: IntCounterVec,
    pub upstream_target_failures: IntCounterVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_target_healthy: IntGaugeVec,
    pub upstream_panic: IntGaugeVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_refused: IntCounterVec,
    pub upstream_breaker_open: IntGaugeVec,
    pub tunnels_open: IntGauge,
    pub tunnels_closed: IntCounterVec,
    pub redis_up: IntGauge,
    pub redis_errors: IntCounterVec,
    pub redis_call_duration: HistogramVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("portcullis".into()), None).expect("a fixed, valid prefix");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests handled, by route, method and status class",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request received until the response body was sent, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "upstream_duration_seconds",
                "Time waiting for the upstream's response headers, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "upstream_errors_total",
                "Failed upstream exchanges, by route and kind",
            ),
            &["route", "kind"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("requests_in_flight", "Requests being handled right now")
            .expect("valid metric");
        let log_dropped = IntCounter::new(
            "log_dropped_total",
            "Log records dropped because the log channel was full",
        )
        .expect("valid metric");
        let recent_log_skipped = IntCounter::new(
            "recent_log_skipped_total",
            "Access records left out of the console's live log because a worker's staging buffer was full",
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new("config_reloads_total", "Configuration reloads, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let auth_outcomes = IntCounterVec::new(
            Opts::new(
                "auth_outcomes_total",
                "Authentication outcomes on the proxy listener, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let logins = IntCounterVec::new(
            Opts::new("logins_total", "Login attempts, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let sessions_active =
            IntGauge::new("sessions_active", "Live (unexpired, unrevoked) sessions")
                .expect("valid metric");
        let rate_limit_decisions = IntCounterVec::new(
            Opts::new(
                "rate_limit_decisions_total",
                "Rate-limit decisions, by policy and outcome (allowed, limited, error)",
            ),
            &["policy", "outcome"],
        )
        .expect("valid metric");
        let counter_keys = IntGaugeVec::new(
            Opts::new(
                "counter_keys",
                "Keys held in memory by each counter store (rate_limit, login_throttle)",
            ),
            &["store"],
        )
        .expect("valid metric");
        let counter_evictions = IntCounterVec::new(
            Opts::new(
                "counter_evictions_total",
                "Keys evicted from a full counter store to make room for new ones",
            ),
            &["store"],
        )
        .expect("valid metric");
        let token_reuse = IntCounter::new(
            "token_reuse_total",
            "Rotated-out session tokens presented again (each revokes its session)",
        )
        .expect("valid metric");
        let connections_open = IntGaugeVec::new(
            Opts::new("connections_open", "Client connections open, by listener"),
            &["listener"],
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "connections_refused_total",
                "Client connections closed at once because server.max_connections were open, by listener",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let head_timeouts = IntCounterVec::new(
            Opts::new(
                "head_timeouts_total",
                "Connections closed because a request head did not arrive within server.header_timeout, by listener",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let password_verifications = IntCounter::new(
            "password_verifications_total",
            "Passwords checked with argon2 (logins that got as far as hashing)",
        )
        .expect("valid metric");
        let upstream_target_requests = IntCounterVec::new(
            Opts::new(
                "upstream_target_requests_total",
                "Requests sent to each target of an upstream service (every try)",
            ),
            &["service", "target"],
        )
        .expect("valid metric");
        let upstream_target_failures = IntCounterVec::new(
            Opts::new(
                "upstream_target_failures_total",
                "Tries that failed on each target: connect errors, timeouts, 502, 503 and 504",
            ),
            &["service", "target"],
        )
        .expect("valid metric");
        let upstream_ejections = IntCounterVec::new(
            Opts::new(
                "upstream_ejections_total",
                "Times each target was ejected after failed requests",
            ),
            &["service", "target"],
        )
        .expect("valid metric");
        let upstream_target_healthy = IntGaugeVec::new(
            Opts::new(
                "upstream_target_healthy",
                "1 when a target takes requests (up, not ejected, not failing its checks), else 0",
            ),
            &["service", "target"],
        )
        .expect("valid metric");
        let upstream_panic = IntGaugeVec::new(
            Opts::new(
                "upstream_panic",
                "1 while a service spreads requests over all its targets because too few are healthy",
            ),
            &["service"],
        )
        .expect("valid metric");
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "upstream_retries_total",
                "Retries sent to an upstream service",
            ),
            &["service"],
        )
        .expect("valid metric");
        let upstream_refused = IntCounterVec::new(
            Opts::new(
                "upstream_refused_total",
                "Requests a service refused before choosing a target: overloaded (max_in_flight and max_pending) or circuit_open",
            ),
            &["service", "reason"],
        )
        .expect("valid metric");
        let upstream_breaker_open = IntGaugeVec::new(
            Opts::new(
                "upstream_breaker_open",
                "1 while a service's circuit breaker is open or half-open",
            ),
            &["service"],
        )
        .expect("valid metric");
        let tunnels_open =
            IntGauge::new("tunnels_open", "WebSocket tunnels open now").expect("valid metric");
        let tunnels_closed = IntCounterVec::new(
            Opts::new(
                "tunnels_closed_total",
                "WebSocket tunnels closed, by who or what ended them: client, upstream, idle, session, shutdown",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let redis_up = IntGauge::new(
            "redis_up",
            "1 while the shared Redis answers (storage.backend = \"redis\"), else 0",
        )
        .expect("valid metric");
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "redis_errors_total",
                "Redis calls that failed or timed out, by what they were for",
            ),
            &["call"],
        )
        .expect("valid metric");
        let redis_call_duration = HistogramVec::new(
            HistogramOpts::new(
                "redis_call_duration_seconds",
                "Round trips to the shared Redis, by what they were for",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
            &["call"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(log_dropped.clone()),
            Box::new(recent_log_skipped.clone()),
            Box::new(config_reloads.clone()),
            Box::new(auth_outcomes.clone()),
            Box::new(logins.clone()),
            Box::new(sessions_active.clone()),
            Box::new(rate_limit_decisions.clone()),
            Box::new(counter_keys.clone()),
            Box::new(counter_evictions.clone()),
            Box::new(token_reuse.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(head_timeouts.clone()),
            Box::new(password_verifications.clone()),
            Box::new(upstream_target_requests.clone()),
            Box::new(upstream_target_failures.clone()),
            Box::new(upstream_ejections.clone()),
            Box::new(upstream_target_healthy.clone()),
            Box::new(upstream_panic.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(upstream_refused.clone()),
            Box::new(upstream_breaker_open.clone()),
            Box::new(tunnels_open.clone()),
            Box::new(tunnels_closed.clone()),
            Box::new(redis_up.clone()),
            Box::new(redis_errors.clone()),
            Box::new(redis_call_duration.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            in_flight,
            log_dropped,
            recent_log_skipped,
            config_reloads,
            auth_outcomes,
            logins,
            sessions_active,
            rate_limit_decisions,
            counter_keys,
            counter_evictions,
            token_reuse,
            connections_open,
            connections_refused,
            head_timeouts,
            password_verifications,
            upstream_target_requests,
            upstream_target_failures,
            upstream_ejections,
            upstream_target_healthy,
            upstream_panic,
            upstream_retries,
            upstream_refused,
            upstream_breaker_open,
            tunnels_open,
            tunnels_closed,
            redis_up,
            redis_errors,
            redis_call_duration,
        }
    }

    /// The eviction counter of one counter store (`rate_limit`, `login_throttle`).
    pub fn counter_evictions(&self, store: &str) -> IntCounter {
        self.counter_evictions.with_label_values(&[store])
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight_guard(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `200` → `"2xx"`: status classes keep the label set small.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Known methods keep their name; anything else is `OTHER`, so a client
/// cannot inflate label cardinality with invented methods.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Decrements `portcullis_requests_in_flight` when the request is done.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
