//! Alert episodes (issue 13), one HTTP test per complaint, each driven by data and by the clock
//! passed to the scan, never by sleeping: one alert per unit that escalates through the expiry
//! thresholds (one webhook per raise and per escalation); a condition that clears and comes
//! back opens a new episode; an allocated unit that will be transfused in time is not warned;
//! an event alert that happens again while open is recorded on it; and the live stream delivers
//! an alert whose transaction commits after a later one was sent.
//!
//! Written against the HTTP API and the entry points `jobs::run_once` and
//! `services::alerts::raise` (`services::webhooks::raise` in the release before, against which
//! this file showed each complaint).

use chrono::{DateTime, TimeDelta, Utc};
use granulo::domain::alerts::{AlertKind, AlertSeverity};
use serde_json::{Value, json};

use crate::alerts::{Received, Receiver, receiver};
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_unit_first_seen_near_expiry_raises_one_alert_that_escalates,
    a_condition_that_clears_and_comes_back_opens_a_new_episode,
    an_allocated_unit_transfused_before_the_next_threshold_is_not_warned,
    an_event_alert_that_happens_again_while_open_is_recorded_on_it,
    the_stream_delivers_an_alert_whose_transaction_commits_late,
);

fn scan_at(app: &TestApp, now: DateTime<Utc>) {
    let mut conn = app.state.pool.get().expect("conn");
    granulo::jobs::run_once(&mut conn, "test", now)
        .expect("scan runs")
        .expect("lease free");
}

async fn alerts_of(app: &TestApp, token: &str, query: &str, unit: i64) -> Vec<Value> {
    let unit = unit.to_string();
    app.get(&format!("/api/v1/alerts?limit=500&{query}"), Some(token))
        .await
        .ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["entity_id"].as_str() == Some(unit.as_str()))
        .cloned()
        .collect()
}

/// Irradiated, every required marker negative, and released: ready to allocate.
async fn make_ready(app: &TestApp, tech: &str, unit: i64) {
    app.post(
        &format!("/api/v1/units/{unit}/irradiation"),
        Some(tech),
        &json!({"dose_gy": 25}),
    )
    .await
    .ok(200);
    release_tested(app, tech, unit).await;
}

/// An open request of a new O negative patient, needed at `needed_by`; returns its id.
async fn request_needed_by(app: &TestApp, hosp: &str, mrn: &str, needed_by: DateTime<Utc>) -> i64 {
    let patient = app
        .post(
            "/api/v1/patients",
            Some(hosp),
            &patient_body(mrn, "O", "negative", "male"),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("patient");
    app.post(
        "/api/v1/requests",
        Some(hosp),
        &json!({"patient_id": patient, "units_requested": 1, "needed_by": ts(needed_by), "priority": "asap",
                "indication": {"anc_per_ul": 100, "infection": "sepsis", "refractory_hours": 72}}),
    )
    .await
    .ok(201)["id"]
        .as_i64()
        .expect("request")
}

async fn deliver(app: &TestApp, now: DateTime<Utc>) {
    deliver_webhooks(app, now).await.expect("delivery runs");
}

/// The deliveries about `unit`: (transition, severity, message) of each, in order.
fn delivered_for(got: &Received, unit: i64) -> Vec<(String, String, String)> {
    let unit = unit.to_string();
    got.lock()
        .expect("lock")
        .iter()
        .map(|(_, _, _, body)| serde_json::from_str::<Value>(body).unwrap_or(Value::Null))
        .filter(|b| b["alert"]["entity_id"].as_str() == Some(unit.as_str()))
        .map(|b| {
            (
                b["transition"].as_str().unwrap_or("(none)").to_owned(),
                b["alert"]["severity"].as_str().unwrap_or("").to_owned(),
                b["alert"]["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// "A unit first seen 1 h 30 min from expiry raises three open `unit.expiring` alerts and
/// three webhooks at once": now one urgent alert and one webhook; and a unit watched from 8 h
/// out keeps one alert that escalates at each threshold, one webhook per escalation.
async fn a_unit_first_seen_near_expiry_raises_one_alert_that_escalates(backend: Backend) {
    let mut app = spawn_with(backend, allow_local_webhooks).await;
    let admin = app.admin_token().await;
    let tech = app.token_for("technologist").await;
    let Receiver { url, got } = receiver(0).await;
    app.post(
        "/api/v1/webhooks",
        Some(&admin),
        &json!({"url": url, "events": ["unit.expiring"], "secret": "episode-secret-0123456789"}),
    )
    .await
    .ok(201);
    let collected = now_minute() - TimeDelta::hours(1);
    let expires = collected + TimeDelta::hours(24);
    let late = crate::alerts::supplier_unit(&app, &tech, "C111126000501", collected).await;

    // First seen 1 h 30 min before expiry: past the 8, 4 and 2 h thresholds at once.
    let first = expires - TimeDelta::minutes(90);
    scan_at(&app, first);
    let open = alerts_of(&app, &tech, "status=open&kind=unit.expiring", late).await;
    assert_eq!(
        open.len(),
        1,
        "one open alert per unit, not one per threshold: {open:#?}"
    );
    assert_eq!(open[0]["severity"], "urgent");
    assert!(open[0]["message"].as_str().is_some_and(|m| m.contains("threshold 2 h")));
    deliver(&app, Utc::now()).await;
    let sent = delivered_for(&got, late);
    assert_eq!(sent.len(), 1, "one webhook: {sent:#?}");
    assert_eq!(sent[0].0, "raised");
    assert_eq!(sent[0].1, "urgent");

    // A unit watched from 8 h before expiry: one alert, escalated at each threshold passed.
    let watched = crate::alerts::supplier_unit(&app, &tech, "C111126000502", collected).await;
    let mut seen = Vec::new();
    for (at, severity, threshold) in [
        (expires - TimeDelta::hours(8), "warning", "8"),
        (expires - TimeDelta::hours(6), "warning", "8"),
        (expires - TimeDelta::hours(3), "warning", "4"),
        (expires - TimeDelta::minutes(119), "urgent", "2"),
        (expires - TimeDelta::minutes(30), "urgent", "2"),
    ] {
        scan_at(&app, at);
        let all = alerts_of(&app, &tech, "kind=unit.expiring", watched).await;
        assert_eq!(all.len(), 1, "still one alert at {at}: {all:#?}");
        assert_eq!(all[0]["status"], "open");
        assert_eq!(all[0]["severity"], severity, "at {at}");
        let message = all[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("threshold {threshold} h")), "{message}");
        seen.push(all[0]["id"].clone());
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "the same alert throughout: {seen:?}"
    );
    deliver(&app, Utc::now()).await;
    let sent = delivered_for(&got, watched);
    let transitions: Vec<(&str, &str)> = sent.iter().map(|(t, s, _)| (t.as_str(), s.as_str())).collect();
    assert_eq!(
        transitions,
        vec![("raised", "warning"), ("escalated", "warning"), ("escalated", "urgent")],
        "one webhook per raise and per escalation"
    );
    assert!(sent[1].2.contains("threshold 4 h") && sent[2].2.contains("threshold 2 h"));
    let id = seen[0].as_i64().expect("id");
    let history = app.get(&format!("/api/v1/alerts/{id}/events"), Some(&tech)).await;
    let history: Vec<(Value, Value, Value)> = history.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["transition"].clone(),
                e["severity"].clone(),
                e["previous_severity"].clone(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            (json!("raised"), json!("warning"), Value::Null),
            (json!("escalated"), json!("warning"), json!("warning")),
            (json!("escalated"), json!("urgent"), json!("warning")),
        ]
    );

    // Acknowledged, then escalated: the new stage needs a new acknowledgement.
    let third = crate::alerts::supplier_unit(&app, &tech, "C111126000503", collected).await;
    scan_at(&app, expires - TimeDelta::hours(5));
    let alert = alerts_of(&app, &tech, "kind=unit.expiring", third).await[0].clone();
    let id = alert["id"].as_i64().expect("id");
    app.post(&format!("/api/v1/alerts/{id}/ack"), Some(&tech), &json!({}))
        .await
        .ok(200);
    scan_at(&app, expires - TimeDelta::hours(4));
    let again = alerts_of(&app, &tech, "kind=unit.expiring", third).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["id"], id);
    assert_eq!(again[0]["status"], "open", "re-opened by the escalation");
    assert!(
        again[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("threshold 4 h"))
    );
    // When the unit expires, its expiring alert resolves and the expired one is raised.
    scan_at(&app, expires);
    assert_eq!(
        alerts_of(&app, &tech, "status=open&kind=unit.expiring", watched)
            .await
            .len(),
        0
    );
    assert_eq!(
        alerts_of(&app, &tech, "status=open&kind=unit.expired", watched)
            .await
            .len(),
        1
    );
}

/// "A `request.unallocated` alert that was resolved never fires again for the same entity":
/// now the recurrence opens a new episode.
async fn a_condition_that_clears_and_comes_back_opens_a_new_episode(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let hosp = app.token_for("hospital").await;
    let now = now_minute();
    let request = request_needed_by(&app, &hosp, "EP-1", now + TimeDelta::hours(5)).await;
    let request_id = request.to_string();
    let of_request = |list: Vec<Value>| -> Vec<Value> {
        list.into_iter()
            .filter(|a| a["entity_type"] == "request" && a["entity_id"].as_str() == Some(request_id.as_str()))
            .collect()
    };
    let list = |query: &'static str| {
        let (app, tech) = (&app, tech.clone());
        async move {
            app.get(
                &format!("/api/v1/alerts?limit=500&kind=request.unallocated&{query}"),
                Some(&tech),
            )
            .await
            .ok(200)["items"]
                .as_array()
                .expect("items")
                .clone()
        }
    };
    scan_at(&app, now);
    let first = of_request(list("status=open").await);
    assert_eq!(first.len(), 1, "{first:#?}");

    // A unit is allocated: the condition clears and the alert resolves.
    let unit = crate::alerts::supplier_unit(&app, &tech, "C111126000601", now - TimeDelta::hours(1)).await;
    make_ready(&app, &tech, unit).await;
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
    scan_at(&app, now + TimeDelta::minutes(10));
    assert_eq!(of_request(list("status=open").await).len(), 0);
    assert_eq!(of_request(list("status=resolved").await).len(), 1);

    // The allocation is cancelled: nothing is allocated again, and the alert fires again.
    app.post(
        &format!("/api/v1/allocations/{allocation}/cancel"),
        Some(&tech),
        &json!({"reason": "unit needed elsewhere"}),
    )
    .await
    .ok(200);
    scan_at(&app, now + TimeDelta::minutes(20));
    let again = of_request(list("status=open").await);
    assert_eq!(again.len(), 1, "the recurrence raises an alert again: {again:#?}");
    assert_ne!(again[0]["id"], first[0]["id"], "a new alert: a new episode");
    assert_eq!(again[0]["episode"], 2);
    assert_eq!(of_request(list("").await).len(), 2);
    // Still open at the next scan: one episode, not one per scan.
    scan_at(&app, now + TimeDelta::minutes(30));
    assert_eq!(of_request(list("").await).len(), 2);
}

/// "A unit allocated to a request that will be transfused before the next threshold does not
/// alert at `warning` level" (urgent still does).
async fn an_allocated_unit_transfused_before_the_next_threshold_is_not_warned(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let hosp = app.token_for("hospital").await;
    let now = now_minute();
    // Both units expire 10 h from now: past the 8 h threshold in 2 h, the 4 h one in 6 h.
    let collected = now - TimeDelta::hours(14);
    let expires = collected + TimeDelta::hours(24);
    let allocated = crate::alerts::supplier_unit(&app, &tech, "C111126000701", collected).await;
    let spare = crate::alerts::supplier_unit(&app, &tech, "C111126000702", collected).await;
    make_ready(&app, &tech, allocated).await;
    make_ready(&app, &tech, spare).await;
    // To be transfused 5 h from now: before the unit crosses the 4 h threshold.
    let request = request_needed_by(&app, &hosp, "EP-2", now + TimeDelta::hours(5)).await;
    app.post(
        &format!("/api/v1/requests/{request}/allocations"),
        Some(&tech),
        &json!({"unit_id": allocated}),
    )
    .await
    .ok(201);

    for at in [expires - TimeDelta::hours(8), expires - TimeDelta::hours(5)] {
        scan_at(&app, at);
        assert_eq!(
            alerts_of(&app, &tech, "kind=unit.expiring", spare).await.len(),
            1,
            "the unit in stock is warned at {at}"
        );
        let warned = alerts_of(&app, &tech, "kind=unit.expiring", allocated).await;
        assert_eq!(warned, Vec::<Value>::new(), "the allocated unit is spared at {at}");
    }
    // The transfusion time passed and the unit is still allocated (the plan slipped): warned.
    scan_at(&app, expires - TimeDelta::hours(4));
    let slipped = alerts_of(&app, &tech, "status=open&kind=unit.expiring", allocated).await;
    assert_eq!(slipped.len(), 1, "{slipped:#?}");
    assert_eq!(slipped[0]["severity"], "warning");
    // Urgent is never spared.
    scan_at(&app, expires - TimeDelta::hours(2));
    let urgent = alerts_of(&app, &tech, "status=open&kind=unit.expiring", allocated).await;
    assert_eq!(urgent.len(), 1);
    assert_eq!(urgent[0]["severity"], "urgent");
}

/// Event alerts the scan does not own never clear by themselves: a repeat while open is
/// counted on the open alert (and streamed), acknowledging ends the episode, and the next one
/// opens a new alert.
async fn an_event_alert_that_happens_again_while_open_is_recorded_on_it(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let unit = crate::alerts::supplier_unit(&app, &tech, "C111126000801", now_minute() - TimeDelta::hours(1)).await;
    make_ready(&app, &tech, unit).await;
    let reading = |t: f64| {
        let (app, tech) = (&app, tech.clone());
        async move {
            app.post(
                &format!("/api/v1/units/{unit}/storage-readings"),
                Some(&tech),
                &json!({"temperature_c": t}),
            )
            .await
            .ok(201);
        }
    };
    reading(30.0).await;
    reading(31.0).await;
    let open = alerts_of(&app, &tech, "kind=unit.quarantined", unit).await;
    assert_eq!(open.len(), 1, "one open alert for the unit: {open:#?}");
    assert_eq!(open[0]["occurrences"], 2, "the second excursion is counted on it");
    assert!(
        open[0]["message"].as_str().is_some_and(|m| m.contains("31")),
        "{}",
        open[0]
    );
    let id = open[0]["id"].as_i64().expect("id");
    app.post(&format!("/api/v1/alerts/{id}/ack"), Some(&tech), &json!({}))
        .await
        .ok(200);
    // Its history keeps each occurrence as it was.
    let history = app.get(&format!("/api/v1/alerts/{id}/events"), Some(&tech)).await;
    let history: Vec<(String, String)> = history.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["transition"].as_str().unwrap_or("").to_owned(),
                e["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(history.len(), 3, "{history:#?}");
    assert_eq!(history[0].0, "raised");
    assert!(history[0].1.contains("30"), "{history:#?}");
    assert_eq!(history[1].0, "repeated");
    assert!(history[1].1.contains("31"), "{history:#?}");
    assert_eq!(history[2].0, "acknowledged");
    reading(32.0).await;
    let all = alerts_of(&app, &tech, "kind=unit.quarantined", unit).await;
    assert_eq!(
        all.len(),
        2,
        "acknowledged, the episode ended; the next excursion is a new alert"
    );
    assert_eq!(all[1]["status"], "open");
    assert_eq!(all[1]["episode"], 2);
    // The stream shows each of the four changes once.
    let mut res = app
        .client
        .get(app.url("/api/v1/alerts/stream"))
        .bearer_auth(&tech)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .expect("stream");
    let text = read_stream_until(&mut res, |t| t.matches("\nevent: unit.quarantined").count() >= 4).await;
    let transitions: Vec<String> = events(&text)
        .iter()
        .map(|(_, data)| data["change"]["transition"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        transitions,
        vec!["raised", "repeated", "acknowledged", "raised"],
        "{text}"
    );
}

/// Reads the stream until `done(text so far)`, for at most 10 s (the stream polls every 2 s).
async fn read_stream_until(res: &mut reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done(&text) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match actix_rt::time::timeout(left, res.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    text
}

/// (`id:`, parsed `data:`) of each event in a stream text.
fn events(text: &str) -> Vec<(i64, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let id = block.lines().find_map(|l| l.strip_prefix("id: "))?.parse().ok()?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((id, serde_json::from_str(data).ok()?))
        })
        .collect()
}

/// "Today the stream resumes by alert id, and on PostgreSQL a lower id can commit after a
/// higher one has been sent." Two transactions raise an alert each; the one with the lower
/// alert id commits last. On PostgreSQL the other commits (and is streamed) first and the late
/// one must still arrive; on SQLite writers are serialised, so the second waits for the first
/// and the stream shows them in that order.
async fn the_stream_delivers_an_alert_whose_transaction_commits_late(backend: Backend) {
    use std::sync::mpsc;
    use std::time::Duration;
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let mut res = app
        .client
        .get(app.url("/api/v1/alerts/stream"))
        .bearer_auth(&tech)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200);

    let raise =
        |pool: granulo::store::Pool, entity: i64, opened: mpsc::Sender<()>, commit: Option<mpsc::Receiver<()>>| {
            std::thread::spawn(move || {
                let mut conn = pool.get().expect("conn");
                granulo::store::write_tx(&mut conn, |c| {
                    let raised = granulo::services::alerts::raise(
                        c,
                        granulo::services::alerts::Raise {
                            kind: AlertKind::UnitQuarantined,
                            severity: AlertSeverity::Urgent,
                            entity_id: entity,
                            condition_key: format!("unit.quarantined:{entity}:late-commit"),
                            message: format!("unit {entity} quarantined"),
                            details: json!({}),
                            threshold_hours: None,
                            at: Utc::now(),
                        },
                    )?;
                    assert!(raised.is_some());
                    let _ = opened.send(());
                    if let Some(commit) = &commit {
                        let _ = commit.recv_timeout(Duration::from_secs(30));
                    }
                    Ok::<_, granulo::error::ApiError>(())
                })
                .expect("raise commits");
            })
        };
    let wait = |rx: mpsc::Receiver<()>| async move {
        actix_rt::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(15)).is_ok())
            .await
            .expect("join")
    };

    // The first transaction raises (taking the lower alert id) and stays open.
    let (a_opened, a_opened_rx) = mpsc::channel();
    let (a_commit, a_commit_rx) = mpsc::channel();
    let first = raise(app.state.pool.clone(), 9001, a_opened, Some(a_commit_rx));
    assert!(wait(a_opened_rx).await, "the first transaction raised");
    // The second raises with a higher id.
    let (b_done, b_done_rx) = mpsc::channel();
    let second = raise(app.state.pool.clone(), 9002, b_done, None);
    let order: Vec<&str> = match backend {
        Backend::Postgres => {
            // It commits while the first is still open, and the stream sends it.
            assert!(wait(b_done_rx).await, "the second transaction committed");
            let text = read_stream_until(&mut res, |t| t.contains("\"entity_id\":\"9002\"")).await;
            assert!(text.contains("\"entity_id\":\"9002\""), "{text}");
            assert!(!text.contains("\"entity_id\":\"9001\""), "not committed yet: {text}");
            // Now the lower id commits, last.
            let _ = a_commit.send(());
            let late = read_stream_until(&mut res, |t| t.contains("\"entity_id\":\"9001\"")).await;
            assert!(
                late.contains("\"entity_id\":\"9001\""),
                "the alert whose transaction committed last reaches the stream: {late}"
            );
            vec!["9002", "9001"]
        }
        Backend::Sqlite => {
            // SQLite serialises writers: the second waits for the first to commit.
            let _ = a_commit.send(());
            assert!(wait(b_done_rx).await, "the second transaction committed");
            vec!["9001", "9002"]
        }
    };
    first.join().expect("first");
    second.join().expect("second");
    // Reconnecting from the start replays both, in commit order, each once.
    let mut replay = app
        .client
        .get(app.url("/api/v1/alerts/stream"))
        .bearer_auth(&tech)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .expect("stream");
    let text = read_stream_until(&mut replay, |t| t.matches("\nevent: ").count() >= 2).await;
    let got = events(&text);
    let entities: Vec<&str> = got.iter().map(|(_, d)| d["entity_id"].as_str().unwrap_or("")).collect();
    assert_eq!(entities, order, "{text}");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "ids increase: {text}");
    // Resuming after the first event sends only the second.
    let mut resumed = app
        .client
        .get(app.url("/api/v1/alerts/stream"))
        .bearer_auth(&tech)
        .header("Last-Event-ID", got[0].0.to_string())
        .send()
        .await
        .expect("stream");
    let text = read_stream_until(&mut resumed, |t| t.contains("\nevent: ")).await;
    let entities: Vec<String> = events(&text)
        .iter()
        .map(|(_, d)| d["entity_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(entities, vec![order[1].to_owned()], "{text}");
}
