//! Crash safety: the real server, killed with SIGKILL while several clients create and allocate
//! units, loses no acknowledged write, allocates no unit twice, duplicates no DIN and keeps an
//! intact audit chain once restarted on the same database.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use granulo::store::schema::{allocations, audit_log, din_sequences, unit_tests, units};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

both_backends!(sigkill_mid_writes_loses_no_acknowledged_write);

const CLIENTS: usize = 6;
/// Collections the clients turn into units with server-assigned DINs (one more is kept back).
const COLLECTIONS: usize = 8;
const READY_UNITS: usize = 6;
const MIN_ACKED_WRITES: usize = 10;
const MIN_ACKED_ALLOCATIONS: usize = 2;

/// `granulo serve` as a child process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    http: Http,
    log: std::path::PathBuf,
}

impl Server {
    async fn start(db: &TestDb, dir: &std::path::Path, name: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_granulo"))
            .arg("serve")
            .env("GRANULO_DATABASE_URL", &db.url)
            .env("GRANULO_BIND", format!("127.0.0.1:{port}"))
            .env("GRANULO_JWT_SECRET", JWT_SECRET)
            .env("GRANULO_SECRETS_KEY", SECRETS_KEY)
            // Durability is under test, not the rate limits: this burst must not be refused.
            .env("GRANULO_RATE_LIMIT_PER_ACCOUNT", "0")
            .env("GRANULO_RATE_LIMIT_PER_ADDRESS", "0")
            .env("GRANULO_ADMIN_USERNAME", ADMIN_USER)
            .env("GRANULO_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("GRANULO_ALERT_INTERVAL_SECS", "0")
            .env("GRANULO_WORKERS", "2")
            .env("GRANULO_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("spawn granulo serve");
        let mut server = Self {
            child,
            http: Http::new(format!("http://127.0.0.1:{port}")),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = server.http.client.get(server.http.url("/healthz")).send().await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            let exited = server.child.try_wait().expect("child status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "server {name} did not come up ({exited:?}): {}",
                server.log_text()
            );
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL; panics if the server had already died some other way.
    fn kill(&mut self) {
        use std::os::unix::process::ExitStatusExt as _;
        self.child.kill().expect("SIGKILL the server");
        let status = self.child.wait().expect("reap the server");
        assert_eq!(status.signal(), Some(9), "{status}: {}", self.log_text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the server acknowledged (2xx) before it died.
#[derive(Debug, Default)]
struct Acked {
    /// (unit id, DIN, DIN assigned by the server)
    units: Vec<(i64, String, bool)>,
    irradiated: Vec<i64>,
    tests: Vec<(i64, String)>,
    released: Vec<i64>,
    /// (allocation id, unit id, request id)
    allocations: Vec<(i64, i64, i64)>,
    /// Allocation attempts that lost a race (409 `unit_not_available`).
    lost_races: usize,
}

impl Acked {
    fn writes(&self) -> usize {
        self.units.len() + self.irradiated.len() + self.tests.len() + self.released.len() + self.allocations.len()
    }
}

/// Why a client stopped: only a transport failure (the server died) is expected.
#[derive(Debug)]
enum Stop {
    CutOff(reqwest::Error),
    Unexpected(String),
}

struct Run<'a> {
    http: &'a Http,
    tech: &'a str,
    markers: Vec<String>,
    requests: Vec<i64>,
    collections: RefCell<Vec<i64>>,
    released: RefCell<Vec<i64>>,
    acked: RefCell<Acked>,
    running: Cell<usize>,
}

impl Run<'_> {
    async fn post(&self, path: &str, body: &Value) -> Result<Reply, Stop> {
        let req = self
            .http
            .client
            .post(self.http.url(path))
            .bearer_auth(self.tech)
            .json(body);
        self.http.try_send(req).await.map_err(Stop::CutOff)
    }

    async fn expect(&self, path: &str, body: &Value, status: u16) -> Result<Value, Stop> {
        let r = self.post(path, body).await?;
        if r.status.as_u16() == status {
            Ok(r.body)
        } else {
            Err(Stop::Unexpected(format!("POST {path}: {} {}", r.status, r.text)))
        }
    }
}

/// One client, round after round until the server stops answering: try to allocate every
/// released unit it has not tried yet (every client tries every unit, so allocations race), then
/// create a unit (from a collection while any is left, else a supplier unit), irradiate, test and
/// release it.
async fn client(run: &Run<'_>, n: usize) -> Stop {
    let Err(stop) = client_writes(run, n).await;
    run.running.set(run.running.get() - 1);
    stop
}

async fn client_writes(run: &Run<'_>, n: usize) -> Result<std::convert::Infallible, Stop> {
    let request = run.requests[n % run.requests.len()];
    let mut tried = 0;
    loop {
        loop {
            let next = run.released.borrow().get(tried).copied();
            let Some(unit) = next else { break };
            tried += 1;
            let path = format!("/api/v1/requests/{request}/allocations");
            let r = run.post(&path, &json!({"unit_id": unit})).await?;
            let mut acked = run.acked.borrow_mut();
            match r.status.as_u16() {
                201 => acked
                    .allocations
                    .push((r.body["id"].as_i64().expect("allocation id"), unit, request)),
                409 if r.body["code"] == "unit_not_available" => acked.lost_races += 1,
                _ => return Err(Stop::Unexpected(format!("POST {path}: {} {}", r.status, r.text))),
            }
        }
        let collection = run.collections.borrow_mut().pop();
        let body = match collection {
            Some(c) => json!({"source": {"type": "collection", "collection_id": c},
                              "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10}),
            None => supplier_unit_body(&next_din(), "O", "positive"),
        };
        let created = run.expect("/api/v1/units", &body, 201).await?;
        let unit = created["id"].as_i64().expect("unit id");
        let din = created["din"].as_str().expect("din").to_owned();
        run.acked.borrow_mut().units.push((unit, din, collection.is_some()));
        let path = format!("/api/v1/units/{unit}/irradiation");
        run.expect(&path, &json!({"dose_gy": 25}), 200).await?;
        run.acked.borrow_mut().irradiated.push(unit);
        for marker in &run.markers {
            let body = json!({"marker": marker, "result": "negative"});
            run.expect(&format!("/api/v1/units/{unit}/tests"), &body, 200).await?;
            run.acked.borrow_mut().tests.push((unit, marker.clone()));
        }
        let path = format!("/api/v1/units/{unit}/release");
        run.expect(&path, &json!({"emergency": false}), 200).await?;
        run.acked.borrow_mut().released.push(unit);
        run.released.borrow_mut().push(unit);
    }
}

async fn sigkill_mid_writes_loses_no_acknowledged_write(backend: Backend) {
    let began = Instant::now();
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&db, dir.path(), "first").await;

    let tech = server.http.token_for("technologist").await;
    let (_, hosp) = hospital(&mut server.http).await;
    let mut requests = Vec::new();
    for i in 0..3 {
        let patient = server
            .http
            .post(
                "/api/v1/patients",
                Some(&hosp),
                &patient_body(&format!("CRASH-{i}"), "AB", "positive", "male"),
            )
            .await
            .ok(201)["id"]
            .as_i64()
            .expect("patient");
        let r = server
            .http
            .post("/api/v1/requests", Some(&hosp), &request_body(patient, 4))
            .await;
        assert_eq!(r.ok(201)["status"], "open", "{}", r.text);
        requests.push(r.body["id"].as_i64().expect("request"));
    }
    let ended = now_minute() - chrono::TimeDelta::hours(1);
    let mut collections = Vec::new();
    for i in 0..=COLLECTIONS {
        collections.push(completed_collection(&server.http, &tech, &format!("Crash{i}"), ended).await);
    }
    let kept_back = collections.pop().expect("a collection for after the restart");
    // Units ready before the clients start, so that allocations race from the first moment.
    let mut ready = Vec::new();
    for _ in 0..READY_UNITS {
        ready.push(ready_unit(&server.http, &tech, "O", "negative").await.0);
    }
    // The clients get their own HTTP client: the killer holds `server` mutably.
    let clients_http = Http::new(server.http.base.clone());
    let run = Run {
        http: &clients_http,
        tech: &tech,
        markers: required_markers(&server.http, &tech).await,
        requests: requests.clone(),
        collections: RefCell::new(collections),
        released: RefCell::new(ready),
        acked: RefCell::new(Acked::default()),
        running: Cell::new(CLIENTS),
    };

    // Kill after 300-800 ms, and not before enough writes were acknowledged to make it count.
    let delay = Duration::from_millis(300 + u64::try_from(uuid::Uuid::new_v4().as_u128() % 500).expect("small"));
    let writes_began = Instant::now();
    let killer = async {
        actix_rt::time::sleep(delay).await;
        loop {
            let enough = {
                let acked = run.acked.borrow();
                acked.writes() >= MIN_ACKED_WRITES && acked.allocations.len() >= MIN_ACKED_ALLOCATIONS
            };
            // Enough acknowledged, or every client stopped (the assertions below say why).
            if enough || run.running.get() == 0 {
                break;
            }
            assert!(
                writes_began.elapsed() < Duration::from_secs(10),
                "too few writes acknowledged: {:?}\n{}",
                run.acked.borrow(),
                server.log_text()
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        let running = run.running.get();
        server.kill();
        (running, writes_began.elapsed())
    };
    let clients = futures_util::future::join_all((0..CLIENTS).map(|n| client(&run, n)));
    let ((running_at_kill, killed_after), stops) = futures_util::future::join(killer, clients).await;
    let Run { acked, .. } = run;
    let acked = acked.into_inner();
    let stops: Vec<&reqwest::Error> = stops
        .iter()
        .map(|s| match s {
            Stop::CutOff(e) => e,
            Stop::Unexpected(what) => panic!("unexpected answer before the kill: {what}"),
        })
        .collect();
    assert_eq!(running_at_kill, CLIENTS, "every client was still writing at the kill");
    let in_flight = stops.iter().filter(|e| !e.is_connect()).count();
    let cut_off: Vec<&str> = stops
        .iter()
        .filter(|e| !e.is_connect())
        .filter_map(|e| e.url().and_then(|u| u.path_segments()).and_then(|mut s| s.next_back()))
        .collect();
    assert!(in_flight >= 1, "some request was cut off mid-flight: {stops:?}");
    assert!(acked.writes() >= MIN_ACKED_WRITES, "{acked:?}");
    let (ok, text) = audit_verify(&db.url);
    assert!(ok && text.contains("intact"), "audit chain after the crash: {text}");

    let server = Server::start(&db, dir.path(), "restarted").await;
    let dins_before = check_acknowledged_writes_survived(&db, &acked);

    // The restarted server takes writes: a new allocation, and a unit with the next free DIN.
    let (unit, _) = ready_unit(&server.http, &tech, "O", "negative").await;
    let r = server
        .http
        .post(
            &format!("/api/v1/requests/{}/allocations", requests[0]),
            Some(&tech),
            &json!({"unit_id": unit}),
        )
        .await;
    assert_eq!(r.ok(201)["status"], "allocated");
    let r = server
        .http
        .post(
            "/api/v1/units",
            Some(&tech),
            &json!({"source": {"type": "collection", "collection_id": kept_back},
                    "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10}),
        )
        .await;
    let din = r.ok(201)["din"].as_str().expect("din").to_owned();
    assert!(!dins_before.contains(&din), "{din} was handed out before the crash");
    let (ok, text) = audit_verify(&db.url);
    assert!(ok && text.contains("intact"), "audit chain after the restart: {text}");
    eprintln!(
        "{backend:?}: killed after {killed_after:?} (delay {delay:?}); acknowledged {} writes: {} units, {} \
         allocations, {} lost allocation races; {in_flight} of {CLIENTS} requests cut off in flight {cut_off:?}; \
         total {:?}",
        acked.writes(),
        acked.units.len(),
        acked.allocations.len(),
        acked.lost_races,
        began.elapsed()
    );
}

/// Read the database directly: every acknowledged write is there, and the invariants hold for
/// everything that was committed, acknowledged or not. Returns the DINs in the database.
fn check_acknowledged_writes_survived(db: &TestDb, acked: &Acked) -> BTreeSet<String> {
    let mut conn = granulo::store::establish(&db.target()).expect("open the database");
    type UnitRow = (
        i64,
        String,
        String,
        Option<chrono::NaiveDateTime>,
        Option<chrono::NaiveDateTime>,
    );
    let unit_rows: Vec<UnitRow> = units::table
        .select((
            units::id,
            units::din,
            units::status,
            units::irradiated_at,
            units::released_at,
        ))
        .load(&mut conn)
        .expect("units");
    let by_id: BTreeMap<i64, &UnitRow> = unit_rows.iter().map(|u| (u.0, u)).collect();
    let dins: BTreeSet<String> = unit_rows.iter().map(|u| u.1.clone()).collect();
    assert_eq!(dins.len(), unit_rows.len(), "a DIN appears twice");
    for (id, din, _) in &acked.units {
        let row = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged unit {id} ({din}) is lost"));
        assert_eq!(&row.1, din, "unit {id}");
    }
    for id in &acked.irradiated {
        assert!(by_id[id].3.is_some(), "acknowledged irradiation of unit {id} is lost");
    }
    let tests: BTreeSet<(i64, String)> = unit_tests::table
        .select((unit_tests::unit_id, unit_tests::marker))
        .load::<(i64, String)>(&mut conn)
        .expect("unit tests")
        .into_iter()
        .collect();
    for t in &acked.tests {
        assert!(tests.contains(t), "acknowledged test result {t:?} is lost");
    }
    for id in &acked.released {
        assert!(by_id[id].4.is_some(), "acknowledged release of unit {id} is lost");
        assert!(
            ["available", "allocated"].contains(&by_id[id].2.as_str()),
            "released unit {id} is {}",
            by_id[id].2
        );
    }

    let allocation_rows: Vec<(i64, i64, i64, String)> = allocations::table
        .select((
            allocations::id,
            allocations::unit_id,
            allocations::request_id,
            allocations::status,
        ))
        .load(&mut conn)
        .expect("allocations");
    let allocation_by_id: BTreeMap<i64, &(i64, i64, i64, String)> = allocation_rows.iter().map(|a| (a.0, a)).collect();
    for (id, unit, request) in &acked.allocations {
        let row = allocation_by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged allocation {id} is lost"));
        assert_eq!(
            (row.1, row.2, row.3.as_str()),
            (*unit, *request, "allocated"),
            "allocation {id}"
        );
    }
    let mut active: BTreeMap<i64, usize> = BTreeMap::new();
    for a in allocation_rows.iter().filter(|a| a.3 == "allocated" || a.3 == "issued") {
        *active.entry(a.1).or_insert(0) += 1;
    }
    assert!(
        active.values().all(|n| *n == 1),
        "a unit is in two active allocations: {active:?}"
    );
    // A unit is allocated exactly when it has an active allocation (both written in one transaction).
    let allocated_units: BTreeSet<i64> = unit_rows.iter().filter(|u| u.2 == "allocated").map(|u| u.0).collect();
    assert_eq!(allocated_units, active.keys().copied().collect::<BTreeSet<_>>());

    // Every committed creation, acknowledged or not, has its audit row.
    let audited: Vec<(String, String)> = audit_log::table
        .filter(audit_log::action.eq_any(["unit.create", "allocation.create"]))
        .select((audit_log::action, audit_log::entity_id))
        .load(&mut conn)
        .expect("audit rows");
    let audited_ids = |action: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = audited
            .iter()
            .filter(|(a, _)| a == action)
            .map(|(_, id)| id.parse().expect("numeric entity id"))
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(audited_ids("unit.create"), by_id.keys().copied().collect::<Vec<_>>());
    assert_eq!(
        audited_ids("allocation.create"),
        allocation_by_id.keys().copied().collect::<Vec<_>>()
    );

    // The DIN counter is not behind the DINs it handed out (our FIN, A9999; suppliers' is B1234).
    let last: i32 = din_sequences::table
        .select(diesel::dsl::max(din_sequences::last_value))
        .first::<Option<i32>>(&mut conn)
        .expect("din sequence")
        .unwrap_or(0);
    let assigned: Vec<&String> = dins.iter().filter(|d| d.starts_with("A9999")).collect();
    assert!(!assigned.is_empty() || acked.units.iter().all(|u| !u.2));
    for din in assigned {
        let sequence: i32 = din[7..].parse().expect("sequence");
        assert!(sequence <= last, "{din} is ahead of the counter ({last})");
    }
    dins
}
