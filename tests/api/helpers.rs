//! Test harness: the real application on port 0 with its own database per test, on SQLite
//! always and on PostgreSQL when `GRANULO_TEST_POSTGRES_URL` is set.

use diesel::Connection as _;
use diesel::RunQueryDsl as _;
use granulo::config::{DatabaseTarget, Settings};
use granulo::startup::{Application, Bootstrap};
use granulo::state::AppState;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "bootstrap-password-for-tests";
pub const JWT_SECRET: &str = "test-signing-key-that-is-long-enough-0123456789";
pub const SECRETS_KEY: &str = "test-sealing-key-that-is-long-enough-0123456789";
pub const PASSWORD: &str = "a perfectly fine password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generate one `#[actix_rt::test]` per backend for each named `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_rt::test]
                #[cfg_attr(not(granulo_pg_tests), ignore = "set GRANULO_TEST_POSTGRES_URL to run on PostgreSQL")]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A database that exists for one test and is removed afterwards.
pub struct TestDb {
    pub url: String,
    /// The second factors the harness enrolled on this database (shared by every app on it).
    pub mfa: MfaBook,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("granulo.db").display());
                Self {
                    url,
                    mfa: MfaBook::default(),
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let base = std::env::var("GRANULO_TEST_POSTGRES_URL")
                    .expect("built with GRANULO_TEST_POSTGRES_URL set, so it must be set when running too");
                let name = format!("granulo_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = diesel::PgConnection::establish(&base).expect("connect to GRANULO_TEST_POSTGRES_URL");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .expect("create test database");
                let url = replace_db_name(&base, &name);
                Self {
                    url,
                    mfa: MfaBook::default(),
                    _dir: None,
                    pg: Some((base, name)),
                }
            }
        }
    }

    pub fn target(&self) -> DatabaseTarget {
        DatabaseTarget::parse(&self.url).expect("test url parses")
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = before_query.find("://").map_or(0, |i| i + 3);
    let base = match before_query[scheme_end..].find('/') {
        Some(slash) => &before_query[..scheme_end + slash],
        None => before_query,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, name)) = &self.pg
            && let Ok(mut conn) = diesel::PgConnection::establish(base)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn);
        }
    }
}

/// HTTP to a running granulo: the in-process app of `spawn`, or a server process.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
    admin_token: Option<String>,
    pub mfa: MfaBook,
}

/// Each enrolled user's TOTP seed and the last step the harness answered with: the harness
/// signs in through the second step itself, as an authenticator app would.
#[derive(Clone, Default)]
pub struct MfaBook(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Enrolled>>>);

/// A user's seed and the last step the harness answered with.
type Enrolled = (Vec<u8>, Option<u64>);

impl MfaBook {
    pub fn remember(&self, username: &str, secret_base32: &str) {
        let seed = totp_rs::Secret::Encoded(secret_base32.to_owned())
            .to_bytes()
            .expect("base32 secret");
        self.0
            .lock()
            .expect("mfa book")
            .insert(book_key(username), (seed, None));
    }

    pub fn seed(&self, username: &str) -> Option<Vec<u8>> {
        self.0
            .lock()
            .expect("mfa book")
            .get(&book_key(username))
            .map(|(s, _)| s.clone())
    }

    /// A code the server has not accepted yet: a code works once per 30-second step, and the
    /// server accepts the step before and after the current one, so up to three sign-ins per
    /// step go through without waiting; a fourth waits for the next step.
    pub async fn next_code(&self, username: &str) -> String {
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let step = totp::step_at(now);
            let into = now % totp::STEP_SECS;
            {
                let mut book = self.0.lock().expect("mfa book");
                let (seed, last) = book
                    .get_mut(&book_key(username))
                    .expect("the harness enrolled this user");
                // The previous step only when far from the boundary, so the server still
                // accepts it when the request arrives.
                let earliest = if into < 20 { step - 1 } else { step };
                let pick = last.map_or(earliest, |l| (l + 1).max(earliest));
                if pick <= step + 1 {
                    *last = Some(pick);
                    return totp::code_at_step(seed, totp::DIGITS, pick).expect("code");
                }
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

pub use granulo::credentials::totp;

/// Usernames are case-insensitive and trimmed at sign-in.
fn book_key(username: &str) -> String {
    username.trim().to_lowercase()
}

impl Http {
    pub fn new(base: String) -> Self {
        Self {
            base,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // Below actix's 5 s keep-alive: a connection idle while the harness waits for
                // the next TOTP step would otherwise be reused just as the server closes it.
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("client"),
            admin_token: None,
            mfa: MfaBook::default(),
        }
    }
}

pub struct TestApp {
    pub backend: Backend,
    pub http: Http,
    pub state: AppState,
    pub bootstrap: Bootstrap,
    pub db: std::sync::Arc<TestDb>,
    /// The `metrics_bind` listener's port, when the test configured one.
    pub metrics_port: Option<u16>,
}

impl std::ops::Deref for TestApp {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl std::ops::DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut Http {
        &mut self.http
    }
}

pub fn test_settings(db: &TestDb) -> Settings {
    let mut s = Settings::with_database(db.target());
    s.bind = "127.0.0.1:0".to_owned();
    s.workers = 1;
    // Tests run scans themselves, with a controlled clock.
    s.alert_interval_secs = 0;
    s.pool_size = 4;
    s.jwt_secret = Some(SecretString::from(JWT_SECRET));
    s.secrets_key = Some(SecretString::from(SECRETS_KEY));
    s.admin_username = Some(ADMIN_USER.to_owned());
    s.admin_password = Some(SecretString::from(ADMIN_PASSWORD));
    // Five times the defaults: a test fires its requests at once from one account and address,
    // and a restart test's old instance still counts. Tests of the limits set their own.
    s.rate_limit_per_account = 6000;
    s.rate_limit_per_address = 15000;
    s
}

/// Test webhook receivers listen on 127.0.0.1 over http: allow it, as a site that delivers
/// inside its own network would (`GRANULO_WEBHOOK_ALLOW=127.0.0.1`).
pub fn allow_local_webhooks(s: &mut Settings) {
    s.webhook_allow = granulo::domain::destinations::AllowList::parse("127.0.0.1").expect("allow-list");
}

/// What the scheduler does with due webhook deliveries, with the app's keyring and settings.
pub async fn deliver_webhooks(
    app: &TestApp,
    now: chrono::DateTime<chrono::Utc>,
) -> granulo::error::ApiResult<granulo::services::webhooks::DeliveryReport> {
    let outbound = granulo::services::webhooks::Outbound::new(&app.state.settings).expect("client");
    granulo::services::webhooks::deliver_due(&app.state.pool, &outbound, &app.state.secrets, now).await
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = std::sync::Arc::new(TestDb::new(backend));
    spawn_on(backend, db, tweak).await
}

/// Start an app on an existing test database (to restart, or run two instances).
pub async fn spawn_on(backend: Backend, db: std::sync::Arc<TestDb>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    init_test_logging();
    let mut settings = test_settings(&db);
    tweak(&mut settings);
    let app = Application::build(settings).expect("application builds");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let state = app.state.clone();
    let bootstrap = app.bootstrap.clone();
    actix_rt::spawn(app.into_server());
    let mut http = Http::new(format!("http://127.0.0.1:{port}"));
    http.mfa = db.mfa.clone();
    TestApp {
        backend,
        http,
        state,
        bootstrap,
        db,
        metrics_port,
    }
}

fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        granulo::telemetry::init("info", granulo::config::LogFormat::Text);
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Assert a problem+json answer with this status and code; returns the body.
    pub fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.text);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "content type; body: {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "code; body: {}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].as_str().is_some_and(|t| t.ends_with(code)));
        assert!(self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
        &self.body
    }

    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.text);
        &self.body
    }
}

impl Http {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        self.try_send(req).await.expect("request sent, answer read")
    }

    /// Send and read the whole answer; a transport failure is returned, not a panic.
    pub async fn try_send(&self, req: reqwest::RequestBuilder) -> reqwest::Result<Reply> {
        let res = req.send().await?;
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
            text,
        })
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.client.patch(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// Sign in as a person would: the password, then (when asked) the second step, enrolling
    /// first when the role requires it. The reply is the one that carries the tokens, or the
    /// first refusal.
    pub async fn login(&self, username: &str, password: &str) -> Reply {
        let first = self.login_password(username, password).await;
        if first.status != StatusCode::OK || first.body["mfa_required"] != json!(true) {
            return first;
        }
        let challenge = first.body["challenge"].as_str().expect("challenge").to_owned();
        if first.body["enrolment_required"] == json!(true) {
            return self.enrol_with_challenge(username, &challenge).await;
        }
        let mut reply = self.answer_challenge(username, &challenge).await;
        // A slow request can cross a step boundary: one more try with the next code.
        if reply.status == StatusCode::UNAUTHORIZED && reply.body["code"] == "mfa_code_invalid" {
            reply = self.answer_challenge(username, &challenge).await;
        }
        reply
    }

    /// Only the first step, `POST /auth/login`.
    pub async fn login_password(&self, username: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/login",
            None,
            &json!({"username": username, "password": password}),
        )
        .await
    }

    /// `POST /auth/login/mfa` with the user's next code.
    pub async fn answer_challenge(&self, username: &str, challenge: &str) -> Reply {
        let code = self.mfa.next_code(username).await;
        self.post(
            "/api/v1/auth/login/mfa",
            None,
            &json!({"challenge": challenge, "code": code}),
        )
        .await
    }

    /// Enrol with a sign-in challenge and confirm; the reply's body is the session (tokens),
    /// with the recovery codes beside them under `recovery_codes`.
    pub async fn enrol_with_challenge(&self, username: &str, challenge: &str) -> Reply {
        let enrol = self
            .post("/api/v1/auth/mfa/enrol", None, &json!({"challenge": challenge}))
            .await;
        if enrol.status != StatusCode::OK {
            return enrol;
        }
        self.mfa
            .remember(username, enrol.body["secret"].as_str().expect("secret"));
        let code = self.mfa.next_code(username).await;
        let mut confirmed = self
            .post(
                "/api/v1/auth/mfa/confirm",
                None,
                &json!({"challenge": challenge, "code": code}),
            )
            .await;
        if confirmed.status == StatusCode::OK {
            let mut session = confirmed.body["session"].clone();
            session["recovery_codes"] = confirmed.body["recovery_codes"].clone();
            confirmed.text = session.to_string();
            confirmed.body = session;
        }
        confirmed
    }

    /// Log in and return the access token (panics on failure).
    pub async fn token(&self, username: &str, password: &str) -> String {
        let r = self.login(username, password).await;
        r.ok(200);
        r.body["access_token"].as_str().expect("access_token").to_owned()
    }

    pub async fn admin_token(&mut self) -> String {
        if self.admin_token.is_none() {
            self.admin_token = Some(self.token(ADMIN_USER, ADMIN_PASSWORD).await);
        }
        self.admin_token.clone().unwrap_or_default()
    }

    pub async fn create_hospital(&mut self, code: &str) -> i64 {
        let admin = self.admin_token().await;
        let r = self
            .post(
                "/api/v1/hospitals",
                Some(&admin),
                &json!({"name": format!("Hospital {code}"), "code": code}),
            )
            .await;
        r.ok(201)["id"].as_i64().expect("hospital id")
    }

    /// Create a user with `PASSWORD`; returns its id.
    pub async fn create_user(&mut self, username: &str, role: &str, hospital_id: Option<i64>) -> i64 {
        let admin = self.admin_token().await;
        let r = self
            .post(
                "/api/v1/users",
                Some(&admin),
                &json!({"username": username, "password": PASSWORD, "role": role, "hospital_id": hospital_id}),
            )
            .await;
        r.ok(201)["id"].as_i64().expect("user id")
    }

    /// A signed-in account of `role` (hospital accounts get a hospital of their own).
    pub async fn token_for(&mut self, role: &str) -> String {
        let username = format!(
            "{}-{}",
            role.replace('_', "-"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let hospital = if role == "hospital" {
            Some(
                self.create_hospital(&format!(
                    "H{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..6].to_uppercase()
                ))
                .await,
            )
        } else {
            None
        };
        self.create_user(&username, role, hospital).await;
        self.token(&username, PASSWORD).await
    }
}

/// RFC 3339 in UTC, whole seconds.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now, truncated to the minute (so derived times compare exactly).
pub fn now_minute() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    chrono::Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("truncate")
}

/// A valid donor registration body.
pub fn donor_body(given: &str, abo: &str, rhd: &str) -> Value {
    json!({
        "given_name": given,
        "family_name": "Donor",
        "date_of_birth": "1985-04-12",
        "sex": "female",
        "weight_kg": 68.5,
        "abo": abo,
        "rhd": rhd,
        "cmv": "negative",
        "hla": {"a": ["A*02:01", "A*01"], "b": ["B*07"]},
        "donor_type": "community",
        "phone": "+44 20 7946 0000",
        "email": "donor@example.org"
    })
}

impl Http {
    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.client.put(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// Register a donor; returns its id.
    pub async fn register_donor(&self, token: &str, body: &Value) -> i64 {
        let r = self.post("/api/v1/donors", Some(token), body).await;
        r.ok(201)["id"].as_i64().expect("donor id")
    }

    pub async fn create_device(&self, token: &str, name: &str) -> i64 {
        let r = self.post("/api/v1/devices", Some(token), &json!({"name": name})).await;
        r.ok(201)["id"].as_i64().expect("device id")
    }

    /// Book a collection; returns the reply.
    pub async fn book(&self, token: &str, donor: i64, device: i64, start: chrono::DateTime<chrono::Utc>) -> Reply {
        self.post(
            "/api/v1/collections",
            Some(token),
            &json!({"donor_id": donor, "device_id": device, "scheduled_start": ts(start)}),
        )
        .await
    }

    pub async fn eligibility(&self, token: &str, donor: i64, at: chrono::DateTime<chrono::Utc>) -> Value {
        let at = ts(at).replace('+', "%2B");
        self.get(&format!("/api/v1/donors/{donor}/eligibility?at={at}"), Some(token))
            .await
            .ok(200)
            .clone()
    }
}

/// The reason codes of a refusal or an eligibility answer.
pub fn reason_codes(body: &Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `granulo audit verify` against a database: (exit status success, stdout and stderr).
pub fn audit_verify(database_url: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_granulo"))
        .args(["audit", "verify"])
        .env("GRANULO_DATABASE_URL", database_url)
        .env("GRANULO_LOG", "warn")
        .output()
        .expect("run granulo audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// Units, patients and requests

pub const PRODUCT: &str = "E9999V00";

static DIN_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A supplier DIN not used before in this test process.
pub fn next_din() -> String {
    format!(
        "B1234{:02}{:06}",
        26,
        DIN_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A supplier unit collected an hour ago.
pub fn supplier_unit_body(din: &str, abo: &str, rhd: &str) -> Value {
    json!({"source": {"type": "external", "supplier": "Regional centre", "din": din, "abo": abo, "rhd": rhd,
                      "collected_at": ts(now_minute() - chrono::TimeDelta::hours(1)), "cmv": "negative"},
           "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10})
}

/// A released, irradiated supplier unit ready to allocate; returns (id, din).
pub async fn ready_unit(app: &Http, tech: &str, abo: &str, rhd: &str) -> (i64, String) {
    let din = next_din();
    let r = app
        .post("/api/v1/units", Some(tech), &supplier_unit_body(&din, abo, rhd))
        .await;
    let id = r.ok(201)["id"].as_i64().expect("unit id");
    app.post(
        &format!("/api/v1/units/{id}/irradiation"),
        Some(tech),
        &json!({"dose_gy": 25}),
    )
    .await
    .ok(200);
    release_tested(app, tech, id).await;
    (id, din)
}

/// Records every required marker negative and releases the unit (a technologist's release).
pub async fn release_tested(app: &Http, tech: &str, unit: i64) {
    for marker in required_markers(app, tech).await {
        app.post(
            &format!("/api/v1/units/{unit}/tests"),
            Some(tech),
            &json!({"marker": marker, "result": "negative"}),
        )
        .await
        .ok(200);
    }
    app.post(
        &format!("/api/v1/units/{unit}/release"),
        Some(tech),
        &json!({"emergency": false}),
    )
    .await
    .ok(200);
}

/// The test markers the policy requires before release.
pub async fn required_markers(app: &Http, token: &str) -> Vec<String> {
    let policy = app.get("/api/v1/policy", Some(token)).await.ok(200).clone();
    policy["unit"]["required_markers"]
        .as_array()
        .expect("markers")
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}

/// A completed collection that ended at `ended`; returns its id.
pub async fn completed_collection(app: &Http, token: &str, name: &str, ended: chrono::DateTime<chrono::Utc>) -> i64 {
    let donor = app.register_donor(token, &donor_body(name, "O", "negative")).await;
    let device = app.create_device(token, &format!("Device {name}")).await;
    let start = ended - chrono::TimeDelta::hours(2);
    let id = app.book(token, donor, device, start).await.ok(201)["id"]
        .as_i64()
        .expect("collection id");
    app.post(
        &format!("/api/v1/collections/{id}/start"),
        Some(token),
        &json!({"started_at": ts(start)}),
    )
    .await
    .ok(200);
    app.post(
        &format!("/api/v1/collections/{id}/complete"),
        Some(token),
        &json!({"ended_at": ts(ended)}),
    )
    .await
    .ok(200);
    id
}

pub fn patient_body(mrn: &str, abo: &str, rhd: &str, sex: &str) -> Value {
    json!({"mrn": mrn, "given_name": "Pat", "family_name": "Ient", "date_of_birth": "1990-02-03", "sex": sex,
           "weight_kg": 70, "abo": abo, "rhd": rhd, "cmv": "negative"})
}

pub fn request_body(patient: i64, units: u32) -> Value {
    json!({"patient_id": patient, "units_requested": units, "needed_by": ts(now_minute() + chrono::TimeDelta::hours(6)),
           "priority": "asap", "indication": {"anc_per_ul": 120, "infection": "invasive aspergillosis", "refractory_hours": 72}})
}

/// A hospital with its own account; returns (hospital id, token).
pub async fn hospital(app: &mut Http) -> (i64, String) {
    let token = app.token_for("hospital").await;
    let me = app.get("/api/v1/me", Some(&token)).await;
    (me.ok(200)["hospital_id"].as_i64().expect("hospital id"), token)
}

/// The blood bank types two samples drawn at different times (two and three hours ago) the
/// same, which confirms the patient's group of record; returns the newer sample.
pub async fn confirm_group(app: &Http, staff: &str, patient: i64, abo: &str, rhd: &str) -> i64 {
    let mut last = 0;
    for hours in [3, 2] {
        let s = app
            .post(
                &format!("/api/v1/patients/{patient}/samples"),
                Some(staff),
                &json!({"drawn_at": ts(now_minute() - chrono::TimeDelta::hours(hours)),
                        "transfused_or_pregnant_within_3_months": true}),
            )
            .await;
        last = s.ok(201)["id"].as_i64().expect("sample id");
        app.post(
            &format!("/api/v1/samples/{last}/typing"),
            Some(staff),
            &json!({"abo": abo, "rhd": rhd}),
        )
        .await
        .ok(201);
    }
    last
}

/// A patient registered by `registrar` (a hospital account or staff) whose group the blood
/// bank has confirmed as the one declared in `body`; returns its id.
pub async fn typed_patient(app: &Http, registrar: &str, staff: &str, body: &Value) -> i64 {
    let id = app.post("/api/v1/patients", Some(registrar), body).await.ok(201)["id"]
        .as_i64()
        .expect("patient id");
    let (abo, rhd) = (
        body["abo"].as_str().expect("abo").to_owned(),
        body["rhd"].as_str().expect("rhd").to_owned(),
    );
    confirm_group(app, staff, id, &abo, &rhd).await;
    id
}

/// A database migrated by hand to just before the migration named `before` (its leading
/// `YYYY-MM-DD-NNNNNN`), recorded as diesel records them so that starting the application
/// runs only the newer ones: rows can then be written as an earlier release wrote them.
pub fn migrated_before(backend: Backend, db: &TestDb, before: &str) -> granulo::store::DbConn {
    use diesel::connection::SimpleConnection as _;
    let tree = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(tree);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.as_str() < before)
        .collect();
    names.sort();
    let mut conn = granulo::store::establish(&db.target()).expect("connect");
    conn.batch_execute(
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .expect("migrations table");
    for name in names {
        let sql = std::fs::read_to_string(dir.join(&name).join("up.sql")).expect("up.sql");
        conn.batch_execute(&sql).expect("earlier migration");
        let version: String = name
            .chars()
            .take_while(|c| *c != '_')
            .filter(char::is_ascii_digit)
            .collect();
        conn.batch_execute(&format!(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('{version}')"
        ))
        .expect("record migration");
    }
    conn
}
