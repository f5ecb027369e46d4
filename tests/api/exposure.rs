//! Donor exposure (issue 13), one test per complaint: the red cells a collection takes, whole
//! blood's own interval, the programme's default agents in matching and the alert scan, and
//! cumulative HES and corticosteroid exposure; then the policy keys and the migration.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::connection::SimpleConnection as _;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_collection_counts_the_red_cells_it_takes,
    whole_blood_takes_its_own_policy_interval,
    candidates_and_the_alert_scan_check_the_default_agents,
    cumulative_hes_and_steroid_courses_are_limited,
    exposure_policy_keys_are_optional_and_validated,
    units_made_before_the_release_count_their_red_cells,
);

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn scan_at(app: &TestApp, now: DateTime<Utc>) -> granulo::jobs::ScanReport {
    let mut conn = app.state.pool.get().expect("conn");
    granulo::jobs::run_once(&mut conn, "test", now)
        .expect("scan runs")
        .expect("lease free")
}

async fn edit_policy(app: &TestApp, director: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut policy = app.get("/api/v1/policy", Some(director)).await.ok(200).clone();
    edit(&mut policy);
    app.put("/api/v1/policy", Some(director), &policy).await.ok(200).clone()
}

/// Books, starts and completes a collection of `donor` with `complete` as the completion body
/// (`ended_at` two hours after `start` unless given); returns its id.
async fn collect(app: &TestApp, token: &str, donor: i64, device: i64, start: DateTime<Utc>, complete: Value) -> i64 {
    let id = app.book(token, donor, device, start).await.ok(201)["id"]
        .as_i64()
        .expect("collection id");
    app.post(
        &format!("/api/v1/collections/{id}/start"),
        Some(token),
        &json!({"started_at": ts(start)}),
    )
    .await
    .ok(200);
    let mut body = complete;
    if body.get("ended_at").is_none() {
        body["ended_at"] = json!(ts(start + TimeDelta::hours(2)));
    }
    app.post(&format!("/api/v1/collections/{id}/complete"), Some(token), &body)
        .await
        .ok(200);
    id
}

async fn donation(app: &TestApp, token: &str, donor: i64, body: Value) {
    app.post(&format!("/api/v1/donors/{donor}/donations"), Some(token), &body)
        .await
        .ok(201);
}

fn message<'a>(e: &'a Value, code: &str) -> &'a str {
    e["reasons"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["code"] == code))
        .and_then(|r| r["message"].as_str())
        .unwrap_or("")
}

/// Complaint 1: the red cells of the product and of an aborted run were never counted.
async fn a_collection_counts_the_red_cells_it_takes(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let now = now_minute();

    // A completed collection, and 170 mL of red cells lost in a platelet donation 10 days ago.
    let ann = app.register_donor(&tech, &donor_body("Ann", "O", "positive")).await;
    let device = app.create_device(&tech, "Optia 1").await;
    let start = now - TimeDelta::hours(4);
    let end = start + TimeDelta::hours(2);
    let id = collect(&app, &tech, ann, device, start, json!({})).await;
    donation(
        &app,
        &tech,
        ann,
        json!({"kind": "platelets", "donated_at": ts(now - TimeDelta::days(10)), "red_cell_loss_ml": 170}),
    )
    .await;
    let later = end + TimeDelta::days(3);
    assert_eq!(app.eligibility(&tech, ann, later).await["eligible"], true);
    // Its unit holds 30.5 mL of red cells: 170 + 31 (rounded up) is over 200 mL in 8 weeks.
    app.post(
        "/api/v1/units",
        Some(&tech),
        &json!({"source": {"type": "collection", "collection_id": id}, "product_code": PRODUCT,
                "volume_ml": 250, "granulocyte_count": 3e10, "red_cell_volume_ml": 30.5}),
    )
    .await
    .ok(201);
    let e = app.eligibility(&tech, ann, later).await;
    assert_eq!(reason_codes(&e), vec!["red_cell_loss_8_weeks"], "{e}");
    assert_eq!(
        message(&e, "red_cell_loss_8_weeks"),
        "201 mL red cells removed in the last 8 weeks; at most 200 mL allowed"
    );
    // Eight weeks after the collection its red cells no longer count.
    assert_eq!(
        app.eligibility(&tech, ann, end + TimeDelta::days(56)).await["eligible"],
        true
    );
    let c = app.get(&format!("/api/v1/collections/{id}"), Some(&tech)).await;
    assert_eq!(c.ok(200)["product_red_cell_ml"], 30.5);
    assert_eq!(c.body["red_cell_loss_ml"], Value::Null);

    // An aborted run that lost 150 mL, and 60 mL in a plasma donation 20 days ago.
    let ben = app.register_donor(&tech, &donor_body("Ben", "O", "positive")).await;
    let other = app.create_device(&tech, "Optia 2").await;
    let run_start = now - TimeDelta::hours(3);
    let run = app.book(&tech, ben, other, run_start).await.ok(201)["id"]
        .as_i64()
        .expect("id");
    app.post(
        &format!("/api/v1/collections/{run}/start"),
        Some(&tech),
        &json!({"started_at": ts(run_start)}),
    )
    .await
    .ok(200);
    let abort = format!("/api/v1/collections/{run}/abort");
    for (body, field) in [
        (
            json!({"reason": "line clotted", "red_cell_loss_ml": 1001}),
            "red_cell_loss_ml",
        ),
        (
            json!({"reason": "line clotted", "red_cell_loss_ml": -5}),
            "red_cell_loss_ml",
        ),
        (
            json!({"reason": "line clotted", "hes_volume_ml": 5001}),
            "hes_volume_ml",
        ),
    ] {
        let r = app.post(&abort, Some(&tech), &body).await;
        assert!(
            fields(r.problem(400, "validation_failed")).contains(&field.to_owned()),
            "{}",
            r.text
        );
    }
    let aborted = app
        .post(
            &abort,
            Some(&tech),
            &json!({"reason": "line clotted", "aborted_at": ts(run_start + TimeDelta::hours(1)),
                    "red_cell_loss_ml": 150}),
        )
        .await;
    assert_eq!(aborted.ok(200)["status"], "aborted");
    assert_eq!(aborted.body["red_cell_loss_ml"], 150);
    donation(
        &app,
        &tech,
        ben,
        json!({"kind": "plasma", "donated_at": ts(now - TimeDelta::days(20)), "red_cell_loss_ml": 60}),
    )
    .await;
    let e = app.eligibility(&tech, ben, now + TimeDelta::days(3)).await;
    assert_eq!(reason_codes(&e), vec!["red_cell_loss_8_weeks"], "{e}");
    // Recorded once: the run cannot be aborted again, and the database refuses a change.
    app.post(&abort, Some(&tech), &json!({"reason": "again", "red_cell_loss_ml": 0}))
        .await
        .problem(409, "invalid_transition");
    {
        let mut conn = app.state.pool.get().expect("conn");
        for sql in [
            format!("UPDATE collections SET red_cell_loss_ml = 10 WHERE id = {run}"),
            format!("UPDATE collections SET red_cell_loss_ml = NULL WHERE id = {run}"),
            format!("UPDATE collections SET product_red_cell_ml = 1 WHERE id = {id}"),
        ] {
            assert!(conn.batch_execute(&sql).is_err(), "{sql}");
        }
    }

    // A booking cancelled before it started lost nothing.
    let cal = app.register_donor(&tech, &donor_body("Cal", "O", "positive")).await;
    let cancelled = app.book(&tech, cal, other, now + TimeDelta::days(5)).await.ok(201)["id"]
        .as_i64()
        .expect("id");
    let r = app
        .post(
            &format!("/api/v1/collections/{cancelled}/abort"),
            Some(&tech),
            &json!({"reason": "donor unwell", "red_cell_loss_ml": 20}),
        )
        .await;
    assert_eq!(fields(r.problem(400, "validation_failed")), vec!["red_cell_loss_ml"]);

    // Audited in the transaction that records them; the chain holds.
    let admin = app.admin_token().await;
    let trail = app
        .get(
            &format!("/api/v1/audit?entity_type=collection&entity_id={id}"),
            Some(&admin),
        )
        .await;
    let entry = &trail.ok(200)["items"][0];
    assert_eq!(entry["action"], "collection.product_red_cells");
    assert_eq!(entry["before"]["product_red_cell_ml"], Value::Null);
    assert_eq!(entry["after"]["product_red_cell_ml"], 30.5);
    let trail = app
        .get(
            &format!("/api/v1/audit?entity_type=collection&entity_id={run}"),
            Some(&admin),
        )
        .await;
    assert_eq!(trail.ok(200)["items"][0]["after"]["red_cell_loss_ml"], 150);
    let report = granulo::store::audit::verify(&mut app.state.pool.get().expect("conn")).expect("verify");
    assert_eq!(report.first_bad, None);
}

/// Complaint 2: whole blood always took 8 weeks, whatever the policy said.
async fn whole_blood_takes_its_own_policy_interval(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let now = now_minute();

    // A whole-blood donation 5 weeks ago (red cells not returned, as whole blood never does).
    let wb = app.register_donor(&tech, &donor_body("Wynn", "A", "positive")).await;
    let given = now - TimeDelta::weeks(5);
    donation(
        &app,
        &tech,
        wb,
        json!({"kind": "whole_blood", "donated_at": ts(given), "red_cell_loss_ml": 200}),
    )
    .await;
    let e = app.eligibility(&tech, wb, now).await;
    assert_eq!(e["eligible"], true, "4 weeks by default: {e}");
    let e = app
        .eligibility(&tech, wb, given + TimeDelta::weeks(4) - TimeDelta::minutes(1))
        .await;
    assert_eq!(reason_codes(&e), vec!["whole_blood_interval"]);
    assert_eq!(
        message(&e, "whole_blood_interval"),
        "whole-blood donation 27 d 23 h 59 min ago; at least 4 weeks required"
    );

    // The medical director's key decides.
    let policy = edit_policy(&app, &director, |p| {
        assert_eq!(p["donor"]["weeks_after_whole_blood"], 4);
        assert_eq!(p["donor"]["weeks_after_red_cell_loss"], Value::Null);
        p["donor"]["weeks_after_whole_blood"] = json!(6);
    })
    .await;
    assert_eq!(policy["donor"]["weeks_after_whole_blood"], 6);
    let e = app.eligibility(&tech, wb, now).await;
    assert_eq!(reason_codes(&e), vec!["whole_blood_interval"]);
    assert!(
        message(&e, "whole_blood_interval").ends_with("at least 6 weeks required"),
        "{e}"
    );
    assert_eq!(
        app.eligibility(&tech, wb, given + TimeDelta::weeks(6)).await["eligible"],
        true
    );

    // Red cells kept by a red-cell apheresis still take the 8 weeks of that rule.
    let rc = app.register_donor(&tech, &donor_body("Rhea", "A", "positive")).await;
    let rc_at = now - TimeDelta::weeks(7);
    donation(
        &app,
        &tech,
        rc,
        json!({"kind": "red_cells", "donated_at": ts(rc_at), "red_cell_loss_ml": 200}),
    )
    .await;
    let e = app.eligibility(&tech, rc, now).await;
    assert_eq!(reason_codes(&e), vec!["whole_blood_interval"]);
    assert!(
        message(&e, "whole_blood_interval").ends_with("at least 8 weeks required (red cells not returned)"),
        "{e}"
    );
    assert_eq!(
        app.eligibility(&tech, rc, rc_at + TimeDelta::weeks(8)).await["eligible"],
        true
    );

    // Another procedure's equivalent loss follows whole blood's interval until it has its own.
    let pl = app.register_donor(&tech, &donor_body("Pia", "A", "positive")).await;
    donation(
        &app,
        &tech,
        pl,
        json!({"kind": "platelets", "donated_at": ts(given), "red_cell_loss_ml": 200}),
    )
    .await;
    assert_eq!(
        reason_codes(&app.eligibility(&tech, pl, now).await),
        vec!["whole_blood_interval"]
    );
    edit_policy(&app, &director, |p| p["donor"]["weeks_after_red_cell_loss"] = json!(4)).await;
    assert_eq!(app.eligibility(&tech, pl, now).await["eligible"], true);
    assert_eq!(
        reason_codes(&app.eligibility(&tech, wb, now).await),
        vec!["whole_blood_interval"],
        "whole blood keeps its 6 weeks"
    );
}

/// Each donor candidate of the request: (verdict, reason codes).
async fn donor_verdicts(
    app: &TestApp,
    token: &str,
    request: i64,
) -> std::collections::HashMap<i64, (String, Vec<String>)> {
    let body = app
        .get(&format!("/api/v1/requests/{request}/candidates"), Some(token))
        .await
        .ok(200)
        .clone();
    body["donors"]
        .as_array()
        .expect("donors")
        .iter()
        .map(|d| {
            let codes = d["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect();
            (
                d["donor_id"].as_i64().expect("id"),
                (d["verdict"].as_str().unwrap_or("").to_owned(), codes),
            )
        })
        .collect()
}

/// Complaint 3: contraindications were checked only against agents passed in by hand, which
/// matching and the alert scan never passed.
async fn candidates_and_the_alert_scan_check_the_default_agents(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let now = now_minute();
    // The default table's agents, and a checklist that spells G-CSF as the sources do
    // (stimulations record `gcsf`).
    edit_policy(&app, &director, |p| {
        p["donor"]["contraindications"] = json!([
            {"agent": "dexamethasone", "item": "diabetes mellitus"},
            {"agent": "G-CSF", "item": "splenomegaly"}
        ]);
    })
    .await;
    let flag = |agent: &str, item: &str| json!({"contraindications": [{"agent": agent, "item": item}]});
    let diabetic = app.register_donor(&tech, &donor_body("Dia", "A", "positive")).await;
    app.patch(
        &format!("/api/v1/donors/{diabetic}"),
        Some(&tech),
        &flag("dexamethasone", "diabetes mellitus"),
    )
    .await
    .ok(200);
    let spleen = app.register_donor(&tech, &donor_body("Spl", "A", "positive")).await;
    app.patch(
        &format!("/api/v1/donors/{spleen}"),
        Some(&tech),
        &flag("g-csf", "splenomegaly"),
    )
    .await
    .ok(200);
    let plain = app.register_donor(&tech, &donor_body("Pat", "A", "positive")).await;

    let (_, hosp) = hospital(&mut app).await;
    let patient = typed_patient(&app, &hosp, &tech, &patient_body("EXP-1", "A", "positive", "male")).await;
    let request = app
        .post("/api/v1/requests", Some(&hosp), &request_body(patient, 2))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("request");
    let verdict = donor_verdicts(&app, &tech, request).await;
    let (v, codes) = verdict[&diabetic].clone();
    assert_eq!(v, "incompatible");
    assert!(codes.contains(&"contraindicated_agent".to_owned()), "{codes:?}");
    let (v, codes) = verdict[&spleen].clone();
    assert_eq!(v, "incompatible");
    assert!(codes.contains(&"contraindicated_agent".to_owned()), "{codes:?}");
    assert_eq!(verdict[&plain].0, "compatible");

    // A collection booked without planned agents: the scan checks the default agents.
    let device = app.create_device(&tech, "Optia 1").await;
    let booked = app
        .book(&tech, diabetic, device, now + TimeDelta::hours(10))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("collection");
    let other = app.create_device(&tech, "Optia 2").await;
    app.book(&tech, plain, other, now + TimeDelta::hours(10)).await.ok(201);
    scan_at(&app, now);
    let open = app
        .get(
            "/api/v1/alerts?status=open&kind=collection.donor_ineligible",
            Some(&tech),
        )
        .await
        .ok(200)["items"]
        .as_array()
        .expect("items")
        .clone();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["entity_id"], booked.to_string());

    // The programme stops giving dexamethasone: the donor is proposed again, the alert resolves.
    edit_policy(&app, &director, |p| {
        assert_eq!(p["stimulation"]["default_agents"], json!(["gcsf", "dexamethasone"]));
        p["stimulation"]["default_agents"] = json!(["gcsf"])
    })
    .await;
    // (The booked donor is now too close to that collection for the next one.)
    let verdict = donor_verdicts(&app, &tech, request).await;
    assert!(
        !verdict[&diabetic].1.contains(&"contraindicated_agent".to_owned()),
        "{:?}",
        verdict[&diabetic]
    );
    assert_eq!(
        verdict[&spleen],
        ("incompatible".to_owned(), vec!["contraindicated_agent".to_owned()])
    );
    scan_at(&app, now);
    let open = app
        .get(
            "/api/v1/alerts?status=open&kind=collection.donor_ineligible",
            Some(&tech),
        )
        .await;
    assert_eq!(open.ok(200)["items"].as_array().map(Vec::len), Some(0));
    // Unless the collection plans it.
    app.patch(
        &format!("/api/v1/collections/{booked}"),
        Some(&tech),
        &json!({"planned_agents": ["dexamethasone"]}),
    )
    .await
    .problem(422, "donor_ineligible");
}

/// Complaint 4: cumulative HES and corticosteroid exposure were not tracked.
async fn cumulative_hes_and_steroid_courses_are_limited(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let now = now_minute();

    // The default table: at most 12 corticosteroid courses in 12 months. Doses given without a
    // collection are a course each; one every 30 days.
    let dee = app.register_donor(&tech, &donor_body("Dee", "O", "positive")).await;
    let course = |k: i64| {
        json!({"agent": "dexamethasone", "dose": 8, "dose_unit": "mg",
               "administered_at": ts(now - TimeDelta::days(1 + 30 * k))})
    };
    for k in 0..11 {
        app.post(&format!("/api/v1/donors/{dee}/stimulations"), Some(&tech), &course(k))
            .await
            .ok(201);
    }
    assert_eq!(app.eligibility(&tech, dee, now).await["eligible"], true, "11 courses");
    app.post(&format!("/api/v1/donors/{dee}/stimulations"), Some(&tech), &course(11))
        .await
        .ok(201);
    let e = app.eligibility(&tech, dee, now).await;
    assert_eq!(reason_codes(&e), vec!["steroid_course_limit_12_months"], "{e}");
    assert_eq!(
        message(&e, "steroid_course_limit_12_months"),
        "12 corticosteroid courses in the last 365 days; at most 12 allowed in any 12 months"
    );
    // G-CSF is no corticosteroid.
    let gus = app.register_donor(&tech, &donor_body("Gus", "O", "positive")).await;
    for k in 0..12 {
        let mut body = course(k);
        body["agent"] = json!("gcsf");
        body["dose"] = json!(480);
        body["dose_unit"] = json!("ug");
        app.post(&format!("/api/v1/donors/{gus}/stimulations"), Some(&tech), &body)
            .await
            .ok(201);
    }
    assert_eq!(app.eligibility(&tech, gus, now).await["eligible"], true);

    // The medical director's limits.
    edit_policy(&app, &director, |p| {
        assert_eq!(p["donor"]["max_hes_ml_per_12_months"], 6000);
        assert_eq!(p["donor"]["max_steroid_courses_per_12_months"], 12);
        p["donor"]["max_hes_ml_per_12_months"] = json!(1000);
        p["donor"]["max_steroid_courses_per_12_months"] = json!(2);
    })
    .await;

    // Two collections 10 days apart, each with dexamethasone the evening before.
    let sam = app.register_donor(&tech, &donor_body("Sam", "O", "positive")).await;
    let device = app.create_device(&tech, "Optia 1").await;
    let dex = |collection: i64, at: DateTime<Utc>| json!({"agent": "dexamethasone", "dose": 8, "dose_unit": "mg", "administered_at": ts(at), "collection_id": collection});
    let first_start = now - TimeDelta::days(20);
    let first = collect(&app, &tech, sam, device, first_start, json!({})).await;
    let first_dose = first_start - TimeDelta::hours(12);
    app.post(
        &format!("/api/v1/donors/{sam}/stimulations"),
        Some(&tech),
        &dex(first, first_dose),
    )
    .await
    .ok(201);
    assert_eq!(app.eligibility(&tech, sam, now).await["eligible"], true, "one course");
    // The second collection's own course does not stop it from starting.
    let second_start = now - TimeDelta::days(10);
    let second = app.book(&tech, sam, device, second_start).await.ok(201)["id"]
        .as_i64()
        .expect("id");
    app.post(
        &format!("/api/v1/donors/{sam}/stimulations"),
        Some(&tech),
        &dex(second, second_start - TimeDelta::hours(12)),
    )
    .await
    .ok(201);
    app.post(
        &format!("/api/v1/collections/{second}/start"),
        Some(&tech),
        &json!({"started_at": ts(second_start)}),
    )
    .await
    .ok(200);
    app.post(
        &format!("/api/v1/collections/{second}/complete"),
        Some(&tech),
        &json!({"ended_at": ts(second_start + TimeDelta::hours(2))}),
    )
    .await
    .ok(200);
    let e = app.eligibility(&tech, sam, now).await;
    assert_eq!(reason_codes(&e), vec!["steroid_course_limit_12_months"], "{e}");
    assert_eq!(
        message(&e, "steroid_course_limit_12_months"),
        "2 corticosteroid courses in the last 365 days; at most 2 allowed in any 12 months"
    );
    let refused = app.book(&tech, sam, device, now + TimeDelta::days(2)).await;
    assert_eq!(
        reason_codes(refused.problem(422, "donor_ineligible")),
        vec!["steroid_course_limit_12_months"]
    );
    // The first course leaves the window 365 days after its dose.
    let year = TimeDelta::days(365);
    assert_eq!(
        reason_codes(
            &app.eligibility(&tech, sam, first_dose + year - TimeDelta::minutes(1))
                .await
        ),
        vec!["steroid_course_limit_12_months"]
    );
    assert_eq!(app.eligibility(&tech, sam, first_dose + year).await["eligible"], true);

    // HES: 600 mL, then 400 mL reach the 1000 mL limit.
    let hal = app.register_donor(&tech, &donor_body("Hal", "O", "positive")).await;
    let other = app.create_device(&tech, "Optia 2").await;
    let c1 = collect(
        &app,
        &tech,
        hal,
        other,
        now - TimeDelta::days(20),
        json!({"hes_volume_ml": 600}),
    )
    .await;
    let c = app.get(&format!("/api/v1/collections/{c1}"), Some(&tech)).await;
    assert_eq!(c.ok(200)["hes_volume_ml"], 600);
    assert_eq!(c.body["hes_used"], true, "implied by the volume");
    assert_eq!(app.eligibility(&tech, hal, now).await["eligible"], true);
    let start = now - TimeDelta::days(10);
    let c2 = app.book(&tech, hal, other, start).await.ok(201)["id"]
        .as_i64()
        .expect("id");
    app.post(
        &format!("/api/v1/collections/{c2}/start"),
        Some(&tech),
        &json!({"started_at": ts(start)}),
    )
    .await
    .ok(200);
    let complete = format!("/api/v1/collections/{c2}/complete");
    for body in [
        json!({"hes_used": false, "hes_volume_ml": 100}),
        json!({"hes_used": true, "hes_volume_ml": 0}),
        json!({"hes_volume_ml": 5001}),
        json!({"hes_volume_ml": -1}),
    ] {
        let r = app.post(&complete, Some(&tech), &body).await;
        assert_eq!(
            fields(r.problem(400, "validation_failed")),
            vec!["hes_volume_ml"],
            "{body}"
        );
    }
    app.post(
        &complete,
        Some(&tech),
        &json!({"ended_at": ts(start + TimeDelta::hours(2)), "hes_used": true, "hes_volume_ml": 400}),
    )
    .await
    .ok(200);
    let e = app.eligibility(&tech, hal, now).await;
    assert_eq!(reason_codes(&e), vec!["hes_limit_12_months"], "{e}");
    assert_eq!(
        message(&e, "hes_limit_12_months"),
        "1000 mL of hydroxyethyl starch (HES) received in the last 365 days; the limit is 1000 mL in any 12 months"
    );
    // A higher limit: one mL under it is eligible.
    edit_policy(&app, &director, |p| {
        p["donor"]["max_hes_ml_per_12_months"] = json!(1001)
    })
    .await;
    assert_eq!(app.eligibility(&tech, hal, now).await["eligible"], true);
}

async fn exposure_policy_keys_are_optional_and_validated(backend: Backend) {
    let mut app = spawn(backend).await;
    let director = app.token_for("medical_director").await;
    // A client from before this release writes the table it knows.
    let mut old = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    old.as_object_mut().expect("object").remove("stimulation");
    for key in [
        "weeks_after_red_cell_loss",
        "max_hes_ml_per_12_months",
        "max_steroid_courses_per_12_months",
    ] {
        old["donor"].as_object_mut().expect("donor").remove(key);
    }
    old["donor"]["age_max"] = json!(70);
    let saved = app.put("/api/v1/policy", Some(&director), &old).await;
    let p = saved.ok(200);
    assert_eq!(p["donor"]["age_max"], 70);
    assert_eq!(p["donor"]["max_hes_ml_per_12_months"], 6000);
    assert_eq!(p["stimulation"]["default_agents"], json!(["gcsf", "dexamethasone"]));

    let mut bad = p.clone();
    bad["donor"]["weeks_after_red_cell_loss"] = json!(9);
    bad["donor"]["max_hes_ml_per_12_months"] = json!(0);
    bad["donor"]["max_steroid_courses_per_12_months"] = json!(101);
    bad["stimulation"]["default_agents"] = json!(["G-CSF"]);
    bad["stimulation"]["corticosteroid_agents"] = json!([]);
    let r = app.put("/api/v1/policy", Some(&director), &bad).await;
    let mut got = fields(r.problem(400, "validation_failed"));
    got.sort();
    assert_eq!(
        got,
        vec![
            "donor.max_hes_ml_per_12_months",
            "donor.max_steroid_courses_per_12_months",
            "donor.weeks_after_red_cell_loss",
            "stimulation.corticosteroid_agents",
            "stimulation.default_agents[0]",
        ]
    );
    let mut unknown = p.clone();
    unknown["stimulation"]["favourite"] = json!("gcsf");
    app.put("/api/v1/policy", Some(&director), &unknown)
        .await
        .problem(400, "validation_failed");
}

/// A unit made from a collection before this release: the migration records its red cells on
/// the collection, so they count.
async fn units_made_before_the_release_count_their_red_cells(backend: Backend) {
    let db = Arc::new(TestDb::new(backend));
    let ended = Utc::now() - TimeDelta::hours(2);
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let (now, start, end, expires) = (
        time(Utc::now()),
        time(ended - TimeDelta::hours(2)),
        time(ended),
        time(ended + TimeDelta::hours(24)),
    );
    {
        let mut conn = migrated_before(backend, &db, "2026-11-29-000010");
        conn.batch_execute(&format!(
            "INSERT INTO donors (donor_number, given_name, family_name, date_of_birth, sex, weight_kg, abo, rhd, cmv, hla,
                                 donor_type, contraindications, active, search_text, created_at, updated_at)
                 VALUES ('GD900001', 'Old', 'Donor', '1980-01-01', 'male', 80, 'O', 'positive', 'negative',
                         '{{\"a\":[],\"b\":[],\"c\":[],\"drb1\":[]}}', 'community', '[]', TRUE, 'old donor gd900001',
                         '{now}', '{now}');
             INSERT INTO devices (name, active, created_at, updated_at) VALUES ('Old device', TRUE, '{now}', '{now}');
             INSERT INTO collections (donor_id, device_id, status, scheduled_start, scheduled_end, planned_agents,
                                      started_at, ended_at, adverse_events, created_at, updated_at)
                 SELECT d.id, v.id, 'completed', '{start}', '{end}', '[]', '{start}', '{end}', '[]', '{now}', '{now}'
                 FROM donors d, devices v WHERE d.donor_number = 'GD900001';
             INSERT INTO units (din, product_code, source, collection_id, donor_id, pooled, abo, rhd, cmv, volume_ml,
                                granulocyte_count, red_cell_volume_ml, collected_at, expires_at, status, created_at,
                                updated_at)
                 SELECT 'A999926900001', 'E9999V00', 'collection', c.id, c.donor_id, FALSE, 'O', 'positive', 'negative',
                        250, 3e10, 210, '{end}', '{expires}', 'quarantined', '{now}', '{now}'
                 FROM collections c;"
        ))
        .expect("rows of the earlier release");
    }
    let mut app = spawn_on(backend, db, |_| {}).await;
    let tech = app.token_for("technologist").await;
    let donor = app.get("/api/v1/donors", Some(&tech)).await.ok(200)["items"][0]["id"]
        .as_i64()
        .expect("donor");
    let collection = app.get("/api/v1/collections", Some(&tech)).await.ok(200)["items"][0].clone();
    assert_eq!(collection["product_red_cell_ml"], 210.0);
    // 210 mL: an equivalent red-cell loss (4 weeks) and over 200 mL in 8 weeks.
    let e = app.eligibility(&tech, donor, ended + TimeDelta::days(3)).await;
    assert_eq!(
        reason_codes(&e),
        vec!["whole_blood_interval", "red_cell_loss_8_weeks"],
        "{e}"
    );
}
