//! Devices, collections and stimulations over HTTP, including the walk-through.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    walk_through_donor_to_completed_collection,
    bookings_refuse_ineligible_donors_and_busy_devices,
    lifecycle_refuses_invalid_transitions,
    moving_a_collection_reevaluates_stimulation_windows,
    collection_and_stimulation_input_is_validated,
    concurrent_bookings_of_one_slot_admit_one,
    devices_are_managed_by_staff,
);

fn at(t: chrono::DateTime<chrono::Utc>) -> Value {
    json!(ts(t))
}

/// Register → schedule → G-CSF 14 h before → start → complete; eligibility afterwards.
async fn walk_through_donor_to_completed_collection(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let donor = app.register_donor(&tech, &donor_body("Walker", "O", "negative")).await;
    let device = app.create_device(&tech, "Optia 1").await;

    // Recorded after the fact: the procedure started two hours ago.
    let start = now_minute() - TimeDelta::hours(2);
    let booked = app.book(&tech, donor, device, start).await;
    let collection = booked.ok(201).clone();
    let id = collection["id"].as_i64().expect("id");
    assert_eq!(collection["status"], "scheduled");
    assert_eq!(
        collection["scheduled_end"],
        at(start + TimeDelta::hours(3)),
        "default 180 min"
    );
    assert_eq!(collection["warnings"], json!([]));

    let stim = app
        .post(
            &format!("/api/v1/donors/{donor}/stimulations"),
            Some(&tech),
            &json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug",
                    "administered_at": ts(start - TimeDelta::hours(14)), "collection_id": id}),
        )
        .await;
    let s = stim.ok(201);
    assert_eq!(s["warnings"], json!([]), "14 h before is inside 12–24 h");
    assert_eq!(s["hours_before_collection_start"], 14.0);

    let started = app
        .post(
            &format!("/api/v1/collections/{id}/start"),
            Some(&tech),
            &json!({"started_at": ts(start)}),
        )
        .await;
    assert_eq!(started.ok(200)["status"], "in_progress");
    let end = start + TimeDelta::minutes(95);
    let done = app
        .post(
            &format!("/api/v1/collections/{id}/complete"),
            Some(&tech),
            &json!({"ended_at": ts(end), "volume_processed_ml": 7500, "hes_used": true,
                    "pre_count_wbc": 28.4, "pre_count_anc": 24.1,
                    "adverse_events": [{"kind": "citrate_reaction", "severity": "mild", "description": "perioral tingling"}]}),
        )
        .await;
    let c = done.ok(200).clone();
    assert_eq!(c["status"], "completed");
    assert_eq!(c["ended_at"], at(end));
    assert_eq!(c["volume_processed_ml"], 7500);
    assert_eq!(c["adverse_events"][0]["kind"], "citrate_reaction");
    assert_eq!(c["adverse_events"][0]["occurred_at"], at(end));
    assert_eq!(c["stimulations"][0]["agent"], "gcsf");

    // Not eligible 3 h later; eligible again 48 h after the end of the procedure.
    let e = app.eligibility(&tech, donor, end + TimeDelta::hours(3)).await;
    assert_eq!(e["eligible"], false);
    assert_eq!(reason_codes(&e), vec!["leukapheresis_interval"]);
    let almost = app
        .eligibility(&tech, donor, end + TimeDelta::hours(48) - TimeDelta::minutes(1))
        .await;
    assert_eq!(reason_codes(&almost), vec!["leukapheresis_interval"]);
    assert_eq!(
        app.eligibility(&tech, donor, end + TimeDelta::hours(48)).await["eligible"],
        true
    );

    // Cumulative exposure is on the donor.
    let d = app.get(&format!("/api/v1/donors/{donor}"), Some(&tech)).await;
    let exposure = &d.ok(200)["stimulation_exposure"];
    assert_eq!(exposure[0]["agent"], "gcsf");
    assert_eq!(exposure[0]["count"], 1);
    assert_eq!(exposure[0]["last_administered_at"], at(start - TimeDelta::hours(14)));

    // Every step is in the audit trail, and the chain holds.
    let admin = app.admin_token().await;
    let trail = app
        .get(
            &format!("/api/v1/audit?entity_type=collection&entity_id={id}"),
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
        vec!["collection.complete", "collection.start", "collection.schedule"]
    );
    let donor_trail = app
        .get(
            &format!("/api/v1/audit?entity_type=donor&entity_id={donor}"),
            Some(&admin),
        )
        .await;
    assert_eq!(donor_trail.ok(200)["items"][0]["action"], "donor.stimulation");
    let report = granulo::store::audit::verify(&mut app.state.pool.get().expect("conn")).expect("verify");
    assert_eq!(report.first_bad, None);
}

async fn bookings_refuse_ineligible_donors_and_busy_devices(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let ann = app.register_donor(&tech, &donor_body("Ann", "A", "positive")).await;
    let ben = app.register_donor(&tech, &donor_body("Ben", "A", "positive")).await;
    let device = app.create_device(&tech, "Optia 1").await;
    let other_device = app.create_device(&tech, "Optia 2").await;
    let tomorrow = now_minute() + TimeDelta::days(1);

    app.book(&tech, ann, device, tomorrow).await.ok(201);
    // Same device, overlapping slot, eligible donor: device_busy.
    let busy = app.book(&tech, ben, device, tomorrow + TimeDelta::hours(2)).await;
    assert_eq!(reason_codes(busy.problem(422, "device_busy")), vec!["device_busy"]);
    // Back to back is fine.
    app.book(&tech, ben, device, tomorrow + TimeDelta::hours(3))
        .await
        .ok(201);
    // The same donor on another device at an overlapping time, and 24 h later.
    let twice = app.book(&tech, ann, other_device, tomorrow + TimeDelta::hours(1)).await;
    let codes = reason_codes(twice.problem(422, "donor_ineligible"));
    assert!(codes.contains(&"donor_already_booked".to_owned()), "{codes:?}");
    let soon = app
        .book(&tech, ann, other_device, tomorrow + TimeDelta::hours(24))
        .await;
    assert_eq!(
        reason_codes(soon.problem(422, "donor_ineligible")),
        vec!["leukapheresis_interval"]
    );
    // Booking earlier than an existing collection must not break the later one either.
    let earlier = app
        .book(&tech, ann, other_device, tomorrow - TimeDelta::hours(30))
        .await;
    let body = earlier.problem(422, "donor_ineligible").clone();
    assert_eq!(reason_codes(&body), vec!["leukapheresis_interval"]);
    assert!(
        body["reasons"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("would make collection"))
    );

    // A deferred donor: every reason, device problems included.
    let cat = app.register_donor(&tech, &donor_body("Cat", "B", "positive")).await;
    app.post(
        &format!("/api/v1/donors/{cat}/deferrals"),
        Some(&tech),
        &json!({"reason": "recent travel", "permanent": true}),
    )
    .await
    .ok(201);
    let deferred = app.book(&tech, cat, device, tomorrow).await;
    let codes = reason_codes(deferred.problem(422, "donor_ineligible"));
    assert_eq!(codes, vec!["deferred", "device_busy"]);

    // Unknown donor, request or device named in the body: 422, nothing written.
    app.book(&tech, 999_999, device, tomorrow + TimeDelta::days(5))
        .await
        .problem(422, "unknown_donor");
    app.post(
        "/api/v1/collections",
        Some(&tech),
        &json!({"donor_id": ben, "device_id": device, "scheduled_start": ts(tomorrow + TimeDelta::days(5)), "request_id": 999_999}),
    )
    .await
    .problem(422, "unknown_request");
    app.book(&tech, ben, 999_999, tomorrow + TimeDelta::days(5))
        .await
        .problem(422, "unknown_device");
    let all = app.get("/api/v1/collections", Some(&tech)).await;
    assert_eq!(all.ok(200)["items"].as_array().map(Vec::len), Some(2));
    let mine = app
        .get(&format!("/api/v1/collections?donor_id={ann}"), Some(&tech))
        .await;
    assert_eq!(mine.ok(200)["items"].as_array().map(Vec::len), Some(1));

    // An aborted booking frees the device and the donor.
    let first = all.body["items"][0]["id"].as_i64().expect("id");
    let aborted = app
        .post(
            &format!("/api/v1/collections/{first}/abort"),
            Some(&tech),
            &json!({"reason": "donor unwell"}),
        )
        .await;
    assert_eq!(aborted.ok(200)["status"], "aborted");
    assert_eq!(aborted.body["ended_at"], Value::Null);
    app.book(&tech, ann, device, tomorrow + TimeDelta::hours(24))
        .await
        .ok(201);
}

async fn lifecycle_refuses_invalid_transitions(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let donor = app.register_donor(&tech, &donor_body("Lou", "O", "positive")).await;
    let device = app.create_device(&tech, "Optia 1").await;
    let start = now_minute() - TimeDelta::hours(1);
    let id = app.book(&tech, donor, device, start).await.ok(201)["id"]
        .as_i64()
        .expect("id");
    let post = |action: &str, body: Value| {
        let path = format!("/api/v1/collections/{id}/{action}");
        let (app, tech) = (&app, &tech);
        async move { app.post(&path, Some(tech), &body).await }
    };

    post("complete", json!({})).await.problem(409, "invalid_transition");
    post("start", json!({"started_at": ts(start)})).await.ok(200);
    post("start", json!({})).await.problem(409, "invalid_transition");
    app.patch(
        &format!("/api/v1/collections/{id}"),
        Some(&tech),
        &json!({"scheduled_start": ts(start + TimeDelta::hours(1))}),
    )
    .await
    .problem(409, "invalid_transition");
    // Ended before it started: refused, nothing changes.
    post("complete", json!({"ended_at": ts(start - TimeDelta::minutes(5))}))
        .await
        .problem(400, "validation_failed");
    post("complete", json!({"ended_at": ts(start + TimeDelta::minutes(50))}))
        .await
        .ok(200);
    post("complete", json!({})).await.problem(409, "invalid_transition");
    post("abort", json!({"reason": "late"}))
        .await
        .problem(409, "invalid_transition");
    app.post("/api/v1/collections/999999/start", Some(&tech), &json!({}))
        .await
        .problem(404, "not_found");

    // The completed procedure counts: starting the next one now is too soon.
    let next = now_minute() + TimeDelta::days(3);
    let id2 = app.book(&tech, donor, device, next).await.ok(201)["id"]
        .as_i64()
        .expect("id");
    let early = app
        .post(&format!("/api/v1/collections/{id2}/start"), Some(&tech), &json!({}))
        .await;
    assert_eq!(
        reason_codes(early.problem(422, "donor_ineligible")),
        vec!["leukapheresis_interval"]
    );
}

async fn moving_a_collection_reevaluates_stimulation_windows(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let donor = app.register_donor(&tech, &donor_body("Mo", "O", "positive")).await;
    let device = app.create_device(&tech, "Optia 1").await;
    let given = now_minute() - TimeDelta::hours(1);
    let start = given + TimeDelta::hours(14);
    let id = app.book(&tech, donor, device, start).await.ok(201)["id"]
        .as_i64()
        .expect("id");
    let gcsf = app
        .post(
            &format!("/api/v1/donors/{donor}/stimulations"),
            Some(&tech),
            &json!({"agent": "GCSF", "dose": 5, "dose_unit": "ug_per_kg", "administered_at": ts(given), "collection_id": id}),
        )
        .await;
    assert_eq!(gcsf.ok(201)["agent"], "gcsf");
    assert_eq!(gcsf.body["warnings"], json!([]));
    // Dexamethasone 14 h before is inside 10–14 h; 16 h would not be.
    let dex = app
        .post(
            &format!("/api/v1/donors/{donor}/stimulations"),
            Some(&tech),
            &json!({"agent": "dexamethasone", "dose": 8, "dose_unit": "mg",
                    "administered_at": ts(start - TimeDelta::hours(16)), "collection_id": id}),
        )
        .await;
    assert_eq!(reason_codes(dex.ok(201)).len(), 0);
    assert_eq!(dex.body["warnings"][0]["code"], "stimulation_too_early", "{}", dex.text);

    // Move the collection 12 h later: G-CSF is now 26 h before the start.
    let moved = app
        .patch(
            &format!("/api/v1/collections/{id}"),
            Some(&tech),
            &json!({"scheduled_start": ts(start + TimeDelta::hours(12))}),
        )
        .await;
    let codes: Vec<String> = moved.ok(200)["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["code"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        codes,
        vec!["stimulation_too_early", "stimulation_too_early"],
        "{}",
        moved.text
    );
    assert_eq!(moved.body["scheduled_start"], at(start + TimeDelta::hours(12)));
    // And back: only dexamethasone is outside its window again.
    let back = app
        .patch(
            &format!("/api/v1/collections/{id}"),
            Some(&tech),
            &json!({"scheduled_start": ts(start)}),
        )
        .await;
    assert_eq!(back.ok(200)["warnings"].as_array().map(Vec::len), Some(1));
    let fetched = app.get(&format!("/api/v1/collections/{id}"), Some(&tech)).await;
    assert_eq!(fetched.ok(200)["stimulations"].as_array().map(Vec::len), Some(2));

    // A flagged contraindication warns when the agent is recorded.
    let director = app.token_for("medical_director").await;
    let mut policy = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    policy["donor"]["contraindications"] = json!([{"agent": "dexamethasone", "item": "diabetes mellitus"}]);
    app.put("/api/v1/policy", Some(&director), &policy).await.ok(200);
    app.patch(
        &format!("/api/v1/donors/{donor}"),
        Some(&tech),
        &json!({"contraindications": [{"agent": "Dexamethasone", "item": "Diabetes mellitus"}]}),
    )
    .await
    .ok(200);
    let flagged = app
        .post(
            &format!("/api/v1/donors/{donor}/stimulations"),
            Some(&tech),
            &json!({"agent": "dexamethasone", "dose": 8, "dose_unit": "mg", "administered_at": ts(given)}),
        )
        .await;
    assert_eq!(flagged.ok(201)["warnings"][0]["code"], "contraindicated_agent");
    let e = app
        .get(
            &format!("/api/v1/donors/{donor}/eligibility?agents=dexamethasone,gcsf"),
            Some(&tech),
        )
        .await;
    assert_eq!(reason_codes(e.ok(200)), vec!["contraindicated_agent"]);
    let list = app
        .get(&format!("/api/v1/donors/{donor}/stimulations"), Some(&tech))
        .await;
    assert_eq!(list.ok(200)["items"].as_array().map(Vec::len), Some(3));
    let d = app.get(&format!("/api/v1/donors/{donor}"), Some(&tech)).await;
    let exposure = d.ok(200)["stimulation_exposure"].clone();
    assert_eq!(exposure[0]["agent"], "dexamethasone");
    assert_eq!(exposure[0]["count"], 2);
    assert_eq!(exposure[1]["agent"], "gcsf");
    assert_eq!(exposure[1]["count"], 1);

    // The checklist item is withdrawn: the stored flag no longer blocks, and does not stop an
    // unrelated change to the donor; sending it again is refused.
    policy["donor"]["contraindications"] = json!([]);
    app.put("/api/v1/policy", Some(&director), &policy).await.ok(200);
    let patched = app
        .patch(
            &format!("/api/v1/donors/{donor}"),
            Some(&tech),
            &json!({"weight_kg": 80}),
        )
        .await;
    assert_eq!(patched.ok(200)["contraindications"][0]["item"], "diabetes mellitus");
    let e = app
        .get(
            &format!("/api/v1/donors/{donor}/eligibility?agents=dexamethasone"),
            Some(&tech),
        )
        .await;
    assert_eq!(e.ok(200)["eligible"], true);
    app.patch(
        &format!("/api/v1/donors/{donor}"),
        Some(&tech),
        &json!({"contraindications": [{"agent": "dexamethasone", "item": "diabetes mellitus"}]}),
    )
    .await
    .problem(400, "validation_failed");
}

async fn collection_and_stimulation_input_is_validated(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let donor = app.register_donor(&tech, &donor_body("Vic", "O", "positive")).await;
    let other = app.register_donor(&tech, &donor_body("Wes", "O", "positive")).await;
    let device = app.create_device(&tech, "Optia 1").await;
    let start = now_minute() + TimeDelta::days(2);
    let book = |body: Value| {
        let (app, tech) = (&app, &tech);
        async move { app.post("/api/v1/collections", Some(tech), &body).await }
    };
    for body in [
        json!({"donor_id": donor, "device_id": device, "scheduled_start": "2026-13-01T08:00:00Z"}),
        json!({"donor_id": donor, "device_id": device, "scheduled_start": "tomorrow"}),
        json!({"donor_id": donor, "device_id": device, "scheduled_start": ts(start), "duration_minutes": 0}),
        json!({"donor_id": donor, "device_id": device, "scheduled_start": ts(start), "duration_minutes": -5}),
        json!({"donor_id": donor, "device_id": device, "scheduled_start": "2099-01-01T08:00:00Z"}),
        json!({"donor_id": donor, "device_id": device, "scheduled_start": ts(start), "planned_agents": ["g-csf"]}),
        json!({"donor_id": "one", "device_id": device, "scheduled_start": ts(start)}),
        json!({"donor_id": donor, "device_id": device, "scheduled_start": ts(start), "colour": "red"}),
        json!({"donor_id": donor, "scheduled_start": ts(start)}),
    ] {
        book(body.clone()).await.problem(400, "validation_failed");
    }
    let id =
        book(json!({"donor_id": donor, "device_id": device, "scheduled_start": ts(start), "duration_minutes": 120}))
            .await
            .ok(201)["id"]
            .as_i64()
            .expect("id");
    let stim = |donor_id: i64, body: Value| {
        let (app, tech) = (&app, &tech);
        async move {
            app.post(&format!("/api/v1/donors/{donor_id}/stimulations"), Some(tech), &body)
                .await
        }
    };
    let past = ts(now_minute() - TimeDelta::hours(1));
    for body in [
        json!({"agent": "gcsf", "dose": 0, "dose_unit": "ug", "administered_at": past}),
        json!({"agent": "gcsf", "dose": 480, "dose_unit": "mcg", "administered_at": past}),
        json!({"agent": "g csf", "dose": 480, "dose_unit": "ug", "administered_at": past}),
        json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": ts(now_minute() + TimeDelta::hours(3))}),
        json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug"}),
    ] {
        stim(donor, body).await.problem(400, "validation_failed");
    }
    stim(
        999_999,
        json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": past}),
    )
    .await
    .problem(404, "not_found");
    stim(
        donor,
        json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": past, "collection_id": 999_999}),
    )
    .await
    .problem(422, "unknown_collection");
    stim(
        other,
        json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": past, "collection_id": id}),
    )
    .await
    .problem(422, "collection_of_other_donor");
    // Lifecycle input.
    let path = |action: &str| format!("/api/v1/collections/{id}/{action}");
    app.post(
        &path("start"),
        Some(&tech),
        &json!({"started_at": ts(now_minute() + TimeDelta::hours(2))}),
    )
    .await
    .problem(400, "validation_failed");
    app.post(&path("abort"), Some(&tech), &json!({"reason": " "}))
        .await
        .problem(400, "validation_failed");
    app.post(&path("abort"), Some(&tech), &json!({}))
        .await
        .problem(400, "validation_failed");
    let c = app.get(&format!("/api/v1/collections/{id}"), Some(&tech)).await;
    assert_eq!(c.ok(200)["status"], "scheduled", "nothing changed");
    assert_eq!(c.body["scheduled_end"], at(start + TimeDelta::hours(2)));
    app.get("/api/v1/collections?status=done", Some(&tech))
        .await
        .problem(400, "invalid_query");
    app.get("/api/v1/collections/999999", Some(&tech))
        .await
        .problem(404, "not_found");
    let hospital = app.token_for("hospital").await;
    app.get("/api/v1/collections", Some(&hospital))
        .await
        .problem(403, "forbidden");
}

async fn concurrent_bookings_of_one_slot_admit_one(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let device = app.create_device(&tech, "Optia 1").await;
    let mut donors = Vec::new();
    for i in 0..6 {
        donors.push(
            app.register_donor(&tech, &donor_body(&format!("Con{i}"), "O", "positive"))
                .await,
        );
    }
    let start = now_minute() + TimeDelta::days(1);
    let attempts = donors.iter().map(|d| app.book(&tech, *d, device, start));
    let replies = futures_util::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status.as_u16() == 201).count();
    let busy = replies
        .iter()
        .filter(|r| r.status.as_u16() == 422 && r.body["code"] == "device_busy")
        .count();
    assert_eq!((created, busy), (1, 5), "{replies:?}");

    // One donor booked on several devices at once: one booking, the rest double bookings.
    let mut devices = Vec::new();
    for i in 0..4 {
        devices.push(app.create_device(&tech, &format!("Spare {i}")).await);
    }
    let later = start + TimeDelta::days(5);
    let attempts = devices.iter().map(|d| app.book(&tech, donors[0], *d, later));
    let replies = futures_util::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status.as_u16() == 201).count();
    let refused = replies
        .iter()
        .filter(|r| r.status.as_u16() == 422 && reason_codes(&r.body).contains(&"donor_already_booked".to_owned()))
        .count();
    assert_eq!((created, refused), (1, 3), "{replies:?}");
}

async fn devices_are_managed_by_staff(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let hospital = app.token_for("hospital").await;
    app.post("/api/v1/devices", Some(&hospital), &json!({"name": "X"}))
        .await
        .problem(403, "forbidden");
    let id = app.create_device(&tech, "Optia 1").await;
    app.post("/api/v1/devices", Some(&tech), &json!({"name": "Optia 1"}))
        .await
        .problem(409, "device_name_taken");
    app.post("/api/v1/devices", Some(&tech), &json!({"name": ""}))
        .await
        .problem(400, "validation_failed");
    let off = app
        .patch(&format!("/api/v1/devices/{id}"), Some(&tech), &json!({"active": false}))
        .await;
    assert_eq!(off.ok(200)["active"], false);
    let donor = app.register_donor(&tech, &donor_body("Dev", "O", "positive")).await;
    app.book(&tech, donor, id, now_minute() + TimeDelta::days(1))
        .await
        .problem(422, "device_inactive");
    let list = app.get("/api/v1/devices", Some(&tech)).await;
    assert_eq!(list.ok(200)["items"][0]["name"], "Optia 1");
    app.patch("/api/v1/devices/999999", Some(&tech), &json!({"active": true}))
        .await
        .problem(404, "not_found");
}
