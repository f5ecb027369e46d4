//! FHIR ServiceRequest (the order) and Specimen (the crossmatch sample): create, read, search,
//! conditional create, revoke with If-Match, hospital scoping and refusals.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::bank::{Bank, bank};
use crate::both_backends;
use crate::fhir_support::{self as fhir, entries, entry_ids};
use crate::helpers::*;

const SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.72.5.20";
const EXT: &str = "https://granulo.org/fhir/StructureDefinition";

/// An order for `units` daily units for `patient` within the indication (ANC 120/µL,
/// refractory 72 h), numbered `number` in `SYSTEM` when given.
pub(crate) fn order(patient: i64, units: u32, number: Option<&str>) -> Value {
    let mut body = json!({
        "resourceType": "ServiceRequest",
        "contained": [{
            "resourceType": "Observation", "id": "anc", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
            "valueQuantity": {"value": 0.12, "system": "http://unitsofmeasure.org", "code": "10*9/L", "unit": "10^9/L"}
        }],
        "extension": [{"url": format!("{EXT}/refractory-hours"),
                       "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "h"}}],
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "code": {"concept": {"coding": [{"system": "https://granulo.org/fhir/CodeSystem/product", "code": "granulocytes"}]}},
        "orderDetail": [{"parameter": [
            {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0508", "code": "IR"}]}, "valueBoolean": true},
            {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0508", "code": "CM"}]}, "valueBoolean": true}
        ]}],
        "quantityQuantity": {"value": units},
        "subject": {"reference": format!("Patient/{patient}")},
        "occurrenceTiming": {"repeat": {"boundsPeriod": {"start": ts(now_minute() + TimeDelta::hours(6))},
                                        "count": units, "frequency": 1, "period": 1, "periodUnit": "d"}},
        "requester": {"display": "Dr Who"},
        "reason": [{"concept": {"text": "invasive aspergillosis"}}],
        "supportingInfo": [{"reference": {"reference": "#anc"}}]
    });
    if let Some(n) = number {
        body["identifier"] = json!([{"system": SYSTEM, "value": n}]);
    }
    body
}

fn ext<'a>(resource: &'a Value, name: &str) -> &'a Value {
    resource["extension"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["url"] == format!("{EXT}/{name}")))
        .unwrap_or(&Value::Null)
}

fn id_of(resource: &Value) -> i64 {
    resource["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("numeric id")
}

async fn patient(b: &Bank, mrn: &str) -> i64 {
    b.patient(&patient_body(mrn, "A", "positive", "male")).await
}

async fn place(b: &Bank, body: &Value) -> Value {
    fhir::post(&b.app, "/fhir/R5/ServiceRequest", Some(&b.hosp), body, &[])
        .await
        .resource(201, "ServiceRequest")
        .clone()
}

async fn search_ids(b: &Bank, token: &str, query: &str) -> Vec<String> {
    let r = fhir::get(&b.app, &format!("/fhir/R5/ServiceRequest?{query}"), Some(token)).await;
    entry_ids(r.resource(200, "Bundle"))
}

async fn an_order_is_placed_read_and_searched(backend: Backend) {
    let b = bank(backend).await;
    let p = patient(&b, "SR-1").await;
    let sample = b.sample(p).await;
    let mut body = order(p, 3, Some("ORD-1"));
    body["specimen"] = json!([{"reference": format!("Specimen/{sample}")}]);
    let created = fhir::post(&b.app, "/fhir/R5/ServiceRequest", Some(&b.hosp), &body, &[]).await;
    let sr = created.resource(201, "ServiceRequest").clone();
    let id = id_of(&sr);
    let location = created
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location");
    assert!(
        location.contains(&format!("/fhir/R5/ServiceRequest/{id}/_history/")),
        "{location}"
    );
    assert_eq!(sr["status"], "active");
    assert_eq!(ext(&sr, "request-status")["valueCode"], "open");
    assert_eq!(sr["intent"], "order");
    // granulo has no urgent: it reads back as asap.
    assert_eq!(sr["priority"], "asap");
    assert_eq!(sr["quantityQuantity"]["value"], 3.0);
    assert_eq!(sr["occurrenceTiming"]["repeat"]["count"], 3);
    assert_eq!(sr["occurrenceTiming"]["repeat"]["periodUnit"], "d");
    assert_eq!(sr["identifier"][0]["system"], SYSTEM);
    assert_eq!(sr["identifier"][0]["value"], "ORD-1");
    assert_eq!(sr["subject"]["reference"], format!("Patient/{p}"));
    assert_eq!(sr["code"]["concept"]["coding"][0]["code"], "granulocytes");
    assert_eq!(sr["reason"][0]["concept"]["text"], "invasive aspergillosis");
    // 0.12 × 10⁹/L is 120/µL.
    assert_eq!(sr["contained"][0]["code"]["coding"][0]["code"], "751-8");
    assert_eq!(sr["contained"][0]["valueQuantity"]["value"], 120.0);
    assert_eq!(sr["contained"][0]["valueQuantity"]["code"], "/uL");
    assert_eq!(sr["supportingInfo"][0]["reference"]["reference"], "#anc");
    assert_eq!(ext(&sr, "refractory-hours")["valueQuantity"]["value"], 72.0);
    let params = sr["orderDetail"][0]["parameter"].as_array().expect("parameters");
    let flag = |code: &str| {
        params
            .iter()
            .find(|x| x["code"]["coding"][0]["code"] == code)
            .map(|x| x["valueBoolean"].clone())
    };
    assert_eq!(flag("IR"), Some(json!(true)));
    assert_eq!(flag("CM"), Some(json!(true)));
    assert_eq!(flag("HL"), Some(json!(false)));
    assert_eq!(sr["specimen"][0]["reference"], format!("Specimen/{sample}"));
    // The requester is the account that placed the order, whatever the body said.
    assert_ne!(sr["requester"]["display"], "Dr Who");

    // The same order on /api/v1, with its identifier.
    let v1 = b.app.get(&format!("/api/v1/requests/{id}"), Some(&b.hosp)).await;
    let v1 = v1.ok(200);
    assert_eq!(v1["order_identifier"], json!({"system": SYSTEM, "value": "ORD-1"}));
    assert_eq!(v1["indication"]["anc_per_ul"], 120);
    assert_eq!(v1["priority"], "asap");
    assert_eq!(v1["requirements"]["cmv_negative"], true);

    // Read, by the hospital and by the blood bank.
    let read = fhir::get(&b.app, &format!("/fhir/R5/ServiceRequest/{id}"), Some(&b.hosp)).await;
    let again = read.resource(200, "ServiceRequest");
    assert_eq!(again["id"], id.to_string());
    assert_eq!(again["meta"]["versionId"], sr["meta"]["versionId"]);
    assert!(read.etag().contains(sr["meta"]["versionId"].as_str().expect("version")));
    fhir::get(&b.app, &format!("/fhir/R5/ServiceRequest/{id}"), Some(&b.tech))
        .await
        .resource(200, "ServiceRequest");
    fhir::get(&b.app, "/fhir/R5/ServiceRequest/999999", Some(&b.hosp))
        .await
        .outcome(404, "not_found");
    fhir::get(&b.app, "/fhir/R5/ServiceRequest/abc", Some(&b.hosp))
        .await
        .outcome(404, "not_found");

    // Search: each parameter.
    let other = patient(&b, "SR-2").await;
    let second = id_of(&place(&b, &order(other, 1, Some("ORD-2"))).await);
    let third = id_of(&place(&b, &order(p, 2, None)).await);
    let (one, two, three) = (id.to_string(), second.to_string(), third.to_string());
    let (one, two, three) = (one.as_str(), two.as_str(), three.as_str());
    let h = b.hosp.clone();
    assert_eq!(search_ids(&b, &h, &format!("patient=Patient/{p}")).await, [one, three]);
    assert_eq!(search_ids(&b, &h, &format!("patient={other}")).await, [two]);
    assert_eq!(
        search_ids(&b, &h, &format!("patient=Patient/{p},Patient/{other}")).await,
        [one, two, three]
    );
    assert_eq!(search_ids(&b, &h, "status=active").await, [one, two, three]);
    assert!(search_ids(&b, &h, "status=revoked").await.is_empty());
    assert!(search_ids(&b, &h, "status=draft").await.is_empty());
    assert_eq!(
        search_ids(&b, &h, "status=http://hl7.org/fhir/request-status|active,on-hold").await,
        [one, two, three]
    );
    assert_eq!(search_ids(&b, &h, &format!("identifier={SYSTEM}|ORD-2")).await, [two]);
    assert_eq!(search_ids(&b, &h, "identifier=ORD-1").await, [one]);
    assert_eq!(search_ids(&b, &h, "identifier=ORD-1,ORD-2").await, [one, two]);
    assert!(search_ids(&b, &h, "identifier=urn:other|ORD-1").await.is_empty());
    let yesterday = (now_minute() - TimeDelta::days(2)).format("%Y-%m-%d").to_string();
    assert_eq!(
        search_ids(&b, &h, &format!("_lastUpdated=ge{yesterday}&patient={other}")).await,
        [two]
    );
    assert!(
        search_ids(&b, &h, &format!("_lastUpdated=lt{yesterday}"))
            .await
            .is_empty()
    );
    fhir::get(&b.app, "/fhir/R5/ServiceRequest?status=open", Some(&h))
        .await
        .outcome(400, "invalid_query");
    fhir::get(&b.app, "/fhir/R5/ServiceRequest?category=x", Some(&h))
        .await
        .outcome(400, "unknown_search_parameter");

    // Paging one at a time, following link.next.
    let mut url = "/fhir/R5/ServiceRequest?_count=1".to_owned();
    let mut seen = Vec::new();
    loop {
        let r = fhir::get(&b.app, &url, Some(&h)).await;
        let bundle = r.resource(200, "Bundle").clone();
        assert_eq!(bundle["total"], 3);
        seen.extend(entry_ids(&bundle));
        let next = bundle["link"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            .and_then(|x| x["url"].as_str())
            .map(str::to_owned);
        match next {
            Some(n) => {
                url = n[n.find("/fhir/R5/").expect("base")..].to_owned();
                assert!(seen.len() < 4, "paging does not end");
            }
            None => break,
        }
    }
    assert_eq!(seen, [one, two, three]);
}

async fn a_repeated_conditional_create_places_one_order(backend: Backend) {
    let b = bank(backend).await;
    let p = patient(&b, "SR-C").await;
    let body = order(p, 2, Some("ORD-C"));
    let condition = format!("identifier={SYSTEM}|ORD-C");
    let first = fhir::post(
        &b.app,
        "/fhir/R5/ServiceRequest",
        Some(&b.hosp),
        &body,
        &[("If-None-Exist", &condition)],
    )
    .await;
    let id = first.resource(201, "ServiceRequest")["id"].clone();
    let second = fhir::post(
        &b.app,
        "/fhir/R5/ServiceRequest",
        Some(&b.hosp),
        &body,
        &[("If-None-Exist", &condition)],
    )
    .await;
    assert_eq!(second.resource(200, "ServiceRequest")["id"], id);
    // The value alone matches in any system.
    let third = fhir::post(
        &b.app,
        "/fhir/R5/ServiceRequest",
        Some(&b.hosp),
        &body,
        &[("If-None-Exist", "identifier=ORD-C")],
    )
    .await;
    assert_eq!(third.resource(200, "ServiceRequest")["id"], id);
    let listed = b.app.get("/api/v1/requests", Some(&b.hosp)).await;
    assert_eq!(
        listed.ok(200)["items"].as_array().expect("items").len(),
        1,
        "no duplicate"
    );
    let creates = b
        .audit_actions("request", id.as_str().and_then(|s| s.parse().ok()).expect("id"))
        .await;
    assert_eq!(creates, ["request.create"]);

    // Without the condition, the same identifier is a second order: refused.
    fhir::post(&b.app, "/fhir/R5/ServiceRequest", Some(&b.hosp), &body, &[])
        .await
        .outcome(409, "order_identifier_taken");
    // And on /api/v1, where the system defaults to the hospital's.
    let mut v1 = request_body(p, 1);
    v1["order_identifier"] = json!({"system": SYSTEM, "value": "ORD-C"});
    b.app
        .post("/api/v1/requests", Some(&b.hosp), &v1)
        .await
        .problem(409, "order_identifier_taken");
    v1["order_identifier"] = json!({"value": "ORD-V1"});
    let placed = b.app.post("/api/v1/requests", Some(&b.hosp), &v1).await;
    let system = placed.ok(201)["order_identifier"]["system"]
        .as_str()
        .expect("system")
        .to_owned();
    assert!(system.starts_with("urn:granulo:hospital:"), "{system}");
    assert_eq!(
        search_ids(&b, &b.hosp, &format!("identifier={system}|ORD-V1")).await,
        [placed.body["id"].to_string()]
    );

    // The value alone may match orders in two systems: the condition is ambiguous.
    place(&b, &order(p, 1, Some("ORD-M"))).await;
    let mut elsewhere = order(p, 1, None);
    elsewhere["identifier"] = json!([{"system": "urn:other", "value": "ORD-M"}]);
    place(&b, &elsewhere).await;
    fhir::post(
        &b.app,
        "/fhir/R5/ServiceRequest",
        Some(&b.hosp),
        &order(p, 1, Some("ORD-M2")),
        &[("If-None-Exist", "identifier=ORD-M")],
    )
    .await
    .outcome(412, "precondition_failed");

    // If-None-Exist takes the identifier only.
    for (header, status, code) in [
        ("patient=Patient/1", 400, "unknown_search_parameter"),
        ("identifier=a&identifier=b", 400, "validation_failed"),
        ("identifier=urn:x|", 400, "validation_failed"),
    ] {
        fhir::post(
            &b.app,
            "/fhir/R5/ServiceRequest",
            Some(&b.hosp),
            &order(p, 1, Some("ORD-X")),
            &[("If-None-Exist", header)],
        )
        .await
        .outcome(status, code);
    }
}

async fn another_hospitals_orders_are_not_there(backend: Backend) {
    let mut b = bank(backend).await;
    let p = patient(&b, "SR-H").await;
    let mine = place(&b, &order(p, 1, Some("ORD-H"))).await;
    let id = id_of(&mine);
    let sample = b.sample(p).await;
    let (_, other) = hospital(&mut b.app).await;
    fhir::get(&b.app, &format!("/fhir/R5/ServiceRequest/{id}"), Some(&other))
        .await
        .outcome(404, "not_found");
    let r = fhir::get(&b.app, "/fhir/R5/ServiceRequest", Some(&other)).await;
    let bundle = r.resource(200, "Bundle");
    assert_eq!(bundle["total"], 0);
    assert!(entries(bundle).is_empty());
    assert!(search_ids(&b, &other, &format!("patient=Patient/{p}")).await.is_empty());
    assert!(search_ids(&b, &other, "identifier=ORD-H").await.is_empty());
    // A conditional create of the other hospital does not see this one's order, and its
    // order cannot name this hospital's patient.
    fhir::post(
        &b.app,
        "/fhir/R5/ServiceRequest",
        Some(&other),
        &order(p, 1, Some("ORD-H")),
        &[("If-None-Exist", "identifier=ORD-H")],
    )
    .await
    .outcome(422, "unknown_patient");
    // Nor revoke it.
    let etag = fhir::get(&b.app, &format!("/fhir/R5/ServiceRequest/{id}"), Some(&b.hosp))
        .await
        .etag();
    let mut revoke = mine.clone();
    revoke["status"] = json!("revoked");
    fhir::put(
        &b.app,
        &format!("/fhir/R5/ServiceRequest/{id}"),
        Some(&other),
        &revoke,
        &[("If-Match", &etag)],
    )
    .await
    .outcome(404, "not_found");
    // Its samples are not there either.
    fhir::get(&b.app, &format!("/fhir/R5/Specimen/{sample}"), Some(&other))
        .await
        .outcome(404, "not_found");
}

async fn an_order_is_revoked_with_if_match(backend: Backend) {
    let b = bank(backend).await;
    let p = patient(&b, "SR-R").await;
    let sr = place(&b, &order(p, 2, Some("ORD-R"))).await;
    let id = id_of(&sr);
    let path = format!("/fhir/R5/ServiceRequest/{id}");
    let read = fhir::get(&b.app, &path, Some(&b.hosp)).await;
    let etag = read.etag();
    let mut revoke = read.resource(200, "ServiceRequest").clone();
    revoke["status"] = json!("revoked");
    revoke["note"] = json!([{"text": "patient recovered"}]);

    fhir::put(&b.app, &path, Some(&b.hosp), &revoke, &[])
        .await
        .outcome(428, "precondition_required");
    fhir::put(
        &b.app,
        &path,
        Some(&b.hosp),
        &revoke,
        &[("If-Match", "W/\"0123456789abcdef\"")],
    )
    .await
    .outcome(412, "precondition_failed");
    // An update changes nothing but the status.
    let mut changed = revoke.clone();
    changed["quantityQuantity"] = json!({"value": 5});
    changed["occurrenceTiming"]["repeat"]["count"] = json!(5);
    fhir::put(&b.app, &path, Some(&b.hosp), &changed, &[("If-Match", &etag)])
        .await
        .outcome(400, "validation_failed");
    let mut active = revoke.clone();
    active["status"] = json!("active");
    fhir::put(&b.app, &path, Some(&b.hosp), &active, &[("If-Match", &etag)])
        .await
        .outcome(400, "validation_failed");

    let done = fhir::put(&b.app, &path, Some(&b.hosp), &revoke, &[("If-Match", &etag)]).await;
    let done_etag = done.etag();
    let revoked = done.resource(200, "ServiceRequest");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(ext(revoked, "request-status")["valueCode"], "cancelled");
    assert_eq!(revoked["note"][0]["text"], "Cancelled: patient recovered");
    assert_ne!(done_etag, etag);
    let v1 = b.app.get(&format!("/api/v1/requests/{id}"), Some(&b.hosp)).await;
    assert_eq!(v1.ok(200)["status"], "cancelled");
    assert_eq!(v1.body["cancel_reason"], "patient recovered");
    let mut actions = b.audit_actions("request", id).await;
    actions.sort();
    assert_eq!(actions, ["request.cancel", "request.create"]);
    assert_eq!(search_ids(&b, &b.hosp, "status=revoked").await, [id.to_string()]);
    // The old version is stale; the new one is refused by the status rules.
    fhir::put(&b.app, &path, Some(&b.hosp), &revoke, &[("If-Match", &etag)])
        .await
        .outcome(412, "precondition_failed");
    fhir::put(&b.app, &path, Some(&b.hosp), &revoke, &[("If-Match", &done_etag)])
        .await
        .outcome(409, "invalid_transition");
}

async fn refusals_are_operation_outcomes_with_their_codes(backend: Backend) {
    let mut b = bank(backend).await;
    let p = patient(&b, "SR-E").await;
    let post = |body: Value| {
        let app = &b.app;
        let token = b.hosp.clone();
        async move { fhir::post(app, "/fhir/R5/ServiceRequest", Some(&token), &body, &[]).await }
    };
    post(order(999_999, 1, None)).await.outcome(422, "unknown_patient");
    // A field the service refuses, under the element's name.
    let mut unirradiated = order(p, 1, None);
    unirradiated["orderDetail"][0]["parameter"][0]["valueBoolean"] = json!(false);
    let r = post(unirradiated).await;
    let o = r.outcome(400, "validation_failed");
    assert!(
        o["issue"]
            .as_array()
            .expect("issues")
            .iter()
            .any(|i| i["expression"][0] == "ServiceRequest.orderDetail"),
        "{o}"
    );
    let mut too_many = order(p, 31, None);
    too_many["occurrenceTiming"]["repeat"]["count"] = json!(31);
    post(too_many).await.outcome(400, "validation_failed");
    // The indication is required.
    let mut no_anc = order(p, 1, None);
    no_anc.as_object_mut().expect("object").remove("supportingInfo");
    no_anc.as_object_mut().expect("object").remove("contained");
    post(no_anc).await.outcome(400, "validation_failed");
    let mut no_hours = order(p, 1, None);
    no_hours.as_object_mut().expect("object").remove("extension");
    let r = post(no_hours).await;
    assert!(r.text.contains("refractory-hours"), "{}", r.text);
    r.outcome(400, "validation_failed");
    // A bare ANC could be /µL or 10⁹/L.
    let mut bare = order(p, 1, None);
    bare["contained"][0]["valueQuantity"] = json!({"value": 120});
    post(bare).await.outcome(400, "validation_failed");
    let mut disagree = order(p, 2, None);
    disagree["quantityQuantity"] = json!({"value": 3});
    post(disagree).await.outcome(400, "validation_failed");
    let mut draft = order(p, 1, None);
    draft["status"] = json!("draft");
    post(draft).await.outcome(400, "validation_failed");
    // What granulo does not read is refused, never dropped.
    let mut modifier = order(p, 1, None);
    modifier["doNotPerform"] = json!(true);
    let r = post(modifier).await;
    assert_eq!(
        r.outcome(400, "validation_failed")["issue"][1]["expression"][0],
        "doNotPerform"
    );
    let mut leukoreduced = order(p, 1, None);
    leukoreduced["orderDetail"][0]["parameter"][1]["code"]["coding"][0]["code"] = json!("LR");
    post(leukoreduced).await.outcome(400, "validation_failed");
    // A specimen must be the patient's.
    let q = patient(&b, "SR-E2").await;
    let theirs = b.sample(q).await;
    let mut wrong_sample = order(p, 1, None);
    wrong_sample["specimen"] = json!([{"reference": format!("Specimen/{theirs}")}]);
    post(wrong_sample).await.outcome(422, "unknown_sample");
    // Another hospital's patient does not exist for this one.
    let (_, other) = hospital(&mut b.app).await;
    fhir::post(&b.app, "/fhir/R5/ServiceRequest", Some(&other), &order(p, 1, None), &[])
        .await
        .outcome(422, "unknown_patient");
    // Nothing was placed.
    let listed = b.app.get("/api/v1/requests", Some(&b.hosp)).await;
    assert!(listed.ok(200)["items"].as_array().expect("items").is_empty());
}

async fn a_specimen_is_recorded_with_its_validity(backend: Backend) {
    let mut b = bank(backend).await;
    let p = patient(&b, "SP-1").await;
    let drawn = ts(now_minute() - TimeDelta::hours(1));
    let body = json!({
        "resourceType": "Specimen",
        "extension": [{"url": format!("{EXT}/recent-transfusion-or-pregnancy"), "valueBoolean": true}],
        "type": {"text": "Blood"},
        "subject": {"reference": format!("Patient/{p}")},
        "collection": {"collectedDateTime": drawn}
    });
    let created = fhir::post(&b.app, "/fhir/R5/Specimen", Some(&b.hosp), &body, &[]).await;
    let s = created.resource(201, "Specimen").clone();
    let id = id_of(&s);
    assert_eq!(s["type"]["text"], "Blood");
    assert_eq!(s["subject"]["reference"], format!("Patient/{p}"));
    assert_eq!(ext(&s, "recent-transfusion-or-pregnancy")["valueBoolean"], true);
    let until = ext(&s, "specimen-valid-until")["valueDateTime"]
        .as_str()
        .expect("valid until")
        .to_owned();
    let samples = b.app.get(&format!("/api/v1/patients/{p}/samples"), Some(&b.hosp)).await;
    let v1 = &samples.ok(200)["items"][0];
    assert_eq!(v1["id"], id);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(v1["valid_until"].as_str().expect("v1")).expect("time"),
        chrono::DateTime::parse_from_rfc3339(&until).expect("time")
    );
    let read = fhir::get(&b.app, &format!("/fhir/R5/Specimen/{id}"), Some(&b.hosp)).await;
    assert_eq!(read.resource(200, "Specimen")["id"], id.to_string());
    fhir::get(&b.app, &format!("/fhir/R5/Specimen/{id}"), Some(&b.tech))
        .await
        .resource(200, "Specimen");
    fhir::get(&b.app, "/fhir/R5/Specimen/999999", Some(&b.hosp))
        .await
        .outcome(404, "not_found");
    // The order lists the patient's valid samples.
    let sr = place(&b, &order(p, 1, None)).await;
    assert_eq!(sr["specimen"][0]["reference"], format!("Specimen/{id}"));

    // The transfusion/pregnancy answer is required: it decides the validity.
    let mut missing = body.clone();
    missing.as_object_mut().expect("object").remove("extension");
    let r = fhir::post(&b.app, "/fhir/R5/Specimen", Some(&b.hosp), &missing, &[]).await;
    assert!(r.text.contains("recent-transfusion-or-pregnancy"), "{}", r.text);
    r.outcome(400, "validation_failed");
    let mut future = body.clone();
    future["collection"]["collectedDateTime"] = json!(ts(now_minute() + TimeDelta::hours(2)));
    let r = fhir::post(&b.app, "/fhir/R5/Specimen", Some(&b.hosp), &future, &[]).await;
    assert!(r.text.contains("Specimen.collection.collectedDateTime"), "{}", r.text);
    r.outcome(400, "validation_failed");
    let mut urine = body.clone();
    urine["type"] = json!({"text": "Urine"});
    fhir::post(&b.app, "/fhir/R5/Specimen", Some(&b.hosp), &urine, &[])
        .await
        .outcome(400, "validation_failed");
    let mut nobody = body.clone();
    nobody["subject"] = json!({"reference": "Patient/999999"});
    fhir::post(&b.app, "/fhir/R5/Specimen", Some(&b.hosp), &nobody, &[])
        .await
        .outcome(422, "unknown_patient");
    // Another hospital can neither read the sample nor add one for the patient.
    let (_, other) = hospital(&mut b.app).await;
    fhir::get(&b.app, &format!("/fhir/R5/Specimen/{id}"), Some(&other))
        .await
        .outcome(404, "not_found");
    fhir::post(&b.app, "/fhir/R5/Specimen", Some(&other), &body, &[])
        .await
        .outcome(422, "unknown_patient");
}

async fn statuses_read_as_fhir_and_the_extension_keeps_granulos(backend: Backend) {
    let b = bank(backend).await;
    let p = patient(&b, "SR-S").await;
    // Outside the indication (ANC 2000/µL): it waits for the medical director.
    let mut outside = order(p, 2, None);
    outside["contained"][0]["valueQuantity"] =
        json!({"value": 2000, "system": "http://unitsofmeasure.org", "code": "/uL"});
    // A single date-time instead of the timing: the course starts then.
    let obj = outside.as_object_mut().expect("object");
    obj.remove("occurrenceTiming");
    let start = ts(now_minute() + TimeDelta::hours(3));
    obj.insert("occurrenceDateTime".into(), json!(start));
    obj.insert("priority".into(), json!("stat"));
    let held = place(&b, &outside).await;
    let id = id_of(&held);
    assert_eq!(held["status"], "on-hold");
    assert_eq!(ext(&held, "request-status")["valueCode"], "pending_approval");
    assert_eq!(held["priority"], "stat");
    assert_eq!(held["occurrenceTiming"]["repeat"]["count"], 2);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(
            held["occurrenceTiming"]["repeat"]["boundsPeriod"]["start"]
                .as_str()
                .expect("start")
        )
        .expect("time"),
        chrono::DateTime::parse_from_rfc3339(&start).expect("time")
    );
    assert_eq!(search_ids(&b, &b.hosp, "status=on-hold").await, [id.to_string()]);
    assert!(search_ids(&b, &b.hosp, "status=active").await.is_empty());
    b.app
        .post(
            &format!("/api/v1/requests/{id}/decline"),
            Some(&b.director),
            &json!({"reason": "ANC recovering"}),
        )
        .await
        .ok(200);
    let declined = fhir::get(&b.app, &format!("/fhir/R5/ServiceRequest/{id}"), Some(&b.hosp)).await;
    let declined = declined.resource(200, "ServiceRequest");
    assert_eq!(declined["status"], "revoked");
    assert_eq!(ext(declined, "request-status")["valueCode"], "declined");
    assert_eq!(declined["note"][0]["text"], "Declined: ANC recovering");
    assert_eq!(search_ids(&b, &b.hosp, "status=revoked").await, [id.to_string()]);
    assert!(search_ids(&b, &b.hosp, "status=on-hold").await.is_empty());
}

both_backends!(
    an_order_is_placed_read_and_searched,
    a_repeated_conditional_create_places_one_order,
    another_hospitals_orders_are_not_there,
    an_order_is_revoked_with_if_match,
    refusals_are_operation_outcomes_with_their_codes,
    a_specimen_is_recorded_with_its_validity,
    statuses_read_as_fhir_and_the_extension_keeps_granulos,
);
