//! The FHIR R5 facade's own behaviour: discovery, media types, errors as OperationOutcome,
//! search parameter checking. The resources have their own files (`fhir_*.rs`).

use serde_json::json;

use crate::both_backends;
use crate::fhir_support::{self as fhir, FHIR_JSON};
use crate::helpers::*;

async fn the_capability_statement_lists_what_is_served(backend: Backend) {
    let app = spawn(backend).await;
    let cs = fhir::get(&app, "/fhir/R5/metadata", None).await;
    let cs = cs.resource(200, "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "5.0.0");
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r["type"].as_str().expect("type"))
        .collect();
    for t in [
        "Patient",
        "ServiceRequest",
        "Specimen",
        "BiologicallyDerivedProduct",
        "BiologicallyDerivedProductDispense",
        "Observation",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    assert_eq!(cs["rest"][0]["security"]["service"][0]["coding"][0]["code"], "OAuth");
}

async fn errors_are_operation_outcomes(backend: Backend) {
    let mut app = spawn(backend).await;
    // No token.
    fhir::get(&app, "/fhir/R5/Patient/1", None)
        .await
        .outcome(401, "missing_token");
    let staff = app.token_for("technologist").await;
    // Unknown resource type and unknown search parameter.
    fhir::get(&app, "/fhir/R5/Medication/1", Some(&staff))
        .await
        .outcome(404, "not_found");
    fhir::get(&app, "/fhir/R5/Patient?name=smith", Some(&staff))
        .await
        .outcome(400, "unknown_search_parameter");
    // A method the resource does not take.
    let r = app
        .send(app.client.delete(app.url("/fhir/R5/metadata")).bearer_auth(&staff))
        .await;
    fhir::assert_valid(&r.body);
    r.outcome(405, "method_not_allowed");
    // XML is not served.
    let r = app.send(app.client.get(app.url("/fhir/R5/metadata?_format=xml"))).await;
    r.outcome(406, "not_acceptable");
    let r = app
        .send(
            app.client
                .get(app.url("/fhir/R5/metadata"))
                .header("Accept", "application/fhir+xml"),
        )
        .await;
    r.outcome(406, "not_acceptable");
    // Plain JSON is answered as plain JSON.
    let r = app
        .send(
            app.client
                .get(app.url("/fhir/R5/metadata"))
                .header("Accept", "application/json"),
        )
        .await;
    assert_eq!(r.ok(200)["resourceType"], "CapabilityStatement");
    assert!(r.content_type().starts_with("application/json"), "{}", r.content_type());
    // A body that is not JSON.
    let r = app
        .send(
            app.client
                .post(app.url("/fhir/R5/Patient"))
                .bearer_auth(&staff)
                .header("Content-Type", FHIR_JSON)
                .body("{"),
        )
        .await;
    fhir::assert_valid(&r.body);
    r.outcome(400, "malformed_json");
    let _ = json!({});
}

/// Every FHIR interaction but `metadata` needs a valid token, and says so as an
/// OperationOutcome.
async fn every_interaction_needs_a_valid_token(backend: Backend) {
    let app = spawn(backend).await;
    let routes = [
        ("GET", "/fhir/R5/Patient"),
        ("GET", "/fhir/R5/Patient/1"),
        ("POST", "/fhir/R5/Patient"),
        ("GET", "/fhir/R5/ServiceRequest"),
        ("GET", "/fhir/R5/ServiceRequest/1"),
        ("POST", "/fhir/R5/ServiceRequest"),
        ("PUT", "/fhir/R5/ServiceRequest/1"),
        ("GET", "/fhir/R5/Specimen/1"),
        ("POST", "/fhir/R5/Specimen"),
        ("GET", "/fhir/R5/BiologicallyDerivedProduct"),
        ("GET", "/fhir/R5/BiologicallyDerivedProduct/1"),
        ("GET", "/fhir/R5/BiologicallyDerivedProductDispense"),
        ("GET", "/fhir/R5/BiologicallyDerivedProductDispense/1"),
        ("GET", "/fhir/R5/Observation?patient=1"),
        ("GET", "/fhir/R5/Observation/anc-1"),
        ("POST", "/fhir/R5/Observation"),
    ];
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        for token in [None, Some("not-a-token")] {
            let mut req = app
                .client
                .request(method.clone(), app.url(path))
                .header("Content-Type", FHIR_JSON)
                .body("{}");
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = app.send(req).await;
            fhir::assert_valid(&r.body);
            r.outcome(
                401,
                if token.is_some() {
                    "invalid_token"
                } else {
                    "missing_token"
                },
            );
        }
    }
}

both_backends!(
    the_capability_statement_lists_what_is_served,
    errors_are_operation_outcomes,
    every_interaction_needs_a_valid_token,
);
