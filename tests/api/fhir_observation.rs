//! FHIR `Observation`: the blood group of record, crossmatch results, and the absolute neutrophil
//! counts a hospital reports, which feed the transfusion outcome.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::{Bank, bank};
use crate::both_backends;
use crate::fhir_support::{self as fhir, entries, entry_ids};
use crate::helpers::*;

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const ISBT_ABO_RHD: &str = "https://www.isbt128.org/uri/ABORhD";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("date-time")
        .with_timezone(&Utc)
}

fn time_of(v: &Value) -> DateTime<Utc> {
    at(v.as_str().unwrap_or_else(|| panic!("a date-time, not {v}")))
}

/// A neutrophil count as a hospital's laboratory system sends it.
fn count(patient: i64, taken: DateTime<Utc>, value: f64, unit: &str, dispense: Option<i64>) -> Value {
    let mut o = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "751-8",
                             "display": "Neutrophils [#/volume] in Blood by Automated count"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": ts(taken),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    });
    if let Some(a) = dispense {
        o["focus"] = json!([{"reference": format!("BiologicallyDerivedProductDispense/{a}")}]);
    }
    o
}

async fn create(app: &Http, body: Value, token: String) -> Reply {
    fhir::post(app, "/fhir/R5/Observation", Some(&token), &body, &[]).await
}

async fn observation(app: &Http, token: &str, id: &str) -> Value {
    fhir::get(app, &format!("/fhir/R5/Observation/{id}"), Some(token))
        .await
        .resource(200, "Observation")
        .clone()
}

async fn search(app: &Http, token: &str, query: &str) -> Value {
    fhir::get(app, &format!("/fhir/R5/Observation?{query}"), Some(token))
        .await
        .resource(200, "Bundle")
        .clone()
}

/// A sample of `patient` drawn `hours` ago, typed by the technologist; returns the sample and
/// when it was drawn.
async fn typed_sample(b: &Bank, patient: i64, hours: i64, abo: &str, rhd: &str) -> (i64, DateTime<Utc>) {
    let drawn = now_minute() - TimeDelta::hours(hours);
    let s = b
        .app
        .post(
            &format!("/api/v1/patients/{patient}/samples"),
            Some(&b.tech),
            &json!({"drawn_at": ts(drawn), "transfused_or_pregnant_within_3_months": false}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("sample");
    b.app
        .post(
            &format!("/api/v1/samples/{s}/typing"),
            Some(&b.tech),
            &json!({"abo": abo, "rhd": rhd}),
        )
        .await
        .ok(201);
    (s, drawn)
}

/// A request of `patient` for one unit, a released A RhD-positive unit crossmatched compatible
/// against a fresh sample, allocated and issued; returns (request, unit, sample, allocation).
async fn issued_unit(b: &Bank, patient: i64) -> (i64, i64, i64, i64) {
    let request = b.request_for(patient, 1).await;
    let (unit, din) = b.ready("A", "positive", "negative", 2).await;
    let sample = b.sample(patient).await;
    b.crossmatch(unit, sample, "compatible").await;
    let allocation = b.allocated(request, unit).await;
    b.issued(allocation, din).await;
    (request, unit, sample, allocation)
}

async fn the_group_of_record_is_preliminary_until_confirmed(backend: Backend) {
    let b = bank(backend).await;
    let p = b.patient(&patient_body("OBS-G1", "A", "positive", "male")).await;
    let id = format!("abo-rh-{p}");
    // Untyped: no group of record to show.
    fhir::get(&b.app, &format!("/fhir/R5/Observation/{id}"), Some(&b.hosp))
        .await
        .outcome(404, "not_found");

    let (first, drawn) = typed_sample(&b, p, 3, "A", "positive").await;
    let o = observation(&b.app, &b.hosp, &id).await;
    assert_eq!(o["status"], "preliminary", "{o}");
    assert_eq!(o["code"]["coding"][0]["system"], LOINC);
    assert_eq!(o["code"]["coding"][0]["code"], "882-1");
    assert_eq!(o["category"][0]["coding"][0]["code"], "laboratory");
    assert_eq!(o["subject"]["reference"], format!("Patient/{p}"));
    assert_eq!(o["specimen"]["reference"], format!("Specimen/{first}"));
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["system"], ISBT_ABO_RHD);
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["code"], "62");
    assert_eq!(o["valueCodeableConcept"]["text"], "A RhD positive");
    assert_eq!(o["extension"][0]["valueCode"], "unconfirmed");
    assert!(
        o["note"][0]["text"]
            .as_str()
            .expect("note")
            .contains("Not yet confirmed")
    );
    assert_eq!(time_of(&o["effectiveDateTime"]), drawn);

    let (second, drawn) = typed_sample(&b, p, 2, "A", "positive").await;
    let o = observation(&b.app, &b.hosp, &id).await;
    assert_eq!(o["status"], "final", "{o}");
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["code"], "62");
    assert_eq!(o["extension"][0]["valueCode"], "confirmed");
    assert_eq!(o["specimen"]["reference"], format!("Specimen/{second}"));
    assert_eq!(time_of(&o["effectiveDateTime"]), drawn);
    assert!(o.get("note").is_none(), "{o}");
    assert!(time_of(&o["issued"]) <= Utc::now());

    // RhD typings that disagree: the ABO group with RhD not specified, never a full group.
    let rh = b.patient(&patient_body("OBS-G2", "B", "negative", "male")).await;
    typed_sample(&b, rh, 3, "B", "negative").await;
    typed_sample(&b, rh, 2, "B", "positive").await;
    let o = observation(&b.app, &b.tech, &format!("abo-rh-{rh}")).await;
    assert_eq!(o["status"], "preliminary");
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["code"], "77");
    assert_eq!(o["extension"][0]["valueCode"], "discordant");
    assert!(o["note"][0]["text"].as_str().expect("note").contains("RhD typings"));

    // ABO typings that disagree: no value at all.
    let abo = b.patient(&patient_body("OBS-G3", "O", "positive", "male")).await;
    typed_sample(&b, abo, 3, "O", "positive").await;
    typed_sample(&b, abo, 2, "A", "positive").await;
    let o = observation(&b.app, &b.hosp, &format!("abo-rh-{abo}")).await;
    assert_eq!(o["status"], "preliminary");
    assert!(o.get("valueCodeableConcept").is_none(), "{o}");
    assert!(o.get("valueQuantity").is_none(), "{o}");
    assert_eq!(o["extension"][0]["valueCode"], "discordant");
    assert!(
        o["note"][0]["text"]
            .as_str()
            .expect("note")
            .contains("no blood group of record")
    );
}

async fn a_crossmatch_reads_as_its_result(backend: Backend) {
    let b = bank(backend).await;
    let p = b.typed_patient(&patient_body("OBS-X1", "A", "positive", "male")).await;
    let (request, unit, sample, _) = issued_unit(&b, p).await;
    let xms = b
        .app
        .get(&format!("/api/v1/crossmatches?patient_id={p}"), Some(&b.tech))
        .await;
    let xm = xms.ok(200)["items"][0]["id"].as_i64().expect("crossmatch");

    let o = observation(&b.app, &b.hosp, &format!("xm-{xm}")).await;
    assert_eq!(o["status"], "final");
    assert_eq!(o["code"]["coding"][0]["system"], LOINC);
    assert_eq!(o["code"]["coding"][0]["code"], "1250-0");
    assert_eq!(o["subject"]["reference"], format!("Patient/{p}"));
    assert_eq!(o["focus"][0]["reference"], format!("BiologicallyDerivedProduct/{unit}"));
    assert_eq!(o["specimen"]["reference"], format!("Specimen/{sample}"));
    assert_eq!(
        o["basedOn"],
        json!([{"reference": format!("ServiceRequest/{request}")}])
    );
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["code"], "compatible");
    assert!(
        o["valueCodeableConcept"]["coding"][0]["system"]
            .as_str()
            .is_some_and(|s| s.ends_with("/CodeSystem/crossmatch-result"))
    );
    assert_eq!(o["method"]["text"], "iat");

    // An incompatible result a medical director resolved: the result stands, the resolution is
    // a note.
    let (other, _) = b.ready("A", "positive", "negative", 2).await;
    let bad = b.crossmatch(other, sample, "incompatible").await;
    let o = observation(&b.app, &b.tech, &format!("xm-{bad}")).await;
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["code"], "incompatible");
    assert!(o.get("note").is_none());
    assert!(o.get("basedOn").is_none(), "never allocated to this patient: {o}");
    b.app
        .post(
            &format!("/api/v1/crossmatches/{bad}/resolve"),
            Some(&b.director),
            &json!({"reason": "repeat on a fresh sample compatible; clerical error"}),
        )
        .await
        .ok(200);
    let o = observation(&b.app, &b.hosp, &format!("xm-{bad}")).await;
    assert_eq!(o["status"], "final");
    assert_eq!(o["valueCodeableConcept"]["coding"][0]["code"], "incompatible");
    let note = &o["note"][0];
    assert!(note["text"].as_str().expect("note").contains("clerical error"), "{o}");
    // A hospital sees that the bank resolved it, never who.
    assert_eq!(note["authorString"], "blood bank staff", "{o}");
    assert!(note["time"].is_string());
    let o = observation(&b.app, &b.tech, &format!("xm-{bad}")).await;
    assert!(
        o["note"][0]["authorString"]
            .as_str()
            .is_some_and(|a| a.starts_with("medical-director")),
        "staff see the director: {o}"
    );

    // A leukocyte crossmatch is not LOINC's (red-cell) major crossmatch.
    let leuko = b
        .app
        .post(
            "/api/v1/crossmatches",
            Some(&b.tech),
            &json!({"unit_id": unit, "sample_id": sample, "result": "compatible",
                    "method": "granulocyte_immunofluorescence"}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("crossmatch");
    let o = observation(&b.app, &b.hosp, &format!("xm-{leuko}")).await;
    assert_eq!(o["code"]["coding"][0]["code"], "leukocyte-crossmatch", "{o}");
    assert_ne!(o["code"]["coding"][0]["system"], LOINC);
    assert_eq!(o["method"]["text"], "granulocyte_immunofluorescence");
}

async fn a_hospitals_neutrophil_counts_feed_the_transfusion_outcome(backend: Backend) {
    let b = bank(backend).await;
    let p = b.typed_patient(&patient_body("OBS-A1", "A", "positive", "male")).await;
    let (_, _, _, allocation) = issued_unit(&b, p).await;
    let now = now_minute();
    b.backdate_issue(allocation, now - TimeDelta::hours(4));

    // Before the transfusion: the pre-transfusion count.
    let created = fhir::post(
        &b.app,
        "/fhir/R5/Observation",
        Some(&b.hosp),
        &count(p, now - TimeDelta::hours(5), 80.0, "/uL", Some(allocation)),
        &[],
    )
    .await;
    let pre = created.resource(201, "Observation").clone();
    let pre_id = pre["id"].as_str().expect("id").to_owned();
    assert!(pre_id.starts_with("anc-"), "{pre}");
    assert!(
        created
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.contains(&format!("/Observation/{pre_id}/_history/")))
    );
    assert_eq!(pre["status"], "final");
    assert_eq!(pre["code"]["coding"][0]["code"], "751-8");
    assert_eq!(
        pre["valueQuantity"],
        json!({"value": 80, "unit": "/uL", "system": UCUM, "code": "/uL"})
    );
    assert_eq!(
        pre["focus"][0]["reference"],
        format!("BiologicallyDerivedProductDispense/{allocation}")
    );
    let read = fhir::get(&b.app, &format!("/fhir/R5/Observation/{pre_id}"), Some(&b.hosp)).await;
    assert_eq!(read.resource(200, "Observation")["valueQuantity"]["value"], 80);
    assert_eq!(
        read.etag(),
        format!("W/\"{}\"", read.body["meta"]["versionId"].as_str().expect("versionId"))
    );
    // Appended, never changed.
    fhir::put(
        &b.app,
        &format!("/fhir/R5/Observation/{pre_id}"),
        Some(&b.hosp),
        &pre,
        &[("If-Match", &read.etag())],
    )
    .await
    .outcome(405, "method_not_allowed");

    b.app
        .post(
            &format!("/api/v1/allocations/{allocation}/transfusion"),
            Some(&b.hosp),
            &json!({"started_at": ts(now - TimeDelta::hours(3)), "ended_at": ts(now - TimeDelta::hours(2))}),
        )
        .await
        .ok(200);
    let a = b
        .app
        .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.hosp))
        .await;
    assert_eq!(a.ok(200)["pre_anc_per_ul"], 80, "{}", a.text);
    assert_eq!(a.body["post_anc_per_ul"], Value::Null);
    assert_eq!(a.body["anc_increment_per_ul"], Value::Null);

    // While the unit ran: neither. After it ended, in 10*9/L: the post-transfusion count.
    fhir::post(
        &b.app,
        "/fhir/R5/Observation",
        Some(&b.hosp),
        &count(p, now - TimeDelta::minutes(150), 400.0, "/uL", Some(allocation)),
        &[],
    )
    .await
    .resource(201, "Observation");
    let post = fhir::post(
        &b.app,
        "/fhir/R5/Observation",
        Some(&b.hosp),
        &count(p, now - TimeDelta::hours(1), 1.2, "10*9/L", Some(allocation)),
        &[],
    )
    .await;
    assert_eq!(post.resource(201, "Observation")["valueQuantity"]["value"], 1200);
    assert_eq!(post.body["valueQuantity"]["code"], "/uL");
    let a = b
        .app
        .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.hosp))
        .await;
    assert_eq!(a.ok(200)["pre_anc_per_ul"], 80, "{}", a.text);
    assert_eq!(a.body["post_anc_per_ul"], 1200);
    assert_eq!(a.body["anc_increment_per_ul"], 1120);
    let listed: Vec<i64> = a.body["anc_results"]
        .as_array()
        .expect("anc_results")
        .iter()
        .map(|r| r["anc_per_ul"].as_i64().expect("count"))
        .collect();
    assert_eq!(listed, vec![80, 400, 1200], "by time taken");
    let request = a.body["request_id"].as_i64().expect("request");
    let r = b.app.get(&format!("/api/v1/requests/{request}"), Some(&b.hosp)).await;
    assert_eq!(r.ok(200)["course"][0]["anc_increment_per_ul"], 1120);
    assert!(a.body["anc_results"][0]["recorded_by"].is_string());
    assert!(a.body["anc_results"][0]["effective_at"].is_string());
    let actions = b.audit_actions("allocation", allocation).await;
    assert_eq!(actions.iter().filter(|x| *x == "allocation.anc_result").count(), 3);

    // A count with no dispense belongs to the patient only.
    let lone = fhir::post(
        &b.app,
        "/fhir/R5/Observation",
        Some(&b.tech),
        &count(p, now - TimeDelta::minutes(30), 2.5, "10*3/uL", None),
        &[],
    )
    .await;
    assert_eq!(lone.resource(201, "Observation")["valueQuantity"]["value"], 2500);
    assert!(lone.body.get("focus").is_none());
    assert!(
        b.audit_actions("patient", p)
            .await
            .iter()
            .any(|x| x == "patient.anc_result")
    );
    let a = b
        .app
        .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.hosp))
        .await;
    assert_eq!(a.ok(200)["anc_results"].as_array().map(Vec::len), Some(3));
}

async fn counts_recorded_with_the_transfusion_keep_priority(backend: Backend) {
    let b = bank(backend).await;
    let p = b.typed_patient(&patient_body("OBS-A2", "A", "positive", "male")).await;
    let (_, _, _, allocation) = issued_unit(&b, p).await;
    let now = now_minute();
    b.backdate_issue(allocation, now - TimeDelta::hours(4));
    b.app
        .post(
            &format!("/api/v1/allocations/{allocation}/transfusion"),
            Some(&b.hosp),
            &json!({"started_at": ts(now - TimeDelta::hours(3)), "pre_anc_per_ul": 100}),
        )
        .await
        .ok(200);
    // No end recorded: the first count after the start is the post-transfusion one.
    for (minutes, value) in [(-240, 50.0), (-60, 900.0), (-30, 1500.0)] {
        fhir::post(
            &b.app,
            "/fhir/R5/Observation",
            Some(&b.hosp),
            &count(p, now + TimeDelta::minutes(minutes), value, "/uL", Some(allocation)),
            &[],
        )
        .await
        .resource(201, "Observation");
    }
    let a = b
        .app
        .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.tech))
        .await;
    assert_eq!(a.ok(200)["pre_anc_per_ul"], 100, "recorded: {}", a.text);
    assert_eq!(a.body["post_anc_per_ul"], 900);
    assert_eq!(a.body["anc_increment_per_ul"], 800);
}

async fn refusals_name_their_reason(backend: Backend) {
    let mut b = bank(backend).await;
    let p = b.typed_patient(&patient_body("OBS-R1", "A", "positive", "male")).await;
    let (_, _, _, allocation) = issued_unit(&b, p).await;
    let now = now_minute();
    let hosp = b.hosp.clone();

    // In the future.
    let r = create(
        &b.app,
        count(p, now + TimeDelta::hours(2), 500.0, "/uL", None),
        hosp.clone(),
    )
    .await;
    let o = r.outcome(400, "validation_failed");
    assert_eq!(o["issue"][1]["expression"][0], "effectiveDateTime");
    // Not a neutrophil count.
    let mut group = count(p, now, 500.0, "/uL", None);
    group["code"] = json!({"coding": [{"system": LOINC, "code": "882-1"}]});
    let r = create(&b.app, group, hosp.clone()).await;
    let o = r.outcome(400, "validation_failed");
    assert!(
        o["issue"][0]["diagnostics"]
            .as_str()
            .expect("diagnostics")
            .contains("751-8"),
        "{o}"
    );
    // A status that does not stand, a unit that is not a count, a comparator.
    let mut preliminary = count(p, now, 500.0, "/uL", None);
    preliminary["status"] = json!("preliminary");
    create(&b.app, preliminary, hosp.clone())
        .await
        .outcome(400, "validation_failed");
    create(&b.app, count(p, now, 500.0, "/mL", None), hosp.clone())
        .await
        .outcome(400, "validation_failed");
    create(&b.app, count(p, now, 200.0, "10*9/L", None), hosp.clone())
        .await
        .outcome(400, "validation_failed");
    let mut less = count(p, now, 500.0, "/uL", None);
    less["valueQuantity"]["comparator"] = json!("<");
    create(&b.app, less, hosp.clone())
        .await
        .outcome(400, "validation_failed");
    // Elements granulo would otherwise drop are refused.
    let mut modifier = count(p, now, 500.0, "/uL", None);
    modifier["modifierExtension"] = json!([{"url": "https://example.org/x", "valueBoolean": true}]);
    create(&b.app, modifier, hosp.clone())
        .await
        .outcome(400, "validation_failed");
    let mut interpretation = count(p, now, 500.0, "/uL", None);
    interpretation["interpretation"] = json!([{"text": "low"}]);
    create(&b.app, interpretation, hosp.clone())
        .await
        .outcome(400, "validation_failed");
    let mut partial = count(p, now, 500.0, "/uL", None);
    partial["effectiveDateTime"] = json!("2026-11-25");
    create(&b.app, partial, hosp.clone())
        .await
        .outcome(400, "validation_failed");

    // Another patient's dispense.
    let q = b.typed_patient(&patient_body("OBS-R2", "A", "positive", "male")).await;
    let r = create(&b.app, count(q, now, 500.0, "/uL", Some(allocation)), hosp.clone()).await;
    r.outcome(422, "allocation_of_another_patient");
    create(&b.app, count(p, now, 500.0, "/uL", Some(999_999)), hosp.clone())
        .await
        .outcome(422, "unknown_allocation");

    // Another hospital: neither its patient nor its dispense is known to this one.
    let (_, other) = hospital(&mut b.app).await;
    let theirs = b
        .app
        .post(
            "/api/v1/patients",
            Some(&other),
            &patient_body("OBS-R3", "O", "positive", "male"),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("patient");
    create(&b.app, count(theirs, now, 500.0, "/uL", None), hosp.clone())
        .await
        .outcome(422, "unknown_patient");
    create(&b.app, count(p, now, 500.0, "/uL", Some(allocation)), other.clone())
        .await
        .outcome(422, "unknown_patient");
    create(
        &b.app,
        count(theirs, now, 500.0, "/uL", Some(allocation)),
        other.clone(),
    )
    .await
    .outcome(422, "unknown_allocation");
    // Nothing was recorded by any refusal.
    let a = b
        .app
        .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.tech))
        .await;
    assert_eq!(a.ok(200)["anc_results"], json!([]));
}

async fn searches_by_patient_code_and_order_page_by_id(backend: Backend) {
    let b = bank(backend).await;
    let p = b.typed_patient(&patient_body("OBS-S1", "A", "positive", "male")).await;
    let (request, _, _, allocation) = issued_unit(&b, p).await;
    let now = now_minute();
    for (hours, value) in [(1, 300.0), (2, 200.0)] {
        fhir::post(
            &b.app,
            "/fhir/R5/Observation",
            Some(&b.hosp),
            &count(p, now - TimeDelta::hours(hours), value, "/uL", Some(allocation)),
            &[],
        )
        .await
        .resource(201, "Observation");
    }
    let patient = format!("patient=Patient/{p}");
    let all = search(&b.app, &b.hosp, &patient).await;
    let ids = entry_ids(&all);
    assert_eq!(all["total"], 4, "{all}");
    assert_eq!(ids.len(), 4);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ascending by id");
    assert_eq!(ids[0], format!("abo-rh-{p}"));
    assert!(ids[1].starts_with("anc-") && ids[2].starts_with("anc-"));
    assert!(ids[3].starts_with("xm-"));

    let counts = search(&b.app, &b.hosp, &format!("{patient}&code={LOINC}|751-8")).await;
    assert_eq!(counts["total"], 2);
    let bare = search(&b.app, &b.hosp, &format!("{patient}&code=882-1,1250-0")).await;
    assert_eq!(entry_ids(&bare), vec![ids[0].clone(), ids[3].clone()]);
    let none = search(&b.app, &b.hosp, &format!("{patient}&code=http://snomed.info/sct|751-8")).await;
    assert_eq!(none["total"], 0);
    let ordered = search(&b.app, &b.hosp, &format!("based-on=ServiceRequest/{request}")).await;
    assert_eq!(entry_ids(&ordered), vec![ids[3].clone()]);
    let both = search(
        &b.app,
        &b.hosp,
        &format!("{patient}&based-on=ServiceRequest/{request}&code=1250-0"),
    )
    .await;
    assert_eq!(both["total"], 1);

    // One at a time, following `next`.
    let mut seen = Vec::new();
    let mut url = format!("/fhir/R5/Observation?{patient}&_count=1");
    loop {
        let page = fhir::get(&b.app, &url, Some(&b.hosp)).await;
        let page = page.resource(200, "Bundle").clone();
        assert_eq!(page["total"], 4);
        let got = entries(&page);
        assert!(got.len() <= 1);
        seen.extend(got.iter().map(|r| r["id"].as_str().expect("id").to_owned()));
        let next = page["link"]
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        match next {
            Some(n) => url = n[n.find("/fhir/R5/").expect("path")..].to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    // A search over every patient, and parameters Observation does not take.
    fhir::get(&b.app, "/fhir/R5/Observation?code=751-8", Some(&b.tech))
        .await
        .outcome(400, "invalid_query");
    fhir::get(&b.app, "/fhir/R5/Observation", Some(&b.tech))
        .await
        .outcome(400, "invalid_query");
    fhir::get(
        &b.app,
        &format!("/fhir/R5/Observation?{patient}&date=2026"),
        Some(&b.tech),
    )
    .await
    .outcome(400, "unknown_search_parameter");
    fhir::get(&b.app, "/fhir/R5/Observation?patient=Specimen/3", Some(&b.tech))
        .await
        .outcome(400, "invalid_query");
}

async fn another_hospitals_observations_are_invisible(backend: Backend) {
    let mut b = bank(backend).await;
    let p = b.typed_patient(&patient_body("OBS-H1", "A", "positive", "male")).await;
    let (request, _, _, allocation) = issued_unit(&b, p).await;
    let made = fhir::post(
        &b.app,
        "/fhir/R5/Observation",
        Some(&b.hosp),
        &count(p, now_minute() - TimeDelta::hours(1), 300.0, "/uL", Some(allocation)),
        &[],
    )
    .await;
    let anc = made.resource(201, "Observation")["id"].as_str().expect("id").to_owned();
    let staff = search(&b.app, &b.tech, &format!("patient=Patient/{p}")).await;
    let ids = entry_ids(&staff);
    assert_eq!(ids.len(), 3, "{staff}");

    let (_, other) = hospital(&mut b.app).await;
    for id in &ids {
        fhir::get(&b.app, &format!("/fhir/R5/Observation/{id}"), Some(&other))
            .await
            .outcome(404, "not_found");
    }
    assert!(ids.contains(&anc));
    for query in [
        format!("patient=Patient/{p}"),
        format!("based-on=ServiceRequest/{request}"),
        format!("patient=Patient/{p}&code=751-8"),
    ] {
        let found = search(&b.app, &other, &query).await;
        assert_eq!(found["total"], 0, "{query}: {found}");
        assert!(entries(&found).is_empty());
    }
    // Ids that name nothing.
    for id in ["abo-rh-999999", "xm-999999", "anc-999999", "other-1", "xm-01"] {
        fhir::get(&b.app, &format!("/fhir/R5/Observation/{id}"), Some(&b.tech))
            .await
            .outcome(404, "not_found");
    }
}

both_backends!(
    the_group_of_record_is_preliminary_until_confirmed,
    a_crossmatch_reads_as_its_result,
    a_hospitals_neutrophil_counts_feed_the_transfusion_outcome,
    counts_recorded_with_the_transfusion_keep_priority,
    refusals_name_their_reason,
    searches_by_patient_code_and_order_page_by_id,
    another_hospitals_observations_are_invisible,
);
