//! The OpenAPI document: every response described, operation ids unique, and every
//! request-body example it shows accepted by the server.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::bank::{Bank, bank};
use crate::both_backends;
use crate::helpers::*;

both_backends!(request_body_examples_are_accepted);

async fn document(app: &Http) -> Value {
    app.get("/api/v1/openapi.json", None).await.ok(200).clone()
}

/// OpenAPI requires a description on every response; strict client generators refuse a
/// document without. `scripts/openapi/check` runs a full validator; this is the cheap guard.
#[actix_rt::test]
async fn every_response_is_described_and_operation_ids_are_unique() {
    let app = spawn(Backend::Sqlite).await;
    let doc = document(&app).await;
    let mut missing = Vec::new();
    let mut ids = BTreeMap::<String, Vec<String>>::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let name = format!("{} {path}", method.to_uppercase());
            if let Some(id) = op["operationId"].as_str() {
                ids.entry(id.to_owned()).or_default().push(name.clone());
            }
            for (status, response) in op["responses"].as_object().expect("responses") {
                if response["description"].as_str().is_none_or(|d| d.trim().is_empty()) {
                    missing.push(format!("{name} {status}"));
                }
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new(), "responses without a description");
    ids.retain(|_, ops| ops.len() > 1);
    assert_eq!(ids, BTreeMap::new(), "operation ids used more than once");
}

/// The example of each operation's JSON request body: the media type's own, else its schema's.
fn request_examples(doc: &Value) -> BTreeMap<String, Value> {
    let schemas = &doc["components"]["schemas"];
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let content = &op["requestBody"]["content"]["application/json"];
            let schema = match content["schema"]["$ref"].as_str() {
                Some(r) => &schemas[r.rsplit('/').next().unwrap_or_default()],
                None => &content["schema"],
            };
            let example = [&content["example"], &schema["example"], &schema["examples"][0]]
                .into_iter()
                .find(|e| !e.is_null());
            if let Some(e) = example {
                out.insert(format!("{} {path}", method.to_uppercase()), e.clone());
            }
        }
    }
    out
}

/// Posts the documented examples and keeps count of those it has posted.
struct Examples<'a> {
    bank: &'a Bank,
    examples: BTreeMap<String, Value>,
    posted: BTreeSet<String>,
}

impl Examples<'_> {
    /// Sends the example of `op` ("METHOD /template") to `path` as `token`, with the top-level
    /// fields of `overrides` replaced (ids and times that only this instance can supply);
    /// asserts a 2xx answer and returns its body.
    async fn send(&mut self, op: &str, path: &str, token: &str, overrides: Value) -> Value {
        let mut body = self
            .examples
            .get(op)
            .unwrap_or_else(|| panic!("{op} has no request-body example"))
            .clone();
        if let (Some(b), Some(o)) = (body.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                assert!(b.contains_key(k), "{op}: the example has no field {k}");
                b.insert(k.clone(), v.clone());
            }
        }
        let app = &self.bank.app;
        let (method, _) = op.split_once(' ').expect("METHOD /path");
        let r = match method {
            "POST" => app.post(path, Some(token), &body).await,
            "PATCH" => app.patch(path, Some(token), &body).await,
            "PUT" => app.put(path, Some(token), &body).await,
            other => panic!("{other} with a body"),
        };
        assert!(
            r.status.is_success(),
            "the example of {op} is refused: {} {}; sent {body}",
            r.status,
            r.text
        );
        self.posted.insert(op.to_owned());
        r.body
    }

    async fn as_is(&mut self, op: &str, path: &str, token: &str) -> Value {
        self.send(op, path, token, json!({})).await
    }
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().expect("id")
}

/// Every example is sent as documented; only the fields naming this instance's entities (ids,
/// DINs, credentials) or its clock (times the server compares with now) are replaced.
async fn request_body_examples_are_accepted(backend: Backend) {
    let mut b = bank(backend).await;
    let admin = b.app.admin_token().await;
    let doc = document(&b.app).await;
    // The examples name hospital 3.
    let mut hospital = 0;
    while hospital < 3 {
        hospital = b.app.create_hospital(&format!("EX{hospital}")).await;
    }
    assert_eq!(hospital, 3);
    let soon = |hours: i64| ts(now_minute() + TimeDelta::hours(hours));
    let b = b;
    let (tech, director, hosp) = (b.tech.clone(), b.director.clone(), b.hosp.clone());
    let mut ex = Examples {
        bank: &b,
        examples: request_examples(&doc),
        posted: BTreeSet::new(),
    };

    // Accounts, hospitals, webhooks and tokens.
    ex.as_is("POST /api/v1/webhooks", "/api/v1/webhooks", &admin).await;
    ex.as_is("POST /api/v1/hospitals", "/api/v1/hospitals", &admin).await;
    ex.as_is("PATCH /api/v1/hospitals/{id}", "/api/v1/hospitals/3", &admin)
        .await;
    let client = ex
        .as_is(
            "POST /api/v1/hospitals/{id}/clients",
            "/api/v1/hospitals/3/clients",
            &admin,
        )
        .await;
    ex.send(
        "POST /api/v1/auth/token",
        "/api/v1/auth/token",
        &admin,
        json!({"client_id": client["client_id"], "client_secret": client["client_secret"]}),
    )
    .await;
    let user = id(&ex.as_is("POST /api/v1/users", "/api/v1/users", &admin).await);
    ex.as_is("PATCH /api/v1/users/{id}", &format!("/api/v1/users/{user}"), &admin)
        .await;
    // j.smith is a medical director now: the sign-in asks for a second factor, enrolled first.
    let challenge = ex.as_is("POST /api/v1/auth/login", "/api/v1/auth/login", &admin).await;
    assert_eq!(challenge["enrolment_required"], true);
    let challenge = challenge["challenge"].clone();
    let enrol = ex
        .send(
            "POST /api/v1/auth/mfa/enrol",
            "/api/v1/auth/mfa/enrol",
            &admin,
            json!({"challenge": challenge}),
        )
        .await;
    b.app.mfa.remember("j.smith", enrol["secret"].as_str().expect("secret"));
    let code = b.app.mfa.next_code("j.smith").await;
    let confirmed = ex
        .send(
            "POST /api/v1/auth/mfa/confirm",
            "/api/v1/auth/mfa/confirm",
            &admin,
            json!({"challenge": challenge, "code": code}),
        )
        .await;
    let smith = confirmed["session"]["access_token"].as_str().expect("token").to_owned();
    let code = b.app.mfa.next_code("j.smith").await;
    ex.send(
        "POST /api/v1/auth/mfa/recovery-codes",
        "/api/v1/auth/mfa/recovery-codes",
        &smith,
        json!({"code": code}),
    )
    .await;
    let again = b.app.login_password("j.smith", "correct horse battery staple").await;
    let code = b.app.mfa.next_code("j.smith").await;
    let signed_in = ex
        .send(
            "POST /api/v1/auth/login/mfa",
            "/api/v1/auth/login/mfa",
            &admin,
            json!({"challenge": again.body["challenge"], "code": code}),
        )
        .await;
    ex.send(
        "POST /api/v1/auth/refresh",
        "/api/v1/auth/refresh",
        &admin,
        json!({"refresh_token": signed_in["refresh_token"]}),
    )
    .await;

    // Donors, devices and collections.
    let device = id(&ex.as_is("POST /api/v1/devices", "/api/v1/devices", &tech).await);
    ex.as_is(
        "PATCH /api/v1/devices/{id}",
        &format!("/api/v1/devices/{device}"),
        &tech,
    )
    .await;
    let donor = id(&ex.as_is("POST /api/v1/donors", "/api/v1/donors", &tech).await);
    ex.as_is("PATCH /api/v1/donors/{id}", &format!("/api/v1/donors/{donor}"), &tech)
        .await;
    ex.send(
        "POST /api/v1/donors/{id}/donations",
        &format!("/api/v1/donors/{donor}/donations"),
        &tech,
        json!({"donated_at": ts(now_minute() - TimeDelta::days(60))}),
    )
    .await;
    let today = Utc::now().date_naive();
    ex.send(
        "POST /api/v1/donors/{id}/availability",
        &format!("/api/v1/donors/{donor}/availability"),
        &tech,
        json!({"from": (today + TimeDelta::days(10)).to_string(), "until": (today + TimeDelta::days(12)).to_string()}),
    )
    .await;
    ex.send(
        "POST /api/v1/donors/{id}/deferrals",
        &format!("/api/v1/donors/{donor}/deferrals"),
        &tech,
        json!({"until": ts(now_minute() + TimeDelta::days(180))}),
    )
    .await;

    // A patient whose group the blood bank confirms, and a request.
    let patient = id(&ex.as_is("POST /api/v1/patients", "/api/v1/patients", &tech).await);
    ex.as_is(
        "PATCH /api/v1/patients/{id}",
        &format!("/api/v1/patients/{patient}"),
        &tech,
    )
    .await;
    confirm_group(&b.app, &tech, patient, "A", "negative").await;
    let sample = id(&ex
        .send(
            "POST /api/v1/patients/{id}/samples",
            &format!("/api/v1/patients/{patient}/samples"),
            &tech,
            json!({"drawn_at": ts(now_minute() - TimeDelta::hours(1))}),
        )
        .await);
    ex.as_is(
        "POST /api/v1/samples/{id}/typing",
        &format!("/api/v1/samples/{sample}/typing"),
        &tech,
    )
    .await;
    let request = id(&ex
        .send(
            "POST /api/v1/requests",
            "/api/v1/requests",
            &tech,
            json!({"patient_id": patient, "needed_by": soon(20)}),
        )
        .await);

    // Without the A2 antigen that the example patient has antibodies against.
    let mut body = donor_body("Col", "O", "negative");
    body["hla"] = json!({"a": ["A*01:01"], "b": ["B*07"]});
    let collection_donor = b.app.register_donor(&tech, &body).await;
    let active_device = b.app.create_device(&tech, "Example device").await;
    let collection = id(&ex
        .send(
            "POST /api/v1/collections",
            "/api/v1/collections",
            &tech,
            json!({"donor_id": collection_donor, "device_id": active_device, "request_id": request,
                   "scheduled_start": ts(now_minute() - TimeDelta::hours(3))}),
        )
        .await);
    ex.send(
        "PATCH /api/v1/collections/{id}",
        &format!("/api/v1/collections/{collection}"),
        &tech,
        json!({"scheduled_start": ts(now_minute() - TimeDelta::hours(2))}),
    )
    .await;
    ex.send(
        "POST /api/v1/donors/{id}/stimulations",
        &format!("/api/v1/donors/{collection_donor}/stimulations"),
        &tech,
        json!({"administered_at": ts(now_minute() - TimeDelta::hours(14)), "collection_id": collection}),
    )
    .await;
    ex.as_is(
        "POST /api/v1/collections/{id}/start",
        &format!("/api/v1/collections/{collection}/start"),
        &tech,
    )
    .await;
    ex.as_is(
        "POST /api/v1/collections/{id}/complete",
        &format!("/api/v1/collections/{collection}/complete"),
        &tech,
    )
    .await;
    let second_device = b.app.create_device(&tech, "Second example device").await;
    let other_donor = b.app.register_donor(&tech, &donor_body("Abo", "O", "negative")).await;
    let stopped = id(b
        .app
        .book(&tech, other_donor, second_device, now_minute() - TimeDelta::hours(2))
        .await
        .ok(201));
    let path = format!("/api/v1/collections/{stopped}/start");
    let started = json!({"started_at": ts(now_minute() - TimeDelta::hours(2))});
    b.app.post(&path, Some(&tech), &started).await.ok(200);
    ex.as_is(
        "POST /api/v1/collections/{id}/abort",
        &format!("/api/v1/collections/{stopped}/abort"),
        &tech,
    )
    .await;

    // A supplier unit received by scanning its label (the example's times are long past).
    let received = next_din();
    let flags = granulo::domain::isbt128::Din::parse(&received)
        .expect("din")
        .type3_flags();
    let wall = |t: chrono::DateTime<chrono::Utc>| t.format("0%y%j%H%M").to_string();
    let collected = now_minute() - TimeDelta::hours(1);
    ex.send(
        "POST /api/v1/units/receive",
        "/api/v1/units/receive",
        &tech,
        json!({"scans": [format!("={received}{flags}"), "=%6200", format!("=<{PRODUCT}"),
                         format!("&>{}", wall(collected + TimeDelta::hours(20))), format!("&*{}", wall(collected))]}),
    )
    .await;

    // The collection's unit: irradiated, tested, released, crossmatched, allocated, issued and
    // transfused.
    let unit = ex
        .send(
            "POST /api/v1/units",
            "/api/v1/units",
            &tech,
            json!({"source": {"type": "collection", "collection_id": collection}}),
        )
        .await;
    let (unit, din) = (id(&unit), unit["din"].clone());
    ex.as_is(
        "POST /api/v1/units/{id}/irradiation",
        &format!("/api/v1/units/{unit}/irradiation"),
        &tech,
    )
    .await;
    ex.as_is(
        "POST /api/v1/units/{id}/tests",
        &format!("/api/v1/units/{unit}/tests"),
        &tech,
    )
    .await;
    b.negative_markers(unit).await;
    ex.as_is(
        "POST /api/v1/units/{id}/release",
        &format!("/api/v1/units/{unit}/release"),
        &tech,
    )
    .await;
    ex.send(
        "POST /api/v1/crossmatches",
        "/api/v1/crossmatches",
        &tech,
        json!({"unit_id": unit, "sample_id": sample}),
    )
    .await;
    let allocation = id(&ex
        .send(
            "POST /api/v1/requests/{id}/allocations",
            &format!("/api/v1/requests/{request}/allocations"),
            &tech,
            json!({"unit_id": unit}),
        )
        .await);
    let issued = ex
        .send(
            "POST /api/v1/allocations/{id}/issue",
            &format!("/api/v1/allocations/{allocation}/issue"),
            &tech,
            json!({"scanned_din": din}),
        )
        .await;
    ex.send(
        "POST /api/v1/allocations/{id}/transfusion",
        &format!("/api/v1/allocations/{allocation}/transfusion"),
        &tech,
        json!({"started_at": issued["issued_at"], "ended_at": issued["issued_at"]}),
    )
    .await;

    // Another unit comes back and is inspected; a third is allocated and cancelled (for a
    // patient of the bank's hospital without HLA antibodies).
    let ours = b.patient(&patient_body("EX-G", "O", "positive", "male")).await;
    let (request, sample) = (b.request(&request_body(ours, 2)).await, b.sample(ours).await);
    let (back, back_din) = b.ready("O", "negative", "negative", 1).await;
    b.crossmatch(back, sample, "compatible").await;
    let second = id(b.allocate(&tech, request, json!({"unit_id": back})).await.ok(201));
    b.issue(&tech, second, json!({"scanned_din": back_din})).await.ok(200);
    ex.as_is(
        "POST /api/v1/allocations/{id}/return",
        &format!("/api/v1/allocations/{second}/return"),
        &tech,
    )
    .await;
    ex.as_is(
        "POST /api/v1/units/{id}/inspection",
        &format!("/api/v1/units/{back}/inspection"),
        &tech,
    )
    .await;
    let (kept, _) = b.ready("O", "negative", "negative", 1).await;
    let third = id(b.allocate(&tech, request, json!({"unit_id": kept})).await.ok(201));
    ex.as_is(
        "POST /api/v1/allocations/{id}/cancel",
        &format!("/api/v1/allocations/{third}/cancel"),
        &tech,
    )
    .await;

    // An incompatible crossmatch resolved by the medical director.
    let bad = b.crossmatch(kept, sample, "incompatible").await;
    ex.as_is(
        "POST /api/v1/crossmatches/{id}/resolve",
        &format!("/api/v1/crossmatches/{bad}/resolve"),
        &director,
    )
    .await;

    // Storage: readings, an excursion's disposition, a discard.
    ex.as_is(
        "POST /api/v1/units/{id}/storage-readings",
        &format!("/api/v1/units/{kept}/storage-readings"),
        &tech,
    )
    .await;
    ex.as_is("POST /api/v1/storage-readings", "/api/v1/storage-readings", &tech)
        .await;
    let (held, _) = b.supplier_unit("O", "negative", "negative", 1).await;
    let path = format!("/api/v1/units/{held}/storage-readings");
    b.app
        .post(&path, Some(&tech), &json!({"temperature_c": 30}))
        .await
        .ok(201);
    ex.as_is(
        "POST /api/v1/units/{id}/excursion-disposition",
        &format!("/api/v1/units/{held}/excursion-disposition"),
        &director,
    )
    .await;
    ex.as_is(
        "POST /api/v1/units/{id}/discard",
        &format!("/api/v1/units/{kept}/discard"),
        &tech,
    )
    .await;
    ex.as_is("POST /api/v1/isbt128/decode", "/api/v1/isbt128/decode", &tech)
        .await;

    // The clinical gate: approve, decline, cancel.
    let mut outside = request_body(ours, 1);
    outside["indication"]["anc_per_ul"] = json!(800);
    for op in ["approve", "decline", "cancel"] {
        let pending = b.request(&outside).await;
        let token = if op == "cancel" { &hosp } else { &director };
        ex.as_is(
            &format!("POST /api/v1/requests/{{id}}/{op}"),
            &format!("/api/v1/requests/{pending}/{op}"),
            token,
        )
        .await;
    }

    // An authorised allocation signed off, and the anti-D task its transfusion leaves.
    let mut woman = patient_body("EX-W", "O", "negative", "female");
    woman["childbearing_potential"] = json!(true);
    let woman = typed_patient(&b.app, &hosp, &tech, &woman).await;
    let request = b.request(&request_body(woman, 1)).await;
    let (positive, positive_din) = b.ready("O", "positive", "negative", 1).await;
    let woman_sample = b.sample(woman).await;
    b.crossmatch(positive, woman_sample, "compatible").await;
    let authorisation = json!({"by": "Dr Okafor", "role": "on-call haematologist", "at": ts(now_minute()),
                               "reason": "no RhD-negative unit in time"});
    let allocation = id(b
        .allocate(
            &tech,
            request,
            json!({"unit_id": positive, "authorisation": authorisation}),
        )
        .await
        .ok(201));
    ex.as_is(
        "POST /api/v1/allocations/{id}/sign-off",
        &format!("/api/v1/allocations/{allocation}/sign-off"),
        &director,
    )
    .await;
    let issued = b.issue(&tech, allocation, json!({"scanned_din": positive_din})).await;
    let at = issued.ok(200)["issued_at"].clone();
    let path = format!("/api/v1/allocations/{allocation}/transfusion");
    b.app
        .post(&path, Some(&hosp), &json!({"started_at": at, "ended_at": at}))
        .await
        .ok(200);
    let task = b.tasks("status=open").await.first().map(id).expect("the anti-D task");
    ex.as_is(
        "POST /api/v1/tasks/{id}/complete",
        &format!("/api/v1/tasks/{task}/complete"),
        &tech,
    )
    .await;

    // A course plan proposed and booked: a device, an O-negative donor, a one-day course two
    // days ahead.
    b.app.create_device(&tech, "Example Optia").await;
    b.app.register_donor(&tech, &donor_body("Plan", "O", "negative")).await;
    let typed = b.typed_patient(&patient_body("EX-P", "O", "positive", "male")).await;
    let mut course = request_body(typed, 1);
    let day = (Utc::now() + TimeDelta::days(2)).date_naive();
    course["needed_by"] = json!(ts(day.and_hms_opt(14, 0, 0).expect("time").and_utc()));
    let planned = b.request(&course).await;
    let plan = b
        .app
        .post(&format!("/api/v1/requests/{planned}/plan"), Some(&tech), &json!({}))
        .await
        .ok(201)
        .clone();
    ex.send(
        "POST /api/v1/requests/{id}/plan/accept",
        &format!("/api/v1/requests/{planned}/plan/accept"),
        &tech,
        json!({"plan_id": plan["id"]}),
    )
    .await;

    let documented: BTreeSet<String> = ex.examples.keys().cloned().collect();
    assert_eq!(ex.posted, documented, "every documented example is posted");
}
