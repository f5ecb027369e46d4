//! Patients, requests, compatibility, allocation, issue and transfusion over HTTP.

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::bank;
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    walk_from_request_to_transfusion_outcome,
    idempotent_requests,
    allocation_refusals_and_overrides,
    issue_checks_every_gate,
    hospitals_see_only_their_own,
    approval_gate_and_cancellation,
    racing_allocations_have_one_winner_per_unit,
    candidates_are_ranked_with_reasons,
    trace_and_lookback_follow_a_unit_both_ways,
    cancelling_leaves_a_unit_that_left_allocated_alone,
);

pub(crate) async fn sample(app: &TestApp, token: &str, patient: i64) -> i64 {
    let r = app
        .post(
            &format!("/api/v1/patients/{patient}/samples"),
            Some(token),
            &json!({"drawn_at": ts(now_minute() - TimeDelta::hours(1)), "transfused_or_pregnant_within_3_months": true}),
        )
        .await;
    r.ok(201)["id"].as_i64().expect("sample id")
}

pub(crate) async fn crossmatch(app: &TestApp, tech: &str, unit: i64, sample: i64, result: &str) {
    app.post(
        "/api/v1/crossmatches",
        Some(tech),
        &json!({"unit_id": unit, "sample_id": sample, "result": result, "method": "iat"}),
    )
    .await
    .ok(201);
}

async fn walk_from_request_to_transfusion_outcome(backend: Backend) {
    let mut b = bank(backend).await;
    let admin = b.app.admin_token().await;
    let (app, tech, hosp, hospital_id) = (&b.app, b.tech.clone(), b.hosp.clone(), b.hospital);
    let p = app
        .post(
            "/api/v1/patients",
            Some(&hosp),
            &patient_body("MRN-1", "A", "positive", "male"),
        )
        .await;
    let patient = p.ok(201)["id"].as_i64().expect("patient");
    assert_eq!(p.body["hospital_id"], hospital_id);
    assert_eq!(p.body["group_of_record"]["status"], "untyped");
    confirm_group(app, &tech, patient, "A", "positive").await;
    let s = sample(app, &hosp, patient).await;
    let samples = app
        .get(&format!("/api/v1/patients/{patient}/samples"), Some(&hosp))
        .await;
    let listed = samples.ok(200)["items"].as_array().expect("items").clone();
    let valid_until = listed
        .iter()
        .find(|x| x["id"] == s)
        .and_then(|x| x["valid_until"].as_str())
        .expect("valid_until")
        .to_owned();
    assert_eq!(
        valid_until,
        ts(now_minute() - TimeDelta::hours(1) + TimeDelta::hours(72))
    );

    let req = app
        .post("/api/v1/requests", Some(&hosp), &request_body(patient, 1))
        .await;
    let request = req.ok(201)["id"].as_i64().expect("request");
    assert_eq!(req.body["status"], "open");
    assert_eq!(req.body["within_indication"], true);

    let (unit, din) = b.ready("O", "positive", "negative", 1).await;
    let compat = app
        .get(
            &format!("/api/v1/compatibility?unit_id={unit}&patient_id={patient}"),
            Some(&tech),
        )
        .await;
    assert_eq!(compat.ok(200)["verdict"], "compatible", "{}", compat.text);
    crossmatch(app, &tech, unit, s, "compatible").await;
    let alloc = app
        .post(
            &format!("/api/v1/requests/{request}/allocations"),
            Some(&tech),
            &json!({"unit_id": unit}),
        )
        .await;
    let allocation = alloc.ok(201)["id"].as_i64().expect("allocation");
    assert_eq!(alloc.body["status"], "allocated");
    let u = app.get(&format!("/api/v1/units/{unit}"), Some(&tech)).await;
    assert_eq!(u.ok(200)["status"], "allocated");

    // Scanned with its check character.
    let k = u.body["check_character"].as_str().expect("k").to_owned();
    let issued = app
        .post(
            &format!("/api/v1/allocations/{allocation}/issue"),
            Some(&tech),
            &json!({"scanned_din": format!("{din}{k}")}),
        )
        .await;
    assert_eq!(issued.ok(200)["status"], "issued", "{}", issued.text);
    let r = app.get(&format!("/api/v1/requests/{request}"), Some(&hosp)).await;
    assert_eq!(r.ok(200)["status"], "fulfilled");
    assert_eq!(r.body["units_issued"], 1);

    // Recorded right after the issue (a transfusion cannot start before it).
    let started = issued.body["issued_at"].clone();
    let outcome = app
        .post(
            &format!("/api/v1/allocations/{allocation}/transfusion"),
            Some(&hosp),
            &json!({"started_at": started, "ended_at": started, "reaction": "fever",
                    "pre_anc_per_ul": 100, "post_anc_per_ul": 1100}),
        )
        .await;
    assert_eq!(outcome.ok(200)["status"], "transfused", "{}", outcome.text);
    assert_eq!(outcome.body["anc_increment_per_ul"], 1000);
    let r = app.get(&format!("/api/v1/requests/{request}"), Some(&hosp)).await;
    assert_eq!(r.ok(200)["course"][0]["anc_increment_per_ul"], 1000);
    assert_eq!(r.body["course"][0]["din"], din.as_str());
    assert_eq!(
        app.get(&format!("/api/v1/units/{unit}"), Some(&tech)).await.ok(200)["status"],
        "transfused"
    );
    app.post(
        &format!("/api/v1/allocations/{allocation}/transfusion"),
        Some(&hosp),
        &json!({"started_at": started}),
    )
    .await
    .problem(409, "invalid_transition");

    let trail = app
        .get(
            &format!("/api/v1/audit?entity_type=allocation&entity_id={allocation}"),
            Some(&admin),
        )
        .await;
    let actions: Vec<&str> = trail.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec!["allocation.transfusion", "allocation.issue", "allocation.create"]
    );
}

async fn idempotent_requests(backend: Backend) {
    let b = bank(backend).await;
    let (app, hosp) = (&b.app, b.hosp.clone());
    let patient = b.patient(&patient_body("MRN-2", "O", "positive", "male")).await;
    let body = request_body(patient, 3);
    let send = |key: &'static str, body: Value| {
        let req = app
            .client
            .post(app.url("/api/v1/requests"))
            .bearer_auth(&hosp)
            .header("Idempotency-Key", key)
            .json(&body);
        app.send(req)
    };
    let first = send("order-42", body.clone()).await;
    let id = first.ok(201)["id"].as_i64().expect("id");
    let again = send("order-42", body.clone()).await;
    assert_eq!(again.ok(201)["id"], id);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let mut other = body.clone();
    other["units_requested"] = json!(4);
    send("order-42", other).await.problem(422, "idempotency_key_reused");
    // Key order and spacing do not make a body different.
    let reordered: Value = serde_json::from_str(&serde_json::to_string_pretty(&body).expect("json")).expect("json");
    assert_eq!(send("order-42", reordered).await.ok(201)["id"], id);
    // A retry that reaches another instance gets the same answer.
    let other = spawn_on(backend, app.db.clone(), |_| {}).await;
    let elsewhere = other
        .client
        .post(other.url("/api/v1/requests"))
        .bearer_auth(&hosp)
        .header("Idempotency-Key", "order-42")
        .json(&body);
    assert_eq!(other.send(elsewhere).await.ok(201)["id"], id);
    // Concurrent retries of a new key create one request.
    let replies = futures_util::future::join_all((0..5).map(|_| send("order-43", body.clone()))).await;
    let ids: std::collections::BTreeSet<i64> = replies.iter().map(|r| r.ok(201)["id"].as_i64().expect("id")).collect();
    assert_eq!(ids.len(), 1, "{replies:?}");
    let list = app.get("/api/v1/requests", Some(&hosp)).await;
    assert_eq!(list.ok(200)["items"].as_array().map(Vec::len), Some(2));
    // Another account's identical key is its own.
    let staff = app
        .client
        .post(app.url("/api/v1/requests"))
        .bearer_auth(&b.tech)
        .header("Idempotency-Key", "order-42")
        .json(&body);
    assert_ne!(app.send(staff).await.ok(201)["id"], id);
    let bad = app
        .client
        .post(app.url("/api/v1/requests"))
        .bearer_auth(&hosp)
        .header("Idempotency-Key", "")
        .json(&body);
    app.send(bad).await.problem(400, "validation_failed");
}

async fn allocation_refusals_and_overrides(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech, director, hosp) = (&b.app, b.tech.clone(), b.director.clone(), b.hosp.clone());
    // RhD-negative woman of childbearing potential, group O.
    let mut body = patient_body("MRN-3", "O", "negative", "female");
    body["childbearing_potential"] = json!(true);
    let patient = b.typed_patient(&body).await;
    let request = b.request_for(patient, 2).await;
    let allocate = |token: &str, unit: i64, extra: Value| {
        let token = token.to_owned();
        let mut body = json!({"unit_id": unit});
        if let (Some(o), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let b = &b;
        async move { b.allocate(&token, request, body).await }
    };
    let (group_a, _) = b.ready("A", "negative", "negative", 1).await;
    let refused = allocate(&tech, group_a, json!({})).await;
    assert_eq!(
        reason_codes(refused.problem(422, "incompatible")),
        vec!["abo_incompatible"]
    );

    // RhD-positive unit for an RhD-negative woman of childbearing potential: authorise tier.
    // The night technologist records who authorised it by phone; no director login needed.
    let (rh_pos, _) = b.ready("O", "positive", "negative", 1).await;
    let refused = allocate(&tech, rh_pos, json!({})).await;
    assert_eq!(
        reason_codes(refused.problem(422, "authorisation_required")),
        vec!["rhd_mismatch"]
    );
    allocate(&tech, rh_pos, json!({"acknowledge": ["rhd_mismatch"]}))
        .await
        .problem(422, "authorisation_required");
    let authorisation = json!({"by": "Dr Okafor", "role": "on-call haematologist",
                               "at": ts(now_minute()), "reason": "no RhD-negative unit in time"});
    allocate(
        &tech,
        rh_pos,
        json!({"authorisation": {"by": " ", "role": "x", "at": ts(now_minute()), "reason": "y"}}),
    )
    .await
    .problem(400, "validation_failed");
    let ok = allocate(&tech, rh_pos, json!({"authorisation": authorisation})).await;
    let body = ok.ok(201).clone();
    let allocation = body["id"].as_i64().expect("allocation");
    assert_eq!(body["anti_d_task"], true);
    assert_eq!(body["warnings"][0]["code"], "rhd_mismatch");
    assert_eq!(body["warnings"][0]["severity"], "authorise");
    assert_eq!(body["authorisations"][0]["by"], "Dr Okafor");
    assert!(
        body["authorisations"][0]["recorded_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("technologist-")),
        "{body}"
    );
    assert_eq!(body["authorisations"][0]["signed_off"], false);
    assert_eq!(body["awaiting_sign_off"], true);
    // The anti-D task comes with the transfusion, not the allocation.
    let alerts = app
        .get(
            "/api/v1/alerts?status=open&kind=allocation.anti_d_prophylaxis",
            Some(&tech),
        )
        .await;
    assert_eq!(alerts.ok(200)["items"].as_array().map(Vec::len), Some(0));
    // The exceptions report lists it until a medical director signs it off.
    let waiting = |signed: &'static str| {
        let tech = &tech;
        async move {
            app.get(&format!("/api/v1/reports/exceptions?signed_off={signed}"), Some(tech))
                .await
                .ok(200)["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| e["allocation_id"].as_i64().unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(waiting("false").await, vec![allocation]);
    let report = app.get("/api/v1/reports/exceptions", Some(&tech)).await;
    assert_eq!(
        report.ok(200)["items"][0]["authorisations"][0]["reason"],
        "no RhD-negative unit in time"
    );
    let sign_off = |token: &str| {
        let token = token.to_owned();
        async move {
            app.post(
                &format!("/api/v1/allocations/{allocation}/sign-off"),
                Some(&token),
                &json!({"comment": "reviewed; appropriate"}),
            )
            .await
        }
    };
    sign_off(&tech).await.problem(403, "forbidden");
    let signed = sign_off(&director).await;
    assert_eq!(signed.ok(200)["awaiting_sign_off"], false);
    assert_eq!(signed.body["sign_offs"][0]["comment"], "reviewed; appropriate");
    sign_off(&director).await.problem(409, "nothing_to_sign_off");
    assert_eq!(waiting("false").await, Vec::<i64>::new());
    assert_eq!(waiting("true").await, vec![allocation]);
    // Taken already: 409, whoever asks.
    allocate(&director, rh_pos, json!({"authorisation": authorisation}))
        .await
        .problem(409, "unit_not_available");
    let quarantined = app
        .post(
            "/api/v1/units",
            Some(&tech),
            &json!({"source": {"type": "external", "supplier": "X", "din": next_din(), "abo": "O", "rhd": "negative",
                               "collected_at": ts(now_minute()), "cmv": "negative"},
                    "product_code": "E9999V00", "volume_ml": 250, "granulocyte_count": 5e10}),
        )
        .await;
    let q = quarantined.ok(201)["id"].as_i64().expect("id");
    allocate(&tech, q, json!({})).await.problem(409, "unit_not_available");
    // A missing unit in the body is a refusal; 404 is kept for the request in the URL.
    allocate(&tech, 999_999, json!({})).await.problem(422, "unknown_unit");
    app.post(
        "/api/v1/requests/999999/allocations",
        Some(&tech),
        &json!({"unit_id": q}),
    )
    .await
    .problem(404, "not_found");
    allocate(&hosp, q, json!({})).await.problem(403, "forbidden");
}

async fn issue_checks_every_gate(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech, director) = (&b.app, b.tech.clone(), b.director.clone());
    let patient = b.typed_patient(&patient_body("MRN-4", "AB", "positive", "male")).await;
    let s = sample(app, &b.hosp, patient).await;
    let request = b.request_for(patient, 2).await;
    // A released but not irradiated unit, never crossmatched.
    let din = next_din();
    let id = app
        .post(
            "/api/v1/units",
            Some(&tech),
            &json!({"source": {"type": "external", "supplier": "X", "din": din, "abo": "B", "rhd": "positive",
                               "collected_at": ts(now_minute()), "cmv": "negative"},
                    "product_code": "E9999V00", "volume_ml": 250, "granulocyte_count": 5e10}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("unit");
    app.post(
        &format!("/api/v1/units/{id}/release"),
        Some(&director),
        &json!({"emergency": true, "request_id": request, "physician": {"name": "Dr Osler", "acknowledged_at": ts(now_minute())}}),
    )
    .await
    .ok(200);
    let allocation = b.allocated(request, id).await;
    let issue = |scan: String| {
        let tech = &tech;
        async move {
            app.post(
                &format!("/api/v1/allocations/{allocation}/issue"),
                Some(tech),
                &json!({"scanned_din": scan}),
            )
            .await
        }
    };
    let refused = issue(next_din()).await;
    let codes = reason_codes(refused.problem(422, "issue_refused"));
    assert_eq!(
        codes,
        vec!["din_mismatch", "crossmatch_missing", "not_irradiated"],
        "{}",
        refused.text
    );
    let bad_k = issue(format!("{din}*")).await;
    assert!(reason_codes(bad_k.problem(422, "issue_refused")).contains(&"invalid_check_character".to_owned()));
    crossmatch(app, &tech, id, s, "incompatible").await;
    let refused = issue(din.clone()).await;
    assert_eq!(
        reason_codes(refused.problem(422, "issue_refused")),
        vec!["crossmatch_incompatible", "crossmatch_missing", "not_irradiated"]
    );
    // A later compatible result does not supersede the incompatible one: it stands until a
    // medical director resolves it.
    crossmatch(app, &tech, id, s, "compatible").await;
    app.post(
        &format!("/api/v1/units/{id}/irradiation"),
        Some(&tech),
        &json!({"dose_gy": 30}),
    )
    .await
    .ok(200);
    let refused = issue(din.clone()).await;
    assert_eq!(
        reason_codes(refused.problem(422, "issue_refused")),
        vec!["crossmatch_incompatible"]
    );
    let listed = app
        .get(&format!("/api/v1/crossmatches?unit_id={id}"), Some(&tech))
        .await;
    let items = listed.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2);
    let bad = items[0]["id"].as_i64().expect("id");
    assert_eq!(items[0]["result"], "incompatible");
    assert_eq!(items[0]["resolution"], Value::Null);
    let resolve = |token: &str| {
        let token = token.to_owned();
        async move {
            app.post(
                &format!("/api/v1/crossmatches/{bad}/resolve"),
                Some(&token),
                &json!({"reason": "anti-Le(a) in the sample; repeat on a fresh sample compatible"}),
            )
            .await
        }
    };
    resolve(&tech).await.problem(403, "forbidden");
    let resolved = resolve(&director).await;
    assert!(resolved.ok(200)["resolution"]["resolved_by"].is_string());
    resolve(&director).await.problem(409, "already_resolved");
    let good = items[1]["id"].as_i64().expect("id");
    app.post(
        &format!("/api/v1/crossmatches/{good}/resolve"),
        Some(&director),
        &json!({"reason": "nothing to resolve"}),
    )
    .await
    .problem(409, "crossmatch_not_incompatible");
    // The scanned structure with Type 3 flags works too.
    let label = app.get(&format!("/api/v1/units/{id}/label"), Some(&tech)).await;
    let scan = label.ok(200)["isbt128"]["din"].as_str().expect("din").to_owned();
    assert_eq!(issue(scan).await.ok(200)["status"], "issued");
    issue(din.clone()).await.problem(409, "invalid_transition");
    // Returned while still fresh: quarantined until inspected, then back to available.
    let back = app
        .post(
            &format!("/api/v1/allocations/{allocation}/return"),
            Some(&tech),
            &json!({"reason": "patient unstable"}),
        )
        .await;
    assert_eq!(back.ok(200)["status"], "returned");
    let held = app.get(&format!("/api/v1/units/{id}"), Some(&tech)).await;
    assert_eq!(held.ok(200)["status"], "quarantined");
    assert_eq!(held.body["quarantine_reason"], "returned");
    app.post(
        &format!("/api/v1/units/{id}/inspection"),
        Some(&tech),
        &json!({"acceptable": true, "notes": "bag intact"}),
    )
    .await
    .ok(201);
    assert_eq!(
        app.get(&format!("/api/v1/units/{id}"), Some(&tech)).await.ok(200)["status"],
        "available"
    );
    // Allocate again and cancel: the unit is released back.
    let second = b.allocated(request, id).await;
    app.post(
        &format!("/api/v1/allocations/{second}/cancel"),
        Some(&tech),
        &json!({"reason": ""}),
    )
    .await
    .problem(400, "validation_failed");
    app.post(
        &format!("/api/v1/allocations/{second}/cancel"),
        Some(&tech),
        &json!({"reason": "course stopped"}),
    )
    .await
    .ok(200);
    assert_eq!(
        app.get(&format!("/api/v1/units/{id}"), Some(&tech)).await.ok(200)["status"],
        "available"
    );
    app.post(
        &format!("/api/v1/allocations/{second}/cancel"),
        Some(&tech),
        &json!({"reason": "twice"}),
    )
    .await
    .problem(409, "invalid_transition");
    // Issued again and kept at the ward past its expiry: it comes back discarded, not available.
    let third = b.allocated(request, id).await;
    b.issued(third, din.as_str()).await;
    b.set_unit_expiry(id, Utc::now() - TimeDelta::minutes(1));
    let back = app
        .post(
            &format!("/api/v1/allocations/{third}/return"),
            Some(&tech),
            &json!({"reason": "not given in time"}),
        )
        .await;
    assert_eq!(back.ok(200)["status"], "returned");
    let unit = app.get(&format!("/api/v1/units/{id}"), Some(&tech)).await;
    assert_eq!(unit.ok(200)["status"], "discarded");
    assert_eq!(unit.ok(200)["status_reason"], "returned unusable: not given in time");
}

async fn hospitals_see_only_their_own(backend: Backend) {
    let mut bank = bank(backend).await;
    let (_, b) = hospital(&mut bank.app).await;
    let (app, tech, a, a_id) = (&bank.app, bank.tech.clone(), bank.hosp.clone(), bank.hospital);
    let patient = bank
        .typed_patient(&patient_body("MRN-5", "O", "positive", "male"))
        .await;
    let mut foreign = patient_body("MRN-6", "O", "positive", "male");
    foreign["hospital_id"] = json!(a_id);
    app.post("/api/v1/patients", Some(&b), &foreign)
        .await
        .problem(400, "validation_failed");
    // Same MRN in another hospital is fine; twice in one is not.
    app.post(
        "/api/v1/patients",
        Some(&b),
        &patient_body("MRN-5", "O", "positive", "male"),
    )
    .await
    .ok(201);
    app.post(
        "/api/v1/patients",
        Some(&a),
        &patient_body("MRN-5", "A", "positive", "male"),
    )
    .await
    .problem(409, "mrn_taken");
    let request = bank.request_for(patient, 1).await;
    let (unit, _) = bank.ready("O", "positive", "negative", 1).await;
    let allocation = bank.allocated(request, unit).await;
    // Units: a hospital sees only those issued to it.
    app.get(&format!("/api/v1/units/{unit}"), Some(&a))
        .await
        .problem(404, "not_found");
    let s = sample(app, &a, patient).await;
    crossmatch(app, &tech, unit, s, "compatible").await;
    let din = app.get(&format!("/api/v1/units/{unit}"), Some(&tech)).await.ok(200)["din"].clone();
    bank.issued(allocation, din).await;
    assert_eq!(
        app.get(&format!("/api/v1/units/{unit}"), Some(&a)).await.ok(200)["id"],
        unit
    );
    app.get(&format!("/api/v1/units/{unit}"), Some(&b))
        .await
        .problem(404, "not_found");
    for path in [
        format!("/api/v1/patients/{patient}"),
        format!("/api/v1/patients/{patient}/samples"),
        format!("/api/v1/requests/{request}"),
        format!("/api/v1/allocations/{allocation}"),
    ] {
        app.get(&path, Some(&b)).await.problem(404, "not_found");
        app.get(&path, Some(&a)).await.ok(200);
        app.get(&path, Some(&tech)).await.ok(200);
    }
    // Another hospital's patient named in the body is answered as one that does not exist.
    app.post("/api/v1/requests", Some(&b), &request_body(patient, 1))
        .await
        .problem(422, "unknown_patient");
    app.patch(
        &format!("/api/v1/patients/{patient}"),
        Some(&b),
        &json!({"weight_kg": 60}),
    )
    .await
    .problem(404, "not_found");
    app.post(&format!("/api/v1/requests/{request}/cancel"), Some(&b), &json!({}))
        .await
        .problem(404, "not_found");
    app.post(
        &format!("/api/v1/allocations/{allocation}/transfusion"),
        Some(&b),
        &json!({"started_at": ts(now_minute())}),
    )
    .await
    .problem(404, "not_found");
    let listed = app.get("/api/v1/patients", Some(&b)).await;
    assert_eq!(listed.ok(200)["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.get("/api/v1/requests", Some(&b)).await.ok(200)["items"], json!([]));
    for path in [
        "/api/v1/compatibility?unit_id=1&patient_id=1",
        "/api/v1/reports/exceptions",
    ] {
        app.get(path, Some(&a)).await.problem(403, "forbidden");
    }
    app.post(
        &format!("/api/v1/allocations/{allocation}/issue"),
        Some(&a),
        &json!({"scanned_din": "x"}),
    )
    .await
    .problem(403, "forbidden");
    // Staff must say which hospital a patient belongs to.
    app.post(
        "/api/v1/patients",
        Some(&tech),
        &patient_body("MRN-7", "O", "positive", "male"),
    )
    .await
    .problem(400, "validation_failed");
}

async fn approval_gate_and_cancellation(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech, director, hosp) = (&b.app, b.tech.clone(), b.director.clone(), b.hosp.clone());
    let patient = b.typed_patient(&patient_body("MRN-8", "O", "positive", "male")).await;
    let mut outside = request_body(patient, 2);
    outside["indication"]["anc_per_ul"] = json!(800);
    let r = app.post("/api/v1/requests", Some(&hosp), &outside).await;
    let request = r.ok(201)["id"].as_i64().expect("request");
    assert_eq!(r.body["status"], "pending_approval");
    assert_eq!(
        reason_codes(&json!({"reasons": r.body["approval_reasons"]})),
        vec!["anc_above_threshold"]
    );
    let (unit, _) = b.ready("O", "positive", "negative", 1).await;
    app.post(
        &format!("/api/v1/requests/{request}/allocations"),
        Some(&tech),
        &json!({"unit_id": unit}),
    )
    .await
    .problem(409, "request_not_open");
    app.post(&format!("/api/v1/requests/{request}/approve"), Some(&tech), &json!({}))
        .await
        .problem(403, "forbidden");
    app.post(
        &format!("/api/v1/requests/{request}/decline"),
        Some(&director),
        &json!({}),
    )
    .await
    .problem(400, "validation_failed");
    let approved = app
        .post(
            &format!("/api/v1/requests/{request}/approve"),
            Some(&director),
            &json!({"reason": "clinical judgement"}),
        )
        .await;
    assert_eq!(approved.ok(200)["status"], "open");
    app.post(
        &format!("/api/v1/requests/{request}/decline"),
        Some(&director),
        &json!({"reason": "x"}),
    )
    .await
    .problem(409, "invalid_transition");
    b.allocated(request, unit).await;
    // Cancelling the request hands the allocated unit back.
    let cancelled = app
        .post(
            &format!("/api/v1/requests/{request}/cancel"),
            Some(&hosp),
            &json!({"reason": "patient recovered"}),
        )
        .await;
    assert_eq!(cancelled.ok(200)["status"], "cancelled");
    assert_eq!(cancelled.body["course"][0]["status"], "cancelled");
    assert_eq!(
        app.get(&format!("/api/v1/units/{unit}"), Some(&tech)).await.ok(200)["status"],
        "available"
    );
    app.post(&format!("/api/v1/requests/{request}/cancel"), Some(&hosp), &json!({}))
        .await
        .problem(409, "invalid_transition");

    let declined = b.request(&outside).await;
    let d = app
        .post(
            &format!("/api/v1/requests/{declined}/decline"),
            Some(&director),
            &json!({"reason": "ANC recovering"}),
        )
        .await;
    assert_eq!(d.ok(200)["status"], "declined");
    assert_eq!(d.body["decision_reason"], "ANC recovering");
    for bad in [
        json!({"patient_id": patient, "units_requested": 0, "needed_by": ts(Utc::now()), "priority": "asap",
               "indication": {"anc_per_ul": 1, "infection": "x", "refractory_hours": 50}}),
        json!({"patient_id": patient, "units_requested": 1, "needed_by": ts(Utc::now()), "priority": "whenever",
               "indication": {"anc_per_ul": 1, "infection": "x", "refractory_hours": 50}}),
        json!({"patient_id": patient, "units_requested": 1, "needed_by": "2020-01-01T00:00:00Z", "priority": "asap",
               "indication": {"anc_per_ul": 1, "infection": "x", "refractory_hours": 50}}),
        json!({"patient_id": patient, "units_requested": 1, "needed_by": ts(Utc::now()), "priority": "asap",
               "indication": {"anc_per_ul": 1, "infection": "", "refractory_hours": 50}}),
    ] {
        app.post("/api/v1/requests", Some(&hosp), &bad)
            .await
            .problem(400, "validation_failed");
    }
}

/// Many allocators race for a few units on many requests; on PostgreSQL through two app
/// instances on one database. Exactly one winner per unit, every loser a 409, no 5xx.
async fn racing_allocations_have_one_winner_per_unit(backend: Backend) {
    let b = bank(backend).await;
    let other = spawn_on(backend, b.app.db.clone(), |_| {}).await;
    let (app, tech) = (&b.app, b.tech.clone());
    let mut requests = Vec::new();
    for i in 0..6 {
        let patient = b
            .patient(&patient_body(&format!("RACE-{i}"), "AB", "positive", "male"))
            .await;
        requests.push(b.request_for(patient, 3).await);
    }
    // Group O RhD-negative units fit patients whose group the blood bank has not typed yet.
    let mut units = Vec::new();
    for _ in 0..3 {
        units.push(b.ready("O", "negative", "negative", 1).await.0);
    }
    let mut attempts = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        for unit in &units {
            let instance = if i % 2 == 0 { app } else { &other };
            let path = format!("/api/v1/requests/{request}/allocations");
            let body = json!({"unit_id": unit});
            let tech = tech.clone();
            attempts.push(async move { instance.post(&path, Some(&tech), &body).await });
        }
    }
    let replies = futures_util::future::join_all(attempts).await;
    let mut winners = std::collections::BTreeMap::new();
    for r in &replies {
        match r.status.as_u16() {
            201 => *winners.entry(r.body["unit_id"].as_i64().expect("unit")).or_insert(0) += 1,
            409 => assert_eq!(r.body["code"], "unit_not_available", "{}", r.text),
            _ => panic!("unexpected answer {}: {}", r.status, r.text),
        }
    }
    assert_eq!(winners.len(), units.len(), "{winners:?}");
    assert!(winners.values().all(|n| *n == 1), "{winners:?}");
}

async fn candidates_are_ranked_with_reasons(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech, hosp) = (&b.app, b.tech.clone(), b.hosp.clone());
    let patient = b.typed_patient(&patient_body("MRN-9", "A", "positive", "male")).await;
    let request = b.request_for(patient, 2).await;
    let (group_o, _) = b.ready("O", "positive", "negative", 1).await;
    let (identical, _) = b.ready("A", "positive", "negative", 1).await;
    let (wrong, _) = b.ready("B", "positive", "negative", 1).await;
    let donor_a = app.register_donor(&tech, &donor_body("Ida", "A", "positive")).await;
    let donor_o = app.register_donor(&tech, &donor_body("Otto", "O", "positive")).await;
    let donor_b = app.register_donor(&tech, &donor_body("Bea", "B", "positive")).await;
    let deferred = app.register_donor(&tech, &donor_body("Dee", "A", "positive")).await;
    app.post(
        &format!("/api/v1/donors/{deferred}/deferrals"),
        Some(&tech),
        &json!({"reason": "travel", "permanent": true}),
    )
    .await
    .ok(201);
    let r = app
        .get(&format!("/api/v1/requests/{request}/candidates"), Some(&tech))
        .await;
    let body = r.ok(200).clone();
    let unit_ids: Vec<i64> = body["units"]
        .as_array()
        .expect("units")
        .iter()
        .filter_map(|u| u["unit_id"].as_i64())
        .collect();
    assert_eq!(unit_ids, vec![identical, group_o, wrong], "{}", r.text);
    assert_eq!(body["units"][0]["verdict"], "compatible");
    assert_eq!(body["units"][2]["verdict"], "incompatible");
    assert_eq!(body["units"][2]["reasons"][0]["code"], "abo_incompatible");
    let donor_ids: Vec<i64> = body["donors"]
        .as_array()
        .expect("donors")
        .iter()
        .filter_map(|d| d["donor_id"].as_i64())
        .collect();
    assert_eq!(donor_ids[..2], [donor_a, donor_o], "{}", r.text);
    let verdict_of = |id: i64| {
        body["donors"]
            .as_array()
            .expect("donors")
            .iter()
            .find(|d| d["donor_id"] == id)
            .map(|d| (d["verdict"].clone(), d["reasons"][0]["code"].clone()))
            .expect("listed")
    };
    assert_eq!(verdict_of(donor_b), (json!("incompatible"), json!("abo_incompatible")));
    assert_eq!(verdict_of(deferred), (json!("incompatible"), json!("deferred")));
    let collection_at = body["collection_at"].as_str().expect("time");
    assert!(collection_at.ends_with("T08:00:00Z"), "{collection_at}");
    let limited = app
        .get(&format!("/api/v1/requests/{request}/candidates?limit=1"), Some(&tech))
        .await;
    assert_eq!(limited.ok(200)["units"].as_array().map(Vec::len), Some(1));
    app.get(&format!("/api/v1/requests/{request}/candidates"), Some(&hosp))
        .await
        .problem(403, "forbidden");
    app.get("/api/v1/requests/999999/candidates", Some(&tech))
        .await
        .problem(404, "not_found");
}

async fn trace_and_lookback_follow_a_unit_both_ways(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech, hosp, hospital_id) = (&b.app, b.tech.clone(), b.hosp.clone(), b.hospital);
    let donor = app.register_donor(&tech, &donor_body("Trace", "O", "negative")).await;
    let device = app.create_device(&tech, "Optia T").await;
    let start = now_minute() - TimeDelta::hours(3);
    let collection = app.book(&tech, donor, device, start).await.ok(201)["id"]
        .as_i64()
        .expect("collection");
    app.post(
        &format!("/api/v1/donors/{donor}/stimulations"),
        Some(&tech),
        &json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": ts(start - TimeDelta::hours(14)), "collection_id": collection}),
    )
    .await
    .ok(201);
    app.post(
        &format!("/api/v1/collections/{collection}/start"),
        Some(&tech),
        &json!({"started_at": ts(start)}),
    )
    .await
    .ok(200);
    app.post(
        &format!("/api/v1/collections/{collection}/complete"),
        Some(&tech),
        &json!({"ended_at": ts(start + TimeDelta::hours(2))}),
    )
    .await
    .ok(200);
    let (unit_id, din) = b
        .irradiated(
            &json!({"source": {"type": "collection", "collection_id": collection}, "product_code": "E9999V00",
                    "volume_ml": 300, "granulocyte_count": 6e10}),
        )
        .await;
    assert!(!din.is_empty(), "din");
    release_tested(app, &tech, unit_id).await;
    let patient = b.typed_patient(&patient_body("MRN-T", "A", "negative", "male")).await;
    let s = sample(app, &hosp, patient).await;
    let request = b.request_for(patient, 1).await;
    crossmatch(app, &tech, unit_id, s, "compatible").await;
    let allocation = b.allocated(request, unit_id).await;
    b.issued(allocation, din.as_str()).await;

    let trace = app.get(&format!("/api/v1/units/{din}/trace"), Some(&tech)).await;
    let t = trace.ok(200).clone();
    assert_eq!(t["donor"]["donor_id"], donor);
    assert_eq!(t["collection"]["id"], collection);
    assert_eq!(t["stimulations"][0]["agent"], "gcsf");
    assert_eq!(t["unit"]["irradiated"], true);
    assert_eq!(t["crossmatches"][0]["result"], "compatible");
    assert_eq!(t["allocations"][0]["allocation"]["status"], "issued");
    assert_eq!(t["allocations"][0]["recipient"]["mrn"], "MRN-T");
    assert_eq!(t["allocations"][0]["recipient"]["hospital_id"], hospital_id);

    let since = ts(now_minute() - TimeDelta::days(2));
    let back = app
        .get(&format!("/api/v1/donors/{donor}/lookback?since={since}"), Some(&tech))
        .await;
    let b = back.ok(200).clone();
    assert_eq!(b["units"][0]["din"], din.as_str());
    assert_eq!(b["hospitals"], json!([hospital_id]));
    assert_eq!(b["recipients"][0]["patient_id"], patient);
    let later = ts(now_minute() + TimeDelta::hours(1));
    let none = app
        .get(&format!("/api/v1/donors/{donor}/lookback?since={later}"), Some(&tech))
        .await;
    assert_eq!(none.ok(200)["units"], json!([]));
    app.get(&format!("/api/v1/donors/{donor}/lookback"), Some(&tech))
        .await
        .problem(400, "invalid_query");
    app.get(&format!("/api/v1/units/{unit_id}/trace"), Some(&hosp))
        .await
        .problem(403, "forbidden");
    app.get("/api/v1/donors/999999/lookback?since=2026-01-01T00:00:00Z", Some(&tech))
        .await
        .problem(404, "not_found");
}

async fn cancelling_leaves_a_unit_that_left_allocated_alone(backend: Backend) {
    let b = bank(backend).await;
    let (app, tech) = (&b.app, b.tech.clone());
    let patient = b.typed_patient(&patient_body("MRN-C", "O", "positive", "male")).await;
    let request = b.request_for(patient, 2).await;
    // Quarantined by a storage excursion while allocated: cancelling keeps it quarantined.
    let (hot, _) = b.ready("O", "positive", "negative", 1).await;
    let first = b.allocated(request, hot).await;
    app.post(
        &format!("/api/v1/units/{hot}/storage-readings"),
        Some(&tech),
        &json!({"temperature_c": 30}),
    )
    .await
    .ok(201);
    // Issue re-checks the unit itself, not only the allocation: refused, with the reason.
    let din = app.get(&format!("/api/v1/units/{hot}"), Some(&tech)).await.ok(200)["din"].clone();
    let refused = app
        .post(
            &format!("/api/v1/allocations/{first}/issue"),
            Some(&tech),
            &json!({"scanned_din": din}),
        )
        .await;
    let codes = reason_codes(refused.problem(422, "issue_refused"));
    assert!(codes.contains(&"unit_quarantined".to_owned()), "{codes:?}");
    assert!(refused.text.contains("storage temperature"), "{}", refused.text);
    app.post(
        &format!("/api/v1/allocations/{first}/cancel"),
        Some(&tech),
        &json!({"reason": "excursion"}),
    )
    .await
    .ok(200);
    assert_eq!(
        app.get(&format!("/api/v1/units/{hot}"), Some(&tech)).await.ok(200)["status"],
        "quarantined"
    );
    // Swept to expired while allocated: cancelling still works.
    let (old, _) = b.ready("O", "positive", "negative", 1).await;
    let second = b.allocated(request, old).await;
    let expires = app.get(&format!("/api/v1/units/{old}"), Some(&tech)).await.ok(200)["expires_at"].clone();
    let expires = chrono::DateTime::parse_from_rfc3339(expires.as_str().expect("time"))
        .expect("time")
        .with_timezone(&Utc);
    b.scan_at(expires + TimeDelta::minutes(1));
    app.post(
        &format!("/api/v1/allocations/{second}/cancel"),
        Some(&tech),
        &json!({"reason": "expired"}),
    )
    .await
    .ok(200);
    assert_eq!(
        app.get(&format!("/api/v1/units/{old}"), Some(&tech)).await.ok(200)["status"],
        "expired"
    );
}
