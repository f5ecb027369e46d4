//! The Prometheus series this process keeps (HTTP requests, database pool checkouts) and the text
//! exposition of a scrape. Gauges that describe the database (inventory, alerts, the scan) are
//! computed per scrape by `services::metrics` into a registry of their own and encoded with these.
//!
//! The process series are global: one process serves one application (integration tests, which
//! start several in one process, see their sum).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, Opts, Registry, TextEncoder};

pub use prometheus::Registry as ScrapeRegistry;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of a request that matched no route (its raw path is never a label).
pub const UNMATCHED: &str = "unmatched";

struct Process {
    registry: Registry,
    http: HistogramVec,
    pool_wait: Histogram,
    pool_timeouts: IntCounter,
}

fn process() -> Option<&'static Process> {
    static PROCESS: LazyLock<Option<Process>> = LazyLock::new(|| match build() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, "the process metrics could not be registered");
            None
        }
    });
    PROCESS.as_ref()
}

fn build() -> prometheus::Result<Process> {
    let registry = Registry::new();
    let http = HistogramVec::new(
        HistogramOpts::new(
            "granulo_http_request_duration_seconds",
            "HTTP requests by route pattern, method and status class, from arrival to the response head",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["route", "method", "status"],
    )?;
    let pool_wait = Histogram::with_opts(
        HistogramOpts::new(
            "granulo_db_pool_checkout_wait_seconds",
            "Time to check a connection out of the database pool (successful checkouts)",
        )
        .buckets(vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0,
        ]),
    )?;
    let pool_timeouts = IntCounter::with_opts(Opts::new(
        "granulo_db_pool_checkout_timeouts_total",
        "Checkouts that gave up after GRANULO_DB_CHECKOUT_TIMEOUT_MS (the request answered 503)",
    ))?;
    registry.register(Box::new(http.clone()))?;
    registry.register(Box::new(pool_wait.clone()))?;
    registry.register(Box::new(pool_timeouts.clone()))?;
    Ok(Process {
        registry,
        http,
        pool_wait,
        pool_timeouts,
    })
}

/// The `method` label: the standard methods, anything else as `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The `status` label: `2xx` … `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One answered request. `route` is the matched pattern or [`UNMATCHED`].
pub fn observe_http(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    if let Some(p) = process() {
        p.http
            .with_label_values(&[route, method, status_class(status)])
            .observe(elapsed.as_secs_f64());
    }
}

/// One successful pool checkout.
pub fn observe_pool_wait(waited: Duration) {
    if let Some(p) = process() {
        p.pool_wait.observe(waited.as_secs_f64());
    }
}

/// One checkout that timed out.
pub fn count_pool_timeout() {
    if let Some(p) = process() {
        p.pool_timeouts.inc();
    }
}

/// The text exposition of the process series followed by `scrape`'s.
pub fn encode(scrape: &Registry) -> prometheus::Result<String> {
    let mut families = process().map(|p| p.registry.gather()).unwrap_or_default();
    families.extend(scrape.gather());
    let mut out = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&families, &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_closed_sets() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PROPFIND"), "other");
        for (status, class) in [(101, "1xx"), (200, "2xx"), (304, "3xx"), (404, "4xx"), (503, "5xx")] {
            assert_eq!(status_class(status), class);
        }
    }
}
