//! Accounts and hospitals: admin routes, validation, role refusals, scoping.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    admin_manages_users,
    users_list_paginates,
    account_input_is_validated,
    roles_are_enforced_on_every_admin_route,
    last_admin_cannot_be_removed,
    hospital_accounts_are_scoped,
    hospitals_are_validated,
);

async fn admin_manages_users(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let created = app
        .post(
            "/api/v1/users",
            Some(&admin),
            &json!({"username": "Dr.Who", "password": PASSWORD, "role": "medical_director"}),
        )
        .await;
    let user = created.ok(201).clone();
    assert_eq!(user["username"], "dr.who");
    assert_eq!(user["role"], "medical_director");
    assert!(user.get("password_hash").is_none() && !created.text.contains("argon2"));
    let id = user["id"].as_i64().expect("id");

    let got = app.get(&format!("/api/v1/users/{id}"), Some(&admin)).await;
    assert_eq!(got.ok(200)["username"], "dr.who");

    app.post(
        "/api/v1/users",
        Some(&admin),
        &json!({"username": "DR.WHO", "password": PASSWORD, "role": "technologist"}),
    )
    .await
    .problem(409, "username_taken");

    let updated = app
        .patch(
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            &json!({"role": "technologist"}),
        )
        .await;
    assert_eq!(updated.ok(200)["role"], "technologist");
    app.get("/api/v1/users/999999", Some(&admin))
        .await
        .problem(404, "not_found");
    app.patch("/api/v1/users/999999", Some(&admin), &json!({"active": false}))
        .await
        .problem(404, "not_found");
}

async fn users_list_paginates(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    for name in ["user-a", "user-b", "user-c"] {
        app.create_user(name, "technologist", None).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/users?limit=2&cursor={c}"),
            None => "/api/v1/users?limit=2".to_owned(),
        };
        let page = app.get(&path, Some(&admin)).await;
        let body = page.ok(200);
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["username"].as_str().expect("name").to_owned()));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["admin", "user-a", "user-b", "user-c"]);
}

async fn account_input_is_validated(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let hospital = app.create_hospital("VAL").await;
    let cases = [
        (
            json!({"username": "ok-name", "password": PASSWORD, "role": "superuser"}),
            "role",
        ),
        (
            json!({"username": "ok-name", "password": "short", "role": "technologist"}),
            "password",
        ),
        (
            json!({"username": "x", "password": PASSWORD, "role": "technologist"}),
            "username",
        ),
        (
            json!({"username": "bad name", "password": PASSWORD, "role": "technologist"}),
            "username",
        ),
        (
            json!({"username": "ok-name", "password": "ok-name-is-my-password", "role": "technologist"}),
            "password",
        ),
        (
            json!({"username": "ok-name", "password": PASSWORD, "role": "hospital"}),
            "hospital_id",
        ),
        (
            json!({"username": "ok-name", "password": PASSWORD, "role": "technologist", "hospital_id": hospital}),
            "hospital_id",
        ),
        (
            json!({"username": "ok-name", "password": PASSWORD, "role": "technologist", "admin": true}),
            "admin",
        ),
        (
            json!({"username": 12, "password": PASSWORD, "role": "technologist"}),
            "username",
        ),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/users", Some(&admin), &body).await;
        let p = r.problem(400, "validation_failed");
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{body}: expected an error on {field}, got {fields:?}"
        );
    }
    app.post(
        "/api/v1/users",
        Some(&admin),
        &json!({"username": "ok-name", "password": PASSWORD, "role": "hospital", "hospital_id": 424242}),
    )
    .await
    .problem(422, "unknown_hospital");
    // None of the refused requests created anything.
    let list = app.get("/api/v1/users", Some(&admin)).await;
    assert_eq!(list.ok(200)["items"].as_array().expect("items").len(), 1);
}

async fn roles_are_enforced_on_every_admin_route(backend: Backend) {
    let mut app = spawn(backend).await;
    let hospital = app.create_hospital("ROLES").await;
    for role in ["technologist", "medical_director", "hospital"] {
        let token = app.token_for(role).await;
        let t = Some(token.as_str());
        app.get("/api/v1/users", t).await.problem(403, "forbidden");
        app.get("/api/v1/users/1", t).await.problem(403, "forbidden");
        app.post(
            "/api/v1/users",
            t,
            &json!({"username": "sneaky", "password": PASSWORD, "role": "admin"}),
        )
        .await
        .problem(403, "forbidden");
        app.patch("/api/v1/users/1", t, &json!({"active": false}))
            .await
            .problem(403, "forbidden");
        app.get("/api/v1/hospitals", t).await.problem(403, "forbidden");
        app.post("/api/v1/hospitals", t, &json!({"name": "x", "code": "XX"}))
            .await
            .problem(403, "forbidden");
        app.post(&format!("/api/v1/hospitals/{hospital}/clients"), t, &json!({}))
            .await
            .problem(403, "forbidden");
        app.get(&format!("/api/v1/hospitals/{hospital}/clients"), t)
            .await
            .problem(403, "forbidden");
        let audit = app.get("/api/v1/audit", t).await;
        if role == "medical_director" {
            audit.ok(200);
        } else {
            audit.problem(403, "forbidden");
        }
        app.get("/api/v1/me", t).await.ok(200);
    }
}

async fn last_admin_cannot_be_removed(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    app.patch("/api/v1/users/1", Some(&admin), &json!({"active": false}))
        .await
        .problem(409, "last_admin");
    app.patch("/api/v1/users/1", Some(&admin), &json!({"role": "technologist"}))
        .await
        .problem(409, "last_admin");
    let second = app.create_user("admin-two", "admin", None).await;
    app.patch("/api/v1/users/1", Some(&admin), &json!({"role": "technologist"}))
        .await
        .ok(200);
    let other = app.token("admin-two", PASSWORD).await;
    app.patch(
        &format!("/api/v1/users/{second}"),
        Some(&other),
        &json!({"active": false}),
    )
    .await
    .problem(409, "last_admin");
}

async fn hospital_accounts_are_scoped(backend: Backend) {
    let mut app = spawn(backend).await;
    let own = app.create_hospital("OWN").await;
    let foreign = app.create_hospital("FOREIGN").await;
    app.create_user("ward-clerk", "hospital", Some(own)).await;
    let token = app.token("ward-clerk", PASSWORD).await;
    let me = app.get("/api/v1/me", Some(&token)).await;
    assert_eq!(me.ok(200)["hospital_id"], own);
    assert_eq!(me.body["role"], "hospital");
    app.get(&format!("/api/v1/hospitals/{own}"), Some(&token)).await.ok(200);
    app.get(&format!("/api/v1/hospitals/{foreign}"), Some(&token))
        .await
        .problem(404, "not_found");
    let admin = app.admin_token().await;
    app.get(&format!("/api/v1/hospitals/{foreign}"), Some(&admin))
        .await
        .ok(200);
}

async fn hospitals_are_validated(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let created = app
        .post(
            "/api/v1/hospitals",
            Some(&admin),
            &json!({"name": " Royal Free ", "code": "rfh"}),
        )
        .await;
    assert_eq!(created.ok(201)["code"], "RFH");
    assert_eq!(created.body["name"], "Royal Free");
    app.post(
        "/api/v1/hospitals",
        Some(&admin),
        &json!({"name": "Other", "code": "RFH"}),
    )
    .await
    .problem(409, "hospital_code_taken");
    let bad = app
        .post("/api/v1/hospitals", Some(&admin), &json!({"name": "", "code": "a b"}))
        .await;
    assert_eq!(
        bad.problem(400, "validation_failed")["errors"]
            .as_array()
            .expect("errors")
            .len(),
        2
    );
    app.post("/api/v1/hospitals/9999/clients", Some(&admin), &json!({}))
        .await
        .problem(404, "not_found");
    let list = app.get("/api/v1/hospitals?limit=1", Some(&admin)).await;
    assert_eq!(list.ok(200)["items"].as_array().expect("items").len(), 1);
    assert!(list.body["next_cursor"].is_null());
}
