//! The API's one error type and its wire form, RFC 9457 `application/problem+json`:
//! `type`, `title`, `status`, `detail`, a stable snake_case `code`, and either
//! `errors: [{field, message}]` (bad input) or `reasons: [{code, message}]` (rule refusals).
//!
//! Every code and its status is an [`ErrorCode`] variant. Anything unexpected becomes a
//! generic 500 whose cause goes to the log only; database and pool failures are mapped
//! deliberately (not found → 404, uniqueness → 409, no connection → 503).

use std::fmt;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

mod code;
pub use code::ErrorCode;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// What the FHIR facade answers with, errors included (as an OperationOutcome).
pub const FHIR_CONTENT_TYPE: &str = "application/fhir+json";

/// A field that failed validation.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field in the request (`hla.a[0]`), or the parameter name.
    pub field: String,
    pub message: String,
}

/// Why a rule refused the request.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, PartialEq, Eq)]
pub struct Reason {
    /// Stable snake_case reason code.
    pub code: String,
    pub message: String,
}

/// Problem details (RFC 9457) as sent on every error.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:granulo:problem:incompatible", "title": "Unprocessable Content", "status": 422,
    "detail": "the unit is not compatible with the patient", "code": "incompatible",
    "reasons": [{"code": "abo_incompatible", "message": "donor red cells A are incompatible with recipient plasma O"}]
}))]
pub struct Problem {
    /// URI naming the problem type: `urn:granulo:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable snake_case error code clients can match on.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// An error on its way to becoming a problem+json response (boxed: it travels through
/// every `Result` of the request path).
pub struct ApiError(Box<Inner>);

struct Inner {
    code: ErrorCode,
    detail: String,
    errors: Vec<FieldError>,
    reasons: Vec<Reason>,
    retry_after_secs: Option<u64>,
    source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error answered with `code`'s status; a 503 asks the client to retry in a second.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let retry_after_secs = (code.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        Self(Box::new(Inner {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            reasons: Vec::new(),
            retry_after_secs,
            source: None,
        }))
    }

    /// 400 `validation_failed` listing every bad field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        let mut e = Self::new(ErrorCode::ValidationFailed, detail);
        e.0.errors = errors;
        e
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// 422: a rule refused the request; `reasons` name every failing rule.
    pub fn refused(code: ErrorCode, detail: impl Into<String>, reasons: Vec<Reason>) -> Self {
        let mut e = Self::new(code, detail);
        e.0.reasons = reasons;
        e
    }

    /// An id named in the body (or in a query that refers to a record), not in the path, that
    /// has no record or none the caller may see: 422 `code`, since 404 is for the URL.
    pub fn unknown(code: ErrorCode, what: &str, id: i64) -> Self {
        Self::refused(code, format!("there is no {what} {id}"), Vec::new())
    }

    /// [`ApiError::unknown`] in place of the 404 of a lookup by an id named in the body.
    pub fn or_unknown(self, code: ErrorCode, what: &str, id: i64) -> Self {
        if self.0.code == ErrorCode::NotFound {
            Self::unknown(code, what, id)
        } else {
            self
        }
    }

    /// 422 for text that is not valid ISBT 128, naming the parser's reason.
    pub fn isbt(e: &crate::domain::isbt128::IsbtError, detail: impl Into<String>) -> Self {
        Self::refused(
            ErrorCode::from(e),
            detail,
            vec![Reason {
                code: e.code().to_owned(),
                message: e.to_string(),
            }],
        )
    }

    pub fn too_many_requests(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(ErrorCode::TooManyRequests, detail);
        e.0.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    /// Answer with `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.0.retry_after_secs = Some(secs.max(1));
        self
    }

    /// Any 429: `code` with `Retry-After` in seconds.
    pub fn retry_after(code: ErrorCode, detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(code, detail);
        e.0.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            ErrorCode::InternalError,
            "an internal error occurred; it has been logged",
        );
        e.0.source = Some(source.into());
        e
    }

    /// `errors` beside `reasons`: the field each reason is about.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.0.errors = errors;
        self
    }

    pub fn with_reasons(mut self, reasons: Vec<Reason>) -> Self {
        self.0.reasons = reasons;
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    pub fn reasons(&self) -> &[Reason] {
        &self.0.reasons
    }

    /// The `Retry-After` this error is answered with, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.0.retry_after_secs
    }

    pub fn problem(&self) -> Problem {
        let e = &self.0;
        let status = e.code.status();
        Problem {
            type_uri: format!("urn:granulo:problem:{}", e.code),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: e.detail.clone(),
            code: e.code.as_str().to_owned(),
            errors: e.errors.clone(),
            reasons: e.reasons.clone(),
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("code", &self.0.code)
            .field("detail", &self.0.detail)
            .field("source", &self.0.source)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.detail)?;
        if let Some(source) = &self.0.source {
            write!(f, " ({source:#})")?;
        }
        Ok(())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        if self.0.code.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        problem_response(self.0.code.status(), &self.problem(), self.0.retry_after_secs)
    }
}

/// Serialise a problem with its headers.
pub fn problem_response(status: StatusCode, problem: &Problem, retry_after: Option<u64>) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    builder.insert_header((header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE));
    builder.insert_header((header::CACHE_CONTROL, "no-store"));
    if status == StatusCode::UNAUTHORIZED {
        builder.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"granulo\""));
    }
    if let Some(secs) = retry_after {
        builder.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    let body = serde_json::to_vec(problem).unwrap_or_else(|_| b"{}".to_vec());
    builder.body(body)
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Query(e) => e.into(),
            StoreError::Pool(e) => {
                tracing::warn!(error = %e, "database pool exhausted or unreachable");
                Self::new(
                    ErrorCode::DatabaseUnavailable,
                    "the database is busy or unreachable; retry shortly",
                )
            }
            StoreError::Connect(e) => {
                tracing::error!(error = %e, "database connection failed");
                Self::new(
                    ErrorCode::DatabaseUnavailable,
                    "the database is unreachable; retry shortly",
                )
            }
            StoreError::Migration(m) => Self::internal(anyhow::anyhow!("migration: {m}")),
            StoreError::Unsealable(m) => Self::internal(anyhow::anyhow!("{m}")),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match &err {
            E::NotFound => Self::not_found("resource"),
            E::DatabaseError(K::UniqueViolation, _) => Self::new(
                ErrorCode::AlreadyExists,
                "a record with the same unique value already exists",
            ),
            E::DatabaseError(K::ForeignKeyViolation, _) => Self::refused(
                ErrorCode::ReferenceNotFound,
                "the request refers to a record that does not exist",
                Vec::new(),
            ),
            E::DatabaseError(K::SerializationFailure, _) => Self::new(
                ErrorCode::ConcurrentUpdate,
                "a concurrent change interfered; retry the request",
            ),
            E::DatabaseError(K::ClosedConnection, _) => Self::new(
                ErrorCode::DatabaseUnavailable,
                "the database connection was lost; retry shortly",
            ),
            _ => Self::internal(err),
        }
    }
}

/// Map a unique-constraint violation to a 409 with a specific code; other errors as usual.
pub fn unique_as(code: ErrorCode, detail: String) -> impl FnOnce(diesel::result::Error) -> ApiError {
    move |e| {
        if crate::store::is_unique_violation(&e) {
            ApiError::new(code, detail)
        } else {
            e.into()
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        Self::internal(anyhow::anyhow!("blocking task failed: {err}"))
    }
}

/// Collects field errors so a request is refused once with all of them.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                field: field.to_owned(),
                message: message.into(),
            });
        }
        self
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub fn finish(self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_answers_with_its_status() {
        for code in ErrorCode::ALL {
            let p = ApiError::new(*code, "x").problem();
            assert_eq!(p.status, code.status().as_u16(), "{code}");
            assert_eq!(p.code, code.as_str());
            assert_eq!(p.type_uri, format!("urn:granulo:problem:{code}"));
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = ApiError::internal(anyhow::anyhow!("password=hunter2 in SQL"));
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert_eq!(p.code, "internal_error");
        assert!(!p.detail.contains("hunter2"));
    }

    #[test]
    fn diesel_errors_map_without_database_text() {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        let unique = E::DatabaseError(K::UniqueViolation, Box::new("users_username_key on (alice)".to_owned()));
        let e: ApiError = unique.into();
        assert_eq!(e.code(), ErrorCode::AlreadyExists);
        assert!(!e.problem().detail.contains("alice"));
        let e: ApiError = E::NotFound.into();
        assert_eq!(e.code(), ErrorCode::NotFound);
        let closed = E::DatabaseError(K::ClosedConnection, Box::new("gone".to_owned()));
        let e: ApiError = closed.into();
        assert_eq!(e.code(), ErrorCode::DatabaseUnavailable);
        let e: ApiError = E::RollbackTransaction.into();
        assert_eq!(e.code(), ErrorCode::InternalError);
    }

    #[test]
    fn problem_shape() {
        let e = ApiError::validation(vec![FieldError {
            field: "role".into(),
            message: "unknown role".into(),
        }]);
        let v = serde_json::to_value(e.problem()).expect("serialises");
        assert_eq!(v["type"], "urn:granulo:problem:validation_failed");
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad Request");
        assert_eq!(v["errors"][0]["field"], "role");
        assert!(v.get("reasons").is_none());
    }
}
