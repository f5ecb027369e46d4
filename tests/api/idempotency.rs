//! `Idempotency-Key` on every state-changing POST: a retry gets the first answer and writes
//! nothing, another body or route is 422, keys are per caller, expire with the policy, survive
//! a lost answer without a second write, and hold across two instances.

use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use serde_json::{Value, json};

use crate::bank::bank;
use crate::both_backends;
use crate::fhir_support::FHIR_JSON;
use crate::helpers::*;

both_backends!(
    retries_get_the_first_answer_and_write_once,
    keys_belong_to_one_caller,
    keys_expire_after_the_policy_period,
    a_reserved_key_whose_answer_was_lost_never_runs_again,
    two_instances_racing_one_key_write_once,
    answers_with_secrets_are_never_stored,
);

async fn keyed(app: &Http, token: &str, path: &str, key: &str, body: &Value) -> Reply {
    let fhir = path.starts_with("/fhir/");
    let content_type = if fhir { FHIR_JSON } else { "application/json" };
    let mut req = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .header("Content-Type", content_type)
        .body(serde_json::to_vec(body).expect("json"));
    if fhir {
        req = req.header("Accept", FHIR_JSON);
    }
    app.send(req).await
}

fn count(app: &TestApp, table: &str) -> i64 {
    use granulo::store::schema::*;
    let mut conn = app.state.pool.get().expect("conn");
    let c = &mut *conn;
    match table {
        "units" => units::table.count().get_result(c),
        "crossmatches" => crossmatches::table.count().get_result(c),
        "allocations" => allocations::table.count().get_result(c),
        "samples" => samples::table.count().get_result(c),
        "audit_log" => audit_log::table.count().get_result(c),
        "idempotency_keys" => idempotency_keys::table.count().get_result(c),
        "api_clients" => api_clients::table.count().get_result(c),
        other => panic!("no count for {other}"),
    }
    .expect("count")
}

/// Sends `body` under `key` twice: the retry gets the first answer, marked replayed, and
/// neither `table` nor the audit trail grows; another body or route with the key is 422.
async fn retried(app: &TestApp, token: &str, path: &str, key: &str, body: &Value, table: &str) -> Value {
    let first = keyed(app, token, path, key, body).await;
    assert!(first.status.is_success(), "{path}: {}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let (rows, audit) = (count(app, table), count(app, "audit_log"));
    let again = keyed(app, token, path, key, body).await;
    assert_eq!(again.status, first.status, "{path}: {}", again.text);
    assert_eq!(again.body, first.body, "{path}");
    assert_eq!(again.headers["idempotent-replayed"], "true", "{path}");
    assert_eq!(again.headers.get("location"), first.headers.get("location"), "{path}");
    assert_eq!(count(app, table), rows, "{path}: a retry wrote {table}");
    assert_eq!(count(app, "audit_log"), audit, "{path}: a retry was audited");
    let mut other = body.clone();
    other["another"] = json!(true);
    let reused = keyed(app, token, path, key, &other).await;
    assert_eq!(reused.status.as_u16(), 422, "{path}: {}", reused.text);
    assert!(reused.text.contains("idempotency_key_reused"), "{}", reused.text);
    let elsewhere = keyed(app, token, "/api/v1/storage-readings", key, body).await;
    assert_eq!(elsewhere.status.as_u16(), 422, "{}", elsewhere.text);
    assert!(elsewhere.text.contains("idempotency_key_reused"), "{}", elsewhere.text);
    assert_eq!(count(app, table), rows);
    assert_eq!(count(app, "audit_log"), audit);
    first.body
}

async fn retries_get_the_first_answer_and_write_once(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech, hosp) = (&b.app, b.tech.clone(), b.hosp.clone());
    retried(
        app,
        &tech,
        "/api/v1/units",
        "unit-1",
        &supplier_unit_body(&next_din(), "O", "negative"),
        "units",
    )
    .await;

    let patient = b.typed_patient(&patient_body("IDEM-1", "O", "positive", "male")).await;
    let request = b.request_for(patient, 2).await;
    let (unit, din) = b.ready("O", "negative", "negative", 1).await;
    let sample = b.sample(patient).await;
    let xm = json!({"unit_id": unit, "sample_id": sample, "result": "compatible", "method": "iat"});
    retried(app, &tech, "/api/v1/crossmatches", "xm-1", &xm, "crossmatches").await;
    let path = format!("/api/v1/requests/{request}/allocations");
    let allocation = retried(app, &tech, &path, "alloc-1", &json!({"unit_id": unit}), "allocations").await["id"]
        .as_i64()
        .expect("allocation");
    b.issued(allocation, din).await;
    b.backdate_issue(allocation, Utc::now() - TimeDelta::hours(1));
    let path = format!("/api/v1/allocations/{allocation}/transfusion");
    let started = json!({"started_at": ts(now_minute())});
    let t = retried(app, &hosp, &path, "tx-1", &started, "allocations").await;
    assert!(t["transfusion_started_at"].is_string(), "{t}");

    let specimen = json!({
        "resourceType": "Specimen",
        "extension": [{"url": "https://granulo.org/fhir/StructureDefinition/recent-transfusion-or-pregnancy", "valueBoolean": true}],
        "type": {"text": "Blood"},
        "subject": {"reference": format!("Patient/{patient}")},
        "collection": {"collectedDateTime": ts(now_minute() - TimeDelta::hours(1))}
    });
    retried(app, &hosp, "/fhir/R5/Specimen", "specimen-1", &specimen, "samples").await;
}

async fn keys_belong_to_one_caller(backend: Backend) {
    let b = bank(backend).await;
    let units = count(&b.app, "units");
    let mine = keyed(
        &b.app,
        &b.tech,
        "/api/v1/units",
        "shared",
        &supplier_unit_body(&next_din(), "O", "negative"),
    )
    .await;
    mine.ok(201);
    // The director's key of the same name is another key: another body is no reuse.
    let theirs = keyed(
        &b.app,
        &b.director,
        "/api/v1/units",
        "shared",
        &supplier_unit_body(&next_din(), "A", "negative"),
    )
    .await;
    assert_ne!(theirs.ok(201)["id"], mine.body["id"]);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
    assert_eq!(count(&b.app, "units"), units + 2);
}

fn backdate_keys(app: &TestApp, hours: i64) {
    use granulo::store::schema::idempotency_keys;
    let mut conn = app.state.pool.get().expect("conn");
    let when = (Utc::now() - TimeDelta::hours(hours)).naive_utc();
    diesel::update(idempotency_keys::table)
        .set(idempotency_keys::created_at.eq(when))
        .execute(&mut *conn)
        .expect("backdate");
}

async fn keys_expire_after_the_policy_period(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech) = (&b.app, b.tech.clone());
    let first = supplier_unit_body(&next_din(), "O", "negative");
    keyed(app, &tech, "/api/v1/units", "daily", &first).await.ok(201);
    // 23 h later (the default period is 24 h) the key still holds.
    backdate_keys(app, 23);
    let other = supplier_unit_body(&next_din(), "O", "negative");
    keyed(app, &tech, "/api/v1/units", "daily", &other)
        .await
        .problem(422, "idempotency_key_reused");
    // After the period it is a new key, looked up lazily.
    backdate_keys(app, 25);
    keyed(app, &tech, "/api/v1/units", "daily", &other).await.ok(201);
    // And the leased job purges what is past the period.
    backdate_keys(app, 25);
    assert_eq!(count(app, "idempotency_keys"), 1);
    let mut conn = app.state.pool.get().expect("conn");
    granulo::jobs::run_once(&mut conn, "idempotency-test", Utc::now()).expect("scan");
    assert_eq!(count(app, "idempotency_keys"), 0);
}

async fn a_reserved_key_whose_answer_was_lost_never_runs_again(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech) = (&b.app, b.tech.clone());
    let me = app.get("/api/v1/me", Some(&tech)).await.ok(200).clone();
    let body = supplier_unit_body(&next_din(), "O", "negative");
    // As a crash between the handler's commit and storing its answer leaves it: reserved.
    {
        let mut conn = app.state.pool.get().expect("conn");
        granulo::store::idempotency::insert(
            &mut conn,
            &granulo::store::idempotency::NewKey {
                account: &format!("user:{}", me["id"]),
                key: "lost",
                request_hash: &granulo::services::idempotency::body_hash(&serde_json::to_vec(&body).expect("json")),
                method: "POST",
                path: "/api/v1/units",
                status_code: granulo::store::idempotency::PENDING,
                response_headers: "[]",
                response_body: "",
                at: granulo::store::now(),
            },
        )
        .expect("reserve");
    }
    let (units, audit) = (count(app, "units"), count(app, "audit_log"));
    let retry = keyed(app, &tech, "/api/v1/units", "lost", &body).await;
    retry.problem(409, "idempotency_key_in_progress");
    assert_eq!(retry.headers["retry-after"], "1");
    assert_eq!((count(app, "units"), count(app, "audit_log")), (units, audit));
    // A refused first attempt (4xx) frees its key: nothing was written, so a retry may run.
    let bad = json!({"source": {"type": "external"}});
    keyed(app, &tech, "/api/v1/units", "refused", &bad)
        .await
        .problem(400, "validation_failed");
    keyed(app, &tech, "/api/v1/units", "refused", &body).await.ok(201);
}

async fn two_instances_racing_one_key_write_once(backend: Backend) {
    let b = bank(backend).await;
    let other = spawn_on(backend, b.app.db.clone(), |_| {}).await;
    let patient = b
        .typed_patient(&patient_body("IDEM-RACE", "O", "positive", "male"))
        .await;
    let (unit, _) = b.ready("O", "negative", "negative", 1).await;
    let sample = b.sample(patient).await;
    let xm = json!({"unit_id": unit, "sample_id": sample, "result": "compatible", "method": "iat"});
    let before = count(&b.app, "crossmatches");
    let sends = (0..8).map(|i| {
        let app: &Http = if i % 2 == 0 { &b.app } else { &other };
        keyed(app, &b.tech, "/api/v1/crossmatches", "race", &xm)
    });
    let replies = futures_util::future::join_all(sends).await;
    let mut created = 0;
    for r in &replies {
        match r.status.as_u16() {
            201 if r.headers.get("idempotent-replayed").is_none() => created += 1,
            201 => {}
            409 => assert!(r.text.contains("idempotency_key_in_progress"), "{}", r.text),
            other => panic!("{other}: {}", r.text),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(count(&b.app, "crossmatches"), before + 1);
    // Once settled, every retry on either instance gets the first answer.
    let first = keyed(&b.app, &b.tech, "/api/v1/crossmatches", "race", &xm).await;
    let second = keyed(&other, &b.tech, "/api/v1/crossmatches", "race", &xm).await;
    assert_eq!(first.ok(201), second.ok(201));
    assert_eq!(count(&b.app, "crossmatches"), before + 1);
}

async fn answers_with_secrets_are_never_stored(backend: Backend) {
    let mut b = bank(backend).await;
    let admin = b.app.admin_token().await;
    let path = format!("/api/v1/hospitals/{}/clients", b.hospital);
    let one = keyed(&b.app, &admin, &path, "client", &json!({})).await;
    let two = keyed(&b.app, &admin, &path, "client", &json!({})).await;
    assert_ne!(one.ok(201)["client_id"], two.ok(201)["client_id"]);
    let sign_in = json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD});
    keyed(&b.app, &admin, "/api/v1/auth/login", "login", &sign_in)
        .await
        .ok(200);
    assert_eq!(count(&b.app, "idempotency_keys"), 0);
}
