//! FHIR Patient: create and conditional create as an integration engine does it, read, search
//! by MRN, and hospital scoping.

use serde_json::{Value, json};

use crate::bank::bank;
use crate::both_backends;
use crate::fhir_support::{self as fhir, entry_ids};
use crate::helpers::*;

const EXT: &str = "https://granulo.org/fhir/StructureDefinition/";

/// A Patient as an EHR would send it, MRN in `system`.
pub fn fhir_patient(system: &str, mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": mrn}],
        "name": [{"use": "official", "family": "Okafor", "given": ["Sam", "T"]}],
        "gender": "male",
        "birthDate": "1990-02-03",
        "telecom": [{"system": "phone", "value": "+1 555 0100"}],
        "extension": [
            {"url": format!("{EXT}body-weight"), "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}},
            {"url": format!("{EXT}declared-abo-rhd"), "valueCoding": {"system": "https://www.isbt128.org/uri/ABORhD", "code": "62"}},
            {"url": format!("{EXT}cmv-serostatus"), "valueCode": "negative"},
            {"url": format!("{EXT}hla-antibody"), "valueString": "A2"},
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {"city": "Leeds"}}
        ]
    })
}

/// The hospital's MRN system as the API reports it.
pub async fn mrn_system(app: &Http, token: &str, hospital: i64) -> String {
    app.get(&format!("/api/v1/hospitals/{hospital}"), Some(token))
        .await
        .ok(200)["mrn_system"]
        .as_str()
        .expect("mrn_system")
        .to_owned()
}

async fn an_engine_matches_or_registers_a_patient_in_one_call(backend: Backend) {
    let b = bank(backend).await;
    let system = mrn_system(&b.app, &b.hosp, b.hospital).await;
    assert_eq!(
        system,
        format!("urn:granulo:hospital:{}:mrn", {
            let h = b
                .app
                .get(&format!("/api/v1/hospitals/{}", b.hospital), Some(&b.hosp))
                .await;
            h.ok(200)["code"].as_str().expect("code").to_owned()
        })
    );
    let body = fhir_patient(&system, "MRN-100");
    let condition = format!("identifier={system}|MRN-100");
    let first = fhir::post(
        &b.app,
        "/fhir/R5/Patient",
        Some(&b.hosp),
        &body,
        &[("If-None-Exist", &condition)],
    )
    .await;
    let p = first.resource(201, "Patient").clone();
    let id = p["id"].as_str().expect("id").to_owned();
    assert!(
        first.headers["location"]
            .to_str()
            .expect("location")
            .contains(&format!("/fhir/R5/Patient/{id}/_history/")),
        "{:?}",
        first.headers
    );
    assert_eq!(p["identifier"][0]["value"], "MRN-100");
    assert_eq!(p["name"][0]["given"], json!(["Sam T"]));
    assert!(p["meta"]["versionId"].is_string());
    // The same call again finds the patient and writes nothing.
    let again = fhir::post(
        &b.app,
        "/fhir/R5/Patient",
        Some(&b.hosp),
        &body,
        &[("If-None-Exist", &condition)],
    )
    .await;
    assert_eq!(again.resource(200, "Patient")["id"], id.as_str());
    let list = b.app.get("/api/v1/patients", Some(&b.hosp)).await;
    assert_eq!(list.ok(200)["items"].as_array().map(Vec::len), Some(1));
    // A plain create with the same MRN is refused.
    fhir::post(&b.app, "/fhir/R5/Patient", Some(&b.hosp), &body, &[])
        .await
        .outcome(409, "mrn_taken");
    // The same patient through /api/v1, with the facts FHIR carried.
    let v = b.app.get(&format!("/api/v1/patients/{id}"), Some(&b.hosp)).await;
    let v = v.ok(200);
    assert_eq!(
        (v["abo"].as_str(), v["rhd"].as_str(), v["cmv"].as_str()),
        (Some("A"), Some("positive"), Some("negative"))
    );
    assert_eq!(v["weight_kg"], 70.0);
    assert_eq!(v["hla_antibodies"], json!(["A2"]));
    // Read, with its version as ETag.
    let read = fhir::get(&b.app, &format!("/fhir/R5/Patient/{id}"), Some(&b.hosp)).await;
    assert_eq!(read.resource(200, "Patient")["id"], id.as_str());
    assert_eq!(
        read.etag(),
        format!("W/\"{}\"", read.body["meta"]["versionId"].as_str().expect("version"))
    );
    // Search by MRN: with the system, without, and with another system.
    for (query, found) in [
        (format!("identifier={system}|MRN-100"), 1),
        ("identifier=MRN-100".to_owned(), 1),
        ("identifier=urn:oid:1.2.3|MRN-100".to_owned(), 0),
        ("identifier=MRN-999".to_owned(), 0),
    ] {
        let s = fhir::get(
            &b.app,
            &format!("/fhir/R5/Patient?{}", query.replace('|', "%7C")),
            Some(&b.hosp),
        )
        .await;
        let bundle = s.resource(200, "Bundle");
        assert_eq!(bundle["total"], found, "{query}");
        assert_eq!(entry_ids(bundle).len(), found, "{query}");
    }
    // Staff register a patient for the hospital by naming it.
    let code = b
        .app
        .get(&format!("/api/v1/hospitals/{}", b.hospital), Some(&b.hosp))
        .await
        .ok(200)["code"]
        .clone();
    let mut staff_body = fhir_patient(&system, "MRN-101");
    staff_body["managingOrganization"] =
        json!({"identifier": {"system": "https://granulo.org/fhir/NamingSystem/hospital-code", "value": code}});
    let s = fhir::post(&b.app, "/fhir/R5/Patient", Some(&b.tech), &staff_body, &[]).await;
    assert_eq!(
        s.resource(201, "Patient")["managingOrganization"]["identifier"]["value"],
        code
    );
}

async fn a_patient_without_what_granulo_needs_is_refused_with_every_reason(backend: Backend) {
    let b = bank(backend).await;
    let system = mrn_system(&b.app, &b.hosp, b.hospital).await;
    let body =
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:other", "value": "X"}], "gender": "robot"});
    let r = fhir::post(&b.app, "/fhir/R5/Patient", Some(&b.hosp), &body, &[]).await;
    let o = r.outcome(400, "validation_failed");
    let said: Vec<String> = o["issue"].as_array().expect("issues")[1..]
        .iter()
        .map(|i| i["expression"][0].as_str().unwrap_or("").to_owned())
        .collect();
    for field in ["identifier", "name", "gender", "birthDate", "extension"] {
        assert!(said.iter().any(|f| f == field), "{field} in {said:?}");
    }
    // A modifier granulo cannot honour is refused, not dropped.
    let mut body = fhir_patient(&system, "MRN-7");
    body["modifierExtension"] = json!([{"url": "urn:x", "valueBoolean": true}]);
    fhir::post(&b.app, "/fhir/R5/Patient", Some(&b.hosp), &body, &[])
        .await
        .outcome(400, "validation_failed");
    // A weight in pounds is not read as kilograms.
    let mut body = fhir_patient(&system, "MRN-8");
    body["extension"][0]["valueQuantity"] =
        json!({"value": 154, "unit": "lb", "system": "http://unitsofmeasure.org", "code": "[lb_av]"});
    fhir::post(&b.app, "/fhir/R5/Patient", Some(&b.hosp), &body, &[])
        .await
        .outcome(400, "validation_failed");
    // If-None-Exist takes only the identifier.
    fhir::post(
        &b.app,
        "/fhir/R5/Patient",
        Some(&b.hosp),
        &fhir_patient(&system, "MRN-9"),
        &[("If-None-Exist", "name=x")],
    )
    .await
    .outcome(400, "unknown_search_parameter");
    fhir::post(
        &b.app,
        "/fhir/R5/Patient",
        Some(&b.hosp),
        &fhir_patient(&system, "MRN-9"),
        &[("If-None-Exist", "identifier=")],
    )
    .await
    .outcome(400, "validation_failed");
}

async fn another_hospital_sees_none_of_it(backend: Backend) {
    let mut b = bank(backend).await;
    let system = mrn_system(&b.app, &b.hosp, b.hospital).await;
    let id = fhir::post(
        &b.app,
        "/fhir/R5/Patient",
        Some(&b.hosp),
        &fhir_patient(&system, "MRN-1"),
        &[],
    )
    .await
    .resource(201, "Patient")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, other) = hospital(&mut b.app).await;
    fhir::get(&b.app, &format!("/fhir/R5/Patient/{id}"), Some(&other))
        .await
        .outcome(404, "not_found");
    let s = fhir::get(&b.app, "/fhir/R5/Patient?identifier=MRN-1", Some(&other)).await;
    assert_eq!(s.resource(200, "Bundle")["total"], 0);
    let all = fhir::get(&b.app, "/fhir/R5/Patient", Some(&other)).await;
    assert_eq!(all.resource(200, "Bundle")["total"], 0);
    // The other hospital may register its own patient with the same MRN.
    let other_system = {
        let me = b.app.get("/api/v1/me", Some(&other)).await;
        let h = me.ok(200)["hospital_id"].as_i64().expect("hospital");
        mrn_system(&b.app, &other, h).await
    };
    fhir::post(
        &b.app,
        "/fhir/R5/Patient",
        Some(&other),
        &fhir_patient(&other_system, "MRN-1"),
        &[],
    )
    .await
    .resource(201, "Patient");
    // Staff see both; by system, each hospital's own.
    let staff = fhir::get(&b.app, "/fhir/R5/Patient?identifier=MRN-1", Some(&b.tech)).await;
    assert_eq!(staff.resource(200, "Bundle")["total"], 2);
    let one = fhir::get(
        &b.app,
        &format!("/fhir/R5/Patient?identifier={}%7CMRN-1", other_system),
        Some(&b.tech),
    )
    .await;
    assert_eq!(one.resource(200, "Bundle")["total"], 1);
}

async fn search_pages_follow_next_links(backend: Backend) {
    let b = bank(backend).await;
    let system = mrn_system(&b.app, &b.hosp, b.hospital).await;
    for i in 0..3 {
        fhir::post(
            &b.app,
            "/fhir/R5/Patient",
            Some(&b.hosp),
            &fhir_patient(&system, &format!("P-{i}")),
            &[],
        )
        .await
        .resource(201, "Patient");
    }
    let mut url = "/fhir/R5/Patient?_count=2".to_owned();
    let mut seen = Vec::new();
    loop {
        let page = fhir::get(&b.app, &url, Some(&b.hosp)).await;
        let bundle = page.resource(200, "Bundle").clone();
        assert_eq!(bundle["total"], 3);
        seen.extend(entry_ids(&bundle));
        let next = bundle["link"]
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().expect("url").to_owned());
        match next {
            Some(n) => url = n[n.find("/fhir/R5").expect("path")..].to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3);
    seen.dedup();
    assert_eq!(seen.len(), 3);
}

async fn a_hospital_names_its_own_mrn_system(backend: Backend) {
    let mut b = bank(backend).await;
    let admin = b.app.admin_token().await;
    let path = format!("/api/v1/hospitals/{}", b.hospital);
    let r = b
        .app
        .patch(
            &path,
            Some(&admin),
            &json!({"mrn_system": "urn:oid:2.16.840.1.113883.3.7"}),
        )
        .await;
    assert_eq!(r.ok(200)["mrn_system"], "urn:oid:2.16.840.1.113883.3.7");
    b.app
        .patch(&path, Some(&admin), &json!({"mrn_system": "not a uri"}))
        .await
        .problem(400, "validation_failed");
    b.app
        .patch(&path, Some(&b.tech), &json!({"mrn_system": null}))
        .await
        .problem(403, "forbidden");
    let p = fhir::post(
        &b.app,
        "/fhir/R5/Patient",
        Some(&b.hosp),
        &fhir_patient("urn:oid:2.16.840.1.113883.3.7", "M-1"),
        &[],
    )
    .await;
    assert_eq!(
        p.resource(201, "Patient")["identifier"][0]["system"],
        "urn:oid:2.16.840.1.113883.3.7"
    );
    // Back to the default.
    let r = b.app.patch(&path, Some(&admin), &json!({"mrn_system": null})).await;
    assert!(
        r.ok(200)["mrn_system"]
            .as_str()
            .is_some_and(|s| s.starts_with("urn:granulo:hospital:"))
    );
}

both_backends!(
    an_engine_matches_or_registers_a_patient_in_one_call,
    a_patient_without_what_granulo_needs_is_refused_with_every_reason,
    another_hospital_sees_none_of_it,
    search_pages_follow_next_links,
    a_hospital_names_its_own_mrn_system,
);
