//! Candidates for a request: the available units ranked for the patient, and the donors to
//! recruit for the next collection. Everything is loaded in a fixed number of queries (no query
//! per unit or donor), then judged by the pure rules.

use std::collections::HashMap;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::allocations::{FindingView, findings};
use super::{from_stored_json, stored, utc};
use crate::domain::blood::{Abo, Cmv, Hla, Rhd};
use crate::domain::compatibility::CrossmatchResult;
use crate::domain::compatibility::{self, Context, CrossmatchFacts, Stage, UnitFacts, Verdict};
use crate::domain::matching::{self, DonorMatchFacts};
use crate::domain::policy::Policy;
use crate::domain::requests::AllocationStatus;
use crate::domain::stimulation;
use crate::error::ApiResult;
use crate::services::{donors, patients, requests};
use crate::store::units::UnitMatchRow;
use crate::store::{
    self, DbConn, allocations as allocation_rows, donors as donor_rows, patients as patient_rows, units as unit_rows,
};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnitCandidateView {
    pub unit_id: i64,
    pub din: String,
    pub abo: Abo,
    pub rhd: Rhd,
    pub expires_at: DateTime<Utc>,
    pub verdict: Verdict,
    pub score: f64,
    pub reasons: Vec<FindingView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DonorCandidateView {
    pub donor_id: i64,
    pub donor_number: String,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub last_stimulated_at: Option<DateTime<Utc>>,
    pub verdict: Verdict,
    pub score: f64,
    pub reasons: Vec<FindingView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Candidates {
    pub request_id: i64,
    /// The collection time donors were judged for.
    pub collection_at: DateTime<Utc>,
    /// Best first.
    pub units: Vec<UnitCandidateView>,
    /// Best first.
    pub donors: Vec<DonorCandidateView>,
}

/// How an untyped donor's HLA is stored (skips parsing it for most donors).
const EMPTY_HLA: &str = r#"{"a":[],"b":[],"c":[],"drb1":[]}"#;

/// The next 08:00 UTC at least 12 hours away: stimulate tonight, collect tomorrow morning.
pub fn default_collection_at(now: DateTime<Utc>) -> DateTime<Utc> {
    let earliest = now + TimeDelta::hours(12);
    let eight = NaiveTime::from_hms_opt(8, 0, 0).unwrap_or(NaiveTime::MIN);
    let same_day = earliest.date_naive().and_time(eight).and_utc();
    if same_day >= earliest {
        same_day
    } else {
        same_day + TimeDelta::days(1)
    }
}

fn unit_facts(
    u: &UnitMatchRow,
    hla: Option<&Hla>,
    excursion_pending: bool,
    reserved_for: Option<i64>,
) -> ApiResult<UnitFacts> {
    Ok(UnitFacts {
        abo: u.abo,
        rhd: u.rhd,
        cmv: u.cmv,
        donor_hla: hla.filter(|h| !h.is_empty()).cloned(),
        irradiated: u.irradiated,
        released: u.released,
        // Only available units are matched, and a reactive result takes a unit out of stock.
        reactive: false,
        excursion_pending,
        reserved_for,
        expires_at: utc(u.expires_at),
        granulocyte_count: u.granulocyte_count,
    })
}

pub fn candidates(
    conn: &mut DbConn,
    request_id: i64,
    collection_at: Option<DateTime<Utc>>,
    limit: usize,
    policy: &Policy,
) -> ApiResult<Candidates> {
    let now = utc(store::now());
    let r = requests::find(conn, request_id, None)?;
    let patient = patients::facts(&patients::get(conn, r.patient_id, None, policy)?);
    let planned = utc(r.needed_by).max(now);
    let requirements = requests::Requirements::of(&r);

    // Units: every available, unexpired unit, with donor typings and crossmatches in bulk.
    let units = unit_rows::available_for_matching(conn, stored(now))?;
    let donor_ids: Vec<i64> = units.iter().filter_map(|u| u.donor_id).collect();
    let mut typings: HashMap<i64, Hla> = HashMap::new();
    for d in donor_rows::find_many(conn, &donor_ids)? {
        typings.insert(d.id, from_stored_json("hla", &d.hla)?);
    }
    let samples = patient_rows::samples_of(conn, r.patient_id)?;
    let sample_ids: Vec<i64> = samples.iter().map(|s| s.id).collect();
    let valid_until: HashMap<i64, DateTime<Utc>> = samples.iter().map(|s| (s.id, utc(s.valid_until))).collect();
    let found = allocation_rows::crossmatches_for_samples(conn, &sample_ids)?;
    let resolved: Vec<i64> = allocation_rows::resolutions_of(conn, &found.iter().map(|x| x.id).collect::<Vec<_>>())?
        .into_iter()
        .map(|r| r.crossmatch_id)
        .collect();
    let mut crossmatched: HashMap<i64, Vec<CrossmatchFacts>> = HashMap::new();
    for x in found {
        crossmatched.entry(x.unit_id).or_default().push(CrossmatchFacts {
            id: x.id,
            kind: x.kind,
            compatible: x.result == CrossmatchResult::Compatible,
            resolved: resolved.contains(&x.id),
            sample_valid_until: valid_until.get(&x.sample_id).copied().unwrap_or(now),
        });
    }
    // Units with an excursion no medical director has dispositioned (released before the rule).
    let unit_ids: Vec<i64> = units.iter().map(|u| u.id).collect();
    let mut covered: HashMap<i64, i64> = HashMap::new();
    for d in unit_rows::dispositions_of_units(conn, &unit_ids)? {
        let through = covered.entry(d.unit_id).or_default();
        *through = (*through).max(d.through_excursion_id);
    }
    let unreviewed: std::collections::HashSet<i64> = unit_rows::excursions_of_units(conn, &unit_ids)?
        .into_iter()
        .filter(|e| covered.get(&e.unit_id).is_none_or(|through| e.id > *through))
        .map(|e| e.unit_id)
        .collect();
    // Units released in an emergency for one request only.
    let mut reserved: HashMap<i64, i64> = HashMap::new();
    for e in unit_rows::emergency_releases_of(conn, &unit_ids)? {
        reserved.insert(e.unit_id, e.request_id);
    }
    // The request's units already due (allocated or issued), for the day's dose.
    let mut day_granulocytes = 0.0;
    for a in allocation_rows::of_request(conn, request_id)? {
        if matches!(a.status, AllocationStatus::Allocated | AllocationStatus::Issued) {
            day_granulocytes += unit_rows::find(conn, a.unit_id)?.map_or(0.0, |u| u.granulocyte_count);
        }
    }
    // Every unit is judged and ranked; only the returned ones are turned into views.
    let mut judged = Vec::with_capacity(units.len());
    for u in &units {
        let facts = unit_facts(
            u,
            u.donor_id.and_then(|d| typings.get(&d)),
            unreviewed.contains(&u.id),
            reserved.get(&u.id).copied(),
        )?;
        let ctx = Context {
            crossmatches: crossmatched.get(&u.id).map(Vec::as_slice).unwrap_or_default(),
            request_id: Some(request_id),
            day_granulocytes,
            requirements,
            planned_at: planned,
            now,
            stage: Stage::Allocation,
        };
        let a = compatibility::assess(&patient, &facts, &ctx, policy);
        let score = compatibility::unit_score(&patient, &facts, &a, now, policy);
        judged.push((score, u, facts, a));
    }
    judged.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.id.cmp(&y.1.id)));
    judged.truncate(limit);
    let unit_list = judged
        .into_iter()
        .map(|(score, u, facts, a)| UnitCandidateView {
            unit_id: u.id,
            din: u.din.clone(),
            abo: facts.abo,
            rhd: facts.rhd,
            expires_at: facts.expires_at,
            verdict: a.verdict,
            score,
            reasons: findings(&a),
        })
        .collect();

    // Donors: every active donor, judged at the collection time.
    let collection_at = collection_at.unwrap_or_else(|| default_collection_at(now));
    let all = donor_rows::active_for_matching(conn)?;
    let keys: Vec<donors::DonorKey<'_>> = all
        .iter()
        .map(|d| donors::DonorKey {
            id: d.id,
            date_of_birth: d.date_of_birth,
            active: d.active,
            contraindications: &d.contraindications,
        })
        .collect();
    let records = donors::records_for(conn, &keys, true)?;
    let last_stimulated: HashMap<i64, DateTime<Utc>> = donor_rows::last_stimulation_of_active(conn)?
        .into_iter()
        .filter_map(|(id, t)| t.map(|t| (id, utc(t))))
        .collect();
    // A donor is proposed for the programme's usual stimulation: contraindications are checked
    // against its default agents.
    let default_agents = stimulation::agents_to_check(&[], policy);
    let mut judged = Vec::with_capacity(all.len());
    for (d, record) in all.iter().zip(records) {
        let hla: Hla = if d.hla == EMPTY_HLA {
            Hla::default()
        } else {
            from_stored_json("hla", &d.hla)?
        };
        let facts = DonorMatchFacts {
            abo: d.abo,
            rhd: d.rhd,
            cmv: d.cmv,
            hla: (!hla.is_empty()).then_some(hla),
            last_stimulated_at: last_stimulated.get(&d.id).copied(),
        };
        let eligibility = record.eligibility_at(collection_at, None, &default_agents, policy);
        let a = matching::assess_donor(&patient, requirements, &facts, &eligibility, collection_at, policy);
        let score = matching::donor_score(&patient, &facts, &a, now);
        judged.push((score, d, facts, a));
    }
    judged.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.id.cmp(&y.1.id)));
    judged.truncate(limit);
    let donor_list = judged
        .into_iter()
        .map(|(score, d, facts, a)| DonorCandidateView {
            donor_id: d.id,
            donor_number: d.donor_number.clone(),
            abo: facts.abo,
            rhd: facts.rhd,
            cmv: facts.cmv,
            last_stimulated_at: facts.last_stimulated_at,
            verdict: a.verdict,
            score,
            reasons: findings(&a),
        })
        .collect();

    Ok(Candidates {
        request_id,
        collection_at,
        units: unit_list,
        donors: donor_list,
    })
}
