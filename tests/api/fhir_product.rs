//! FHIR `BiologicallyDerivedProduct` (units) and `BiologicallyDerivedProductDispense`
//! (allocations and their issue): reads and searches as staff and as hospitals, scoping, status
//! mappings and paging. Units are allocated and issued through /api/v1.

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::{Bank, bank};
use crate::both_backends;
use crate::fhir_support::{self as fhir, entries, entry_ids};
use crate::helpers::*;

const ISBT_DIN: &str = "https://www.isbt128.org/uri/DonationIdentificationNumber";
const BDP: &str = "/fhir/R5/BiologicallyDerivedProduct";
const DISPENSE: &str = "/fhir/R5/BiologicallyDerivedProductDispense";

fn extension<'a>(resource: &'a Value, name: &str) -> &'a Value {
    resource["extension"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(&format!("/{name}"))))
        })
        .unwrap_or(&Value::Null)
}

fn property<'a>(resource: &'a Value, code: &str) -> &'a Value {
    resource["property"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["type"]["coding"][0]["code"] == code))
        .unwrap_or(&Value::Null)
}

async fn search(b: &Bank, path: &str, token: &str) -> Value {
    fhir::get(&b.app, path, Some(token))
        .await
        .resource(200, "Bundle")
        .clone()
}

/// A typed O+ patient of the bank's hospital with an open request for `units` units.
async fn order(b: &Bank, mrn: &str, units: u32) -> (i64, i64) {
    let patient = b.typed_patient(&patient_body(mrn, "O", "positive", "male")).await;
    (patient, b.request_for(patient, units).await)
}

/// A released O+ unit allocated to `request`, crossmatched compatible against a sample of
/// `patient`; returns (unit, din, allocation).
async fn allocated_unit(b: &Bank, patient: i64, request: i64) -> (i64, String, i64) {
    let (unit, din) = b.ready("O", "positive", "negative", 1).await;
    let allocation = b.allocated(request, unit).await;
    let sample = b.sample(patient).await;
    b.crossmatch(unit, sample, "compatible").await;
    (unit, din, allocation)
}

async fn the_unit_and_its_issue_read_as_staff_and_as_the_hospital(backend: Backend) {
    let b = bank(backend).await;
    let (patient, request) = order(&b, "MRN-BDP-1", 1).await;
    let (unit, din, allocation) = allocated_unit(&b, patient, request).await;
    let tech_name = b
        .app
        .get(&format!("/api/v1/allocations/{allocation}"), Some(&b.tech))
        .await
        .ok(200)["allocated_by"]
        .as_str()
        .expect("allocated_by")
        .to_owned();

    // The unit as staff.
    let r = fhir::get(&b.app, &format!("{BDP}/{unit}"), Some(&b.tech)).await;
    let p = r.resource(200, "BiologicallyDerivedProduct").clone();
    assert!(r.etag().starts_with("W/\""));
    assert_eq!(p["id"], unit.to_string());
    assert_eq!(p["productCategory"]["code"], "cells");
    assert_eq!(p["productCategory"]["system"], "http://hl7.org/fhir/product-category");
    assert_eq!(
        p["productCode"]["coding"][0]["system"],
        "https://iccbba.org/standardterminology"
    );
    assert_eq!(p["productCode"]["coding"][0]["code"], &PRODUCT[..5]);
    assert_eq!(p["biologicalSourceEvent"], json!({"system": ISBT_DIN, "value": din}));
    assert_eq!(p["identifier"][0]["value"], din);
    assert_eq!(
        p["request"],
        json!([{"reference": format!("ServiceRequest/{request}")}])
    );
    assert_eq!(p["productStatus"]["code"], "available");
    assert_eq!(extension(&p, "unit-status")["valueCode"], "allocated");
    assert_eq!(p["collection"]["source"]["display"], "Regional centre");
    assert!(p["collection"]["collectedDateTime"].is_string());
    assert_eq!(p["processingFacility"][0]["display"], "Regional centre");
    assert_eq!(p["processingFacility"][0]["identifier"]["value"], &din[..5]);
    let temp = &p["storageTempRequirements"];
    assert_eq!(temp["low"]["code"], "Cel");
    assert_eq!(
        (temp["low"]["value"].as_f64(), temp["high"]["value"].as_f64()),
        (Some(20.0), Some(24.0))
    );
    let abo = &property(&p, "abo-rhd")["valueCodeableConcept"]["coding"][0];
    assert_eq!(abo["system"], "https://www.isbt128.org/uri/ABORhD");
    assert_eq!(abo["code"], "51");
    assert_eq!(property(&p, "irradiated")["valueBoolean"], true);
    assert_eq!(
        property(&p, "cmv-serostatus")["valueCodeableConcept"]["coding"][0]["code"],
        "negative"
    );
    assert_eq!(property(&p, "volume")["valueQuantity"]["code"], "mL");
    assert_eq!(property(&p, "volume")["valueQuantity"]["value"].as_f64(), Some(250.0));
    assert_eq!(
        property(&p, "granulocyte-count")["valueQuantity"]["value"].as_f64(),
        Some(5e10)
    );
    let expires = b.unit(unit).await["expires_at"].as_str().expect("expiry").to_owned();
    assert_eq!(
        p["expirationDate"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        chrono::DateTime::parse_from_rfc3339(&expires).ok()
    );

    // The hospital sees it once allocated to its request (/api/v1 shows it only once issued).
    let seen = fhir::get(&b.app, &format!("{BDP}/{unit}"), Some(&b.hosp)).await;
    assert_eq!(seen.resource(200, "BiologicallyDerivedProduct")["id"], unit.to_string());

    // The allocation as a dispense.
    let d = fhir::get(&b.app, &format!("{DISPENSE}/{allocation}"), Some(&b.tech)).await;
    let d = d.resource(200, "BiologicallyDerivedProductDispense").clone();
    assert_eq!(d["status"], "allocated");
    assert_eq!(extension(&d, "allocation-status")["valueCode"], "allocated");
    assert_eq!(d["basedOn"][0]["reference"], format!("ServiceRequest/{request}"));
    assert_eq!(d["patient"]["reference"], format!("Patient/{patient}"));
    assert_eq!(d["product"]["reference"], format!("BiologicallyDerivedProduct/{unit}"));
    assert_eq!(d["product"]["identifier"]["value"], din);
    assert_eq!(d["matchStatus"]["coding"][0]["code"], "crossmatched");
    assert!(d["preparedDate"].is_string());
    assert!(d.get("whenHandedOver").is_none());
    assert!(d["destination"]["display"].is_string());
    assert_eq!(d["performer"].as_array().map(Vec::len), Some(1));
    assert_eq!(d["performer"][0]["actor"]["display"], tech_name);

    // Issued: handed over, and the release performed by the technologist.
    b.issued(allocation, din.as_str()).await;
    let d = fhir::get(&b.app, &format!("{DISPENSE}/{allocation}"), Some(&b.tech)).await;
    let d = d.resource(200, "BiologicallyDerivedProductDispense").clone();
    assert_eq!(d["status"], "issued");
    assert!(d["whenHandedOver"].is_string());
    let release = &d["performer"][1];
    assert_eq!(
        release["function"]["coding"][0]["system"],
        "http://hl7.org/fhir/CodeSystem/biologicallyderivedproductdispense-performer-function"
    );
    assert_eq!(release["function"]["coding"][0]["code"], "release");
    assert_eq!(release["actor"]["display"], tech_name);

    // The hospital reads the same dispense without any staff name.
    let h = fhir::get(&b.app, &format!("{DISPENSE}/{allocation}"), Some(&b.hosp)).await;
    let hd = h.resource(200, "BiologicallyDerivedProductDispense").clone();
    assert_eq!(hd["status"], "issued");
    for performer in hd["performer"].as_array().expect("performers") {
        assert_eq!(performer["actor"]["display"], "blood bank staff");
    }
    assert!(!h.text.contains(&tech_name), "{}", h.text);
    let hp = fhir::get(&b.app, &format!("{BDP}/{unit}"), Some(&b.hosp)).await;
    let hp = hp.resource(200, "BiologicallyDerivedProduct").clone();
    assert_eq!(hp["productStatus"]["code"], "available");
    assert_eq!(extension(&hp, "unit-status")["valueCode"], "issued");
    assert!(!serde_json::to_string(&hp).expect("json").contains(&tech_name));
}

async fn other_hospitals_and_unallocated_units_stay_hidden(backend: Backend) {
    let mut b = bank(backend).await;
    let (_, other) = hospital(&mut b.app).await;
    let (patient, request) = order(&b, "MRN-BDP-2", 1).await;
    let (unit, din, allocation) = allocated_unit(&b, patient, request).await;
    let (spare, spare_din) = b.ready("O", "positive", "negative", 1).await;

    // Another hospital: 404 on read, absent from search.
    for path in [format!("{BDP}/{unit}"), format!("{DISPENSE}/{allocation}")] {
        fhir::get(&b.app, &path, Some(&other)).await.outcome(404, "not_found");
    }
    for path in [
        BDP.to_owned(),
        format!("{BDP}?identifier={din}"),
        format!("{BDP}?request=ServiceRequest/{request}"),
        DISPENSE.to_owned(),
        format!("{DISPENSE}?patient=Patient/{patient}"),
        format!("{DISPENSE}?based-on=ServiceRequest/{request}"),
    ] {
        let found = search(&b, &path, &other).await;
        assert_eq!(found["total"], 0, "{path}");
        assert!(entries(&found).is_empty(), "{path}");
    }
    // An unallocated unit is the blood bank's alone.
    fhir::get(&b.app, &format!("{BDP}/{spare}"), Some(&b.hosp))
        .await
        .outcome(404, "not_found");
    assert!(entry_ids(&search(&b, &format!("{BDP}?identifier={spare_din}"), &b.hosp).await).is_empty());
    assert_eq!(entry_ids(&search(&b, BDP, &b.hosp).await), vec![unit.to_string()]);
    let all = entry_ids(&search(&b, BDP, &b.tech).await);
    assert!(all.contains(&unit.to_string()) && all.contains(&spare.to_string()));
    fhir::get(&b.app, &format!("{BDP}/{spare}"), Some(&b.tech))
        .await
        .resource(200, "BiologicallyDerivedProduct");
    // The unit comes back from the first hospital and goes to the other: each sees only its
    // own order in `request`, and cannot find the unit by the other's order.
    b.issued(allocation, din.as_str()).await;
    b.app
        .post(
            &format!("/api/v1/allocations/{allocation}/return"),
            Some(&b.tech),
            &json!({"reason": "not needed"}),
        )
        .await
        .ok(200);
    b.app
        .post(
            &format!("/api/v1/units/{unit}/inspection"),
            Some(&b.tech),
            &json!({"acceptable": true, "notes": "bag intact"}),
        )
        .await
        .ok(201);
    let their_patient = typed_patient(
        &b.app,
        &other,
        &b.tech,
        &patient_body("MRN-BDP-X", "O", "positive", "male"),
    )
    .await;
    let their_request = b
        .app
        .post("/api/v1/requests", Some(&other), &request_body(their_patient, 1))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("request");
    b.allocated(their_request, unit).await;
    for (token, own) in [(&b.hosp, request), (&other, their_request)] {
        let p = fhir::get(&b.app, &format!("{BDP}/{unit}"), Some(token)).await;
        let p = p.resource(200, "BiologicallyDerivedProduct");
        assert_eq!(p["request"], json!([{"reference": format!("ServiceRequest/{own}")}]));
    }
    let staff = fhir::get(&b.app, &format!("{BDP}/{unit}"), Some(&b.tech)).await;
    assert_eq!(
        staff.resource(200, "BiologicallyDerivedProduct")["request"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let crossed = search(&b, &format!("{BDP}?request=ServiceRequest/{their_request}"), &b.hosp).await;
    assert_eq!(crossed["total"], 0);
    // Ids that do not exist, or are not ids.
    for path in [
        format!("{BDP}/999999"),
        format!("{BDP}/abc"),
        format!("{DISPENSE}/999999"),
    ] {
        fhir::get(&b.app, &path, Some(&b.tech)).await.outcome(404, "not_found");
    }
}

async fn units_are_searched_by_din_status_request_and_expiry(backend: Backend) {
    let b = bank(backend).await;
    let (patient, request) = order(&b, "MRN-BDP-3", 2).await;
    let (unit, din, _) = allocated_unit(&b, patient, request).await;
    let (second, _, _) = allocated_unit(&b, patient, request).await;
    let (spare, _) = b.ready("O", "positive", "negative", 1).await;
    let (old, _) = b.ready("O", "positive", "negative", 1).await;
    // Past its expiry but not yet swept: still `available` in the table.
    b.set_unit_expiry(old, Utc::now() - TimeDelta::minutes(5));
    let ids = |bundle: &Value| entry_ids(bundle);
    let s = |id: i64| id.to_string();

    // identifier: the DIN alone, in the ISBT system, keyed with its check character.
    let check = b.unit(unit).await["check_character"]
        .as_str()
        .expect("check")
        .to_owned();
    for query in [
        din.clone(),
        format!("{}|{din}", urlencoding(ISBT_DIN)),
        format!("{din}{check}"),
    ] {
        let found = search(&b, &format!("{BDP}?identifier={query}"), &b.tech).await;
        assert_eq!(ids(&found), vec![s(unit)], "{query}");
        assert_eq!(found["total"], 1);
    }
    for query in [format!("urn:other|{din}"), format!("|{din}")] {
        assert!(ids(&search(&b, &format!("{BDP}?identifier={}", urlencoding(&query)), &b.tech).await).is_empty());
    }
    let wrong = if check == "0" { "1" } else { "0" };
    fhir::get(&b.app, &format!("{BDP}?identifier={din}{wrong}"), Some(&b.tech))
        .await
        .outcome(422, "invalid_check_character");

    // product-status agrees with the status as of now.
    let available = ids(&search(&b, &format!("{BDP}?product-status=available"), &b.tech).await);
    assert_eq!(available, vec![s(unit), s(second), s(spare)]);
    let unavailable = ids(&search(&b, &format!("{BDP}?product-status=unavailable"), &b.tech).await);
    assert_eq!(unavailable, vec![s(old)]);
    let expired = fhir::get(&b.app, &format!("{BDP}/{old}"), Some(&b.tech)).await;
    let expired = expired.resource(200, "BiologicallyDerivedProduct");
    assert_eq!(expired["productStatus"]["code"], "unavailable");
    assert_eq!(extension(expired, "unit-status")["valueCode"], "expired");
    let both = search(&b, &format!("{BDP}?product-status=available,unavailable"), &b.tech).await;
    assert_eq!(both["total"], 4);
    let neither = search(
        &b,
        &format!("{BDP}?product-status=available&product-status=unavailable"),
        &b.tech,
    )
    .await;
    assert_eq!(neither["total"], 0);
    fhir::get(&b.app, &format!("{BDP}?product-status=expired"), Some(&b.tech))
        .await
        .outcome(400, "invalid_query");

    // request, for staff and for the hospital that placed it.
    for token in [&b.tech, &b.hosp] {
        let found = search(&b, &format!("{BDP}?request=ServiceRequest/{request}"), token).await;
        assert_eq!(ids(&found), vec![s(unit), s(second)]);
    }
    fhir::get(&b.app, &format!("{BDP}?request=Patient/{patient}"), Some(&b.tech))
        .await
        .outcome(400, "invalid_query");

    // expiration: the old unit expired minutes ago, the others expire later.
    let now = Utc::now();
    let before = search(&b, &format!("{BDP}?expiration=lt{}", urlencoding(&ts(now))), &b.tech).await;
    assert_eq!(ids(&before), vec![s(old)]);
    let after = search(
        &b,
        &format!("{BDP}?expiration=ge{}&product-status=available", urlencoding(&ts(now))),
        &b.tech,
    )
    .await;
    assert_eq!(after["total"], 3);
    let next_year = (now + TimeDelta::days(400)).format("%Y").to_string();
    assert!(search(&b, &format!("{BDP}?expiration={next_year}"), &b.tech).await["total"] == 0);
    assert!(search(&b, &format!("{BDP}?expiration=le{}", next_year), &b.tech).await["total"] == 4);
    fhir::get(&b.app, &format!("{BDP}?expiration=soon"), Some(&b.tech))
        .await
        .outcome(400, "invalid_query");
    fhir::get(&b.app, &format!("{BDP}?status=available"), Some(&b.tech))
        .await
        .outcome(400, "unknown_search_parameter");

    // Paging: one at a time, following link.next, with the total on every page.
    let mut path = format!("{BDP}?_count=1");
    let mut seen = Vec::new();
    loop {
        let page = search(&b, &path, &b.tech).await;
        assert_eq!(page["total"], 4);
        seen.extend(ids(&page));
        let next = page["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        match next {
            Some(url) => path = url[url.find("/fhir/R5").expect("base")..].to_owned(),
            None => break,
        }
        assert!(seen.len() <= 4, "paging does not end");
    }
    assert_eq!(seen, vec![s(unit), s(second), s(spare), s(old)]);
}

async fn dispenses_are_searched_and_follow_return_and_cancel(backend: Backend) {
    let mut b = bank(backend).await;
    let (patient, request) = order(&b, "MRN-BDP-4", 3).await;
    let (other_patient, other_request) = order(&b, "MRN-BDP-5", 1).await;
    let (unit, din, issued) = allocated_unit(&b, patient, request).await;
    b.issued(issued, din.as_str()).await;
    let (second, _, cancelled) = allocated_unit(&b, patient, request).await;
    let (_, third_din, returned) = allocated_unit(&b, patient, request).await;
    let (_, _, elsewhere) = allocated_unit(&b, other_patient, other_request).await;
    b.issued(returned, third_din.as_str()).await;
    b.app
        .post(
            &format!("/api/v1/allocations/{returned}/return"),
            Some(&b.tech),
            &json!({"reason": "patient unstable"}),
        )
        .await
        .ok(200);
    b.app
        .post(
            &format!("/api/v1/allocations/{cancelled}/cancel"),
            Some(&b.tech),
            &json!({"reason": "course stopped"}),
        )
        .await
        .ok(200);
    let ids = |bundle: &Value| entry_ids(bundle);
    let s = |id: i64| id.to_string();

    // Returned and cancelled: status, the reason as a note, the exact status in the extension.
    let r = fhir::get(&b.app, &format!("{DISPENSE}/{returned}"), Some(&b.hosp)).await;
    let r = r.resource(200, "BiologicallyDerivedProductDispense").clone();
    assert_eq!(r["status"], "returned");
    assert_eq!(r["note"][0]["text"], "patient unstable");
    let c = fhir::get(&b.app, &format!("{DISPENSE}/{cancelled}"), Some(&b.hosp)).await;
    let c = c.resource(200, "BiologicallyDerivedProductDispense").clone();
    assert_eq!(c["status"], "unfulfilled");
    assert_eq!(extension(&c, "allocation-status")["valueCode"], "cancelled");
    assert_eq!(c["note"][0]["text"], "course stopped");
    // The cancelled unit is back in stock: the hospital no longer sees it; staff see it available.
    fhir::get(&b.app, &format!("{BDP}/{second}"), Some(&b.hosp))
        .await
        .outcome(404, "not_found");
    let back = fhir::get(&b.app, &format!("{BDP}/{second}"), Some(&b.tech)).await;
    let back = back.resource(200, "BiologicallyDerivedProduct");
    assert_eq!(back["productStatus"]["code"], "available");
    assert!(back.get("request").is_none(), "{back}");
    // The returned unit waits for inspection: quarantined, so unavailable; still the hospital's.
    let held = fhir::get(&b.app, &format!("{BDP}?identifier={third_din}"), Some(&b.hosp)).await;
    let held = entries(held.resource(200, "Bundle"));
    assert_eq!(held[0]["productStatus"]["code"], "unavailable");
    assert_eq!(extension(&held[0], "unit-status")["valueCode"], "quarantined");

    // Searches.
    for (query, expected) in [
        (format!("patient=Patient/{patient}"), vec![issued, cancelled, returned]),
        (format!("patient={other_patient}"), vec![elsewhere]),
        (
            format!("patient=Patient/{patient},Patient/{other_patient}"),
            vec![issued, cancelled, returned, elsewhere],
        ),
        (format!("based-on=ServiceRequest/{other_request}"), vec![elsewhere]),
        ("status=issued".to_owned(), vec![issued]),
        ("status=allocated".to_owned(), vec![elsewhere]),
        ("status=returned".to_owned(), vec![returned]),
        ("status=unfulfilled".to_owned(), vec![cancelled]),
        ("status=returned,unfulfilled".to_owned(), vec![cancelled, returned]),
        (
            format!(
                "status={}|issued",
                urlencoding("http://hl7.org/fhir/biologicallyderivedproductdispense-status")
            ),
            vec![issued],
        ),
        ("status=urn:other|issued".replace('|', "%7C"), vec![]),
        ("status=preparation,in-progress".to_owned(), vec![]),
        (
            format!("patient=Patient/{patient}&status=issued,returned"),
            vec![issued, returned],
        ),
    ] {
        for token in [&b.tech, &b.hosp] {
            let found = search(&b, &format!("{DISPENSE}?{query}"), token).await;
            assert_eq!(
                ids(&found),
                expected.iter().map(|i| s(*i)).collect::<Vec<_>>(),
                "{query}"
            );
            assert_eq!(found["total"], expected.len(), "{query}");
        }
    }
    fhir::get(&b.app, &format!("{DISPENSE}?status=transfused"), Some(&b.tech))
        .await
        .outcome(400, "invalid_query");
    fhir::get(
        &b.app,
        &format!("{DISPENSE}?patient=ServiceRequest/{request}"),
        Some(&b.tech),
    )
    .await
    .outcome(400, "invalid_query");
    fhir::get(&b.app, &format!("{DISPENSE}?product=1"), Some(&b.tech))
        .await
        .outcome(400, "unknown_search_parameter");

    // Paging with the hospital's token.
    let mut path = format!("{DISPENSE}?_count=1&patient=Patient/{patient}");
    let mut seen = Vec::new();
    loop {
        let page = search(&b, &path, &b.hosp).await;
        assert_eq!(page["total"], 3);
        assert!(entries(&page).len() <= 1);
        seen.extend(ids(&page));
        match page["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
        {
            Some(url) => path = url[url.find("/fhir/R5").expect("base")..].to_owned(),
            None => break,
        }
        assert!(seen.len() <= 3, "paging does not end");
    }
    assert_eq!(seen, vec![s(issued), s(cancelled), s(returned)]);

    // Another hospital finds none of them.
    let (_, other) = hospital(&mut b.app).await;
    assert_eq!(search(&b, DISPENSE, &other).await["total"], 0);
    fhir::get(&b.app, &format!("{DISPENSE}/{issued}"), Some(&other))
        .await
        .outcome(404, "not_found");
    let _ = unit;
}

async fn donors_stay_anonymous_and_pools_name_their_members(backend: Backend) {
    let b = bank(backend).await;
    let (fin, facility) = (
        b.app.state.settings.fin.clone(),
        b.app.state.settings.facility_name.clone(),
    );
    let collection = completed_collection(&b.app, &b.tech, "Dorothea", now_minute() - TimeDelta::hours(1)).await;
    let member = b.collection_unit(collection).await;
    let member_din = b.unit(member).await["din"].as_str().expect("din").to_owned();

    // A unit of our own collection: our facility, the donor only as "volunteer donor".
    let r = fhir::get(&b.app, &format!("{BDP}/{member}"), Some(&b.tech)).await;
    let p = r.resource(200, "BiologicallyDerivedProduct").clone();
    assert_eq!(p["collection"]["source"], json!({"display": "volunteer donor"}));
    assert_eq!(p["processingFacility"][0]["display"], facility);
    assert_eq!(p["processingFacility"][0]["identifier"]["value"], fin);
    assert_eq!(p["productStatus"]["code"], "unavailable");
    assert_eq!(extension(&p, "unit-status")["valueCode"], "quarantined");
    // Without `meta`, whose timestamp's digits may spell anything.
    let mut shown = p.clone();
    if let Some(o) = shown.as_object_mut() {
        o.remove("meta");
    }
    let shown = shown.to_string();
    for secret in ["Dorothea", "donor@example.org", "7946"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }

    // A supplier's pool with that donation and one from elsewhere.
    let body = json!({"source": {"type": "external", "supplier": "Regional centre", "din": next_din(), "abo": "O",
                                 "rhd": "positive", "collected_at": ts(now_minute() - TimeDelta::hours(1)),
                                 "cmv": "negative"},
                      "pooled_from": [member_din, "A999921123456"],
                      "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10});
    let (pool, _) = b.ready_from(&body).await;
    let parents = |p: &Value| p["parent"].as_array().cloned().expect("parents");
    let staff = fhir::get(&b.app, &format!("{BDP}/{pool}"), Some(&b.tech)).await;
    let staff = parents(staff.resource(200, "BiologicallyDerivedProduct"));
    assert_eq!(staff[0]["reference"], format!("BiologicallyDerivedProduct/{member}"));
    assert_eq!(staff[0]["identifier"], json!({"system": ISBT_DIN, "value": member_din}));
    assert!(staff[1].get("reference").is_none());
    assert_eq!(staff[1]["identifier"]["value"], "A999921123456");
    // The hospital the pool goes to sees the members by DIN, not the bank's own unit.
    let (_, request) = order(&b, "MRN-BDP-6", 1).await;
    b.allocated(request, pool).await;
    let seen = fhir::get(&b.app, &format!("{BDP}/{pool}"), Some(&b.hosp)).await;
    let seen = parents(seen.resource(200, "BiologicallyDerivedProduct"));
    assert!(seen[0].get("reference").is_none(), "{seen:?}");
    assert_eq!(seen[0]["identifier"]["value"], member_din);
}

/// Percent-encodes what a query value needs here (`:`, `/`, `|`, `+`).
fn urlencoding(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('|', "%7C")
        .replace('+', "%2B")
}

both_backends!(
    the_unit_and_its_issue_read_as_staff_and_as_the_hospital,
    other_hospitals_and_unallocated_units_stay_hidden,
    units_are_searched_by_din_status_request_and_expiry,
    dispenses_are_searched_and_follow_return_and_cancel,
    donors_stay_anonymous_and_pools_name_their_members
);
