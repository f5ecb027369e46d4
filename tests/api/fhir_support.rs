//! FHIR calls for the tests, and the independent validator: every resource the server returns
//! through these helpers (Bundles and OperationOutcomes included) is checked by PyPI
//! `fhir.resources` (R5) before the test looks at it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;

use crate::helpers::{Http, Reply};

pub const FHIR_JSON: &str = "application/fhir+json";

struct Validator {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

static VALIDATOR: Mutex<Option<Validator>> = Mutex::new(None);

fn start_validator() -> Validator {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.tools/fhir-venv/bin/python");
    if !std::path::Path::new(&python).exists() {
        let status = Command::new(format!("{root}/scripts/fhir/setup"))
            .status()
            .expect("scripts/fhir/setup runs");
        assert!(status.success(), "scripts/fhir/setup failed");
    }
    let mut child = Command::new(python)
        .arg(format!("{root}/scripts/fhir/validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the FHIR validator starts");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    Validator {
        _child: child,
        stdin,
        stdout,
    }
}

/// Panics unless `fhir.resources` accepts `resource` as the R5 resource it says it is.
pub fn assert_valid(resource: &Value) {
    let mut guard = VALIDATOR.lock().unwrap_or_else(|e| e.into_inner());
    let v = guard.get_or_insert_with(start_validator);
    let line = serde_json::to_string(resource).expect("json");
    writeln!(v.stdin, "{line}").expect("validator input");
    v.stdin.flush().expect("validator flush");
    let mut verdict = String::new();
    v.stdout.read_line(&mut verdict).expect("validator answer");
    assert_eq!(
        verdict.trim(),
        "ok",
        "fhir.resources refused the {} the server sent:\n{}",
        resource["resourceType"],
        serde_json::to_string_pretty(resource).unwrap_or_default()
    );
}

fn checked(reply: Reply) -> Reply {
    if reply.body.get("resourceType").is_some() {
        assert_valid(&reply.body);
    } else if !reply.text.is_empty() {
        panic!(
            "a FHIR answer that is not a resource ({}): {}",
            reply.status, reply.text
        );
    }
    reply
}

pub async fn get(app: &Http, path: &str, token: Option<&str>) -> Reply {
    let mut req = app.client.get(app.url(path)).header("Accept", FHIR_JSON);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    checked(app.send(req).await)
}

/// POST a resource; `headers` such as `If-None-Exist`.
pub async fn post(app: &Http, path: &str, token: Option<&str>, body: &Value, headers: &[(&str, &str)]) -> Reply {
    send(app, reqwest::Method::POST, path, token, body, headers).await
}

/// PUT a resource; `headers` such as `If-Match`.
pub async fn put(app: &Http, path: &str, token: Option<&str>, body: &Value, headers: &[(&str, &str)]) -> Reply {
    send(app, reqwest::Method::PUT, path, token, body, headers).await
}

async fn send(
    app: &Http,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("Accept", FHIR_JSON)
        .header("Content-Type", FHIR_JSON)
        .body(serde_json::to_vec(body).expect("json"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    checked(app.send(req).await)
}

impl Reply {
    /// Assert a FHIR resource of `resource_type` with this status; returns it.
    pub fn resource(&self, status: u16, resource_type: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.text);
        assert!(
            self.content_type().starts_with(FHIR_JSON),
            "content type {}; body: {}",
            self.content_type(),
            self.text
        );
        assert_eq!(self.body["resourceType"], resource_type, "body: {}", self.text);
        &self.body
    }

    /// Assert an OperationOutcome with this status whose first issue carries `code`.
    pub fn outcome(&self, status: u16, code: &str) -> &Value {
        let body = self.resource(status, "OperationOutcome");
        let coding = &body["issue"][0]["details"]["coding"][0];
        assert_eq!(coding["code"], code, "code; body: {}", self.text);
        assert!(
            coding["system"]
                .as_str()
                .is_some_and(|s| s.ends_with("/CodeSystem/error-code")),
            "{}",
            self.text
        );
        body
    }

    /// The `ETag` header.
    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .expect("ETag")
            .to_owned()
    }
}

/// The resources of a searchset Bundle.
pub fn entries(bundle: &Value) -> Vec<Value> {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| x["resource"].clone()).collect())
        .unwrap_or_default()
}

/// The ids of a searchset Bundle's resources.
pub fn entry_ids(bundle: &Value) -> Vec<String> {
    entries(bundle)
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}
