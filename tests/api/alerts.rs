//! The alert scan: thresholds with a controlled clock, the expiry sweep, resolution, dedupe
//! across concurrent scans, the cron command and the jobs view.

use chrono::{DateTime, TimeDelta, Utc};
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

/// `kind:threshold` of each alert (threshold empty when the kind has none), sorted.
fn keys(list: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = list
        .iter()
        .map(|a| {
            let message = a["message"].as_str().unwrap_or("");
            let threshold = ["8", "4", "2"]
                .into_iter()
                .find(|h| message.contains(&format!("threshold {h} h")))
                .unwrap_or("");
            format!("{}:{threshold}", a["kind"].as_str().unwrap_or(""))
        })
        .collect();
    k.sort();
    k
}

/// A supplier unit released to `available` with every required marker negative.
async fn available_unit(app: &mut TestApp, tech: &str, din: &str) -> i64 {
    let unit = supplier_unit(app, tech, din, now_minute() - TimeDelta::hours(1)).await;
    for marker in required_markers(app, tech).await {
        app.post(
            &format!("/api/v1/units/{unit}/tests"),
            Some(tech),
            &json!({"marker": marker, "result": "negative"}),
        )
        .await
        .ok(200);
    }
    app.post(
        &format!("/api/v1/units/{unit}/release"),
        Some(tech),
        &json!({"emergency": false}),
    )
    .await
    .ok(200);
    unit
}

async fn supplier_unit(app: &TestApp, tech: &str, din: &str, collected: DateTime<Utc>) -> i64 {
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

    assert_eq!(
        scan_at(&app, expires - TimeDelta::hours(8) - TimeDelta::minutes(1)).raised,
        0
    );
    assert_eq!(scan_at(&app, expires - TimeDelta::hours(8)).raised, 1);
    assert_eq!(
        scan_at(&app, expires - TimeDelta::hours(8)).raised,
        0,
        "once per threshold"
    );
    assert_eq!(scan_at(&app, expires - TimeDelta::hours(3)).raised, 1);
    assert_eq!(scan_at(&app, expires - TimeDelta::minutes(90)).raised, 1);
    let open = alerts(&app, &tech, "status=open&kind=unit.expiring").await;
    assert_eq!(
        keys(&open),
        vec!["unit.expiring:2", "unit.expiring:4", "unit.expiring:8"]
    );
    assert!(open.iter().any(|a| a["severity"] == "urgent"));

    // Expiry: the unit is moved to `expired` (audited), alerted, and the expiring alerts resolve.
    let report = scan_at(&app, expires);
    assert_eq!((report.expired, report.raised, report.resolved), (1, 1, 3));
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
    assert_eq!(keys(&alerts(&app, &tech, "status=resolved").await).len(), 3);
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
    // Four scans at once, without the lease (as if two instances ignored it): the unique
    // deduplication key alone keeps every alert single.
    let now = Utc::now();
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
    let raised: i64 = threads.into_iter().map(|t| t.join().expect("thread").raised).sum();
    // 4 h left of 24: the 8 h and 4 h thresholds for each of the 10 units.
    assert_eq!(raised, 20);
    assert_eq!(alerts(&app, &tech, "limit=500").await.len(), 20);
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
        .env("GRANULO_LOG", "warn")
        .output()
        .expect("run granulo");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 raised"), "{text}");
    let jobs = app.get("/api/v1/jobs", Some(&tech)).await;
    let job = jobs.ok(200)["items"][0].clone();
    assert_eq!(job["name"], "alert_scan");
    assert_eq!(job["runs"], 1);
    assert_eq!(job["last_raised"], 3);
    assert_eq!(job["holder"], Value::Null);
    assert_eq!(job["last_error"], Value::Null);
    let hospital = app.token_for("hospital").await;
    app.get("/api/v1/jobs", Some(&hospital)).await.problem(403, "forbidden");
    app.get("/api/v1/alerts", Some(&hospital))
        .await
        .problem(403, "forbidden");
}

/// (signature, timestamp, event, body) of each delivery received.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, String)>>>;

/// A local webhook receiver: records every delivery; answers 500 to the first `fail_first`.
struct Receiver {
    url: String,
    got: Received,
}

async fn receiver(fail_first: usize) -> Receiver {
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
    let client = granulo::jobs::webhook_client();
    granulo::services::webhooks::deliver_due(&app.state.pool, &client, now)
        .await
        .expect("delivery runs")
}

async fn webhooks_are_signed_retried_and_scoped(backend: Backend) {
    let mut app = spawn(backend).await;
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
    let client = granulo::jobs::webhook_client();
    let failed = granulo::jobs::tick(&broken, &client, "test").await;
    assert!(
        failed.scan.is_err() && failed.deliveries.is_err(),
        "errors are reported, not panicked on"
    );
    // The next tick, with the database back, carries on.
    let ok = granulo::jobs::tick(&app.state.pool, &client, "test").await;
    assert!(ok.scan.expect("scan").is_some());
    assert_eq!(ok.deliveries.expect("deliveries").delivered, 0);
}
