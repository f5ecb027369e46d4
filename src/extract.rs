//! Input extraction that answers in problem+json: a JSON body extractor with a size limit and
//! field paths in its errors, error handlers for path and query parsing, and a middleware that
//! turns the framework's own plain-text errors (unknown route, wrong method, …) into problems.

use actix_web::dev::{Payload, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::{
    ApiError, ApiResult, ErrorCode, FHIR_CONTENT_TYPE, FieldError, PROBLEM_CONTENT_TYPE, problem_response,
};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON request body, deserialised with the path of any offending field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

fn is_json_content_type(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json_content_type(req);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
            let body = read_limited(declared_len, &mut payload).await?;
            parse_json(&body).map(JsonBody)
        })
    }
}

/// The whole body, refused with 413 past [`MAX_BODY_BYTES`] whether `Content-Length` declares
/// it or a chunked body only reveals it while being read.
pub async fn read_limited(declared_len: Option<usize>, payload: &mut Payload) -> ApiResult<web::Bytes> {
    if declared_len.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("the request body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Deserialise with field paths; syntax errors and type errors get distinct codes.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut value: serde_json::Value = serde::Deserialize::deserialize(&mut de).map_err(|err| {
        if err.classify() == serde_json::error::Category::Eof && body.iter().all(u8::is_ascii_whitespace) {
            ApiError::new(
                ErrorCode::MalformedJson,
                "the request body is empty; a JSON object is required",
            )
        } else {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("the request body is not valid JSON: {err}"),
            )
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("trailing data after the JSON value: {e}"),
        )
    })?;
    // Every body is an object. serde would also read a struct from an array (fields by
    // position, defaults for the rest), so `[]` would pass as an empty PATCH.
    if !value.is_object() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    if let Some(field) = nul_at(&value, "") {
        return Err(nul_refused(if field.is_empty() { "the body" } else { &field }));
    }
    integral_numbers_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        ApiError::validation(vec![FieldError {
            field: if path == "." { "body".to_owned() } else { path },
            message: strip_position(&err.into_inner().to_string()),
        }])
    })
}

/// JSON does not distinguish `7.0` from `7` (JSON Schema calls both integers), but serde does:
/// whole numbers written with a fraction become integers so that integer fields accept them.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                // 2^63 and 2^64 are exact in f64; beyond them the float stays a float.
                const I64_END: f64 = 9_223_372_036_854_775_808.0;
                const U64_END: f64 = 2.0 * I64_END;
                if (-I64_END..I64_END).contains(&f) {
                    *n = serde_json::Number::from(f as i64);
                } else if (0.0..U64_END).contains(&f) {
                    *n = serde_json::Number::from(f as u64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// serde_json appends " at line 1 column 42" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// NUL has no use in this API and PostgreSQL text cannot hold it (a 500 there): a path or query
/// string that encodes one is refused at the door. Bodies are checked in `parse_json`.
pub async fn refuse_nul(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let encodes_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    if encodes_nul(req.uri().path()) {
        return Err(nul_refused("the URL path").into());
    }
    if req.uri().query().is_some_and(encodes_nul) {
        return Err(nul_refused("the query string").into());
    }
    next.call(req).await
}

/// Well-formed, but not storable: 422 `nul_character` naming where it was.
fn nul_refused(place: &str) -> ApiError {
    ApiError::refused(
        ErrorCode::NulCharacter,
        format!("{place} contains a NUL character, which cannot be stored"),
        Vec::new(),
    )
}

/// The JSON path of the first string (or key) holding a NUL character.
fn nul_at(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') { Some(here) } else { nul_at(v, &here) }
        }),
        _ => None,
    }
}

/// `web::PathConfig` that answers 400 `invalid_path`.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        ApiError::new(ErrorCode::InvalidPath, format!("the URL path is invalid: {err}")).into()
    })
}

/// `web::QueryConfig` that answers 400 `invalid_query`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::new(ErrorCode::InvalidQuery, format!("the query string is invalid: {err}")).into()
    })
}

/// `web::JsonConfig` for any handler that uses actix's own `web::Json`.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as J;
            match err {
                J::OverflowKnownLength { .. } | J::Overflow { .. } => too_large().into(),
                J::ContentType => {
                    ApiError::new(ErrorCode::UnsupportedMediaType, "the request body must be JSON").into()
                }
                other => ApiError::new(ErrorCode::MalformedJson, other.to_string()).into(),
            }
        })
}

/// Middleware hook for every 4xx/5xx: responses that are not problem+json already (the
/// framework's 404, 405, 413, …) are replaced by one. 5xx bodies stay generic. A FHIR
/// OperationOutcome (`/fhir/R5`, which shapes its own errors) and a console page (HTML) are left
/// as they are.
pub fn normalize_error<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_done = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with(PROBLEM_CONTENT_TYPE) || v.starts_with(FHIR_CONTENT_TYPE) || v.starts_with("text/html")
        });
    if is_done {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let error = framework_error(status, res.request().method().as_str(), res.request().path());
    let mut problem = error.problem();
    // Keep the framework's status (e.g. 408, 431) even where the kind maps differently.
    problem.status = status.as_u16();
    problem.title = status.canonical_reason().unwrap_or("Error").to_owned();
    let retry_after = res
        .response()
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut new_response = problem_response(status, &problem, retry_after);
    if let Some(allow) = res.response().headers().get(header::ALLOW).cloned() {
        new_response.headers_mut().insert(header::ALLOW, allow);
    }
    let (req, _old) = res.into_parts();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new_response).map_into_right_body::<B>(),
    ))
}

/// The error a framework response with `status` (and no body of ours) stands for.
pub fn framework_error(status: StatusCode, method: &str, path: &str) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, format!("no resource at {path}")),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed on {path}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(ErrorCode::UnsupportedMediaType, "unsupported media type"),
        s if s.is_server_error() => ApiError::new(ErrorCode::InternalError, "an internal error occurred"),
        _ => ApiError::new(ErrorCode::BadRequest, "the request could not be understood"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[test]
    fn reports_the_path_of_a_wrong_type() {
        let err = parse_json::<Outer>(br#"{"name":"x","inner":{"n":"seven"}}"#).expect_err("wrong type");
        assert_eq!(err.code(), ErrorCode::ValidationFailed);
        let p = err.problem();
        assert_eq!(p.errors[0].field, "inner.n");
        assert!(!p.errors[0].message.contains("line"));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_syntax() {
        let err = parse_json::<Outer>(br#"{"name":"x","inner":{"n":1},"extra":1}"#).expect_err("unknown");
        assert_eq!(err.code(), ErrorCode::ValidationFailed);
        assert!(err.problem().errors[0].message.contains("unknown field"));
        let err = parse_json::<Outer>(br#"{"name":"#).expect_err("eof");
        assert_eq!(err.code(), ErrorCode::MalformedJson);
        let err = parse_json::<Outer>(b"").expect_err("empty");
        assert_eq!(err.code(), ErrorCode::MalformedJson);
        let err = parse_json::<Outer>(br#"{"name":"x","inner":{"n":1}} trailing"#).expect_err("trailing");
        assert_eq!(err.code(), ErrorCode::MalformedJson);
        let err = parse_json::<Outer>(br#"{"name":"x","inner":{"n":1.5}}"#).expect_err("float");
        assert_eq!(err.code(), ErrorCode::ValidationFailed);
        let err = parse_json::<Outer>(br#"{"name":"x","inner":{"n":-1.0}}"#).expect_err("negative");
        let err_array = parse_json::<Outer>(br#"["x", {"n": 1}]"#).expect_err("an array");
        assert_eq!(err_array.problem().errors[0].field, "body");
        assert_eq!(err.problem().errors[0].field, "inner.n");
    }

    #[test]
    fn nul_characters_are_refused_with_their_path() {
        let err = parse_json::<Outer>(br#"{"name":"a\u0000b","inner":{"n":1}}"#).expect_err("nul");
        assert_eq!(
            (err.code(), err.problem().detail.starts_with("name ")),
            (ErrorCode::NulCharacter, true)
        );
        let err = parse_json::<serde_json::Value>(br#"{"list":["ok","\u0000"]}"#).expect_err("nul");
        assert!(err.problem().detail.starts_with("list[1] "), "{}", err.problem().detail);
    }

    #[test]
    fn whole_numbers_with_a_fraction_are_integers() {
        let parsed = parse_json::<Outer>(br#"{"name":"x","inner":{"n":7.0}}"#).expect("7.0 is 7");
        assert_eq!(parsed.inner.n, 7);
        let mut v = serde_json::json!([1e300, 2.5, {"a": -3.0}]);
        integral_numbers_as_integers(&mut v);
        assert_eq!(v, serde_json::json!([1e300, 2.5, {"a": -3}]));
    }
}
