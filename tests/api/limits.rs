//! Quotas and rate limits over HTTP, on both backends: the per-account and per-address token
//! buckets in front of every surface, their share across two instances on one database, the cap
//! on open event streams, and the per-hospital daily request cap.

use std::time::Duration;

use serde_json::json;

use crate::bank::bank_with;
use crate::both_backends;
use crate::console_support::*;
use crate::fhir_support as fhir;
use crate::helpers::*;

both_backends!(
    an_account_over_its_rate_is_answered_429_on_every_surface,
    an_address_over_its_rate_is_answered_429_sign_in_included,
    two_instances_on_one_database_share_one_rate_limit,
    open_event_streams_are_capped_per_account_across_instances,
    hospitals_are_capped_per_day_on_every_way_to_place_a_request,
);

fn retry_after(r: &Reply) -> u64 {
    r.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds")
}

/// Send `GET /api/v1/me` `n` times as `token`; how many were answered 200 before the first 429.
async fn until_limited(app: &Http, token: &str, n: usize) -> (usize, Option<Reply>) {
    for i in 0..n {
        let r = app.get("/api/v1/me", Some(token)).await;
        if r.status.as_u16() == 429 {
            return (i, Some(r));
        }
        r.ok(200);
    }
    (n, None)
}

async fn an_account_over_its_rate_is_answered_429_on_every_surface(backend: Backend) {
    // 20 a minute, a burst of 20: nothing refills noticeably during the test.
    let mut app = spawn_with(backend, |s| {
        s.rate_limit_per_account = 20;
        s.rate_limit_burst_seconds = 60;
    })
    .await;
    let admin = app.admin_token().await;
    let other = app.token_for("technologist").await; // one of admin's 20
    let (passed, refused) = until_limited(&app, &admin, 40).await;
    // The burst, less the request that made the technologist (a slow machine may refill one).
    assert!((19..=20).contains(&passed), "{passed}");
    let refused = refused.expect("refused past the burst");
    refused.problem(429, "rate_limited");
    let wait = retry_after(&refused);
    assert!((1..=3).contains(&wait), "one request every 3 s: {wait}");
    // Another account has its own bucket; a bad token is not charged to anyone (the handler
    // answers it 401).
    app.get("/api/v1/me", Some(&other)).await.ok(200);
    app.get("/api/v1/me", Some("not-a-token"))
        .await
        .problem(401, "invalid_token");
    // FHIR answers an OperationOutcome, with the same code and Retry-After.
    let r = fhir::get(&app, "/fhir/R5/Patient", Some(&admin)).await;
    r.outcome(429, "rate_limited");
    assert!(retry_after(&r) >= 1);
    // The console answers a page; its session is an account of its own.
    let console = Console::admin(&app).await;
    // Signing in loaded the board once.
    let mut loads = 1;
    let page = loop {
        let page = console.get("/console/board").await;
        if page.status.as_u16() != 200 || loads > 40 {
            break page;
        }
        loads += 1;
    };
    assert!((20..=21).contains(&loads), "{loads} pages before the limit");
    assert_eq!(page.status.as_u16(), 429, "{}", page.text);
    assert!(page.text.contains("rate_limited"), "{}", page.text);
    assert!(page.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1));
    // Health probes are never limited.
    app.get("/healthz", None).await.ok(200);
}

async fn an_address_over_its_rate_is_answered_429_sign_in_included(backend: Backend) {
    let app = spawn_with(backend, |s| {
        s.rate_limit_per_address = 5;
        s.rate_limit_burst_seconds = 60;
        s.trust_forwarded_for = true;
    })
    .await;
    let attempt = |n: usize, from: &'static str| {
        let req = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("X-Forwarded-For", from)
            .json(&json!({"username": format!("nobody-{n}"), "password": "wrong password here"}));
        app.send(req)
    };
    for n in 0..5 {
        attempt(n, "203.0.113.9").await.problem(401, "invalid_credentials");
    }
    // Not the sign-in throttle (each username failed once): the address's rate.
    let refused = attempt(5, "203.0.113.9").await;
    refused.problem(429, "rate_limited");
    assert!(retry_after(&refused) >= 1);
    // Another address has its own bucket, and probes pass.
    attempt(6, "198.51.100.4").await.problem(401, "invalid_credentials");
    for _ in 0..10 {
        app.get("/readyz", None).await.ok(200);
    }
}

async fn two_instances_on_one_database_share_one_rate_limit(backend: Backend) {
    let limit = |s: &mut granulo::config::Settings| {
        s.rate_limit_per_account = 24;
        s.rate_limit_burst_seconds = 60;
        s.instance_heartbeat_secs = 1;
    };
    let mut a = spawn_with(backend, limit).await;
    let b = spawn_on(backend, a.db.clone(), limit).await;
    // The first instance learns of the second at its next heartbeat.
    for _ in 0..50 {
        if a.state.limits.instances() == 2 && b.state.limits.instances() == 2 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((a.state.limits.instances(), b.state.limits.instances()), (2, 2));
    let token = a.admin_token().await;
    // A load balancer alternating between the two: together they allow the configured burst of
    // 24 (12 each), not 24 each.
    let mut passed = 0;
    for i in 0..48 {
        let app = if i % 2 == 0 { &a.http } else { &b.http };
        let r = app.get("/api/v1/me", Some(&token)).await;
        match r.status.as_u16() {
            200 => passed += 1,
            _ => {
                r.problem(429, "rate_limited");
            }
        }
    }
    assert!((24..=26).contains(&passed), "{passed} of 48 passed");
    // An instance that stopped heartbeating drops out of the count.
    {
        use diesel::prelude::*;
        use granulo::store::schema::instances;
        let mut conn = a.state.pool.get().expect("connection");
        let long_ago = granulo::store::now() - chrono::TimeDelta::minutes(5);
        diesel::insert_into(instances::table)
            .values((
                instances::id.eq("crashed"),
                instances::started_at.eq(long_ago),
                instances::seen_at.eq(long_ago),
            ))
            .execute(&mut conn)
            .expect("insert");
        let n = granulo::services::limits::heartbeat(&mut conn, &a.state.limits, Duration::from_secs(1))
            .expect("heartbeat");
        assert_eq!(n, 2);
    }
}

/// Open `GET /api/v1/alerts/stream` on `app`; the response is kept open while it lives.
async fn alert_stream(app: &Http, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/alerts/stream"))
        .bearer_auth(token)
        .send()
        .await
        .expect("stream")
}

async fn open_event_streams_are_capped_per_account_across_instances(backend: Backend) {
    let cap = |s: &mut granulo::config::Settings| s.max_streams_per_account = 2;
    let mut app = spawn_with(backend, cap).await;
    let other = spawn_on(backend, app.db.clone(), cap).await;
    let admin = app.admin_token().await;
    let tech = app.token_for("technologist").await;
    let first = alert_stream(&app, &admin).await;
    assert_eq!(first.status().as_u16(), 200);
    // The console's stream counts toward the same account, on the other instance.
    let console = Console::admin(&other).await;
    let events = console
        .client
        .get(format!("{}/console/events", other.base))
        .header("cookie", &console.cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("console stream");
    assert_eq!(events.status().as_u16(), 200);
    // A third, on either instance, is refused with its own code.
    for instance in [&app.http, &other.http] {
        let third = instance
            .send(
                instance
                    .client
                    .get(instance.url("/api/v1/alerts/stream"))
                    .bearer_auth(&admin),
            )
            .await;
        third.problem(429, "too_many_streams");
        let wait = retry_after(&third);
        assert!((1..=30).contains(&wait), "until the first lease could lapse: {wait}");
    }
    let page = console
        .client
        .get(format!("{}/console/events", app.base))
        .header("cookie", &console.cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("answer");
    assert_eq!(page.status().as_u16(), 429);
    // Another account is not affected.
    assert_eq!(alert_stream(&app, &tech).await.status().as_u16(), 200);
    // Closing a stream frees its place (the server notices at its next write, within 2 s).
    drop(first);
    let mut reopened = None;
    for _ in 0..40 {
        actix_rt::time::sleep(Duration::from_millis(250)).await;
        let again = alert_stream(&other, &admin).await;
        if again.status().as_u16() == 200 {
            reopened = Some(again);
            break;
        }
    }
    assert!(reopened.is_some(), "the closed stream's place was given back");
    drop(events);
}

async fn hospitals_are_capped_per_day_on_every_way_to_place_a_request(backend: Backend) {
    let mut b = bank_with(backend, |s| s.timezone = chrono_tz::Pacific::Auckland).await;
    let mut policy = b.app.get("/api/v1/policy", Some(&b.director)).await.ok(200).clone();
    policy["security"]["hospital_daily_request_cap"] = json!(2);
    b.app.put("/api/v1/policy", Some(&b.director), &policy).await.ok(200);
    let patient = b.patient(&patient_body("CAP-1", "O", "positive", "male")).await;
    let body = request_body(patient, 1);
    let keyed = |key: &'static str| {
        b.app
            .client
            .post(b.app.url("/api/v1/requests"))
            .bearer_auth(&b.hosp)
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let first = b.app.send(keyed("cap-1")).await;
    let first_id = first.ok(201)["id"].clone();
    // One through FHIR: the same count.
    fhir::post(
        &b.app,
        "/fhir/R5/ServiceRequest",
        Some(&b.hosp),
        &crate::fhir_service_request::order(patient, 1, Some("CAP-ORD-1")),
        &[],
    )
    .await
    .resource(201, "ServiceRequest");
    // The third of the day is refused, on both surfaces, until the facility's next day.
    let refused = b.app.post("/api/v1/requests", Some(&b.hosp), &body).await;
    refused.problem(429, "hospital_daily_cap_reached");
    let (_, to_midnight) = granulo::domain::rate::facility_day(chrono::Utc::now(), chrono_tz::Pacific::Auckland);
    let wait = retry_after(&refused);
    assert!(wait.abs_diff(to_midnight) <= 5, "{wait} vs {to_midnight}");
    let r = fhir::post(
        &b.app,
        "/fhir/R5/ServiceRequest",
        Some(&b.hosp),
        &crate::fhir_service_request::order(patient, 1, Some("CAP-ORD-2")),
        &[],
    )
    .await;
    r.outcome(429, "hospital_daily_cap_reached");
    // A retry of an accepted request is answered as before, and not counted again.
    let again = b.app.send(keyed("cap-1")).await;
    assert_eq!(again.ok(201)["id"], first_id);
    // Nothing was written for the refused ones.
    let list = b.app.get("/api/v1/requests", Some(&b.hosp)).await;
    assert_eq!(list.ok(200)["items"].as_array().map(Vec::len), Some(2));
    // The blood bank's staff can still place one for the hospital (a phone order).
    b.app.post("/api/v1/requests", Some(&b.tech), &body).await.ok(201);
    // Another hospital has its own count.
    let (_, other_hosp) = hospital(&mut b.app).await;
    let theirs = b
        .app
        .post(
            "/api/v1/patients",
            Some(&other_hosp),
            &patient_body("CAP-2", "A", "positive", "female"),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("patient");
    b.app
        .post("/api/v1/requests", Some(&other_hosp), &request_body(theirs, 1))
        .await
        .ok(201);
}
