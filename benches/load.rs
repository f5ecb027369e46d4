//! HTTP load on the real server binary: throughput and p50/p99 latency of the hot routes at 1, 8
//! and 32 concurrent keep-alive clients, the same single-row read through a bare actix-web +
//! diesel handler as the floor, and the server's memory. Prints the tables of
//! docs/PERFORMANCE.md.
//!
//! `cargo bench --bench load` runs on a temporary SQLite file; with
//! `GRANULO_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test` also on a fresh
//! PostgreSQL database created beside that one (dropped afterwards). `GRANULO_BENCH_SECS`
//! (default 4) is the length of each measured cell; sizes: `GRANULO_BENCH_DONORS`,
//! `GRANULO_BENCH_UNITS` (10 000 each), `GRANULO_BENCH_REQUESTS` (1 000 open). The server takes
//! `GRANULO_WORKERS` and `GRANULO_DB_POOL_SIZE` from the environment like any deployment; the
//! floor server uses the same values. Arguments after `--` keep only the routes whose name
//! contains one of them (`cargo bench --bench load -- candidates login`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use common::{env_usize, percentile};
use diesel::prelude::*;
use granulo::auth::password;
use granulo::config::DatabaseTarget;
use granulo::domain::blood::{Abo, Cmv, Rhd, Sex};
use granulo::domain::compatibility::{CrossmatchKind, CrossmatchResult};
use granulo::domain::policy::Policy;
use granulo::domain::requests::{AllocationStatus, Priority, RequestStatus};
use granulo::domain::units::UnitStatus;
use granulo::store::allocations::{self as allocation_rows, AllocationData, NewCrossmatch};
use granulo::store::patients::{self as patient_rows, NewSample, NewTyping, PatientData};
use granulo::store::requests::{self as request_rows, RequestData};
use granulo::store::schema;
use granulo::store::{self, DbConn, Pool, units, users};

const CLIENTS: [usize; 3] = [1, 8, 32];
const USERNAME: &str = "bench.director";
const PASSWORD: &str = "bench-director-password";
const JWT_SECRET: &str = "bench-only-signing-key-0123456789abcdef0123";
/// `GRANULO_METRICS_TOKEN` of the server: the `/metrics` cell scrapes with it.
const METRICS_TOKEN: &str = "bench-only-metrics-token-0123456789abcdef";
/// Patient groups of the open requests, in proportion (O 45 %, A 40 %, B 10 %, AB 5 %).
const PATIENT_ABO: [&str; 20] = [
    "O", "A", "O", "A", "O", "A", "O", "A", "O", "B", "O", "A", "O", "A", "O", "A", "O", "B", "A", "AB",
];

/// Patient groups whose plasma accepts red cells of `unit_abo`.
fn recipients(unit_abo: &str) -> &'static [&'static str] {
    match unit_abo {
        "O" => &["O", "A", "B", "AB"],
        "A" => &["A", "AB"],
        "B" => &["B", "AB"],
        _ => &["AB"],
    }
}

/// Ids grouped by patient ABO group, handed out round-robin to units they may receive.
#[derive(Default)]
struct Picker {
    by_group: HashMap<&'static str, Vec<i64>>,
    next: usize,
}

impl Picker {
    fn add(&mut self, abo: &'static str, id: i64) {
        self.by_group.entry(abo).or_default().push(id);
    }

    fn pick(&mut self, unit_abo: &str) -> Option<i64> {
        let lists: Vec<&Vec<i64>> = recipients(unit_abo)
            .iter()
            .filter_map(|g| self.by_group.get(g))
            .collect();
        let total: usize = lists.iter().map(|l| l.len()).sum();
        if total == 0 {
            return None;
        }
        let mut k = self.next % total;
        self.next += 1;
        for list in lists {
            if k < list.len() {
                return Some(list[k]);
            }
            k -= list.len();
        }
        None
    }
}

/// Patients and open requests as the unit seeding needs them.
#[derive(Default)]
struct People {
    patients: Picker,
    open: Picker,
    hospital_of: HashMap<i64, i64>,
    /// Open request → its patient's crossmatch sample.
    sample_of: HashMap<i64, i64>,
    /// Every patient, in the order seeded.
    patients_in_order: Vec<i64>,
}

/// What the load needs to know about the seeded data.
struct Seeded {
    /// Every unit's DIN.
    dins: Vec<String>,
    open_requests: Vec<i64>,
    /// (request, unit): each available unit paired with an open request its red cells suit.
    plan: Vec<(i64, i64)>,
    /// Ten-day courses due from the day after tomorrow, for the course planner.
    courses: Vec<i64>,
    summary: String,
}

fn seed(conn: &mut DbConn) -> anyhow::Result<Seeded> {
    let n_donors = env_usize("GRANULO_BENCH_DONORS", 10_000);
    let n_units = env_usize("GRANULO_BENCH_UNITS", 10_000);
    let n_requests = env_usize("GRANULO_BENCH_REQUESTS", 1_000);
    let now = store::now();
    let hash = password::hash(PASSWORD).map_err(|e| anyhow::anyhow!("{e}"))?;
    store::write_tx(conn, |conn| -> anyhow::Result<Seeded> {
        // The bench signs in with a password only: its role leaves the roles that must give a
        // second factor (the default policy lists medical_director).
        let (mut policy, version) = match store::policy::load(conn)? {
            Some(row) => (serde_json::from_str::<Policy>(&row.document)?, row.version + 1),
            None => (Policy::default(), 1),
        };
        policy.security.mfa_required_roles.retain(|r| r != "medical_director");
        store::policy::save(conn, version, &serde_json::to_string(&policy)?, now, "bench")?;
        let hospitals = (0..5)
            .map(|h| common::insert_hospital(conn, &format!("BENCH{h}"), now))
            .collect::<anyhow::Result<Vec<i64>>>()?;
        common::seed_donors(conn, n_donors, now)?;
        users::insert(
            conn,
            &users::NewUser {
                username: USERNAME,
                password_hash: &hash,
                role: "medical_director",
                hospital_id: None,
                active: true,
                created_at: now,
                updated_at: now,
            },
        )?;
        let mut people = People::default();
        let mut open_requests = Vec::with_capacity(n_requests);
        for i in 0..n_requests {
            let abo = PATIENT_ABO[i % PATIENT_ABO.len()];
            let female = i % 2 == 0;
            let patient = patient_rows::insert(
                conn,
                &PatientData {
                    hospital_id: hospitals[i % hospitals.len()],
                    mrn: format!("BENCH-{i}"),
                    given_name: format!("Patient{i}"),
                    family_name: "Bench".into(),
                    date_of_birth: NaiveDate::from_ymd_opt(1950 + (i % 60) as i32, 1 + (i % 12) as u32, 1)
                        .unwrap_or_default(),
                    sex: if female { Sex::Female } else { Sex::Male },
                    weight_kg: 20.0 + (i % 70) as f64,
                    abo: Abo::parse(abo).expect("abo"),
                    rhd: if i % 6 == 0 { Rhd::Negative } else { Rhd::Positive },
                    cmv: if i % 4 == 0 { Cmv::Negative } else { Cmv::Positive },
                    childbearing_potential_stated: None,
                    hla_antibodies: if i % 10 == 0 { r#"["A2"]"# } else { "[]" }.into(),
                    granulocyte_antibodies: false,
                    updated_at: now,
                },
                now,
            )?;
            let sample = patient_rows::insert_sample(
                conn,
                &NewSample {
                    patient_id: patient.id,
                    drawn_at: now - TimeDelta::hours(2),
                    transfused_or_pregnant_within_3_months: true,
                    valid_until: now + TimeDelta::hours(70),
                    recorded_by: "bench",
                    created_at: now,
                },
            )?;
            // A group of record confirmed by two samples drawn at different times (domain §3):
            // an unconfirmed patient gets group O units only.
            let earlier = patient_rows::insert_sample(
                conn,
                &NewSample {
                    patient_id: patient.id,
                    drawn_at: now - TimeDelta::days(10),
                    transfused_or_pregnant_within_3_months: true,
                    valid_until: now - TimeDelta::days(7),
                    recorded_by: "bench",
                    created_at: now,
                },
            )?;
            for (s, drawn) in [
                (earlier.id, now - TimeDelta::days(10)),
                (sample.id, now - TimeDelta::hours(2)),
            ] {
                patient_rows::insert_typing(
                    conn,
                    &NewTyping {
                        sample_id: s,
                        patient_id: patient.id,
                        abo: patient.abo.as_str(),
                        rhd: patient.rhd.as_str(),
                        typed_by: "bench",
                        typed_at: drawn + TimeDelta::minutes(30),
                        created_at: now,
                    },
                )?;
            }
            let hospital_id = hospitals[i % hospitals.len()];
            let needed_by = now + TimeDelta::hours((i % 3) as i64 - 1);
            let r = insert_request(conn, hospital_id, patient.id, "open", needed_by, 4, now)?;
            people.patients.add(abo, patient.id);
            people.patients_in_order.push(patient.id);
            people.open.add(abo, r.id);
            people.hospital_of.insert(patient.id, hospital_id);
            people.sample_of.insert(r.id, sample.id);
            open_requests.push(r.id);
        }
        let units = seed_units(conn, n_units, now, &mut people)?;
        // The course planner: two devices, and ten-day courses from two days ahead at 14:00
        // for the first patients.
        for name in ["Bench Optia 1", "Bench Optia 2"] {
            granulo::store::devices::insert(conn, name, now)?;
        }
        let first_day = (now + TimeDelta::days(2)).date().and_hms_opt(14, 0, 0).unwrap_or(now);
        let mut courses = Vec::new();
        for i in 0..n_requests.min(8) {
            let patient = people.patients_in_order.get(i).copied().unwrap_or_default();
            let hospital_id = people.hospital_of.get(&patient).copied().unwrap_or(hospitals[0]);
            courses.push(insert_request(conn, hospital_id, patient, "open", first_day, 10, now)?.id);
        }
        let summary = format!(
            "{n_donors} donors, {n_units} units ({}), {n_requests} open requests{}",
            units.mix,
            match common::history_years() {
                0 => String::new(),
                y => format!(", {y} years of history (GRANULO_BENCH_HISTORY_YEARS)"),
            }
        );
        Ok(Seeded {
            dins: units.dins,
            open_requests,
            plan: units.plan,
            courses,
            summary,
        })
    })
}

fn insert_request(
    conn: &mut DbConn,
    hospital_id: i64,
    patient_id: i64,
    status: &str,
    needed_by: NaiveDateTime,
    units_requested: i32,
    now: NaiveDateTime,
) -> anyhow::Result<request_rows::Request> {
    Ok(request_rows::insert(
        conn,
        &RequestData {
            hospital_id,
            patient_id,
            units_requested,
            needed_by,
            priority: Priority::Asap,
            anc_per_ul: 100,
            infection: "invasive aspergillosis".into(),
            refractory_hours: 72,
            cmv_negative: false,
            hla_compatible: false,
            within_indication: true,
            status: RequestStatus::parse(status).expect("request status"),
            decided_by: Some("bench".into()),
            decided_at: Some(needed_by - TimeDelta::hours(3)),
            decision_reason: None,
            cancelled_by: None,
            cancel_reason: None,
            requested_by: "bench".into(),
            updated_at: now,
            irradiated: true,
            order_system: None,
            order_value: None,
        },
        needed_by - TimeDelta::hours(4),
    )?)
}

struct SeededUnits {
    dins: Vec<String>,
    plan: Vec<(i64, i64)>,
    mix: String,
}

/// Units over the last 90 days. Of every 20: 1 quarantined, 1 allocated, 5 available, 1 issued
/// (all collected in the last 20 h), 8 transfused, 3 expired, 1 discarded (older). Every
/// released unit has its marker results; allocated, issued and transfused units their
/// allocation (and a crossmatch when still active).
fn seed_units(conn: &mut DbConn, n: usize, now: NaiveDateTime, people: &mut People) -> anyhow::Result<SeededUnits> {
    let markers = Policy::default().unit.required_markers;
    let mut tests: Vec<(i64, usize, &'static str, NaiveDateTime)> = Vec::with_capacity(n * markers.len());
    let mut dins = Vec::with_capacity(n);
    let mut plan = Vec::new();
    let mut mix: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut historical: HashMap<&str, (i64, usize)> = HashMap::new();
    for i in 0..n {
        let k = i % 20;
        let recent = k < 7 || k == 19;
        let collected = if recent {
            now - TimeDelta::minutes(60 + ((i * 37) % (19 * 60)) as i64)
        } else {
            now - TimeDelta::days(1) - TimeDelta::minutes(((i * 53) % (89 * 24 * 60)) as i64)
        };
        let mut data = common::supplier_unit(i, collected, now);
        let status: &'static str = match k {
            0 => "quarantined",
            1 => "allocated",
            2..=6 => "available",
            7..=14 => "transfused",
            15..=17 => "expired",
            18 => "discarded",
            _ => "issued",
        };
        data.status = UnitStatus::parse(status).expect("unit status");
        match status {
            "quarantined" => {
                data.release_kind = None;
                data.released_at = None;
                data.released_by = None;
            }
            "expired" => data.status_reason = Some("expired on the shelf".into()),
            "discarded" => {
                data.status_reason = Some("bag damaged".into());
                data.discarded_at = Some(collected + TimeDelta::hours(3));
                data.discarded_by = Some("bench".into());
            }
            _ => {}
        }
        let abo = common::ABO[i % 4];
        let unit = units::insert(conn, &data, collected)?;
        *mix.entry(status).or_default() += 1;
        let result = if status == "quarantined" { "pending" } else { "negative" };
        tests.extend((0..markers.len()).map(|m| (unit.id, m, result, collected + TimeDelta::minutes(20))));
        dins.push(unit.din.clone());
        let request = match status {
            "available" => {
                if let Some(r) = people.open.pick(abo) {
                    plan.push((r, unit.id));
                }
                None
            }
            "allocated" | "issued" => people.open.pick(abo),
            "transfused" => {
                // Past courses: one fulfilled request per four units.
                let slot = historical.entry(abo).or_insert((0, 4));
                if slot.1 == 4 {
                    let Some(patient) = people.patients.pick(abo) else {
                        continue;
                    };
                    let hospital_id = people.hospital_of.get(&patient).copied().unwrap_or_default();
                    let r = insert_request(conn, hospital_id, patient, "fulfilled", collected, 4, now)?;
                    *slot = (r.id, 0);
                }
                slot.1 += 1;
                Some(slot.0)
            }
            _ => None,
        };
        if let Some(request_id) = request {
            allocation_rows::insert(conn, &allocation(request_id, unit.id, status, collected), collected)?;
            // Open requests only: their patients have a current sample.
            if let Some(sample_id) = people.sample_of.get(&request_id) {
                allocation_rows::insert_crossmatch(
                    conn,
                    &NewCrossmatch {
                        unit_id: unit.id,
                        sample_id: *sample_id,
                        result: CrossmatchResult::Compatible,
                        method: "iat",
                        performed_by: "bench",
                        performed_at: now - TimeDelta::minutes(30),
                        created_at: now - TimeDelta::minutes(30),
                        kind: CrossmatchKind::RedCell,
                    },
                )?;
            }
        }
    }
    insert_tests(conn, &tests, &markers)?;
    // History (`GRANULO_BENCH_HISTORY_YEARS`): `n` more units a year, long gone (expired or
    // discarded), without results, allocations or requests.
    let years = common::history_years();
    for j in 0..n * years {
        let collected = now - TimeDelta::days(90) - TimeDelta::minutes(((j * 53) % (years * 365 * 24 * 60)) as i64);
        let mut data = common::supplier_unit(n + j, collected, now);
        if j % 4 == 0 {
            data.status = UnitStatus::Discarded;
            data.status_reason = Some("bag damaged".into());
            data.discarded_at = Some(collected + TimeDelta::hours(3));
            data.discarded_by = Some("bench".into());
        } else {
            data.status = UnitStatus::Expired;
            data.status_reason = Some("expired on the shelf".into());
        }
        units::insert(conn, &data, collected)?;
        *mix.entry("historical").or_default() += 1;
    }
    let mix = mix
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(SeededUnits { dins, plan, mix })
}

fn allocation(request_id: i64, unit_id: i64, status: &str, collected: NaiveDateTime) -> AllocationData {
    let at = collected + TimeDelta::hours(2);
    let issued = status != "allocated";
    let transfused = status == "transfused";
    AllocationData {
        request_id,
        unit_id,
        status: AllocationStatus::parse(status).expect("allocation status"),
        anti_d_task: false,
        allocated_by: "bench".into(),
        allocated_at: at,
        issued_at: issued.then(|| at + TimeDelta::hours(1)),
        issued_by: issued.then(|| "bench".into()),
        scanned_din: None,
        ended_at: None,
        end_reason: None,
        transfusion_started_at: transfused.then(|| at + TimeDelta::hours(2)),
        transfusion_ended_at: transfused.then(|| at + TimeDelta::hours(3)),
        reaction: transfused.then(|| "none".into()),
        pre_anc_per_ul: transfused.then_some(100),
        post_anc_per_ul: transfused.then_some(600),
        anc_increment_per_ul: transfused.then_some(500),
        outcome_recorded_by: transfused.then(|| "bench".into()),
        updated_at: at,
    }
}

/// Marker results in multi-row statements (MultiConnection does not dispatch those, the
/// concrete connections do).
fn insert_tests(
    conn: &mut DbConn,
    tests: &[(i64, usize, &str, NaiveDateTime)],
    markers: &[String],
) -> anyhow::Result<()> {
    use schema::unit_tests as t;
    for chunk in tests.chunks(1_000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(unit_id, m, result, at)| {
                (
                    t::unit_id.eq(*unit_id),
                    t::marker.eq(&markers[*m]),
                    t::result.eq(*result),
                    t::recorded_at.eq(*at),
                    t::recorded_by.eq("bench"),
                )
            })
            .collect();
        match conn {
            DbConn::Postgres(c) => diesel::insert_into(t::table).values(&rows).execute(c)?,
            DbConn::Sqlite(c) => diesel::insert_into(t::table).values(&rows).execute(c)?,
        };
    }
    Ok(())
}

/// Puts the units the last allocation cell took back on the shelf (its allocations cancelled),
/// so that every cell starts from the same inventory.
fn reset_allocations(pool: &Pool) -> anyhow::Result<usize> {
    use schema::{allocations as a, units as u};
    let mut conn = pool.get()?;
    store::write_tx(&mut conn, |c| -> anyhow::Result<usize> {
        let taken: Vec<i64> = a::table
            .filter(a::allocated_by.eq(USERNAME))
            .filter(a::status.eq("allocated"))
            .select(a::unit_id)
            .load(c)?;
        let now = store::now();
        diesel::update(
            a::table
                .filter(a::allocated_by.eq(USERNAME))
                .filter(a::status.eq("allocated")),
        )
        .set((
            a::status.eq("cancelled"),
            a::ended_at.eq(now),
            a::end_reason.eq("bench reset"),
        ))
        .execute(c)?;
        for chunk in taken.chunks(500) {
            diesel::update(u::table.filter(u::id.eq_any(chunk)))
                .set(u::status.eq("available"))
                .execute(c)?;
        }
        Ok(taken.len())
    })
}

// ---------------------------------------------------------------------------------------------
// Servers

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The real binary, as deployed: `granulo serve`.
struct ServerProcess(Child);

/// The server binary: this build's, or `GRANULO_BENCH_SERVER_BIN` (another build of the same
/// commit, e.g. with another allocator feature) to compare builds on one bench binary.
fn server_binary() -> String {
    std::env::var("GRANULO_BENCH_SERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_granulo").to_owned())
}

impl ServerProcess {
    fn start(url: &str, port: u16) -> anyhow::Result<Self> {
        let child = Command::new(server_binary())
            .arg("serve")
            .env("GRANULO_DATABASE_URL", url)
            .env("GRANULO_BIND", format!("127.0.0.1:{port}"))
            .env("GRANULO_JWT_SECRET", JWT_SECRET)
            .env("GRANULO_SECRETS_KEY", "bench-only-sealing-key-0123456789abcdef0123")
            .env("GRANULO_ALERT_INTERVAL_SECS", "0")
            // Many clients on one account and address: limits raised so the bench measures the
            // service (every request still passes the buckets).
            .env("GRANULO_RATE_LIMIT_PER_ACCOUNT", "1000000000")
            .env("GRANULO_RATE_LIMIT_PER_ADDRESS", "1000000000")
            .env("GRANULO_MAX_STREAMS_PER_ACCOUNT", "1000")
            // Concurrent sign-ins count as failures until checked; the login cell measures the
            // sign-in, not the throttle.
            .env("GRANULO_LOGIN_MAX_FAILURES", "1000000")
            .env("GRANULO_LOGIN_MAX_FAILURES_PER_ADDRESS", "1000000")
            .env("GRANULO_METRICS_TOKEN", METRICS_TOKEN)
            .env("GRANULO_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The floor: one handler, one pooled diesel query by DIN, the row as JSON; no middleware.
async fn floor_unit(pool: web::Data<Pool>, din: web::Path<String>) -> HttpResponse {
    let (pool, din) = (pool.get_ref().clone(), din.into_inner());
    let found = web::block(move || -> anyhow::Result<Option<units::Unit>> {
        let mut conn = pool.get()?;
        Ok(units::find_by_din(&mut conn, &din)?)
    })
    .await;
    match found {
        Ok(Ok(Some(u))) => HttpResponse::Ok().json(unit_json(u)),
        Ok(Ok(None)) => HttpResponse::NotFound().finish(),
        _ => HttpResponse::InternalServerError().finish(),
    }
}

fn unit_json(u: units::Unit) -> serde_json::Value {
    serde_json::json!({
        "id": u.id, "din": u.din, "product_code": u.product_code, "source": u.source,
        "collection_id": u.collection_id, "donor_id": u.donor_id, "supplier": u.supplier,
        "pooled": u.pooled, "abo": u.abo, "rhd": u.rhd, "cmv": u.cmv, "volume_ml": u.volume_ml,
        "granulocyte_count": u.granulocyte_count, "red_cell_volume_ml": u.red_cell_volume_ml,
        "collected_at": u.collected_at, "expires_at": u.expires_at, "status": u.status,
        "status_reason": u.status_reason, "storage_location": u.storage_location,
        "irradiated_at": u.irradiated_at, "irradiation_dose_gy": u.irradiation_dose_gy,
        "irradiation_device": u.irradiation_device, "irradiated_by": u.irradiated_by,
        "release_kind": u.release_kind, "released_at": u.released_at, "released_by": u.released_by,
        "emergency_physician": u.emergency_physician,
        "emergency_acknowledged_at": u.emergency_acknowledged_at, "discarded_at": u.discarded_at,
        "discarded_by": u.discarded_by, "created_at": u.created_at, "updated_at": u.updated_at,
    })
}

// ---------------------------------------------------------------------------------------------
// Load

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    List,
    Get,
    Floor,
    Candidates,
    Allocate,
    Login,
    Metrics,
    Plan,
}

const ROUTES: [Route; 8] = [
    Route::List,
    Route::Get,
    Route::Floor,
    Route::Candidates,
    Route::Allocate,
    Route::Login,
    Route::Metrics,
    Route::Plan,
];

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::List => "GET /units?status=available",
            Self::Get => "GET /units/{din}",
            Self::Floor => "floor: bare GET /units/{din}",
            Self::Candidates => "GET /requests/{id}/candidates",
            Self::Allocate => "POST /requests/{id}/allocations",
            Self::Login => "POST /auth/login",
            Self::Metrics => "GET /metrics (scrape)",
            Self::Plan => "POST /requests/{id}/plan (10 days)",
        }
    }
}

/// Where the load goes and with what.
struct Target {
    base: String,
    floor: String,
    auth: String,
    seeded: Seeded,
}

impl Target {
    /// The `n`-th request of a cell, or `None` when there is no more work.
    fn request(&self, c: &reqwest::Client, route: Route, n: usize) -> Option<reqwest::RequestBuilder> {
        let Self {
            base,
            floor,
            auth,
            seeded: s,
        } = self;
        let din = &s.dins[n % s.dins.len()];
        Some(match route {
            Route::List => c
                .get(format!("{base}/api/v1/units?status=available"))
                .header("Authorization", auth),
            Route::Get => c
                .get(format!("{base}/api/v1/units/{din}"))
                .header("Authorization", auth),
            Route::Floor => c.get(format!("{floor}/units/{din}")),
            Route::Candidates => {
                let id = s.open_requests[n % s.open_requests.len()];
                c.get(format!("{base}/api/v1/requests/{id}/candidates"))
                    .header("Authorization", auth)
            }
            Route::Allocate => {
                let (request, unit) = *s.plan.get(n)?;
                c.post(format!("{base}/api/v1/requests/{request}/allocations"))
                    .header("Authorization", auth)
                    .json(&serde_json::json!({
                        "unit_id": unit,
                        "acknowledge": ["rhd_mismatch", "minor_abo_incompatible"],
                        "authorisation": {"by": "Dr Bench", "role": "on-call haematologist",
                                          "at": chrono::Utc::now(), "reason": "bench: accepted findings"}
                    }))
            }
            Route::Login => c
                .post(format!("{base}/api/v1/auth/login"))
                .json(&serde_json::json!({"username": USERNAME, "password": PASSWORD})),
            Route::Plan => {
                let id = s.courses.get(n % s.courses.len().max(1))?;
                c.post(format!("{base}/api/v1/requests/{id}/plan"))
                    .header("Authorization", auth)
            }
            Route::Metrics => c
                .get(format!("{base}/metrics"))
                .header("Authorization", format!("Bearer {METRICS_TOKEN}")),
        })
    }
}

#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
    /// The first body of each status outside 2xx, so a refused cell says why.
    first_refusal: BTreeMap<u16, String>,
    transport_errors: u64,
}

struct Cell {
    backend: &'static str,
    route: Route,
    clients: usize,
    elapsed: Duration,
    samples: Samples,
    /// The cell ran out of work before its time was up.
    exhausted: bool,
    /// Server RSS after the cell, KiB.
    rss: u64,
}

impl Cell {
    fn answered(&self) -> u64 {
        self.samples.statuses.values().sum()
    }

    fn rate(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p(&self, q: f64) -> Duration {
        percentile(&self.samples.latencies, q)
    }
}

async fn run_cell(
    client: &reqwest::Client,
    clients: usize,
    secs: Duration,
    target: &Rc<Target>,
    route: Route,
) -> (Duration, Samples, bool) {
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + secs;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, target, seq) = (client.clone(), target.clone(), seq.clone());
            actix_web::rt::spawn(async move {
                let mut s = Samples::default();
                let mut exhausted = false;
                while Instant::now() < deadline {
                    let n = seq.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(request) = target.request(&client, route, n) else {
                        exhausted = true;
                        break;
                    };
                    let t = Instant::now();
                    match request.send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let body = resp.bytes().await;
                            s.latencies.push(t.elapsed());
                            if let Ok(body) = body {
                                *s.statuses.entry(status).or_default() += 1;
                                if !(200..300).contains(&status) {
                                    s.first_refusal
                                        .entry(status)
                                        .or_insert_with(|| String::from_utf8_lossy(&body).into_owned());
                                }
                            } else {
                                s.transport_errors += 1;
                            }
                        }
                        Err(_) => s.transport_errors += 1,
                    }
                }
                (s, exhausted)
            })
        })
        .collect();
    let mut all = Samples::default();
    let mut exhausted = false;
    for task in tasks {
        if let Ok((s, e)) = task.await {
            all.latencies.extend(s.latencies);
            for (k, v) in s.statuses {
                *all.statuses.entry(k).or_default() += v;
            }
            all.transport_errors += s.transport_errors;
            for (k, v) in s.first_refusal {
                all.first_refusal.entry(k).or_insert(v);
            }
            exhausted |= e;
        }
    }
    let elapsed = started.elapsed();
    all.latencies.sort();
    (elapsed, all, exhausted)
}

async fn wait_ready(client: &reqwest::Client, base: &str, server: &mut ServerProcess) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = server.0.try_wait()? {
            anyhow::bail!("the server exited during start-up: {status}");
        }
        if Instant::now() > until {
            anyhow::bail!("the server was not ready within 60 s");
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let resp = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": USERNAME, "password": PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "login answered {}", resp.status());
    let body: serde_json::Value = resp.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("login answer without access_token"))
}

/// Server VmRSS in KiB at each point, and VmHWM (the peak) at the end of the load.
struct Memory {
    idle: u64,
    warm: u64,
    after: u64,
    peak: u64,
    /// After the load and `GRANULO_BENCH_SETTLE_SECS` without requests.
    settled: u64,
}

struct BackendRun {
    cells: Vec<Cell>,
    memory: Memory,
    /// Time and alerts raised of two consecutive scans.
    scan: [(Duration, i64); 2],
    summary: String,
}

fn run(backend: &'static str, url: &str) -> anyhow::Result<BackendRun> {
    let secs = Duration::from_secs_f64(
        std::env::var("GRANULO_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4.0),
    );
    let target = DatabaseTarget::parse(url)?;
    let pool_size = u32::try_from(env_usize("GRANULO_DB_POOL_SIZE", 8))?;
    let pool = store::build_pool(&target, pool_size, Duration::from_secs(10))?;
    let t = Instant::now();
    let seeded = {
        let mut conn = pool.get()?;
        store::run_migrations(&mut conn)?;
        seed(&mut conn)?
    };
    eprintln!("[{backend}] seeded {} in {:.1?}", seeded.summary, t.elapsed());

    let port = free_port()?;
    let mut server = ServerProcess::start(url, port)?;
    eprintln!("[{backend}] server pid {}", server.0.id());
    let base = format!("http://127.0.0.1:{port}");
    let summary = seeded.summary.clone();
    let floor_pool = pool.clone();
    let result = actix_web::rt::System::new().block_on(async move {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .build()?;
        wait_ready(&client, &base, &mut server).await?;
        let idle = server.memory()?.0;

        let floor_listener = TcpListener::bind("127.0.0.1:0")?;
        let floor_base = format!("http://{}", floor_listener.local_addr()?);
        let data = web::Data::new(floor_pool.clone());
        let mut floor = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/units/{din}", web::get().to(floor_unit))
        });
        if let Some(w) = std::env::var("GRANULO_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|w| *w > 0)
        {
            floor = floor.workers(w);
        }
        let floor = floor.listen(floor_listener)?.run();
        let floor_handle = floor.handle();
        actix_web::rt::spawn(floor);

        let token = login(&client, &base).await?;
        let target = Rc::new(Target {
            base,
            floor: floor_base,
            auth: format!("Bearer {token}"),
            seeded,
        });

        // Warm-up: every selected route a little, then the inventory as seeded again.
        for route in ROUTES.into_iter().filter(|r| selected(r.name())) {
            run_cell(&client, 4, Duration::from_millis(300), &target, route).await;
        }
        reset_allocations(&floor_pool)?;
        let warm = server.memory()?.0;

        let mut cells = Vec::new();
        for route in ROUTES.into_iter().filter(|r| selected(r.name())) {
            for clients in CLIENTS {
                let (elapsed, samples, exhausted) = run_cell(&client, clients, secs, &target, route).await;
                if route == Route::Allocate {
                    reset_allocations(&floor_pool)?;
                }
                let cell = Cell {
                    backend,
                    route,
                    clients,
                    elapsed,
                    samples,
                    exhausted,
                    rss: server.memory()?.0,
                };
                eprintln!(
                    "[{backend}] {} × {clients}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {}, RSS {}",
                    route.name(),
                    cell.rate(),
                    ms(cell.p(0.5)),
                    ms(cell.p(0.99)),
                    answers(&cell),
                    mib(cell.rss)
                );
                for (status, body) in &cell.samples.first_refusal {
                    eprintln!(
                        "[{backend}]   first {status}: {}",
                        body.chars().take(600).collect::<String>()
                    );
                }
                cells.push(cell);
            }
        }
        // What a ten-day plan holds, and the optimiser's own share of the time.
        if selected(Route::Plan.name())
            && let Some(id) = target.seeded.courses.first()
        {
            let plan: serde_json::Value = client
                .post(format!("{}/api/v1/requests/{id}/plan", target.base))
                .header("Authorization", &target.auth)
                .send()
                .await?
                .json()
                .await?;
            eprintln!(
                "[{backend}] plan of request {id}: {} donors considered, optimiser {} ms, proven optimal {}, score {}",
                plan["donors_considered"], plan["planning_ms"], plan["proven_optimal"], plan["score"]
            );
        }
        let (after, peak) = server.memory()?;
        floor_handle.stop(true).await;
        // What the allocator gives back once the load is over (decay, purge, trim).
        actix_web::rt::time::sleep(Duration::from_secs_f64(settle_secs())).await;
        let settled = server.memory()?.0;
        eprintln!(
            "[{backend}] RSS idle {}, warm {}, after {}, peak {}, settled {}",
            mib(idle),
            mib(warm),
            mib(after),
            mib(peak),
            mib(settled)
        );
        drop(server);
        Ok::<_, anyhow::Error>((
            cells,
            Memory {
                idle,
                warm,
                after,
                peak,
                settled,
            },
        ))
    });
    let (cells, memory) = result?;
    let scan = alert_scans(&pool)?;

    Ok(BackendRun {
        cells,
        memory,
        scan,
        summary,
    })
}

fn settle_secs() -> f64 {
    std::env::var("GRANULO_BENCH_SETTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0)
}

/// One alert scan on the data as the load left it (it raises the expiry alerts), then a second
/// one with nothing new to raise.
fn alert_scans(pool: &Pool) -> anyhow::Result<[(Duration, i64); 2]> {
    let mut conn = pool.get()?;
    let mut time = || -> anyhow::Result<(Duration, i64)> {
        let t = Instant::now();
        let report =
            granulo::jobs::run_once(&mut conn, "bench", chrono::Utc::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((t.elapsed(), report.map_or(0, |r| r.raised)))
    };
    Ok([time()?, time()?])
}

// ---------------------------------------------------------------------------------------------
// Report

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn answers(cell: &Cell) -> String {
    let mut parts: Vec<String> = cell.samples.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    if cell.samples.transport_errors > 0 {
        parts.push(format!("transport errors ×{}", cell.samples.transport_errors));
    }
    if cell.exhausted {
        parts.push("(ran out of available units)".to_owned());
    }
    parts.join(", ")
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}

fn print_report(runs: &[BackendRun], secs: &str) {
    println!("Machine: {}", machine());
    println!(
        "Server: `granulo serve` (release), GRANULO_WORKERS={}, GRANULO_DB_POOL_SIZE={}; \
         client: reqwest keep-alive on one thread of the same machine; {secs} s per cell; \
         login is argon2id m=19456 KiB, t=2, p=1.",
        std::env::var("GRANULO_WORKERS").unwrap_or_else(|_| "one per core".to_owned()),
        std::env::var("GRANULO_DB_POOL_SIZE").unwrap_or_else(|_| "8".to_owned()),
    );
    if let Ok(bin) = std::env::var("GRANULO_BENCH_SERVER_BIN") {
        println!("Server binary: {bin}");
    }
    for run in runs {
        if let Some(c) = run.cells.first() {
            println!("Data ({}): {}", c.backend, run.summary);
        }
    }
    println!();
    println!(
        "| Backend | Route | Clients | req/s | p50 ms | p99 ms | Answers | vs floor (req/s, p50) | server RSS after |"
    );
    println!("|---|---|---:|---:|---:|---:|---|---|---:|");
    for run in runs {
        for c in &run.cells {
            let floor = (c.route == Route::Get)
                .then(|| {
                    run.cells
                        .iter()
                        .find(|f| f.route == Route::Floor && f.clients == c.clients)
                })
                .flatten()
                .map(|f| {
                    format!(
                        "{:.2}×, {:.1}×",
                        c.rate() / f.rate().max(1e-9),
                        ms(c.p(0.5)) / ms(f.p(0.5)).max(1e-9)
                    )
                })
                .unwrap_or_default();
            println!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
                c.backend,
                c.route.name(),
                c.clients,
                c.rate(),
                ms(c.p(0.5)),
                ms(c.p(0.99)),
                answers(c),
                floor,
                mib(c.rss)
            );
        }
    }
    println!();
    println!(
        "| Backend | RSS idle after start | after warm-up | peak (VmHWM) | after the run | after {:.0} s idle | alert scan: first / second (alerts raised) |",
        settle_secs()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let m = &run.memory;
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} ms ({}) / {:.0} ms ({}) |",
            run.cells.first().map_or("", |c| c.backend),
            mib(m.idle),
            mib(m.warm),
            mib(m.peak),
            mib(m.after),
            mib(m.settled),
            ms(run.scan[0].0),
            run.scan[0].1,
            ms(run.scan[1].0),
            run.scan[1].1
        );
    }
}

/// Whether the command line keeps this route (`cargo bench` itself passes `--bench`).
fn selected(route: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    filters.is_empty() || filters.iter().any(|f| route.contains(f.as_str()))
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut runs = Vec::new();
    common::on_each_backend(|backend, url| {
        runs.push(run(backend, url)?);
        Ok(())
    })?;
    print_report(
        &runs,
        &std::env::var("GRANULO_BENCH_SECS").unwrap_or_else(|_| "4".to_owned()),
    );
    eprintln!("total run time {:.0?}", started.elapsed());
    Ok(())
}
