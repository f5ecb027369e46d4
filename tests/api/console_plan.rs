//! The course plan at the console, on both backends: staff propose a plan and book it from the
//! request page, a superseded or stale plan is refused on the page with its reasons, the forms
//! need the CSRF token and a staff session, and the Today page names the request a collection
//! is for and the course plans at risk. What a page says happened is checked through the API.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::*;
use crate::both_backends;
use crate::console_support::*;
use crate::helpers::*;

both_backends!(
    staff_propose_a_plan_and_book_it_from_the_request_page,
    a_superseded_or_stale_plan_is_refused_on_the_page,
    plan_forms_need_the_csrf_token_and_a_staff_session,
    today_names_the_request_of_a_collection_and_the_plans_at_risk,
);

const DEVICE: &str = "Spectra Optia 1";

/// A device, four group A RhD-positive donors, a typed A-positive patient and an open request
/// for 3 units, the first needed two days ahead at 14:00 UTC: day 1's slots (the day before
/// from 14:00, the day itself until 11:00) all have their stimulation still to come.
struct Course {
    b: Bank,
    device: i64,
    donors: Vec<i64>,
    request: i64,
}

async fn course(backend: Backend) -> Course {
    let b = bank(backend).await;
    let device = b.app.create_device(&b.tech, DEVICE).await;
    let mut donors = Vec::new();
    for name in ["Ada", "Bo", "Cy", "Di"] {
        donors.push(b.app.register_donor(&b.tech, &donor_body(name, "A", "positive")).await);
    }
    let patient = b.typed_patient(&patient_body("PL-1", "A", "positive", "male")).await;
    let midnight = Utc::now().duration_trunc(TimeDelta::days(1)).expect("midnight");
    let mut body = request_body(patient, 3);
    body["needed_by"] = json!(ts(midnight + TimeDelta::days(2) + TimeDelta::hours(14)));
    let request = b.request(&body).await;
    let r = b.app.get(&format!("/api/v1/requests/{request}"), Some(&b.tech)).await;
    assert_eq!(r.ok(200)["status"], "open");
    Course {
        b,
        device,
        donors,
        request,
    }
}

impl Course {
    fn path(&self) -> String {
        format!("/console/requests/{}", self.request)
    }

    /// The latest plan, as the API reads it.
    async fn plan(&self) -> Value {
        self.b
            .app
            .get(&format!("/api/v1/requests/{}/plan", self.request), Some(&self.b.tech))
            .await
            .ok(200)
            .clone()
    }

    async fn request_json(&self) -> Value {
        self.b
            .app
            .get(&format!("/api/v1/requests/{}", self.request), Some(&self.b.tech))
            .await
            .ok(200)
            .clone()
    }

    async fn collection(&self, id: i64) -> Value {
        self.b
            .app
            .get(&format!("/api/v1/collections/{id}"), Some(&self.b.tech))
            .await
            .ok(200)
            .clone()
    }
}

/// The element of `page` that starts at the first `marker` (an attribute) and ends at `end`.
fn part<'a>(page: &'a str, marker: &str, end: &str) -> &'a str {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} on the page: {page}"));
    let tag = page[..start].rfind('<').unwrap_or(start);
    let stop = page[start..].find(end).map_or(page.len(), |i| start + i + end.len());
    &page[tag..stop]
}

fn plan_section(page: &str) -> &str {
    part(page, r#"id="plan-section""#, "</section>")
}

fn day_row(section: &str, day: &Value) -> String {
    part(section, &format!("data-day=\"{}\"", day["day"]), "</tr>").to_owned()
}

/// As the page writes an instant in `<time datetime=…>`.
fn datetime_attr(v: &Value) -> String {
    let t: DateTime<Utc> = v.as_str().expect("a time").parse().expect("RFC 3339");
    format!(r#"<time datetime="{}">"#, ts(t))
}

fn days(plan: &Value) -> Vec<Value> {
    plan["days"].as_array().expect("days").clone()
}

fn scan(app: &TestApp) {
    let mut conn = app.state.pool.get().expect("conn");
    granulo::jobs::run_once(&mut conn, "test", Utc::now())
        .expect("scan runs")
        .expect("lease free");
}

async fn staff_propose_a_plan_and_book_it_from_the_request_page(backend: Backend) {
    let mut c = course(backend).await;
    let (console, _) = Console::as_role(&mut c.b.app, "technologist").await;
    let path = c.path();
    let text = console.get(&path).await.ok(200).to_owned();
    let section = plan_section(&text);
    assert!(section.contains("No course plan yet."), "{section}");
    assert!(
        section.contains(&format!(
            r#"<form class="propose-plan stack" method="post" action="{path}/plan">"#
        )),
        "{section}"
    );
    assert!(section.contains(r#"name="csrf""#), "{section}");
    assert!(
        section.contains("Propose plan") && !section.contains("Book this plan"),
        "{section}"
    );

    // Proposed from the page: every day gets a donor, a slot and its stimulation.
    let done = console.post(&format!("{path}/plan"), &[]).await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    assert!(
        done.location()
            .starts_with(&format!("{path}?done=Proposed+course+plan")),
        "{}",
        done.location()
    );
    let plan = c.plan().await;
    assert_eq!(plan["status"], "proposed");
    let plan_id = plan["id"].as_i64().expect("plan id");
    let planned = days(&plan);
    assert_eq!(planned.len(), 3, "{plan}");
    let text = console.get(done.location()).await.ok(200).to_owned();
    assert!(text.contains(&format!("Proposed course plan {plan_id}")), "{text}");
    let section = plan_section(&text);
    assert!(section.contains(r#"data-status="proposed""#), "{section}");
    for d in &planned {
        assert_eq!(d["kind"], "donor", "{plan}");
        let row = day_row(section, d);
        assert!(row.contains(r#"data-kind="donor""#), "{row}");
        assert!(row.contains(d["donor_number"].as_str().expect("number")), "{row}");
        assert!(row.contains(DEVICE), "{row}");
        assert!(row.contains(&datetime_attr(&d["collection"]["start"])), "{row}");
        assert!(row.contains(&datetime_attr(&d["stimulation_at"])), "{row}");
        let date = d["date"].as_str().expect("date");
        assert!(row.contains(&format!(r#"<time datetime="{date}">"#)), "{row}");
        assert!(!row.contains("data-changed"), "{row}");
        let findings = d["findings"].as_array().expect("findings");
        if findings.is_empty() {
            assert!(
                row.contains(r#"<td class="findings"><span class="muted">none</span>"#),
                "{row}"
            );
        }
        for f in findings {
            let code = f["code"].as_str().expect("code");
            assert!(row.contains(&format!("<code>{code}</code>")), "{row}");
            assert!(
                row.contains(&format!(
                    r#"data-code="{code}" data-tier="{}""#,
                    f["severity"].as_str().expect("tier")
                )),
                "{row}"
            );
        }
    }
    let book = part(section, r#"class="book-plan stack""#, "</form>");
    assert!(book.contains(&format!(r#"action="{path}/plan/accept""#)), "{book}");
    assert!(
        book.contains(&format!(r#"<input type="hidden" name="plan_id" value="{plan_id}">"#)),
        "{book}"
    );
    assert!(book.contains(r#"name="csrf""#), "{book}");

    // Booked from the page: a collection per day, for the request, as proposed.
    let done = console
        .post(&format!("{path}/plan/accept"), &[("plan_id", &plan_id.to_string())])
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    assert!(
        done.location()
            .starts_with(&format!("{path}?done=Booked+course+plan+{plan_id}")),
        "{}",
        done.location()
    );
    let plan = c.plan().await;
    assert_eq!(plan["status"], "accepted");
    let r = c.request_json().await;
    assert_eq!(r["plan"]["plan_id"], plan_id, "{r}");
    let text = console.get(done.location()).await.ok(200).to_owned();
    assert!(
        text.contains(&format!("Booked course plan {plan_id} (3 collection(s))")),
        "{text}"
    );
    let section = plan_section(&text);
    assert!(section.contains(r#"data-status="accepted""#), "{section}");
    assert!(section.contains("accepted — booked and in force"), "{section}");
    assert!(!section.contains("Book this plan"), "{section}");
    // A new proposal is a repair of the plan in force.
    assert!(
        section.contains("Propose plan") && section.contains("A plan is in force"),
        "{section}"
    );
    // The plan in force names each day's collection.
    for (d, before) in r["plan"]["days"].as_array().expect("days").iter().zip(&planned) {
        assert_eq!(d["day"], before["day"]);
        let cid = d["collection_id"].as_i64().expect("a collection per day");
        let collection = c.collection(cid).await;
        assert_eq!(collection["request_id"], c.request);
        assert_eq!(collection["donor_id"], before["donor_id"]);
        assert_eq!(collection["device_id"], c.device);
        assert_eq!(collection["scheduled_start"], before["collection"]["start"]);
        assert_eq!(collection["status"], "scheduled");
        assert_eq!(d["collection_status"], "scheduled");
        let row = day_row(section, d);
        assert!(row.contains(&format!(r#"data-collection-id="{cid}""#)), "{row}");
        assert!(row.contains(&format!("collection {cid} (booked)")), "{row}");
    }
}

async fn a_superseded_or_stale_plan_is_refused_on_the_page(backend: Backend) {
    let mut c = course(backend).await;
    let (console, _) = Console::as_role(&mut c.b.app, "technologist").await;
    let path = c.path();
    let propose = console.post(&format!("{path}/plan"), &[]).await;
    assert_eq!(propose.status.as_u16(), 303, "{}", propose.text);
    let first = c.plan().await["id"].as_i64().expect("plan");
    let propose = console.post(&format!("{path}/plan"), &[]).await;
    assert_eq!(propose.status.as_u16(), 303, "{}", propose.text);
    let plan = c.plan().await;
    let second = plan["id"].as_i64().expect("plan");
    assert_ne!(first, second);

    // The earlier proposal: refused with its code, under its status, the page still there.
    let refused = console
        .post(&format!("{path}/plan/accept"), &[("plan_id", &first.to_string())])
        .await;
    let text = refused.ok(409);
    assert!(text.contains(r#"role="alert""#), "{text}");
    assert!(text.contains("<code>plan_superseded</code>"), "{text}");
    let section = plan_section(text);
    assert!(
        section.contains(&format!(r#"data-plan-id="{second}" data-status="proposed""#)),
        "{section}"
    );
    // A plan id that is no number: a field refusal.
    let bad = console.post(&format!("{path}/plan/accept"), &[("plan_id", "x")]).await;
    assert!(bad.ok(400).contains("<code>plan_id</code>"));

    // Day 1's slot taken meanwhile by a donor the plan does not use: 409 naming the day.
    let planned = days(&plan);
    let used: Vec<i64> = planned.iter().filter_map(|d| d["donor_id"].as_i64()).collect();
    let spare = *c.donors.iter().find(|d| !used.contains(d)).expect("a donor left over");
    let start: DateTime<Utc> = planned[0]["collection"]["start"]
        .as_str()
        .expect("start")
        .parse()
        .expect("time");
    let device = planned[0]["collection"]["device_id"].as_i64().expect("device");
    c.b.app.book(&c.b.tech, spare, device, start).await.ok(201);
    let refused = console
        .post(&format!("{path}/plan/accept"), &[("plan_id", &second.to_string())])
        .await;
    let text = refused.ok(409);
    assert!(text.contains("<code>plan_changed</code>"), "{text}");
    assert!(text.contains("<code>device_busy</code>"), "{text}");
    assert!(text.contains(&format!("day {} (", planned[0]["day"])), "{text}");
    // Nothing was booked for the request; the proposal stands.
    let plan = c.plan().await;
    assert_eq!(plan["status"], "proposed");
    assert!(days(&plan).iter().all(|d| d["collection_id"].is_null()), "{plan}");
    assert!(c.request_json().await["plan"].is_null());
    // The device holds the spare donor's booking only.
    let listed =
        c.b.app
            .get(&format!("/api/v1/collections?device_id={device}"), Some(&c.b.tech))
            .await;
    let listed = listed.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["donor_id"], spare);

    // Proposed again, the slot is left alone, and the new plan books.
    let propose = console.post(&format!("{path}/plan"), &[]).await;
    assert_eq!(propose.status.as_u16(), 303, "{}", propose.text);
    let third = c.plan().await;
    assert!(
        days(&third)
            .iter()
            .all(|d| d["collection"]["start"] != planned[0]["collection"]["start"]
                || d["collection"]["device_id"] != device),
        "{third}"
    );
    let done = console
        .post(&format!("{path}/plan/accept"), &[("plan_id", &third["id"].to_string())])
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    assert_eq!(c.plan().await["status"], "accepted");
}

async fn plan_forms_need_the_csrf_token_and_a_staff_session(backend: Backend) {
    let mut c = course(backend).await;
    let (tech, _) = Console::as_role(&mut c.b.app, "technologist").await;
    let (other, _) = Console::as_role(&mut c.b.app, "technologist").await;
    let path = c.path();
    let no_plan = format!("/api/v1/requests/{}/plan", c.request);

    // No token, or another session's: 403 and nothing proposed.
    for csrf in [None, Some(other.csrf.as_str())] {
        let fields: Vec<(&str, &str)> = csrf.map(|t| ("csrf", t)).into_iter().collect();
        let refused = tech.post_raw(&format!("{path}/plan"), &fields).await;
        assert!(refused.ok(403).contains("csrf_token_invalid"), "{}", refused.text);
    }
    c.b.app.get(&no_plan, Some(&c.b.tech)).await.problem(404, "not_found");

    // A proposal, then booking it without the token: 403, still only proposed.
    let plan = c.b.app.post(&no_plan, Some(&c.b.tech), &json!({})).await;
    let plan_id = plan.ok(201)["id"].as_i64().expect("plan");
    let id = plan_id.to_string();
    for csrf in [None, Some(other.csrf.as_str())] {
        let mut fields = vec![("plan_id", id.as_str())];
        fields.extend(csrf.map(|t| ("csrf", t)));
        let refused = tech.post_raw(&format!("{path}/plan/accept"), &fields).await;
        assert!(refused.ok(403).contains("csrf_token_invalid"), "{}", refused.text);
    }
    assert_eq!(c.plan().await["status"], "proposed");

    // Every staff role plans, as the API: an administrator sees both forms.
    let admin = Console::admin(&c.b.app).await;
    let text = admin.get(&path).await.ok(200).to_owned();
    let section = plan_section(&text);
    assert!(
        section.contains("Propose plan") && section.contains("Book this plan"),
        "{section}"
    );

    // A hospital account: the API refuses it the plan, and the console gives it no session.
    c.b.app
        .post(&no_plan, Some(&c.b.hosp), &json!({}))
        .await
        .problem(403, "forbidden");
    c.b.app.get(&no_plan, Some(&c.b.hosp)).await.problem(403, "forbidden");
    // A console session whose account became a hospital account (in the database, without the
    // revocation a role change through the API makes): no page, no form, every post refused.
    let (moved, name) = Console::as_role(&mut c.b.app, "technologist").await;
    moved.get(&path).await.ok(200);
    {
        use diesel::prelude::*;
        use granulo::store::schema::users;
        let mut conn = c.b.app.state.pool.get().expect("connection");
        diesel::update(users::table.filter(users::username.eq(&name)))
            .set((users::role.eq("hospital"), users::hospital_id.eq(Some(c.b.hospital))))
            .execute(&mut conn)
            .expect("update");
    }
    let page = moved.get(&path).await;
    let text = page.ok(403);
    assert!(text.contains("the console is for blood-bank staff"), "{text}");
    assert!(!text.contains("propose-plan") && !text.contains("book-plan"), "{text}");
    let refused = moved.post(&format!("{path}/plan"), &[]).await;
    assert!(refused.ok(403).contains("forbidden"), "{}", refused.text);
    let refused = moved.post(&format!("{path}/plan/accept"), &[("plan_id", &id)]).await;
    assert!(refused.ok(403).contains("forbidden"), "{}", refused.text);
    let plan = c.plan().await;
    assert_eq!(
        (plan["id"].as_i64(), plan["status"].as_str()),
        (Some(plan_id), Some("proposed"))
    );
}

async fn today_names_the_request_of_a_collection_and_the_plans_at_risk(backend: Backend) {
    let mut c = course(backend).await;
    let (console, _) = Console::as_role(&mut c.b.app, "technologist").await;
    let path = c.path();
    let api_plan = format!("/api/v1/requests/{}/plan", c.request);
    let proposed = c.b.app.post(&api_plan, Some(&c.b.tech), &json!({})).await;
    let plan_id = proposed.ok(201)["id"].as_i64().expect("plan");
    let accepted =
        c.b.app
            .post(
                &format!("{api_plan}/accept"),
                Some(&c.b.tech),
                &json!({"plan_id": plan_id}),
            )
            .await;
    let first = accepted.ok(200)["days"][0].clone();
    let cid = first["collection_id"].as_i64().expect("day 1's collection");
    let text = console.get("/console/today").await.ok(200).to_owned();
    assert!(!text.contains("plans-at-risk"), "{text}");

    // Day 1's collection aborted: the scan raises course.plan_broken, and Today lists it.
    c.b.app
        .post(
            &format!("/api/v1/collections/{cid}/abort"),
            Some(&c.b.tech),
            &json!({"reason": "donor unwell"}),
        )
        .await
        .ok(200);
    scan(&c.b.app);
    let alerts =
        c.b.app
            .get("/api/v1/alerts?status=open&kind=course.plan_broken", Some(&c.b.tech))
            .await;
    assert_eq!(
        alerts.ok(200)["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        alerts.text
    );
    let text = console.get("/console/today").await.ok(200).to_owned();
    let risk = part(&text, r#"id="plans-at-risk""#, "</div>");
    assert!(risk.contains("Course plans at risk"), "{risk}");
    assert!(
        risk.contains(&format!(r#"<a href="{path}">Request {}</a>"#, c.request)),
        "{risk}"
    );
    assert!(
        risk.contains(&format!("collection {cid} was aborted (donor unwell)")),
        "{risk}"
    );
    assert!(!risk.contains("/api/v1"), "{risk}");
    let fragment = console.get("/console/today/collections").await;
    assert!(fragment.ok(200).contains(r#"id="plans-at-risk""#), "{}", fragment.text);

    // A repair from the request page: day 1 planned again and marked changed, the rest kept.
    let done = console.post(&format!("{path}/plan"), &[]).await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    let repair = c.plan().await;
    assert_eq!(repair["repairs_plan_id"], plan_id, "{repair}");
    let text = console.get(done.location()).await.ok(200).to_owned();
    let section = plan_section(&text);
    assert!(section.contains(&format!("(repairs plan {plan_id})")), "{section}");
    for d in days(&repair) {
        let row = day_row(section, &d);
        if d["day"] == first["day"] {
            assert_eq!(d["changed"], true, "{repair}");
            assert!(row.contains("data-changed") && row.contains(">changed</span>"), "{row}");
        } else {
            assert_eq!(d["kind"], "booked", "{repair}");
            assert!(
                row.contains(r#"data-kind="booked""#) && !row.contains("data-changed"),
                "{row}"
            );
        }
    }
    let done = console
        .post(
            &format!("{path}/plan/accept"),
            &[("plan_id", &repair["id"].to_string())],
        )
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    scan(&c.b.app);
    let text = console.get("/console/today").await.ok(200).to_owned();
    assert!(!text.contains("plans-at-risk"), "the repair clears the alert: {text}");

    // A collection booked for the request tomorrow (another device, another donor) says so.
    let device = c.b.app.create_device(&c.b.tech, "Spectra Optia 2").await;
    let donor =
        c.b.app
            .register_donor(&c.b.tech, &donor_body("Eve", "A", "positive"))
            .await;
    let midnight = Utc::now().duration_trunc(TimeDelta::days(1)).expect("midnight");
    let booked =
        c.b.app
            .post(
                "/api/v1/collections",
                Some(&c.b.tech),
                &json!({"donor_id": donor, "device_id": device, "request_id": c.request,
                    "scheduled_start": ts(midnight + TimeDelta::days(1) + TimeDelta::hours(8))}),
            )
            .await;
    let extra = booked.ok(201)["id"].as_i64().expect("collection");
    let walk_in =
        c.b.app
            .register_donor(&c.b.tech, &donor_body("Flo", "O", "negative"))
            .await;
    let walk_in =
        c.b.app
            .book(
                &c.b.tech,
                walk_in,
                device,
                midnight + TimeDelta::days(1) + TimeDelta::hours(12),
            )
            .await;
    let other = walk_in.ok(201)["id"].as_i64().expect("collection");
    let text = console.get("/console/today").await.ok(200).to_owned();
    let collections = part(&text, r#"id="collections""#, "</section>");
    let row = part(
        collections,
        &format!(r#"<tr data-collection-id="{extra}" data-status"#),
        "</tr>",
    );
    assert!(
        row.contains(&format!(r#"<a href="{path}">for request {}</a>"#, c.request)),
        "{row}"
    );
    let row = part(
        collections,
        &format!(r#"<tr data-collection-id="{other}" data-status"#),
        "</tr>",
    );
    assert!(!row.contains("for request"), "{row}");
}
