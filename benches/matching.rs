//! Candidate ranking and allocation throughput on a seeded database.
//!
//! `cargo bench --bench matching` runs on a temporary SQLite file; with
//! `GRANULO_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test` it also runs on a fresh
//! PostgreSQL database created beside that one (and dropped afterwards). Sizes:
//! `GRANULO_BENCH_UNITS` and `GRANULO_BENCH_DONORS` (default 10 000 each).

mod common;

use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeDelta};
use common::{env_usize, percentile};
use granulo::config::DatabaseTarget;
use granulo::domain::blood::{Abo, Cmv, Rhd, Sex};
use granulo::domain::policy::Policy;
use granulo::domain::requests::{Priority, RequestStatus};
use granulo::services::allocations::{self, AllocateInput};
use granulo::services::candidates;
use granulo::store::audit::Actor;
use granulo::store::{self, DbConn, patients, requests, units};

fn seed(conn: &mut DbConn, n_units: usize, n_donors: usize) -> anyhow::Result<i64> {
    let now = store::now();
    store::write_tx(conn, |conn| -> anyhow::Result<i64> {
        let hospital_id = common::insert_hospital(conn, "BENCH", now)?;
        common::seed_donors(conn, n_donors, now)?;
        for i in 0..n_units {
            let expires = now + TimeDelta::minutes(180 + (i % 1200) as i64);
            units::insert(
                conn,
                &common::supplier_unit(i, expires - TimeDelta::hours(24), now),
                now,
            )?;
        }
        let patient = patients::insert(
            conn,
            &patients::PatientData {
                hospital_id,
                mrn: "BENCH-1".into(),
                given_name: "Bench".into(),
                family_name: "Patient".into(),
                date_of_birth: NaiveDate::from_ymd_opt(1980, 1, 1).unwrap_or_default(),
                sex: Sex::Male,
                weight_kg: 70.0,
                abo: Abo::Ab,
                rhd: Rhd::Positive,
                cmv: Cmv::Negative,
                childbearing_potential_stated: None,
                hla_antibodies: r#"["A2"]"#.into(),
                granulocyte_antibodies: false,
                updated_at: now,
            },
            now,
        )?;
        let request = requests::insert(
            conn,
            &requests::RequestData {
                hospital_id,
                patient_id: patient.id,
                units_requested: 30,
                needed_by: now + TimeDelta::hours(2),
                priority: Priority::Asap,
                anc_per_ul: 100,
                infection: "bench".into(),
                refractory_hours: 72,
                cmv_negative: false,
                hla_compatible: false,
                within_indication: true,
                status: RequestStatus::Open,
                decided_by: None,
                decided_at: None,
                decision_reason: None,
                cancelled_by: None,
                cancel_reason: None,
                requested_by: "bench".into(),
                updated_at: now,
                irradiated: true,
                order_system: None,
                order_value: None,
            },
            now,
        )?;
        Ok(request.id)
    })
}

fn run(label: &str, target: DatabaseTarget) -> anyhow::Result<()> {
    let n_units = env_usize("GRANULO_BENCH_UNITS", 10_000);
    let n_donors = env_usize("GRANULO_BENCH_DONORS", 10_000);
    let pool = store::build_pool(&target, 4, Duration::from_secs(10))?;
    let mut conn = pool.get()?;
    store::run_migrations(&mut conn)?;
    let t = Instant::now();
    let request_id = seed(&mut conn, n_units, n_donors)?;
    println!(
        "[{label}] seeded {n_units} units and {n_donors} donors in {:.1?}",
        t.elapsed()
    );

    let policy = Policy::default();
    // The full reading of every donor's history (as before issue 18), then the index kept
    // between calls (built by its first call, which is left out).
    let index = granulo::store::matching::DonorIndexSlot::default();
    candidates::candidates(&mut conn, request_id, None, 20, &policy, Some(&index))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, slot) in [("full reading", None), ("index", Some(&index))] {
        let mut times = Vec::new();
        let mut listed = (0, 0);
        for _ in 0..25 {
            let t = Instant::now();
            let c = candidates::candidates(&mut conn, request_id, None, 20, &policy, slot)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            times.push(t.elapsed());
            listed = (c.units.len(), c.donors.len());
        }
        times.sort();
        println!(
            "[{label}] candidates ({name}) for one request over {n_units} units + {n_donors} donors (top {} + {}): median {:.1?}, p95 {:.1?}, max {:.1?} (25 runs)",
            listed.0,
            listed.1,
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 1.0)
        );
    }

    let actor = Actor::system("bench");
    let ids: Vec<i64> = candidates::candidates(&mut conn, request_id, None, 500, &policy, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .units
        .into_iter()
        .filter(|u| u.verdict != granulo::domain::compatibility::Verdict::Incompatible)
        .map(|u| u.unit_id)
        .collect();
    let t = Instant::now();
    let mut ok = 0;
    for unit_id in &ids {
        // The patient has HLA antibodies and supplier units are untyped: each is a finding an
        // on-call haematologist authorises.
        let input = AllocateInput {
            unit_id: *unit_id,
            acknowledge: None,
            authorisation: Some(granulo::services::decisions::AuthorisationInput {
                by: granulo::input::Text::new("Dr Bench").expect("text"),
                role: granulo::input::Text::new("on-call haematologist").expect("text"),
                at: chrono::Utc::now(),
                reason: granulo::input::Text::new("bench").expect("text"),
            }),
        };
        let done = store::write_tx(&mut conn, |c| {
            allocations::allocate(c, &actor, request_id, input, &policy)
        });
        if done.is_ok() {
            ok += 1;
        }
    }
    let elapsed = t.elapsed();
    println!(
        "[{label}] {ok} sequential allocations (audited, one transaction each) in {:.1?}: {:.0} allocations/s",
        elapsed,
        ok as f64 / elapsed.as_secs_f64()
    );
    drop(conn);
    webhooks(label, &pool)
}

/// Webhook delivery: 500 alerts raised (each queued for one subscription), then delivery
/// passes to a local receiver until the outbox is empty.
fn webhooks(label: &str, pool: &store::Pool) -> anyhow::Result<()> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    const ALERTS: usize = 500;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let pool = pool.clone();
    let label = label.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new().route("/hook", web::post().to(|| async { HttpResponse::NoContent().finish() }))
        })
        .workers(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let mut conn = pool.get()?;
        let now = store::now();
        let ring = std::sync::Arc::new(granulo::credentials::sealed::Keyring::new(
            &secrecy::SecretString::from("bench-sealing-key-that-is-long-enough-0123456789"),
            &[],
        )?);
        let sealed = ring.seal_str("bench-secret-0123456789", granulo::store::webhooks::SECRET_CONTEXT);
        store::write_tx(&mut conn, |c| -> anyhow::Result<()> {
            granulo::store::webhooks::insert(
                c,
                &granulo::store::webhooks::NewSubscription {
                    url: &format!("http://127.0.0.1:{port}/hook"),
                    events: r#"["*"]"#.to_owned(),
                    secret: &sealed,
                    hospital_id: None,
                    active: true,
                    created_by: "bench",
                    created_at: now,
                },
            )?;
            for i in 0..ALERTS {
                granulo::services::alerts::raise(
                    c,
                    granulo::services::alerts::Raise {
                        kind: granulo::domain::alerts::AlertKind::UnitExpiring,
                        severity: granulo::domain::alerts::AlertSeverity::Warning,
                        entity_id: 0,
                        condition_key: format!("bench:{i}"),
                        message: "bench".to_owned(),
                        details: serde_json::json!({}),
                        threshold_hours: None,
                        at: now.and_utc(),
                    },
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            Ok(())
        })?;
        drop(conn);
        let mut settings =
            granulo::config::Settings::with_database(granulo::config::DatabaseTarget::Sqlite("unused".into()));
        settings.webhook_allow =
            granulo::domain::destinations::AllowList::parse("127.0.0.1").map_err(anyhow::Error::msg)?;
        let client = granulo::services::webhooks::Outbound::new(&settings).map_err(anyhow::Error::msg)?;
        let t = Instant::now();
        let mut delivered = 0;
        loop {
            let r = granulo::services::webhooks::deliver_due(&pool, &client, &ring, chrono::Utc::now())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            delivered += r.delivered;
            if r.delivered + r.failed == 0 {
                break;
            }
        }
        let elapsed = t.elapsed();
        println!(
            "[{label}] {delivered} signed webhook deliveries to a local receiver in {:.1?}: {:.0} deliveries/s",
            elapsed,
            delivered as f64 / elapsed.as_secs_f64()
        );
        handle.stop(true).await;
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    common::on_each_backend(|label, url| run(label, DatabaseTarget::parse(url)?))
}
