//! The audit trail: written with each change, append-only, verifiable, tamper-evident.

use diesel::RunQueryDsl as _;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    changes_are_audited_with_before_and_after,
    refused_changes_leave_no_audit_row,
    audit_log_is_append_only,
    verify_detects_an_altered_row,
    verify_detects_a_removed_row,
    concurrent_changes_keep_one_chain,
);

fn sql(app: &TestApp, statement: &str) -> Result<usize, diesel::result::Error> {
    let mut conn = app.state.pool.get().expect("conn");
    diesel::sql_query(statement).execute(&mut *conn)
}

async fn changes_are_audited_with_before_and_after(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let hospital = app.create_hospital("AUD").await;
    let id = app.create_user("audited", "technologist", None).await;
    app.patch(
        &format!("/api/v1/users/{id}"),
        Some(&admin),
        &json!({"role": "medical_director"}),
    )
    .await
    .ok(200);
    app.post(
        &format!("/api/v1/hospitals/{hospital}/clients"),
        Some(&admin),
        &json!({}),
    )
    .await
    .ok(201);

    let trail = app
        .get(&format!("/api/v1/audit?entity_type=user&entity_id={id}"), Some(&admin))
        .await;
    let items = trail.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "user.update");
    assert_eq!(items[0]["before"]["role"], "technologist");
    assert_eq!(items[0]["after"]["role"], "medical_director");
    assert_eq!(items[0]["actor"]["name"], ADMIN_USER);
    assert_eq!(items[1]["action"], "user.create");
    assert!(items[1]["before"].is_null());
    assert!(
        !trail.text.contains("argon2"),
        "password hashes never reach the audit trail"
    );

    let all = app.get("/api/v1/audit", Some(&admin)).await;
    let actions: Vec<String> = all.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "api_client.create",
            "user.update",
            "user.create",
            "hospital.create",
            // The admin's sign-in: its second factor enrolled (the role requires one).
            "user.mfa_enrol",
            "user.mfa_enrolment_start",
            "user.create",
            // The configured signing key, stored sealed on the first start.
            "signing_key.create"
        ]
    );
    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok, "{text}");
    assert!(text.contains("8 rows"), "{text}");
}

async fn refused_changes_leave_no_audit_row(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    app.create_user("only-once", "technologist", None).await;
    let count = |r: &Reply| r.body["items"].as_array().map_or(0, Vec::len);
    let before = count(&app.get("/api/v1/audit", Some(&admin)).await);
    app.post(
        "/api/v1/users",
        Some(&admin),
        &json!({"username": "only-once", "password": PASSWORD, "role": "technologist"}),
    )
    .await
    .problem(409, "username_taken");
    app.patch("/api/v1/users/1", Some(&admin), &json!({"active": false}))
        .await
        .problem(409, "last_admin");
    app.post(
        "/api/v1/users",
        Some(&admin),
        &json!({"username": "orphan", "password": PASSWORD, "role": "hospital", "hospital_id": 77}),
    )
    .await
    .problem(422, "unknown_hospital");
    assert_eq!(count(&app.get("/api/v1/audit", Some(&admin)).await), before);
}

async fn audit_log_is_append_only(backend: Backend) {
    let mut app = spawn(backend).await;
    app.create_hospital("APPEND").await;
    assert!(sql(&app, "UPDATE audit_log SET actor_name = 'someone else'").is_err());
    assert!(sql(&app, "DELETE FROM audit_log").is_err());
    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok, "{text}");
}

fn disable_guard(app: &TestApp) {
    match app.backend {
        Backend::Sqlite => {
            sql(app, "DROP TRIGGER audit_log_no_update").expect("drop trigger");
            sql(app, "DROP TRIGGER audit_log_no_delete").expect("drop trigger");
        }
        Backend::Postgres => {
            sql(app, "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update").expect("disable trigger");
        }
    }
}

async fn verify_detects_an_altered_row(backend: Backend) {
    let mut app = spawn(backend).await;
    app.create_user("victim", "technologist", None).await;
    app.create_hospital("TAMPER").await;
    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok, "{text}");
    // Someone with database access quietly turns the technologist into an admin.
    disable_guard(&app);
    sql(
        &app,
        r#"UPDATE audit_log SET after_json = '{"role":"admin"}' WHERE id = 2"#,
    )
    .expect("tamper");
    let (ok, text) = audit_verify(&app.db.url);
    assert!(!ok, "verify must fail: {text}");
    assert!(text.contains("row 2") && text.contains("altered"), "{text}");
}

async fn verify_detects_a_removed_row(backend: Backend) {
    let mut app = spawn(backend).await;
    app.create_user("first", "technologist", None).await;
    app.create_user("second", "technologist", None).await;
    disable_guard(&app);
    sql(&app, "DELETE FROM audit_log WHERE id = 2").expect("delete");
    let (ok, text) = audit_verify(&app.db.url);
    assert!(!ok, "verify must fail: {text}");
    assert!(text.contains("row 3") && text.contains("removed"), "{text}");
}

/// Many audited writes at once (several blocking threads, one database) must still form one
/// unbroken chain: appends are serialised, never forked.
async fn concurrent_changes_keep_one_chain(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.pool_size = 6).await;
    let admin = app.admin_token().await;
    let bodies: Vec<_> = (0..16)
        .map(|i| json!({"name": format!("Parallel {i}"), "code": format!("PAR{i}")}))
        .collect();
    let creates = bodies
        .iter()
        .map(|body| app.post("/api/v1/hospitals", Some(&admin), body));
    for reply in futures_util::future::join_all(creates).await {
        reply.ok(201);
    }
    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok, "{text}");
    // The first signing key, 1 bootstrap admin, its MFA enrolment (2) + 16 hospitals, each
    // exactly once.
    assert!(text.contains("20 rows"), "{text}");
}
