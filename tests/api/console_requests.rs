//! The console's requests pages over HTTP, on both backends: priority lanes, candidates with
//! their findings, allocation with the acknowledgement or authorisation their tiers need, issue
//! by a scanned DIN, CSRF and roles. What a page says happened is checked through the API.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::bank::*;
use crate::both_backends;
use crate::console_support::*;
use crate::helpers::*;

both_backends!(
    lanes_hold_the_requests_to_serve_by_priority_most_urgent_first,
    candidates_show_findings_and_an_rhd_mismatch_needs_its_acknowledgement,
    a_cmv_mismatch_needs_a_recorded_authorisation,
    issue_by_scanning_refuses_another_din_and_takes_the_right_one,
    forms_need_the_csrf_token_and_the_role_of_the_api,
);

/// The element of `page` that starts at the first `marker` (an attribute) and ends at `end`.
fn part<'a>(page: &'a str, marker: &str, end: &str) -> &'a str {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} on the page: {page}"));
    let tag = page[..start].rfind('<').unwrap_or(start);
    let stop = page[start..].find(end).map_or(page.len(), |i| start + i + end.len());
    &page[tag..stop]
}

fn unit_row(page: &str, unit: i64) -> &str {
    part(page, &format!("data-unit-id=\"{unit}\""), "</tr>")
}

fn lane<'a>(page: &'a str, name: &str) -> &'a str {
    part(page, &format!("id=\"lane-{name}\""), "</section>")
}

/// The request ids of the cards of a lane, in page order.
fn cards(lane: &str) -> Vec<i64> {
    let re = regex::Regex::new(r#"<article class="card" data-request-id="(\d+)""#).expect("regex");
    re.captures_iter(lane).map(|c| c[1].parse().expect("id")).collect()
}

fn allocation_ids(page: &str) -> Vec<i64> {
    let re = regex::Regex::new(r#"data-allocation-id="(\d+)""#).expect("regex");
    re.captures_iter(page).map(|c| c[1].parse().expect("id")).collect()
}

fn request_at(patient: i64, units: u32, priority: &str, hours: i64) -> Value {
    let mut body = request_body(patient, units);
    body["priority"] = json!(priority);
    body["needed_by"] = json!(ts(now_minute() + TimeDelta::hours(hours)));
    body
}

fn supplier(abo: &str, rhd: &str, cmv: &str) -> Value {
    json!({"source": {"type": "external", "supplier": "Regional centre", "din": next_din(), "abo": abo, "rhd": rhd,
                      "collected_at": ts(now_minute() - TimeDelta::hours(1)), "cmv": cmv},
           "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10})
}

async fn allocation(b: &Bank, id: i64) -> Value {
    b.app
        .get(&format!("/api/v1/allocations/{id}"), Some(&b.tech))
        .await
        .ok(200)
        .clone()
}

async fn request(b: &Bank, id: i64) -> Value {
    b.app
        .get(&format!("/api/v1/requests/{id}"), Some(&b.tech))
        .await
        .ok(200)
        .clone()
}

async fn lanes_hold_the_requests_to_serve_by_priority_most_urgent_first(backend: Backend) {
    let mut b = bank(backend).await;
    let confirmed = b.typed_patient(&patient_body("LN-1", "A", "negative", "male")).await;
    // Registered by the hospital, never typed by the blood bank.
    let untyped = b.patient(&patient_body("LN-2", "B", "positive", "female")).await;
    let stat = b.request(&request_at(confirmed, 3, "stat", 2)).await;
    let asap_later = b.request(&request_at(untyped, 1, "asap", 20)).await;
    let asap_sooner = b.request(&request_at(confirmed, 2, "asap", 4)).await;
    let routine = b.request(&request_at(untyped, 1, "routine", 30)).await;
    let scheduled = b.request(&request_at(confirmed, 1, "scheduled", 10)).await;
    let mut waiting_body = request_at(untyped, 1, "stat", 1);
    waiting_body["indication"]["anc_per_ul"] = json!(4000);
    let waiting = b.request(&waiting_body).await;
    assert_eq!(request(&b, waiting).await["status"], "pending_approval");
    let cancelled = b.request(&request_at(confirmed, 1, "stat", 3)).await;
    b.app
        .post(
            &format!("/api/v1/requests/{cancelled}/cancel"),
            Some(&b.hosp),
            &json!({}),
        )
        .await
        .ok(200);

    let (console, _) = Console::as_role(&mut b.app, "technologist").await;
    let page = console.get("/console/requests").await;
    let text = page.ok(200);
    assert!(text.contains(r#"class="lanes""#), "{text}");
    assert_eq!(cards(lane(text, "stat")), vec![waiting, stat]);
    assert_eq!(cards(lane(text, "asap")), vec![asap_sooner, asap_later]);
    assert_eq!(cards(lane(text, "routine")), vec![scheduled, routine]);
    assert!(!cards(text).contains(&cancelled));
    // The lanes appear in the order stat, asap, routine.
    let at = |name: &str| text.find(&format!("id=\"lane-{name}\"")).expect("lane");
    assert!(at("stat") < at("asap") && at("asap") < at("routine"));

    let card = part(text, &format!("data-request-id=\"{stat}\""), "</article>");
    assert!(card.contains("LN-1") && card.contains("Hospital"), "{card}");
    assert!(card.contains("A RhD negative"), "{card}");
    assert!(card.contains(r#"data-group-status="confirmed""#), "{card}");
    assert!(card.contains("confirmed</span> by two concordant typings"), "{card}");
    // The typings' samples were drawn hours ago and are valid for 72 h.
    assert!(card.contains(r#"data-valid-sample="yes""#), "{card}");
    assert!(card.contains("3 requested · 0 allocated · 0 issued"), "{card}");
    assert!(card.contains("1 unit a day for 3 days"), "{card}");
    assert!(card.contains("next to cover: day 1"), "{card}");
    assert!(card.contains(&format!(r#"href="/console/requests/{stat}""#)), "{card}");
    assert!(card.contains("<time datetime="), "{card}");
    let other = part(text, &format!("data-request-id=\"{asap_later}\""), "</article>");
    assert!(other.contains(r#"data-group-status="untyped""#), "{other}");
    assert!(other.contains("not typed"), "{other}");
    assert!(other.contains(r#"data-valid-sample="no""#), "{other}");
    let pending = part(text, &format!("data-request-id=\"{waiting}\""), "</article>");
    assert!(pending.contains("waiting for approval"), "{pending}");

    // The live region reloads itself from the fragment on the `requests` event.
    assert!(text.contains(r#"hx-get="/console/requests/lanes""#), "{text}");
    assert!(text.contains(r#"hx-trigger="sse:requests""#), "{text}");
    let fragment = console.get("/console/requests/lanes").await;
    let fragment = fragment.ok(200);
    assert!(fragment.starts_with("<div class=\"lanes\""), "{fragment}");
    assert!(!fragment.contains("<html"), "{fragment}");
    assert_eq!(cards(lane(fragment, "asap")), vec![asap_sooner, asap_later]);
}

async fn candidates_show_findings_and_an_rhd_mismatch_needs_its_acknowledgement(backend: Backend) {
    let mut b = bank(backend).await;
    let patient = b.typed_patient(&patient_body("CA-1", "O", "negative", "male")).await;
    let req = b.request_for(patient, 2).await;
    let (good, good_din) = b.ready("O", "negative", "negative", 1).await;
    let (rh_pos, rh_din) = b.ready("O", "positive", "negative", 1).await;
    let (group_a, a_din) = b.ready("A", "negative", "negative", 1).await;
    let (console, _) = Console::as_role(&mut b.app, "technologist").await;
    let path = format!("/console/requests/{req}");
    let page = console.get(&path).await;
    let text = page.ok(200);
    assert!(text.contains(r#"<table id="candidates">"#), "{text}");

    let row = unit_row(text, good);
    assert!(row.contains(&format!(r#"data-din="{good_din}""#)), "{row}");
    assert!(row.contains(&format!("Allocate {good_din}")), "{row}");
    assert!(!row.contains(r#"name="acknowledge""#), "{row}");

    let row = unit_row(text, rh_pos);
    assert!(row.contains(r#"class="finding tier-acknowledge""#), "{row}");
    assert!(row.contains("<code>rhd_mismatch</code>"), "{row}");
    assert!(row.contains(r#"<strong class="tier">acknowledge</strong>"#), "{row}");
    assert!(row.contains(r#"name="acknowledge" value="rhd_mismatch""#), "{row}");
    assert!(row.contains(&format!("Allocate {rh_din}")), "{row}");
    assert!(!row.contains("auth_by"), "{row}");

    // A group A unit for a group O patient blocks: its findings, and no button.
    let row = unit_row(text, group_a);
    assert!(row.contains(r#"class="finding tier-block""#), "{row}");
    assert!(row.contains("abo_incompatible"), "{row}");
    assert!(!row.contains(&format!("Allocate {a_din}")), "{row}");
    assert!(!row.contains("<form"), "{row}");
    let refused = console
        .post(&format!("{path}/allocate"), &[("unit_id", &group_a.to_string())])
        .await;
    let refused = refused.ok(422);
    assert!(refused.contains("<code>incompatible</code>"), "{refused}");
    assert_eq!(b.unit(group_a).await["status"], "available");

    // Without the acknowledgement: refused on the page, with the code; nothing allocated.
    let rh = rh_pos.to_string();
    let refused = console.post(&format!("{path}/allocate"), &[("unit_id", &rh)]).await;
    let refused = refused.ok(422);
    assert!(refused.contains("<code>acknowledgement_required</code>"), "{refused}");
    assert!(refused.contains("<code>rhd_mismatch</code>"), "{refused}");
    assert!(refused.contains(r#"role="alert""#), "{refused}");
    assert_eq!(b.unit(rh_pos).await["status"], "available");
    assert_eq!(request(&b, req).await["course"], json!([]));

    // With it: allocated, and the page says so.
    let done = console
        .post(
            &format!("{path}/allocate"),
            &[("unit_id", &rh), ("acknowledge", "rhd_mismatch")],
        )
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    let location = done.location().to_owned();
    assert!(location.starts_with(&format!("{path}?done=Allocated")), "{location}");
    let after = console.get(&location).await;
    let after = after.ok(200);
    assert!(after.contains(&format!("Allocated {rh_din}")), "{after}");
    let ids = allocation_ids(after);
    assert_eq!(ids.len(), 1, "{after}");
    let row = part(after, &format!("data-allocation-id=\"{}\"", ids[0]), "</tr>");
    assert!(row.contains(r#"data-status="allocated""#), "{row}");
    let a = allocation(&b, ids[0]).await;
    assert_eq!(a["status"], "allocated");
    assert_eq!(a["unit_id"], rh_pos);
    assert_eq!(a["request_id"], req);
    assert_eq!(a["acknowledgements"][0]["codes"], json!(["rhd_mismatch"]));
    assert_eq!(b.unit(rh_pos).await["status"], "allocated");
    // The unit is no longer a candidate.
    assert!(!after.contains(&format!("data-unit-id=\"{rh_pos}\"")), "{after}");

    // A unit taken meanwhile: 409 on the page.
    let again = console
        .post(
            &format!("{path}/allocate"),
            &[("unit_id", &rh), ("acknowledge", "rhd_mismatch")],
        )
        .await;
    assert!(again.ok(409).contains("<code>unit_not_available</code>"));
    // A unit id that is no number: a field refusal, not a failure.
    let bad = console.post(&format!("{path}/allocate"), &[("unit_id", "x")]).await;
    assert!(bad.ok(400).contains("<code>unit_id</code>"));
}

async fn a_cmv_mismatch_needs_a_recorded_authorisation(backend: Backend) {
    let mut b = bank(backend).await;
    let patient = b.typed_patient(&patient_body("AU-1", "O", "negative", "male")).await;
    let req = b.request_for(patient, 1).await;
    let (unit, din) = b.ready_from(&supplier("O", "negative", "positive")).await;
    let (console, _) = Console::as_role(&mut b.app, "technologist").await;
    let path = format!("/console/requests/{req}");
    let text = console.get(&path).await.ok(200).to_owned();
    let row = unit_row(&text, unit);
    assert!(row.contains(r#"class="finding tier-authorise""#), "{row}");
    assert!(row.contains("<code>cmv_mismatch</code>"), "{row}");
    assert!(row.contains(r#"<fieldset class="authorisation">"#), "{row}");
    for field in [
        r#"name="auth_by""#,
        r#"<select id="unit-"#,
        r#"name="auth_role""#,
        r#"<option value="on-call haematologist">"#,
        r#"name="auth_reason""#,
    ] {
        assert!(row.contains(field), "{field} in {row}");
    }
    assert!(row.contains(&format!("Allocate {din}")), "{row}");
    let id = unit.to_string();

    // Without an authorisation (an acknowledgement is no authorisation): refused.
    for fields in [
        vec![("unit_id", id.as_str())],
        vec![("unit_id", id.as_str()), ("acknowledge", "cmv_mismatch")],
    ] {
        let refused = console.post(&format!("{path}/allocate"), &fields).await;
        let refused = refused.ok(422);
        assert!(refused.contains("<code>authorisation_required</code>"), "{refused}");
        assert!(refused.contains("<code>cmv_mismatch</code>"), "{refused}");
    }
    // Half an authorisation: the missing fields are named, and what was typed is kept.
    let half = console
        .post(
            &format!("{path}/allocate"),
            &[
                ("unit_id", &id),
                ("auth_by", "Dr A. Okafor"),
                ("auth_role", ""),
                ("auth_reason", ""),
            ],
        )
        .await;
    let half = half.ok(400);
    assert!(
        half.contains("<code>auth_role</code>") && half.contains("<code>auth_reason</code>"),
        "{half}"
    );
    assert!(half.contains(r#"value="Dr A. Okafor""#), "{half}");
    assert_eq!(b.unit(unit).await["status"], "available");

    let done = console
        .post(
            &format!("{path}/allocate"),
            &[
                ("unit_id", &id),
                ("auth_by", "Dr A. Okafor"),
                ("auth_role", "on-call haematologist"),
                ("auth_reason", "no CMV-negative unit in time"),
            ],
        )
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    let after = console.get(done.location()).await;
    let after = after.ok(200);
    assert!(after.contains(&format!("Allocated {din}")), "{after}");
    assert!(after.contains("awaiting a medical director"), "{after}");
    let ids = allocation_ids(after);
    assert_eq!(ids.len(), 1);
    let a = allocation(&b, ids[0]).await;
    assert_eq!(a["status"], "allocated");
    assert_eq!(a["unit_id"], unit);
    assert_eq!(a["authorisations"][0]["codes"], json!(["cmv_mismatch"]));
    assert_eq!(a["authorisations"][0]["by"], "Dr A. Okafor");
    assert_eq!(a["authorisations"][0]["role"], "on-call haematologist");
    assert_eq!(a["authorisations"][0]["reason"], "no CMV-negative unit in time");
    assert_eq!(a["awaiting_sign_off"], true);
}

async fn issue_by_scanning_refuses_another_din_and_takes_the_right_one(backend: Backend) {
    let mut b = bank(backend).await;
    let patient = b.typed_patient(&patient_body("IS-1", "O", "negative", "male")).await;
    let req = b.request_for(patient, 2).await;
    let sample = b.sample(patient).await;
    let (first, first_din) = b.ready("O", "negative", "negative", 1).await;
    let (second, second_din) = b.ready("O", "negative", "negative", 1).await;
    let first_allocation = b.allocated(req, first).await;
    let second_allocation = b.allocated(req, second).await;
    b.crossmatch(first, sample, "compatible").await;
    b.crossmatch(second, sample, "compatible").await;

    let (console, _) = Console::as_role(&mut b.app, "technologist").await;
    let path = format!("/console/requests/{req}");
    let text = console.get(&path).await.ok(200).to_owned();
    let form = part(
        &text,
        &format!("action=\"/console/allocations/{first_allocation}/issue\""),
        "</form>",
    );
    assert!(form.starts_with(r#"<form class="issue"#), "{form}");
    assert!(
        form.contains(&format!(
            r#"<label for="scan-{first_allocation}">Scan or type the DIN</label>"#
        )),
        "{form}"
    );
    assert!(form.contains(r#"name="scanned_din" autocomplete="off""#), "{form}");
    assert!(form.contains("data-scan-autofocus"), "{form}");
    assert!(form.contains(r#"<button type="submit">Issue</button>"#), "{form}");
    // Only the first scan field takes the focus.
    assert_eq!(text.matches("data-scan-autofocus").count(), 1, "{text}");
    let issue = format!("/console/allocations/{first_allocation}/issue");

    // Another unit's DIN (valid ISBT 128): refused on the page with its code; not issued.
    let refused = console.post(&issue, &[("scanned_din", &second_din)]).await;
    let refused = refused.ok(422);
    assert!(refused.contains("<code>issue_refused</code>"), "{refused}");
    assert!(refused.contains("<code>din_mismatch</code>"), "{refused}");
    assert!(
        refused.contains(&format!(r#"data-allocation-id="{first_allocation}""#)),
        "{refused}"
    );
    // Typing noise: not a DIN.
    let noise = console.post(&issue, &[("scanned_din", "hello")]).await;
    assert!(noise.ok(422).contains("<code>invalid_isbt128</code>"));
    assert_eq!(allocation(&b, first_allocation).await["status"], "allocated");
    assert_eq!(b.unit(first).await["status"], "allocated");
    // After a refusal the refused scan field takes the focus, so the next scan goes there.
    let refused = console
        .post(
            &format!("/console/allocations/{second_allocation}/issue"),
            &[("scanned_din", &first_din)],
        )
        .await;
    let refused = refused.ok(422);
    assert!(refused.contains("<code>din_mismatch</code>"), "{refused}");
    assert_eq!(refused.matches("data-scan-autofocus").count(), 1);
    let focused = part(refused, "data-scan-autofocus", ">");
    assert!(
        focused.contains(&format!(r#"id="scan-{second_allocation}""#)),
        "{focused}"
    );
    assert_eq!(allocation(&b, second_allocation).await["status"], "allocated");

    // The scanner types the `=` data structure with its flags, and Enter submits.
    let done = console
        .post(&issue, &[("scanned_din", &format!("={first_din}00"))])
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    assert_eq!(
        done.location(),
        format!("{path}?done=Issued+{first_din}"),
        "{}",
        done.text
    );
    let a = allocation(&b, first_allocation).await;
    assert_eq!(a["status"], "issued");
    assert_eq!(a["scanned_din"], format!("={first_din}00"));
    assert_eq!(b.unit(first).await["status"], "issued");
    let after = console.get(done.location()).await;
    let after = after.ok(200);
    assert!(after.contains(&format!("Issued {first_din}")), "{after}");
    let row = part(after, &format!("data-allocation-id=\"{first_allocation}\""), "</tr>");
    assert!(
        row.contains(r#"data-status="issued""#) && !row.contains("<form"),
        "{row}"
    );

    // The eye-readable label typed in full: DIN, flags, check character.
    let k = b.unit(second).await["check_character"]
        .as_str()
        .expect("check character")
        .to_owned();
    let typed = format!("{second_din} 00 {k}");
    let done = console
        .post(
            &format!("/console/allocations/{second_allocation}/issue"),
            &[("scanned_din", &typed)],
        )
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    assert_eq!(allocation(&b, second_allocation).await["status"], "issued");
    assert_eq!(request(&b, req).await["status"], "fulfilled");
}

async fn forms_need_the_csrf_token_and_the_role_of_the_api(backend: Backend) {
    let mut b = bank(backend).await;
    let patient = b.typed_patient(&patient_body("CS-1", "O", "negative", "male")).await;
    let req = b.request_for(patient, 1).await;
    let (unit, din) = b.ready("O", "negative", "negative", 1).await;
    let (tech, _) = Console::as_role(&mut b.app, "technologist").await;
    let path = format!("/console/requests/{req}");

    // No token, or another session's: 403 and nothing allocated.
    let (other, _) = Console::as_role(&mut b.app, "technologist").await;
    for csrf in [None, Some(other.csrf.as_str())] {
        let mut fields = vec![("unit_id", unit.to_string())];
        if let Some(token) = csrf {
            fields.push(("csrf", token.to_owned()));
        }
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = tech.post_raw(&format!("{path}/allocate"), &pairs).await;
        assert!(refused.ok(403).contains("csrf_token_invalid"), "{}", refused.text);
    }
    assert_eq!(b.unit(unit).await["status"], "available");
    assert_eq!(request(&b, req).await["course"], json!([]));

    // Allocated, then an issue without the token: 403, still allocated.
    let done = tech
        .post(&format!("{path}/allocate"), &[("unit_id", &unit.to_string())])
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    let allocation_id = request(&b, req).await["course"][0]["allocation_id"]
        .as_i64()
        .expect("allocation");
    let refused = tech
        .post_raw(
            &format!("/console/allocations/{allocation_id}/issue"),
            &[("scanned_din", &din)],
        )
        .await;
    assert!(refused.ok(403).contains("csrf_token_invalid"));
    assert_eq!(allocation(&b, allocation_id).await["status"], "allocated");

    // Every staff role allocates (as the API); approving is a medical director's.
    let admin = Console::admin(&b.app).await;
    let (other_unit, other_din) = b.ready("O", "negative", "negative", 1).await;
    let mut waiting_body = request_body(patient, 1);
    waiting_body["indication"]["anc_per_ul"] = json!(4000);
    let waiting = b.request(&waiting_body).await;
    let open_page = admin
        .get(&format!("/console/requests/{}", b.request_for(patient, 1).await))
        .await;
    assert!(open_page.ok(200).contains(&format!("Allocate {other_din}")));
    let waiting_path = format!("/console/requests/{waiting}");
    let seen = tech.get(&waiting_path).await;
    let seen = seen.ok(200);
    assert!(!seen.contains(r#"class="approve"#), "{seen}");
    // Units wait for the approval: shown, not allocatable.
    assert!(unit_row(seen, other_unit).contains("—"));
    assert!(!seen.contains(&format!("Allocate {other_din}")), "{seen}");
    let refused = tech.post(&format!("{waiting_path}/approve"), &[]).await;
    assert!(refused.ok(403).contains("<code>forbidden</code>"));
    assert_eq!(request(&b, waiting).await["status"], "pending_approval");

    let (director, _) = Console::as_role(&mut b.app, "medical_director").await;
    let seen = director.get(&waiting_path).await;
    let seen = seen.ok(200);
    assert!(seen.contains(r#"<form class="approve stack""#), "{seen}");
    assert!(seen.contains(&format!("Approve request {waiting}")), "{seen}");
    let refused = director
        .post(&format!("{waiting_path}/decline"), &[("reason", " ")])
        .await;
    assert!(refused.ok(400).contains("<code>reason</code>"));
    let done = director
        .post(&format!("{waiting_path}/approve"), &[("reason", "indication reviewed")])
        .await;
    assert_eq!(done.status.as_u16(), 303, "{}", done.text);
    let r = request(&b, waiting).await;
    assert_eq!(r["status"], "open");
    assert_eq!(r["decision_reason"], "indication reviewed");
    let after = director.get(done.location()).await;
    assert!(after.ok(200).contains(&format!("Approved request {waiting}")));
    assert!(after.text.contains(&format!("Allocate {other_din}")));

    // An unknown request is a 404 page; a path that is no id, a 400 one.
    assert!(tech.get("/console/requests/999999").await.ok(404).contains("not_found"));
    tech.get("/console/requests/abc").await.ok(400);
}
