//! Sign-in, tokens, refresh rotation, logout, client credentials, throttling, bootstrap.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use granulo::auth::Role;
use granulo::auth::jwt::{AUDIENCE, Claims, ISSUER, JwtKeys};
use granulo::startup::Bootstrap;
use secrecy::SecretString;

both_backends!(
    login_returns_tokens_and_me,
    wrong_password_and_unknown_user_look_the_same,
    repeated_failures_for_a_username_are_throttled,
    repeated_failures_from_an_address_are_throttled,
    tampered_and_malformed_tokens_are_refused,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_ends_the_session,
    deactivation_and_password_change_end_sessions,
    client_credentials_are_scoped_to_their_hospital,
    an_inactive_hospital_locks_out_its_accounts,
    bootstrap_admin_is_created_once,
    embedded_default_generates_an_admin_password,
);

async fn login_returns_tokens_and_me(backend: Backend) {
    let app = spawn(backend).await;
    let r = app.login(ADMIN_USER, ADMIN_PASSWORD).await;
    let body = r.ok(200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(body["refresh_token"].as_str().is_some_and(|t| t.len() > 40));
    assert_eq!(body["user"]["username"], ADMIN_USER);
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(
        r.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let token = body["access_token"].as_str().expect("token");
    let me = app.get("/api/v1/me", Some(token)).await;
    assert_eq!(me.ok(200)["name"], ADMIN_USER);
    assert_eq!(me.body["role"], "admin");
    assert_eq!(me.body["kind"], "user");
    // Usernames are case-insensitive.
    app.login("  ADMIN ", ADMIN_PASSWORD).await.ok(200);
}

async fn wrong_password_and_unknown_user_look_the_same(backend: Backend) {
    let app = spawn(backend).await;
    let wrong = app.login(ADMIN_USER, "not the password at all").await;
    let unknown = app.login("nobody-here", "not the password at all").await;
    wrong.problem(401, "invalid_credentials");
    unknown.problem(401, "invalid_credentials");
    assert_eq!(wrong.body["detail"], unknown.body["detail"]);
    assert!(wrong.headers.contains_key("www-authenticate"));
    // Nothing was revealed and nothing else changed: the right password still works.
    app.login(ADMIN_USER, ADMIN_PASSWORD).await.ok(200);
}

async fn repeated_failures_for_a_username_are_throttled(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.login_max_failures = 3).await;
    app.create_user("tech-b", "technologist", None).await;
    for _ in 0..3 {
        app.login(ADMIN_USER, "wrong password!!")
            .await
            .problem(401, "invalid_credentials");
    }
    let throttled = app.login(ADMIN_USER, "wrong password!!").await;
    throttled.problem(429, "too_many_requests");
    let retry: u64 = throttled.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=15 * 60).contains(&retry), "retry-after {retry}");
    // Even the right password waits until the window passes.
    app.login(ADMIN_USER, ADMIN_PASSWORD)
        .await
        .problem(429, "too_many_requests");
    // Other accounts are not affected by this username's failures.
    app.login("tech-b", PASSWORD).await.ok(200);
}

async fn repeated_failures_from_an_address_are_throttled(backend: Backend) {
    let app = spawn_with(backend, |s| s.login_max_failures_per_address = 4).await;
    for i in 0..4 {
        app.login(&format!("someone{i}"), "wrong password!!")
            .await
            .problem(401, "invalid_credentials");
    }
    app.login("someone-else", "wrong password!!")
        .await
        .problem(429, "too_many_requests");
}

fn forge(claims: &Claims, secret: &str) -> String {
    JwtKeys::new(&SecretString::from(secret.to_owned()))
        .sign(claims)
        .expect("sign")
}

async fn tampered_and_malformed_tokens_are_refused(backend: Backend) {
    use base64::Engine as _;
    let app = spawn(backend).await;
    let login = app.login(ADMIN_USER, ADMIN_PASSWORD).await;
    let good = login.body["access_token"].as_str().expect("token").to_owned();
    app.get("/api/v1/me", Some(&good)).await.ok(200);

    app.get("/api/v1/me", None).await.problem(401, "missing_token");
    let basic = app
        .send(
            app.client
                .get(app.url("/api/v1/me"))
                .header("authorization", "Basic YWRtaW46eA=="),
        )
        .await;
    basic.problem(401, "invalid_token");
    app.get("/api/v1/me", Some("garbage"))
        .await
        .problem(401, "invalid_token");

    // Bad signature: flip one character of the signature.
    let mut chars: Vec<char> = good.chars().collect();
    let last = chars.len() - 2;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    app.get("/api/v1/me", Some(&flipped))
        .await
        .problem(401, "invalid_token");

    // alg=none with the genuine payload.
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = good.split('.').nth(1).expect("payload");
    let none = format!("{}.{}.", engine.encode(r#"{"alg":"none","typ":"JWT"}"#), payload);
    app.get("/api/v1/me", Some(&none)).await.problem(401, "invalid_token");

    // Elevated role in the payload, signature kept: refused.
    let mut claims: Claims = serde_json::from_slice(&engine.decode(payload).expect("b64")).expect("claims");
    let mut forged_payload = claims.clone();
    forged_payload.role = Role::Admin;
    forged_payload.sub = "user:999".into();
    let sig = good.split('.').nth(2).expect("sig");
    let header = good.split('.').next().expect("header");
    let spliced = format!(
        "{header}.{}.{sig}",
        engine.encode(serde_json::to_vec(&forged_payload).expect("json"))
    );
    app.get("/api/v1/me", Some(&spliced))
        .await
        .problem(401, "invalid_token");

    // Signed with another key.
    app.get(
        "/api/v1/me",
        Some(&forge(&claims, "another-key-another-key-another-key!!")),
    )
    .await
    .problem(401, "invalid_token");

    // Expired (beyond the leeway), with the right key.
    let now = chrono::Utc::now().timestamp();
    claims.iat = now - 3600;
    claims.nbf = now - 3600;
    claims.exp = now - 600;
    app.get("/api/v1/me", Some(&forge(&claims, JWT_SECRET)))
        .await
        .problem(401, "token_expired");

    // Right key, wrong audience / issuer.
    let mut other = claims.clone();
    other.exp = now + 600;
    other.iat = now;
    other.nbf = now;
    other.aud = "another-service".into();
    app.get("/api/v1/me", Some(&forge(&other, JWT_SECRET)))
        .await
        .problem(401, "invalid_token");
    other.aud = AUDIENCE.into();
    other.iss = "someone-else".into();
    app.get("/api/v1/me", Some(&forge(&other, JWT_SECRET)))
        .await
        .problem(401, "invalid_token");

    // Right key and claims but a session that does not exist.
    other.iss = ISSUER.into();
    other.sid = "no-such-session".into();
    app.get("/api/v1/me", Some(&forge(&other, JWT_SECRET)))
        .await
        .problem(401, "invalid_token");
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let app = spawn(backend).await;
    let first = app.login(ADMIN_USER, ADMIN_PASSWORD).await;
    let r1 = first.body["refresh_token"].as_str().expect("r1").to_owned();

    let second = app
        .post("/api/v1/auth/refresh", None, &json!({"refresh_token": r1}))
        .await;
    second.ok(200);
    let r2 = second.body["refresh_token"].as_str().expect("r2").to_owned();
    let a2 = second.body["access_token"].as_str().expect("a2").to_owned();
    assert_ne!(r1, r2);
    app.get("/api/v1/me", Some(&a2)).await.ok(200);

    // Replaying the spent token ends the whole session.
    app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": r1}))
        .await
        .problem(401, "refresh_token_reused");
    app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": r2}))
        .await
        .problem(401, "session_revoked");
    app.get("/api/v1/me", Some(&a2)).await.problem(401, "session_revoked");

    // Other sessions of the same user are untouched.
    let other = app.token(ADMIN_USER, ADMIN_PASSWORD).await;
    app.get("/api/v1/me", Some(&other)).await.ok(200);

    app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": "grt_made-up"}))
        .await
        .problem(401, "invalid_refresh_token");
    app.post("/api/v1/auth/refresh", None, &json!({}))
        .await
        .problem(400, "validation_failed");
}

async fn logout_ends_the_session(backend: Backend) {
    let app = spawn(backend).await;
    let login = app.login(ADMIN_USER, ADMIN_PASSWORD).await;
    let access = login.body["access_token"].as_str().expect("a").to_owned();
    let refresh = login.body["refresh_token"].as_str().expect("r").to_owned();
    let out = app
        .send(app.client.post(app.url("/api/v1/auth/logout")).bearer_auth(&access))
        .await;
    assert_eq!(out.status.as_u16(), 204);
    app.get("/api/v1/me", Some(&access))
        .await
        .problem(401, "session_revoked");
    app.post("/api/v1/auth/refresh", None, &json!({"refresh_token": refresh}))
        .await
        .problem(401, "session_revoked");
    app.send(app.client.post(app.url("/api/v1/auth/logout")))
        .await
        .problem(401, "missing_token");
}

async fn deactivation_and_password_change_end_sessions(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let id = app.create_user("tech-a", "technologist", None).await;
    let tech = app.token("tech-a", PASSWORD).await;
    app.get("/api/v1/me", Some(&tech)).await.ok(200);

    app.patch(
        &format!("/api/v1/users/{id}"),
        Some(&admin),
        &json!({"password": "a brand new password"}),
    )
    .await
    .ok(200);
    app.get("/api/v1/me", Some(&tech)).await.problem(401, "session_revoked");
    app.login("tech-a", PASSWORD).await.problem(401, "invalid_credentials");
    let tech = app.token("tech-a", "a brand new password").await;

    app.patch(&format!("/api/v1/users/{id}"), Some(&admin), &json!({"active": false}))
        .await
        .ok(200);
    app.get("/api/v1/me", Some(&tech)).await.problem(401, "session_revoked");
    app.login("tech-a", "a brand new password")
        .await
        .problem(401, "account_inactive");
    // The wrong password for an inactive account says nothing about the account.
    app.login("tech-a", "wrong wrong wrong")
        .await
        .problem(401, "invalid_credentials");
}

async fn client_credentials_are_scoped_to_their_hospital(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let mine = app.create_hospital("MINE").await;
    let other = app.create_hospital("OTHER").await;
    let created = app
        .post(
            &format!("/api/v1/hospitals/{mine}/clients"),
            Some(&admin),
            &json!({"name": "interface engine"}),
        )
        .await;
    let body = created.ok(201).clone();
    let client_id = body["client_id"].as_str().expect("client_id").to_owned();
    let secret = body["client_secret"].as_str().expect("secret").to_owned();

    let listed = app
        .get(&format!("/api/v1/hospitals/{mine}/clients"), Some(&admin))
        .await;
    assert!(!listed.text.contains(&secret), "a listing never shows the secret");
    assert_eq!(listed.ok(200)["items"][0]["client_id"], client_id.as_str());

    app.post(
        "/api/v1/auth/token",
        None,
        &json!({"client_id": client_id, "client_secret": "gcs_wrong"}),
    )
    .await
    .problem(401, "invalid_client");
    app.post(
        "/api/v1/auth/token",
        None,
        &json!({"client_id": "gc_unknown", "client_secret": secret}),
    )
    .await
    .problem(401, "invalid_client");
    let tok = app
        .post(
            "/api/v1/auth/token",
            None,
            &json!({"client_id": client_id, "client_secret": secret}),
        )
        .await;
    assert_eq!(tok.ok(200)["role"], "hospital");
    assert_eq!(tok.body["hospital_id"], mine);
    assert!(tok.body.get("refresh_token").is_none());
    let token = tok.body["access_token"].as_str().expect("token").to_owned();

    let me = app.get("/api/v1/me", Some(&token)).await;
    assert_eq!(me.ok(200)["kind"], "client");
    assert_eq!(me.body["hospital_id"], mine);
    app.get(&format!("/api/v1/hospitals/{mine}"), Some(&token))
        .await
        .ok(200);
    app.get(&format!("/api/v1/hospitals/{other}"), Some(&token))
        .await
        .problem(404, "not_found");
    app.get("/api/v1/hospitals", Some(&token))
        .await
        .problem(403, "forbidden");
    app.get("/api/v1/users", Some(&token)).await.problem(403, "forbidden");

    // Revoking the credential ends its tokens at once.
    let numeric = body["id"].as_i64().expect("id");
    app.post(
        &format!("/api/v1/hospitals/{mine}/clients/{numeric}/revoke"),
        Some(&admin),
        &json!({}),
    )
    .await
    .ok(200);
    app.get("/api/v1/me", Some(&token))
        .await
        .problem(401, "session_revoked");
    app.post(
        "/api/v1/auth/token",
        None,
        &json!({"client_id": client_id, "client_secret": secret}),
    )
    .await
    .problem(401, "invalid_client");
    app.post(
        &format!("/api/v1/hospitals/{mine}/clients/{numeric}/revoke"),
        Some(&admin),
        &json!({}),
    )
    .await
    .problem(409, "already_revoked");
    // A credential is addressed under its own hospital only.
    app.post(
        &format!("/api/v1/hospitals/{other}/clients/{numeric}/revoke"),
        Some(&admin),
        &json!({}),
    )
    .await
    .problem(404, "not_found");
}

async fn an_inactive_hospital_locks_out_its_accounts(backend: Backend) {
    use diesel::RunQueryDsl as _;
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let hospital = app.create_hospital("CLOSED").await;
    app.create_user("closed-ward", "hospital", Some(hospital)).await;
    let user_token = app.token("closed-ward", PASSWORD).await;
    let created = app
        .post(
            &format!("/api/v1/hospitals/{hospital}/clients"),
            Some(&admin),
            &json!({}),
        )
        .await;
    let creds = json!({"client_id": created.body["client_id"], "client_secret": created.body["client_secret"]});
    let client = app.post("/api/v1/auth/token", None, &creds).await;
    let client_token = client.ok(200)["access_token"].as_str().expect("token").to_owned();

    // No route closes a hospital yet; the flag is what any future one will set.
    let mut conn = app.state.pool.get().expect("conn");
    diesel::sql_query(format!("UPDATE hospitals SET active = false WHERE id = {hospital}"))
        .execute(&mut *conn)
        .expect("deactivate hospital");
    drop(conn);

    app.get("/api/v1/me", Some(&user_token))
        .await
        .problem(401, "account_inactive");
    app.get("/api/v1/me", Some(&client_token))
        .await
        .problem(401, "account_inactive");
    app.login("closed-ward", PASSWORD)
        .await
        .problem(401, "account_inactive");
    app.post("/api/v1/auth/token", None, &creds)
        .await
        .problem(401, "account_inactive");
    app.get("/api/v1/me", Some(&admin)).await.ok(200);
}

async fn bootstrap_admin_is_created_once(backend: Backend) {
    let mut app = spawn(backend).await;
    assert_eq!(
        app.bootstrap,
        Bootstrap::FromEnvironment {
            username: ADMIN_USER.into()
        }
    );
    let admin = app.admin_token().await;
    let audit = app
        .get("/api/v1/audit?entity_type=user&entity_id=1", Some(&admin))
        .await;
    // Besides the creation: the admin's own enrolment of its second factor.
    let items: Vec<_> = audit.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["action"] == "user.create")
        .cloned()
        .collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["actor"]["kind"], "system");
    assert_eq!(items[0]["actor"]["name"], "bootstrap");

    // A second start on the same database with other admin settings creates nobody.
    let again = spawn_on(backend, app.db.clone(), |s| {
        s.admin_username = Some("intruder".into());
        s.admin_password = Some(SecretString::from("intruder password 123"));
    })
    .await;
    assert_eq!(again.bootstrap, Bootstrap::NotNeeded);
    again
        .login("intruder", "intruder password 123")
        .await
        .problem(401, "invalid_credentials");
    again.login(ADMIN_USER, ADMIN_PASSWORD).await.ok(200);
}

async fn embedded_default_generates_an_admin_password(backend: Backend) {
    let app = spawn_with(backend, |s| {
        s.admin_username = None;
        s.admin_password = None;
    })
    .await;
    match (&app.bootstrap, backend) {
        (
            Bootstrap::Generated {
                username,
                password_file,
            },
            Backend::Sqlite,
        ) => {
            let password = std::fs::read_to_string(password_file).expect("password file");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(password_file).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            app.login(username, password.trim()).await.ok(200);
        }
        (Bootstrap::NoUsers, Backend::Postgres) => {
            app.login(ADMIN_USER, ADMIN_PASSWORD)
                .await
                .problem(401, "invalid_credentials");
        }
        (other, _) => panic!("unexpected bootstrap {other:?} on {backend:?}"),
    }
}

/// A PostgreSQL server that cannot be reached is reported with its real cause.
#[test]
fn unreachable_postgres_reports_the_real_cause() {
    let mut settings = granulo::config::Settings::with_database(
        granulo::config::DatabaseTarget::parse("postgres://postgres@127.0.0.1:1/granulo").expect("url"),
    );
    settings.jwt_secret = Some(SecretString::from(JWT_SECRET));
    settings.secrets_key = Some(SecretString::from(SECRETS_KEY));
    let err = granulo::startup::Application::build(settings)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("127.0.0.1") || err.to_lowercase().contains("connection refused"),
        "{err}"
    );
    assert!(!err.contains("Invalid connection url"), "{err}");
}
