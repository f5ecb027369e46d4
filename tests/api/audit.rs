//! The audit trail: written with each change, append-only, verifiable, tamper-evident.

use diesel::prelude::*;
use granulo::services::changes::{self, Topic};
use granulo::store::audit::{self, Actor, Change};
use granulo::store::schema::audit_log;
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
    a_transaction_held_open_does_not_hold_up_other_lanes,
    tampering_in_any_lane_is_detected,
    a_reader_misses_no_row_committed_late_in_another_lane,
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

/// Many audited writes at once (several blocking threads, on PostgreSQL two instances on one
/// database) leave lanes that each form one unbroken chain: a lane is never forked.
async fn concurrent_changes_keep_one_chain(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.pool_size = 6).await;
    let admin = app.admin_token().await;
    let other = spawn_on(backend, app.db.clone(), |s| s.pool_size = 6).await;
    let bodies: Vec<_> = (0..48)
        .map(|i| json!({"name": format!("Parallel {i}"), "code": format!("PAR{i}")}))
        .collect();
    let creates = bodies.iter().enumerate().map(|(i, body)| {
        let instance = if i % 2 == 0 { &app } else { &other };
        instance.post("/api/v1/hospitals", Some(&admin), body)
    });
    for reply in futures_util::future::join_all(creates).await {
        reply.ok(201);
    }
    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok, "{text}");
    // The first signing key, 1 bootstrap admin, its MFA enrolment (2) + 48 hospitals, each
    // exactly once.
    assert!(text.contains("52 rows"), "{text}");
    if backend == Backend::Sqlite {
        assert!(text.contains("in 1 lane(s)"), "SQLite appends to lane 0 only: {text}");
    }
}

fn test_change(entity_type: &'static str, entity_id: &str) -> Change<'static> {
    Change::created("test.append", entity_type, entity_id, json!({"n": entity_id}))
}

/// Appends one row in a transaction of its own.
fn append_committed(app: &TestApp, entity_type: &'static str, entity_id: &str) -> i64 {
    let mut conn = app.state.pool.get().expect("conn");
    granulo::store::write_tx(&mut conn, |c| {
        audit::append(c, &Actor::system("test"), test_change(entity_type, entity_id))
    })
    .expect("append")
}

fn lane_of(app: &TestApp, id: i64) -> i32 {
    let mut conn = app.state.pool.get().expect("conn");
    audit_log::table
        .find(id)
        .select(audit_log::lane)
        .first(&mut *conn)
        .expect("lane")
}

/// On PostgreSQL a transaction appends one row (`held`) and stays open while `others` rows
/// commit one by one in other transactions; it commits last. On SQLite, whose writers queue,
/// the same rows are written one after the other.
fn held_and_others(app: &TestApp, others: usize, held_type: &'static str) -> (i64, Vec<i64>) {
    if app.backend == Backend::Sqlite {
        let held = append_committed(app, held_type, "held");
        let ids = (0..others)
            .map(|i| append_committed(app, "test", &format!("other {i}")))
            .collect();
        return (held, ids);
    }
    let mut holder = app.state.pool.get().expect("conn");
    diesel::sql_query("BEGIN").execute(&mut *holder).expect("begin");
    let held = audit::append(&mut holder, &Actor::system("test"), test_change(held_type, "held")).expect("append");
    let ids = (0..others)
        .map(|i| append_committed(app, "test", &format!("other {i}")))
        .collect();
    diesel::sql_query("COMMIT").execute(&mut *holder).expect("commit");
    (held, ids)
}

/// An open transaction holds its lane, not the whole trail: other transactions append to
/// another lane and commit before it (before the lanes, they waited for its commit). Every
/// lane verifies.
async fn a_transaction_held_open_does_not_hold_up_other_lanes(backend: Backend) {
    let app = spawn_with(backend, |s| s.pool_size = 4).await;
    let (held, others) = held_and_others(&app, 3, "test");
    let lanes: Vec<i32> = others.iter().map(|id| lane_of(&app, *id)).collect();
    if backend == Backend::Postgres {
        assert!(others.iter().all(|id| *id > held), "{held} {others:?}");
        assert!(lanes.iter().all(|l| *l == lanes[0]), "{lanes:?}");
        assert_ne!(lane_of(&app, held), lanes[0], "the open transaction keeps its lane");
    } else {
        assert!(lanes.iter().chain([&lane_of(&app, held)]).all(|l| *l == 0), "{lanes:?}");
    }
    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok, "{text}");
    let report = audit::verify(&mut app.state.pool.get().expect("conn")).expect("verify");
    assert_eq!(report.first_bad, None);
    let expected_lanes = if backend == Backend::Postgres { 2 } else { 1 };
    assert!(report.heads.len() >= expected_lanes, "{report:?}");
}

/// In whichever lane a row is, altering, removing, moving it to another lane or swapping it
/// with its neighbour breaks the chain at that row.
async fn tampering_in_any_lane_is_detected(backend: Backend) {
    type Tamper = fn(&[i64]) -> (Vec<String>, i64, &'static str);
    let cases: [Tamper; 4] = [
        |o| {
            let sql = format!(
                r#"UPDATE audit_log SET after_json = '{{"n":"forged"}}' WHERE id = {}"#,
                o[1]
            );
            (vec![sql], o[1], "altered")
        },
        |o| {
            (
                vec![format!("DELETE FROM audit_log WHERE id = {}", o[1])],
                o[2],
                "removed",
            )
        },
        |o| {
            (
                vec![format!("UPDATE audit_log SET lane = lane + 5 WHERE id = {}", o[1])],
                o[1],
                "another lane",
            )
        },
        |o| {
            let swap = vec![
                format!("UPDATE audit_log SET id = -1 WHERE id = {}", o[0]),
                format!("UPDATE audit_log SET id = {} WHERE id = {}", o[0], o[1]),
                format!("UPDATE audit_log SET id = {} WHERE id = -1", o[1]),
            ];
            (swap, o[0], "reordered")
        },
    ];
    for tamper in cases {
        let app = spawn_with(backend, |s| s.pool_size = 4).await;
        let (_, others) = held_and_others(&app, 3, "test");
        let (ok, text) = audit_verify(&app.db.url);
        assert!(ok, "{text}");
        disable_guard(&app);
        let (statements, bad_row, word) = tamper(&others);
        for statement in statements {
            sql(&app, &statement).expect("tamper");
        }
        let (ok, text) = audit_verify(&app.db.url);
        assert!(!ok, "verify must fail: {text}");
        assert!(
            text.contains(&format!("row {bad_row}:")) && text.contains(word),
            "{text}"
        );
    }
}

/// The console's change feed: a row that commits after a later id of another lane was read is
/// still reported (a reader that kept only the newest id would skip it).
async fn a_reader_misses_no_row_committed_late_in_another_lane(backend: Backend) {
    let app = spawn_with(backend, |s| s.pool_size = 4).await;
    let mut reader = app.state.pool.get().expect("conn");
    if backend == Backend::Sqlite {
        // One writer at a time: ids follow commits.
        let before = changes::cursor_now(&mut reader).expect("cursor");
        append_committed(&app, "unit", "1");
        let (topics, _) = changes::since(&mut reader, before).expect("since");
        assert!(topics.contains(&Topic::Board), "{topics:?}");
        return;
    }
    let mut holder = app.state.pool.get().expect("conn");
    diesel::sql_query("BEGIN").execute(&mut *holder).expect("begin");
    let late = audit::append(&mut holder, &Actor::system("test"), test_change("unit", "late")).expect("append");
    let early = append_committed(&app, "test", "early");
    assert!(early > late);
    let between = changes::cursor_now(&mut reader).expect("cursor");
    let (topics, _) = changes::since(&mut reader, between).expect("since");
    assert!(!topics.contains(&Topic::Board), "not committed yet: {topics:?}");
    diesel::sql_query("COMMIT").execute(&mut *holder).expect("commit");
    let (topics, next) = changes::since(&mut reader, between).expect("since");
    assert!(topics.contains(&Topic::Board), "the late row is reported: {topics:?}");
    let (topics, _) = changes::since(&mut reader, next).expect("since");
    assert!(topics.is_empty(), "and only once: {topics:?}");
}
