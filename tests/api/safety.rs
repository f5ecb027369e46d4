//! The nine paths by which a wrong unit could reach a patient (issue 12), each closed and
//! tried over HTTP: sticky results, standing incompatible crossmatches, returned units,
//! excursions, request requirements, unknown CMV, untyped HLA loci, the group of record and
//! the shelf-life margin; and issue re-assessing everything found since allocation.

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::*;
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_reactive_result_is_never_cleared_by_a_later_negative,
    a_reactive_result_defers_the_donor_and_looks_forward,
    an_incompatible_crossmatch_stands_until_resolved,
    a_returned_unit_is_inspected_before_it_goes_back,
    an_excursion_stays_on_the_unit_until_a_director_dispositions_it,
    request_requirements_bind_the_unit,
    an_unknown_cmv_status_counts_as_negative,
    an_antibody_at_an_untyped_locus_is_a_finding,
    the_group_of_record_is_the_blood_banks_own_typing,
    the_shelf_life_margin_counts_from_the_transfusion,
    issue_reassesses_what_changed_since_allocation,
);

fn codes(r: &Value) -> Vec<String> {
    reason_codes(r)
}

/// Path 1: a positive result followed by a negative one for the same marker left the unit
/// releasable (the latest result won).
async fn a_reactive_result_is_never_cleared_by_a_later_negative(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("RR-1", "O", "negative", "male")).await;
    let request = b.request(&request_body(patient, 1)).await;
    let (unit, _) = b.supplier_unit("O", "negative", "negative", 1).await;
    b.negative_markers(unit).await;
    for result in ["positive", "negative"] {
        b.app
            .post(
                &format!("/api/v1/units/{unit}/tests"),
                Some(&b.tech),
                &json!({"marker": "hiv_nat", "result": result}),
            )
            .await
            .ok(200);
    }
    for (token, body) in [
        (&b.tech, json!({"emergency": false})),
        (
            &b.director,
            json!({"emergency": true, "request_id": request,
                   "physician": {"name": "Dr Night", "acknowledged_at": ts(now_minute())}}),
        ),
    ] {
        let refused = b
            .app
            .post(&format!("/api/v1/units/{unit}/release"), Some(token), &body)
            .await;
        assert_eq!(
            codes(refused.problem(422, "release_blocked")),
            vec!["marker_positive"],
            "{}",
            refused.text
        );
    }
    let held = b.unit(unit).await;
    assert_eq!(held["status"], "quarantined");
    assert_eq!(held["quarantine_reason"], "reactive_marker");
    assert!(
        held["holds"]
            .as_array()
            .expect("holds")
            .contains(&json!("marker_positive"))
    );
    let hiv = held["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["marker"] == "hiv_nat")
        .cloned()
        .expect("hiv_nat");
    assert_eq!(hiv["result"], "positive", "the reactive result stands");
    // Only a discard remains.
    b.app
        .post(
            &format!("/api/v1/units/{unit}/discard"),
            Some(&b.tech),
            &json!({"reason": "reactive HIV NAT"}),
        )
        .await
        .ok(200);
    // The database keeps every result: they cannot be rewritten.
    let mut conn = b.app.state.pool.get().expect("conn");
    let rewritten = diesel::RunQueryDsl::execute(
        diesel::sql_query("UPDATE unit_tests SET result = 'negative' WHERE result = 'positive'"),
        &mut *conn,
    );
    assert!(rewritten.is_err(), "unit_tests must be append-only");
}

/// Path 1, what follows a reactive result: the donor is deferred pending confirmatory testing
/// (visible in eligibility), the donor's other units in stock are quarantined, and the
/// look-forward alert names every allocation of the donor's units that reached a patient.
async fn a_reactive_result_defers_the_donor_and_looks_forward(backend: Backend) {
    let b = bank(backend).await;
    let app = &b.app;
    // Three collections of one donor within a day (the bank's policy allows it here).
    let mut policy = app.get("/api/v1/policy", Some(&b.director)).await.ok(200).clone();
    policy["donor"]["min_hours_between_leukapheresis"] = json!(1);
    policy["donor"]["max_procedures_per_7_days"] = json!(5);
    app.put("/api/v1/policy", Some(&b.director), &policy).await.ok(200);
    let donor = app.register_donor(&b.tech, &donor_body("Rea", "O", "negative")).await;
    let device = app.create_device(&b.tech, "Optia R").await;
    let mut units = Vec::new();
    for hours in [10, 7, 4] {
        let start = now_minute() - TimeDelta::hours(hours);
        let c = app.book(&b.tech, donor, device, start).await.ok(201)["id"]
            .as_i64()
            .expect("collection");
        app.post(
            &format!("/api/v1/collections/{c}/start"),
            Some(&b.tech),
            &json!({"started_at": ts(start)}),
        )
        .await
        .ok(200);
        app.post(
            &format!("/api/v1/collections/{c}/complete"),
            Some(&b.tech),
            &json!({"ended_at": ts(start + TimeDelta::hours(2))}),
        )
        .await
        .ok(200);
        let u = b.collection_unit(c).await;
        app.post(
            &format!("/api/v1/units/{u}/irradiation"),
            Some(&b.tech),
            &json!({"dose_gy": 25}),
        )
        .await
        .ok(200);
        b.negative_markers(u).await;
        b.release(u).await;
        units.push(u);
    }
    let (given, in_stock, reactive) = (units[0], units[1], units[2]);
    // The first unit reached a patient.
    let patient = b.patient(&patient_body("LF-1", "O", "negative", "male")).await;
    let request = b.request(&request_body(patient, 1)).await;
    let allocation = b.allocate(&b.tech, request, json!({"unit_id": given})).await.ok(201)["id"]
        .as_i64()
        .expect("allocation");
    let s = b.sample(patient).await;
    b.crossmatch(given, s, "compatible").await;
    let din = b.unit(given).await["din"].clone();
    b.issue(&b.tech, allocation, json!({"scanned_din": din})).await.ok(200);

    app.post(
        &format!("/api/v1/units/{reactive}/tests"),
        Some(&b.tech),
        &json!({"marker": "anti_hcv", "result": "positive"}),
    )
    .await
    .ok(200);
    let other = b.unit(in_stock).await;
    assert_eq!(other["status"], "quarantined");
    assert_eq!(other["quarantine_reason"], "donor_reactive_marker");
    let refused = app
        .post(
            &format!("/api/v1/units/{in_stock}/release"),
            Some(&b.tech),
            &json!({"emergency": false}),
        )
        .await;
    assert_eq!(
        codes(refused.problem(422, "release_blocked")),
        vec!["donor_reactive_marker"]
    );
    let eligibility = app.eligibility(&b.tech, donor, now_minute() + TimeDelta::days(3)).await;
    assert_eq!(eligibility["eligible"], false);
    assert!(codes(&eligibility).contains(&"deferred".to_owned()), "{eligibility}");
    let deferrals = app
        .get(&format!("/api/v1/donors/{donor}/deferrals"), Some(&b.tech))
        .await;
    assert_eq!(deferrals.ok(200)["items"][0]["source_unit_id"], reactive);
    let look_forward = b.open_alerts("unit.positive_result_after_release").await;
    assert_eq!(look_forward.len(), 1, "{look_forward:?}");
    let named: Vec<i64> = look_forward[0]["details"]["allocations"]
        .as_array()
        .expect("allocations")
        .iter()
        .filter_map(|a| a["allocation_id"].as_i64())
        .collect();
    assert_eq!(named, vec![allocation]);
    assert!(
        look_forward[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MRN LF-1"))
    );
    let actions = b.audit_actions("donor", donor).await;
    assert!(actions.iter().any(|a| a == "donor.defer"), "{actions:?}");
}

/// Path 2: a later compatible crossmatch superseded an incompatible one for the same unit and
/// sample, and the unit could be allocated. Methods are an enumeration, and `electronic` needs a
/// confirmed group and no antibodies.
async fn an_incompatible_crossmatch_stands_until_resolved(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("XM-1", "O", "negative", "male")).await;
    let request = b.request(&request_body(patient, 1)).await;
    let (unit, _) = b.ready("O", "negative", "negative", 1).await;
    let s = b.sample(patient).await;
    let bad = b.crossmatch(unit, s, "incompatible").await;
    b.crossmatch(unit, s, "compatible").await;
    let refused = b.allocate(&b.tech, request, json!({"unit_id": unit})).await;
    assert_eq!(
        codes(refused.problem(422, "incompatible")),
        vec!["crossmatch_incompatible"]
    );
    let resolve = |token: String| {
        let app = &b.app;
        async move {
            app.post(
                &format!("/api/v1/crossmatches/{bad}/resolve"),
                Some(&token),
                &json!({"reason": "clerical error found; repeat compatible"}),
            )
            .await
        }
    };
    resolve(b.tech.clone()).await.problem(403, "forbidden");
    resolve(b.director.clone()).await.ok(200);
    b.allocate(&b.tech, request, json!({"unit_id": unit})).await.ok(201);
    let actions = b.audit_actions("unit", unit).await;
    assert!(actions.iter().any(|a| a == "unit.crossmatch_resolve"), "{actions:?}");

    // Free text is no longer a method; electronic only for a confirmed group without antibodies.
    let (other, _) = b.ready("O", "negative", "negative", 1).await;
    let post = |body: Value| {
        let (app, tech) = (&b.app, b.tech.clone());
        async move { app.post("/api/v1/crossmatches", Some(&tech), &body).await }
    };
    post(json!({"unit_id": other, "sample_id": s, "result": "compatible", "method": "IAT"}))
        .await
        .problem(400, "validation_failed");
    let electronic = json!({"unit_id": other, "sample_id": s, "result": "compatible", "method": "electronic"});
    let refused = post(electronic.clone()).await;
    assert_eq!(
        codes(refused.problem(422, "electronic_crossmatch_not_allowed")),
        vec!["group_unconfirmed"]
    );
    confirm_group(&b.app, &b.tech, patient, "O", "negative").await;
    post(electronic.clone()).await.ok(201);
    b.app
        .patch(
            &format!("/api/v1/patients/{patient}"),
            Some(&b.hosp),
            &json!({"hla_antibodies": ["A2"]}),
        )
        .await
        .ok(200);
    let refused = post(electronic).await;
    assert_eq!(
        codes(refused.problem(422, "electronic_crossmatch_not_allowed")),
        vec!["antibodies_recorded"]
    );
    post(json!({"unit_id": other, "sample_id": s, "result": "compatible", "method": "iat", "kind": "leukocyte"}))
        .await
        .problem(400, "validation_failed");
}

/// Path 3: an issued unit that came back went straight to `available`, uninspected.
async fn a_returned_unit_is_inspected_before_it_goes_back(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("RT-1", "O", "negative", "male")).await;
    let request = b.request(&request_body(patient, 3)).await;
    let s = b.sample(patient).await;
    let issue_and_return = |unit: i64| {
        let b = &b;
        async move {
            let allocation = b.allocate(&b.tech, request, json!({"unit_id": unit})).await.ok(201)["id"]
                .as_i64()
                .expect("allocation");
            b.crossmatch(unit, s, "compatible").await;
            let din = b.unit(unit).await["din"].clone();
            b.issue(&b.tech, allocation, json!({"scanned_din": din})).await.ok(200);
            b.app
                .post(
                    &format!("/api/v1/allocations/{allocation}/return"),
                    Some(&b.tech),
                    &json!({"reason": "patient transferred to theatre"}),
                )
                .await
                .ok(200);
            allocation
        }
    };
    let (unit, _) = b.ready("O", "negative", "negative", 1).await;
    issue_and_return(unit).await;
    let back = b.unit(unit).await;
    assert_eq!(back["status"], "quarantined");
    assert_eq!(back["quarantine_reason"], "returned");
    assert_eq!(back["holds"], json!(["inspection_required"]));
    let refused = b
        .app
        .post(
            &format!("/api/v1/units/{unit}/release"),
            Some(&b.tech),
            &json!({"emergency": false}),
        )
        .await;
    assert_eq!(
        codes(refused.problem(422, "release_blocked")),
        vec!["inspection_required"]
    );
    b.allocate(&b.tech, request, json!({"unit_id": unit}))
        .await
        .problem(409, "unit_not_available");
    let inspect = |unit: i64, acceptable: bool| {
        let app = &b.app;
        let tech = b.tech.clone();
        async move {
            app.post(
                &format!("/api/v1/units/{unit}/inspection"),
                Some(&tech),
                &json!({"acceptable": acceptable, "notes": "seal intact"}),
            )
            .await
        }
    };
    let passed = inspect(unit, true).await;
    assert_eq!(passed.ok(201)["outcome"], "available", "{}", passed.text);
    assert_eq!(passed.body["unit"]["status"], "available");
    inspect(unit, true).await.problem(409, "no_inspection_due");

    // Found unacceptable: discarded.
    let (second, _) = b.ready("O", "negative", "negative", 1).await;
    issue_and_return(second).await;
    let failed = inspect(second, false).await;
    assert_eq!(failed.ok(201)["outcome"], "discarded");
    assert_eq!(failed.body["reasons"][0]["code"], "inspection_failed");
    assert_eq!(b.unit(second).await["status"], "discarded");

    // Out of controlled storage longer than the policy allows: discarded however it looks.
    let (third, _) = b.ready("O", "negative", "negative", 1).await;
    let allocation = issue_and_return(third).await;
    {
        use granulo::store::allocations;
        let mut conn = b.app.state.pool.get().expect("conn");
        let a = allocations::find(&mut conn, allocation)
            .expect("query")
            .expect("allocation");
        let mut data = allocations::AllocationData::from(a.clone());
        data.issued_at = a.ended_at.map(|t| t - TimeDelta::minutes(31));
        allocations::update(&mut conn, allocation, &data).expect("update");
    }
    let late = inspect(third, true).await;
    assert_eq!(late.ok(201)["outcome"], "discarded");
    assert_eq!(late.body["reasons"][0]["code"], "out_of_storage_too_long");
    assert_eq!(late.body["minutes_out_of_storage"], 31);
    let actions = b.audit_actions("unit", third).await;
    assert!(actions.iter().any(|a| a == "unit.inspection"), "{actions:?}");
}

/// Path 4: an excursion recorded while a unit was quarantined left no trace; once the markers
/// were negative a technologist released it.
async fn an_excursion_stays_on_the_unit_until_a_director_dispositions_it(backend: Backend) {
    let b = bank(backend).await;
    let (unit, _) = b.supplier_unit("O", "negative", "negative", 1).await;
    let reading = b
        .app
        .post(
            &format!("/api/v1/units/{unit}/storage-readings"),
            Some(&b.tech),
            &json!({"temperature_c": 27.5}),
        )
        .await;
    assert_eq!(reading.ok(201)["unit_status"], "quarantined");
    b.negative_markers(unit).await;
    let held = b.unit(unit).await;
    assert_eq!(held["excursions"].as_array().map(Vec::len), Some(1));
    assert_eq!(held["excursions"][0]["temperature_c"], 27.5);
    assert_eq!(held["holds"], json!(["excursion_review"]));
    let release = |token: String, body: Value| {
        let app = &b.app;
        async move {
            app.post(&format!("/api/v1/units/{unit}/release"), Some(&token), &body)
                .await
        }
    };
    let refused = release(b.tech.clone(), json!({"emergency": false})).await;
    assert_eq!(
        codes(refused.problem(422, "excursion_review")),
        vec!["excursion_review"]
    );
    release(
        b.tech.clone(),
        json!({"emergency": false, "excursion_disposition": "only 8 minutes"}),
    )
    .await
    .problem(403, "forbidden");
    let refused = release(b.director.clone(), json!({"emergency": false})).await;
    assert_eq!(codes(refused.problem(422, "release_blocked")), vec!["excursion_review"]);
    let released = release(
        b.director.clone(),
        json!({"emergency": false, "excursion_disposition": "27.5 °C for under 10 minutes; within the validated range"}),
    )
    .await;
    assert_eq!(released.ok(200)["status"], "available");
    assert_eq!(released.body["excursions"][0]["dispositioned"], true);
    assert_eq!(released.body["holds"], json!([]));

    // A location reading reaches every unit in the bank there, quarantined ones included.
    let (kept, _) = b.supplier_unit("O", "negative", "negative", 1).await;
    b.app
        .post(
            &format!("/api/v1/units/{kept}/storage-readings"),
            Some(&b.tech),
            &json!({"temperature_c": 22, "location": "Incubator 9"}),
        )
        .await
        .ok(201);
    let room = b
        .app
        .post(
            "/api/v1/storage-readings",
            Some(&b.tech),
            &json!({"location": "Incubator 9", "temperature_c": 18.0}),
        )
        .await;
    assert_eq!(
        room.ok(201)["quarantined_units"],
        json!([]),
        "it was quarantined already"
    );
    assert_eq!(b.unit(kept).await["holds"], json!(["excursion_review"]));
}

/// Path 5: a request's requirements only ranked donors; a CMV-positive unit was allocated to a
/// request requiring CMV-negative units.
async fn request_requirements_bind_the_unit(backend: Backend) {
    let b = bank(backend).await;
    let mut body = patient_body("RQ-1", "O", "negative", "male");
    body["cmv"] = json!("positive");
    let patient = b.patient(&body).await;
    let mut order = request_body(patient, 2);
    order["requirements"] = json!({"cmv_negative": true});
    let request = b.request(&order).await;
    for cmv in ["positive", "unknown"] {
        let (unit, _) = b.ready("O", "negative", cmv, 1).await;
        let refused = b.allocate(&b.tech, request, json!({"unit_id": unit})).await;
        assert_eq!(
            codes(refused.problem(422, "incompatible")),
            vec!["cmv_negative_required"],
            "CMV {cmv}"
        );
    }
    let (negative, _) = b.ready("O", "negative", "negative", 1).await;
    b.allocate(&b.tech, request, json!({"unit_id": negative})).await.ok(201);

    // HLA-compatible: a donor untyped at a locus of the patient's antibodies is blocked.
    let mut body = patient_body("RQ-2", "O", "negative", "male");
    body["hla_antibodies"] = json!(["DRB1*04"]);
    let patient = b.patient(&body).await;
    let mut order = request_body(patient, 1);
    order["requirements"] = json!({"hla_compatible": true});
    let request = b.request(&order).await;
    let collection = completed_collection(&b.app, &b.tech, "Hla", now_minute() - TimeDelta::hours(1)).await;
    let unit = b.collection_unit(collection).await;
    b.negative_markers(unit).await;
    b.release(unit).await;
    let refused = b.allocate(&b.director, request, json!({"unit_id": unit})).await;
    assert_eq!(codes(refused.problem(422, "incompatible")), vec!["hla_typing_required"]);
    // Granulocytes are always irradiated: the requirement cannot be waived.
    let mut order = request_body(patient, 1);
    order["requirements"] = json!({"irradiated": false});
    b.app
        .post("/api/v1/requests", Some(&b.hosp), &order)
        .await
        .problem(400, "validation_failed");
    let r = b.app.get(&format!("/api/v1/requests/{request}"), Some(&b.hosp)).await;
    assert_eq!(r.ok(200)["requirements"]["irradiated"], true);
}

/// Path 6: a patient whose CMV status was unknown got a CMV-positive unit with no finding.
async fn an_unknown_cmv_status_counts_as_negative(backend: Backend) {
    let b = bank(backend).await;
    let mut body = patient_body("CMV-1", "O", "negative", "male");
    body["cmv"] = json!("unknown");
    let patient = b.patient(&body).await;
    let (unit, _) = b.ready("O", "negative", "positive", 1).await;
    let c = b.compatibility(unit, patient).await;
    assert_eq!(c["verdict"], "compatible_with_warnings", "{c}");
    assert_eq!(codes(&c), vec!["cmv_mismatch"]);
    assert!(
        c["reasons"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown CMV serostatus"))
    );
    // The policy can say otherwise.
    let mut policy = b.app.get("/api/v1/policy", Some(&b.director)).await.ok(200).clone();
    policy["compat"]["cmv_unknown_as_negative"] = json!(false);
    b.app.put("/api/v1/policy", Some(&b.director), &policy).await.ok(200);
    assert_eq!(b.compatibility(unit, patient).await["verdict"], "compatible");
}

/// Path 7: a patient with an antibody at a locus the donor was never typed for was called
/// `compatible`.
async fn an_antibody_at_an_untyped_locus_is_a_finding(backend: Backend) {
    let b = bank(backend).await;
    let mut body = patient_body("HLA-1", "O", "negative", "male");
    body["hla_antibodies"] = json!(["DRB1*04"]);
    let patient = b.patient(&body).await;
    // The donor is typed at A and B only.
    let collection = completed_collection(&b.app, &b.tech, "Ab", now_minute() - TimeDelta::hours(1)).await;
    let unit = b.collection_unit(collection).await;
    let c = b.compatibility(unit, patient).await;
    assert_eq!(c["verdict"], "compatible_with_warnings", "{c}");
    assert_eq!(codes(&c), vec!["hla_untyped_locus"]);
    assert!(
        c["reasons"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("DRB1 (anti-DRB1*04)"))
    );
    // Granulocyte (HNA) antibodies are a finding until a compatible leukocyte crossmatch.
    b.app
        .patch(
            &format!("/api/v1/patients/{patient}"),
            Some(&b.hosp),
            &json!({"hla_antibodies": [], "granulocyte_antibodies": true}),
        )
        .await
        .ok(200);
    assert_eq!(codes(&b.compatibility(unit, patient).await), vec!["hna_antibodies"]);
    let s = b.sample(patient).await;
    b.app
        .post(
            "/api/v1/crossmatches",
            Some(&b.tech),
            &json!({"unit_id": unit, "sample_id": s, "result": "compatible", "method": "flow_cytometry"}),
        )
        .await
        .ok(201);
    assert_eq!(b.compatibility(unit, patient).await["verdict"], "compatible");
}

/// Path 8: selection used the group the hospital typed into the patient record (which it may
/// PATCH at any time); the blood bank never typed a sample.
async fn the_group_of_record_is_the_blood_banks_own_typing(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("GR-1", "A", "positive", "male")).await;
    let request = b.request(&request_body(patient, 3)).await;
    let (group_a, _) = b.ready("A", "negative", "negative", 1).await;
    let refused = b.allocate(&b.tech, request, json!({"unit_id": group_a})).await;
    assert_eq!(codes(refused.problem(422, "incompatible")), vec!["abo_unconfirmed"]);
    // Declaring another group changes nothing.
    b.app
        .patch(
            &format!("/api/v1/patients/{patient}"),
            Some(&b.hosp),
            &json!({"abo": "AB"}),
        )
        .await
        .ok(200);
    assert_eq!(codes(&b.compatibility(group_a, patient).await), vec!["abo_unconfirmed"]);
    b.app
        .patch(
            &format!("/api/v1/patients/{patient}"),
            Some(&b.hosp),
            &json!({"abo": "A"}),
        )
        .await
        .ok(200);
    // Only the blood bank types samples.
    let first = b.sample(patient).await;
    b.app
        .post(
            &format!("/api/v1/samples/{first}/typing"),
            Some(&b.hosp),
            &json!({"abo": "A", "rhd": "negative"}),
        )
        .await
        .problem(403, "forbidden");
    let typed = b
        .app
        .post(
            &format!("/api/v1/samples/{first}/typing"),
            Some(&b.tech),
            &json!({"abo": "A", "rhd": "negative"}),
        )
        .await;
    assert_eq!(typed.ok(201)["group_of_record"]["status"], "unconfirmed");
    assert_eq!(codes(&b.compatibility(group_a, patient).await), vec!["abo_unconfirmed"]);
    // A second sample drawn at another time, typed the same: confirmed.
    let second = b
        .app
        .post(
            &format!("/api/v1/patients/{patient}/samples"),
            Some(&b.hosp),
            &json!({"drawn_at": ts(now_minute() - TimeDelta::hours(5)), "transfused_or_pregnant_within_3_months": true}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("sample");
    b.app
        .post(
            &format!("/api/v1/samples/{second}/typing"),
            Some(&b.tech),
            &json!({"abo": "A", "rhd": "negative"}),
        )
        .await
        .ok(201);
    let shown = b.app.get(&format!("/api/v1/patients/{patient}"), Some(&b.hosp)).await;
    let record = shown.ok(200)["group_of_record"].clone();
    assert_eq!(
        (
            record["abo"].clone(),
            record["rhd"].clone(),
            record["confirmed"].clone()
        ),
        (json!("A"), json!("negative"), json!(true))
    );
    assert_eq!(record["typings"].as_array().map(Vec::len), Some(2));
    assert_eq!(shown.body["abo"], "A", "the declared group is shown beside it");
    assert_eq!(shown.body["rhd"], "positive");
    // The declared RhD differs from the typed one: an alert.
    let alerts = b.open_alerts("patient.group_discordant").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["details"]["reasons"], json!(["declared_rhd_differs"]));
    b.allocate(&b.tech, request, json!({"unit_id": group_a})).await.ok(201);

    // A discordant typing blocks every non-O unit again.
    let third = b.sample(patient).await;
    b.app
        .post(
            &format!("/api/v1/samples/{third}/typing"),
            Some(&b.tech),
            &json!({"abo": "B", "rhd": "negative"}),
        )
        .await
        .ok(201);
    let (another_a, _) = b.ready("A", "negative", "negative", 1).await;
    assert_eq!(
        codes(&b.compatibility(another_a, patient).await),
        vec!["abo_discordant"]
    );
    let (group_o, _) = b.ready("O", "negative", "negative", 1).await;
    assert_eq!(b.compatibility(group_o, patient).await["verdict"], "compatible");
}

/// Path 9: the shelf-life margin was measured from now, not from the transfusion, and was not
/// checked at issue.
async fn the_shelf_life_margin_counts_from_the_transfusion(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("SL-1", "O", "negative", "male")).await;
    // Needed in 6 h: a unit expiring in 7 h leaves 1 h at the transfusion, under the 2 h margin.
    let request = b.request(&request_body(patient, 2)).await;
    let (short, _) = b.ready("O", "negative", "negative", 17).await;
    let refused = b.allocate(&b.tech, request, json!({"unit_id": short})).await;
    assert_eq!(
        codes(refused.problem(422, "incompatible")),
        vec!["insufficient_shelf_life"]
    );
    let (enough, din) = b.ready("O", "negative", "negative", 16).await;
    let allocation = b.allocate(&b.tech, request, json!({"unit_id": enough})).await.ok(201)["id"]
        .as_i64()
        .expect("allocation");
    let s = b.sample(patient).await;
    b.crossmatch(enough, s, "compatible").await;
    // At issue the unit has 20 minutes left, under the 30 minutes the policy asks for.
    b.set_unit_expiry(enough, Utc::now() + TimeDelta::minutes(20));
    let refused = b.issue(&b.tech, allocation, json!({"scanned_din": din})).await;
    assert_eq!(
        codes(refused.problem(422, "issue_refused")),
        vec!["insufficient_shelf_life"]
    );
    b.set_unit_expiry(enough, Utc::now() + TimeDelta::minutes(31));
    b.issue(&b.tech, allocation, json!({"scanned_din": din})).await.ok(200);
}

/// Issue applies today's rules: a finding that appeared since allocation needs handling again.
async fn issue_reassesses_what_changed_since_allocation(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.patient(&patient_body("IS-1", "O", "negative", "male")).await;
    let request = b.request(&request_body(patient, 2)).await;
    let (unit, din) = b.ready("O", "negative", "negative", 1).await;
    let allocation = b.allocate(&b.tech, request, json!({"unit_id": unit})).await.ok(201)["id"]
        .as_i64()
        .expect("allocation");
    let (second, second_din) = b.ready("O", "negative", "negative", 1).await;
    let second_allocation = b.allocate(&b.tech, request, json!({"unit_id": second})).await.ok(201)["id"]
        .as_i64()
        .expect("allocation");
    assert_eq!(
        b.app
            .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.tech))
            .await
            .ok(200)["warnings"],
        json!([])
    );
    let s = b.sample(patient).await;
    b.crossmatch(unit, s, "compatible").await;
    // An antibody reported after allocation: the supplier's donor is not HLA-typed.
    b.app
        .patch(
            &format!("/api/v1/patients/{patient}"),
            Some(&b.hosp),
            &json!({"hla_antibodies": ["A2"]}),
        )
        .await
        .ok(200);
    let refused = b.issue(&b.tech, allocation, json!({"scanned_din": din})).await;
    assert_eq!(
        codes(refused.problem(422, "authorisation_required")),
        vec!["hla_untyped_locus"]
    );
    let authorisation = json!({"by": "Dr Hale", "role": "on-call haematologist", "at": ts(now_minute()),
                               "reason": "no typed donor in time"});
    let issued = b
        .issue(
            &b.tech,
            allocation,
            json!({"scanned_din": din, "authorisation": authorisation}),
        )
        .await;
    assert_eq!(issued.ok(200)["status"], "issued");
    assert_eq!(issued.body["warnings"][0]["code"], "hla_untyped_locus");
    assert_eq!(issued.body["authorisations"][0]["stage"], "issue");
    assert_eq!(issued.body["authorisations"][0]["by"], "Dr Hale");
    let report = b.app.get("/api/v1/reports/exceptions", Some(&b.tech)).await;
    assert_eq!(report.ok(200)["items"][0]["allocation_id"], allocation);

    // A block that appeared since allocation refuses the issue outright: a reactive result.
    b.crossmatch(second, s, "compatible").await;
    b.app
        .post(
            &format!("/api/v1/units/{second}/tests"),
            Some(&b.tech),
            &json!({"marker": "syphilis", "result": "positive"}),
        )
        .await
        .ok(200);
    let refused = b
        .issue(
            &b.director,
            second_allocation,
            json!({"scanned_din": second_din, "authorisation": authorisation}),
        )
        .await;
    let reasons = codes(refused.problem(422, "issue_refused"));
    assert!(reasons.contains(&"unit_quarantined".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"reactive_marker".to_owned()), "{reasons:?}");
}
