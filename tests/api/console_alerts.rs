//! The console's Alerts & tasks and Today pages, on both backends: what they show, their forms
//! over the same services as the API, refusals on the page, and the live fragments.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::both_backends;
use crate::console_support::*;
use crate::helpers::*;

both_backends!(
    console_alerts_are_acknowledged_from_the_page,
    console_tasks_are_completed_from_the_page,
    console_today_shows_bookings_stimulations_and_eligible_donors,
);

/// A zone away from UTC, so that local times differ from the API's.
const ZONE: Tz = chrono_tz::Asia::Kolkata;

fn scan_at(app: &TestApp, now: DateTime<Utc>) -> granulo::jobs::ScanReport {
    let mut conn = app.state.pool.get().expect("conn");
    granulo::jobs::run_once(&mut conn, "test", now)
        .expect("scan runs")
        .expect("lease free")
}

/// As `page::local_time` writes it.
fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&ZONE).format("%a %d %b %H:%M").to_string()
}

fn clock(t: DateTime<Utc>) -> String {
    t.with_timezone(&ZONE).format("%H:%M").to_string()
}

/// The `<section id="…">` element of a page, whole.
fn section<'a>(text: &'a str, id: &str) -> &'a str {
    let start = text
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("section {id} in {text}"));
    let end = text[start..].find("</section>").expect("section end") + start + "</section>".len();
    &text[start..end]
}

/// A fragment is its section alone: no page around it.
fn only_section(text: &str, id: &str) {
    assert!(text.starts_with(&format!("<section id=\"{id}\"")), "{text}");
    assert!(text.trim_end().ends_with("</section>"), "{text}");
    assert_eq!(text.matches("<section").count(), 1, "{text}");
    assert!(!text.contains("<html") && !text.contains("<nav"), "{text}");
}

async fn api_alerts(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    app.get(&format!("/api/v1/alerts?{query}"), Some(token)).await.ok(200)["items"]
        .as_array()
        .expect("items")
        .clone()
}

async fn console_alerts_are_acknowledged_from_the_page(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.timezone = ZONE).await;
    let tech = app.token_for("technologist").await;
    let collected = now_minute() - TimeDelta::hours(1);
    let unit = crate::alerts::supplier_unit(&app, &tech, &next_din(), collected).await;
    let raised_at = collected + TimeDelta::hours(24) - TimeDelta::hours(8);
    assert_eq!(scan_at(&app, raised_at).raised, 1);
    let open = api_alerts(&app, &tech, "status=open").await;
    let id = open[0]["id"].as_i64().expect("alert id");

    let (console, username) = Console::as_role(&mut app, "technologist").await;
    let page = console.get("/console/alerts").await;
    let alerts = section(page.ok(200), "alerts");
    assert!(
        alerts.contains(&format!(r#"data-alert-id="{id}" data-kind="unit.expiring""#)),
        "{alerts}"
    );
    assert!(
        alerts.contains("Unit expiring") && alerts.contains("warning"),
        "{alerts}"
    );
    assert!(
        alerts.contains(&local(raised_at)),
        "raised in the facility's time: {alerts}"
    );
    assert!(alerts.contains(&format!(r#"href="/console/units/{unit}""#)), "{alerts}");
    assert!(alerts.contains(r#"hx-trigger="sse:alerts""#), "{alerts}");
    assert!(!page.text.contains("style="), "no inline style");

    // Without the session's token: refused, and the alert stays open.
    let path = format!("/console/alerts/{id}/ack");
    let forged = console.post_raw(&path, &[]).await;
    assert!(forged.ok(403).contains("csrf_token_invalid"), "{}", forged.text);
    assert_eq!(api_alerts(&app, &tech, "status=open").await.len(), 1);

    // Acknowledged from the page, as the API sees it.
    let done = console.post(&path, &[]).await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    assert!(
        done.location().starts_with("/console/alerts?done="),
        "{}",
        done.location()
    );
    let after = console.get(done.location()).await;
    assert!(
        after.ok(200).contains(&format!("Alert {id} acknowledged.")),
        "{}",
        after.text
    );
    assert!(!section(&after.text, "alerts").contains(&format!(r#"data-alert-id="{id}""#)));
    let acknowledged = api_alerts(&app, &tech, "status=acknowledged").await;
    assert_eq!(acknowledged.len(), 1);
    assert_eq!(acknowledged[0]["id"], id);
    assert_eq!(acknowledged[0]["acknowledged_by"], username.as_str());

    // A second acknowledgement is refused on the page, with its code and status.
    let again = console.post(&path, &[]).await;
    let text = again.ok(409);
    assert!(
        text.contains("class=\"refusal\"") && text.contains("already_acknowledged"),
        "{text}"
    );
    assert!(text.contains("<section id=\"tasks\""), "the page itself, re-rendered");
    // Nonsense ids are refusals too, never a server error.
    assert!(
        console
            .post("/console/alerts/abc/ack", &[])
            .await
            .ok(400)
            .contains("invalid_path")
    );
    assert!(
        console
            .post("/console/alerts/999999/ack", &[])
            .await
            .ok(404)
            .contains("not_found")
    );

    let fragment = console.get("/console/alerts/open").await;
    only_section(fragment.ok(200), "alerts");
    assert!(fragment.text.contains("No open alerts."), "{}", fragment.text);
}

async fn console_tasks_are_completed_from_the_page(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.timezone = ZONE).await;
    let tech = app.token_for("technologist").await;
    let (_, hosp) = hospital(&mut app).await;
    let director = app.token_for("medical_director").await;
    let patient = app
        .post(
            "/api/v1/patients",
            Some(&hosp),
            &patient_body("CT-1", "O", "negative", "male"),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("patient");
    let request = app
        .post("/api/v1/requests", Some(&hosp), &request_body(patient, 1))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("request");
    // An emergency release leaves a follow-up task for its pending results.
    let unit = crate::alerts::supplier_unit(&app, &tech, &next_din(), now_minute() - TimeDelta::hours(1)).await;
    app.post(
        &format!("/api/v1/units/{unit}/irradiation"),
        Some(&tech),
        &json!({"dose_gy": 25}),
    )
    .await
    .ok(200);
    app.post(
        &format!("/api/v1/units/{unit}/release"),
        Some(&director),
        &json!({"emergency": true, "request_id": request,
                "physician": {"name": "Dr A", "acknowledged_at": ts(now_minute())}}),
    )
    .await
    .ok(200);
    let tasks = app.get("/api/v1/tasks?status=open", Some(&tech)).await;
    let task = tasks.ok(200)["items"][0].clone();
    let id = task["id"].as_i64().expect("task id");
    let due: DateTime<Utc> = task["due_at"].as_str().expect("due").parse().expect("time");

    let (console, username) = Console::as_role(&mut app, "technologist").await;
    let page = console.get("/console/alerts").await;
    let tasks = section(page.ok(200), "tasks");
    assert!(tasks.contains(&format!(r#"data-task-id="{id}""#)), "{tasks}");
    assert!(tasks.contains("Emergency release follow-up"), "{tasks}");
    assert!(tasks.contains(&local(due)), "due in the facility's time: {tasks}");
    assert!(
        tasks.contains(r#"data-overdue="false""#) && !tasks.contains(">overdue<"),
        "{tasks}"
    );
    assert!(
        tasks.contains(r#"name="note""#) && tasks.contains(">Complete</button>"),
        "{tasks}"
    );

    // A blank note is refused on the page; the task stays open.
    let path = format!("/console/tasks/{id}/complete");
    let blank = console.post(&path, &[("note", "  ")]).await;
    assert!(blank.ok(400).contains("validation_failed"), "{}", blank.text);
    assert!(
        console
            .post_raw(&path, &[("note", "done")])
            .await
            .ok(403)
            .contains("csrf_token_invalid")
    );
    let still = app.get("/api/v1/tasks?status=open", Some(&tech)).await;
    assert_eq!(still.ok(200)["items"].as_array().map(Vec::len), Some(1));

    let done = console
        .post(&path, &[("note", "results chased with the supplier")])
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    let after = console.get(done.location()).await;
    assert!(after.ok(200).contains(&format!("Task {id} completed.")));
    let tasks = app.get("/api/v1/tasks?status=done", Some(&tech)).await;
    let finished = &tasks.ok(200)["items"][0];
    assert_eq!(finished["id"], id);
    assert_eq!(finished["note"], "results chased with the supplier");
    assert_eq!(finished["completed_by"], username.as_str());
    let again = console.post(&path, &[("note", "again")]).await;
    assert!(again.ok(409).contains("task_not_open"), "{}", again.text);

    let fragment = console.get("/console/tasks/open").await;
    only_section(fragment.ok(200), "tasks");
    assert!(fragment.text.contains("No open tasks."), "{}", fragment.text);
}

async fn console_today_shows_bookings_stimulations_and_eligible_donors(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.timezone = ZONE).await;
    let tech = app.token_for("technologist").await;
    let tomorrow = Utc::now().with_timezone(&ZONE).date_naive() + TimeDelta::days(1);
    let start = ZONE
        .from_local_datetime(&tomorrow.and_hms_opt(8, 0, 0).expect("time"))
        .earliest()
        .expect("a local time")
        .with_timezone(&Utc);
    let booked = app.register_donor(&tech, &donor_body("Ana", "O", "negative")).await;
    let device = app.create_device(&tech, "Optia T").await;
    let collection = app.book(&tech, booked, device, start).await.ok(201).clone();
    let cid = collection["id"].as_i64().expect("collection");
    let end: DateTime<Utc> = collection["scheduled_end"]
        .as_str()
        .expect("end")
        .parse()
        .expect("time");
    let mut other = donor_body("Bea", "A", "positive");
    other["cmv"] = json!("positive");
    let eligible = app.register_donor(&tech, &other).await;
    let number = |id: i64| format!("GD{id:06}");

    let (console, _) = Console::as_role(&mut app, "technologist").await;
    let page = console.get("/console/today").await;
    let text = page.ok(200);
    assert!(!text.contains("style="), "no inline style");

    // The booking on its device's timeline and in its table.
    let collections = section(text, "collections");
    let svg_at = collections
        .find(&format!(r#"data-device-id="{device}""#))
        .expect("the device");
    let device_part = &collections[svg_at..];
    assert!(device_part.contains("<svg class=\"timeline\""), "{device_part}");
    let slot = regex::Regex::new(&format!(
        r#"<rect class="slot scheduled" data-collection-id="{cid}" data-status="scheduled" x="([0-9.]+)" y="[0-9]+" width="([0-9.]+)""#
    ))
    .expect("regex");
    let caps = slot
        .captures(device_part)
        .unwrap_or_else(|| panic!("a slot: {device_part}"));
    let (x, width): (f64, f64) = (caps[1].parse().expect("x"), caps[2].parse().expect("width"));
    assert!(x > 110.0 && width > 10.0, "placed over the day: x {x}, width {width}");
    assert!(
        device_part.contains(&format!(r#"<tr data-collection-id="{cid}" data-status="scheduled">"#)),
        "{device_part}"
    );
    assert!(
        device_part.contains(&format!("{}</time>–<time", clock(start))),
        "{device_part}"
    );
    assert!(
        device_part.contains(&format!(">{}</time>", clock(end))),
        "{device_part}"
    );
    assert!(
        device_part.contains(&number(booked)) && device_part.contains("Tomorrow"),
        "{device_part}"
    );

    // Its stimulations are due tonight: both default agents, until one is recorded.
    let due = section(text, "stimulations");
    for agent in ["gcsf", "dexamethasone"] {
        assert!(
            due.contains(&format!(
                r#"data-collection-id="{cid}" data-donor-id="{booked}" data-agent="{agent}""#
            )),
            "{agent}: {due}"
        );
    }
    assert!(due.contains(&number(booked)), "{due}");
    app.post(
        &format!("/api/v1/donors/{booked}/stimulations"),
        Some(&tech),
        &json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": ts(now_minute()), "collection_id": cid}),
    )
    .await
    .ok(201);
    let fragment = console.get("/console/today/stimulations").await;
    only_section(fragment.ok(200), "stimulations");
    assert!(!fragment.text.contains(r#"data-agent="gcsf""#), "{}", fragment.text);
    assert!(
        fragment.text.contains(r#"data-agent="dexamethasone""#),
        "{}",
        fragment.text
    );

    // Both donors are eligible tomorrow morning, with their group and CMV.
    let donors = section(text, "eligible");
    let row = donors
        .split("<tr ")
        .find(|r| r.starts_with(&format!(r#"data-donor-id="{eligible}""#)))
        .unwrap_or_else(|| panic!("the donor: {donors}"));
    assert!(
        row.contains(&number(eligible)) && row.contains("A RhD positive"),
        "{row}"
    );
    assert!(
        row.contains("<td>positive</td>") && row.contains("none recorded") && row.contains(">now<"),
        "{row}"
    );
    assert!(donors.contains(&format!(r#"data-donor-id="{booked}""#)), "{donors}");
    // A deferred donor is not.
    app.post(
        &format!("/api/v1/donors/{eligible}/deferrals"),
        Some(&tech),
        &json!({"reason": "travel", "permanent": false, "until": ts(start + TimeDelta::days(30))}),
    )
    .await
    .ok(201);
    let fragment = console.get("/console/today/eligible").await;
    only_section(fragment.ok(200), "eligible");
    assert!(
        !fragment.text.contains(&format!(r#"data-donor-id="{eligible}""#)),
        "{}",
        fragment.text
    );

    let fragment = console.get("/console/today/collections").await;
    only_section(fragment.ok(200), "collections");
    assert!(fragment.text.contains(&format!(r#"data-collection-id="{cid}""#)));
}
