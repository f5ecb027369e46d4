//! The alert scan: thresholds with a controlled clock, the expiry sweep, resolution, one episode
//! per condition across concurrent scans, the cron command and the jobs view, the commit-ordered
//! event cursor, and alerts written by the earlier release migrating into episodes.

use chrono::{DateTime, TimeDelta, Utc};
use granulo::domain::alerts::{AlertKind, AlertSeverity};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    expiry_thresholds_sweep_and_resolution,
    requests_allocations_and_collections_are_watched,
    concurrent_scans_raise_each_alert_once,
    cron_command_and_jobs_view,
    webhooks_are_signed_retried_and_scoped,
    dashboards_follow_a_live_stream,
    a_scheduler_tick_survives_a_database_outage,
    the_event_cursor_follows_commit_order,
    alerts_of_an_earlier_release_become_episodes,
);

fn scan_at(app: &TestApp, now: DateTime<Utc>) -> granulo::jobs::ScanReport {
    let mut conn = app.state.pool.get().expect("conn");
    granulo::jobs::run_once(&mut conn, "test", now)
        .expect("scan runs")
        .expect("lease free")
}

async fn alerts(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    app.get(&format!("/api/v1/alerts?{query}"), Some(token)).await.ok(200)["items"]
        .as_array()
        .expect("items")
        .clone()
}

/// A supplier unit released to `available` with every required marker negative.
async fn available_unit(app: &mut TestApp, tech: &str, din: &str) -> i64 {
    let unit = supplier_unit(app, tech, din, now_minute() - TimeDelta::hours(1)).await;
    release_tested(app, tech, unit).await;
    unit
}

/// A supplier unit, O negative, collected at `collected` (it expires 24 h later).
pub(crate) async fn supplier_unit(app: &TestApp, tech: &str, din: &str, collected: DateTime<Utc>) -> i64 {
    app.post(
        "/api/v1/units",
        Some(tech),
        &json!({"source": {"type": "external", "supplier": "X", "din": din, "abo": "O", "rhd": "negative",
                           "collected_at": ts(collected), "cmv": "negative"},
                "product_code": "E9999V00", "volume_ml": 250, "granulocyte_count": 5e10}),
    )
    .await
    .ok(201)["id"]
        .as_i64()
        .expect("unit")
}

async fn expiry_thresholds_sweep_and_resolution(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let collected = now_minute() - TimeDelta::hours(1);
    let unit = supplier_unit(&app, &tech, "C111126000001", collected).await;
    let expires = collected + TimeDelta::hours(24);

    let stages = |r: granulo::jobs::ScanReport| (r.raised, r.escalated);
    assert_eq!(
        stages(scan_at(&app, expires - TimeDelta::hours(8) - TimeDelta::minutes(1))),
        (0, 0)
    );
    assert_eq!(stages(scan_at(&app, expires - TimeDelta::hours(8))), (1, 0));
    assert_eq!(
        stages(scan_at(&app, expires - TimeDelta::hours(8))),
        (0, 0),
        "once per episode"
    );
    assert_eq!(stages(scan_at(&app, expires - TimeDelta::hours(3))), (0, 1));
    assert_eq!(stages(scan_at(&app, expires - TimeDelta::minutes(90))), (0, 1));
    assert_eq!(stages(scan_at(&app, expires - TimeDelta::minutes(60))), (0, 0));
    let open = alerts(&app, &tech, "status=open&kind=unit.expiring").await;
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["severity"], "urgent");
    assert_eq!(open[0]["threshold_hours"], 2);
    assert_eq!(open[0]["occurrences"], 3);
    assert_eq!(open[0]["episode"], 1);
    assert_eq!(open[0]["escalated_at"], ts(expires - TimeDelta::minutes(90)));
    assert_eq!(open[0]["closed_at"], Value::Null);

    // Expiry: the unit is moved to `expired` (audited), alerted, and the expiring alerts resolve.
    let report = scan_at(&app, expires);
    assert_eq!((report.expired, report.raised, report.resolved), (1, 1, 1));
    let u = app.get(&format!("/api/v1/units/{unit}"), Some(&tech)).await;
    assert_eq!(u.ok(200)["status"], "expired");
    assert_eq!(u.body["status_reason"], "expired on the shelf");
    let admin = app.admin_token().await;
    let trail = app
        .get(
            &format!("/api/v1/audit?entity_type=unit&entity_id={unit}"),
            Some(&admin),
        )
        .await;
    assert_eq!(trail.ok(200)["items"][0]["action"], "unit.expire");
    assert_eq!(trail.body["items"][0]["actor"]["kind"], "system");
    let resolved = alerts(&app, &tech, "status=resolved").await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["closed_at"], resolved[0]["resolved_at"]);
    assert_eq!(scan_at(&app, expires + TimeDelta::minutes(5)).expired, 0);
    // Discarded: the expired alert resolves too.
    app.post(
        &format!("/api/v1/units/{unit}/discard"),
        Some(&tech),
        &json!({"reason": "expired"}),
    )
    .await
    .ok(200);
    assert_eq!(scan_at(&app, expires + TimeDelta::minutes(10)).resolved, 1);
    assert_eq!(alerts(&app, &tech, "status=open").await, Vec::<Value>::new());
    // An issued unit is out of the bank: no expiry alerts at all.
    app.get("/api/v1/alerts?status=closed", Some(&tech))
        .await
        .problem(400, "validation_failed");
}

async fn requests_allocations_and_collections_are_watched(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let hosp = app.token_for("hospital").await;
    let now = now_minute();
    let patient = app
        .post(
            "/api/v1/patients",
            Some(&hosp),
            &json!({"mrn": "AL-1", "given_name": "A", "family_name": "L", "date_of_birth": "1980-01-01", "sex": "male",
                    "weight_kg": 70, "abo": "O", "rhd": "negative", "cmv": "negative"}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("patient");
    let request = app
        .post(
            "/api/v1/requests",
            Some(&hosp),
            &json!({"patient_id": patient, "units_requested": 1, "needed_by": ts(now + TimeDelta::hours(6)), "priority": "asap",
                    "indication": {"anc_per_ul": 100, "infection": "sepsis", "refractory_hours": 72}}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("request");
    assert_eq!(scan_at(&app, now).raised, 1);
    assert_eq!(alerts(&app, &tech, "kind=request.unallocated").await.len(), 1);

    // Allocate with a sample that will have expired by the planned time (drawn 70 h ago).
    let sample = app
        .post(
            &format!("/api/v1/patients/{patient}/samples"),
            Some(&hosp),
            &json!({"drawn_at": ts(now - TimeDelta::hours(70)), "transfused_or_pregnant_within_3_months": true}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("sample");
    let unit = supplier_unit(&app, &tech, "C111126000002", now - TimeDelta::hours(1)).await;
    app.post(
        &format!("/api/v1/units/{unit}/irradiation"),
        Some(&tech),
        &json!({"dose_gy": 25}),
    )
    .await
    .ok(200);
    let director = app.token_for("medical_director").await;
    app.post(
        &format!("/api/v1/units/{unit}/release"),
        Some(&director),
        &json!({"emergency": true, "request_id": request, "physician": {"name": "Dr A", "acknowledged_at": ts(now)}}),
    )
    .await
    .ok(200);
    let allocation = app
        .post(
            &format!("/api/v1/requests/{request}/allocations"),
            Some(&tech),
            &json!({"unit_id": unit}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("allocation");
    app.post(
        "/api/v1/crossmatches",
        Some(&tech),
        &json!({"unit_id": unit, "sample_id": sample, "result": "compatible", "method": "iat"}),
    )
    .await
    .ok(201);
    let report = scan_at(&app, now);
    assert_eq!(
        (report.raised, report.resolved),
        (1, 1),
        "sample alert raised, unallocated resolved"
    );
    assert_eq!(alerts(&app, &tech, "status=open&kind=sample.expiring").await.len(), 1);

    // Issued, and no outcome a day later.
    let new_sample = app
        .post(
            &format!("/api/v1/patients/{patient}/samples"),
            Some(&hosp),
            &json!({"drawn_at": ts(now), "transfused_or_pregnant_within_3_months": true}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("sample");
    app.post(
        "/api/v1/crossmatches",
        Some(&tech),
        &json!({"unit_id": unit, "sample_id": new_sample, "result": "compatible", "method": "iat"}),
    )
    .await
    .ok(201);
    let din = app.get(&format!("/api/v1/units/{unit}"), Some(&tech)).await.ok(200)["din"].clone();
    app.post(
        &format!("/api/v1/allocations/{allocation}/issue"),
        Some(&tech),
        &json!({"scanned_din": din}),
    )
    .await
    .ok(200);
    assert_eq!(scan_at(&app, now + TimeDelta::hours(23)).raised, 0);
    // A day on: no outcome recorded, and the emergency release's results are overdue.
    assert_eq!(scan_at(&app, now + TimeDelta::hours(25)).raised, 2);
    assert_eq!(
        alerts(&app, &tech, "status=open&kind=transfusion.outcome_missing")
            .await
            .len(),
        1
    );
    let overdue = alerts(&app, &tech, "status=open&kind=task.overdue").await;
    assert_eq!(overdue.len(), 1);
    let tasks = app
        .get(
            "/api/v1/tasks?kind=emergency_release_follow_up&status=open",
            Some(&tech),
        )
        .await;
    let task = tasks.ok(200)["items"][0].clone();
    assert_eq!(overdue[0]["details"]["task"], task["id"], "{}", overdue[0]);
    assert_eq!(task["subject_id"], unit);
    assert_eq!(
        alerts(&app, &tech, "status=open&kind=sample.expiring").await.len(),
        0,
        "resolved"
    );
    // A positive result after the emergency release names the allocation and the recipient.
    app.post(
        &format!("/api/v1/units/{unit}/tests"),
        Some(&tech),
        &json!({"marker": "hiv_nat", "result": "positive"}),
    )
    .await
    .ok(200);
    let positive = alerts(&app, &tech, "kind=unit.positive_result_after_release").await;
    assert_eq!(positive.len(), 1);
    assert_eq!(positive[0]["severity"], "urgent");
    assert!(
        positive[0]["message"].as_str().is_some_and(|m| m.contains("MRN AL-1")),
        "{}",
        positive[0]
    );
    assert_eq!(positive[0]["details"]["recipient"]["mrn"], "AL-1");
    assert_eq!(positive[0]["details"]["allocation"]["id"], allocation);

    // A collection in 10 h with no stimulation; then its donor is deferred.
    let donor = app.register_donor(&tech, &donor_body("Al", "O", "negative")).await;
    let device = app.create_device(&tech, "Optia A").await;
    let collection = app.book(&tech, donor, device, now + TimeDelta::hours(10)).await.ok(201)["id"]
        .as_i64()
        .expect("collection");
    scan_at(&app, now);
    assert_eq!(
        alerts(&app, &tech, "status=open&kind=collection.unstimulated")
            .await
            .len(),
        1
    );
    // G-CSF given now: the unstimulated alert resolves; if the collection has not started
    // 24 h after the dose, the stimulation's window was missed.
    app.post(
        &format!("/api/v1/donors/{donor}/stimulations"),
        Some(&tech),
        &json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": ts(now), "collection_id": collection}),
    )
    .await
    .ok(201);
    let report = scan_at(&app, now);
    assert!(report.resolved >= 1, "{report:?}");
    assert_eq!(
        alerts(&app, &tech, "status=open&kind=collection.unstimulated")
            .await
            .len(),
        0
    );
    assert_eq!(scan_at(&app, now + TimeDelta::hours(24)).raised, 0);
    scan_at(&app, now + TimeDelta::hours(24) + TimeDelta::minutes(1));
    assert_eq!(
        alerts(&app, &tech, "status=open&kind=stimulation.window_missed")
            .await
            .len(),
        1
    );
    app.post(
        &format!("/api/v1/donors/{donor}/deferrals"),
        Some(&tech),
        &json!({"reason": "fever", "permanent": false, "until": ts(now + TimeDelta::days(3))}),
    )
    .await
    .ok(201);
    scan_at(&app, now);
    let inel = alerts(&app, &tech, "status=open&kind=collection.donor_ineligible").await;
    assert_eq!(inel.len(), 1);
    assert_eq!(inel[0]["entity_id"], collection.to_string());
    // Aborted: both collection alerts resolve.
    app.post(
        &format!("/api/v1/collections/{collection}/abort"),
        Some(&tech),
        &json!({"reason": "donor ill"}),
    )
    .await
    .ok(200);
    scan_at(&app, now);
    assert_eq!(
        alerts(&app, &tech, "status=open&kind=collection.unstimulated")
            .await
            .len(),
        0
    );
    assert_eq!(
        alerts(&app, &tech, "status=open&kind=collection.donor_ineligible")
            .await
            .len(),
        0
    );
}

async fn concurrent_scans_raise_each_alert_once(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let collected = now_minute() - TimeDelta::hours(20);
    for i in 0..10 {
        supplier_unit(&app, &tech, &format!("C1111260001{i:02}"), collected).await;
    }
    // Four scans at once, without the lease (as if two instances ignored it): the index of open
    // episodes alone keeps one alert per unit, and each escalates once.
    let scans = |now: DateTime<Utc>| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = app.state.pool.clone();
                std::thread::spawn(move || {
                    let mut conn = pool.get().expect("conn");
                    granulo::store::write_tx(&mut conn, |c| {
                        granulo::jobs::scan(c, now, &granulo::domain::policy::Policy::default())
                    })
                    .expect("scan")
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .fold((0, 0), |(r, e), s| (r + s.raised, e + s.escalated))
    };
    // 4 h left of 24: the 4 h threshold passed, one alert per unit.
    assert_eq!(scans(Utc::now()), (10, 0));
    assert_eq!(alerts(&app, &tech, "limit=500").await.len(), 10);
    // 1 h 59 min left: each escalates to the 2 h threshold, once.
    assert_eq!(scans(Utc::now() + TimeDelta::hours(2) + TimeDelta::minutes(1)), (0, 10));
    let all = alerts(&app, &tech, "limit=500").await;
    assert_eq!(all.len(), 10);
    assert!(
        all.iter().all(|a| a["severity"] == "urgent" && a["occurrences"] == 2),
        "{all:#?}"
    );
    // With the lease, a second runner skips while the first holds it.
    let mut conn = app.state.pool.get().expect("conn");
    let at = granulo::store::now();
    let held = granulo::store::write_tx(&mut conn, |c| {
        granulo::store::jobs::acquire(c, granulo::jobs::ALERT_SCAN, "other", at, at + TimeDelta::minutes(5))
    })
    .expect("acquire");
    assert!(held);
    assert!(
        granulo::jobs::run_once(&mut conn, "me", Utc::now())
            .expect("runs")
            .is_none()
    );
}

async fn cron_command_and_jobs_view(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    supplier_unit(&app, &tech, "C111126000201", now_minute() - TimeDelta::hours(23)).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_granulo"))
        .args(["alerts", "run"])
        .env("GRANULO_DATABASE_URL", &app.db.url)
        // The key the server seals with: deliveries open the secrets with it.
        .env("GRANULO_SECRETS_KEY", SECRETS_KEY)
        .env("GRANULO_LOG", "warn")
        .output()
        .expect("run granulo");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 raised, 0 escalated"), "one alert for the unit: {text}");
    let jobs = app.get("/api/v1/jobs", Some(&tech)).await;
    let job = jobs.ok(200)["items"][0].clone();
    assert_eq!(job["name"], "alert_scan");
    assert_eq!(job["runs"], 1);
    assert_eq!(job["last_raised"], 1);
    assert_eq!(job["last_escalated"], 0);
    assert_eq!(job["holder"], Value::Null);
    assert_eq!(job["last_error"], Value::Null);
    let hospital = app.token_for("hospital").await;
    app.get("/api/v1/jobs", Some(&hospital)).await.problem(403, "forbidden");
    app.get("/api/v1/alerts", Some(&hospital))
        .await
        .problem(403, "forbidden");
}

/// (signature, timestamp, event, body) of each delivery received.
pub(crate) type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, String)>>>;

/// A local webhook receiver: records every delivery; answers 500 to the first `fail_first`.
pub(crate) struct Receiver {
    pub url: String,
    pub got: Received,
}

pub(crate) async fn receiver(fail_first: usize) -> Receiver {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let got: Received = Default::default();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, s) = (got.clone(), seen.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(move || {
        let (g, s) = (g.clone(), s.clone());
        App::new().route(
            "/hook",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    if s.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                        return HttpResponse::InternalServerError().finish();
                    }
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    g.lock().expect("lock").push((
                        header("x-granulo-signature"),
                        header("x-granulo-timestamp"),
                        header("x-granulo-event"),
                        String::from_utf8_lossy(&body).to_string(),
                    ));
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    actix_rt::spawn(server);
    Receiver {
        url: format!("http://127.0.0.1:{port}/hook"),
        got,
    }
}

fn hmac_hex(secret: &str, body: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(app: &TestApp, now: DateTime<Utc>) -> granulo::services::webhooks::DeliveryReport {
    deliver_webhooks(app, now).await.expect("delivery runs")
}

async fn webhooks_are_signed_retried_and_scoped(backend: Backend) {
    let mut app = spawn_with(backend, allow_local_webhooks).await;
    let admin = app.admin_token().await;
    let tech = app.token_for("technologist").await;
    let hosp = app.token_for("hospital").await;
    let hospital_id = app.get("/api/v1/me", Some(&hosp)).await.ok(200)["hospital_id"]
        .as_i64()
        .expect("hospital");
    let bank = receiver(1).await;
    let ward = receiver(0).await;
    const BANK_SECRET: &str = "bank-secret-0123456789";
    const WARD_SECRET: &str = "ward-secret-0123456789";
    let sub = app
        .post(
            "/api/v1/webhooks",
            Some(&admin),
            &json!({"url": bank.url, "events": ["unit.quarantined", "request.unallocated"], "secret": BANK_SECRET}),
        )
        .await;
    let bank_id = sub.ok(201)["id"].as_i64().expect("id");
    assert!(!sub.text.contains(BANK_SECRET), "the secret is never shown");
    app.post(
        "/api/v1/webhooks",
        Some(&admin),
        &json!({"url": ward.url, "events": ["*"], "secret": WARD_SECRET, "hospital_id": hospital_id}),
    )
    .await
    .ok(201);
    for bad in [
        json!({"url": "ftp://x", "events": ["*"], "secret": BANK_SECRET}),
        json!({"url": bank.url, "events": ["unit.exploded"], "secret": BANK_SECRET}),
        json!({"url": bank.url, "events": [], "secret": BANK_SECRET}),
        json!({"url": bank.url, "events": ["*"], "secret": "short"}),
    ] {
        app.post("/api/v1/webhooks", Some(&admin), &bad)
            .await
            .problem(400, "validation_failed");
    }
    app.post(
        "/api/v1/webhooks",
        Some(&tech),
        &json!({"url": bank.url, "events": ["*"], "secret": BANK_SECRET}),
    )
    .await
    .problem(403, "forbidden");

    // A bank-side event (a unit in the bank): only the bank's subscription gets it.
    let unit = available_unit(&mut app, &tech, "C111126000301").await;
    app.post(
        &format!("/api/v1/units/{unit}/storage-readings"),
        Some(&tech),
        &json!({"temperature_c": 30}),
    )
    .await
    .ok(201);
    // The receiver fails the first attempt; the delivery is retried after the backoff.
    let first = deliver(&app, Utc::now()).await;
    assert_eq!((first.delivered, first.failed), (0, 1));
    let log = app
        .get(&format!("/api/v1/webhooks/{bank_id}/deliveries"), Some(&admin))
        .await;
    assert_eq!(log.ok(200)["items"][0]["status"], "pending");
    assert_eq!(log.body["items"][0]["last_status_code"], 500);
    assert_eq!(
        deliver(&app, Utc::now()).await.delivered,
        0,
        "not due before the backoff"
    );
    let second = deliver(&app, Utc::now() + TimeDelta::seconds(31)).await;
    assert_eq!((second.delivered, second.failed), (1, 0));
    let got = bank.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    let (signature, timestamp, event, body) = &got[0];
    assert_eq!(signature, &hmac_hex(BANK_SECRET, body), "signature verifies");
    assert_eq!(event, "unit.quarantined");
    let parsed: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(parsed["alert"]["kind"], "unit.quarantined");
    assert_eq!(parsed["transition"], "raised");
    assert_eq!(parsed["alert"]["episode"], 1);
    assert_eq!(log.body["items"][0]["transition"], "raised");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(parsed["sent_at"].as_str().expect("sent_at")).expect("time"),
        chrono::DateTime::parse_from_rfc3339(timestamp).expect("header time"),
        "the signed body carries the timestamp header's time"
    );
    assert!(ward.got.lock().expect("lock").is_empty(), "no cross-hospital leak");

    // A hospital event: the ward's subscription gets it, signed with its own secret.
    let patient = app
        .post(
            "/api/v1/patients",
            Some(&hosp),
            &json!({"mrn": "WH-1", "given_name": "W", "family_name": "H", "date_of_birth": "1980-01-01", "sex": "male",
                    "weight_kg": 70, "abo": "O", "rhd": "negative", "cmv": "negative"}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("patient");
    app.post(
        "/api/v1/requests",
        Some(&hosp),
        &json!({"patient_id": patient, "units_requested": 1, "needed_by": ts(now_minute() + TimeDelta::hours(2)), "priority": "stat",
                "indication": {"anc_per_ul": 100, "infection": "sepsis", "refractory_hours": 72}}),
    )
    .await
    .ok(201);
    scan_at(&app, Utc::now());
    let report = deliver(&app, Utc::now()).await;
    assert_eq!(report.delivered, 2, "to the ward and to the bank");
    let ward_got = ward.got.lock().expect("lock").clone();
    assert_eq!(ward_got.len(), 1);
    assert_eq!(ward_got[0].2, "request.unallocated");
    assert_eq!(ward_got[0].0, hmac_hex(WARD_SECRET, &ward_got[0].3));
    assert_eq!(bank.got.lock().expect("lock").len(), 2);
    let list = app.get("/api/v1/webhooks", Some(&admin)).await;
    assert_eq!(list.ok(200)["items"].as_array().map(Vec::len), Some(2));
}

async fn dashboards_follow_a_live_stream(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let unit = available_unit(&mut app, &tech, "C111126000401").await;
    app.post(
        &format!("/api/v1/units/{unit}/storage-readings"),
        Some(&tech),
        &json!({"temperature_c": 15}),
    )
    .await
    .ok(201);
    let mut res = app
        .client
        .get(app.url("/api/v1/alerts/stream"))
        .bearer_auth(&tech)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let chunk = actix_rt::time::timeout(std::time::Duration::from_secs(10), res.chunk())
        .await
        .expect("a chunk in time")
        .expect("read")
        .expect("data");
    let text = String::from_utf8_lossy(&chunk).to_string();
    assert!(
        text.contains("event: unit.quarantined") && text.contains("id: 1"),
        "{text}"
    );
    let hosp = app.token_for("hospital").await;
    app.get("/api/v1/alerts/stream", Some(&hosp))
        .await
        .problem(403, "forbidden");
}

async fn a_scheduler_tick_survives_a_database_outage(backend: Backend) {
    let app = spawn(backend).await;
    // A pool whose database is unreachable (nothing listens on port 1).
    let down = granulo::config::DatabaseTarget::parse("postgres://postgres@127.0.0.1:1/nowhere").expect("url");
    let broken = diesel::r2d2::Pool::builder()
        .connection_timeout(std::time::Duration::from_millis(500))
        .build_unchecked(granulo::store::Manager::new(down));
    let client = granulo::services::webhooks::Outbound::new(&app.state.settings).expect("client");
    let failed = granulo::jobs::tick(&broken, &client, &app.state.secrets, "test").await;
    assert!(
        failed.scan.is_err() && failed.deliveries.is_err(),
        "errors are reported, not panicked on"
    );
    // The next tick, with the database back, carries on.
    let ok = granulo::jobs::tick(&app.state.pool, &client, &app.state.secrets, "test").await;
    assert!(ok.scan.expect("scan").is_some());
    assert_eq!(ok.deliveries.expect("deliveries").delivered, 0);
}

/// The cursor the stream follows: event numbers are assigned in commit order. Two transactions
/// raise an alert each; the first (lower alert and event row ids) commits last. On PostgreSQL
/// the second commits while the first is open and is readable at once; the first then gets the
/// next number, after it, so a reader resuming after the second still gets it. On SQLite the
/// second waits for the first (writers are serialised) and the numbers follow that order.
async fn the_event_cursor_follows_commit_order(backend: Backend) {
    use granulo::services::alerts::Raise;
    use granulo::store::alerts::{events_after, last_event_seq};
    use std::sync::mpsc;
    use std::time::Duration;
    let app = spawn(backend).await;
    let pool = app.state.pool.clone();
    let raise = |entity: i64, opened: mpsc::Sender<()>, commit: Option<mpsc::Receiver<()>>| {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut conn = pool.get().expect("conn");
            granulo::store::write_tx(&mut conn, |c| {
                granulo::services::alerts::raise(
                    c,
                    Raise {
                        kind: AlertKind::UnitQuarantined,
                        severity: AlertSeverity::Urgent,
                        entity_id: entity,
                        condition_key: format!("unit.quarantined:{entity}:cursor"),
                        message: "quarantined".to_owned(),
                        details: json!({}),
                        threshold_hours: None,
                        at: Utc::now(),
                    },
                )?
                .expect("raised");
                let _ = opened.send(());
                if let Some(commit) = &commit {
                    let _ = commit.recv_timeout(Duration::from_secs(30));
                }
                Ok::<_, granulo::error::ApiError>(())
            })
            .expect("commits");
        })
    };
    let read = |after: i64| {
        let mut conn = app.state.pool.get().expect("conn");
        events_after(&mut conn, after, 100)
            .expect("events")
            .into_iter()
            .map(|(e, a)| (e.seq.expect("numbered"), e.id, a.entity_id))
            .collect::<Vec<_>>()
    };
    let (a_opened, a_opened_rx) = mpsc::channel();
    let (a_commit, a_commit_rx) = mpsc::channel();
    let first = raise(8001, a_opened, Some(a_commit_rx));
    a_opened_rx.recv_timeout(Duration::from_secs(15)).expect("first raised");
    let (b_done, b_done_rx) = mpsc::channel();
    let second = raise(8002, b_done, None);
    if backend == Backend::Postgres {
        b_done_rx.recv_timeout(Duration::from_secs(15)).expect("second raised");
        second.join().expect("second commits while the first is open");
        let seen = read(0);
        assert_eq!(seen.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), vec!["8002"]);
        let cursor = seen[0].0;
        let mut conn = app.state.pool.get().expect("conn");
        assert_eq!(last_event_seq(&mut conn).expect("seq"), cursor);
        drop(conn);
        a_commit.send(()).expect("commit the first");
        first.join().expect("first commits");
        let late = read(cursor);
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0].2, "8001", "the late commit comes after the cursor");
        assert!(late[0].1 < seen[0].1, "although its row was written first");
    } else {
        a_commit.send(()).expect("commit the first");
        first.join().expect("first commits");
        second.join().expect("second commits");
        let all = read(0);
        assert_eq!(
            all.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
            vec!["8001", "8002"]
        );
    }
    let all = read(0);
    assert_eq!(all.len(), 2);
    assert!(all[0].0 < all[1].0);
    // The events are a record: never changed, never removed.
    let mut conn = app.state.pool.get().expect("conn");
    use diesel::RunQueryDsl as _;
    assert!(
        diesel::sql_query("UPDATE alert_events SET message = 'edited'")
            .execute(&mut conn)
            .is_err()
    );
    assert!(
        diesel::sql_query("DELETE FROM alert_events")
            .execute(&mut conn)
            .is_err()
    );
    assert_eq!(read(0).len(), 2);
}

/// Alerts written by the release before episodes: several open per unit (one per expiry
/// threshold, one per excursion reading), acknowledged and resolved ones. They migrate into
/// episodes and keep reading; none leaves the open list; resuming the stream with an old alert
/// id resumes in place; and conditions can fire again.
async fn alerts_of_an_earlier_release_become_episodes(backend: Backend) {
    use diesel::connection::SimpleConnection as _;
    let db = std::sync::Arc::new(TestDb::new(backend));
    let mut conn = migrated_before(backend, &db, "2026-11-29-000011");
    let at = |minutes_ago: i64| {
        (Utc::now() - TimeDelta::minutes(minutes_ago))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    conn.batch_execute(&format!(
        "INSERT INTO alerts (kind, severity, status, dedup_key, entity_type, entity_id, message, details, created_at,
                             acknowledged_at, acknowledged_by, resolved_at) VALUES
         ('unit.expiring', 'warning', 'open', 'unit.expiring:77:8h', 'unit', '77', 'unit 77 expires in 7 h 0 min (threshold 8 h)', '{{\"unit\": 77}}', '{t6}', NULL, NULL, NULL),
         ('unit.expiring', 'warning', 'acknowledged', 'unit.expiring:77:4h', 'unit', '77', 'unit 77 expires in 3 h 0 min (threshold 4 h)', '{{\"unit\": 77}}', '{t5}', '{t4}', 'tech', NULL),
         ('unit.expiring', 'urgent', 'open', 'unit.expiring:77:2h', 'unit', '77', 'unit 77 expires in 1 h 30 min (threshold 2 h)', '{{\"unit\": 77}}', '{t4}', NULL, NULL, NULL),
         ('request.unallocated', 'warning', 'resolved', 'request.unallocated:5', 'request', '5', 'request 5 is needed in 5 h 0 min and has nothing allocated', '{{\"request\": 5}}', '{t6}', NULL, NULL, '{t5}'),
         ('unit.quarantined', 'urgent', 'open', 'unit.quarantined:78:reading:1', 'unit', '78', 'unit 78 quarantined: 30 °C', '{{}}', '{t3}', NULL, NULL, NULL),
         ('unit.quarantined', 'urgent', 'open', 'unit.quarantined:78:reading:2', 'unit', '78', 'unit 78 quarantined: 31 °C', '{{}}', '{t2}', NULL, NULL, NULL),
         ('patient.group_discordant', 'urgent', 'acknowledged', 'patient.group_discordant:9', 'patient', '9', 'blood group of patient 9 needs review', '{{}}', '{t2}', '{t1}', 'tech', NULL);
         INSERT INTO webhook_subscriptions (url, events, secret, hospital_id, active, created_by, created_at)
             VALUES ('http://127.0.0.1:1/hook', '[\"*\"]', 'old-secret-0123456789', NULL, TRUE, 'admin', '{t6}');
         INSERT INTO webhook_outbox (subscription_id, alert_id, event, status, attempts, next_attempt_at, created_at, delivered_at)
             VALUES (1, 1, 'unit.expiring', 'delivered', 1, '{t6}', '{t6}', '{t6}');",
        t1 = at(10),
        t2 = at(20),
        t3 = at(30),
        t4 = at(40),
        t5 = at(50),
        t6 = at(60),
    ))
    .expect("alerts of the earlier release");
    drop(conn);

    let mut app = spawn_on(backend, db, |_| {}).await;
    let tech = app.token_for("technologist").await;
    let admin = app.admin_token().await;
    let all = alerts(&app, &tech, "limit=500").await;
    assert_eq!(all.len(), 7, "every alert still reads: {all:#?}");
    let field = |name: &str| all.iter().map(|a| a[name].clone()).collect::<Vec<_>>();
    assert_eq!(
        field("status"),
        [
            "open",
            "acknowledged",
            "open",
            "resolved",
            "open",
            "open",
            "acknowledged"
        ]
        .map(Value::from)
    );
    assert_eq!(field("episode"), [1, 2, 3, 1, 1, 2, 1].map(Value::from));
    assert_eq!(
        field("threshold_hours"),
        [
            json!(8),
            json!(4),
            json!(2),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null
        ]
    );
    assert!(
        all.iter()
            .all(|a| a["occurrences"] == 1 && a["last_occurred_at"] == a["created_at"])
    );
    // One open episode per (kind, entity): the latest; the earlier ones of the unit stay open
    // or acknowledged, as they were. Resolved, and acknowledged event alerts, ended then.
    let open_episode: Vec<bool> = all.iter().map(|a| a["closed_at"].is_null()).collect();
    assert_eq!(open_episode, [false, false, true, false, false, true, false]);
    assert_eq!(all[3]["closed_at"], all[3]["resolved_at"]);
    assert_eq!(all[6]["closed_at"], all[6]["acknowledged_at"]);
    let log = app.get("/api/v1/webhooks/1/deliveries", Some(&admin)).await;
    assert_eq!(log.ok(200)["items"][0]["transition"], "raised");
    assert_eq!(log.body["items"][0]["alert_id"], 1);

    // The old stream's ids were alert ids: resuming after alert 5 continues with alert 6.
    let mut res = app
        .client
        .get(app.url("/api/v1/alerts/stream"))
        .bearer_auth(&tech)
        .header("Last-Event-ID", "5")
        .send()
        .await
        .expect("stream");
    let chunk = actix_rt::time::timeout(std::time::Duration::from_secs(10), res.chunk())
        .await
        .expect("a chunk in time")
        .expect("read")
        .expect("data");
    let text = String::from_utf8_lossy(&chunk).to_string();
    assert!(text.starts_with("id: 6\nevent: unit.quarantined\n"), "{text}");
    assert!(text.contains("\nid: 7\nevent: patient.group_discordant\n"), "{text}");
    assert!(!text.contains("id: 5\n"), "{text}");

    // Conditions fire again: a new excursion of unit 78 is a repeat on its open alert; the
    // acknowledged discordance of patient 9 and the resolved request 5 open new episodes.
    let mut conn = app.state.pool.get().expect("conn");
    let raise = |conn: &mut granulo::store::DbConn, kind: AlertKind, key: &str, entity_type: &str, entity_id: i64| {
        assert_eq!(kind.entity().as_str(), entity_type);
        granulo::store::write_tx(conn, |c| {
            granulo::services::alerts::raise(
                c,
                granulo::services::alerts::Raise {
                    kind,
                    severity: AlertSeverity::Urgent,
                    entity_id,
                    condition_key: key.to_owned(),
                    message: key.to_owned(),
                    details: json!({}),
                    threshold_hours: None,
                    at: Utc::now(),
                },
            )
        })
        .expect("raise")
        .expect("changed")
        .alert
    };
    let repeat = raise(
        &mut conn,
        AlertKind::UnitQuarantined,
        "unit.quarantined:78:reading:3",
        "unit",
        78,
    );
    assert_eq!((repeat.id, repeat.occurrences), (6, 2));
    let discordant = raise(
        &mut conn,
        AlertKind::PatientGroupDiscordant,
        "patient.group_discordant:9",
        "patient",
        9,
    );
    assert_eq!((discordant.id, discordant.episode), (8, 2));
    let request = raise(
        &mut conn,
        AlertKind::RequestUnallocated,
        "request.unallocated:5",
        "request",
        5,
    );
    assert_eq!((request.id, request.episode), (9, 2));
    drop(conn);
    // Unit 77 is gone from the bank (no such unit here): its condition cleared, and every
    // alert of it resolves, the earlier ones with the open episode.
    let report = scan_at(&app, Utc::now());
    assert_eq!(
        report.resolved, 4,
        "the three of unit 77 and the new request episode: {report:?}"
    );
    let unit77: Vec<Value> = alerts(&app, &tech, "limit=500&kind=unit.expiring").await;
    assert!(unit77.iter().all(|a| a["status"] == "resolved"), "{unit77:#?}");
}
