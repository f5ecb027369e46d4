//! An id named in a request body (or in a query that refers to records) that does not exist,
//! or that the caller may not see, is a refusal: 422 with a stable `unknown_<thing>` code.
//! 404 is kept for the id in the URL. One test per route that takes such an id; each checks
//! that nothing was written.

use chrono::TimeDelta;
use diesel::prelude::*;
use serde_json::{Value, json};

use crate::bank::*;
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_request_names_a_patient_that_exists_and_is_visible,
    an_allocation_names_a_unit_that_exists,
    a_crossmatch_names_a_unit_and_a_sample_that_exist,
    compatibility_names_a_unit_a_patient_and_a_request_that_exist,
    a_unit_names_a_collection_that_exists,
    an_emergency_release_names_a_request_that_exists,
    a_collection_names_a_donor_a_device_and_a_request_that_exist,
    a_rescheduled_collection_names_a_device_that_exists,
    a_stimulation_names_a_collection_that_exists,
    a_patient_names_a_hospital_that_exists,
    an_account_names_a_hospital_that_exists,
    a_webhook_names_a_hospital_that_exists,
);

const MISSING: i64 = 999_999;

/// Row counts of every table these routes write (and the audit trail).
fn written(app: &TestApp) -> Vec<(&'static str, i64)> {
    use granulo::store::schema::*;
    let mut conn = app.state.pool.get().expect("conn");
    let c = &mut *conn;
    vec![
        ("audit_log", audit_log::table.count().get_result(c).expect("count")),
        ("patients", patients::table.count().get_result(c).expect("count")),
        ("requests", requests::table.count().get_result(c).expect("count")),
        ("allocations", allocations::table.count().get_result(c).expect("count")),
        (
            "crossmatches",
            crossmatches::table.count().get_result(c).expect("count"),
        ),
        ("units", units::table.count().get_result(c).expect("count")),
        (
            "emergency_releases",
            emergency_releases::table.count().get_result(c).expect("count"),
        ),
        ("collections", collections::table.count().get_result(c).expect("count")),
        (
            "stimulations",
            stimulations::table.count().get_result(c).expect("count"),
        ),
        ("users", users::table.count().get_result(c).expect("count")),
        (
            "webhook_subscriptions",
            webhook_subscriptions::table.count().get_result(c).expect("count"),
        ),
    ]
}

/// `reply` is the 422 `code` and the database is as it was at `before`.
fn refused(app: &TestApp, reply: Reply, code: &str, before: &[(&'static str, i64)]) {
    reply.problem(422, code);
    assert_eq!(written(app), before, "a refused {code} wrote something");
}

async fn a_request_names_a_patient_that_exists_and_is_visible(backend: Backend) {
    let mut b = bank(backend).await;
    let (_, other) = hospital(&mut b.app).await;
    let theirs = b.patient(&patient_body("MRN-REF", "O", "positive", "male")).await;
    let before = written(&b.app);
    for token in [&b.hosp, &b.tech] {
        let r = b
            .app
            .post("/api/v1/requests", Some(token), &request_body(MISSING, 1))
            .await;
        refused(&b.app, r, "unknown_patient", &before);
    }
    // Another hospital's patient is answered as one that does not exist.
    let r = b
        .app
        .post("/api/v1/requests", Some(&other), &request_body(theirs, 1))
        .await;
    refused(&b.app, r, "unknown_patient", &before);
    b.request(&request_body(theirs, 1)).await;
}

async fn an_allocation_names_a_unit_that_exists(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("MRN-REF", "O", "positive", "male")).await;
    let request = b.request(&request_body(patient, 1)).await;
    let before = written(&b.app);
    let r = b.allocate(&b.tech, request, json!({"unit_id": MISSING})).await;
    refused(&b.app, r, "unknown_unit", &before);
    // The request in the URL stays a 404.
    let (unit, _) = b.ready("O", "negative", "negative", 1).await;
    b.allocate(&b.tech, MISSING, json!({"unit_id": unit}))
        .await
        .problem(404, "not_found");
}

async fn a_crossmatch_names_a_unit_and_a_sample_that_exist(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("MRN-REF", "O", "positive", "male")).await;
    let sample = b.sample(patient).await;
    let (unit, _) = b.ready("O", "negative", "negative", 1).await;
    let before = written(&b.app);
    for (unit, sample, code) in [(MISSING, sample, "unknown_unit"), (unit, MISSING, "unknown_sample")] {
        let r = b
            .app
            .post(
                "/api/v1/crossmatches",
                Some(&b.tech),
                &json!({"unit_id": unit, "sample_id": sample, "result": "compatible", "method": "iat"}),
            )
            .await;
        refused(&b.app, r, code, &before);
    }
    b.crossmatch(unit, sample, "compatible").await;
}

async fn compatibility_names_a_unit_a_patient_and_a_request_that_exist(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("MRN-REF", "O", "positive", "male")).await;
    let (unit, _) = b.ready("O", "negative", "negative", 1).await;
    let before = written(&b.app);
    for (query, code) in [
        (format!("unit_id={MISSING}&patient_id={patient}"), "unknown_unit"),
        (format!("unit_id={unit}&patient_id={MISSING}"), "unknown_patient"),
        (
            format!("unit_id={unit}&patient_id={patient}&request_id={MISSING}"),
            "unknown_request",
        ),
    ] {
        let r = b
            .app
            .get(&format!("/api/v1/compatibility?{query}"), Some(&b.tech))
            .await;
        refused(&b.app, r, code, &before);
    }
    b.compatibility(unit, patient).await;
}

async fn a_unit_names_a_collection_that_exists(backend: Backend) {
    let b = bank(backend).await;
    let before = written(&b.app);
    let r = b
        .app
        .post(
            "/api/v1/units",
            Some(&b.tech),
            &json!({"source": {"type": "collection", "collection_id": MISSING}, "product_code": PRODUCT,
                    "volume_ml": 250, "granulocyte_count": 5e10}),
        )
        .await;
    refused(&b.app, r, "unknown_collection", &before);
}

async fn an_emergency_release_names_a_request_that_exists(backend: Backend) {
    let b = bank(backend).await;
    let (unit, _) = b.supplier_unit("O", "negative", "negative", 1).await;
    let before = written(&b.app);
    let r = b
        .app
        .post(
            &format!("/api/v1/units/{unit}/release"),
            Some(&b.director),
            &json!({"emergency": true, "request_id": MISSING,
                    "physician": {"name": "Dr Fleming", "acknowledged_at": ts(now_minute())}}),
        )
        .await;
    refused(&b.app, r, "unknown_request", &before);
    assert_eq!(b.unit(unit).await["status"], "quarantined");
}

fn booking(donor: i64, device: i64, request: Option<i64>) -> Value {
    json!({"donor_id": donor, "device_id": device, "request_id": request,
           "scheduled_start": ts(now_minute() + TimeDelta::days(2))})
}

async fn a_collection_names_a_donor_a_device_and_a_request_that_exist(backend: Backend) {
    let b = bank(backend).await;
    let donor = b.app.register_donor(&b.tech, &donor_body("Ref", "O", "negative")).await;
    let device = b.app.create_device(&b.tech, "Apheresis R").await;
    let before = written(&b.app);
    for (body, code) in [
        (booking(MISSING, device, None), "unknown_donor"),
        (booking(donor, MISSING, None), "unknown_device"),
        (booking(donor, device, Some(MISSING)), "unknown_request"),
    ] {
        let r = b.app.post("/api/v1/collections", Some(&b.tech), &body).await;
        refused(&b.app, r, code, &before);
    }
    b.app
        .post("/api/v1/collections", Some(&b.tech), &booking(donor, device, None))
        .await
        .ok(201);
}

async fn a_rescheduled_collection_names_a_device_that_exists(backend: Backend) {
    let b = bank(backend).await;
    let donor = b.app.register_donor(&b.tech, &donor_body("Ref", "O", "negative")).await;
    let device = b.app.create_device(&b.tech, "Apheresis R").await;
    let booked = b
        .app
        .post("/api/v1/collections", Some(&b.tech), &booking(donor, device, None))
        .await;
    let id = booked.ok(201)["id"].as_i64().expect("collection");
    let before = written(&b.app);
    let path = format!("/api/v1/collections/{id}");
    let r = b.app.patch(&path, Some(&b.tech), &json!({"device_id": MISSING})).await;
    refused(&b.app, r, "unknown_device", &before);
    assert_eq!(b.app.get(&path, Some(&b.tech)).await.ok(200)["device_id"], device);
    // The collection in the URL stays a 404.
    b.app
        .patch(
            &format!("/api/v1/collections/{MISSING}"),
            Some(&b.tech),
            &json!({"device_id": device}),
        )
        .await
        .problem(404, "not_found");
}

async fn a_stimulation_names_a_collection_that_exists(backend: Backend) {
    let b = bank(backend).await;
    let donor = b.app.register_donor(&b.tech, &donor_body("Ref", "O", "negative")).await;
    let before = written(&b.app);
    let r = b
        .app
        .post(
            &format!("/api/v1/donors/{donor}/stimulations"),
            Some(&b.tech),
            &json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug",
                    "administered_at": ts(now_minute() - TimeDelta::hours(1)), "collection_id": MISSING}),
        )
        .await;
    refused(&b.app, r, "unknown_collection", &before);
}

async fn a_patient_names_a_hospital_that_exists(backend: Backend) {
    let b = bank(backend).await;
    let before = written(&b.app);
    let mut body = patient_body("MRN-REF", "O", "positive", "male");
    body["hospital_id"] = json!(MISSING);
    let r = b.app.post("/api/v1/patients", Some(&b.tech), &body).await;
    refused(&b.app, r, "unknown_hospital", &before);
}

async fn an_account_names_a_hospital_that_exists(backend: Backend) {
    let mut b = bank(backend).await;
    let admin = b.app.admin_token().await;
    let user = b.app.create_user("ref-technologist", "technologist", None).await;
    let before = written(&b.app);
    let r = b
        .app
        .post(
            "/api/v1/users",
            Some(&admin),
            &json!({"username": "ref-new", "password": PASSWORD, "role": "hospital", "hospital_id": MISSING}),
        )
        .await;
    refused(&b.app, r, "unknown_hospital", &before);
    let path = format!("/api/v1/users/{user}");
    let r = b
        .app
        .patch(
            &path,
            Some(&admin),
            &json!({"role": "hospital", "hospital_id": MISSING}),
        )
        .await;
    refused(&b.app, r, "unknown_hospital", &before);
    assert_eq!(b.app.get(&path, Some(&admin)).await.ok(200)["role"], "technologist");
}

async fn a_webhook_names_a_hospital_that_exists(backend: Backend) {
    let mut b = bank(backend).await;
    let admin = b.app.admin_token().await;
    let before = written(&b.app);
    let r = b
        .app
        .post(
            "/api/v1/webhooks",
            Some(&admin),
            &json!({"url": "https://interface.example.org/granulo", "events": ["*"],
                    "secret": "a long random shared secret", "hospital_id": MISSING}),
        )
        .await;
    refused(&b.app, r, "unknown_hospital", &before);
}
