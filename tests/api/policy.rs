//! The policy table: who reads and writes it, validation, versioning, audit, effect on rules.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    staff_read_defaults_directors_write,
    invalid_policies_are_refused_with_every_key,
    stale_writes_are_refused,
    policy_changes_apply_to_the_rules,
);

async fn staff_read_defaults_directors_write(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let hospital = app.token_for("hospital").await;

    let read = app.get("/api/v1/policy", Some(&tech)).await;
    let mut policy = read.ok(200).clone();
    assert_eq!(read.headers["etag"], "\"0\"");
    assert_eq!(policy["unit"]["max_shelf_life_hours"], 24);
    assert_eq!(policy["donor"]["min_hours_between_leukapheresis"], 48);
    assert_eq!(policy["donor"]["gcsf_window_hours"], json!({"min": 12, "max": 24}));
    assert_eq!(policy["alerts"]["expiry_thresholds_hours"], json!([8, 4, 2]));
    app.get("/api/v1/policy", Some(&hospital))
        .await
        .problem(403, "forbidden");
    app.get("/api/v1/policy", None).await.problem(401, "missing_token");

    policy["donor"]["age_max"] = json!(70);
    app.put("/api/v1/policy", Some(&tech), &policy)
        .await
        .problem(403, "forbidden");
    let saved = app.put("/api/v1/policy", Some(&director), &policy).await;
    assert_eq!(saved.ok(200)["donor"]["age_max"], 70);
    assert_eq!(saved.headers["etag"], "\"1\"");
    let again = app.get("/api/v1/policy", Some(&tech)).await;
    assert_eq!(again.ok(200)["donor"]["age_max"], 70);
    assert_eq!(again.headers["etag"], "\"1\"");

    let admin = app.admin_token().await;
    let trail = app
        .get("/api/v1/audit?entity_type=policy&entity_id=1", Some(&admin))
        .await;
    let entries = trail.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["action"], "policy.update");
    assert_eq!(entries[0]["before"]["policy"]["donor"]["age_max"], 75);
    assert_eq!(entries[0]["after"]["policy"]["donor"]["age_max"], 70);
    assert_eq!(entries[0]["after"]["version"], 1);
}

async fn invalid_policies_are_refused_with_every_key(backend: Backend) {
    let mut app = spawn(backend).await;
    let director = app.token_for("medical_director").await;
    let mut policy = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    policy["donor"]["age_min"] = json!(80);
    policy["unit"]["irradiation_min_gy"] = json!(-5);
    let r = app.put("/api/v1/policy", Some(&director), &policy).await;
    let body = r.problem(400, "validation_failed");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"donor.age_min"), "{fields:?}");
    assert!(fields.contains(&"unit.irradiation_min_gy"), "{fields:?}");

    let mut unknown = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    unknown["donor"]["favourite_colour"] = json!("blue");
    app.put("/api/v1/policy", Some(&director), &unknown)
        .await
        .problem(400, "validation_failed");
    let mut missing = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    missing["donor"].as_object_mut().expect("object").remove("age_max");
    app.put("/api/v1/policy", Some(&director), &missing)
        .await
        .problem(400, "validation_failed");
    let mut wrong_type = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    wrong_type["request"]["approval"] = json!("sometimes");
    app.put("/api/v1/policy", Some(&director), &wrong_type)
        .await
        .problem(400, "validation_failed");
    // Nothing was saved.
    let after = app.get("/api/v1/policy", Some(&director)).await;
    assert_eq!(after.headers["etag"], "\"0\"");
}

async fn stale_writes_are_refused(backend: Backend) {
    let mut app = spawn(backend).await;
    let director = app.token_for("medical_director").await;
    let admin = app.admin_token().await;
    let policy = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    let put_if = |token: String, etag: &'static str, body: serde_json::Value| {
        let req = app
            .client
            .put(app.url("/api/v1/policy"))
            .bearer_auth(token)
            .header("If-Match", etag)
            .json(&body);
        app.send(req)
    };
    put_if(admin.clone(), "\"0\"", policy.clone()).await.ok(200);
    let stale = put_if(director.clone(), "\"0\"", policy.clone()).await;
    stale.problem(409, "policy_changed");
    put_if(director.clone(), "\"1\"", policy.clone()).await.ok(200);
    put_if(director, "yesterday", policy)
        .await
        .problem(400, "validation_failed");
}

async fn policy_changes_apply_to_the_rules(backend: Backend) {
    let mut app = spawn(backend).await;
    let director = app.token_for("medical_director").await;
    // 1985-04-12: 41 years old at the start of this session's year range.
    let donor = app.register_donor(&director, &donor_body("Ada", "O", "negative")).await;
    let now = now_minute();
    assert_eq!(app.eligibility(&director, donor, now).await["eligible"], true);
    let mut policy = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    policy["donor"]["age_max"] = json!(30);
    app.put("/api/v1/policy", Some(&director), &policy).await.ok(200);
    let e = app.eligibility(&director, donor, now).await;
    assert_eq!(e["eligible"], false);
    assert_eq!(reason_codes(&e), vec!["too_old"]);
}
