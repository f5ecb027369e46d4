//! HTTP routes: one file per resource, each with its request/response types and thin handlers.
//! Handlers parse input, check the caller, run one unit of work and shape the answer.

pub mod alerts;
pub mod allocations;
pub mod audit;
pub mod auth;
pub mod collections;
pub mod console;
pub mod devices;
pub mod docs;
pub mod donors;
pub mod fhir;
pub mod health;
pub mod hospitals;
pub mod idempotency;
pub mod isbt128;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod mfa;
pub mod patients;
pub mod policy;
pub mod requests;
pub mod session_gate;
pub mod tasks;
pub mod units;

pub mod users;
pub mod webhooks;

use actix_web::web;

use crate::domain::policy::Policy;
use crate::error::ApiResult;
use crate::store::DbConn;

/// Register every route. Resources are declared with `web::resource` so that a wrong method
/// answers 405 and an unknown path 404 (both turned into problem+json by the error middleware).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(web::resource("/metrics").route(web::get().to(metrics::scrape)))
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(idempotency::idempotency_key))
                .service(web::resource("/openapi.json").route(web::get().to(docs::openapi_json)))
                .service(web::resource("/auth/login").route(web::post().to(auth::login)))
                .service(web::resource("/auth/login/mfa").route(web::post().to(mfa::login_mfa)))
                .service(web::resource("/auth/mfa/enrol").route(web::post().to(mfa::enrol)))
                .service(web::resource("/auth/mfa/confirm").route(web::post().to(mfa::confirm)))
                .service(web::resource("/auth/mfa/recovery-codes").route(web::post().to(mfa::recovery_codes)))
                .service(web::resource("/auth/token").route(web::post().to(auth::client_token)))
                .service(web::resource("/auth/refresh").route(web::post().to(auth::refresh)))
                .service(web::resource("/auth/logout").route(web::post().to(auth::logout)))
                .service(web::resource("/me").route(web::get().to(auth::me)))
                .service(
                    web::resource("/users")
                        .route(web::post().to(users::create))
                        .route(web::get().to(users::list)),
                )
                .service(
                    web::resource("/users/{id}")
                        .route(web::get().to(users::get))
                        .route(web::patch().to(users::update)),
                )
                .service(web::resource("/users/{id}/mfa/reset").route(web::post().to(mfa::reset)))
                .service(
                    web::resource("/hospitals")
                        .route(web::post().to(hospitals::create))
                        .route(web::get().to(hospitals::list)),
                )
                .service(
                    web::resource("/hospitals/{id}")
                        .route(web::get().to(hospitals::get))
                        .route(web::patch().to(hospitals::update)),
                )
                .service(
                    web::resource("/hospitals/{id}/clients")
                        .route(web::post().to(hospitals::create_client))
                        .route(web::get().to(hospitals::list_clients)),
                )
                .service(
                    web::resource("/hospitals/{id}/clients/{client_id}/revoke")
                        .route(web::post().to(hospitals::revoke_client)),
                )
                .service(web::resource("/audit").route(web::get().to(audit::list)))
                .service(
                    web::resource("/policy")
                        .route(web::get().to(policy::get))
                        .route(web::put().to(policy::put)),
                )
                .service(
                    web::resource("/donors")
                        .route(web::post().to(donors::create))
                        .route(web::get().to(donors::list)),
                )
                .service(
                    web::resource("/donors/{id}")
                        .route(web::get().to(donors::get))
                        .route(web::patch().to(donors::update)),
                )
                .service(
                    web::resource("/donors/{id}/deferrals")
                        .route(web::post().to(donors::defer))
                        .route(web::get().to(donors::deferrals)),
                )
                .service(
                    web::resource("/donors/{id}/donations")
                        .route(web::post().to(donors::add_donation))
                        .route(web::get().to(donors::donations)),
                )
                .service(web::resource("/donors/{id}/eligibility").route(web::get().to(donors::eligibility)))
                .service(web::resource("/donors/{id}/lookback").route(web::get().to(donors::lookback)))
                .service(
                    web::resource("/donors/{id}/availability")
                        .route(web::post().to(donors::state_availability))
                        .route(web::get().to(donors::availability)),
                )
                .service(
                    web::resource("/donors/{id}/stimulations")
                        .route(web::post().to(donors::add_stimulation))
                        .route(web::get().to(donors::stimulations)),
                )
                .service(
                    web::resource("/devices")
                        .route(web::post().to(devices::create))
                        .route(web::get().to(devices::list)),
                )
                .service(web::resource("/devices/{id}").route(web::patch().to(devices::update)))
                .service(
                    web::resource("/collections")
                        .route(web::post().to(collections::create))
                        .route(web::get().to(collections::list)),
                )
                .service(
                    web::resource("/collections/{id}")
                        .route(web::get().to(collections::get))
                        .route(web::patch().to(collections::update)),
                )
                .service(web::resource("/collections/{id}/start").route(web::post().to(collections::start)))
                .service(web::resource("/collections/{id}/complete").route(web::post().to(collections::complete)))
                .service(web::resource("/collections/{id}/abort").route(web::post().to(collections::abort)))
                .service(web::resource("/isbt128/decode").route(web::post().to(isbt128::decode)))
                .service(
                    web::resource("/units")
                        .route(web::post().to(units::create))
                        .route(web::get().to(units::list)),
                )
                // Before `/units/{id_or_din}`, which would take `receive` as a DIN.
                .service(web::resource("/units/receive").route(web::post().to(units::receive)))
                .service(web::resource("/units/{id_or_din}").route(web::get().to(units::get)))
                .service(web::resource("/units/{id}/irradiation").route(web::post().to(units::irradiate)))
                .service(web::resource("/units/{id}/tests").route(web::post().to(units::record_test)))
                .service(web::resource("/units/{id}/release").route(web::post().to(units::release)))
                .service(web::resource("/units/{id}/inspection").route(web::post().to(units::inspect)))
                .service(web::resource("/units/{id}/excursion-disposition").route(web::post().to(units::disposition)))
                .service(web::resource("/units/{id}/discard").route(web::post().to(units::discard)))
                .service(web::resource("/units/{id}/storage-readings").route(web::post().to(units::add_reading)))
                .service(web::resource("/units/{id}/label").route(web::get().to(units::label)))
                .service(web::resource("/units/{id}/label.pdf").route(web::get().to(labels::label_pdf)))
                .service(web::resource("/units/{id}/label.zpl").route(web::get().to(labels::label_zpl)))
                .service(web::resource("/units/{id}/label/prints").route(web::get().to(labels::label_prints)))
                .service(web::resource("/units/{id}/trace").route(web::get().to(units::trace)))
                .service(web::resource("/storage-readings").route(web::post().to(units::add_location_reading)))
                .service(web::resource("/alerts").route(web::get().to(alerts::list)))
                .service(web::resource("/alerts/stream").route(web::get().to(alerts::stream)))
                .service(web::resource("/alerts/{id}/ack").route(web::post().to(alerts::ack)))
                .service(web::resource("/alerts/{id}/events").route(web::get().to(alerts::events)))
                .service(web::resource("/jobs").route(web::get().to(alerts::jobs)))
                .service(
                    web::resource("/webhooks")
                        .route(web::post().to(webhooks::create))
                        .route(web::get().to(webhooks::list)),
                )
                .service(web::resource("/webhooks/{id}/deliveries").route(web::get().to(webhooks::deliveries)))
                .service(
                    web::resource("/patients")
                        .route(web::post().to(patients::create))
                        .route(web::get().to(patients::list)),
                )
                .service(
                    web::resource("/patients/{id}")
                        .route(web::get().to(patients::get))
                        .route(web::patch().to(patients::update)),
                )
                .service(
                    web::resource("/patients/{id}/samples")
                        .route(web::post().to(patients::add_sample))
                        .route(web::get().to(patients::samples)),
                )
                .service(web::resource("/samples/{id}/typing").route(web::post().to(patients::type_sample)))
                .service(
                    web::resource("/requests")
                        .route(web::post().to(requests::create))
                        .route(web::get().to(requests::list)),
                )
                .service(web::resource("/requests/{id}").route(web::get().to(requests::get)))
                .service(web::resource("/requests/{id}/approve").route(web::post().to(requests::approve)))
                .service(web::resource("/requests/{id}/decline").route(web::post().to(requests::decline)))
                .service(web::resource("/requests/{id}/cancel").route(web::post().to(requests::cancel)))
                .service(web::resource("/requests/{id}/allocations").route(web::post().to(requests::allocate)))
                .service(web::resource("/requests/{id}/candidates").route(web::get().to(requests::candidates)))
                .service(
                    web::resource("/requests/{id}/plan")
                        .route(web::post().to(requests::plan))
                        .route(web::get().to(requests::get_plan)),
                )
                .service(web::resource("/requests/{id}/plan/accept").route(web::post().to(requests::accept_plan)))
                .service(web::resource("/allocations/{id}").route(web::get().to(allocations::get)))
                .service(web::resource("/allocations/{id}/issue").route(web::post().to(allocations::issue)))
                .service(web::resource("/allocations/{id}/return").route(web::post().to(allocations::return_unit)))
                .service(web::resource("/allocations/{id}/cancel").route(web::post().to(allocations::cancel)))
                .service(web::resource("/allocations/{id}/transfusion").route(web::post().to(allocations::transfusion)))
                .service(web::resource("/allocations/{id}/sign-off").route(web::post().to(allocations::sign_off)))
                .service(web::resource("/tasks").route(web::get().to(tasks::list)))
                .service(web::resource("/tasks/{id}/complete").route(web::post().to(tasks::complete)))
                .service(
                    web::resource("/crossmatches")
                        .route(web::post().to(allocations::crossmatch))
                        .route(web::get().to(allocations::crossmatches)),
                )
                .service(
                    web::resource("/crossmatches/{id}/resolve").route(web::post().to(allocations::resolve_crossmatch)),
                )
                .service(web::resource("/compatibility").route(web::get().to(allocations::compatibility)))
                .service(web::resource("/reports/exceptions").route(web::get().to(allocations::exceptions))),
        )
        .configure(fhir::configure)
        .configure(console::configure)
        .configure(docs::register_docs_redirect)
        .service(docs::swagger_ui());
}

/// Adapts a unit of work that needs the rule table: the policy is read on the same connection,
/// so inside `state.write(...)` it is the one in force in that transaction.
pub fn with_policy<T>(
    f: impl FnOnce(&mut DbConn, &Policy) -> ApiResult<T> + Send + 'static,
) -> impl FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static {
    move |conn| {
        let policy = crate::services::policy::current(conn)?.policy;
        f(conn, &policy)
    }
}

// Times as the API shows them.
pub use crate::services::utc;
