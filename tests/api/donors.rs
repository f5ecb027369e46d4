//! Donors, deferrals, donation history and eligibility over HTTP.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    donors_are_registered_read_and_updated,
    donor_input_is_validated,
    donor_lists_filter_and_paginate,
    deferrals_and_donations_drive_eligibility,
    donors_are_staff_only_and_audited,
);

async fn donors_are_registered_read_and_updated(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let mut body = donor_body("Grace", "AB", "positive");
    body["hla"] = json!({"a": [" a*02:01 "], "drb1": ["drb1*15:01"]});
    let created = app.post("/api/v1/donors", Some(&tech), &body).await;
    let donor = created.ok(201).clone();
    let id = donor["id"].as_i64().expect("id");
    assert_eq!(donor["donor_number"], format!("GD{id:06}"));
    assert_eq!(donor["abo"], "AB");
    assert_eq!(donor["hla"]["a"], json!(["A*02:01"]));
    assert_eq!(donor["hla"]["drb1"], json!(["DRB1*15:01"]));
    assert_eq!(donor["active"], true);
    assert_eq!(donor["stimulation_exposure"], json!([]));

    let got = app.get(&format!("/api/v1/donors/{id}"), Some(&tech)).await;
    assert_eq!(got.ok(200)["given_name"], "Grace");

    let patched = app
        .patch(
            &format!("/api/v1/donors/{id}"),
            Some(&tech),
            &json!({"weight_kg": 70.0, "phone": null, "cmv": "positive"}),
        )
        .await;
    let p = patched.ok(200);
    assert_eq!(p["weight_kg"], 70.0);
    assert_eq!(p["phone"], Value::Null);
    assert_eq!(p["email"], "donor@example.org");
    assert_eq!(p["cmv"], "positive");

    let off = app
        .patch(&format!("/api/v1/donors/{id}"), Some(&tech), &json!({"active": false}))
        .await;
    assert_eq!(off.ok(200)["active"], false);
    let e = app.eligibility(&tech, id, now_minute()).await;
    assert_eq!(reason_codes(&e), vec!["donor_inactive"]);

    app.get("/api/v1/donors/999999", Some(&tech))
        .await
        .problem(404, "not_found");
    app.patch("/api/v1/donors/999999", Some(&tech), &json!({"active": true}))
        .await
        .problem(404, "not_found");
    app.get("/api/v1/donors/abc", Some(&tech))
        .await
        .problem(400, "invalid_path");
    app.get("/api/v1/donors/999999/eligibility", Some(&tech))
        .await
        .problem(404, "not_found");
}

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

async fn donor_input_is_validated(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let base = donor_body("Val", "O", "positive");
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    // (body, field expected in the errors)
    let cases: Vec<(Value, &str)> = vec![
        (with("abo", json!("a")), "abo"),
        (with("abo", json!("A+")), "abo"),
        (with("rhd", json!("pos")), "rhd"),
        (with("cmv", json!("maybe")), "cmv"),
        (with("sex", json!("f")), "sex"),
        (with("donor_type", json!("paid")), "donor_type"),
        (with("date_of_birth", json!("2026-02-30")), "date_of_birth"),
        (with("date_of_birth", json!("12/04/1985")), "date_of_birth"),
        (with("date_of_birth", json!("2999-01-01")), "date_of_birth"),
        (with("date_of_birth", json!("1850-01-01")), "date_of_birth"),
        (with("weight_kg", json!(12)), "weight_kg"),
        (with("weight_kg", json!("heavy")), "weight_kg"),
        (with("given_name", json!("  ")), "given_name"),
        (with("hla", json!({"a": ["X*01"]})), "hla.a[0]"),
        (with("hla", json!({"b": ["B*7"]})), "hla.b[0]"),
        (with("hla", json!({"a": ["A*01", "A*02", "A*03"]})), "hla.a"),
        (with("hla", json!({"dq": ["DQB1*06"]})), "hla"),
        (with("email", json!("not-an-address")), "email"),
        (with("phone", json!("call me")), "phone"),
        (
            with(
                "contraindications",
                json!([{"agent": "gcsf", "item": "not on the list"}]),
            ),
            "contraindications[0]",
        ),
        (with("favourite_colour", json!("blue")), "favourite_colour"),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/donors", Some(&tech), &body).await;
        let problem = r.problem(400, "validation_failed");
        let got = fields(problem);
        assert!(
            got.iter().any(|f| f == field || f.starts_with(field)),
            "expected an error on {field}, got {got:?} for {body}"
        );
    }
    // Several problems are reported at once.
    let mut many = base.clone();
    many["weight_kg"] = json!(5);
    many["email"] = json!("x");
    many["hla"] = json!({"a": ["nope"]});
    let r = app.post("/api/v1/donors", Some(&tech), &many).await;
    assert_eq!(fields(r.problem(400, "validation_failed")).len(), 3, "{}", r.text);
    // Nothing was stored.
    let list = app.get("/api/v1/donors", Some(&tech)).await;
    assert_eq!(list.ok(200)["items"], json!([]));
}

async fn donor_lists_filter_and_paginate(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let o_neg = app.register_donor(&tech, &donor_body("Olive", "O", "negative")).await;
    let a_pos = app.register_donor(&tech, &donor_body("Alma", "A", "positive")).await;
    let mut pos = donor_body("Oscar", "O", "positive");
    pos["cmv"] = json!("positive");
    let o_pos = app.register_donor(&tech, &pos).await;
    let ids = |r: &Reply| -> Vec<i64> {
        r.ok(200)["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|d| d["id"].as_i64())
            .collect()
    };
    let get = |q: &str| {
        let path = format!("/api/v1/donors{q}");
        let (app, tech) = (&app, &tech);
        async move { app.get(&path, Some(tech)).await }
    };
    assert_eq!(ids(&get("?abo=O").await), vec![o_neg, o_pos]);
    assert_eq!(ids(&get("?abo=O&rhd=negative").await), vec![o_neg]);
    assert_eq!(ids(&get("?cmv=positive").await), vec![o_pos]);
    assert_eq!(ids(&get("?q=ALMA").await), vec![a_pos]);
    assert_eq!(ids(&get(&format!("?q=gd{o_pos:06}")).await), vec![o_pos]);
    assert_eq!(ids(&get("?q=%25").await), Vec::<i64>::new(), "% is literal");
    get("?abo=C").await.problem(400, "invalid_query");
    get("?eligible_at=yesterday").await.problem(400, "invalid_query");

    let first = get("?limit=2").await;
    assert_eq!(ids(&first), vec![o_neg, a_pos]);
    let cursor = first.body["next_cursor"].as_str().expect("cursor").to_owned();
    let second = get(&format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), vec![o_pos]);
    assert_eq!(second.body["next_cursor"], Value::Null);

    // eligible_at leaves out a deferred donor, and pages over the eligible ones.
    let until = ts(now_minute() + TimeDelta::days(30));
    app.post(
        &format!("/api/v1/donors/{a_pos}/deferrals"),
        Some(&tech),
        &json!({"reason": "travel", "permanent": false, "until": until}),
    )
    .await
    .ok(201);
    let at = ts(now_minute() + TimeDelta::days(1)).replace('+', "%2B");
    let eligible = get(&format!("?eligible_at={at}&limit=1")).await;
    assert_eq!(ids(&eligible), vec![o_neg]);
    let cursor = eligible.body["next_cursor"].as_str().expect("cursor").to_owned();
    let rest = get(&format!("?eligible_at={at}&limit=1&cursor={cursor}")).await;
    assert_eq!(ids(&rest), vec![o_pos]);
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let later = ts(now_minute() + TimeDelta::days(31));
    assert_eq!(
        ids(&get(&format!("?eligible_at={later}")).await),
        vec![o_neg, a_pos, o_pos]
    );
}

async fn deferrals_and_donations_drive_eligibility(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let id = app.register_donor(&tech, &donor_body("Dora", "B", "negative")).await;
    let now = now_minute();
    let path = format!("/api/v1/donors/{id}/deferrals");

    // Bad deferrals.
    for (body, field) in [
        (json!({"reason": "x", "permanent": false}), "until"),
        (json!({"reason": "x", "permanent": true, "until": ts(now)}), "until"),
        (json!({"reason": "", "permanent": true}), "reason"),
        (
            json!({"reason": "x", "permanent": false, "until": ts(now - TimeDelta::days(1))}),
            "until",
        ),
    ] {
        let r = app.post(&path, Some(&tech), &body).await;
        assert!(
            fields(r.problem(400, "validation_failed")).contains(&field.to_owned()),
            "{}",
            r.text
        );
    }
    app.post(
        "/api/v1/donors/999999/deferrals",
        Some(&tech),
        &json!({"reason": "x", "permanent": true}),
    )
    .await
    .problem(404, "not_found");

    let until = now + TimeDelta::days(10);
    let d = app
        .post(
            &path,
            Some(&tech),
            &json!({"reason": "tattoo", "permanent": false, "until": ts(until)}),
        )
        .await;
    let deferral = d.ok(201);
    assert_eq!(deferral["active"], true);
    assert!(
        deferral["set_by"]
            .as_str()
            .is_some_and(|s| s.starts_with("technologist"))
    );
    let e = app.eligibility(&tech, id, now + TimeDelta::minutes(1)).await;
    assert_eq!(reason_codes(&e), vec!["deferred"]);
    assert!(
        e["reasons"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("tattoo"))
    );
    assert_eq!(
        app.eligibility(&tech, id, until).await["eligible"],
        true,
        "ends at until"
    );
    let list = app.get(&path, Some(&tech)).await;
    assert_eq!(list.ok(200)["items"].as_array().map(Vec::len), Some(1));

    // A whole-blood donation two weeks ago: 4 weeks required.
    let donations = format!("/api/v1/donors/{id}/donations");
    let given = now - TimeDelta::weeks(2);
    let r = app
        .post(
            &donations,
            Some(&tech),
            &json!({"kind": "whole_blood", "donated_at": ts(given), "red_cell_loss_ml": 200, "red_cells_returned": true}),
        )
        .await;
    assert_eq!(r.ok(201)["kind"], "whole_blood");
    let e = app.eligibility(&tech, id, until + TimeDelta::minutes(1)).await;
    assert_eq!(reason_codes(&e), vec!["whole_blood_interval"]);
    assert_eq!(
        app.eligibility(&tech, id, given + TimeDelta::weeks(4)).await["eligible"],
        true
    );
    // Another 50 mL of red cells within 8 weeks: over 200 mL.
    app.post(
        &donations,
        Some(&tech),
        &json!({"kind": "platelets", "donated_at": ts(now - TimeDelta::days(20)), "red_cell_loss_ml": 50}),
    )
    .await
    .ok(201);
    let e = app.eligibility(&tech, id, given + TimeDelta::weeks(4)).await;
    assert_eq!(reason_codes(&e), vec!["red_cell_loss_8_weeks"]);

    for (body, field) in [
        (json!({"kind": "blood", "donated_at": ts(now)}), "kind"),
        (
            json!({"kind": "plasma", "donated_at": ts(now + TimeDelta::days(2))}),
            "donated_at",
        ),
        (
            json!({"kind": "plasma", "donated_at": "2026-13-01T00:00:00Z"}),
            "donated_at",
        ),
        (
            json!({"kind": "plasma", "donated_at": ts(now), "red_cell_loss_ml": 5000}),
            "red_cell_loss_ml",
        ),
        (
            json!({"kind": "plasma", "donated_at": ts(now), "red_cell_loss_ml": -1}),
            "red_cell_loss_ml",
        ),
    ] {
        let r = app.post(&donations, Some(&tech), &body).await;
        assert!(
            fields(r.problem(400, "validation_failed")).contains(&field.to_owned()),
            "{}",
            r.text
        );
    }
    let list = app.get(&donations, Some(&tech)).await;
    assert_eq!(list.ok(200)["items"].as_array().map(Vec::len), Some(2));

    app.get(&format!("/api/v1/donors/{id}/eligibility?at=soon"), Some(&tech))
        .await
        .problem(400, "invalid_query");
    app.get(&format!("/api/v1/donors/{id}/eligibility?agents=g-csf"), Some(&tech))
        .await
        .problem(400, "validation_failed");
}

async fn donors_are_staff_only_and_audited(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let hospital = app.token_for("hospital").await;
    let body = donor_body("Hana", "A", "negative");
    app.post("/api/v1/donors", Some(&hospital), &body)
        .await
        .problem(403, "forbidden");
    app.get("/api/v1/donors", Some(&hospital))
        .await
        .problem(403, "forbidden");
    app.post("/api/v1/donors", None, &body)
        .await
        .problem(401, "missing_token");
    let id = app.register_donor(&tech, &body).await;
    app.get(&format!("/api/v1/donors/{id}"), Some(&hospital))
        .await
        .problem(403, "forbidden");
    app.patch(&format!("/api/v1/donors/{id}"), Some(&tech), &json!({"weight_kg": 71}))
        .await
        .ok(200);
    app.patch(&format!("/api/v1/donors/{id}"), Some(&tech), &json!({"active": false}))
        .await
        .ok(200);
    app.post(
        &format!("/api/v1/donors/{id}/deferrals"),
        Some(&tech),
        &json!({"reason": "low haemoglobin", "permanent": true}),
    )
    .await
    .ok(201);
    let admin = app.admin_token().await;
    let trail = app
        .get(&format!("/api/v1/audit?entity_type=donor&entity_id={id}"), Some(&admin))
        .await;
    let actions: Vec<String> = trail.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        actions,
        vec!["donor.defer", "donor.deactivate", "donor.update", "donor.register"]
    );
    let update = &trail.body["items"][2];
    assert_eq!(update["before"]["weight_kg"], 68.5);
    assert_eq!(update["after"]["weight_kg"], 71.0);
    let report = granulo::store::audit::verify(&mut app.state.pool.get().expect("conn")).expect("verify");
    assert_eq!(report.first_bad, None);
    assert!(report.rows_checked >= 4);
}
