//! The OpenAPI 3.1 document (generated from the handlers' annotations) and the interactive
//! docs page (Swagger UI, vendored into the binary so it works without internet).

use actix_web::{HttpResponse, web};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{
    alerts, allocations, audit, auth, collections, devices, donors, health, hospitals, isbt128, labels, metrics, mfa,
    patients, policy, requests, tasks, units, users, webhooks,
};
use crate::error::{ErrorCode, FieldError, Problem, Reason};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "granulo",
        description = "Donor granulocyte management for blood banks. Errors are RFC 9457 \
                       application/problem+json with a stable `code`.",
    ),
    paths(
        health::healthz, health::readyz, metrics::scrape, openapi_json,
        auth::login, auth::client_token, auth::refresh, auth::logout, auth::me,
        mfa::login_mfa, mfa::enrol, mfa::confirm, mfa::recovery_codes, mfa::reset,
        users::create, users::list, users::get, users::update,
        hospitals::create, hospitals::list, hospitals::get, hospitals::update,
        hospitals::create_client, hospitals::list_clients, hospitals::revoke_client,
        audit::list,
        policy::get, policy::put,
        donors::create, donors::list, donors::get, donors::update,
        donors::defer, donors::deferrals, donors::add_donation, donors::donations,
        donors::eligibility, donors::add_stimulation, donors::stimulations, donors::lookback, donors::state_availability, donors::availability,
        devices::create, devices::list, devices::update,
        collections::create, collections::list, collections::get, collections::update,
        collections::start, collections::complete, collections::abort,
        isbt128::decode,
        units::create, units::receive, units::list, units::get, units::irradiate, units::record_test,
        units::release, units::inspect, units::disposition, units::discard, units::add_reading, units::add_location_reading, units::label, units::trace,
        labels::label_pdf, labels::label_zpl, labels::label_prints,
        alerts::list, alerts::ack, alerts::events, alerts::jobs, alerts::stream,
        webhooks::create, webhooks::list, webhooks::deliveries,
        patients::create, patients::list, patients::get, patients::update, patients::add_sample, patients::samples,
        patients::type_sample,
        requests::create, requests::list, requests::get, requests::approve, requests::decline, requests::cancel,
        requests::allocate, requests::candidates, requests::plan, requests::get_plan, requests::accept_plan,
        allocations::get, allocations::issue, allocations::return_unit, allocations::cancel, allocations::transfusion,
        allocations::crossmatch, allocations::crossmatches, allocations::resolve_crossmatch,
        allocations::compatibility, allocations::exceptions, allocations::sign_off,
        tasks::list, tasks::complete,
    ),
    components(schemas(Problem, FieldError, Reason, alerts::AlertStreamItem)),
    modifiers(&SecurityAndErrors),
    tags(
        (name = "auth", description = "sign-in and tokens"),
        (name = "users", description = "accounts (admin)"),
        (name = "hospitals", description = "hospital organisations and their API clients"),
        (name = "audit", description = "the hash-chained audit trail"),
        (name = "policy", description = "the configurable rule table"),
        (name = "donors", description = "donors, deferrals, donation history, eligibility, stimulations"),
        (name = "collections", description = "apheresis devices and collections"),
        (name = "units", description = "granulocyte units and ISBT 128"),
        (name = "alerts", description = "alert instances"),
        (name = "patients", description = "patients and crossmatch samples"),
        (name = "requests", description = "hospital requests and allocation"),
        (name = "allocations", description = "compatibility, crossmatches, issue and transfusion"),
        (name = "tasks", description = "follow-up work with a due time and an owner"),
        (name = "health", description = "liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme and the error answers every operation can give, so the document
/// shows the problem+json shape everywhere without repeating it on each handler.
struct SecurityAndErrors;

impl Modify for SecurityAndErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let keyed = super::idempotency::honours(&actix_web::http::Method::POST, path);
            if keyed && let Some(op) = item.post.as_mut() {
                describe_idempotency_key(op);
            }
            let operations = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ];
            for op in operations.into_iter().flatten() {
                if path.starts_with("/api/v1/units/{") {
                    describe_unit_key(op);
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = op.request_body.is_some();
                let mut add = |status: &str, description: &str| {
                    op.responses.responses.entry(status.to_owned()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(description)
                            .content("application/problem+json", problem())
                            .build()
                            .into()
                    });
                };
                add("400", &listed(400, "malformed input"));
                if secured {
                    add("401", &listed(401, "not signed in"));
                    add("403", &listed(403, "the caller's role or hospital may not do this"));
                    add("404", &listed(404, "no such resource"));
                }
                if has_body {
                    add("413", &listed(413, "the body is too large"));
                    add("415", &listed(415, "the body is not JSON"));
                }
                add(
                    "422",
                    "`nul_character`: a NUL in the path, query or body (it cannot be stored); other codes per operation",
                );
                add(
                    "500",
                    &listed(500, "unexpected failure (generic body; details are logged)"),
                );
                add("503", &listed(503, "the database is unreachable"));
            }
        }
    }
}

/// `summary`, then every code answered with `status` (from [`ErrorCode`]).
fn listed(status: u16, summary: &str) -> String {
    let codes: Vec<String> = ErrorCode::with_status(status).map(|c| format!("`{c}`")).collect();
    format!("{summary}: {}", codes.join(", "))
}

/// The `Idempotency-Key` header on a POST that honours it (`routes::idempotency::honours`).
fn describe_idempotency_key(op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    let params = op.parameters.get_or_insert_with(Vec::new);
    params.push(
        ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(utoipa::openapi::Required::False)
            .description(Some(
                "Makes a retry safe: the same key (per account, kept `policy.security.idempotency_key_hours`) \
                 with the same method, path and body returns the first successful answer with \
                 `Idempotent-Replayed: true`, on any instance, and writes nothing; another body or route \
                 is 422 `idempotency_key_reused`; while the first attempt runs, or when its answer was \
                 lost, 409 `idempotency_key_in_progress` with `Retry-After`. A refused attempt (4xx) frees the key.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[\x21-\x7e]{1,255}$")),
            ))
            .build()
            .into(),
    );
    let problem = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build()
    };
    op.responses.responses.entry("409".to_owned()).or_insert_with(|| {
        ResponseBuilder::new()
            .description("`idempotency_key_in_progress`")
            .content("application/problem+json", problem())
            .build()
            .into()
    });
}

/// What `input::UnitKey::parse` accepts: a numeric id, a DIN (13 characters, FIN first), the
/// DIN and its check character, or the scanned `=` data structure with its flags.
const UNIT_KEY_PATTERN: &str = "^([0-9]{1,12}|[A-NP-Za-np-z1-9][A-NP-Za-np-z0-9]{2}[0-9]{10}[0-9A-Za-z*]?|=[A-NP-Za-np-z1-9][A-NP-Za-np-z0-9]{2}[0-9]{12})$";

/// A unit in the path is an id or a DIN: its pattern, and the 422 a well-formed DIN with the
/// wrong check character (or an impossible flag) gets.
fn describe_unit_key(op: &mut utoipa::openapi::path::Operation) {
    for param in op.parameters.iter_mut().flatten() {
        if let utoipa::openapi::RefOr::T(param) = param
            && param.parameter_in == utoipa::openapi::path::ParameterIn::Path
        {
            param.schema = Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(UNIT_KEY_PATTERN))
                    .into(),
            );
        }
    }
    op.responses.responses.entry("422".to_owned()).or_insert_with(|| {
        ResponseBuilder::new()
            .description("`invalid_isbt128`, `invalid_check_character`: the DIN cannot be a unit's")
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
            .into()
    });
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health", responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// `/docs/` serves Swagger UI against `/api/v1/openapi.json`.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/api/v1/openapi.json", ApiDoc::openapi())
}

/// `/docs` → `/docs/`.
pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::Found().insert_header(("Location", "/docs/")).finish()
}

pub fn register_docs_redirect(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/docs").route(web::get().to(docs_redirect)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The string literals of `src/domain/`, where the reason codes of refusals are defined.
    fn domain_literals() -> String {
        fn walk(dir: &std::path::Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).expect("src/domain").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push_str(&std::fs::read_to_string(&path).expect("source"));
                }
            }
        }
        let mut out = String::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain"),
            &mut out,
        );
        out
    }

    /// Every code an error answer's description names is an [`ErrorCode`] of that status, or a
    /// reason code the domain defines (listed in `reasons`).
    #[test]
    fn error_descriptions_name_real_codes_with_their_status() {
        let doc = ApiDoc::openapi();
        let domain = domain_literals();
        let mut checked = 0;
        let mut wrong = Vec::new();
        for (path, item) in &doc.paths.paths {
            let ops = [&item.get, &item.post, &item.put, &item.patch, &item.delete];
            for op in ops.into_iter().flatten() {
                for (status, response) in &op.responses.responses {
                    let Ok(status) = status.parse::<u16>() else { continue };
                    let utoipa::openapi::RefOr::T(response) = response else {
                        continue;
                    };
                    if status < 400 {
                        continue;
                    }
                    for token in response.description.split('`').skip(1).step_by(2) {
                        if !token
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                        {
                            continue;
                        }
                        let top_level = ErrorCode::ALL.iter().filter(|c| c.as_str() == token);
                        let known = match top_level.map(|c| c.status().as_u16()).collect::<Vec<_>>() {
                            statuses if statuses.is_empty() => domain.contains(&format!("\"{token}\"")),
                            statuses => statuses.contains(&status),
                        };
                        if !known {
                            wrong.push(format!("{path} {status}: `{token}`"));
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "not an ErrorCode of that status:\n{}",
            wrong.join("\n")
        );
        assert!(checked > 100, "only {checked} codes named");
    }
}
