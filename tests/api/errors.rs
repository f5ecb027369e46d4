//! Every error shape: problem+json with a stable code, whatever the client sends.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    malformed_bodies_answer_400,
    wrong_media_type_and_oversize_bodies,
    bad_paths_and_queries_answer_400,
    unknown_routes_and_wrong_methods,
    exhausted_pool_answers_503,
    hostile_input_never_breaks_the_server,
);

async fn malformed_bodies_answer_400(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let raw = |body: &'static str| {
        app.client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
    };
    app.send(raw("{not json")).await.problem(400, "malformed_json");
    app.send(raw("")).await.problem(400, "malformed_json");
    app.send(raw(
        r#"{"username":"abcd","password":"long enough password","role":"technologist"} {}"#,
    ))
    .await
    .problem(400, "malformed_json");
    let typed = app
        .send(raw(
            r#"{"username":"abc","password":"long enough password","role":"technologist","hospital_id":"seven"}"#,
        ))
        .await;
    assert_eq!(
        typed.problem(400, "validation_failed")["errors"][0]["field"],
        "hospital_id"
    );
    let float = app
        .send(raw(
            r#"{"username":"abc","password":"long enough password","role":"technologist","hospital_id":13.0}"#,
        ))
        .await;
    float.problem(400, "validation_failed");
    let unknown = app
        .send(raw(
            r#"{"username":"abc","password":"long enough password","role":"technologist","is_admin":true}"#,
        ))
        .await;
    assert!(
        unknown.problem(400, "validation_failed")["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("unknown field")
    );
    app.send(raw("[]")).await.problem(400, "validation_failed");
    app.send(raw("null")).await.problem(400, "validation_failed");
}

async fn wrong_media_type_and_oversize_bodies(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let text = app
        .send(
            app.client
                .post(app.url("/api/v1/users"))
                .bearer_auth(&admin)
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    text.problem(415, "unsupported_media_type");
    let none = app
        .send(app.client.post(app.url("/api/v1/auth/login")).body("{}"))
        .await;
    none.problem(415, "unsupported_media_type");
    let big = format!(r#"{{"username":"{}","password":"x"}}"#, "a".repeat(300 * 1024));
    let r = app
        .send(
            app.client
                .post(app.url("/api/v1/auth/login"))
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    r.problem(413, "payload_too_large");
}

async fn bad_paths_and_queries_answer_400(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let a = Some(admin.as_str());
    app.get("/api/v1/users/abc", a).await.problem(400, "invalid_path");
    app.get("/api/v1/users/-1", a).await.problem(400, "invalid_path");
    app.get("/api/v1/users/99999999999999999999999", a)
        .await
        .problem(400, "invalid_path");
    app.get("/api/v1/users?limit=abc", a)
        .await
        .problem(400, "invalid_query");
    app.get("/api/v1/users?bogus=1", a).await.problem(400, "invalid_query");
    app.get("/api/v1/users?limit=0", a)
        .await
        .problem(400, "validation_failed");
    app.get("/api/v1/users?limit=501", a)
        .await
        .problem(400, "validation_failed");
    app.get("/api/v1/users?cursor=not-a-cursor", a)
        .await
        .problem(400, "validation_failed");
    // NUL cannot be stored by PostgreSQL (it answered 500): refused in paths, queries and bodies,
    // as a refusal (422) because the request is otherwise well-formed.
    app.get("/api/v1/donors?q=a%00b", a).await.problem(422, "nul_character");
    app.get("/api/v1/units/A9999%0026000123", a)
        .await
        .problem(422, "nul_character");
    app.post(
        "/api/v1/auth/login",
        None,
        &serde_json::json!({"username": "ad\u{0}min", "password": "whatever it is"}),
    )
    .await
    .problem(422, "nul_character");
    // An entity id alone matches that id in every entity type.
    let entries = app.get("/api/v1/audit?entity_id=1", a).await.ok(200).clone();
    let items = entries["items"].as_array().expect("items");
    assert!(
        !items.is_empty() && items.iter().all(|e| e["entity_id"] == "1"),
        "{entries}"
    );
}

async fn unknown_routes_and_wrong_methods(backend: Backend) {
    let app = spawn(backend).await;
    app.get("/nope", None).await.problem(404, "not_found");
    app.get("/api/v1/nope", None).await.problem(404, "not_found");
    app.get("/api/v2/users", None).await.problem(404, "not_found");
    let r = app.send(app.client.delete(app.url("/api/v1/users"))).await;
    r.problem(405, "method_not_allowed");
    app.send(app.client.put(app.url("/healthz")))
        .await
        .problem(405, "method_not_allowed");
    app.get("/api/v1/auth/login", None)
        .await
        .problem(405, "method_not_allowed");
}

async fn exhausted_pool_answers_503(backend: Backend) {
    let app = spawn_with(backend, |s| {
        s.pool_size = 1;
        s.db_checkout_timeout_ms = 300;
    })
    .await;
    let held = app.state.pool.get().expect("the only connection");
    let started = std::time::Instant::now();
    let r = app.get("/readyz", None).await;
    r.problem(503, "database_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "answered instead of hanging"
    );
    drop(held);
    app.get("/readyz", None).await.ok(200);
}

async fn hostile_input_never_breaks_the_server(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let bodies = [
        json!({"username": "\u{0000}", "password": "\u{0000}"}),
        json!({"username": "'; DROP TABLE users; --", "password": PASSWORD, "role": "technologist"}),
        json!({"username": "a".repeat(10_000), "password": PASSWORD, "role": "technologist"}),
        json!({"username": "ok-user", "password": "🩸".repeat(50), "role": "technologist"}),
        json!({"username": "ok-user2", "password": PASSWORD, "role": "technologist", "hospital_id": i64::MAX}),
        json!({"username": "ok-user3", "password": PASSWORD, "role": "technologist", "hospital_id": -1}),
        json!(deep_nesting(200)),
    ];
    for body in &bodies {
        let r = app.post("/api/v1/users", Some(&admin), body).await;
        assert!(r.status.as_u16() < 500, "{body} → {} {}", r.status, r.text);
        if !r.status.is_success() {
            assert_eq!(r.content_type(), "application/problem+json");
        }
        app.post("/api/v1/auth/login", None, body).await;
    }
    app.get("/healthz", None).await.ok(200);
    app.get("/readyz", None).await.ok(200);
    // The injection attempt was stored as an ordinary (rejected) string, nothing dropped.
    app.get("/api/v1/users", Some(&admin)).await.ok(200);
}

fn deep_nesting(depth: usize) -> serde_json::Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}
