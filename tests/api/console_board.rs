//! The console's board and unit pages over HTTP, on both backends: FEFO order, filters, bands at
//! the policy thresholds, what is left off the board, the live fragments, and a unit's facts,
//! trace and label.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::bank;
use crate::both_backends;
use crate::console_support::*;
use crate::helpers::*;

both_backends!(
    board_lists_units_first_expiring_first_in_bands_that_follow_the_policy,
    board_filters_by_group_and_status,
    board_leaves_out_transfused_and_discarded_units_and_marks_expired_ones,
    board_fragments_are_the_live_parts_alone,
    unit_page_shows_facts_trace_and_label,
    console_pages_need_a_session,
);

/// A board row as the browser tests see it.
#[derive(Debug)]
struct Row {
    din: String,
    id: i64,
    status: String,
    html: String,
}

impl Row {
    fn countdown_class(&self) -> String {
        capture(&self.html, r#"class="countdown ([a-z0-9-]+)""#).unwrap_or_default()
    }

    fn attr(&self, name: &str) -> String {
        capture(&self.html, &format!(r#"{name}="([^"]*)""#)).unwrap_or_default()
    }
}

fn capture(text: &str, pattern: &str) -> Option<String> {
    let re = regex::Regex::new(pattern).expect("regex");
    re.captures(text).map(|c| c[1].to_owned())
}

/// The rows of `tbody#board-rows`, in order.
fn rows(page: &str) -> Vec<Row> {
    let start = page.find(r#"<tbody id="board-rows""#).expect("tbody#board-rows");
    let end = start + page[start..].find("</tbody>").expect("end of tbody");
    page[start..end]
        .split("<tr")
        .skip(1)
        .filter(|chunk| chunk.contains("data-din="))
        .map(|chunk| {
            let head = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
            Row {
                din: capture(head, r#"data-din="([^"]+)""#).expect("data-din"),
                id: capture(head, r#"data-unit-id="(\d+)""#)
                    .and_then(|v| v.parse().ok())
                    .expect("data-unit-id"),
                status: capture(head, r#"data-status="([a-z]+)""#).expect("data-status"),
                html: format!("<tr{chunk}"),
            }
        })
        .collect()
}

fn ids(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

/// What maud writes for `text`.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// No inline script, inline style or inline handler (the CSP forbids them).
fn assert_clean(html: &str) {
    assert!(!html.contains("style="), "an inline style attribute");
    assert!(!html.contains("hx-on"), "an hx-on handler");
    let re = regex::Regex::new(r"<script[^>]*>").expect("regex");
    for tag in re.find_iter(html) {
        assert!(tag.as_str().contains("src="), "an inline script: {}", tag.as_str());
    }
    let handler = regex::Regex::new(r#"\son[a-z]+="#).expect("regex");
    assert!(!handler.is_match(html), "an on… handler attribute");
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).expect("trunc")
}

/// A supplier unit whose label says it expires at `expires_at` (irradiated, and released when
/// `release`); returns (id, din).
async fn expiring_unit(
    app: &Http,
    tech: &str,
    group: (&str, &str),
    expires_at: DateTime<Utc>,
    release: bool,
) -> (i64, String) {
    let din = next_din();
    let mut body = supplier_unit_body(&din, group.0, group.1);
    body["source"]["expires_at"] = json!(expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let id = app.post("/api/v1/units", Some(tech), &body).await.ok(201)["id"]
        .as_i64()
        .expect("unit id");
    app.post(
        &format!("/api/v1/units/{id}/irradiation"),
        Some(tech),
        &json!({"dose_gy": 25}),
    )
    .await
    .ok(200);
    if release {
        release_tested(app, tech, id).await;
    }
    (id, din)
}

async fn set_thresholds(app: &Http, director: &str, thresholds: Value) {
    let mut policy = app.get("/api/v1/policy", Some(director)).await.ok(200).clone();
    policy["alerts"]["expiry_thresholds_hours"] = thresholds;
    app.put("/api/v1/policy", Some(director), &policy).await.ok(200);
}

async fn board_lists_units_first_expiring_first_in_bands_that_follow_the_policy(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let (console, _) = Console::as_role(&mut app, "technologist").await;
    let now = whole_seconds(Utc::now());
    let h = TimeDelta::hours;
    // Created out of order: 5 h, 10 h, 90 min, 3 h to live.
    let five = expiring_unit(&app, &tech, ("A", "positive"), now + h(5), true).await;
    let ten = expiring_unit(&app, &tech, ("O", "negative"), now + h(10), false).await;
    let ninety = expiring_unit(&app, &tech, ("B", "positive"), now + TimeDelta::minutes(90), true).await;
    let three = expiring_unit(&app, &tech, ("AB", "negative"), now + h(3), false).await;

    let page = console.get("/console/board").await;
    let html = page.ok(200);
    assert_clean(html);
    assert!(html.contains(r#"<table id="board""#), "{html}");
    let board = rows(html);
    assert_eq!(
        ids(&board),
        vec![ninety.0, three.0, five.0, ten.0],
        "first-expiring first"
    );
    assert_eq!(board[0].din, ninety.1);
    // With the default thresholds (8, 4, 2 h): 90 min is under all three, 3 h under two, …
    let classes: Vec<String> = board.iter().map(Row::countdown_class).collect();
    assert_eq!(classes, ["band-3", "band-2", "band-1", "band-0"]);
    for row in &board {
        assert_eq!(row.attr("data-bands"), "28800,14400,7200");
    }
    assert_eq!(
        board[3].attr("data-expires-at"),
        (now + h(10)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert!(
        board[0]
            .html
            .contains(r#"<span class="band-text">2 h or less left</span>"#),
        "{}",
        board[0].html
    );
    assert!(board[3].html.contains("more than 8 h left"));
    // The clock reads without JavaScript: h:mm:ss, just under 10 h.
    let clock = capture(&board[3].html, r#"<span class="clock">(\d+:\d\d:\d\d)</span>"#).expect("clock");
    assert!(clock.starts_with("9:59:") || clock == "10:00:00", "{clock}");
    assert_eq!(board[0].status, "available");
    assert_eq!(board[1].status, "quarantined");
    assert!(
        board[0]
            .html
            .contains(&format!(r#"href="/console/units/{}""#, ninety.0))
    );
    // The caption counts units per band, in words.
    assert!(
        html.contains("1</span> more than 8 h left, ") && html.contains("1</span> 2 h or less left, "),
        "{html}"
    );

    // The bands follow the policy.
    set_thresholds(&app, &director, json!([12, 6, 1])).await;
    let html = console.get("/console/board").await.ok(200).to_owned();
    let board = rows(&html);
    let classes: Vec<String> = board.iter().map(Row::countdown_class).collect();
    assert_eq!(classes, ["band-2", "band-2", "band-2", "band-1"]);
    assert_eq!(board[0].attr("data-bands"), "43200,21600,3600");
    assert!(board[3].html.contains("12 h or less left"), "{}", board[3].html);
    assert!(html.contains("3</span> 6 h or less left"), "{html}");

    set_thresholds(&app, &director, json!([4])).await;
    let board = rows(console.get("/console/board").await.ok(200));
    let classes: Vec<String> = board.iter().map(Row::countdown_class).collect();
    assert_eq!(classes, ["band-1", "band-1", "band-0", "band-0"]);
    assert_eq!(board[0].attr("data-bands"), "14400");
}

async fn board_filters_by_group_and_status(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let (console, _) = Console::as_role(&mut app, "medical_director").await;
    let now = whole_seconds(Utc::now());
    let h = TimeDelta::hours;
    let a_pos = expiring_unit(&app, &tech, ("A", "positive"), now + h(3), true).await.0;
    let a_neg = expiring_unit(&app, &tech, ("A", "negative"), now + h(4), false).await.0;
    let o_neg = expiring_unit(&app, &tech, ("O", "negative"), now + h(5), true).await.0;
    let ab_pos = expiring_unit(&app, &tech, ("AB", "positive"), now + h(6), false)
        .await
        .0;

    let board = |query: &'static str| {
        let console = &console;
        async move {
            let page = console.get(&format!("/console/board{query}")).await;
            let html = page.ok(200).to_owned();
            assert_clean(&html);
            (ids(&rows(&html)), html)
        }
    };
    assert_eq!(board("").await.0, vec![a_pos, a_neg, o_neg, ab_pos]);
    let (found, html) = board("?group=A%2B").await;
    assert_eq!(found, vec![a_pos]);
    // The form keeps the choice, and the live reload asks for the same rows.
    assert!(
        html.contains(r#"id="board-filters" method="get" action="/console/board""#),
        "{html}"
    );
    assert!(html.contains(r#"<option value="A+" selected>"#), "{html}");
    assert!(
        html.contains(r#"hx-get="/console/board/rows?group=A%2B" hx-trigger="sse:board" hx-swap="outerHTML""#),
        "{html}"
    );
    assert!(html.contains(r#"<button type="submit">Filter</button>"#));
    // A hand-typed `+` arrives as a space: still RhD positive.
    assert_eq!(board("?group=A+").await.0, vec![a_pos]);
    assert_eq!(board("?group=A").await.0, vec![a_pos, a_neg]);
    assert_eq!(board("?status=quarantined").await.0, vec![a_neg, ab_pos]);
    let (found, html) = board("?group=O-&status=available").await;
    assert_eq!(found, vec![o_neg]);
    assert!(html.contains(r#"<option value="available" selected>"#), "{html}");
    assert!(
        html.contains(r#"hx-get="/console/board/rows?group=O-&amp;status=available""#),
        "{html}"
    );
    assert_eq!(board("?group=B").await.0, Vec::<i64>::new());
    assert!(board("?group=B").await.1.contains("No unit on the board"));
    assert_eq!(
        board("?status=&group=&done=saved").await.0,
        vec![a_pos, a_neg, o_neg, ab_pos]
    );

    // What the board does not show is refused, with the field named, as a page.
    for (query, field) in [
        ("?status=discarded", "status"),
        ("?status=transfused", "status"),
        ("?group=C", "group"),
    ] {
        let page = console.get(&format!("/console/board{query}")).await;
        let html = page.ok(400);
        assert!(html.contains("validation_failed"), "{html}");
        assert!(html.contains(&format!("<code>{field}</code>")), "{html}");
        assert!(html.contains(r#"id="board-filters" method="get" action="/console/board""#));
        assert_clean(html);
    }
}

async fn board_leaves_out_transfused_and_discarded_units_and_marks_expired_ones(backend: Backend) {
    let b = bank(backend).await;
    let console = Console::admin(&b.app).await;
    let patient = b.typed_patient(&patient_body("BOARD-1", "A", "positive", "male")).await;
    let request = b.request_for(patient, 3).await;
    let sample = b.sample(patient).await;
    let mut units = Vec::new();
    for _ in 0..3 {
        let (unit, din) = b.ready("A", "positive", "negative", 2).await;
        b.crossmatch(unit, sample, "compatible").await;
        units.push((unit, din, b.allocated(request, unit).await));
    }
    let (transfused, issued, allocated) = (&units[0], &units[1], &units[2]);
    b.issued(transfused.2, transfused.1.as_str()).await;
    b.issued(issued.2, issued.1.as_str()).await;
    let now = now_minute();
    b.backdate_issue(transfused.2, now - TimeDelta::hours(4));
    b.app
        .post(
            &format!("/api/v1/allocations/{}/transfusion", transfused.2),
            Some(&b.hosp),
            &json!({"started_at": ts(now - TimeDelta::hours(3)), "ended_at": ts(now - TimeDelta::hours(2))}),
        )
        .await
        .ok(200);
    assert_eq!(b.unit(transfused.0).await["status"], "transfused");
    let (discarded, _) = b.ready("O", "negative", "negative", 2).await;
    b.app
        .post(
            &format!("/api/v1/units/{discarded}/discard"),
            Some(&b.tech),
            &json!({"reason": "bag damaged"}),
        )
        .await
        .ok(200);
    // A unit with seconds to live, left to expire on the shelf.
    let soon = whole_seconds(Utc::now()) + TimeDelta::seconds(5);
    let (expired, expired_din) = expiring_unit(&b.app, &b.tech, ("B", "negative"), soon, false).await;
    let wait = (soon - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(300);
    actix_rt::time::sleep(wait).await;

    let html = console.get("/console/board").await.ok(200).to_owned();
    assert_clean(&html);
    let board = rows(&html);
    let shown = ids(&board);
    assert!(!shown.contains(&transfused.0), "transfused: {shown:?}");
    assert!(!shown.contains(&discarded), "discarded: {shown:?}");
    assert_eq!(shown, vec![expired, issued.0, allocated.0], "expired first (FEFO)");

    let gone = &board[0];
    assert_eq!(gone.din, expired_din);
    assert_eq!(gone.status, "expired");
    assert_eq!(gone.countdown_class(), "expired");
    assert!(gone.html.starts_with(r#"<tr class="off-shelf""#), "{}", gone.html);
    assert!(gone.html.contains("take it off the shelf"), "{}", gone.html);
    assert!(gone.html.contains(r#"<span class="clock">0:00:00</span>"#));
    assert!(gone.html.contains(r#"<span class="band-text">expired</span>"#));
    assert!(html.contains(r#"1</span> expired."#), "{html}");

    let link = format!(r#"<a href="/console/requests/{request}">Request {request}</a>"#);
    assert_eq!(board[1].status, "issued");
    assert!(board[1].html.contains(&format!("{link} (issued)")), "{}", board[1].html);
    assert_eq!(board[2].status, "allocated");
    assert!(
        board[2].html.contains(&format!("{link} (allocated)")),
        "{}",
        board[2].html
    );
    assert!(board[2].html.contains("tests complete"), "{}", board[2].html);
    assert!(board[2].html.contains("<td>yes</td>"), "irradiated: {}", board[2].html);

    assert_eq!(
        ids(&rows(console.get("/console/board?status=expired").await.ok(200))),
        vec![expired]
    );
    assert_eq!(
        ids(&rows(console.get("/console/board?status=issued").await.ok(200))),
        vec![issued.0]
    );

    // The transfused unit's own page still traces it to its recipient.
    let page = console.get(&format!("/console/units/{}", transfused.0)).await;
    let html = page.ok(200);
    assert!(html.contains(r#"data-step="transfusion""#), "{html}");
    assert!(html.contains("BOARD-1"), "the recipient's MRN: {html}");
    assert!(html.contains(&format!(r#"href="/console/requests/{request}""#)));
}

async fn board_fragments_are_the_live_parts_alone(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let (console, _) = Console::as_role(&mut app, "technologist").await;
    let now = whole_seconds(Utc::now());
    let (a, _) = expiring_unit(&app, &tech, ("A", "positive"), now + TimeDelta::hours(3), true).await;
    expiring_unit(&app, &tech, ("O", "negative"), now + TimeDelta::hours(1), false).await;

    let page = console.get("/console/board/rows?group=A%2B&status=available").await;
    let text = page.ok(200).trim();
    assert!(
        text.starts_with(
            r#"<tbody id="board-rows" hx-get="/console/board/rows?group=A%2B&amp;status=available" hx-trigger="sse:board" hx-swap="outerHTML">"#
        ),
        "{text}"
    );
    assert!(text.ends_with("</tbody>"), "{text}");
    assert_eq!(text.matches("<tbody").count(), 1);
    assert!(!text.contains("<html") && !text.contains("<table") && !text.contains("<caption"));
    assert_eq!(ids(&rows(text)), vec![a]);
    assert_clean(text);

    let page = console.get("/console/board/summary").await;
    let text = page.ok(200).trim();
    assert!(
        text.starts_with(
            r#"<span id="board-summary" hx-get="/console/board/summary" hx-trigger="sse:board" hx-swap="outerHTML">"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r##"Units: <span data-count="#board-rows tr[data-unit-id]">2</span>; by time left: "##),
        "{text}"
    );
    assert!(
        text.contains("1</span> 4 h or less left") && text.contains("1</span> 2 h or less left"),
        "{text}"
    );

    // A refused filter is an HTML refusal, not rows.
    let page = console.get("/console/board/rows?status=discarded").await;
    assert!(page.ok(400).contains("validation_failed"));
}

async fn unit_page_shows_facts_trace_and_label(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let (console, _) = Console::as_role(&mut app, "technologist").await;
    let (id, din) = ready_unit(&app, &tech, "A", "negative").await;
    let label = app
        .get(&format!("/api/v1/units/{id}/label"), Some(&tech))
        .await
        .ok(200)
        .clone();

    for key in [id.to_string(), din.clone()] {
        let page = console.get(&format!("/console/units/{key}")).await;
        let html = page.ok(200);
        assert_clean(html);
        assert!(html.contains(r#"<dl class="facts" id="unit-facts">"#), "{html}");
        assert!(html.contains(r#"id="unit-trace""#));
        assert!(
            html.contains(r#"<div class="label-preview" id="label-preview">"#),
            "{html}"
        );
        assert!(html.contains(&format!("<title>Unit {din} · granulo</title>")), "{html}");
        // The four ISBT 128 data strings, each in its quadrant, as the label service gives them.
        for (quadrant, field) in [
            ("din", "din"),
            ("blood-group", "blood_group"),
            ("product", "product"),
            ("expiry", "expiry"),
        ] {
            let data = label["isbt128"][field].as_str().expect("data string");
            assert!(
                html.contains(&format!(
                    r#"data-quadrant="{quadrant}"><code class="data-string" data-structure="{quadrant}">{}</code>"#,
                    escaped(data)
                )),
                "{quadrant}: {data} in {html}"
            );
        }
        for field in ["blood_group", "expiry_text", "product_name", "din"] {
            let text = label[field].as_str().expect("label text");
            assert!(html.contains(&escaped(text)), "{field}: {text}");
        }
        assert!(html.contains("Do not agitate"));
        // The trace: irradiation, each marker, the release.
        for step in ["unit", "irradiation", "test", "release"] {
            assert!(html.contains(&format!(r#"data-step="{step}""#)), "{step}: {html}");
        }
        assert!(html.contains(r#"data-status="available""#));
        assert!(html.contains(r#"class="countdown band-0""#), "{html}");
    }

    // Unknown units: the HTML 404 page.
    for key in ["999999".to_owned(), next_din()] {
        let page = console.get(&format!("/console/units/{key}")).await;
        let html = page.ok(404);
        assert!(html.contains("unit not found"), "{html}");
        assert!(html.contains("<code>not_found</code>"), "{html}");
        assert_clean(html);
    }
    let page = console.get("/console/units/not-a-din").await;
    assert!(page.status.is_client_error(), "{}", page.status);
    assert!(page.header("content-type").starts_with("text/html"));
}

async fn console_pages_need_a_session(backend: Backend) {
    let app = spawn(backend).await;
    let anonymous = Console::anonymous(&app);
    for path in [
        "/console/board",
        "/console/board?group=A",
        "/console/board/rows",
        "/console/units/1",
    ] {
        let page = anonymous.get(path).await;
        assert_eq!(page.status.as_u16(), 303, "{path}");
        assert!(
            page.location().starts_with("/console/login"),
            "{path}: {}",
            page.location()
        );
    }
    let page = anonymous.get("/console/board").await;
    assert_eq!(page.location(), "/console/login?next=%2Fconsole%2Fboard");
}
