//! Errors as FHIR OperationOutcome: the first issue carries the stable code of `/api/v1`'s
//! problem+json in `details.coding`; each invalid field and each clinical reason follows as an
//! issue of its own.

use actix_web::HttpResponse;
use actix_web::http::{StatusCode, header};
use serde::{Deserialize, Serialize};

use super::model::{CodeableConcept, Coding, code_system};
use crate::error::{FHIR_CONTENT_TYPE, FieldError, Problem, Reason};

/// Problem details as read back from a problem+json body.
#[derive(Debug, Deserialize)]
pub struct ProblemIn {
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(default)]
    pub errors: Vec<FieldError>,
    #[serde(default)]
    pub reasons: Vec<Reason>,
}

impl From<Problem> for ProblemIn {
    fn from(p: Problem) -> Self {
        Self {
            status: p.status,
            detail: p.detail,
            code: p.code,
            errors: p.errors,
            reasons: p.reasons,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    pub resource_type: String,
    pub issue: Vec<Issue>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    pub severity: String,
    pub code: String,
    pub details: CodeableConcept,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

/// The FHIR issue type for an HTTP status.
pub fn issue_type(status: u16) -> &'static str {
    match status {
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 | 406 | 415 => "not-supported",
        409 | 412 => "conflict",
        413 => "too-costly",
        422 => "business-rule",
        428 => "required",
        429 => "throttled",
        503 => "transient",
        s if s >= 500 => "exception",
        _ => "invalid",
    }
}

pub fn of(problem: &ProblemIn) -> OperationOutcome {
    let error_code = |code: &str, text: &str| CodeableConcept {
        coding: vec![Coding::new(code_system("error-code"), code, text)],
        text: Some(text.to_owned()),
    };
    let mut issue = vec![Issue {
        severity: if problem.status >= 500 { "fatal" } else { "error" }.to_owned(),
        code: issue_type(problem.status).to_owned(),
        details: error_code(&problem.code, &problem.detail),
        diagnostics: Some(problem.detail.clone()),
        expression: Vec::new(),
    }];
    for e in &problem.errors {
        issue.push(Issue {
            severity: "error".to_owned(),
            code: "invalid".to_owned(),
            details: error_code(&problem.code, &e.message),
            diagnostics: Some(format!("{}: {}", e.field, e.message)),
            expression: vec![e.field.clone()],
        });
    }
    for r in &problem.reasons {
        issue.push(Issue {
            severity: "error".to_owned(),
            code: issue_type(problem.status).to_owned(),
            details: CodeableConcept {
                coding: vec![
                    Coding::new(code_system("reason-code"), &r.code, &r.message),
                    Coding::new(code_system("error-code"), &problem.code, &problem.detail),
                ],
                text: Some(r.message.clone()),
            },
            diagnostics: Some(r.message.clone()),
            expression: Vec::new(),
        });
    }
    OperationOutcome {
        resource_type: "OperationOutcome".to_owned(),
        issue,
    }
}

/// The OperationOutcome response for `problem` with `status`.
pub fn response_in(status: StatusCode, problem: &ProblemIn) -> HttpResponse {
    let body = serde_json::to_vec(&of(problem)).unwrap_or_else(|_| b"{}".to_vec());
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, FHIR_CONTENT_TYPE))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// The OperationOutcome response for one of our problems.
pub fn response(problem: &Problem) -> HttpResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let p = ProblemIn {
        status: problem.status,
        detail: problem.detail.clone(),
        code: problem.code.clone(),
        errors: problem.errors.clone(),
        reasons: problem.reasons.clone(),
    };
    response_in(status, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_issue_carries_the_code_and_each_reason_follows() {
        let p = ProblemIn {
            status: 422,
            detail: "the unit may not be given".into(),
            code: "incompatible".into(),
            errors: vec![],
            reasons: vec![Reason {
                code: "abo_incompatible".into(),
                message: "A into O".into(),
            }],
        };
        let o = of(&p);
        assert_eq!(o.issue.len(), 2);
        assert_eq!(o.issue[0].code, "business-rule");
        assert_eq!(o.issue[0].details.coding[0].code.as_deref(), Some("incompatible"));
        assert_eq!(o.issue[1].details.coding[0].code.as_deref(), Some("abo_incompatible"));
    }

    #[test]
    fn every_status_has_an_issue_type() {
        for (status, ty) in [
            (400, "invalid"),
            (401, "login"),
            (403, "forbidden"),
            (404, "not-found"),
            (405, "not-supported"),
            (406, "not-supported"),
            (409, "conflict"),
            (412, "conflict"),
            (422, "business-rule"),
            (428, "required"),
            (429, "throttled"),
            (500, "exception"),
            (503, "transient"),
        ] {
            assert_eq!(issue_type(status), ty, "{status}");
        }
    }
}
