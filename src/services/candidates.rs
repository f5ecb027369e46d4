//! Candidates for a request: the available units ranked for the patient, and the donors to
//! recruit for the next collection. Everything is loaded in a fixed number of queries (no query
//! per unit or donor), then judged by the pure rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLockReadGuard};

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::allocations::{FindingView, findings};
use super::{from_stored_json, stored, utc};
use crate::domain::blood::{Abo, Cmv, Hla, Rhd};
use crate::domain::compatibility::CrossmatchResult;
use crate::domain::compatibility::{self, Context, CrossmatchFacts, PatientFacts, Stage, UnitFacts, Verdict};
use crate::domain::eligibility;
use crate::domain::matching::{self, DonorMatchFacts};
use crate::domain::policy::Policy;
use crate::domain::requests::AllocationStatus;
use crate::domain::stimulation;
use crate::error::ApiResult;
use crate::services::{donors, patients, requests};
use crate::store::matching::{DonorEntry, DonorIndex, DonorIndexSlot};
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
    index: Option<&DonorIndexSlot>,
) -> ApiResult<Candidates> {
    candidates_at(conn, request_id, collection_at, limit, policy, index, utc(store::now()))
}

/// [`candidates`] as judged at `now`. With `index`, donors' inputs come from it, brought up to
/// date first; without, they are read in full (the reference the index is tested against).
pub fn candidates_at(
    conn: &mut DbConn,
    request_id: i64,
    collection_at: Option<DateTime<Utc>>,
    limit: usize,
    policy: &Policy,
    index: Option<&DonorIndexSlot>,
    now: DateTime<Utc>,
) -> ApiResult<Candidates> {
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
    let indexed = match index {
        Some(slot) => refresh(conn, slot, policy, collection_at)?,
        None => None,
    };
    let donor_list = match indexed {
        Some(guard) => {
            let entries = guard.as_ref().map(|ix| &ix.donors);
            judge_donors(
                entries.into_iter().flatten().map(|(id, e)| (*id, e)),
                &patient,
                requirements,
                collection_at,
                now,
                limit,
                policy,
            )
        }
        // No index, or a collection time before it was built: the full reading.
        None => judge_donors(
            donor_entries(conn)?.iter().map(|(id, e)| (*id, e)),
            &patient,
            requirements,
            collection_at,
            now,
            limit,
            policy,
        ),
    };

    Ok(Candidates {
        request_id,
        collection_at,
        units: unit_list,
        donors: donor_list,
    })
}

/// Judges every donor at `collection_at` with the pure rules and keeps the best `limit`.
fn judge_donors<'a>(
    donors: impl Iterator<Item = (i64, &'a DonorEntry)>,
    patient: &PatientFacts,
    requirements: compatibility::Requirements,
    collection_at: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: usize,
    policy: &Policy,
) -> Vec<DonorCandidateView> {
    // A donor is proposed for the programme's usual stimulation: contraindications are checked
    // against its default agents.
    let default_agents = stimulation::agents_to_check(&[], policy);
    let mut judged = Vec::new();
    for (id, d) in donors {
        let eligibility = d.record.eligibility_at(collection_at, None, &default_agents, policy);
        let a = matching::assess_donor(patient, requirements, &d.facts, &eligibility, collection_at, policy);
        let score = matching::donor_score(patient, &d.facts, &a, now);
        judged.push((score, id, d, a));
    }
    judged.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    judged.truncate(limit);
    judged
        .into_iter()
        .map(|(score, id, d, a)| DonorCandidateView {
            donor_id: id,
            donor_number: d.donor_number.clone(),
            abo: d.facts.abo,
            rhd: d.facts.rhd,
            cmv: d.facts.cmv,
            last_stimulated_at: d.facts.last_stimulated_at,
            verdict: a.verdict,
            score,
            reasons: findings(&a),
        })
        .collect()
}

/// The matching inputs of donors as stored, full history, in id order: every active donor, or
/// those of `only` that are active.
fn entries_of(conn: &mut DbConn, only: Option<&[i64]>) -> ApiResult<BTreeMap<i64, DonorEntry>> {
    let rows = match only {
        None => donor_rows::active_for_matching(conn)?,
        Some(ids) => donor_rows::matching_rows_of(conn, ids)?,
    };
    let keys: Vec<donors::DonorKey<'_>> = rows
        .iter()
        .map(|d| donors::DonorKey {
            id: d.id,
            date_of_birth: d.date_of_birth,
            active: d.active,
            contraindications: &d.contraindications,
        })
        .collect();
    let records = donors::records_for(conn, &keys, only.is_none())?;
    let mut out = BTreeMap::new();
    for (d, record) in rows.iter().zip(records) {
        let hla: Hla = if d.hla == EMPTY_HLA {
            Hla::default()
        } else {
            from_stored_json("hla", &d.hla)?
        };
        let last_stimulated_at = record.stimulations.iter().map(|s| s.at).max();
        out.insert(
            d.id,
            DonorEntry {
                donor_number: d.donor_number.clone(),
                facts: DonorMatchFacts {
                    abo: d.abo,
                    rhd: d.rhd,
                    cmv: d.cmv,
                    hla: (!hla.is_empty()).then_some(hla),
                    last_stimulated_at,
                },
                record,
            },
        );
    }
    Ok(out)
}

/// Every active donor's inputs read afresh (the path without the index, and its reference).
fn donor_entries(conn: &mut DbConn) -> ApiResult<BTreeMap<i64, DonorEntry>> {
    entries_of(conn, None)
}

/// Rebuilt from scratch when the cut history is this much older than needed, to drop what
/// time has taken out of every window.
const RETRIM_AFTER: TimeDelta = TimeDelta::days(1);

/// More changed donors than this (a bulk import) are read with everyone else.
const MAX_RELOAD: usize = 2_000;

/// Brings the index up to the database's latest change (read now, after the caller's request
/// began) and returns it read-locked; `None` when it cannot answer for `at` (an instant before
/// it was cut), so the caller reads the full history instead.
fn refresh<'a>(
    conn: &mut DbConn,
    slot: &'a DonorIndexSlot,
    policy: &Policy,
    at: DateTime<Utc>,
) -> ApiResult<Option<RwLockReadGuard<'a, Option<DonorIndex>>>> {
    let lookback = eligibility::lookback(policy);
    {
        let _one_at_a_time = slot.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        let now = utc(store::now());
        let current = slot
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|ix| (ix.seq, ix.lookback, ix.valid_from));
        // The donors changed since the index's seq, or `None` to rebuild it.
        let changed = match current {
            Some((seq, cut_for, valid_from)) if cut_for == lookback && now - valid_from < RETRIM_AFTER => {
                let changed = store::matching::changed_since(conn, seq)?;
                (changed.len() <= MAX_RELOAD).then_some(changed)
            }
            _ => None,
        };
        match changed {
            Some(changed) => {
                if let Some(latest) = changed.iter().map(|(_, s)| *s).max() {
                    let ids: Vec<i64> = changed.iter().map(|(id, _)| *id).collect();
                    let mut fresh = entries_of(conn, Some(&ids))?;
                    let horizon = slot
                        .index
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_ref()
                        .and_then(|ix| ix.horizon);
                    if let Some(h) = horizon {
                        for e in fresh.values_mut() {
                            e.record = e.record.without_before(h);
                        }
                    }
                    let mut guard = slot.index.write().unwrap_or_else(PoisonError::into_inner);
                    if let Some(ix) = guard.as_mut() {
                        for id in ids {
                            match fresh.remove(&id) {
                                Some(e) => ix.donors.insert(id, e),
                                // Inactive or gone: never proposed.
                                None => ix.donors.remove(&id),
                            };
                        }
                        ix.seq = latest;
                    }
                }
            }
            None => {
                // The clock first: a change committed after it is read again next time.
                let seq = store::matching::clock(conn)?;
                let mut donors = donor_entries(conn)?;
                let horizon = lookback.and_then(|l| now.checked_sub_signed(l));
                if let Some(h) = horizon {
                    for e in donors.values_mut() {
                        e.record = e.record.without_before(h);
                    }
                }
                *slot.index.write().unwrap_or_else(PoisonError::into_inner) = Some(DonorIndex {
                    seq,
                    valid_from: now,
                    horizon,
                    lookback,
                    donors,
                });
            }
        }
    }
    let guard = slot.index.read().unwrap_or_else(PoisonError::into_inner);
    let answers = guard.as_ref().is_some_and(|ix| ix.valid_from <= at);
    Ok(answers.then_some(guard))
}
