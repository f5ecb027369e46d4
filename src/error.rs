//! The API's one error type and its wire form, RFC 9457 `application/problem+json`:
//! `type`, `title`, `status`, `detail`, a stable snake_case `code`, and either
//! `errors: [{field, message}]` (bad input) or `reasons: [{code, message}]` (rule refusals).
//!
//! Statuses come from an exhaustive match on [`ErrorKind`]. Anything unexpected becomes a
//! generic 500 whose cause goes to the log only; database and pool failures are mapped
//! deliberately (not found → 404, uniqueness → 409, no connection → 503).

use std::borrow::Cow;
use std::fmt;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// A field that failed validation.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field in the request (`hla.a[0]`), or the parameter name.
    pub field: String,
    pub message: String,
}

/// Why a rule refused the request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    TooManyRequests,
    ServiceUnavailable,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error on its way to becoming a problem+json response (boxed: it travels through
/// every `Result` of the request path).
pub struct ApiError(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    code: Cow<'static, str>,
    detail: String,
    errors: Vec<FieldError>,
    reasons: Vec<Reason>,
    retry_after_secs: Option<u64>,
    source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(kind: ErrorKind, code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            code: code.into(),
            detail: detail.into(),
            errors: Vec::new(),
            reasons: Vec::new(),
            retry_after_secs: None,
            source: None,
        }))
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, detail)
    }

    /// 400 `validation_failed` listing every bad field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        let mut e = Self::new(ErrorKind::BadRequest, "validation_failed", detail);
        e.0.errors = errors;
        e
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, code, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, detail)
    }

    /// 422: a rule refused the request; `reasons` name every failing rule.
    pub fn refused(code: &'static str, detail: impl Into<String>, reasons: Vec<Reason>) -> Self {
        let mut e = Self::new(ErrorKind::Unprocessable, code, detail);
        e.0.reasons = reasons;
        e
    }

    pub fn too_many_requests(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(ErrorKind::TooManyRequests, "too_many_requests", detail);
        e.0.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorKind::ServiceUnavailable, code, detail);
        e.0.retry_after_secs = Some(1);
        e
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            ErrorKind::Internal,
            "internal_error",
            "an internal error occurred; it has been logged",
        );
        e.0.source = Some(source.into());
        e
    }

    pub fn with_reasons(mut self, reasons: Vec<Reason>) -> Self {
        self.0.reasons = reasons;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    pub fn code(&self) -> &str {
        &self.0.code
    }

    pub fn problem(&self) -> Problem {
        let e = &self.0;
        let status = e.kind.status();
        Problem {
            type_uri: format!("urn:granulo:problem:{}", e.code),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: e.detail.clone(),
            code: e.code.to_string(),
            errors: e.errors.clone(),
            reasons: e.reasons.clone(),
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("kind", &self.0.kind)
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
        self.0.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self.0.kind, ErrorKind::Internal | ErrorKind::ServiceUnavailable) {
            tracing::error!(error = %self, "request failed");
        }
        problem_response(self.0.kind.status(), &self.problem(), self.0.retry_after_secs)
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
                Self::unavailable(
                    "database_unavailable",
                    "the database is busy or unreachable; retry shortly",
                )
            }
            StoreError::Connect(e) => {
                tracing::error!(error = %e, "database connection failed");
                Self::unavailable("database_unavailable", "the database is unreachable; retry shortly")
            }
            StoreError::Migration(m) => Self::internal(anyhow::anyhow!("migration: {m}")),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match &err {
            E::NotFound => Self::not_found("resource"),
            E::DatabaseError(K::UniqueViolation, _) => {
                Self::conflict("already_exists", "a record with the same unique value already exists")
            }
            E::DatabaseError(K::ForeignKeyViolation, _) => Self::refused(
                "reference_not_found",
                "the request refers to a record that does not exist",
                Vec::new(),
            ),
            E::DatabaseError(K::SerializationFailure, _) => {
                Self::conflict("concurrent_update", "a concurrent change interfered; retry the request")
            }
            E::DatabaseError(K::ClosedConnection, _) => Self::unavailable(
                "database_unavailable",
                "the database connection was lost; retry shortly",
            ),
            _ => Self::internal(err),
        }
    }
}

/// Map a unique-constraint violation to a 409 with a specific code; other errors as usual.
pub fn unique_as(code: &'static str, detail: String) -> impl FnOnce(diesel::result::Error) -> ApiError {
    move |e| {
        if crate::store::is_unique_violation(&e) {
            ApiError::conflict(code, detail)
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
    fn every_kind_maps_to_its_status() {
        let table = [
            (ErrorKind::BadRequest, 400),
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::MethodNotAllowed, 405),
            (ErrorKind::Conflict, 409),
            (ErrorKind::PayloadTooLarge, 413),
            (ErrorKind::UnsupportedMediaType, 415),
            (ErrorKind::Unprocessable, 422),
            (ErrorKind::TooManyRequests, 429),
            (ErrorKind::ServiceUnavailable, 503),
            (ErrorKind::Internal, 500),
        ];
        for (kind, status) in table {
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
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
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(!e.problem().detail.contains("alice"));
        let e: ApiError = E::NotFound.into();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let closed = E::DatabaseError(K::ClosedConnection, Box::new("gone".to_owned()));
        let e: ApiError = closed.into();
        assert_eq!(e.kind(), ErrorKind::ServiceUnavailable);
        let e: ApiError = E::RollbackTransaction.into();
        assert_eq!(e.kind(), ErrorKind::Internal);
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
