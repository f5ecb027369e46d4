//! Receipt of a supplier unit by scanning its label, and the blood-group scan at issue.

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::bank::bank;
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_supplier_unit_is_received_by_scanning,
    typed_fields_that_disagree_with_the_bag_are_refused,
    unreadable_or_incomplete_labels_are_refused,
    issue_checks_the_scanned_blood_group,
);

const NEW_YORK: Tz = chrono_tz::America::New_York;

/// `cyyjjjhhmm` of `t` on the wall clock of `tz` (20xx years).
fn isbt_time(t: DateTime<Utc>, tz: Tz) -> String {
    let l = t.with_timezone(&tz);
    format!(
        "0{:02}{:03}{:02}{:02}",
        l.year() % 100,
        l.ordinal(),
        l.hour(),
        l.minute()
    )
}

/// `=` + DIN + Type 3 flags, as a scanner reads a bag.
fn din_scan(din: &str) -> String {
    let parsed = granulo::domain::isbt128::Din::parse(din).expect("din");
    format!("={din}{}", parsed.type3_flags())
}

struct Bag {
    din: String,
    collected: DateTime<Utc>,
    expires: DateTime<Utc>,
}

impl Bag {
    fn new() -> Self {
        let collected = now_minute() - TimeDelta::hours(2);
        Self {
            din: next_din(),
            collected,
            expires: collected + TimeDelta::hours(20),
        }
    }

    fn scans(&self, group: &str, tz: Tz) -> Vec<String> {
        vec![
            din_scan(&self.din),
            group.to_owned(),
            format!("=<{PRODUCT}"),
            format!("&>{}", isbt_time(self.expires, tz)),
            format!("&*{}", isbt_time(self.collected, tz)),
        ]
    }
}

fn receipt(scans: &[String]) -> Value {
    json!({"supplier": "NHSBT Filton", "scans": scans, "volume_ml": 200, "granulocyte_count": 0.9e10})
}

fn unit_count(r: &Reply) -> usize {
    r.ok(200)["items"].as_array().map_or(0, Vec::len)
}

async fn a_supplier_unit_is_received_by_scanning(backend: Backend) {
    let mut app = spawn_with(backend, |s| s.timezone = NEW_YORK).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let bag = Bag::new();
    let scans = bag.scans("=%6200", NEW_YORK);
    let r = app.post("/api/v1/units/receive", Some(&tech), &receipt(&scans)).await;
    let unit = r.ok(201).clone();
    assert_eq!(unit["din"], bag.din.as_str());
    assert_eq!(
        (unit["abo"].as_str(), unit["rhd"].as_str()),
        (Some("A"), Some("positive"))
    );
    assert_eq!(unit["source"], "external");
    assert_eq!(unit["supplier"], "NHSBT Filton");
    assert_eq!(unit["product_code"], PRODUCT);
    assert_eq!(unit["status"], "quarantined");
    // The label's wall-clock times are New York time.
    assert_eq!(unit["collected_at"], json!(ts(bag.collected)));
    assert_eq!(unit["expires_at"], json!(ts(bag.expires)));
    let id = unit["id"].as_i64().expect("id");
    // Audited as a creation, with the scans.
    let audit = app
        .get(
            &format!("/api/v1/audit?entity_type=unit&entity_id={id}"),
            Some(&director),
        )
        .await;
    let entries = audit.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["action"], "unit.create");
    assert_eq!(entries[0]["after"]["receipt"]["received_by"], "scanning");
    assert_eq!(entries[0]["after"]["receipt"]["scans"], json!(scans));
    // The same bag twice is one unit.
    app.post("/api/v1/units/receive", Some(&tech), &receipt(&scans))
        .await
        .problem(409, "din_exists");

    // One concatenated read, and typed fields that agree, are taken too.
    let bag = Bag::new();
    let mut body = receipt(&[bag.scans("=%9500", NEW_YORK).concat()]);
    body["abo"] = json!("O");
    body["rhd"] = json!("negative");
    body["expires_at"] = json!(ts(bag.expires));
    body["cmv"] = json!("negative");
    let r = app.post("/api/v1/units/receive", Some(&tech), &body).await;
    assert_eq!(
        (r.ok(201)["abo"].as_str(), r.body["rhd"].as_str()),
        (Some("O"), Some("negative"))
    );
    assert_eq!(r.body["cmv"], "negative");

    // What is not scanned is typed.
    let bag = Bag::new();
    let mut body = receipt(&[din_scan(&bag.din), "=%5100".to_owned()]);
    body["product_code"] = json!(PRODUCT);
    body["expires_at"] = json!(ts(bag.expires));
    body["collected_at"] = json!(ts(bag.collected));
    let r = app.post("/api/v1/units/receive", Some(&tech), &body).await;
    assert_eq!(r.ok(201)["expires_at"], json!(ts(bag.expires)));

    // A pool labelled RhD pooled is received as POST /units receives one: with its donations.
    let bag = Bag::new();
    let mut body = receipt(&bag.scans("=%D000", NEW_YORK));
    app.post("/api/v1/units/receive", Some(&tech), &body)
        .await
        .problem(400, "validation_failed");
    body["pooled_from"] = json!([next_din(), next_din()]);
    let r = app.post("/api/v1/units/receive", Some(&tech), &body).await;
    let pool = r.ok(201).clone();
    assert_eq!(
        (
            pool["abo"].as_str(),
            pool["rhd_pooled"].as_bool(),
            pool["pooled"].as_bool()
        ),
        (Some("O"), Some(true), Some(true))
    );
    let label = app
        .get(&format!("/api/v1/units/{}/label", pool["id"]), Some(&tech))
        .await;
    assert_eq!(label.ok(200)["isbt128"]["blood_group"], "=%D000");
    assert_eq!(label.body["blood_group"], "O RhD pooled");

    // The literal path is not read as a DIN, and only staff receive units.
    app.get("/api/v1/units/receive", Some(&tech))
        .await
        .problem(405, "method_not_allowed");
    let hospital = app.token_for("hospital").await;
    app.post(
        "/api/v1/units/receive",
        Some(&hospital),
        &receipt(&Bag::new().scans("=%6200", NEW_YORK)),
    )
    .await
    .problem(403, "forbidden");
}

async fn typed_fields_that_disagree_with_the_bag_are_refused(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let bag = Bag::new();
    let scans = bag.scans("=%6200", chrono_tz::UTC);
    let (expires, later) = (ts(bag.expires), ts(bag.expires + TimeDelta::hours(1)));
    let (collected, earlier) = (ts(bag.collected), ts(bag.collected - TimeDelta::hours(1)));
    let typed: [(&str, Value, &str, &str); 6] = [
        ("din", json!("A999921123456"), bag.din.as_str(), "A999921123456"),
        ("abo", json!("B"), "A", "B"),
        ("rhd", json!("negative"), "positive", "negative"),
        ("product_code", json!("E1111V00"), PRODUCT, "E1111V00"),
        ("expires_at", json!(later), &expires, &later),
        ("collected_at", json!(earlier), &collected, &earlier),
    ];
    let mut all = receipt(&scans);
    for (field, value, scanned, typed_text) in &typed {
        let mut body = receipt(&scans);
        body[*field] = value.clone();
        all[*field] = value.clone();
        let r = app.post("/api/v1/units/receive", Some(&tech), &body).await;
        let problem = r.problem(422, "label_mismatch");
        assert_eq!(reason_codes(problem), vec![format!("{field}_mismatch")], "{}", r.text);
        assert_eq!(problem["errors"][0]["field"], *field);
        let message = problem["errors"][0]["message"].as_str().expect("message");
        assert!(message.contains(scanned) && message.contains(typed_text), "{message}");
    }
    let r = app.post("/api/v1/units/receive", Some(&tech), &all).await;
    let codes = reason_codes(r.problem(422, "label_mismatch"));
    assert_eq!(
        codes,
        [
            "din_mismatch",
            "abo_mismatch",
            "rhd_mismatch",
            "product_code_mismatch",
            "expires_at_mismatch",
            "collected_at_mismatch"
        ]
    );
    // A pool typed as one RhD disagrees with a bag labelled RhD pooled.
    let mut body = receipt(&bag.scans("=%D000", chrono_tz::UTC));
    body["rhd"] = json!("positive");
    body["pooled_from"] = json!([next_din(), next_din()]);
    let r = app.post("/api/v1/units/receive", Some(&tech), &body).await;
    assert_eq!(reason_codes(r.problem(422, "label_mismatch")), ["rhd_mismatch"]);
    // Nothing was stored.
    assert_eq!(unit_count(&app.get("/api/v1/units", Some(&tech)).await), 0);
}

async fn unreadable_or_incomplete_labels_are_refused(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let bag = Bag::new();
    let good = bag.scans("=%6200", chrono_tz::UTC);
    let with = |i: usize, scan: &str| {
        let mut s = good.clone();
        s[i] = scan.to_owned();
        s
    };
    let mut extra = good.clone();
    extra.push("=A99992112345663".to_owned());
    let cases: Vec<(Vec<String>, &str, &str, &str)> = vec![
        (
            with(0, "=G12341765432171"),
            "invalid_check_character",
            "scans[0]",
            "DIN",
        ),
        (with(0, "=G123417654321"), "invalid_isbt128", "scans[0]", "DIN"),
        (with(1, "=%6201"), "invalid_isbt128", "scans[1]", "blood group"),
        (with(2, "=<e9999V00"), "invalid_isbt128", "scans[2]", "product code"),
        (with(3, "&>0253660000"), "invalid_isbt128", "scans[3]", "expiry"),
        (
            with(4, "+05000"),
            "unsupported_data_structure",
            "scans[4]",
            "unknown structure",
        ),
        (
            with(4, "=+05000"),
            "unsupported_data_structure",
            "scans[4]",
            "unknown structure",
        ),
        (good[..4].to_vec(), "label_not_accepted", "scans", "collection date"),
        (extra, "label_not_accepted", "scans[5]", "DIN"),
        (with(1, "=%5500"), "label_not_accepted", "scans[1]", "RhD not specified"),
        (with(1, "=%Md00"), "label_not_accepted", "scans[1]", "discard"),
        (with(1, "=%G000"), "label_not_accepted", "scans[1]", "pooled-ABO"),
    ];
    for (scans, code, field, named) in cases {
        let r = app.post("/api/v1/units/receive", Some(&tech), &receipt(&scans)).await;
        let problem = r.problem(422, code);
        assert_eq!(problem["errors"][0]["field"], field, "{scans:?}: {}", r.text);
        let message = problem["reasons"][0]["message"].as_str().expect("message");
        assert!(message.contains(named), "{scans:?}: {message}");
    }
    // Every problem is named, each at its index.
    let mut two_bad = with(0, "=G12341765432171");
    two_bad[3] = "=%6201".to_owned();
    two_bad.truncate(4);
    let r = app.post("/api/v1/units/receive", Some(&tech), &receipt(&two_bad)).await;
    let problem = r.problem(422, "invalid_check_character");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["scans[0]", "scans[3]"], "{}", r.text);
    // The shape of the request.
    for body in [
        receipt(&[]),
        receipt(&vec![good[0].clone(); 21]),
        receipt(&[good[0].clone(), "=".repeat(600)]),
        json!({"supplier": "", "scans": good, "volume_ml": 200, "granulocyte_count": 0.9e10}),
        json!({"supplier": "X", "scans": good, "volume_ml": 200}),
        json!({"supplier": "X", "scans": good, "volume_ml": 200, "granulocyte_count": 0.9e10, "colour": "red"}),
        json!({"supplier": "X", "scans": good, "volume_ml": 0, "granulocyte_count": 0.9e10}),
    ] {
        app.post("/api/v1/units/receive", Some(&tech), &body)
            .await
            .problem(400, "validation_failed");
    }
    // A typed DIN is checked as POST /units checks it.
    let mut body = receipt(&good);
    let k = granulo::domain::isbt128::Din::parse(&bag.din)
        .expect("din")
        .check_character();
    body["din"] = json!(format!("{}{}", bag.din, if k == 'A' { 'B' } else { 'A' }));
    app.post("/api/v1/units/receive", Some(&tech), &body)
        .await
        .problem(422, "invalid_check_character");
    // An expired bag is refused as POST /units refuses it.
    let old = Bag {
        din: next_din(),
        collected: now_minute() - TimeDelta::hours(30),
        expires: now_minute() - TimeDelta::hours(6),
    };
    app.post(
        "/api/v1/units/receive",
        Some(&tech),
        &receipt(&old.scans("=%6200", chrono_tz::UTC)),
    )
    .await
    .problem(422, "unit_expired");
    assert_eq!(unit_count(&app.get("/api/v1/units", Some(&tech)).await), 0);
}

async fn issue_checks_the_scanned_blood_group(backend: Backend) {
    let owned = bank(backend).await;
    let b = &owned;
    let tech = b.tech.clone();
    let patient = b.typed_patient(&patient_body("MRN-G", "O", "positive", "male")).await;
    let s = b.sample(patient).await;
    let request = b.request_for(patient, 2).await;
    let (unit, din) = b.ready("O", "positive", "negative", 1).await;
    b.crossmatch(unit, s, "compatible").await;
    let allocation = b.allocated(request, unit).await;
    let issue = |group: &str| {
        let body = json!({"scanned_din": din_scan(&din), "scanned_group": group});
        let tech = tech.clone();
        async move { b.issue(&tech, allocation, body).await }
    };
    let din_as_group = din_scan(&din);
    for (group, code) in [
        ("=%9500", "label_group_mismatch"),
        ("=%6200", "label_group_mismatch"),
        ("=%5500", "label_group_mismatch"),
        ("=%D000", "label_group_mismatch"),
        ("=%6201", "invalid_isbt128"),
        ("=+05000", "unsupported_data_structure"),
        (din_as_group.as_str(), "invalid_isbt128"),
    ] {
        let r = issue(group).await;
        assert_eq!(
            reason_codes(r.problem(422, "issue_refused")),
            [code],
            "{group}: {}",
            r.text
        );
    }
    // Nothing was written: the unit is still allocated, the allocation not issued.
    assert_eq!(b.unit(unit).await["status"], "allocated");
    let r = issue("=%5100").await;
    assert_eq!(r.ok(200)["status"], "issued", "{}", r.text);

    // A pool labelled RhD pooled must read pooled.
    let pool = json!({"source": {"type": "external", "supplier": "Regional centre", "din": next_din(), "abo": "O",
                                 "rhd": "pooled", "collected_at": ts(now_minute() - TimeDelta::hours(1)), "cmv": "negative"},
                      "pooled_from": [next_din(), next_din()],
                      "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10});
    let (pooled, pool_din) = b.ready_from(&pool).await;
    b.crossmatch(pooled, s, "compatible").await;
    let allocation = b.allocated(request, pooled).await;
    let issue = |group: &str| {
        let body = json!({"scanned_din": pool_din.clone(), "scanned_group": group});
        let tech = tech.clone();
        async move { b.issue(&tech, allocation, body).await }
    };
    let r = issue("=%5100").await;
    assert_eq!(
        reason_codes(r.problem(422, "issue_refused")),
        ["label_group_mismatch"],
        "{}",
        r.text
    );
    assert_eq!(b.unit(pooled).await["status"], "allocated");
    assert_eq!(issue("=%D000").await.ok(200)["status"], "issued");
}
