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
use crate::domain::compatibility::{
    self, Assessment, Context, CrossmatchFacts, PatientFacts, Stage, UnitFacts, Verdict,
};
use crate::domain::eligibility;
use crate::domain::matching::{self, DonorMatchFacts};
use crate::domain::policy::Policy;
use crate::domain::requests as request_rules;
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

    // Units: every available, unexpired unit, with donor typings, crossmatches, excursions and
    // emergency releases in bulk, from one snapshot (each read selects by the same filter).
    let samples = patient_rows::samples_of(conn, r.patient_id)?;
    let sample_ids: Vec<i64> = samples.iter().map(|s| s.id).collect();
    let valid_until: HashMap<i64, DateTime<Utc>> = samples.iter().map(|s| (s.id, utc(s.valid_until))).collect();
    let at = stored(now);
    let (units, donor_hla, found, excursions, dispositions, emergency) = store::snapshot_tx(conn, |c| {
        let units = unit_rows::available_for_matching(c, at)?;
        let donor_hla = unit_rows::donor_hla_of_available(c, at, EMPTY_HLA)?;
        let found = allocation_rows::crossmatches_for_samples(c, &sample_ids)?;
        let excursions = unit_rows::excursions_of_available(c, at)?;
        let dispositions = unit_rows::dispositions_of_available(c, at)?;
        let emergency = unit_rows::emergency_releases_of_available(c, at)?;
        Ok::<_, diesel::result::Error>((units, donor_hla, found, excursions, dispositions, emergency))
    })?;
    let mut typings: HashMap<i64, Hla> = HashMap::new();
    for (id, hla) in donor_hla {
        typings.insert(id, from_stored_json("hla", &hla)?);
    }
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
    let mut covered: HashMap<i64, i64> = HashMap::new();
    for d in dispositions {
        let through = covered.entry(d.unit_id).or_default();
        *through = (*through).max(d.through_excursion_id);
    }
    let unreviewed: std::collections::HashSet<i64> = excursions
        .into_iter()
        .filter(|e| covered.get(&e.unit_id).is_none_or(|through| e.id > *through))
        .map(|e| e.unit_id)
        .collect();
    // Units released in an emergency for one request only.
    let mut reserved: HashMap<i64, i64> = HashMap::new();
    for e in emergency {
        reserved.insert(e.unit_id, e.request_id);
    }
    // The request's units already due (allocated or issued), for the day's dose.
    let mut day_granulocytes = 0.0;
    for (_, status, granulocytes) in allocation_rows::units_of_request(conn, request_id)? {
        if request_rules::is_active(status) {
            day_granulocytes += granulocytes;
        }
    }
    // Every unit is judged and ranked; only the returned ones are turned into views.
    let mut judged = Best::new(limit);
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
        judged.push(score, u.id, (u, facts, a));
    }
    let unit_list = judged
        .into_sorted()
        .into_iter()
        .map(|(score, _, (u, facts, a))| UnitCandidateView {
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

/// The best `limit` of what is judged, best first: higher score, then lower id. Holds at most
/// about twice `limit` assessments at a time, however many are judged.
struct Best<T> {
    limit: usize,
    items: Vec<(f64, i64, T)>,
}

impl<T> Best<T> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            items: Vec::new(),
        }
    }

    fn order(x: &(f64, i64, T), y: &(f64, i64, T)) -> std::cmp::Ordering {
        y.0.total_cmp(&x.0).then(x.1.cmp(&y.1))
    }

    fn push(&mut self, score: f64, id: i64, item: T) {
        self.items.push((score, id, item));
        if self.items.len() >= (2 * self.limit).max(64) {
            self.items.select_nth_unstable_by(self.limit, Self::order);
            self.items.truncate(self.limit);
        }
    }

    fn into_sorted(mut self) -> Vec<(f64, i64, T)> {
        self.items.sort_by(Self::order);
        self.items.truncate(self.limit);
        self.items
    }
}

/// Judges every donor at `collection_at` with the pure rules and keeps the best `limit`.
///
/// A donor whose future unit has a block is incompatible and scores 0 whatever the history
/// says, so the history is judged only for the others; the blocked ones are judged in full
/// only when fewer than `limit` donors score above 0 (otherwise none of them can be listed).
/// Untyped donors of one ABO/RhD/CMV have the same future unit, judged once per call.
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
    let mut by_group: HashMap<(Abo, Rhd, Cmv), Assessment> = HashMap::new();
    let mut future_unit = |d: &DonorEntry| -> Assessment {
        let f = &d.facts;
        let judge = || matching::assess_future_unit(patient, requirements, f, collection_at, policy);
        match f.hla {
            None => by_group.entry((f.abo, f.rhd, f.cmv)).or_insert_with(judge).clone(),
            Some(_) => judge(),
        }
    };
    let judge = |d: &DonorEntry, unit: Assessment| {
        let eligibility = d.record.eligibility_at(collection_at, None, &default_agents, policy);
        let a = matching::with_eligibility(&eligibility, unit);
        (matching::donor_score(patient, &d.facts, &a, now), a)
    };
    let mut best = Best::new(limit);
    let mut blocked = Vec::new();
    let mut scored = 0usize;
    for (id, d) in donors {
        let unit = future_unit(d);
        if matching::blocks(&unit) {
            blocked.push((id, d));
            continue;
        }
        let (score, a) = judge(d, unit);
        if score > 0.0 {
            scored += 1;
        }
        best.push(score, id, (d, a));
    }
    if scored < limit {
        for (id, d) in blocked {
            let unit = future_unit(d);
            let (score, a) = judge(d, unit);
            best.push(score, id, (d, a));
        }
    }
    best.into_sorted()
        .into_iter()
        .map(|(score, id, (d, a))| DonorCandidateView {
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
pub(crate) fn donor_entries(conn: &mut DbConn) -> ApiResult<BTreeMap<i64, DonorEntry>> {
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
pub(crate) fn refresh<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::blood::Sex;
    use crate::domain::eligibility::{Deferral, DonorFacts};
    use crate::domain::group::Typed;
    use crate::domain::scheduling::DonorRecord;
    use chrono::{NaiveDate, TimeZone};
    use proptest::prelude::*;

    const ABO: [Abo; 4] = [Abo::O, Abo::A, Abo::B, Abo::Ab];
    const RHD: [Rhd; 2] = [Rhd::Positive, Rhd::Negative];
    const CMV: [Cmv; 2] = [Cmv::Positive, Cmv::Negative];

    fn entry(abo: usize, rhd: usize, cmv: usize, typed: Option<usize>, deferred_days: Option<i64>) -> DonorEntry {
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).single().expect("time");
        let alleles = [["A*02:01", "A*01:01"], ["A*03:01", "A*24:02"]];
        DonorEntry {
            donor_number: format!("D{abo}{rhd}{cmv}"),
            facts: DonorMatchFacts {
                abo: ABO[abo],
                rhd: RHD[rhd],
                cmv: CMV[cmv],
                hla: typed.map(|k| Hla {
                    a: alleles[k].map(str::to_owned).to_vec(),
                    ..Hla::default()
                }),
                last_stimulated_at: deferred_days.map(|d| at - TimeDelta::days(d.abs() + 1)),
            },
            record: DonorRecord {
                facts: DonorFacts {
                    date_of_birth: NaiveDate::from_ymd_opt(1980, 5, 5).expect("date"),
                    active: true,
                    flagged_contraindications: vec![],
                },
                deferrals: deferred_days
                    .map(|d| Deferral {
                        reason: "travel".into(),
                        permanent: false,
                        starts_at: at - TimeDelta::days(30),
                        until: Some(at + TimeDelta::days(d)),
                    })
                    .into_iter()
                    .collect(),
                donations: vec![],
                bookings: vec![],
                stimulations: vec![],
            },
        }
    }

    /// A listed donor: id, score, verdict, and each finding's code and message.
    type Listed = (i64, f64, Verdict, Vec<(String, String)>);

    /// Every donor judged in full, sorted, cut: what `judge_donors` must give.
    fn every_donor_judged(
        donors: &[(i64, DonorEntry)],
        patient: &PatientFacts,
        requirements: compatibility::Requirements,
        at: DateTime<Utc>,
        limit: usize,
        policy: &Policy,
    ) -> Vec<Listed> {
        let agents = stimulation::agents_to_check(&[], policy);
        let mut all: Vec<_> = donors
            .iter()
            .map(|(id, d)| {
                let e = d.record.eligibility_at(at, None, &agents, policy);
                let a = matching::assess_donor(patient, requirements, &d.facts, &e, at, policy);
                let codes = a
                    .reasons
                    .iter()
                    .map(|f| (f.code.to_owned(), f.message.clone()))
                    .collect();
                (*id, matching::donor_score(patient, &d.facts, &a, at), a.verdict, codes)
            })
            .collect();
        all.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        all.truncate(limit);
        all
    }

    proptest! {
        /// Judging only the donors whose future unit has no block (and the others only when
        /// needed), with untyped donors' units judged once per group, lists exactly what
        /// judging everyone does.
        #[test]
        fn the_pruned_judgement_lists_what_judging_everyone_lists(
            donors in prop::collection::vec((0usize..4, 0usize..2, 0usize..2, prop::option::of(0usize..2), prop::option::of(-5i64..5)), 0..80),
            patient_abo in 0usize..4,
            confirmed in any::<bool>(),
            patient_rhd in 0usize..2,
            patient_cmv in 0usize..2,
            antibodies in any::<bool>(),
            cmv_negative in any::<bool>(),
            hla_compatible in any::<bool>(),
            limit in 0usize..40,
        ) {
            let policy = Policy::default();
            let at = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).single().expect("time");
            let patient = PatientFacts {
                abo: if confirmed { Typed::Confirmed(ABO[patient_abo]) } else { Typed::Unconfirmed(ABO[patient_abo]) },
                rhd: Typed::Confirmed(RHD[patient_rhd]),
                sex: Sex::Female,
                childbearing_potential: true,
                cmv: CMV[patient_cmv],
                weight_kg: 60.0,
                hla_antibodies: if antibodies { vec!["A2".into()] } else { vec![] },
                granulocyte_antibodies: false,
            };
            let requirements = compatibility::Requirements { cmv_negative, hla_compatible };
            let entries: Vec<(i64, DonorEntry)> = donors
                .iter()
                .enumerate()
                .map(|(i, (abo, rhd, cmv, typed, deferred))| (i as i64 + 1, entry(*abo, *rhd, *cmv, *typed, *deferred)))
                .collect();
            let listed: Vec<_> = judge_donors(entries.iter().map(|(id, e)| (*id, e)), &patient, requirements, at, at, limit, &policy)
                .into_iter()
                .map(|v| (v.donor_id, v.score, v.verdict, v.reasons.iter().map(|r| (r.code.clone(), r.message.clone())).collect::<Vec<_>>()))
                .collect();
            prop_assert_eq!(listed, every_donor_judged(&entries, &patient, requirements, at, limit, &policy));
        }
    }
}
