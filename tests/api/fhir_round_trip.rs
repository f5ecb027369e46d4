//! The whole course as a hospital's integration engine runs it over FHIR, with the blood bank's
//! staff working in `/api/v1`: discover, match or register the patient, send the crossmatch
//! sample and the order, follow the units to the transfusion, report the neutrophil counts and
//! see the outcome. Every resource answered is validated by fhir.resources on the way.

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::bank;
use crate::both_backends;
use crate::fhir_patient::fhir_patient;
use crate::fhir_support::{self as fhir, entries, entry_ids};
use crate::helpers::*;

const EXT: &str = "https://granulo.org/fhir/StructureDefinition/";
const ORDERS: &str = "urn:oid:2.16.840.1.113883.3.72.5.20";

fn order(patient: &str, specimen: &str, number: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "identifier": [{"system": ORDERS, "value": number}],
        "contained": [{
            "resourceType": "Observation", "id": "anc", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
            "valueQuantity": {"value": 90, "system": "http://unitsofmeasure.org", "code": "/uL", "unit": "/uL"}
        }],
        "extension": [{"url": format!("{EXT}refractory-hours"),
                       "valueQuantity": {"value": 96, "system": "http://unitsofmeasure.org", "code": "h", "unit": "h"}}],
        "status": "active",
        "intent": "order",
        "priority": "stat",
        "subject": {"reference": format!("Patient/{patient}")},
        "occurrenceTiming": {"repeat": {"boundsPeriod": {"start": ts(now_minute() + TimeDelta::hours(4))},
                                        "count": 2, "frequency": 1, "period": 1, "periodUnit": "d"}},
        "quantityQuantity": {"value": 2},
        "reason": [{"concept": {"text": "invasive fusariosis"}}],
        "supportingInfo": [{"reference": {"reference": "#anc"}}],
        "orderDetail": [{"parameter": [
            {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0508", "code": "IR"}]}, "valueBoolean": true},
            {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0508", "code": "CM"}]}, "valueBoolean": true}
        ]}],
        "specimen": [{"reference": format!("Specimen/{specimen}")}]
    })
}

fn count(patient: &str, dispense: &str, taken: chrono::DateTime<Utc>, value: f64, unit: &str) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "focus": [{"reference": format!("BiologicallyDerivedProductDispense/{dispense}")}],
        "effectiveDateTime": ts(taken),
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit, "unit": unit}
    })
}

fn id(resource: &Value) -> String {
    resource["id"].as_str().expect("id").to_owned()
}

async fn an_engine_orders_a_course_and_follows_it_to_the_transfusion(backend: Backend) {
    let mut b = bank(backend).await;
    // The engine signs in with the client credentials the blood bank's administrator issued.
    let admin = b.app.admin_token().await;
    let client = b
        .app
        .post(
            &format!("/api/v1/hospitals/{}/clients", b.hospital),
            Some(&admin),
            &json!({"name": "interface engine"}),
        )
        .await
        .ok(201)
        .clone();
    let engine = b
        .app
        .post(
            "/api/v1/auth/token",
            None,
            &json!({"client_id": client["client_id"], "client_secret": client["client_secret"]}),
        )
        .await
        .ok(200)["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let engine_token = engine;
    let engine = Some(engine_token.as_str());
    let app = &b.app;

    // Discovery.
    let cs = fhir::get(app, "/fhir/R5/metadata", None).await;
    assert_eq!(cs.resource(200, "CapabilityStatement")["fhirVersion"], "5.0.0");

    // Match or register the patient, twice: one patient.
    let system = crate::fhir_patient::mrn_system(app, &engine_token, b.hospital).await;
    let condition = format!("identifier={system}|RT-1");
    let mut body = fhir_patient(&system, "RT-1");
    // No HLA antibodies: a supplier unit's donor is not HLA-typed (that would need authorising).
    body["extension"]
        .as_array_mut()
        .expect("extensions")
        .retain(|e| e["url"] != format!("{EXT}hla-antibody"));
    let patient = id(
        fhir::post(app, "/fhir/R5/Patient", engine, &body, &[("If-None-Exist", &condition)])
            .await
            .resource(201, "Patient"),
    );
    let again = fhir::post(app, "/fhir/R5/Patient", engine, &body, &[("If-None-Exist", &condition)]).await;
    assert_eq!(id(again.resource(200, "Patient")), patient);

    // The crossmatch sample.
    let specimen = fhir::post(
        app,
        "/fhir/R5/Specimen",
        engine,
        &json!({"resourceType": "Specimen", "subject": {"reference": format!("Patient/{patient}")},
                "collection": {"collectedDateTime": ts(now_minute() - TimeDelta::hours(1))},
                "extension": [{"url": format!("{EXT}recent-transfusion-or-pregnancy"), "valueBoolean": true}]}),
        &[],
    )
    .await;
    let specimen = specimen.resource(201, "Specimen").clone();
    assert!(
        specimen["extension"]
            .as_array()
            .expect("extensions")
            .iter()
            .any(|e| e["url"] == format!("{EXT}specimen-valid-until") && e["valueDateTime"].is_string())
    );
    let specimen = id(&specimen);

    // The order, sent twice with its order number as the condition: one order.
    let sr_condition = format!("identifier={ORDERS}|ORD-77");
    let placed = fhir::post(
        app,
        "/fhir/R5/ServiceRequest",
        engine,
        &order(&patient, &specimen, "ORD-77"),
        &[("If-None-Exist", &sr_condition)],
    )
    .await;
    let sr = placed.resource(201, "ServiceRequest").clone();
    let request = id(&sr);
    assert_eq!(sr["status"], "active", "{sr}");
    let again = fhir::post(
        app,
        "/fhir/R5/ServiceRequest",
        engine,
        &order(&patient, &specimen, "ORD-77"),
        &[("If-None-Exist", &sr_condition)],
    )
    .await;
    assert_eq!(id(again.resource(200, "ServiceRequest")), request);
    let mine = b.app.get("/api/v1/requests", Some(&b.hosp)).await;
    assert_eq!(mine.ok(200)["items"].as_array().map(Vec::len), Some(1));

    // The blood bank types the patient twice (group of record), crossmatches a unit against the
    // engine's sample, allocates and issues it — all in /api/v1.
    let patient_id: i64 = patient.parse().expect("id");
    let request_id: i64 = request.parse().expect("id");
    confirm_group(app, &b.tech, patient_id, "A", "positive").await;
    let group = fhir::get(app, &format!("/fhir/R5/Observation/abo-rh-{patient}"), engine).await;
    let group = group.resource(200, "Observation");
    assert_eq!(
        (
            group["status"].as_str(),
            group["valueCodeableConcept"]["coding"][0]["code"].as_str()
        ),
        (Some("final"), Some("62"))
    );
    let (unit, din) = b.ready("A", "positive", "negative", 2).await;
    b.crossmatch(unit, specimen.parse().expect("id"), "compatible").await;
    let allocation = b.allocated(request_id, unit).await;

    // Allocated: the engine already sees the unit and the dispense in preparation for it.
    let dispenses = fhir::get(
        app,
        &format!("/fhir/R5/BiologicallyDerivedProductDispense?based-on=ServiceRequest/{request}"),
        engine,
    )
    .await;
    let dispenses = entries(dispenses.resource(200, "Bundle"));
    assert_eq!(dispenses.len(), 1);
    assert_eq!(dispenses[0]["status"], "allocated");
    b.issued(allocation, din.as_str()).await;

    let dispense = fhir::get(
        app,
        &format!("/fhir/R5/BiologicallyDerivedProductDispense/{allocation}"),
        engine,
    )
    .await;
    let dispense = dispense.resource(200, "BiologicallyDerivedProductDispense").clone();
    assert_eq!(dispense["status"], "issued");
    assert_eq!(dispense["matchStatus"]["coding"][0]["code"], "crossmatched");
    assert_eq!(dispense["basedOn"][0]["reference"], format!("ServiceRequest/{request}"));
    assert!(dispense["whenHandedOver"].is_string());
    assert!(
        !dispense.to_string().contains("technologist"),
        "no staff usernames to a hospital"
    );
    let product = fhir::get(app, &format!("/fhir/R5/BiologicallyDerivedProduct/{unit}"), engine).await;
    let product = product.resource(200, "BiologicallyDerivedProduct").clone();
    assert_eq!(product["biologicalSourceEvent"]["value"], din.as_str());
    assert_eq!(product["productStatus"]["code"], "available");
    assert_eq!(product["request"][0]["reference"], format!("ServiceRequest/{request}"));
    let found = fhir::get(
        app,
        &format!("/fhir/R5/BiologicallyDerivedProduct?identifier=https://www.isbt128.org/uri/DonationIdentificationNumber%7C{din}"),
        engine,
    )
    .await;
    assert_eq!(entry_ids(found.resource(200, "Bundle")), vec![unit.to_string()]);
    let xm = fhir::get(
        app,
        &format!("/fhir/R5/Observation?based-on=ServiceRequest/{request}&code=http://loinc.org%7C1250-0"),
        engine,
    )
    .await;
    assert_eq!(xm.resource(200, "Bundle")["total"], 1);

    // The ward transfuses; the engine reports the counts before and after, and the outcome
    // appears in /api/v1.
    let now = Utc::now();
    b.backdate_issue(allocation, now - TimeDelta::hours(3));
    let started = now - TimeDelta::hours(2);
    let ended = started + TimeDelta::minutes(70);
    b.app
        .post(
            &format!("/api/v1/allocations/{allocation}/transfusion"),
            Some(&b.hosp),
            &json!({"started_at": ts(started), "ended_at": ts(ended)}),
        )
        .await
        .ok(200);
    let dispense_id = allocation.to_string();
    for (taken, value, unit) in [
        (started - TimeDelta::minutes(30), 80.0, "/uL"),
        (ended + TimeDelta::minutes(40), 0.61, "10*9/L"),
    ] {
        fhir::post(
            app,
            "/fhir/R5/Observation",
            engine,
            &count(&patient, &dispense_id, taken, value, unit),
            &[],
        )
        .await
        .resource(201, "Observation");
    }
    let outcome = b
        .app
        .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.hosp))
        .await;
    let outcome = outcome.ok(200);
    assert_eq!(
        (
            outcome["pre_anc_per_ul"].as_i64(),
            outcome["post_anc_per_ul"].as_i64(),
            outcome["anc_increment_per_ul"].as_i64()
        ),
        (Some(80), Some(610), Some(530)),
        "{outcome}"
    );
    let counts = fhir::get(
        app,
        &format!("/fhir/R5/Observation?patient=Patient/{patient}&code=http://loinc.org%7C751-8"),
        engine,
    )
    .await;
    assert_eq!(counts.resource(200, "Bundle")["total"], 2);

    // What the engine wrote is in the audit trail, under its own name.
    let audited = b.audit_actions("patient", patient_id).await;
    assert!(audited.iter().any(|a| a == "patient.create"), "{audited:?}");
    let audited = b.audit_actions("request", request_id).await;
    assert!(audited.iter().any(|a| a == "request.create"), "{audited:?}");
    let audited = b.audit_actions("allocation", allocation).await;
    assert_eq!(
        audited.iter().filter(|a| *a == "allocation.anc_result").count(),
        2,
        "{audited:?}"
    );

    // Another hospital sees none of it.
    let (_, other) = hospital(&mut b.app).await;
    let other = Some(other.as_str());
    for path in [
        format!("/fhir/R5/Patient/{patient}"),
        format!("/fhir/R5/ServiceRequest/{request}"),
        format!("/fhir/R5/Specimen/{specimen}"),
        format!("/fhir/R5/BiologicallyDerivedProduct/{unit}"),
        format!("/fhir/R5/BiologicallyDerivedProductDispense/{allocation}"),
        format!("/fhir/R5/Observation/abo-rh-{patient}"),
    ] {
        fhir::get(&b.app, &path, other).await.outcome(404, "not_found");
    }
    for query in [
        "Patient?identifier=RT-1".to_owned(),
        format!("ServiceRequest?identifier={ORDERS}%7CORD-77"),
        format!("BiologicallyDerivedProduct?identifier={din}"),
        format!("BiologicallyDerivedProductDispense?based-on=ServiceRequest/{request}"),
        format!("Observation?patient=Patient/{patient}"),
    ] {
        let r = fhir::get(&b.app, &format!("/fhir/R5/{query}"), other).await;
        assert_eq!(r.resource(200, "Bundle")["total"], 0, "{query}");
    }
}

both_backends!(an_engine_orders_a_course_and_follows_it_to_the_transfusion);
