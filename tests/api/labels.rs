//! Printed labels (issue 19): PDF and ZPL, their versions and prints, and the PDF's bars read
//! back by an independent decoder.

use std::path::Path;
use std::process::Command;

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    labels_print_as_pdf_and_zpl_and_refuse_clearly,
    prints_are_recorded_versioned_and_audited,
);

fn supplied(din: &str, abo: &str, rhd: &str) -> Value {
    json!({"source": {"type": "external", "supplier": "NHSBT Filton", "din": din, "abo": abo, "rhd": rhd,
                      "cmv": "negative", "collected_at": ts(now_minute() - TimeDelta::hours(1))},
           "product_code": PRODUCT, "volume_ml": 220, "granulocyte_count": 2.5e10})
}

async fn create(app: &TestApp, token: &str, body: &Value) -> i64 {
    app.post("/api/v1/units", Some(token), body).await.ok(201)["id"]
        .as_i64()
        .expect("id")
}

/// The four data strings of the JSON label, in layout order.
async fn data_strings(app: &TestApp, token: &str, unit: i64) -> Vec<String> {
    let label = app.get(&format!("/api/v1/units/{unit}/label"), Some(token)).await;
    let codes = &label.ok(200)["isbt128"];
    ["din", "blood_group", "product", "expiry"]
        .map(|k| codes[k].as_str().expect("data string").to_owned())
        .to_vec()
}

/// The raw bytes of a GET (a PDF is not text).
async fn bytes(app: &TestApp, token: &str, path: &str) -> (u16, String, Vec<u8>) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ctype, res.bytes().await.expect("body").to_vec())
}

async fn release(app: &TestApp, token: &str, unit: i64) {
    let policy = app.get("/api/v1/policy", Some(token)).await.ok(200).clone();
    for marker in policy["unit"]["required_markers"].as_array().expect("markers") {
        app.post(
            &format!("/api/v1/units/{unit}/tests"),
            Some(token),
            &json!({"marker": marker, "result": "negative"}),
        )
        .await
        .ok(200);
    }
    app.post(
        &format!("/api/v1/units/{unit}/release"),
        Some(token),
        &json!({"emergency": false}),
    )
    .await
    .ok(200);
}

/// The JSON label (a preview).
async fn preview(app: &TestApp, token: &str, unit: i64) -> Value {
    app.get(&format!("/api/v1/units/{unit}/label"), Some(token))
        .await
        .ok(200)
        .clone()
}

async fn labels_print_as_pdf_and_zpl_and_refuse_clearly(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let id = create(&app, &tech, &supplied("A999921000101", "A", "positive")).await;
    let codes = data_strings(&app, &tech, id).await;

    let (status, ctype, pdf) = bytes(&app, &tech, &format!("/api/v1/units/{id}/label.pdf")).await;
    assert_eq!((status, ctype.as_str()), (200, "application/pdf"));
    assert!(pdf.starts_with(b"%PDF-"));
    let zpl = app.get(&format!("/api/v1/units/{id}/label.zpl"), Some(&tech)).await;
    assert_eq!(zpl.status, 200, "{}", zpl.text);
    assert!(zpl.content_type().starts_with("text/plain"), "{}", zpl.content_type());
    assert!(zpl.text.starts_with("^XA\n") && zpl.text.ends_with("^XZ\n"));
    assert!(zpl.text.contains("^PW800\n"), "203 dpi by default");
    // The ZPL's bar codes carry the JSON label's data strings, subsets and escapes decoded.
    let fields: Vec<String> = zpl
        .text
        .lines()
        .filter(|l| l.contains("^BC"))
        .filter_map(|l| l.split("^FD").nth(1)?.strip_suffix("^FS"))
        .filter_map(granulo::labels::zpl::decode_bc_field_data)
        .collect();
    assert_eq!(fields, codes);
    let hi = app
        .get(&format!("/api/v1/units/{id}/label.zpl?dpi=300"), Some(&tech))
        .await;
    assert!(hi.text.contains("^PW1181\n"), "{}", hi.text);
    for dpi in ["600", "0", "96"] {
        app.get(&format!("/api/v1/units/{id}/label.zpl?dpi={dpi}"), Some(&tech))
            .await
            .problem(400, "unsupported_dpi");
    }
    app.get(&format!("/api/v1/units/{id}/label.zpl?dpi=high"), Some(&tech))
        .await
        .problem(400, "invalid_query");
    for path in ["label.pdf", "label.zpl", "label/prints"] {
        app.get(&format!("/api/v1/units/999999/{path}"), Some(&tech))
            .await
            .problem(404, "not_found");
    }
    let (_, hosp) = hospital(&mut app).await;
    app.get(&format!("/api/v1/units/{id}/label.pdf"), Some(&hosp))
        .await
        .problem(403, "forbidden");
    // A discarded unit gets no new label; nothing is recorded for the refusal.
    app.post(
        &format!("/api/v1/units/{id}/discard"),
        Some(&tech),
        &json!({"reason": "bag damaged"}),
    )
    .await
    .ok(200);
    app.get(&format!("/api/v1/units/{id}/label.pdf"), Some(&tech))
        .await
        .problem(409, "label_not_printable");
    let prints = app.get(&format!("/api/v1/units/{id}/label/prints"), Some(&tech)).await;
    assert_eq!(prints.ok(200)["items"].as_array().map(Vec::len), Some(3));
}

async fn prints_are_recorded_versioned_and_audited(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    let id = create(&app, &tech, &supplied("A999921000102", "O", "negative")).await;
    let print = |path: &'static str| {
        let (app, tech) = (&app, tech.clone());
        async move {
            let r = app.get(&format!("/api/v1/units/{id}/{path}"), Some(&tech)).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let h = |name: &str| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            (h("label-version"), h("label-reprint"))
        }
    };
    let first = preview(&app, &tech, id).await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["quarantined"], true);
    assert_eq!(first["cmv"], "negative");
    // The preview records nothing.
    let none = app.get(&format!("/api/v1/units/{id}/label/prints"), Some(&tech)).await;
    assert_eq!(none.ok(200)["items"], json!([]));
    assert_eq!(none.body["current_version"], 1);

    assert_eq!(print("label.pdf").await, ("1".into(), "false".into()));
    assert_eq!(print("label.zpl").await, ("1".into(), "true".into()));
    assert_eq!(
        preview(&app, &tech, id).await["version"],
        1,
        "unchanged content keeps its version"
    );
    app.post(
        &format!("/api/v1/units/{id}/irradiation"),
        Some(&tech),
        &json!({"dose_gy": 25, "device": "Gammacell 3000"}),
    )
    .await
    .ok(200);
    assert_eq!(
        preview(&app, &tech, id).await["version"],
        2,
        "irradiation changes the label"
    );
    assert_eq!(print("label.zpl?dpi=300").await, ("2".into(), "false".into()));
    release(&app, &tech, id).await;
    let released = preview(&app, &tech, id).await;
    assert_eq!(released["version"], 3, "release changes the label");
    assert_eq!(released["quarantined"], false);
    assert_eq!(print("label.pdf").await, ("3".into(), "false".into()));
    assert_eq!(print("label.pdf").await, ("3".into(), "true".into()));

    let prints = app.get(&format!("/api/v1/units/{id}/label/prints"), Some(&tech)).await;
    let items = prints.ok(200)["items"].as_array().expect("items").clone();
    let summary: Vec<(i64, &str, Option<i64>, bool)> = items
        .iter()
        .map(|p| {
            (
                p["version"].as_i64().expect("version"),
                p["format"].as_str().expect("format"),
                p["dpi"].as_i64(),
                p["reprint"].as_bool().expect("reprint"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "pdf", None, false),
            (1, "zpl", Some(203), true),
            (2, "zpl", Some(300), false),
            (3, "pdf", None, false),
            (3, "pdf", None, true),
        ]
    );
    assert_eq!(prints.body["current_version"], 3);
    assert!(
        items
            .iter()
            .all(|p| p["printed_by"].as_str().is_some_and(|b| !b.is_empty()))
    );
    assert_eq!(items[3]["content_sha256"], items[4]["content_sha256"]);
    assert_ne!(items[2]["content_sha256"], items[3]["content_sha256"]);

    let admin = app.admin_token().await;
    let trail = app
        .get(&format!("/api/v1/audit?entity_type=unit&entity_id={id}"), Some(&admin))
        .await;
    let actions: Vec<String> = trail.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("unit.label_"))
        .map(str::to_owned)
        .collect();
    // Newest first.
    assert_eq!(
        actions,
        [
            "unit.label_reprinted",
            "unit.label_printed",
            "unit.label_printed",
            "unit.label_reprinted",
            "unit.label_printed",
        ]
    );
}

fn tool(name: &str) -> bool {
    Command::new(name).arg("-h").output().is_ok()
}

/// Rasterises `pdf` at `dpi` and returns what zbar reads from it, sorted.
fn decode(pdf: &Path, dpi: u32) -> Vec<String> {
    let prefix = pdf.with_extension("");
    let out = Command::new("pdftoppm")
        .args(["-r", &dpi.to_string(), "-gray", "-png", "-singlefile"])
        .arg(pdf)
        .arg(&prefix)
        .output()
        .expect("pdftoppm runs");
    assert!(
        out.status.success(),
        "pdftoppm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("zbarimg")
        .args(["--nodbus", "--raw", "-q", "-Sdisable", "-Scode128.enable"])
        .arg(prefix.with_extension("png"))
        .output()
        .expect("zbarimg runs");
    assert!(
        out.status.success(),
        "zbarimg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    found.sort();
    found
}

/// Every printed bar code, read back by an independent decoder (poppler's `pdftoppm`, then
/// `zbarimg`), equals the JSON label's data string: all eight ABO/RhD groups, irradiated and
/// not, emergency release, pooled. Rasterising and decoding take seconds, so this runs once,
/// on SQLite (the label does not depend on the backend). Without the tools it is skipped
/// unless CI=true (`scripts/setup-debian` installs them).
#[actix_rt::test]
async fn printed_bar_codes_decode_to_the_json_data_strings() {
    if !(tool("pdftoppm") && tool("zbarimg")) {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs pdftoppm and zbarimg: scripts/setup-debian installs them"
        );
        eprintln!("skipped: pdftoppm or zbarimg missing (scripts/setup-debian installs them)");
        return;
    }
    let mut app = spawn_with(Backend::Sqlite, |s| {
        s.timezone = chrono_tz::America::New_York;
    })
    .await;
    let tech = app.token_for("technologist").await;
    let mut units = Vec::new();
    for (i, (abo, rhd)) in ["O", "A", "B", "AB"]
        .into_iter()
        .flat_map(|abo| [(abo, "positive"), (abo, "negative")])
        .enumerate()
    {
        units.push(create(&app, &tech, &supplied(&format!("A99992100020{i}"), abo, rhd)).await);
    }
    // Irradiated and released.
    app.post(
        &format!("/api/v1/units/{}/irradiation", units[0]),
        Some(&tech),
        &json!({"dose_gy": 25}),
    )
    .await
    .ok(200);
    release(&app, &tech, units[0]).await;
    // Pooled, with a pooled RhD.
    let mut pooled = supplied("W000009123456", "A", "pooled");
    pooled["pooled_from"] = json!(["A999921123456", "G1016108403863", "Z549917123456P"]);
    units.push(create(&app, &tech, &pooled).await);
    // Emergency release for one request, markers pending.
    let (_, hosp) = hospital(&mut app).await;
    let director = app.token_for("medical_director").await;
    let patient = typed_patient(&app, &hosp, &tech, &patient_body("LBL-1", "B", "negative", "female")).await;
    let request = app
        .post("/api/v1/requests", Some(&hosp), &request_body(patient, 1))
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("request");
    let urgent = units[5];
    app.post(
        &format!("/api/v1/units/{urgent}/release"),
        Some(&director),
        &json!({"emergency": true, "request_id": request,
                "physician": {"name": "Dr Fleming", "acknowledged_at": ts(now_minute())}}),
    )
    .await
    .ok(200);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut sizes = Vec::new();
    for (n, unit) in units.iter().enumerate() {
        let label = app.get(&format!("/api/v1/units/{unit}/label"), Some(&tech)).await;
        let l = label.ok(200).clone();
        let mut want = data_strings(&app, &tech, *unit).await;
        want.sort();
        let (status, _, pdf) = bytes(&app, &tech, &format!("/api/v1/units/{unit}/label.pdf")).await;
        assert_eq!(status, 200);
        sizes.push(pdf.len());
        let path = dir.path().join(format!("label-{n}.pdf"));
        std::fs::write(&path, &pdf).expect("write pdf");
        // 300 dpi: about 3 px a module, what an office printer or a label printer gives.
        assert_eq!(decode(&path, 300), want, "unit {unit}: {}", l["blood_group"]);
        if n == 0 {
            assert_eq!(decode(&path, 600), want);
        }
    }
    let groups: std::collections::BTreeSet<String> = {
        let mut g = std::collections::BTreeSet::new();
        for unit in &units {
            let l = app.get(&format!("/api/v1/units/{unit}/label"), Some(&tech)).await;
            g.insert(l.ok(200)["isbt128"]["blood_group"].as_str().expect("bg").to_owned());
        }
        g
    };
    // Eight ABO/RhD codes and the pool's.
    assert_eq!(groups.len(), 9, "{groups:?}");
    eprintln!("label PDF sizes (bytes): {sizes:?}");
}
