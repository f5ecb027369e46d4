//! Logging with tracing. Each request runs in a span with its method, route, path and status;
//! a refused request logs one line with its status and problem code. Never bodies, query
//! strings, passwords or tokens, nor a refusal's detail (some name what the client sent, e.g.
//! an MRN).

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::error::ApiError;

/// Install the global subscriber. `filter` is an `EnvFilter` directive such as `info`.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// The root span of every request (replaces tracing-actix-web's, which records the query
/// string, the client-supplied `X-Forwarded-For` and each refusal's detail).
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.path = %request.path(),
            request_id = %request_id,
            http.status_code = tracing::field::Empty,
            problem = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, actix_web::Error>) {
        let (status, error) = match outcome {
            Ok(response) => (response.status(), response.response().error()),
            Err(error) => (error.as_response_error().status_code(), Some(error)),
        };
        span.record("http.status_code", status.as_u16());
        let code = error.and_then(|e| e.as_error::<ApiError>()).map(ApiError::code);
        if let Some(code) = code {
            span.record("problem", code.as_str());
        }
        // Granulo's own server errors are logged with their cause where they arise (error.rs).
        if status.is_client_error() {
            span.in_scope(|| {
                tracing::warn!(
                    status = status.as_u16(),
                    code = %code.map_or("", |c| c.as_str()),
                    "request refused"
                )
            });
        } else if status.is_server_error() && code.is_none() {
            span.in_scope(|| tracing::error!(status = status.as_u16(), "request failed"));
        }
    }
}

/// Records every request in `granulo_http_request_duration_seconds` under its route pattern
/// (never its raw path), method and status class. A request refused by a middleware before
/// routing (an `Err`) counts as `unmatched`.
pub async fn record_http(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = crate::metrics::method_label(req.method().as_str());
    let result = next.call(req).await;
    match &result {
        Ok(res) => {
            let route = res.request().match_pattern();
            let route = route.as_deref().unwrap_or(crate::metrics::UNMATCHED);
            crate::metrics::observe_http(route, method, res.status().as_u16(), started.elapsed());
        }
        Err(e) => crate::metrics::observe_http(
            crate::metrics::UNMATCHED,
            method,
            e.as_response_error().status_code().as_u16(),
            started.elapsed(),
        ),
    }
    result
}
