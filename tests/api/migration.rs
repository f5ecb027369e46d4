//! A database written by an earlier release migrates in place, and its rows still read and
//! behave safely: an untyped patient falls back to group O units, free-text crossmatch methods
//! stay readable, an excursion recorded before is held for review, a director's override is a
//! signed-off authorisation, and childbearing potential stated by a hospital stays stated.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use diesel::connection::SimpleConnection as _;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    rows_from_an_earlier_release_read_and_behave_safely,
    this_releases_migrations_revert_and_apply_again,
);

/// The migrations of the release before the safety work (issue 12).
const EARLIER: &str = "2026-11-29";

fn at(hours_from_now: i64) -> String {
    (Utc::now() + TimeDelta::hours(hours_from_now))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Applies the earlier migrations by hand and records them as diesel does, so that starting
/// the application runs only the newer ones.
fn migrate_as_earlier_release(backend: Backend, db: &TestDb) {
    let mut conn = migrated_before(backend, db, EARLIER);
    // Rows as the earlier release wrote them: a patient the hospital declared group A RhD
    // positive and the blood bank never typed, two released units, a crossmatch with a
    // free-text method, and an out-of-range reading of an available unit.
    let (now, collected, expires) = (at(0), at(-2), at(22));
    conn.batch_execute(&format!(
        "INSERT INTO hospitals (name, code, active, created_at, updated_at) VALUES ('Old', 'OLD', TRUE, '{now}', '{now}');
         INSERT INTO patients (hospital_id, mrn, given_name, family_name, date_of_birth, sex, weight_kg, abo, rhd, cmv,
                               childbearing_potential, hla_antibodies, granulocyte_antibodies, created_at, updated_at)
             SELECT id, 'OLD-1', 'Old', 'Row', '1970-01-01', 'male', 70, 'A', 'positive', 'negative', FALSE, '[]', FALSE,
                    '{now}', '{now}' FROM hospitals WHERE code = 'OLD';
         INSERT INTO samples (patient_id, drawn_at, transfused_or_pregnant_within_3_months, valid_until, recorded_by, created_at)
             SELECT id, '{now}', TRUE, '{valid}', 'old', '{now}' FROM patients WHERE mrn = 'OLD-1';",
        valid = at(72),
    ))
    .expect("old patient");
    for (din, abo, rhd, location) in [
        ("B123426990001", "A", "negative", "Shelf A"),
        ("B123426990002", "O", "negative", "Shelf O"),
    ] {
        conn.batch_execute(&format!(
            "INSERT INTO units (din, product_code, source, supplier, pooled, abo, rhd, cmv, volume_ml, granulocyte_count,
                                collected_at, expires_at, status, storage_location, irradiated_at, irradiation_dose_gy,
                                irradiated_by, release_kind, released_at, released_by, created_at, updated_at)
             VALUES ('{din}', 'E9999V00', 'external', 'Old supplier', FALSE, '{abo}', '{rhd}', 'negative', 250, 5e10,
                     '{collected}', '{expires}', 'available', '{location}', '{now}', 25, 'old', 'tested', '{now}', 'old',
                     '{now}', '{now}');"
        ))
        .expect("old unit");
    }
    conn.batch_execute(&format!(
        "INSERT INTO crossmatches (unit_id, sample_id, result, method, performed_by, performed_at, created_at)
             SELECT u.id, s.id, 'compatible', ' IAT ', 'old', '{now}', '{now}' FROM units u, samples s
             WHERE u.din = 'B123426990002';
         INSERT INTO crossmatches (unit_id, sample_id, result, method, performed_by, performed_at, created_at)
             SELECT u.id, s.id, 'compatible', 'tube, room temperature', 'old', '{now}', '{now}' FROM units u, samples s
             WHERE u.din = 'B123426990001';
         INSERT INTO storage_readings (unit_id, temperature_c, measured_at, location, in_range, recorded_by, created_at)
             SELECT id, 30.5, '{now}', 'Shelf A', FALSE, 'old', '{now}' FROM units WHERE din = 'B123426990001';"
    ))
    .expect("old crossmatches and readings");
    // A woman the hospital said could bear children, and one it said nothing of (false), and an
    // RhD-positive unit a medical director gave over the `rhd_mismatch` warning.
    conn.batch_execute(&format!(
        "INSERT INTO patients (hospital_id, mrn, given_name, family_name, date_of_birth, sex, weight_kg, abo, rhd, cmv,
                               childbearing_potential, hla_antibodies, granulocyte_antibodies, created_at, updated_at)
             SELECT id, mrn, 'Old', 'Woman', '1990-01-01', 'female', 60, 'O', 'negative', 'negative', stated, '[]', FALSE,
                    '{now}', '{now}' FROM hospitals, (SELECT 'OLD-2' AS mrn, TRUE AS stated UNION ALL
                                                      SELECT 'OLD-3', FALSE) AS w
             WHERE code = 'OLD';
         INSERT INTO units (din, product_code, source, supplier, pooled, abo, rhd, cmv, volume_ml, granulocyte_count,
                            collected_at, expires_at, status, storage_location, irradiated_at, irradiation_dose_gy,
                            irradiated_by, release_kind, released_at, released_by, created_at, updated_at)
             VALUES ('B123426990003', 'E9999V00', 'external', 'Old supplier', FALSE, 'O', 'positive', 'negative', 250,
                     5e10, '{collected}', '{expires}', 'allocated', NULL, '{now}', 25, 'old', 'tested', '{now}', 'old',
                     '{now}', '{now}');
         INSERT INTO requests (hospital_id, patient_id, units_requested, needed_by, priority, anc_per_ul, infection,
                               refractory_hours, cmv_negative, hla_compatible, within_indication, status, requested_by,
                               created_at, updated_at)
             SELECT hospital_id, id, 1, '{expires}', 'asap', 100, 'sepsis', 72, FALSE, FALSE, TRUE, 'open', 'old',
                    '{now}', '{now}' FROM patients WHERE mrn = 'OLD-2';
         INSERT INTO allocations (request_id, unit_id, status, warnings, override_reason, overridden_by, anti_d_task,
                                  allocated_by, allocated_at, created_at, updated_at)
             SELECT r.id, u.id, 'allocated',
                    '[{{\"code\":\"rhd_mismatch\",\"severity\":\"warn\",\"message\":\"RhD-positive unit\"}}]',
                    'no RhD-negative unit in time', 'dr-old', TRUE, 'dr-old', '{now}', '{now}', '{now}'
             FROM requests r, units u WHERE u.din = 'B123426990003';"
    ))
    .expect("old override");
}

async fn rows_from_an_earlier_release_read_and_behave_safely(backend: Backend) {
    let db = Arc::new(TestDb::new(backend));
    migrate_as_earlier_release(backend, &db);
    let mut app = spawn_on(backend, db, |_| {}).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let patients = app.get("/api/v1/patients", Some(&tech)).await;
    let patient = patients.ok(200)["items"][0].clone();
    assert_eq!(patient["abo"], "A", "the declared group still reads");
    assert_eq!(patient["group_of_record"]["status"], "untyped");
    let patient_id = patient["id"].as_i64().expect("id");
    let unit_of = |din: &'static str| {
        let app = &app;
        let tech = tech.clone();
        async move {
            app.get(&format!("/api/v1/units/{din}"), Some(&tech))
                .await
                .ok(200)
                .clone()
        }
    };
    let group_a = unit_of("B123426990001").await;
    let group_o = unit_of("B123426990002").await;
    // The reading recorded before was out of range: it is on the unit now, held for review.
    assert_eq!(group_a["excursions"].as_array().map(Vec::len), Some(1));
    assert_eq!(group_a["holds"], json!(["excursion_review"]));
    let check = |unit: &serde_json::Value| {
        let app = &app;
        let tech = tech.clone();
        let path = format!("/api/v1/compatibility?unit_id={}&patient_id={patient_id}", unit["id"]);
        async move { app.get(&path, Some(&tech)).await.ok(200).clone() }
    };
    // Never typed by the blood bank: group O units only.
    assert_eq!(
        reason_codes(&check(&group_a).await),
        vec!["abo_unconfirmed", "excursion_review"]
    );
    assert_eq!(check(&group_o).await["verdict"], "compatible");
    let crossmatches = app
        .get(&format!("/api/v1/crossmatches?patient_id={patient_id}"), Some(&tech))
        .await;
    let methods: Vec<(String, String)> = crossmatches.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|x| {
            (
                x["method"].as_str().unwrap_or_default().to_owned(),
                x["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        vec![
            ("iat".to_owned(), "red_cell".to_owned()),
            ("tube, room temperature".to_owned(), "red_cell".to_owned()),
        ]
    );
    // And a request for the old patient goes through with the old group O unit.
    let order = request_body(patient_id, 1);
    let request = app.post("/api/v1/requests", Some(&tech), &order).await.ok(201)["id"]
        .as_i64()
        .expect("request");
    let allocated = app
        .post(
            &format!("/api/v1/requests/{request}/allocations"),
            Some(&tech),
            &json!({"unit_id": group_o["id"]}),
        )
        .await;
    assert_eq!(allocated.ok(201)["status"], "allocated");
    // The old group A unit was left in stock after its excursion: held until a medical director
    // dispositions it, and never for an untyped patient.
    let refused = app
        .post(
            &format!("/api/v1/requests/{request}/allocations"),
            Some(&tech),
            &json!({"unit_id": group_a["id"]}),
        )
        .await;
    assert_eq!(
        reason_codes(refused.problem(422, "incompatible")),
        vec!["abo_unconfirmed", "excursion_review"]
    );
    let path = format!("/api/v1/units/{}/excursion-disposition", group_a["id"]);
    app.post(&path, Some(&tech), &json!({"reason": "checked"}))
        .await
        .problem(403, "forbidden");
    let reviewed = app
        .post(
            &path,
            Some(&director),
            &json!({"reason": "30.5 °C for minutes; within validation"}),
        )
        .await;
    assert_eq!(reviewed.ok(200)["holds"], json!([]));
    app.post(&path, Some(&director), &json!({"reason": "again"}))
        .await
        .problem(409, "no_excursion_pending");
    assert_eq!(reason_codes(&check(&group_a).await), vec!["abo_unconfirmed"]);

    // The director's override: an authorisation they made and signed off, with its finding as
    // the authorise tier; nothing waits for a sign-off.
    let report = app.get("/api/v1/reports/exceptions", Some(&tech)).await;
    let entry = report.ok(200)["items"][0].clone();
    assert_eq!(entry["warnings"][0]["severity"], "authorise", "{entry}");
    assert_eq!(entry["authorisations"][0]["by"], "dr-old");
    assert_eq!(entry["authorisations"][0]["reason"], "no RhD-negative unit in time");
    assert_eq!(entry["authorisations"][0]["signed_off"], true);
    assert_eq!(entry["awaiting_sign_off"], false);
    let waiting = app
        .get("/api/v1/reports/exceptions?signed_off=false", Some(&tech))
        .await;
    assert_eq!(waiting.ok(200)["items"], json!([]));
    // Stated by the hospital stays stated; the old default `false` is derived from age now.
    let listed = app.get("/api/v1/patients", Some(&tech)).await;
    let by_mrn = |mrn: &str| {
        listed.body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|p| p["mrn"] == mrn))
            .cloned()
            .expect("patient")
    };
    listed.ok(200);
    let stated = by_mrn("OLD-2");
    assert_eq!(stated["childbearing_potential_stated"], true, "{stated}");
    let derived = by_mrn("OLD-3");
    assert_eq!(derived["childbearing_potential_stated"], json!(null), "{derived}");
    assert_eq!(derived["childbearing_potential"], true);
}

/// Every migration of this release reverts (newest first) to the earlier release's schema and
/// applies again, so an upgrade can be rolled back.
async fn this_releases_migrations_revert_and_apply_again(backend: Backend) {
    use diesel_migrations::{FileBasedMigrations, MigrationHarness};
    let db = TestDb::new(backend);
    let tree = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(tree);
    let newer = std::fs::read_dir(&dir)
        .expect("migrations")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.as_str() >= EARLIER)
        .count();
    assert!(newer >= 4, "{newer}");
    let source = || FileBasedMigrations::from_path(&dir).expect("migrations");
    let mut conn = granulo::store::establish(&db.target()).expect("connect");
    macro_rules! round_trip {
        ($c:expr) => {{
            $c.run_pending_migrations(source()).expect("apply");
            for _ in 0..newer {
                $c.revert_last_migration(source()).expect("revert");
            }
            let again = $c.run_pending_migrations(source()).expect("apply again");
            assert_eq!(again.len(), newer);
        }};
    }
    match &mut conn {
        granulo::store::DbConn::Sqlite(c) => round_trip!(c),
        granulo::store::DbConn::Postgres(c) => round_trip!(c),
    }
}
