//! Health, readiness, the OpenAPI document, the docs page and the schema itself.

use diesel::prelude::*;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    health_and_readiness,
    openapi_describes_every_route,
    docs_page_works_offline,
    schema_matches_database
);

async fn health_and_readiness(backend: Backend) {
    let app = spawn(backend).await;
    assert_eq!(app.get("/healthz", None).await.ok(200)["status"], "ok");
    let ready = app.get("/readyz", None).await;
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready.ok(200)["database"], expected);
    let r = app.get("/healthz", None).await;
    assert_eq!(
        r.headers.get("x-content-type-options").and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
}

/// Every route the server answers, with its method.
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/login/mfa"),
    ("post", "/api/v1/auth/mfa/enrol"),
    ("post", "/api/v1/auth/mfa/confirm"),
    ("post", "/api/v1/auth/mfa/recovery-codes"),
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/me"),
    ("post", "/api/v1/users"),
    ("get", "/api/v1/users"),
    ("get", "/api/v1/users/{id}"),
    ("patch", "/api/v1/users/{id}"),
    ("post", "/api/v1/users/{id}/mfa/reset"),
    ("post", "/api/v1/hospitals"),
    ("get", "/api/v1/hospitals"),
    ("get", "/api/v1/hospitals/{id}"),
    ("patch", "/api/v1/hospitals/{id}"),
    ("post", "/api/v1/hospitals/{id}/clients"),
    ("get", "/api/v1/hospitals/{id}/clients"),
    ("post", "/api/v1/hospitals/{id}/clients/{client_id}/revoke"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/policy"),
    ("put", "/api/v1/policy"),
    ("post", "/api/v1/donors"),
    ("get", "/api/v1/donors"),
    ("get", "/api/v1/donors/{id}"),
    ("patch", "/api/v1/donors/{id}"),
    ("post", "/api/v1/donors/{id}/deferrals"),
    ("get", "/api/v1/donors/{id}/deferrals"),
    ("post", "/api/v1/donors/{id}/donations"),
    ("get", "/api/v1/donors/{id}/donations"),
    ("get", "/api/v1/donors/{id}/eligibility"),
    ("get", "/api/v1/donors/{id}/lookback"),
    ("post", "/api/v1/donors/{id}/availability"),
    ("get", "/api/v1/donors/{id}/availability"),
    ("post", "/api/v1/donors/{id}/stimulations"),
    ("get", "/api/v1/donors/{id}/stimulations"),
    ("post", "/api/v1/devices"),
    ("get", "/api/v1/devices"),
    ("patch", "/api/v1/devices/{id}"),
    ("post", "/api/v1/collections"),
    ("get", "/api/v1/collections"),
    ("get", "/api/v1/collections/{id}"),
    ("patch", "/api/v1/collections/{id}"),
    ("post", "/api/v1/collections/{id}/start"),
    ("post", "/api/v1/collections/{id}/complete"),
    ("post", "/api/v1/collections/{id}/abort"),
    ("post", "/api/v1/isbt128/decode"),
    ("post", "/api/v1/units"),
    ("get", "/api/v1/units"),
    ("get", "/api/v1/units/{id_or_din}"),
    ("post", "/api/v1/units/{id}/irradiation"),
    ("post", "/api/v1/units/{id}/tests"),
    ("post", "/api/v1/units/{id}/release"),
    ("post", "/api/v1/units/{id}/inspection"),
    ("post", "/api/v1/units/{id}/excursion-disposition"),
    ("post", "/api/v1/units/{id}/discard"),
    ("post", "/api/v1/units/{id}/storage-readings"),
    ("post", "/api/v1/units/receive"),
    ("get", "/api/v1/units/{id}/label"),
    ("get", "/api/v1/units/{id}/label.pdf"),
    ("get", "/api/v1/units/{id}/label.zpl"),
    ("get", "/api/v1/units/{id}/label/prints"),
    ("get", "/api/v1/units/{id}/trace"),
    ("post", "/api/v1/storage-readings"),
    ("get", "/api/v1/alerts"),
    ("post", "/api/v1/alerts/{id}/ack"),
    ("get", "/api/v1/alerts/{id}/events"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/alerts/stream"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks/{id}/deliveries"),
    ("post", "/api/v1/patients"),
    ("get", "/api/v1/patients"),
    ("get", "/api/v1/patients/{id}"),
    ("patch", "/api/v1/patients/{id}"),
    ("post", "/api/v1/patients/{id}/samples"),
    ("get", "/api/v1/patients/{id}/samples"),
    ("post", "/api/v1/samples/{id}/typing"),
    ("post", "/api/v1/requests"),
    ("get", "/api/v1/requests"),
    ("get", "/api/v1/requests/{id}"),
    ("post", "/api/v1/requests/{id}/approve"),
    ("post", "/api/v1/requests/{id}/decline"),
    ("post", "/api/v1/requests/{id}/cancel"),
    ("post", "/api/v1/requests/{id}/allocations"),
    ("get", "/api/v1/requests/{id}/candidates"),
    ("post", "/api/v1/requests/{id}/plan"),
    ("get", "/api/v1/requests/{id}/plan"),
    ("post", "/api/v1/requests/{id}/plan/accept"),
    ("get", "/api/v1/allocations/{id}"),
    ("post", "/api/v1/allocations/{id}/issue"),
    ("post", "/api/v1/allocations/{id}/return"),
    ("post", "/api/v1/allocations/{id}/cancel"),
    ("post", "/api/v1/allocations/{id}/transfusion"),
    ("post", "/api/v1/allocations/{id}/sign-off"),
    ("get", "/api/v1/tasks"),
    ("post", "/api/v1/tasks/{id}/complete"),
    ("post", "/api/v1/crossmatches"),
    ("get", "/api/v1/crossmatches"),
    ("post", "/api/v1/crossmatches/{id}/resolve"),
    ("get", "/api/v1/compatibility"),
    ("get", "/api/v1/reports/exceptions"),
];

async fn openapi_describes_every_route(backend: Backend) {
    let app = spawn(backend).await;
    let doc = app.get("/api/v1/openapi.json", None).await.ok(200).clone();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            documented += 1;
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "documented but not served: {method} {path}"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path} has no success response"
            );
            for status in ["400", "500"] {
                let content = &responses[status]["content"]["application/problem+json"]["schema"]["$ref"];
                assert_eq!(content, "#/components/schemas/Problem", "{method} {path} {status}");
            }
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            if secured {
                assert!(
                    responses.contains_key("401") && responses.contains_key("403"),
                    "{method} {path}"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("413"), "{method} {path}");
            }
        }
    }
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "served but not documented: {method} {path}"
        );
    }
    assert_eq!(documented, ROUTES.len());
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "code", "errors", "reasons"] {
        assert!(problem.get(field).is_some(), "Problem schema lacks {field}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

async fn docs_page_works_offline(backend: Backend) {
    let app = spawn(backend).await;
    let redirect = app.get("/docs", None).await;
    assert_eq!(redirect.status.as_u16(), 302);
    let page = app.get("/docs/", None).await;
    assert_eq!(page.status.as_u16(), 200);
    assert!(page.text.contains("swagger"), "{}", page.text);
    assert!(
        !page.text.contains("cdn."),
        "the page must not load scripts from the internet"
    );
    let js = app.get("/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(js.status.as_u16(), 200);
    assert!(
        js.text.len() > 100_000,
        "the Swagger UI bundle is served from the binary"
    );
}

/// schema.rs is hand-written for both backends: select every column of every table.
async fn schema_matches_database(backend: Backend) {
    use granulo::store::schema::*;
    let app = spawn(backend).await;
    let mut conn = app.state.pool.get().expect("conn");
    let conn = &mut *conn;
    hospitals::table
        .select(granulo::store::hospitals::Hospital::as_select())
        .load(conn)
        .expect("hospitals");
    users::table
        .select(granulo::store::users::User::as_select())
        .load(conn)
        .expect("users");
    api_clients::table
        .select(granulo::store::api_clients::ApiClient::as_select())
        .load(conn)
        .expect("api_clients");
    sessions::table
        .select(granulo::store::sessions::Session::as_select())
        .load(conn)
        .expect("sessions");
    refresh_tokens::table
        .select(granulo::store::sessions::RefreshToken::as_select())
        .load(conn)
        .expect("refresh_tokens");
    audit_log::table
        .select(granulo::store::audit::AuditRow::as_select())
        .load(conn)
        .expect("audit_log");
    login_failures::table
        .select(login_failures::all_columns)
        .load::<(i64, String, chrono::NaiveDateTime)>(conn)
        .expect("login_failures");
    policy::table
        .select(granulo::store::policy::PolicyRow::as_select())
        .load(conn)
        .expect("policy");
    donors::table
        .select(granulo::store::donors::Donor::as_select())
        .load(conn)
        .expect("donors");
    deferrals::table
        .select(granulo::store::donors::DeferralRow::as_select())
        .load(conn)
        .expect("deferrals");
    donations::table
        .select(granulo::store::donors::DonationRow::as_select())
        .load(conn)
        .expect("donations");
    devices::table
        .select(granulo::store::devices::Device::as_select())
        .load(conn)
        .expect("devices");
    collections::table
        .select(granulo::store::collections::Collection::as_select())
        .load(conn)
        .expect("collections");
    stimulations::table
        .select(granulo::store::collections::Stimulation::as_select())
        .load(conn)
        .expect("stimulations");
    units::table
        .select(granulo::store::units::Unit::as_select())
        .load(conn)
        .expect("units");
    unit_tests::table
        .select(granulo::store::units::UnitTest::as_select())
        .load(conn)
        .expect("unit_tests");
    storage_readings::table
        .select(granulo::store::units::StorageReading::as_select())
        .load(conn)
        .expect("storage_readings");
    alerts::table
        .select(granulo::store::alerts::Alert::as_select())
        .load(conn)
        .expect("alerts");
    unit_pool_members::table
        .select(granulo::store::units::PoolMember::as_select())
        .load(conn)
        .expect("unit_pool_members");
    din_sequences::table
        .select(din_sequences::all_columns)
        .load::<(String, i32, i32)>(conn)
        .expect("din_sequences");
    patients::table
        .select(granulo::store::patients::Patient::as_select())
        .load(conn)
        .expect("patients");
    samples::table
        .select(granulo::store::patients::Sample::as_select())
        .load(conn)
        .expect("samples");
    requests::table
        .select(granulo::store::requests::Request::as_select())
        .load(conn)
        .expect("requests");
    idempotency_keys::table
        .select(granulo::store::idempotency::KeyRow::as_select())
        .load(conn)
        .expect("idempotency_keys");
    crossmatches::table
        .select(granulo::store::allocations::Crossmatch::as_select())
        .load(conn)
        .expect("crossmatches");
    allocations::table
        .select(granulo::store::allocations::Allocation::as_select())
        .load(conn)
        .expect("allocations");
    job_leases::table
        .select(granulo::store::jobs::JobLease::as_select())
        .load(conn)
        .expect("job_leases");
    webhook_subscriptions::table
        .select(granulo::store::webhooks::Subscription::as_select())
        .load(conn)
        .expect("webhook_subscriptions");
    webhook_outbox::table
        .select(granulo::store::webhooks::Delivery::as_select())
        .load(conn)
        .expect("webhook_outbox");
    unit_excursions::table
        .select(granulo::store::units::Excursion::as_select())
        .load(conn)
        .expect("unit_excursions");
    excursion_dispositions::table
        .select(granulo::store::units::Disposition::as_select())
        .load(conn)
        .expect("excursion_dispositions");
    unit_inspections::table
        .select(granulo::store::units::Inspection::as_select())
        .load(conn)
        .expect("unit_inspections");
    crossmatch_resolutions::table
        .select(granulo::store::allocations::Resolution::as_select())
        .load(conn)
        .expect("crossmatch_resolutions");
    sample_typings::table
        .select(granulo::store::patients::TypingRow::as_select())
        .load(conn)
        .expect("sample_typings");
    allocation_decisions::table
        .select(granulo::store::allocations::Decision::as_select())
        .load(conn)
        .expect("allocation_decisions");
    allocation_sign_offs::table
        .select(granulo::store::allocations::SignOff::as_select())
        .load(conn)
        .expect("allocation_sign_offs");
    tasks::table
        .select(granulo::store::tasks::Task::as_select())
        .load(conn)
        .expect("tasks");
    emergency_releases::table
        .select(granulo::store::units::EmergencyRelease::as_select())
        .load(conn)
        .expect("emergency_releases");
    unit_supply::table
        .select(granulo::store::units::Supply::as_select())
        .load(conn)
        .expect("unit_supply");
}
