//! MFA for people: TOTP enrolment, the two-step sign-in, recovery codes, policy, admin reset,
//! the sealed seed and throttling of code guessing.

use diesel::RunQueryDsl as _;
use serde_json::json;

use crate::helpers::*;

crate::both_backends!(
    enrol_confirm_and_sign_in_in_two_steps,
    wrong_and_replayed_codes_are_refused,
    expired_and_reused_challenges_are_refused,
    recovery_codes_work_once_and_are_audited,
    policy_requires_mfa_for_admin_and_director_only,
    unenrolled_required_account_can_only_enrol,
    admin_reset_forces_re_enrolment,
    the_seed_is_not_stored_in_clear,
    code_guessing_is_throttled,
);

async fn challenge_for(app: &TestApp, username: &str) -> String {
    app.login_password(username, PASSWORD).await.body["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned()
}

fn sql(app: &TestApp, statement: &str) {
    let mut conn = granulo::store::establish(&app.db.target()).expect("connect");
    diesel::sql_query(statement).execute(&mut conn).expect("sql");
}

/// A technologist (MFA not required) who enrols voluntarily with a Bearer token; returns
/// (username, token, recovery codes).
async fn enrolled_technologist(app: &mut TestApp) -> (String, String, Vec<String>) {
    let name = format!("tech-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    app.create_user(&name, "technologist", None).await;
    let token = app.token(&name, PASSWORD).await;
    let enrol = app.post("/api/v1/auth/mfa/enrol", Some(&token), &json!({})).await;
    let body = enrol.ok(200).clone();
    assert_eq!(body["digits"], 6);
    assert_eq!(body["period"], 30);
    assert!(
        body["otpauth_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("otpauth://totp/"))
    );
    app.mfa.remember(&name, body["secret"].as_str().expect("secret"));
    let code = app.mfa.next_code(&name).await;
    let confirmed = app
        .post("/api/v1/auth/mfa/confirm", Some(&token), &json!({"code": code}))
        .await;
    let confirmed = confirmed.ok(200).clone();
    assert!(
        confirmed["session"].is_null(),
        "a Bearer enrolment opens no new session"
    );
    let codes: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (name, token, codes)
}

async fn enrol_confirm_and_sign_in_in_two_steps(backend: Backend) {
    let mut app = spawn(backend).await;
    // The admin (role requires MFA) enrols with its challenge; the harness did this.
    let first = app.login_password(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(first.ok(200)["mfa_required"], true);
    assert_eq!(first.body["enrolment_required"], true);
    assert!(
        first.body.get("access_token").is_none(),
        "no tokens before the second step"
    );
    assert_eq!(first.body["expires_in"], 300);
    let signed = app
        .enrol_with_challenge(ADMIN_USER, first.body["challenge"].as_str().expect("challenge"))
        .await;
    assert!(signed.ok(200)["access_token"].is_string());
    assert_eq!(signed.body["recovery_codes"].as_array().map(Vec::len), Some(10));
    // Next time: a challenge that asks for a code, and the code gives the usual tokens.
    let again = app.login_password(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(again.ok(200)["enrolment_required"], false);
    let challenge = again.body["challenge"].as_str().expect("challenge").to_owned();
    let tokens = app.answer_challenge(ADMIN_USER, &challenge).await;
    let token = tokens.ok(200)["access_token"].as_str().expect("token").to_owned();
    assert_eq!(tokens.body["user"]["role"], "admin");
    assert!(tokens.body["refresh_token"].is_string());
    app.get("/api/v1/me", Some(&token)).await.ok(200);
    // Enrolling again is refused: a reset comes first.
    app.post("/api/v1/auth/mfa/enrol", Some(&token), &json!({}))
        .await
        .problem(409, "mfa_already_enrolled");
    // A technologist who enrolled voluntarily is asked for a code from then on.
    let (tech, _, _) = enrolled_technologist(&mut app).await;
    let r = app.login_password(&tech, PASSWORD).await;
    assert_eq!(r.ok(200)["mfa_required"], true);
    assert_eq!(r.body["enrolment_required"], false);
    let audit = app.get("/api/v1/audit?entity_type=user&limit=500", Some(&token)).await;
    assert!(audit.text.contains("user.mfa_enrol"), "{}", audit.text);
}

async fn wrong_and_replayed_codes_are_refused(backend: Backend) {
    let mut app = spawn(backend).await;
    let (tech, _, _) = enrolled_technologist(&mut app).await;
    let challenge = app.login_password(&tech, PASSWORD).await.body["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned();

    // A code and a recovery code together, or neither: refused in words, the challenge unspent.
    for body in [
        json!({"challenge": challenge, "code": "000000", "recovery_code": "aaaa-bbbb"}),
        json!({"challenge": challenge}),
    ] {
        let r = app.post("/api/v1/auth/login/mfa", None, &body).await;
        let p = r.problem(400, "validation_failed");
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("either code or recovery_code")),
            "{p}"
        );
    }
    let seed = app.mfa.seed(&tech).expect("seed");
    let now = chrono::Utc::now().timestamp() as u64;
    let right = totp::code_at_step(&seed, 6, totp::step_at(now)).expect("code");
    let wrong = if right == "000000" { "000001" } else { "000000" };
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": challenge, "code": wrong}),
    )
    .await
    .problem(401, "mfa_code_invalid");
    // Neither or both factors: refused before anything is checked.
    app.post("/api/v1/auth/login/mfa", None, &json!({"challenge": challenge}))
        .await
        .problem(400, "validation_failed");
    // Two steps ahead is outside the ±1 step tolerance.
    let far = totp::code_at_step(&seed, 6, totp::step_at(now) + 3).expect("code");
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": challenge, "code": far}),
    )
    .await
    .problem(401, "mfa_code_invalid");
    // The next step's code works (the harness's own choice)…
    let code = app.mfa.next_code(&tech).await;
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": challenge, "code": code}),
    )
    .await
    .ok(200);
    // …and once only: replayed on a fresh challenge, it is refused (RFC 6238 §5.2).
    let challenge = app.login_password(&tech, PASSWORD).await.body["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned();
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": challenge, "code": code}),
    )
    .await
    .problem(401, "mfa_code_invalid");
}

async fn expired_and_reused_challenges_are_refused(backend: Backend) {
    let mut app = spawn(backend).await;
    let (tech, _, _) = enrolled_technologist(&mut app).await;
    let challenge = app.login_password(&tech, PASSWORD).await.body["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned();
    app.answer_challenge(&tech, &challenge).await.ok(200);
    // Spent.
    app.answer_challenge(&tech, &challenge)
        .await
        .problem(401, "mfa_challenge_invalid");
    // Expired.
    let challenge = app.login_password(&tech, PASSWORD).await.body["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned();
    sql(&app, "UPDATE mfa_challenges SET expires_at = '2000-01-01 00:00:00'");
    app.answer_challenge(&tech, &challenge)
        .await
        .problem(401, "mfa_challenge_invalid");
    // Made up.
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": "gmc_made-up", "code": "123456"}),
    )
    .await
    .problem(401, "mfa_challenge_invalid");
}

async fn recovery_codes_work_once_and_are_audited(backend: Backend) {
    let mut app = spawn(backend).await;
    let (tech, token, codes) = enrolled_technologist(&mut app).await;
    let c = challenge_for(&app, &tech).await;
    let r = app
        .post(
            "/api/v1/auth/login/mfa",
            None,
            &json!({"challenge": c, "recovery_code": codes[0].to_uppercase()}),
        )
        .await;
    assert!(r.ok(200)["access_token"].is_string(), "case and dashes do not matter");
    let c = challenge_for(&app, &tech).await;
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": c, "recovery_code": codes[0]}),
    )
    .await
    .problem(401, "mfa_code_invalid");
    let admin = app.admin_token().await;
    let audit = app.get("/api/v1/audit?entity_type=user&limit=500", Some(&admin)).await;
    assert!(audit.text.contains("\"recovery_codes_left\":9"), "{}", audit.text);
    // New codes need a current code; the old ones stop working.
    app.post(
        "/api/v1/auth/mfa/recovery-codes",
        Some(&token),
        &json!({"code": "000000"}),
    )
    .await
    .problem(422, "mfa_code_rejected");
    let code = app.mfa.next_code(&tech).await;
    let fresh = app
        .post("/api/v1/auth/mfa/recovery-codes", Some(&token), &json!({"code": code}))
        .await;
    assert_eq!(fresh.ok(200)["recovery_codes"].as_array().map(Vec::len), Some(10));
    let c = challenge_for(&app, &tech).await;
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": c, "recovery_code": codes[1]}),
    )
    .await
    .problem(401, "mfa_code_invalid");
}

async fn policy_requires_mfa_for_admin_and_director_only(backend: Backend) {
    let mut app = spawn(backend).await;
    for role in ["admin", "medical_director"] {
        let name = format!("{}-x", role.replace('_', "-"));
        app.create_user(&name, role, None).await;
        let r = app.login_password(&name, PASSWORD).await;
        assert_eq!(r.ok(200)["mfa_required"], true, "{role}");
        assert_eq!(r.body["enrolment_required"], true, "{role}");
    }
    app.create_user("tech-x", "technologist", None).await;
    let r = app.login_password("tech-x", PASSWORD).await;
    assert!(
        r.ok(200)["access_token"].is_string(),
        "technologists sign in with a password"
    );
    // A policy change applies at the next sign-in.
    let director = app.token_for("medical_director").await;
    let mut policy = app.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    assert_eq!(
        policy["security"]["mfa_required_roles"],
        json!(["admin", "medical_director"])
    );
    policy["security"]["mfa_required_roles"] = json!(["admin", "medical_director", "technologist"]);
    for key in ["version", "updated_at", "updated_by"] {
        if let Some(o) = policy.as_object_mut() {
            o.remove(key);
        }
    }
    app.put("/api/v1/policy", Some(&director), &policy).await.ok(200);
    let r = app.login_password("tech-x", PASSWORD).await;
    assert_eq!(r.ok(200)["mfa_required"], true);
    assert_eq!(r.body["enrolment_required"], true);
}

async fn unenrolled_required_account_can_only_enrol(backend: Backend) {
    let mut app = spawn(backend).await;
    app.create_user("director-y", "medical_director", None).await;
    let r = app.login_password("director-y", PASSWORD).await;
    let challenge = r.ok(200)["challenge"].as_str().expect("challenge").to_owned();
    // The challenge is no token, and it cannot skip enrolment.
    app.get("/api/v1/me", Some(&challenge))
        .await
        .problem(401, "invalid_token");
    app.post(
        "/api/v1/auth/login/mfa",
        None,
        &json!({"challenge": challenge, "code": "123456"}),
    )
    .await
    .problem(403, "mfa_enrolment_required");
    // Confirming without an enrolment started is refused; enrolling completes the sign-in.
    app.post(
        "/api/v1/auth/mfa/confirm",
        None,
        &json!({"challenge": challenge, "code": "123456"}),
    )
    .await
    .problem(409, "mfa_not_enrolled");
    let signed = app.enrol_with_challenge("director-y", &challenge).await;
    let token = signed.ok(200)["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.get("/api/v1/me", Some(&token)).await.ok(200)["role"],
        "medical_director"
    );
    // The challenge is spent by the confirmation.
    app.post("/api/v1/auth/mfa/enrol", None, &json!({"challenge": challenge}))
        .await
        .problem(401, "mfa_challenge_invalid");
}

async fn admin_reset_forces_re_enrolment(backend: Backend) {
    let mut app = spawn(backend).await;
    let admin = app.admin_token().await;
    let id = app.create_user("director-z", "medical_director", None).await;
    let token = app.token("director-z", PASSWORD).await;
    // Only an admin resets.
    let other = app.token_for("technologist").await;
    app.post(&format!("/api/v1/users/{id}/mfa/reset"), Some(&other), &json!({}))
        .await
        .problem(403, "forbidden");
    let r = app
        .post(&format!("/api/v1/users/{id}/mfa/reset"), Some(&admin), &json!({}))
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text);
    // The user's sessions ended, and the next sign-in enrols again.
    app.get("/api/v1/me", Some(&token))
        .await
        .problem(401, "session_revoked");
    let again = app.login_password("director-z", PASSWORD).await;
    assert_eq!(again.ok(200)["enrolment_required"], true);
    let audit = app.get("/api/v1/audit?entity_type=user&limit=500", Some(&admin)).await;
    assert!(audit.text.contains("user.mfa_reset"), "{}", audit.text);
    app.post("/api/v1/users/999999/mfa/reset", Some(&admin), &json!({}))
        .await
        .problem(404, "not_found");
}

async fn the_seed_is_not_stored_in_clear(backend: Backend) {
    let mut app = spawn(backend).await;
    app.admin_token().await;
    let seed = app.mfa.seed(ADMIN_USER).expect("seed");
    let mut conn = granulo::store::establish(&app.db.target()).expect("connect");
    let row = granulo::store::mfa::find(&mut conn, 1)
        .expect("read")
        .expect("admin's factor");
    assert!(granulo::credentials::sealed::is_sealed(&row.seed_sealed));
    let base32 = totp_rs::Secret::Raw(seed.clone()).to_encoded().to_string();
    let hex = hex::encode(&seed);
    for clear in [base32.as_str(), hex.as_str()] {
        assert!(!row.seed_sealed.contains(clear), "the seed is sealed");
    }
    let opened = app.state.secrets.open(&row.seed_sealed, "totp-seed").expect("opens");
    assert_eq!(opened, seed);
    // Recovery codes are stored as hashes only.
    let (tech, _, codes) = enrolled_technologist(&mut app).await;
    let _ = tech;
    let user = granulo::store::users::find_by_username(&mut conn, &tech)
        .expect("read")
        .expect("user");
    for stored in granulo::store::mfa::unused_recovery_codes(&mut conn, user.id).expect("codes") {
        assert!(codes.iter().all(|c| !stored.code_hash.contains(c.as_str())));
        assert_eq!(stored.code_hash.len(), 64);
    }
}

async fn code_guessing_is_throttled(backend: Backend) {
    let mut app = spawn(backend).await;
    let (tech, _, _) = enrolled_technologist(&mut app).await;
    let max = app.state.settings.login_max_failures;
    let mut refused_at = None;
    for i in 0..(max + 2) {
        // A right password between guesses does not forgive wrong codes.
        let c = app.login_password(&tech, PASSWORD).await.body["challenge"]
            .as_str()
            .expect("challenge")
            .to_owned();
        let r = app
            .post(
                "/api/v1/auth/login/mfa",
                None,
                &json!({"challenge": c, "code": format!("{:06}", 999_000 + i)}),
            )
            .await;
        if r.status.as_u16() == 429 {
            assert!(r.headers.get("retry-after").is_some());
            refused_at = Some(i);
            break;
        }
        r.problem(401, "mfa_code_invalid");
    }
    assert_eq!(refused_at, Some(max), "the guess after {max} wrong codes is throttled");
    // Even the right code waits now.
    let c = app.login_password(&tech, PASSWORD).await.body["challenge"]
        .as_str()
        .expect("challenge")
        .to_owned();
    assert_eq!(app.answer_challenge(&tech, &c).await.status.as_u16(), 429);
}
