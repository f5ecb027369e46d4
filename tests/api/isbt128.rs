//! Decoding scanned ISBT 128 data over HTTP.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends!(scanned_data_is_decoded_or_refused);

async fn scanned_data_is_decoded_or_refused(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let decode = |data: &str| {
        let body = json!({"data": data});
        let (app, tech) = (&app, &tech);
        async move { app.post("/api/v1/isbt128/decode", Some(tech), &body).await }
    };
    let r = decode("=G12341765432170=%9500=<E1234V00&>0263301200").await;
    let elements = r.ok(200)["elements"].as_array().expect("elements").clone();
    assert_eq!(elements.len(), 4);
    assert_eq!(elements[0]["structure"], "din");
    assert_eq!(elements[0]["din"], "G123417654321");
    assert_eq!(elements[0]["check_character"], "A");
    assert_eq!(elements[0]["flags"], json!({"type": "type3", "value": 70}));
    assert_eq!(elements[1]["abo"], "O");
    assert_eq!(elements[1]["rhd"], "negative");
    assert_eq!(elements[2]["description_code"], "E1234");
    assert_eq!(elements[3]["structure"], "expiration_date_time");
    assert_eq!(elements[3]["at"], "2026-11-26T12:00:00Z");
    assert_eq!(elements[3]["local"], "2026-11-26T12:00:00");

    let bad = decode("=G12341765432171").await;
    let body = bad.problem(422, "invalid_check_character");
    assert_eq!(body["reasons"][0]["code"], "invalid_check_character");
    decode("=%6201").await.problem(422, "invalid_isbt128");
    decode("&>0253660000").await.problem(422, "invalid_isbt128");
    decode("=+05000").await.problem(422, "unsupported_data_structure");
    decode(&"=".repeat(600)).await.problem(400, "validation_failed");
    app.post("/api/v1/isbt128/decode", Some(&tech), &json!({"data": 5}))
        .await
        .problem(400, "validation_failed");
    let hospital = app.token_for("hospital").await;
    app.post("/api/v1/isbt128/decode", Some(&hospital), &json!({"data": "=%9500"}))
        .await
        .problem(403, "forbidden");
}
