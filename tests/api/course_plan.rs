//! The course planner over HTTP (issue 20): a coordinator gets a roster for a five-day course in
//! one call and books it in a second; a proposal that went stale is refused with what changed
//! and books nothing; a donor who cancels on day 3 breaks the plan, the scan raises
//! `course.plan_broken` naming that day, and a repair replans that day only.

use chrono::{DateTime, Duration, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::{Bank, bank};
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_five_day_roster_is_proposed_in_one_call_and_booked_in_a_second,
    a_stale_proposal_is_refused_with_what_changed_and_books_nothing,
    a_cancellation_on_day_3_raises_an_alert_and_a_repair_replans_that_day_only,
    stated_unavailability_and_missing_devices_leave_days_uncovered_with_reasons,
    a_finding_that_appeared_since_the_proposal_refuses_the_booking,
    a_repair_moves_a_kept_day_when_that_is_the_only_way_to_cover_the_broken_one,
    a_unit_in_stock_covers_the_first_day_and_its_discard_breaks_the_plan,
    a_repair_does_not_move_a_booking_whose_donor_was_stimulated_since,
);

/// Two days from now at 14:00 UTC: the first day's morning slots are still stimulable.
fn first_transfusion() -> DateTime<Utc> {
    let day = (Utc::now() + TimeDelta::days(2)).date_naive();
    day.and_hms_opt(14, 0, 0).expect("time").and_utc()
}

async fn course_request(b: &Bank, mrn: &str, units: u32) -> i64 {
    course_request_and_patient(b, mrn, units).await.0
}

async fn course_request_and_patient(b: &Bank, mrn: &str, units: u32) -> (i64, i64) {
    let patient = b.typed_patient(&patient_body(mrn, "A", "positive", "male")).await;
    let request = b.request(&json!({"patient_id": patient, "units_requested": units, "needed_by": ts(first_transfusion()),
        "priority": "asap", "indication": {"anc_per_ul": 120, "infection": "invasive aspergillosis", "refractory_hours": 72}}))
        .await;
    (request, patient)
}

async fn donors(b: &Bank, names: &[&str], abo: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for n in names {
        out.push(b.app.register_donor(&b.tech, &donor_body(n, abo, "positive")).await);
    }
    out
}

/// A collection's start and end.
type Span = (DateTime<Utc>, DateTime<Utc>);

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .expect("a time")
        .with_timezone(&Utc)
}

async fn propose(b: &Bank, request: i64) -> Value {
    b.app
        .post(&format!("/api/v1/requests/{request}/plan"), Some(&b.tech), &json!({}))
        .await
        .ok(201)
        .clone()
}

/// The technologist's answer to accepting `plan` for `request`.
async fn try_accept(b: &Bank, request: i64, plan: &Value) -> Reply {
    b.app
        .post(
            &format!("/api/v1/requests/{request}/plan/accept"),
            Some(&b.tech),
            &json!({"plan_id": plan["id"]}),
        )
        .await
}

async fn accept(b: &Bank, request: i64, plan: &Value) -> Value {
    try_accept(b, request, plan).await.ok(200).clone()
}

fn days(plan: &Value) -> Vec<Value> {
    plan["days"].as_array().expect("days").clone()
}

/// Every donor's collections in the plan are at least the policy's 48 h apart, at most two in
/// any 7 days, and every collection ends before its transfusion with the stimulation before it.
fn assert_rules_hold(plan: &Value) {
    let mut by_donor: std::collections::HashMap<i64, Vec<Span>> = Default::default();
    for d in days(plan)
        .iter()
        .filter(|d| d["kind"] == "donor" || d["kind"] == "booked")
    {
        let (start, end) = (time(&d["collection"]["start"]), time(&d["collection"]["end"]));
        assert!(end <= time(&d["transfuse_at"]), "{d}");
        if d["kind"] == "donor" {
            assert!(time(&d["stimulation_at"]) < start, "{d}");
            assert!(start - time(&d["stimulation_at"]) <= Duration::hours(24), "{d}");
        }
        by_donor
            .entry(d["donor_id"].as_i64().expect("donor"))
            .or_default()
            .push((start, end));
    }
    for (donor, mut list) in by_donor {
        list.sort();
        for w in list.windows(2) {
            assert!(
                w[1].0 - w[0].1 >= Duration::hours(48),
                "donor {donor} gives twice within 48 h: {list:?}"
            );
        }
        for (i, (s, _)) in list.iter().enumerate() {
            let in_week = list[i..].iter().filter(|(t, _)| *t - *s < Duration::days(7)).count();
            assert!(in_week <= 2, "donor {donor} gives {in_week} times in 7 days");
        }
    }
}

async fn a_five_day_roster_is_proposed_in_one_call_and_booked_in_a_second(backend: Backend) {
    let b = bank(backend).await;
    let device = b.app.create_device(&b.tech, "Optia 1").await;
    let pool = donors(&b, &["Ann", "Bea", "Cat", "Dot"], "A").await;
    let request = course_request(&b, "PLAN-1", 5).await;

    let plan = propose(&b, request).await;
    assert_eq!(plan["status"], "proposed");
    assert_eq!(plan["proven_optimal"], true);
    assert_eq!(plan["score"]["uncovered_days"], 0, "{plan}");
    let list = days(&plan);
    assert_eq!(list.len(), 5);
    for (i, d) in list.iter().enumerate() {
        assert_eq!(d["day"], i as i64 + 1);
        assert_eq!(d["kind"], "donor", "{d}");
        assert!(pool.contains(&d["donor_id"].as_i64().expect("donor")));
        assert_eq!(d["collection"]["device_id"], device);
        assert_eq!(d["abo_identical"], true);
        assert!(d["findings"].is_array() && d["stimulations"].as_array().is_some_and(|s| !s.is_empty()));
        assert_eq!(d["collection_id"], Value::Null);
    }
    // Consecutive days never share a donor (48 h), and five days need three donors at least.
    assert_rules_hold(&plan);
    let mut used: Vec<i64> = list.iter().filter_map(|d| d["donor_id"].as_i64()).collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 3, "{used:?}");
    // Proposing books nothing.
    let view = b
        .app
        .get(&format!("/api/v1/requests/{request}"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(view["plan"], Value::Null);

    let accepted = accept(&b, request, &plan).await;
    assert_eq!(accepted["status"], "accepted");
    for d in days(&accepted) {
        let id = d["collection_id"].as_i64().expect("booked");
        let c = b
            .app
            .get(&format!("/api/v1/collections/{id}"), Some(&b.tech))
            .await
            .ok(200)
            .clone();
        assert_eq!(c["status"], "scheduled");
        assert_eq!(c["donor_id"], d["donor_id"]);
        assert_eq!(c["request_id"], request);
        assert_eq!(time(&c["scheduled_start"]), time(&d["collection"]["start"]));
    }
    // GET shows the accepted plan with its collections.
    let latest = b
        .app
        .get(&format!("/api/v1/requests/{request}/plan"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(latest["status"], "accepted");
    let booked: Vec<Value> = days(&accepted).iter().map(|d| d["collection_id"].clone()).collect();
    assert_eq!(
        days(&latest)
            .iter()
            .map(|d| d["collection_id"].clone())
            .collect::<Vec<_>>(),
        booked
    );
    // The request shows the plan in force; the hospital sees it without donor identities.
    let view = b
        .app
        .get(&format!("/api/v1/requests/{request}"), Some(&b.hosp))
        .await
        .ok(200)
        .clone();
    let shown = view["plan"]["days"].as_array().expect("plan days");
    assert_eq!(shown.len(), 5);
    assert!(
        shown
            .iter()
            .all(|d| d["collection_status"] == "scheduled" && d.get("donor_id").is_none())
    );
    // Accepting twice is refused; the audit trail has both steps.
    try_accept(&b, request, &plan).await.problem(409, "plan_superseded");
    let audit = b.app.get("/api/v1/audit?entity_type=request", Some(&b.director)).await;
    let actions: Vec<String> = audit.body["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["action"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        actions.iter().any(|a| a == "course_plan.propose") && actions.iter().any(|a| a == "course_plan.accept"),
        "{actions:?}"
    );
    // Hospitals cannot plan; another request's plan id is unknown.
    b.app
        .post(&format!("/api/v1/requests/{request}/plan"), Some(&b.hosp), &json!({}))
        .await
        .problem(403, "forbidden");
    let other = course_request(&b, "PLAN-1B", 1).await;
    try_accept(&b, other, &plan).await.problem(422, "unknown_plan");
    // A second course cannot take the booked donors' slots or break their intervals.
    let second = propose(&b, other).await;
    assert_rules_hold(&second);
    for d in days(&second).iter().filter(|d| d["kind"] == "donor") {
        let start = time(&d["collection"]["start"]);
        for mine in days(&accepted) {
            let (s, e) = (time(&mine["collection"]["start"]), time(&mine["collection"]["end"]));
            assert!(
                start >= e || time(&d["collection"]["end"]) <= s,
                "device double-booked: {d}"
            );
        }
    }
}

async fn a_stale_proposal_is_refused_with_what_changed_and_books_nothing(backend: Backend) {
    let b = bank(backend).await;
    let device = b.app.create_device(&b.tech, "Optia 1").await;
    donors(&b, &["Ann", "Bea", "Cat"], "A").await;
    let request = course_request(&b, "PLAN-2", 3).await;

    // A newer proposal supersedes the older one.
    let old = propose(&b, request).await;
    let plan = propose(&b, request).await;
    try_accept(&b, request, &old).await.problem(409, "plan_superseded");

    // Day 1's donor is deferred and day 2's slot is taken after the proposal.
    let list = days(&plan);
    let day1 = list[0]["donor_id"].as_i64().expect("donor");
    b.app
        .post(
            &format!("/api/v1/donors/{day1}/deferrals"),
            Some(&b.tech),
            &json!({"reason": "flu", "permanent": false, "until": ts(Utc::now() + TimeDelta::days(30))}),
        )
        .await
        .ok(201);
    let intruder = b.app.register_donor(&b.tech, &donor_body("Eve", "B", "positive")).await;
    b.app
        .book(&b.tech, intruder, device, time(&list[1]["collection"]["start"]))
        .await
        .ok(201);

    let refused = try_accept(&b, request, &plan).await;
    let body = refused.problem(409, "plan_changed").clone();
    let reasons: Vec<(String, String)> = body["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap_or("").to_owned(),
                r["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(c, m)| c == "donor_ineligible" && m.starts_with("day 1 ")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(c, m)| c == "device_busy" && m.starts_with("day 2 ")),
        "{reasons:?}"
    );
    // Nothing was booked for the request, and the plan stays a proposal.
    let view = b
        .app
        .get(&format!("/api/v1/requests/{request}"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(view["plan"], Value::Null);
    let latest = b
        .app
        .get(&format!("/api/v1/requests/{request}/plan"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(latest["status"], "proposed");
    for d in days(&plan) {
        let donor = d["donor_id"].as_i64().expect("donor");
        let mine = b
            .app
            .get(&format!("/api/v1/collections?donor_id={donor}"), Some(&b.tech))
            .await
            .ok(200)
            .clone();
        assert_eq!(
            mine["items"].as_array().map(Vec::len),
            Some(0),
            "donor {donor} was booked"
        );
    }
    // Proposing again plans around both changes.
    let again = propose(&b, request).await;
    assert!(days(&again).iter().all(|d| d["donor_id"] != day1), "{again}");
    assert_eq!(accept(&b, request, &again).await["status"], "accepted");
}

async fn open_alerts(b: &Bank, kind: &str) -> Vec<Value> {
    b.app
        .get(&format!("/api/v1/alerts?kind={kind}&status=open"), Some(&b.tech))
        .await
        .ok(200)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn scan(b: &Bank) {
    let mut conn = b.app.state.pool.get().expect("conn");
    granulo::store::write_tx(&mut conn, |c| {
        granulo::jobs::scan(c, Utc::now(), &granulo::domain::policy::Policy::default())
    })
    .expect("scan");
}

async fn a_cancellation_on_day_3_raises_an_alert_and_a_repair_replans_that_day_only(backend: Backend) {
    let b = bank(backend).await;
    b.app.create_device(&b.tech, "Optia 1").await;
    donors(&b, &["Ann", "Bea", "Cat", "Dot", "Eli"], "A").await;
    let request = course_request(&b, "PLAN-3", 5).await;
    let accepted = accept(&b, request, &propose(&b, request).await).await;
    scan(&b);
    assert!(open_alerts(&b, "course.plan_broken").await.is_empty());

    // Day 3's donor cancels: the coordinator aborts the booking.
    let list = days(&accepted);
    let day3 = list[2]["collection_id"].as_i64().expect("booked");
    b.app
        .post(
            &format!("/api/v1/collections/{day3}/abort"),
            Some(&b.tech),
            &json!({"reason": "donor cancelled"}),
        )
        .await
        .ok(200);
    scan(&b);
    let open = open_alerts(&b, "course.plan_broken").await;
    assert_eq!(open.len(), 1, "{open:?}");
    let message = open[0]["message"].as_str().unwrap_or("");
    assert!(message.starts_with(&format!("day 3 of request {request}")), "{message}");
    assert!(
        message.contains(&format!("collection {day3} was aborted (donor cancelled)")),
        "{message}"
    );

    // The repair keeps days 1, 2, 4 and 5 as booked and plans day 3 again.
    let repair = propose(&b, request).await;
    assert_eq!(repair["repairs_plan_id"], accepted["id"]);
    let fixed = days(&repair);
    for (i, d) in fixed.iter().enumerate() {
        if i == 2 {
            assert_eq!(
                (d["kind"].as_str(), d["changed"].as_bool()),
                (Some("donor"), Some(true)),
                "{d}"
            );
        } else {
            assert_eq!(d["kind"], "booked", "{d}");
            assert_eq!(d["collection_id"], list[i]["collection_id"]);
            assert_eq!(d["changed"], false);
        }
    }
    assert_rules_hold(&repair);
    let repaired = accept(&b, request, &repair).await;
    let new3 = days(&repaired)[2]["collection_id"].as_i64().expect("booked");
    assert_ne!(new3, day3);
    scan(&b);
    assert!(open_alerts(&b, "course.plan_broken").await.is_empty());
    let view = b
        .app
        .get(&format!("/api/v1/requests/{request}"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(view["plan"]["plan_id"], repaired["id"]);
    assert_eq!(view["plan"]["days"][2]["collection_id"], new3);
}

async fn stated_unavailability_and_missing_devices_leave_days_uncovered_with_reasons(backend: Backend) {
    let b = bank(backend).await;
    let request = course_request(&b, "PLAN-4", 2).await;
    // No device at all.
    let plan = propose(&b, request).await;
    assert!(
        days(&plan)
            .iter()
            .all(|d| d["uncovered_reason"]["code"] == "no_device_capacity"),
        "{plan}"
    );
    try_accept(&b, request, &plan).await.problem(409, "plan_not_bookable");

    b.app.create_device(&b.tech, "Optia 1").await;
    let [ann] = donors(&b, &["Ann"], "A").await[..] else {
        panic!("one donor")
    };
    // Ann cannot come on the day before or the day of the first transfusion.
    let first = first_transfusion().date_naive();
    let stated = b
        .app
        .post(
            &format!("/api/v1/donors/{ann}/availability"),
            Some(&b.tech),
            &json!({"from": (first - Duration::days(1)).to_string(), "until": first.to_string(), "available": false, "note": "away"}),
        )
        .await
        .ok(201)
        .clone();
    assert_eq!(stated["available"], false);
    let plan = propose(&b, request).await;
    let list = days(&plan);
    assert_eq!(list[0]["uncovered_reason"]["code"], "no_available_donor", "{plan}");
    assert_eq!(list[1]["donor_id"], ann, "{plan}");
    // A later statement wins.
    b.app
        .post(
            &format!("/api/v1/donors/{ann}/availability"),
            Some(&b.tech),
            &json!({"from": first.to_string(), "until": first.to_string(), "available": true}),
        )
        .await
        .ok(201);
    let listed = b
        .app
        .get(&format!("/api/v1/donors/{ann}/availability"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    b.app
        .post(
            &format!("/api/v1/donors/{ann}/availability"),
            Some(&b.tech),
            &json!({"from": first.to_string(), "until": (first - Duration::days(1)).to_string(), "available": true}),
        )
        .await
        .problem(400, "validation_failed");
}

async fn a_finding_that_appeared_since_the_proposal_refuses_the_booking(backend: Backend) {
    let b = bank(backend).await;
    b.app.create_device(&b.tech, "Optia 1").await;
    donors(&b, &["Ann", "Bea"], "A").await;
    let (request, patient) = course_request_and_patient(&b, "PLAN-5", 2).await;
    let plan = propose(&b, request).await;
    assert!(
        days(&plan)
            .iter()
            .all(|d| d["kind"] == "donor" && d["findings"].as_array().is_some_and(Vec::is_empty)),
        "{plan}"
    );

    // The patient is found to have granulocyte antibodies: every donor's unit now needs an
    // authorisation the coordinator has not seen.
    b.app
        .patch(
            &format!("/api/v1/patients/{patient}"),
            Some(&b.hosp),
            &json!({"granulocyte_antibodies": true}),
        )
        .await
        .ok(200);
    let refused = try_accept(&b, request, &plan).await;
    let body = refused.problem(409, "plan_changed").clone();
    let codes: Vec<&str> = body["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert_eq!(codes, vec!["findings_changed", "findings_changed"], "{body}");
    assert!(
        body["reasons"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("hna_antibodies"),
        "{body}"
    );
    // Proposed again, the finding is shown, and the plan books.
    let again = propose(&b, request).await;
    assert!(
        days(&again).iter().all(|d| d["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["code"] == "hna_antibodies"))),
        "{again}"
    );
    assert_eq!(accept(&b, request, &again).await["status"], "accepted");
}

async fn unavailable(b: &Bank, donor: i64, from: chrono::NaiveDate, until: chrono::NaiveDate) {
    b.app
        .post(
            &format!("/api/v1/donors/{donor}/availability"),
            Some(&b.tech),
            &json!({"from": from.to_string(), "until": until.to_string(), "available": false}),
        )
        .await
        .ok(201);
}

async fn a_repair_moves_a_kept_day_when_that_is_the_only_way_to_cover_the_broken_one(backend: Backend) {
    let b = bank(backend).await;
    b.app.create_device(&b.tech, "Optia 1").await;
    let pool = donors(&b, &["Ann", "Bea", "Cat"], "A").await;
    let request = course_request(&b, "PLAN-6", 2).await;
    let accepted = accept(&b, request, &propose(&b, request).await).await;
    let list = days(&accepted);
    let (x, y) = (
        list[0]["donor_id"].as_i64().expect("x"),
        list[1]["donor_id"].as_i64().expect("y"),
    );
    let z = *pool.iter().find(|d| **d != x && **d != y).expect("a third donor");
    let x_booking = list[0]["collection_id"].as_i64().expect("booked");
    // Day 2's donor cancels and is away; the third donor can come only before day 2.
    let day1 = first_transfusion().date_naive();
    let y_booking = list[1]["collection_id"].as_i64().expect("booked");
    b.app
        .post(
            &format!("/api/v1/collections/{y_booking}/abort"),
            Some(&b.tech),
            &json!({"reason": "donor cancelled"}),
        )
        .await
        .ok(200);
    unavailable(&b, y, day1 - Duration::days(1), day1 + Duration::days(1)).await;
    unavailable(&b, z, day1, day1 + Duration::days(1)).await;

    // Keeping day 1 leaves day 2 without anyone (day 1's donor cannot give again within 48 h):
    // the repair moves day 1 to the third donor (the day before) and gives day 2 to day 1's.
    let repair = propose(&b, request).await;
    assert_eq!(repair["score"]["uncovered_days"], 0, "{repair}");
    assert_eq!(repair["score"]["changed_days"], 1, "{repair}");
    let fixed = days(&repair);
    assert_eq!(
        (fixed[0]["kind"].as_str(), fixed[0]["donor_id"].as_i64()),
        (Some("donor"), Some(z)),
        "{repair}"
    );
    assert_eq!(fixed[0]["replaces_collection_id"], x_booking);
    assert_eq!(fixed[0]["changed"], true);
    assert_eq!(
        (fixed[1]["kind"].as_str(), fixed[1]["donor_id"].as_i64()),
        (Some("donor"), Some(x)),
        "{repair}"
    );
    assert_rules_hold(&repair);

    // Accepting cancels day 1's old booking and books both days, in one transaction.
    let repaired = accept(&b, request, &repair).await;
    let old = b
        .app
        .get(&format!("/api/v1/collections/{x_booking}"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(old["status"], "aborted");
    assert!(
        old["abort_reason"]
            .as_str()
            .unwrap_or("")
            .contains("moved by course plan"),
        "{old}"
    );
    for d in days(&repaired) {
        let id = d["collection_id"].as_i64().expect("booked");
        let c = b
            .app
            .get(&format!("/api/v1/collections/{id}"), Some(&b.tech))
            .await
            .ok(200)
            .clone();
        assert_eq!(
            (c["status"].as_str(), c["donor_id"].as_i64()),
            (Some("scheduled"), d["donor_id"].as_i64())
        );
    }
    scan(&b);
    assert!(open_alerts(&b, "course.plan_broken").await.is_empty());
}

async fn a_unit_in_stock_covers_the_first_day_and_its_discard_breaks_the_plan(backend: Backend) {
    let b = bank(backend).await;
    b.app.create_device(&b.tech, "Optia 1").await;
    donors(&b, &["Ann"], "A").await;
    // Due in 6 hours, two days: a released, crossmatched unit in stock covers day 1.
    let patient = b.typed_patient(&patient_body("PLAN-7", "A", "positive", "male")).await;
    let request = b.request(&request_body(patient, 2)).await;
    let (unit, din) = b.ready("A", "positive", "negative", 1).await;
    let sample = b.sample(patient).await;
    b.crossmatch(unit, sample, "compatible").await;
    let plan = propose(&b, request).await;
    let list = days(&plan);
    assert_eq!(
        (list[0]["kind"].as_str(), list[0]["unit_id"].as_i64()),
        (Some("unit"), Some(unit)),
        "{plan}"
    );
    assert_eq!(list[0]["din"], din);
    assert_eq!(list[1]["kind"], "donor", "{plan}");
    accept(&b, request, &plan).await;
    scan(&b);
    assert!(open_alerts(&b, "course.plan_broken").await.is_empty());
    b.app
        .post(
            &format!("/api/v1/units/{unit}/discard"),
            Some(&b.tech),
            &json!({"reason": "bag damaged"}),
        )
        .await
        .ok(200);
    scan(&b);
    let open = open_alerts(&b, "course.plan_broken").await;
    assert_eq!(open.len(), 1, "{open:?}");
    let message = open[0]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with(&format!("day 1 of request {request}")) && message.contains("discarded"),
        "{message}"
    );
    assert!(!message.contains("more day"), "{message}");
    // Day 2's donor is deferred: that day is broken too.
    let donor = list[1]["donor_id"].as_i64().expect("donor");
    b.app
        .post(
            &format!("/api/v1/donors/{donor}/deferrals"),
            Some(&b.tech),
            &json!({"reason": "flu", "permanent": false, "until": ts(Utc::now() + TimeDelta::days(30))}),
        )
        .await
        .ok(201);
    // The open alert keeps naming the first day at risk; the repair shows both.
    let repair = propose(&b, request).await;
    let fixed = days(&repair);
    // Day 1 is due in 6 hours: no slot before it leaves time to stimulate anyone.
    assert_eq!(fixed[0]["uncovered_reason"]["code"], "no_time_to_stimulate", "{repair}");
    assert_eq!(fixed[1]["uncovered_reason"]["code"], "no_eligible_donor", "{repair}");
    assert!(fixed.iter().all(|d| d["changed"] == true), "{repair}");
}

async fn a_repair_does_not_move_a_booking_whose_donor_was_stimulated_since(backend: Backend) {
    let b = bank(backend).await;
    b.app.create_device(&b.tech, "Optia 1").await;
    let pool = donors(&b, &["Ann", "Bea", "Cat"], "A").await;
    let request = course_request(&b, "PLAN-8", 2).await;
    let list = days(&accept(&b, request, &propose(&b, request).await).await);
    let (x, y) = (
        list[0]["donor_id"].as_i64().expect("x"),
        list[1]["donor_id"].as_i64().expect("y"),
    );
    let z = *pool.iter().find(|d| **d != x && **d != y).expect("a third donor");
    let (x_booking, y_booking) = (list[0]["collection_id"].clone(), list[1]["collection_id"].clone());
    b.app
        .post(
            &format!("/api/v1/collections/{y_booking}/abort"),
            Some(&b.tech),
            &json!({"reason": "donor cancelled"}),
        )
        .await
        .ok(200);
    let day1 = first_transfusion().date_naive();
    unavailable(&b, y, day1 - Duration::days(1), day1 + Duration::days(1)).await;
    unavailable(&b, z, day1, day1 + Duration::days(1)).await;
    let repair = propose(&b, request).await;
    assert_eq!(days(&repair)[0]["replaces_collection_id"], x_booking, "{repair}");
    // Day 1's donor takes the first dose for the booking the repair would move.
    b.app
        .post(
            &format!("/api/v1/donors/{x}/stimulations"),
            Some(&b.tech),
            &json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": ts(now_minute()), "collection_id": x_booking}),
        )
        .await
        .ok(201);
    let body = try_accept(&b, request, &repair)
        .await
        .problem(409, "plan_changed")
        .clone();
    let codes: Vec<&str> = body["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(codes.contains(&"collection_stimulated"), "{body}");
    let kept = b
        .app
        .get(&format!("/api/v1/collections/{x_booking}"), Some(&b.tech))
        .await
        .ok(200)
        .clone();
    assert_eq!(kept["status"], "scheduled");
}
