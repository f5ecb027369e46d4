//! `/metrics`: who may scrape it, and what it says after some traffic, read back through an
//! independent parser (PyPI `prometheus-client`, scripts/metrics/parse.py).

use std::io::Write as _;
use std::process::{Command, Stdio};

use chrono::Utc;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    scrapes_need_the_metrics_token_or_an_admin,
    metrics_report_traffic_inventory_and_the_scan,
);

const METRICS_TOKEN: &str = "metrics-token-for-the-tests-0123456789abcdef";

fn with_metrics(s: &mut granulo::config::Settings) {
    s.metrics_token = Some(secrecy::SecretString::from(METRICS_TOKEN));
    s.metrics_bind = Some("127.0.0.1:0".to_owned());
}

/// One sample as prometheus-client read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// Parses an exposition with prometheus-client; panics when it refuses the text.
fn parse(text: &str) -> Vec<Sample> {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.tools/metrics-venv/bin/python");
    // Once per test process, whatever is on disk: a venv seen half-installed by a concurrent
    // test gave a parser that could not import its module.
    static SETUP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *SETUP.get_or_init(|| {
        Command::new(format!("{root}/scripts/metrics/setup"))
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(installed, "scripts/metrics/setup failed");
    let mut child = Command::new(python)
        .arg(format!("{root}/scripts/metrics/parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the parser starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("parser input");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "prometheus-client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("json line");
            Sample {
                name: v["name"].as_str().expect("name").to_owned(),
                labels: v["labels"].as_object().expect("labels").clone(),
                value: match &v["value"] {
                    Value::String(s) if s == "+Inf" => f64::INFINITY,
                    other => other.as_f64().expect("value"),
                },
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`; panics unless exactly one.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

async fn scrape(app: &Http, token: Option<&str>) -> Reply {
    app.get("/metrics", token).await
}

async fn scrapes_need_the_metrics_token_or_an_admin(backend: Backend) {
    let mut app = spawn_with(backend, with_metrics).await;
    scrape(&app, None).await.problem(401, "missing_token");
    scrape(&app, Some("not-the-metrics-token"))
        .await
        .problem(401, "invalid_token");
    let tech = app.token_for("technologist").await;
    scrape(&app, Some(&tech)).await.problem(403, "forbidden");
    let director = app.token_for("medical_director").await;
    scrape(&app, Some(&director)).await.problem(403, "forbidden");
    let admin = app.admin_token().await;
    for token in [admin.as_str(), METRICS_TOKEN] {
        let r = scrape(&app, Some(token)).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        assert!(
            r.content_type().starts_with("text/plain; version=0.0.4"),
            "{}",
            r.content_type()
        );
        assert!(!parse(&r.text).is_empty());
    }
    // Without a configured metrics token, no bearer string other than a real token opens it.
    let plain = spawn(backend).await;
    scrape(&plain, Some(METRICS_TOKEN)).await.problem(401, "invalid_token");
    scrape(&plain, Some("")).await.problem(401, "invalid_token");
}

async fn metrics_report_traffic_inventory_and_the_scan(backend: Backend) {
    let mut app = spawn_with(backend, with_metrics).await;
    let tech = app.token_for("technologist").await;
    let (_, din) = ready_unit(&app, &tech, "O", "negative").await;
    ready_unit(&app, &tech, "O", "negative").await;
    ready_unit(&app, &tech, "A", "positive").await;
    // A unit still in quarantine is not available.
    let quarantined = next_din();
    app.post(
        "/api/v1/units",
        Some(&tech),
        &supplier_unit_body(&quarantined, "B", "negative"),
    )
    .await
    .ok(201);
    app.get(&format!("/api/v1/units/{din}"), Some(&tech)).await.ok(200);

    let before = parse(&scrape(&app, Some(METRICS_TOKEN)).await.text);
    let available = "granulo_units_available";
    assert_eq!(value(&before, available, &[("abo", "O"), ("rhd", "negative")]), 2.0);
    assert_eq!(value(&before, available, &[("abo", "A"), ("rhd", "positive")]), 1.0);
    assert_eq!(value(&before, available, &[("abo", "B"), ("rhd", "negative")]), 0.0);
    assert_eq!(value(&before, available, &[("abo", "AB"), ("rhd", "pooled")]), 0.0);
    // The default policy's thresholds, each a series; supplier units keep for a day.
    for hours in ["8", "4", "2"] {
        assert_eq!(
            value(&before, "granulo_units_expiring", &[("within_hours", hours)]),
            0.0
        );
    }
    assert_eq!(value(&before, "granulo_requests_open_unallocated", &[]), 0.0);
    assert_eq!(
        value(&before, "granulo_tasks_open", &[("kind", "anti_d_prophylaxis")]),
        0.0
    );
    assert_eq!(
        value(&before, "granulo_webhook_deliveries", &[("status", "pending")]),
        0.0
    );
    assert_eq!(
        value(&before, "granulo_alert_scan_last_success_timestamp_seconds", &[]),
        0.0
    );

    // The lookup by DIN is counted under its route pattern, never under its path.
    let lookups = value(
        &before,
        "granulo_http_request_duration_seconds_count",
        &[
            ("route", "/api/v1/units/{id_or_din}"),
            ("method", "GET"),
            ("status", "2xx"),
        ],
    );
    assert!(lookups >= 1.0, "{lookups}");
    assert!(
        before.iter().all(|s| s
            .labels
            .values()
            .all(|v| !v.as_str().unwrap_or_default().contains(&din))),
        "a raw path became a label"
    );
    app.get("/no/such/route/A99992600001", None)
        .await
        .problem(404, "not_found");
    let after_404 = parse(&scrape(&app, Some(METRICS_TOKEN)).await.text);
    assert!(
        value(
            &after_404,
            "granulo_http_request_duration_seconds_count",
            &[("route", "unmatched"), ("method", "GET"), ("status", "4xx")]
        ) >= 1.0
    );
    assert!(
        after_404
            .iter()
            .all(|s| s.labels.get("route").and_then(Value::as_str) != Some("/no/such/route/A99992600001"))
    );
    assert!(value(&after_404, "granulo_db_pool_checkout_wait_seconds_count", &[]) >= 1.0);
    assert!(value(&after_404, "granulo_db_pool_connections", &[("state", "idle")]) >= 0.0);
    assert_eq!(value(&after_404, "granulo_db_pool_max_connections", &[]), 4.0);

    // A scan sets the time of the last success; the separate listener needs no token.
    let started = Utc::now().timestamp() as f64 - 1.0;
    {
        let mut conn = app.state.pool.get().expect("conn");
        granulo::jobs::run_once(&mut conn, "test", Utc::now())
            .expect("scan runs")
            .expect("lease free");
    }
    let port = app.metrics_port.expect("the metrics listener");
    let open = Http::new(format!("http://127.0.0.1:{port}"));
    let r = open.get("/metrics", None).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    let after = parse(&r.text);
    let last = value(&after, "granulo_alert_scan_last_success_timestamp_seconds", &[]);
    assert!(last >= started && last <= Utc::now().timestamp() as f64 + 1.0, "{last}");
    assert_eq!(value(&after, "granulo_alert_scan_last_run_failed", &[]), 0.0);
    assert!(value(&after, "granulo_alert_scan_last_success_duration_seconds", &[]) >= 0.0);
    // The separate listener serves nothing else.
    open.get("/api/v1/units", Some(&tech)).await.problem(404, "not_found");
    open.get("/healthz", None).await.problem(404, "not_found");
}
