//! Seeding and database set-up shared by the benches (`mod common;` in each).

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use diesel::{Connection as _, RunQueryDsl as _};
use granulo::domain::blood::{Abo, Cmv, DonorType, Rhd, Sex};
use granulo::domain::eligibility::ProcedureKind;
use granulo::domain::stimulation::DoseUnit;
use granulo::domain::units::{ReleaseKind, UnitSource, UnitStatus};
use granulo::store::{DbConn, collections, donors, hospitals, units};

pub const ABO: [&str; 4] = ["O", "A", "B", "AB"];
pub const RHD: [&str; 2] = ["positive", "negative"];
pub const CMV: [&str; 3] = ["negative", "positive", "unknown"];

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `p` in 0..=1 of an ascending list (nearest rank); zero for an empty list.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `f` on a temporary SQLite file, then, when `GRANULO_BENCH_POSTGRES_URL` is set, on a
/// fresh PostgreSQL database created beside that one and dropped afterwards (even on error).
pub fn on_each_backend(mut f: impl FnMut(&'static str, &str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    f("sqlite", &format!("sqlite://{}", dir.path().join("bench.db").display()))?;
    if let Ok(base) = std::env::var("GRANULO_BENCH_POSTGRES_URL") {
        let name = format!("granulo_bench_{}", std::process::id());
        let mut admin = diesel::PgConnection::establish(&base)?;
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin)?;
        // Parameters after `?` (e.g. `options=-c%20commit_delay%3D100`) carry over to the new
        // database's connections, the server's included.
        let (path, query) = base
            .split_once('?')
            .map_or((base.as_str(), None), |(p, q)| (p, Some(q)));
        let url = match path.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{name}"),
            None => path.to_owned(),
        };
        let url = query.map_or(url.clone(), |q| format!("{url}?{q}"));
        let result = f("postgres", &url);
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin)?;
        result?;
    }
    Ok(())
}

pub fn insert_hospital(conn: &mut DbConn, code: &str, now: NaiveDateTime) -> anyhow::Result<i64> {
    let h = hospitals::insert(
        conn,
        &hospitals::NewHospital {
            name: code,
            code,
            active: true,
            created_at: now,
            updated_at: now,
            mrn_system: None,
            order_system: None,
        },
    )?;
    Ok(h.id)
}

/// Years of past history per donor and unit (`GRANULO_BENCH_HISTORY_YEARS`, default 0).
pub fn history_years() -> usize {
    env_usize("GRANULO_BENCH_HISTORY_YEARS", 0)
}

/// `n` active donors: mixed groups, a third HLA-typed, 10 % permanently deferred, 20 % with a
/// whole-blood donation in the last 90 days. With [`history_years`] `y`, each donor also has
/// one donation a year for `y` years (none in the last 30 days), and a third a G-CSF dose a year.
pub fn seed_donors(conn: &mut DbConn, n: usize, now: NaiveDateTime) -> anyhow::Result<()> {
    let years = history_years();
    for i in 0..n {
        let hla = if i % 3 == 0 {
            r#"{"a":["A*02:01","A*01"],"b":["B*07"],"c":[],"drb1":["DRB1*15:01"]}"#
        } else {
            r#"{"a":[],"b":[],"c":[],"drb1":[]}"#
        };
        let d = donors::insert(
            conn,
            &donors::DonorData {
                given_name: format!("Donor{i}"),
                family_name: "Bench".into(),
                date_of_birth: NaiveDate::from_ymd_opt(1970 + (i % 40) as i32, 1 + (i % 12) as u32, 1)
                    .unwrap_or_default(),
                sex: Sex::Female,
                weight_kg: 70.0,
                abo: Abo::parse(ABO[i % 4]).expect("abo"),
                rhd: Rhd::parse(RHD[i % 2]).expect("rhd"),
                cmv: Cmv::parse(CMV[i % 3]).expect("cmv"),
                hla: hla.into(),
                donor_type: DonorType::Community,
                phone: None,
                email: None,
                contraindications: "[]".into(),
                active: true,
                search_text: format!("donor{i} bench"),
                updated_at: now,
            },
            now,
        )?;
        if i % 10 == 0 {
            donors::insert_deferral(
                conn,
                &donors::NewDeferral {
                    donor_id: d.id,
                    reason: "bench",
                    permanent: true,
                    starts_at: now,
                    until: None,
                    set_by: "bench",
                    created_at: now,
                    source_unit_id: None,
                },
            )?;
        }
        for y in 0..years {
            let at = now - TimeDelta::days(30 + 365 * y as i64 + ((i * 7 + y * 13) % 330) as i64);
            donors::insert_donation(
                conn,
                &donors::NewDonation {
                    donor_id: d.id,
                    kind: [
                        ProcedureKind::WholeBlood,
                        ProcedureKind::Platelets,
                        ProcedureKind::Plasma,
                    ][(i + y) % 3],
                    donated_at: at,
                    red_cell_loss_ml: Some(200),
                    red_cells_returned: false,
                    site: None,
                    recorded_by: "bench",
                    created_at: now,
                },
            )?;
            if i % 3 == 0 {
                collections::insert_stimulation(
                    conn,
                    &collections::NewStimulation {
                        donor_id: d.id,
                        collection_id: None,
                        agent: "gcsf",
                        dose: 5.0,
                        dose_unit: DoseUnit::UgPerKg,
                        administered_at: at - TimeDelta::days(40),
                        adverse_effects: None,
                        recorded_by: "bench",
                        created_at: now,
                    },
                )?;
            }
        }
        if i % 5 == 0 {
            donors::insert_donation(
                conn,
                &donors::NewDonation {
                    donor_id: d.id,
                    kind: ProcedureKind::WholeBlood,
                    donated_at: now - TimeDelta::days((i % 90) as i64),
                    red_cell_loss_ml: Some(200),
                    red_cells_returned: false,
                    site: None,
                    recorded_by: "bench",
                    created_at: now,
                },
            )?;
        }
    }
    Ok(())
}

/// The `i`-th supplier unit (DIN `B9999` + `i`), collected at `collected_at`, living 24 h:
/// available, irradiated and released; groups and granulocyte counts vary with `i`.
pub fn supplier_unit(i: usize, collected_at: NaiveDateTime, now: NaiveDateTime) -> units::UnitData {
    units::UnitData {
        din: format!("B9999{:02}{:06}", i / 1_000_000, i % 1_000_000),
        product_code: "E9999V00".into(),
        source: UnitSource::External,
        collection_id: None,
        donor_id: None,
        supplier: Some("bench".into()),
        pooled: false,
        abo: Abo::parse(ABO[i % 4]).expect("abo"),
        rhd: Rhd::parse(RHD[(i / 4) % 2]).expect("rhd"),
        cmv: Cmv::parse(CMV[i % 3]).expect("cmv"),
        volume_ml: 250,
        granulocyte_count: 2e10 + (i % 50) as f64 * 1e9,
        red_cell_volume_ml: Some(20.0),
        collected_at,
        expires_at: collected_at + TimeDelta::hours(24),
        status: UnitStatus::Available,
        status_reason: None,
        storage_location: None,
        irradiated_at: Some(collected_at + TimeDelta::minutes(30)),
        irradiation_dose_gy: Some(25.0),
        irradiation_device: None,
        irradiated_by: Some("bench".into()),
        release_kind: Some(ReleaseKind::Tested),
        released_at: Some(collected_at + TimeDelta::minutes(60)),
        released_by: Some("bench".into()),
        emergency_physician: None,
        emergency_acknowledged_at: None,
        discarded_at: None,
        discarded_by: None,
        updated_at: now,
    }
}
