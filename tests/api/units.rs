//! Units over HTTP: creation, DINs, expiry, irradiation, tests, release, storage, labels.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    walk_through_collection_to_expired_unit,
    concurrent_creation_assigns_distinct_dins_without_gaps,
    external_and_pooled_units_are_validated,
    release_requires_tests_or_a_physician,
    irradiation_storage_and_discard,
    units_are_found_by_id_or_din_and_listed,
);

async fn unit_from(app: &TestApp, token: &str, collection: i64) -> Reply {
    app.post(
        "/api/v1/units",
        Some(token),
        &json!({"source": {"type": "collection", "collection_id": collection},
                "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 3.2e10, "red_cell_volume_ml": 18.5}),
    )
    .await
}

/// A negative result for every marker the policy requires.
async fn all_negative(app: &TestApp, token: &str, unit: i64) {
    let policy = app.get("/api/v1/policy", Some(token)).await.ok(200).clone();
    let markers = policy["unit"]["required_markers"].as_array().expect("markers").clone();
    assert!(!markers.is_empty());
    for marker in markers {
        app.post(
            &format!("/api/v1/units/{unit}/tests"),
            Some(token),
            &json!({"marker": marker, "result": "negative"}),
        )
        .await
        .ok(200);
    }
}

fn ids(r: &Reply) -> Vec<i64> {
    r.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["id"].as_i64())
        .collect()
}

/// Collection → unit → irradiation → negative tests → release → available with hours left →
/// expires → refused for everything afterwards.
async fn walk_through_collection_to_expired_unit(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    // Ended almost 24 h ago: the unit has seconds to live.
    let ended = Utc::now() - TimeDelta::hours(24) + TimeDelta::seconds(12);
    let ended = chrono::DurationRound::duration_trunc(ended, TimeDelta::seconds(1)).expect("trunc");
    let collection = completed_collection(&app, &tech, "Una", ended).await;
    let created = unit_from(&app, &tech, collection).await;
    let unit = created.ok(201).clone();
    let id = unit["id"].as_i64().expect("id");
    let din = unit["din"].as_str().expect("din").to_owned();
    assert_eq!(unit["status"], "quarantined");
    assert_eq!(unit["abo"], "O");
    assert_eq!(unit["rhd"], "negative");
    assert_eq!(unit["cmv"], "negative");
    assert_eq!(unit["source"], "collection");
    assert_eq!(unit["expires_at"], json!(ts(ended + TimeDelta::hours(24))));
    assert!(din.starts_with("A9999") && din.len() == 13, "{din}");
    assert_eq!(
        unit_from(&app, &tech, collection).await.problem(409, "unit_exists")["code"],
        "unit_exists"
    );

    let irradiated = app
        .post(
            &format!("/api/v1/units/{id}/irradiation"),
            Some(&tech),
            &json!({"dose_gy": 25, "device": "Gammacell 3000"}),
        )
        .await;
    assert_eq!(irradiated.ok(200)["irradiated"], true);
    all_negative(&app, &tech, id).await;
    let released = app
        .post(
            &format!("/api/v1/units/{id}/release"),
            Some(&tech),
            &json!({"emergency": false}),
        )
        .await;
    assert_eq!(released.ok(200)["status"], "available");
    assert_eq!(released.body["release"]["kind"], "tested");

    let available = app.get("/api/v1/units?status=available", Some(&tech)).await;
    assert_eq!(ids(&available), vec![id]);
    let hours = available.body["items"][0]["hours_remaining"].as_f64().expect("hours");
    assert!(hours > 0.0 && hours < 0.01, "{hours}");
    let label = app.get(&format!("/api/v1/units/{id}/label"), Some(&tech)).await;
    let l = label.ok(200);
    assert_eq!(l["product_name"], "Granulocytes, Apheresis");
    assert_eq!(l["blood_group"], "O RhD negative");
    assert_eq!(l["isbt128"]["blood_group"], "=%9500");
    assert_eq!(l["isbt128"]["product"], format!("=<{PRODUCT}"));
    assert!(
        l["statements"]
            .as_array()
            .expect("statements")
            .contains(&json!("Do not agitate"))
    );
    assert!(
        l["statements"]
            .as_array()
            .expect("statements")
            .contains(&json!("Irradiated"))
    );
    // The label's barcodes decode back to the unit.
    let data = format!(
        "{}{}{}{}",
        l["isbt128"]["din"].as_str().expect("din"),
        l["isbt128"]["blood_group"].as_str().expect("bg"),
        l["isbt128"]["product"].as_str().expect("product"),
        l["isbt128"]["expiry"].as_str().expect("expiry")
    );
    let decoded = app
        .post("/api/v1/isbt128/decode", Some(&tech), &json!({"data": data}))
        .await;
    assert_eq!(decoded.ok(200)["elements"][0]["din"], din.as_str());
    assert_eq!(decoded.body["elements"][0]["flags"]["type"], "type3");

    // Let it expire.
    let expires = ended + TimeDelta::hours(24);
    let wait = (expires - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    actix_rt::time::sleep(wait).await;
    let got = app.get(&format!("/api/v1/units/{din}"), Some(&tech)).await;
    assert_eq!(got.ok(200)["status"], "expired");
    assert_eq!(got.body["hours_remaining"], 0.0);
    assert_eq!(
        ids(&app.get("/api/v1/units?status=available", Some(&tech)).await),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(&app.get("/api/v1/units?status=expired", Some(&tech)).await),
        vec![id]
    );
    for (action, body) in [
        ("release", json!({"emergency": false})),
        ("irradiation", json!({"dose_gy": 25})),
    ] {
        app.post(&format!("/api/v1/units/{id}/{action}"), Some(&tech), &body)
            .await
            .problem(409, "unit_expired");
    }
    let discarded = app
        .post(
            &format!("/api/v1/units/{id}/discard"),
            Some(&tech),
            &json!({"reason": "expired"}),
        )
        .await;
    assert_eq!(discarded.ok(200)["status"], "discarded");
    app.post(
        &format!("/api/v1/units/{id}/release"),
        Some(&tech),
        &json!({"emergency": false}),
    )
    .await
    .problem(409, "invalid_transition");

    let admin = app.admin_token().await;
    let trail = app
        .get(&format!("/api/v1/audit?entity_type=unit&entity_id={id}"), Some(&admin))
        .await;
    let actions: Vec<&str> = trail.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions.first(), Some(&"unit.discard"));
    assert_eq!(actions.last(), Some(&"unit.create"));
    assert!(actions.contains(&"unit.release") && actions.contains(&"unit.irradiate"));
}

async fn concurrent_creation_assigns_distinct_dins_without_gaps(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let ended = now_minute() - TimeDelta::hours(1);
    let mut collections = Vec::new();
    for i in 0..8 {
        collections.push(completed_collection(&app, &tech, &format!("Par{i}"), ended).await);
    }
    let replies = futures_util::future::join_all(collections.iter().map(|c| unit_from(&app, &tech, *c))).await;
    let mut sequences: Vec<i64> = replies
        .iter()
        .map(|r| {
            let din = r.ok(201)["din"].as_str().expect("din").to_owned();
            din[7..].parse::<i64>().expect("sequence")
        })
        .collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=8).collect::<Vec<_>>(), "no duplicates, no gaps");
    // A supplier unit already carrying our next DIN is skipped over, not collided with.
    let yy = chrono::Datelike::year(&Utc::now()) % 100;
    let taken = format!("A9999{yy:02}000009");
    app.post("/api/v1/units", Some(&tech), &external(&taken, ended))
        .await
        .ok(201);
    // A refused creation does not use up a number.
    unit_from(&app, &tech, collections[0]).await.problem(409, "unit_exists");
    let next = completed_collection(&app, &tech, "After", ended).await;
    let din = unit_from(&app, &tech, next).await.ok(201)["din"]
        .as_str()
        .expect("din")
        .to_owned();
    assert_eq!(&din[7..], "000010");
}

fn external(din: &str, collected: DateTime<Utc>) -> Value {
    json!({"source": {"type": "external", "supplier": "NHSBT Filton", "din": din, "abo": "A", "rhd": "positive",
                      "collected_at": ts(collected)},
           "product_code": PRODUCT, "volume_ml": 200, "granulocyte_count": 0.9e10})
}

async fn external_and_pooled_units_are_validated(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let collected = now_minute() - TimeDelta::hours(2);
    let created = app
        .post("/api/v1/units", Some(&tech), &external("G123417654321A", collected))
        .await;
    let unit = created.ok(201).clone();
    assert_eq!(unit["din"], "G123417654321");
    assert_eq!(unit["check_character"], "A");
    assert_eq!(unit["cmv"], "unknown");
    assert_eq!(unit["expires_at"], json!(ts(collected + TimeDelta::hours(24))));
    app.post("/api/v1/units", Some(&tech), &external("G123417654321", collected))
        .await
        .problem(409, "din_exists");
    app.post("/api/v1/units", Some(&tech), &external("A999921123456B", collected))
        .await
        .problem(422, "invalid_check_character");
    app.post("/api/v1/units", Some(&tech), &external("=A99992112345699", collected))
        .await
        .problem(422, "invalid_isbt128");
    app.post(
        "/api/v1/units",
        Some(&tech),
        &external("A999921123456", collected - TimeDelta::hours(25)),
    )
    .await
    .problem(422, "unit_expired");

    // Pooled: every contributing DIN kept; expires 23:59 on the day after collection.
    let mut pooled = external("W000009123456", collected);
    pooled["pooled_from"] = json!(["A999921123456", "G1016108403863", "Z549917123456P"]);
    let p = app.post("/api/v1/units", Some(&tech), &pooled).await;
    let body = p.ok(201).clone();
    assert_eq!(body["pooled"], true);
    assert_eq!(
        body["pooled_from"],
        json!(["A999921123456", "G101610840386", "Z549917123456"])
    );
    let day_after = (collected + TimeDelta::days(1)).date_naive();
    assert_eq!(body["expires_at"], json!(format!("{day_after}T23:59:00Z")));
    let label = app
        .get(&format!("/api/v1/units/{}/label", body["id"]), Some(&tech))
        .await;
    assert_eq!(label.ok(200)["product_name"], "Granulocytes, Pooled");
    assert_eq!(label.body["producer"], "NHSBT Filton");

    let base = external("A999921123457", collected);
    let with = |path: &[&str], value: Value| {
        let mut b = base.clone();
        let mut slot = &mut b;
        for key in path {
            slot = &mut slot[*key];
        }
        *slot = value;
        b
    };
    for body in [
        with(&["product_code"], json!("E99")),
        with(&["product_code"], json!("e9999V00")),
        with(&["volume_ml"], json!(0)),
        with(&["volume_ml"], json!(5000)),
        with(&["granulocyte_count"], json!(-1)),
        with(&["red_cell_volume_ml"], json!(900)),
        with(&["source", "abo"], json!("X")),
        with(&["source", "collected_at"], json!(ts(Utc::now() + TimeDelta::hours(2)))),
        with(&["source", "supplier"], json!("")),
        with(&["source", "type"], json!("magic")),
        with(&["pooled_from"], json!(["A999921123456"])),
        with(&["pooled_from"], json!(["A999921123456", "A999921123456"])),
        with(&["pooled_from"], json!(["A999921123456", "nonsense"])),
        with(&["colour"], json!("red")),
    ] {
        let r = app.post("/api/v1/units", Some(&tech), &body).await;
        r.problem(400, "validation_failed");
    }
    app.post(
        "/api/v1/units",
        Some(&tech),
        &json!({"source": {"type": "collection", "collection_id": 999_999}, "product_code": PRODUCT,
                "volume_ml": 250, "granulocyte_count": 3e10}),
    )
    .await
    .problem(422, "unknown_collection");
    // A collection that has not been completed yields no unit.
    let donor = app.register_donor(&tech, &donor_body("Nina", "O", "positive")).await;
    let device = app.create_device(&tech, "Optia").await;
    let booked = app.book(&tech, donor, device, now_minute() + TimeDelta::days(1)).await;
    let cid = booked.ok(201)["id"].as_i64().expect("id");
    app.post(
        "/api/v1/units",
        Some(&tech),
        &json!({"source": {"type": "collection", "collection_id": cid}, "product_code": PRODUCT,
                "volume_ml": 250, "granulocyte_count": 3e10}),
    )
    .await
    .problem(409, "collection_not_completed");
    // Nothing but the two valid units was stored.
    assert_eq!(ids(&app.get("/api/v1/units", Some(&tech)).await).len(), 2);
}

async fn release_requires_tests_or_a_physician(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let collected = now_minute() - TimeDelta::hours(1);
    let id = app
        .post("/api/v1/units", Some(&tech), &external("A999921123456", collected))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("id");
    let (_, hosp) = hospital(&mut app).await;
    let patient = typed_patient(&app, &hosp, &tech, &patient_body("ER-1", "A", "positive", "male")).await;
    let request = app
        .post("/api/v1/requests", Some(&hosp), &request_body(patient, 1))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("request");
    let release = |token: &str, body: Value| {
        let path = format!("/api/v1/units/{id}/release");
        let (app, token) = (&app, token.to_owned());
        async move { app.post(&path, Some(&token), &body).await }
    };
    app.post(
        &format!("/api/v1/units/{id}/tests"),
        Some(&tech),
        &json!({"marker": "anti_hiv", "result": "pending"}),
    )
    .await
    .ok(200);
    let blocked = release(&tech, json!({"emergency": false})).await;
    let codes = reason_codes(blocked.problem(422, "release_blocked"));
    assert_eq!(codes.iter().filter(|c| *c == "marker_pending").count(), 1);
    assert_eq!(codes.iter().filter(|c| *c == "marker_missing").count(), 7);
    release(
        &tech,
        json!({"emergency": true, "physician": {"name": "Dr Fleming", "acknowledged_at": ts(now_minute())}}),
    )
    .await
    .problem(403, "forbidden");
    release(&director, json!({"emergency": true}))
        .await
        .problem(400, "validation_failed");
    release(
        &director,
        json!({"emergency": false, "physician": {"name": "Dr Fleming", "acknowledged_at": ts(now_minute())}}),
    )
    .await
    .problem(400, "validation_failed");
    // An emergency release is for one request.
    let physician = json!({"name": "Dr Fleming", "acknowledged_at": ts(now_minute())});
    release(&director, json!({"emergency": true, "physician": physician}))
        .await
        .problem(400, "validation_failed");
    release(
        &director,
        json!({"emergency": true, "request_id": 999_999, "physician": physician}),
    )
    .await
    .problem(422, "unknown_request");
    release(
        &director,
        json!({"emergency": true, "request_id": request,
               "physician": {"name": "Dr Fleming", "acknowledged_at": ts(collected - TimeDelta::minutes(5))}}),
    )
    .await
    .problem(400, "validation_failed");
    let ok = release(
        &director,
        json!({"emergency": true, "request_id": request, "physician": physician}),
    )
    .await;
    let unit = ok.ok(200);
    assert_eq!(unit["status"], "available");
    assert_eq!(unit["release"]["kind"], "emergency");
    assert_eq!(unit["release"]["physician"]["name"], "Dr Fleming");
    assert_eq!(unit["release"]["request_id"], request);
    assert_eq!(
        unit["release"]["pending_markers"].as_array().map(Vec::len),
        Some(8),
        "{unit}"
    );
    let label = app.get(&format!("/api/v1/units/{id}/label"), Some(&tech)).await;
    assert_eq!(label.ok(200)["emergency_release"], true);
    assert!(label.text.contains("EMERGENCY RELEASE") && label.text.contains("Dr Fleming"));
    assert_eq!(label.body["irradiated"], false);

    // A positive result afterwards: quarantined, and an urgent alert that names the unit.
    let positive = app
        .post(
            &format!("/api/v1/units/{id}/tests"),
            Some(&tech),
            &json!({"marker": "HBsAg", "result": "positive"}),
        )
        .await;
    assert_eq!(positive.ok(200)["status"], "quarantined");
    assert_eq!(positive.body["quarantine_reason"], "reactive_marker");
    assert_eq!(
        positive.body["status_reason"],
        "hbsag reactive: the unit can only be discarded"
    );
    let alerts = app.get("/api/v1/alerts?status=open", Some(&tech)).await;
    let alert = alerts.ok(200)["items"][0].clone();
    assert_eq!(alert["kind"], "unit.positive_result_after_release");
    assert_eq!(alert["severity"], "urgent");
    assert_eq!(alert["entity_id"], id.to_string());
    assert_eq!(alert["details"]["din"], "A999921123456");
    // The same result again does not raise a second alert.
    app.post(
        &format!("/api/v1/units/{id}/tests"),
        Some(&tech),
        &json!({"marker": "hbsag", "result": "positive"}),
    )
    .await
    .ok(200);
    assert_eq!(
        app.get("/api/v1/alerts", Some(&tech)).await.ok(200)["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let alert_id = alert["id"].as_i64().expect("alert id");
    let acked = app
        .post(&format!("/api/v1/alerts/{alert_id}/ack"), Some(&tech), &json!({}))
        .await;
    assert_eq!(acked.ok(200)["status"], "acknowledged");
    app.post(&format!("/api/v1/alerts/{alert_id}/ack"), Some(&tech), &json!({}))
        .await
        .problem(409, "already_acknowledged");
    // A positive marker blocks even an emergency release.
    let again = release(
        &director,
        json!({"emergency": true, "request_id": request, "physician": physician}),
    )
    .await;
    assert_eq!(
        reason_codes(again.problem(422, "release_blocked")),
        vec!["marker_positive"]
    );
    app.post(
        &format!("/api/v1/units/{id}/tests"),
        Some(&tech),
        &json!({"marker": "HBs Ag", "result": "positive"}),
    )
    .await
    .problem(400, "validation_failed");
    app.post(
        &format!("/api/v1/units/{id}/tests"),
        Some(&tech),
        &json!({"marker": "hbsag", "result": "unclear"}),
    )
    .await
    .problem(400, "validation_failed");
}

async fn irradiation_storage_and_discard(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let collected = now_minute() - TimeDelta::hours(1);
    let id = app
        .post("/api/v1/units", Some(&tech), &external("A999921123456", collected))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("id");
    let path = |what: &str| format!("/api/v1/units/{id}/{what}");
    let low = app
        .post(&path("irradiation"), Some(&tech), &json!({"dose_gy": 15}))
        .await;
    assert_eq!(
        reason_codes(low.problem(422, "irradiation_dose_out_of_range")),
        vec!["irradiation_dose_out_of_range"]
    );
    app.post(
        &path("irradiation"),
        Some(&tech),
        &json!({"dose_gy": 25, "irradiated_at": ts(collected - TimeDelta::hours(1))}),
    )
    .await
    .problem(400, "validation_failed");
    let ok = app
        .post(&path("irradiation"), Some(&tech), &json!({"dose_gy": 50}))
        .await;
    assert_eq!(ok.ok(200)["irradiation"]["dose_gy"], 50.0);
    assert!(
        ok.body["irradiation"]["irradiated_by"]
            .as_str()
            .is_some_and(|s| s.starts_with("technologist"))
    );
    app.post(&path("irradiation"), Some(&tech), &json!({"dose_gy": 25}))
        .await
        .problem(409, "already_irradiated");

    // Readings: in range keeps the unit, out of range quarantines an available one.
    all_negative(&app, &tech, id).await;
    app.post(&path("release"), Some(&tech), &json!({"emergency": false}))
        .await
        .ok(200);
    let fine = app
        .post(
            &path("storage-readings"),
            Some(&tech),
            &json!({"temperature_c": 22.5, "location": "Bench 2"}),
        )
        .await;
    assert_eq!(fine.ok(201)["in_range"], true);
    assert_eq!(fine.body["unit_status"], "available");
    let hot = app
        .post(&path("storage-readings"), Some(&tech), &json!({"temperature_c": 26.0}))
        .await;
    assert_eq!(hot.ok(201)["in_range"], false);
    assert_eq!(hot.body["unit_status"], "quarantined");
    let unit = app.get(&format!("/api/v1/units/{id}"), Some(&tech)).await;
    assert!(unit.ok(200)["status_reason"].as_str().is_some_and(|r| r.contains("26")));
    let alerts = app.get("/api/v1/alerts?status=open", Some(&tech)).await;
    assert_eq!(alerts.ok(200)["items"][0]["kind"], "unit.quarantined");
    for body in [
        json!({"temperature_c": 400}),
        json!({"temperature_c": "warm"}),
        json!({"temperature_c": 22, "at": ts(Utc::now() + TimeDelta::hours(1))}),
    ] {
        app.post(&path("storage-readings"), Some(&tech), &body)
            .await
            .problem(400, "validation_failed");
    }

    app.post(&path("discard"), Some(&tech), &json!({"reason": ""}))
        .await
        .problem(400, "validation_failed");
    app.post(
        &path("discard"),
        Some(&tech),
        &json!({"reason": "temperature excursion"}),
    )
    .await
    .ok(200);
    app.post(&path("discard"), Some(&tech), &json!({"reason": "again"}))
        .await
        .problem(409, "invalid_transition");
    app.post(&path("irradiation"), Some(&tech), &json!({"dose_gy": 25}))
        .await
        .problem(409, "invalid_transition");
    app.post("/api/v1/units/999999/discard", Some(&tech), &json!({"reason": "x"}))
        .await
        .problem(404, "not_found");
}

async fn units_are_found_by_id_or_din_and_listed(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let soon = now_minute() - TimeDelta::hours(20);
    let later = now_minute() - TimeDelta::hours(2);
    let a = app
        .post("/api/v1/units", Some(&tech), &external("A999921123456", later))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("id");
    let mut o_neg = external("G123417654321", soon);
    o_neg["source"]["abo"] = json!("O");
    o_neg["source"]["rhd"] = json!("negative");
    let b = app.post("/api/v1/units", Some(&tech), &o_neg).await.ok(201)["id"]
        .as_i64()
        .expect("id");

    for key in ["A999921123456", "A9999211234563", "a999921123456"] {
        assert_eq!(
            app.get(&format!("/api/v1/units/{key}"), Some(&tech)).await.ok(200)["id"],
            a,
            "{key}"
        );
    }
    // A DIN can be all digits (FINs may start with 1–9).
    let digits = app
        .post("/api/v1/units", Some(&tech), &external("1234526000001", later))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("id");
    assert_eq!(
        app.get("/api/v1/units/1234526000001", Some(&tech)).await.ok(200)["id"],
        digits
    );
    app.post(
        &format!("/api/v1/units/{digits}/discard"),
        Some(&tech),
        &json!({"reason": "test"}),
    )
    .await
    .ok(200);
    app.get("/api/v1/units/A999921123456X", Some(&tech))
        .await
        .problem(422, "invalid_check_character");
    app.get("/api/v1/units/A999921654321", Some(&tech))
        .await
        .problem(404, "not_found");
    app.get("/api/v1/units/999999", Some(&tech))
        .await
        .problem(404, "not_found");
    app.get("/api/v1/units/nonsense", Some(&tech))
        .await
        .problem(422, "invalid_isbt128");
    let hospital = app.token_for("hospital").await;
    app.get(&format!("/api/v1/units/{a}"), Some(&hospital))
        .await
        .problem(404, "not_found");
    app.get("/api/v1/units", Some(&hospital))
        .await
        .problem(403, "forbidden");

    // First-expiring first, with filters and keyset pages.
    assert_eq!(ids(&app.get("/api/v1/units", Some(&tech)).await), vec![b, a, digits]);
    assert_eq!(ids(&app.get("/api/v1/units?abo=A", Some(&tech)).await), vec![a, digits]);
    assert_eq!(
        ids(&app.get("/api/v1/units?status=discarded", Some(&tech)).await),
        vec![digits]
    );
    assert_eq!(ids(&app.get("/api/v1/units?rhd=negative", Some(&tech)).await), vec![b]);
    assert_eq!(
        ids(&app.get("/api/v1/units?expiring_within_hours=8", Some(&tech)).await),
        vec![b]
    );
    assert_eq!(
        ids(&app.get("/api/v1/units?status=quarantined", Some(&tech)).await),
        vec![b, a]
    );
    assert_eq!(
        ids(&app.get("/api/v1/units?status=available", Some(&tech)).await),
        Vec::<i64>::new()
    );
    let first = app.get("/api/v1/units?limit=1", Some(&tech)).await;
    assert_eq!(ids(&first), vec![b]);
    let cursor = first.body["next_cursor"].as_str().expect("cursor").to_owned();
    let second = app
        .get(&format!("/api/v1/units?limit=1&cursor={cursor}"), Some(&tech))
        .await;
    assert_eq!(ids(&second), vec![a]);
    let cursor = second.body["next_cursor"].as_str().expect("cursor").to_owned();
    let third = app
        .get(&format!("/api/v1/units?limit=1&cursor={cursor}"), Some(&tech))
        .await;
    assert_eq!(ids(&third), vec![digits]);
    assert_eq!(third.body["next_cursor"], Value::Null);
    app.get("/api/v1/units?status=gone", Some(&tech))
        .await
        .problem(400, "invalid_query");
    app.get("/api/v1/units?expiring_within_hours=0", Some(&tech))
        .await
        .problem(400, "validation_failed");
    app.get("/api/v1/units?cursor=abc", Some(&tech))
        .await
        .problem(400, "validation_failed");
}
