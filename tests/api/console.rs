//! The console's session and CSRF rules over HTTP, on both backends: the cookie's attributes,
//! sign-in throttling shared with the API, CSRF on every form, logout and revocation ending the
//! session everywhere (the live stream included), and hospital accounts kept out.

use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::console_support::*;
use crate::helpers::*;

both_backends!(
    console_sign_in_opens_a_strict_cookie_session,
    console_cookie_is_secure_behind_tls,
    console_pages_need_a_session,
    console_sign_in_is_throttled_with_the_api,
    console_forms_need_the_csrf_token,
    console_logout_ends_the_session_and_its_stream,
    console_refuses_hospital_accounts,
    console_sessions_end_on_deactivation_and_at_end_of_shift,
    console_cookies_and_tokens_do_not_cross,
    console_stream_reports_changes,
    console_signs_in_with_a_second_factor,
);

/// A director (the role requires a second factor) enrols at the console after the password,
/// sees the recovery codes once, and from then on answers a code page.
async fn console_signs_in_with_a_second_factor(backend: Backend) {
    let mut app = spawn(backend).await;
    app.create_user("director-c", "medical_director", None).await;
    let console = Console::anonymous(&app);
    let form = console.get("/console/login").await;
    let login = form.set_cookie("granulo_login").expect("cookie");
    let csrf = form.csrf().expect("csrf");
    let post_login = || {
        console
            .client
            .post(format!("{}/console/login", app.base))
            .header("cookie", login.split(';').next().unwrap_or(""))
            .form(&[
                ("username", "director-c"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", "/console/alerts"),
            ])
    };
    let res = post_login().send().await.expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    let challenge = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("granulo_mfa="))
        .expect("challenge cookie")
        .to_owned();
    assert!(challenge.contains("HttpOnly") && challenge.contains("SameSite=Strict"));
    assert!(
        !res.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().is_ok_and(|c| c.starts_with("granulo_console="))),
        "no session before the second step"
    );
    let page = res.text().await.expect("body");
    assert_no_inline_code(&page);
    assert!(page.contains("otpauth://totp/granulo:director-c"), "{page}");
    assert!(page.contains(r#"action="/console/login/enrol""#));
    let cookie = challenge.split(';').next().unwrap_or("").to_owned();
    let page_csrf = regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#)
        .expect("regex")
        .captures(&page)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_owned())
        .expect("csrf");
    // Without the page's CSRF token: refused, back to the password.
    let res = console
        .client
        .post(format!("{}/console/login/enrol", app.base))
        .header("cookie", &cookie)
        .form(&[("code", "123456"), ("csrf", "0")])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 401);
    assert!(res.text().await.expect("body").contains("mfa_challenge_invalid"));
    // A wrong code shows the same secret again.
    let res = console
        .client
        .post(format!("{}/console/login/enrol", app.base))
        .header("cookie", &cookie)
        .form(&[("code", "12345x"), ("csrf", page_csrf.as_str())])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 401);
    let again = res.text().await.expect("body");
    assert!(again.contains("mfa_code_invalid") && again.contains("otpauth://totp/granulo:director-c"));
    // The right code: recovery codes once, and the session.
    let mut c = Console::anonymous(&app);
    let first = Page {
        status: reqwest::StatusCode::OK,
        headers: reqwest::header::HeaderMap::new(),
        text: page.clone(),
    };
    let done = c.second_step("director-c", &first, &cookie).await;
    let codes = done.ok(200);
    assert!(codes.contains("recovery-codes") && codes.contains(r#"href="/console/alerts""#));
    let session = done.set_cookie("granulo_console").expect("session cookie");
    c.cookie = session.split(';').next().unwrap_or("").to_owned();
    c.get("/console/board").await.ok(200);
    // Next time: the code page, then the board.
    let signed = Console::sign_in(&app, "director-c", PASSWORD).await;
    signed.get("/console/board").await.ok(200);
}

async fn console_sign_in_opens_a_strict_cookie_session(backend: Backend) {
    let mut app = spawn(backend).await;
    // A role without a second factor: the password opens the session (the two steps are
    // `console_signs_in_with_a_second_factor`).
    app.create_user("bench-tech", "technologist", None).await;
    let mut console = Console::anonymous(&app);
    let form = console.get("/console/login").await;
    form.ok(200);
    let login_cookie = form.set_cookie("granulo_login").expect("the form's own cookie");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));

    let signed_in = console.try_sign_in("bench-tech", PASSWORD).await;
    assert_eq!(signed_in.status.as_u16(), 303, "{}", signed_in.text);
    assert_eq!(signed_in.location(), "/console/board");
    let cookie = signed_in.set_cookie("granulo_console").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without GRANULO_COOKIE_SECURE: {cookie}"
    );

    let console = Console::admin(&app).await;
    let board = console.get("/console/board").await;
    board.ok(200);
    let csp = board.header("content-security-policy");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(board.header("cache-control"), "no-store");
    // The session is a row in sessions, like a token sign-in, with its end of shift.
    let rows: i64 = {
        use diesel::prelude::*;
        use granulo::store::schema::sessions;
        let mut conn = app.state.pool.get().expect("connection");
        sessions::table
            .filter(sessions::cookie_hash.is_not_null())
            .filter(sessions::expires_at.is_not_null())
            .count()
            .get_result(&mut conn)
            .expect("count")
    };
    assert_eq!(rows, 2, "one row per console sign-in");
    // The assets are served from the binary.
    for asset in [
        "htmx.min.js",
        "htmx-ext-sse.min.js",
        "console.js",
        "console.css",
        "LICENSE-htmx",
    ] {
        let page = console.get(&format!("/console/assets/{asset}")).await;
        assert_eq!(page.status.as_u16(), 200, "{asset}");
    }
}

async fn console_cookie_is_secure_behind_tls(backend: Backend) {
    let app = spawn_with(backend, |s| s.cookie_secure = true).await;
    let mut console = Console::anonymous(&app);
    let form = console.get("/console/login").await;
    assert!(form.set_cookie("granulo_login").is_some_and(|c| c.contains("Secure")));
    let signed_in = console.try_sign_in(ADMIN_USER, ADMIN_PASSWORD).await;
    assert!(signed_in.set_cookie("granulo_console").is_none());
    let cookie = signed_in.set_cookie("__Host-granulo_console").expect("prefixed cookie");
    assert!(cookie.contains("Secure") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Domain="), "__Host- cookies have no domain: {cookie}");
    let console = Console::admin(&app).await;
    console.get("/console/board").await.ok(200);
}

async fn console_pages_need_a_session(backend: Backend) {
    let mut app = spawn(backend).await;
    app.create_user("bench-tech", "technologist", None).await;
    let anonymous = Console::anonymous(&app);
    let page = anonymous.get("/console/board?group=A%2B").await;
    assert_eq!(page.status.as_u16(), 303);
    assert_eq!(
        page.location(),
        "/console/login?next=%2Fconsole%2Fboard%3Fgroup%3DA%252B"
    );
    let page = anonymous.get("/console").await;
    assert_eq!((page.status.as_u16(), page.location()), (303, "/console/board"));

    // A made-up cookie is no session.
    let mut forged = Console::anonymous(&app);
    forged.cookie = "granulo_console=gcs_made-up".to_owned();
    assert_eq!(forged.get("/console/alerts").await.status.as_u16(), 303);

    // Fragments, the stream and posts are refused, not redirected.
    let fragment = anonymous
        .client
        .get(format!("{}/console/board", app.base))
        .header("HX-Request", "true")
        .send()
        .await
        .expect("sent");
    assert_eq!(fragment.status().as_u16(), 401);
    let text = fragment.text().await.expect("body");
    assert!(text.contains("not_signed_in"), "{text}");
    assert_eq!(anonymous.get("/console/events").await.status.as_u16(), 401);
    let post = anonymous.post_raw("/console/logout", &[("csrf", "x")]).await;
    assert!(post.ok(401).contains("not_signed_in"));

    // After sign-in the person is taken back, but never to another site.
    let console = Console::anonymous(&app);
    let form = console.get("/console/login?next=%2Fconsole%2Falerts").await;
    assert!(form.ok(200).contains(r#"name="next" value="/console/alerts""#));
    for (next, lands) in [
        ("/console/alerts", "/console/alerts"),
        ("//evil.example/console", "/console/board"),
        ("https://evil.example/", "/console/board"),
        ("/console\\..\\x", "/console/board"),
    ] {
        let form = console.get("/console/login").await;
        let login = form.set_cookie("granulo_login").expect("cookie");
        let csrf = form.csrf().expect("csrf");
        let res = console
            .client
            .post(format!("{}/console/login", app.base))
            .header("cookie", login.split(';').next().unwrap_or(""))
            .form(&[
                ("username", "bench-tech"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", next),
            ])
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status().as_u16(), 303);
        assert_eq!(res.headers()["location"], lands, "next={next}");
    }
    // Unknown console paths are an HTML 404.
    let console = Console::admin(&app).await;
    assert!(console.get("/console/nowhere").await.ok(404).contains("not_found"));
}

async fn console_sign_in_is_throttled_with_the_api(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.login_max_failures = 3).await;
    app.create_user("night-tech", "technologist", None).await;
    let mut console = Console::anonymous(&app);
    let wrong = console.try_sign_in("night-tech", "not the password").await;
    assert!(wrong.ok(401).contains("invalid_credentials"));
    assert!(wrong.set_cookie("granulo_console").is_none());
    // Failures at the console and at the API count together.
    app.login("night-tech", "still wrong")
        .await
        .problem(401, "invalid_credentials");
    console.try_sign_in("night-tech", "wrong again").await.ok(401);
    let throttled = console.try_sign_in("night-tech", PASSWORD).await;
    assert!(throttled.ok(429).contains("too many failed sign-in attempts"));
    assert!(throttled.header("retry-after").parse::<u64>().is_ok_and(|s| s > 0));
    app.login("night-tech", PASSWORD)
        .await
        .problem(429, "too_many_requests");
}

async fn console_forms_need_the_csrf_token(backend: Backend) {
    let app = spawn(backend).await;
    let console = Console::admin(&app).await;
    let other = Console::admin(&app).await;
    assert_ne!(console.csrf, other.csrf, "each session has its own token");
    for token in ["", "0000", other.csrf.as_str()] {
        let refused = console.post_raw("/console/logout", &[("csrf", token)]).await;
        assert!(refused.ok(403).contains("csrf_token_invalid"), "token {token:?}");
    }
    let refused = console.post_raw("/console/logout", &[]).await;
    assert!(refused.ok(403).contains("csrf_token_invalid"));
    // The session survived every refused post.
    console.get("/console/board").await.ok(200);

    // The sign-in form has its own token, tied to its own cookie.
    let form = console.get("/console/login").await;
    let csrf = form.csrf().expect("csrf");
    let res = console
        .client
        .post(format!("{}/console/login", app.base))
        .form(&[("username", ADMIN_USER), ("password", ADMIN_PASSWORD), ("csrf", &csrf)])
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 403, "no form cookie");
    assert!(res.headers().get_all("set-cookie").iter().all(|c| {
        c.to_str()
            .is_ok_and(|c| !c.starts_with("granulo_console=") && !c.starts_with("__Host-"))
    }));
    assert!(res.text().await.expect("body").contains("csrf_token_invalid"));
}

async fn console_logout_ends_the_session_and_its_stream(backend: Backend) {
    let app = spawn(backend).await;
    let console = Console::admin(&app).await;
    let mut stream = console
        .client
        .get(format!("{}/console/events", app.base))
        .header("cookie", &console.cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    let first = read_events(&mut stream, Duration::from_secs(5), "ready").await;
    assert!(first.contains("event: ready"), "{first}");

    let out = console.post("/console/logout", &[]).await;
    assert_eq!(
        (out.status.as_u16(), out.location()),
        (303, "/console/login?ended=signed_out")
    );
    let cleared = out.set_cookie("granulo_console").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // The old cookie is dead everywhere, and the open stream says so and ends.
    let page = console.get("/console/board").await;
    assert_eq!(page.status.as_u16(), 303);
    assert!(page.location().contains("ended=session_revoked"), "{}", page.location());
    let rest = read_events(&mut stream, Duration::from_secs(8), "signed-out").await;
    assert!(rest.contains("event: signed-out"), "{rest}");
    let ended = tokio_timeout(Duration::from_secs(5), stream.chunk()).await;
    assert!(matches!(ended, Some(Ok(None))), "the stream ends after signed-out");
}

async fn tokio_timeout<F: std::future::Future>(d: Duration, f: F) -> Option<F::Output> {
    actix_rt::time::timeout(d, f).await.ok()
}

/// Read a stream until `until` appears or `within` passes; returns what was read.
async fn read_events(stream: &mut reqwest::Response, within: Duration, until: &str) -> String {
    let deadline = std::time::Instant::now() + within;
    let mut seen = String::new();
    while !seen.contains(until) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio_timeout(left, stream.chunk()).await {
            Some(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    seen
}

async fn console_refuses_hospital_accounts(backend: Backend) {
    let mut app = spawn(backend).await;
    let hospital = app.create_hospital("WARD").await;
    app.create_user("ward-clerk", "hospital", Some(hospital)).await;
    let mut console = Console::anonymous(&app);
    let refused = console.try_sign_in("ward-clerk", PASSWORD).await;
    let html = refused.ok(403);
    assert!(html.contains("the console is for blood-bank staff"), "{html}");
    assert!(html.contains("forbidden"));
    assert!(
        refused.set_cookie("granulo_console").is_none(),
        "no session for a hospital account"
    );
    // The right password still counts as a success for the throttle: no lock-out by refusals.
    for _ in 0..6 {
        console.try_sign_in("ward-clerk", PASSWORD).await.ok(403);
    }
}

async fn console_sessions_end_on_deactivation_and_at_end_of_shift(backend: Backend) {
    let mut app = spawn(backend).await;
    let (tech, name) = Console::as_role(&mut app, "technologist").await;
    tech.get("/console/board").await.ok(200);
    // End of shift: the session's end passes.
    {
        use diesel::prelude::*;
        use granulo::store::schema::sessions;
        let mut conn = app.state.pool.get().expect("connection");
        diesel::update(sessions::table.filter(sessions::cookie_hash.is_not_null()))
            .set(sessions::expires_at.eq(Some(granulo::store::now() - chrono::TimeDelta::minutes(1))))
            .execute(&mut conn)
            .expect("update");
    }
    let page = tech.get("/console/board").await;
    assert_eq!(page.status.as_u16(), 303);
    assert!(page.location().contains("ended=session_expired"), "{}", page.location());
    assert!(
        tech.get("/console/login?ended=session_expired")
            .await
            .ok(200)
            .contains("end of its shift")
    );

    // Deactivation by an administrator ends the person's console session at once.
    let tech = Console::sign_in(&app, &name, PASSWORD).await;
    let admin = app.admin_token().await;
    let users = app.get("/api/v1/users", Some(&admin)).await;
    let id = users.ok(200)["items"]
        .as_array()
        .and_then(|items| items.iter().find(|u| u["username"] == name.as_str()))
        .and_then(|u| u["id"].as_i64())
        .expect("the technologist");
    app.patch(&format!("/api/v1/users/{id}"), Some(&admin), &json!({"active": false}))
        .await
        .ok(200);
    let page = tech.get("/console/board").await;
    assert_eq!(page.status.as_u16(), 303, "deactivation revokes the person's sessions");
    assert!(page.location().contains("ended=session_revoked"), "{}", page.location());
    let mut again = Console::anonymous(&app);
    assert!(
        again
            .try_sign_in(&name, PASSWORD)
            .await
            .ok(401)
            .contains("account_inactive")
    );
}

async fn console_cookies_and_tokens_do_not_cross(backend: Backend) {
    let mut app = spawn(backend).await;
    let console = Console::admin(&app).await;
    let me = app
        .send(app.client.get(app.url("/api/v1/me")).header("cookie", &console.cookie))
        .await;
    me.problem(401, "missing_token");
    let token = app.admin_token().await;
    let page = app
        .client
        .get(app.url("/console/board"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status().as_u16(), 303, "a bearer token is no console session");
}

async fn console_stream_reports_changes(backend: Backend) {
    let mut app = spawn(backend).await;
    let console = Console::admin(&app).await;
    let mut stream = console
        .client
        .get(format!("{}/console/events", app.base))
        .header("cookie", &console.cookie)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    read_events(&mut stream, Duration::from_secs(5), "ready").await;
    let tech = app.token_for("technologist").await;
    ready_unit(&app, &tech, "O", "negative").await;
    let seen = read_events(&mut stream, Duration::from_secs(8), "event: board").await;
    assert!(seen.contains("event: board\ndata: board"), "{seen}");
    assert!(!seen.contains("O"), "events carry no data: {seen}");
}
