//! One blocking hop per request: a bearer caller's session is checked in the handler's own unit
//! of work (or by the gate middleware when the handler reads nothing). Whatever the route, a
//! caller whose session ended, whose account was deactivated or changed gets 401, and nothing
//! it asked for is written.

use diesel::RunQueryDsl as _;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use granulo::auth::jwt::{Claims, JwtKeys};

both_backends!(
    an_ended_session_is_refused_on_every_kind_of_route,
    a_deactivated_account_is_refused_in_the_request_hop,
    an_account_changed_under_a_live_token_is_refused,
    a_token_without_the_name_claim_is_checked_by_its_own_read,
);

fn sql(app: &TestApp, statement: &str) {
    let mut conn = app.state.pool.get().expect("conn");
    diesel::sql_query(statement).execute(&mut *conn).expect("sql");
}

/// Donors and audit rows: what a refused write must leave as it was.
async fn written(app: &TestApp, admin: &str) -> (usize, usize) {
    let donors = app.get("/api/v1/donors?limit=500", Some(admin)).await;
    let audit = app.get("/api/v1/audit?limit=500", Some(admin)).await;
    let len = |v: &Value| v["items"].as_array().expect("items").len();
    (len(donors.ok(200)), len(audit.ok(200)))
}

async fn logout(app: &TestApp, token: &str) {
    let out = app
        .send(app.client.post(app.url("/api/v1/auth/logout")).bearer_auth(token))
        .await;
    assert_eq!(out.status.as_u16(), 204);
}

/// What a live technologist gets on the routes the refusals below are about: not a 401.
async fn answers_while_live(app: &TestApp, tech: &str) {
    app.get("/api/v1/donors", Some(tech)).await.ok(200);
    app.get("/api/v1/me", Some(tech)).await.ok(200);
    app.get("/api/v1/users", Some(tech)).await.problem(403, "forbidden");
    let invalid = app.post("/api/v1/donors", Some(tech), &json!({"given_name": ""})).await;
    assert!(
        invalid.status.is_client_error() && invalid.status.as_u16() != 401,
        "{}",
        invalid.text
    );
}

/// Every kind of route refuses `tech` with `code`, and no row or audit entry is written.
async fn refused_everywhere(app: &mut TestApp, tech: &str, code: &str) {
    let admin = app.admin_token().await;
    let before = written(app, &admin).await;
    // (a) a read
    app.get("/api/v1/donors", Some(tech)).await.problem(401, code);
    // (b) a write whose body is refused before any read
    app.post("/api/v1/donors", Some(tech), &json!({"given_name": ""}))
        .await
        .problem(401, code);
    // (c) a write that would succeed, with and without an Idempotency-Key
    app.post("/api/v1/donors", Some(tech), &donor_body("Ended", "O", "positive"))
        .await
        .problem(401, code);
    let keyed = app
        .send(
            app.client
                .post(app.url("/api/v1/donors"))
                .bearer_auth(tech)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&donor_body("Keyed", "A", "negative")),
        )
        .await;
    keyed.problem(401, code);
    // (d) routes that answer without the database: the caller's account, a role refusal
    app.get("/api/v1/me", Some(tech)).await.problem(401, code);
    app.get("/api/v1/users", Some(tech)).await.problem(401, code);
    assert_eq!(written(app, &admin).await, before, "nothing was written");
}

async fn an_ended_session_is_refused_on_every_kind_of_route(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    answers_while_live(&app, &tech).await;
    logout(&app, &tech).await;
    refused_everywhere(&mut app, &tech, "session_revoked").await;

    // The FHIR facade answers the refusal as an OperationOutcome.
    let hospital = app.token_for("hospital").await;
    app.get("/fhir/R5/Patient", Some(&hospital)).await.ok(200);
    logout(&app, &hospital).await;
    let fhir = app.get("/fhir/R5/Patient", Some(&hospital)).await;
    assert_eq!(fhir.status.as_u16(), 401, "{}", fhir.text);
    assert!(
        fhir.content_type().starts_with("application/fhir+json"),
        "{}",
        fhir.content_type()
    );
    assert!(fhir.text.contains("session_revoked"), "{}", fhir.text);
    assert!(fhir.headers.contains_key("www-authenticate"));
}

async fn a_deactivated_account_is_refused_in_the_request_hop(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    answers_while_live(&app, &tech).await;
    // Directly in the database, sessions left open: only the per-request check can refuse.
    sql(
        &app,
        "UPDATE users SET active = FALSE WHERE username LIKE 'technologist-%'",
    );
    refused_everywhere(&mut app, &tech, "account_inactive").await;
}

async fn an_account_changed_under_a_live_token_is_refused(backend: Backend) {
    let mut app = spawn(backend).await;
    let id = app.create_user("changing-admin", "admin", None).await;
    let token = app.token("changing-admin", PASSWORD).await;
    app.get("/api/v1/users", Some(&token)).await.ok(200);
    // A demotion racing the request (the API revokes the sessions with it): the token's role
    // is never taken over the account's.
    sql(&app, &format!("UPDATE users SET role = 'technologist' WHERE id = {id}"));
    app.get("/api/v1/users", Some(&token))
        .await
        .problem(401, "session_revoked");
    let admin = app.admin_token().await;
    let before = written(&app, &admin).await;
    app.post(
        "/api/v1/users",
        Some(&token),
        &json!({"username": "made-by-demoted", "password": PASSWORD, "role": "admin"}),
    )
    .await
    .problem(401, "session_revoked");
    app.get("/api/v1/me", Some(&token))
        .await
        .problem(401, "session_revoked");
    assert_eq!(written(&app, &admin).await, before);
    let users = app.get("/api/v1/users?limit=500", Some(&admin)).await;
    assert!(
        !users.ok(200).to_string().contains("made-by-demoted"),
        "the demoted account's request created a user"
    );

    // Back to admin in the database, then moved to a hospital: refused again.
    sql(&app, &format!("UPDATE users SET role = 'admin' WHERE id = {id}"));
    app.get("/api/v1/users", Some(&token)).await.ok(200);
    let h = app.create_hospital("ELSEWHERE").await;
    sql(
        &app,
        &format!("UPDATE users SET role = 'hospital', hospital_id = {h} WHERE id = {id}"),
    );
    app.get("/api/v1/me", Some(&token))
        .await
        .problem(401, "session_revoked");
}

async fn a_token_without_the_name_claim_is_checked_by_its_own_read(backend: Backend) {
    use base64::Engine as _;
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let payload = tech.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    let mut claims: Claims = serde_json::from_slice(&bytes).expect("claims");
    assert!(claims.name.as_deref().is_some_and(|n| n.starts_with("technologist-")));
    // As a token issued before the claim existed.
    claims.name = None;
    let older = JwtKeys::new(&secrecy::SecretString::from(JWT_SECRET))
        .sign(&claims)
        .expect("sign");
    let me = app.get("/api/v1/me", Some(&older)).await;
    assert_eq!(me.ok(200)["role"], "technologist");
    app.get("/api/v1/users", Some(&older)).await.problem(403, "forbidden");
    logout(&app, &tech).await;
    refused_everywhere(&mut app, &older, "session_revoked").await;
}
