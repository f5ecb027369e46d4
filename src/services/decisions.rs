//! What staff accept when they allocate or issue a unit over findings (domain.md, "Every
//! finding has a tier"): the codes a staff member acknowledges, who authorised the unit (usually
//! the on-call haematologist by phone), and a medical director's later sign-off. A night shift
//! never needs a director's personal login: any staff member records the authorisation; the
//! exceptions report lists it until a medical director signs it off.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{from_stored_json, is_past, stored, to_json, utc};
use crate::domain::compatibility::{self, Finding, Severity, Stage};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::input::Text;
use crate::store::allocations::{self as rows, Decision, NewDecision};
use crate::store::audit::Actor;
use crate::store::{self, DbConn};

/// A finding as the API shows it and as it is stored with an allocation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FindingView {
    pub code: String,
    #[serde(deserialize_with = "tier_or_legacy")]
    pub severity: Severity,
    pub message: String,
}

/// Stored findings of earlier releases carry `warn`: warnings a medical director overrode in
/// person, which is an authorisation.
fn tier_or_legacy<'de, D: Deserializer<'de>>(de: D) -> Result<Severity, D::Error> {
    let text = String::deserialize(de)?;
    match text.as_str() {
        "warn" => Ok(Severity::Authorise),
        other => {
            Severity::parse(other).ok_or_else(|| serde::de::Error::custom(format!("{other:?} is not a finding tier")))
        }
    }
}

pub fn finding_view(f: &Finding) -> FindingView {
    FindingView {
        code: f.code.to_owned(),
        severity: f.severity,
        message: f.message.clone(),
    }
}

/// Who authorised a unit over findings of the `authorise` tier, as the staff member records it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"by": "Dr A. Okafor", "role": "on-call haematologist", "at": "2026-11-29T03:10:00Z", "reason": "no CMV-negative unit in time; benefit outweighs risk"}))]
pub struct AuthorisationInput {
    /// Name of the person who authorised, 1–200 characters.
    pub by: Text<1, 200>,
    /// Their role (e.g. "on-call haematologist"), 1–100 characters.
    pub role: Text<1, 100>,
    /// When they authorised it: not in the future, at most a day ago.
    pub at: DateTime<Utc>,
    /// Why, 1–500 characters.
    pub reason: Text<1, 500>,
}

/// An authorisation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorisation {
    pub by: String,
    pub role: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// How long before it is recorded an authorisation by phone may have been given. A sanity bound
/// on input, not a clinical threshold.
const AUTHORISATION_AGE: TimeDelta = TimeDelta::hours(24);
const MAX_ACKNOWLEDGED: usize = 50;

fn is_code(text: &str) -> bool {
    let mut bytes = text.bytes();
    (2..=50).contains(&text.len())
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks what the caller sent: the acknowledged codes and the authorisation.
pub fn clean(
    acknowledge: Option<Vec<String>>,
    authorisation: Option<AuthorisationInput>,
    now: DateTime<Utc>,
) -> ApiResult<(BTreeSet<String>, Option<Authorisation>)> {
    let mut v = Validator::new();
    let acknowledge = acknowledge.unwrap_or_default();
    v.check(
        acknowledge.len() <= MAX_ACKNOWLEDGED,
        "acknowledge",
        format!("at most {MAX_ACKNOWLEDGED} codes"),
    );
    let mut codes = BTreeSet::new();
    for (i, code) in acknowledge.iter().enumerate() {
        let code = code.trim();
        if is_code(code) {
            codes.insert(code.to_owned());
        } else {
            v.push(
                &format!("acknowledge[{i}]"),
                "must be a finding code such as rhd_mismatch",
            );
        }
    }
    let authorisation = authorisation.map(|a| {
        let (by, role, reason) = (a.by.into_inner(), a.role.into_inner(), a.reason.into_inner());
        v.check(
            is_past(a.at, now) && a.at >= now - AUTHORISATION_AGE,
            "authorisation.at",
            "must be within the last 24 hours and not in the future",
        );
        Authorisation {
            by,
            role,
            at: utc(stored(a.at)),
            reason,
        }
    });
    v.finish()?;
    Ok((codes, authorisation))
}

/// Refuses unless every finding's tier is met: 422 `authorisation_required` or
/// `acknowledgement_required` listing every finding still to handle.
pub fn check<'a>(
    findings: impl IntoIterator<Item = &'a Finding>,
    acknowledged: &BTreeSet<String>,
    authorisation: Option<&Authorisation>,
    what: &str,
) -> ApiResult<()> {
    match compatibility::tiers_met(findings, acknowledged, authorisation.is_some()) {
        Ok(()) => Ok(()),
        Err((tier, missing)) => {
            let reasons = missing
                .iter()
                .map(|f| Reason {
                    code: f.code.to_owned(),
                    message: format!("{} ({})", f.message, f.severity),
                })
                .collect();
            let (code, detail) = if tier == Severity::Authorise {
                (
                    ErrorCode::AuthorisationRequired,
                    format!(
                        "{what}: record who authorised it in `authorisation` (and acknowledge the codes of the acknowledge tier)"
                    ),
                )
            } else {
                (
                    ErrorCode::AcknowledgementRequired,
                    format!("{what}: list the codes you acknowledge in `acknowledge`"),
                )
            };
            Err(ApiError::refused(code, detail, reasons))
        }
    }
}

/// Records what was accepted at `stage` (only when there is anything to accept). Only the codes
/// of acknowledge-tier findings are kept as acknowledged, and the authorisation only when a
/// finding needed one.
#[expect(clippy::too_many_arguments)]
pub fn record(
    conn: &mut DbConn,
    allocation_id: i64,
    stage: Stage,
    findings: &[&Finding],
    acknowledged: &BTreeSet<String>,
    authorisation: Option<&Authorisation>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> ApiResult<Option<Decision>> {
    if findings.is_empty() {
        return Ok(None);
    }
    let views: Vec<FindingView> = findings.iter().map(|f| finding_view(f)).collect();
    let acks: Vec<&str> = findings
        .iter()
        .filter(|f| f.severity == Severity::Acknowledge && acknowledged.contains(f.code))
        .map(|f| f.code)
        .collect();
    let needed = findings.iter().any(|f| f.severity == Severity::Authorise);
    let auth = authorisation.filter(|_| needed);
    let row = rows::insert_decision(
        conn,
        &NewDecision {
            allocation_id,
            stage,
            findings: &to_json(&views)?,
            acknowledged: &to_json(&acks)?,
            authorised_by: auth.map(|a| a.by.as_str()),
            authoriser_role: auth.map(|a| a.role.as_str()),
            authorised_at: auth.map(|a| stored(a.at)),
            authorisation_reason: auth.map(|a| a.reason.as_str()),
            recorded_by: &actor.name,
            recorded_at: stored(now),
        },
    )?;
    Ok(Some(row))
}

/// The strictest tier at which each code has been accepted so far.
pub fn accepted_tiers(decisions: &[Decision]) -> ApiResult<BTreeMap<String, u8>> {
    let mut out: BTreeMap<String, u8> = BTreeMap::new();
    for d in decisions {
        let found: Vec<FindingView> = from_stored_json("decision findings", &d.findings)?;
        for f in found {
            let rank = out.entry(f.code).or_default();
            *rank = (*rank).max(f.severity.rank());
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AcknowledgementView {
    pub stage: Stage,
    pub codes: Vec<String>,
    /// The staff member who acknowledged.
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthorisationView {
    pub stage: Stage,
    /// The authorise-tier findings it covered.
    pub codes: Vec<String>,
    pub by: String,
    pub role: String,
    pub at: DateTime<Utc>,
    pub reason: String,
    /// The staff member who recorded it.
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    /// Covered by a medical director's sign-off.
    pub signed_off: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignOffView {
    pub comment: String,
    pub signed_off_by: String,
    pub signed_off_at: DateTime<Utc>,
}

/// Everything accepted on one allocation.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Acceptances {
    /// Every finding accepted, at allocation or since at issue (the latest reading of each
    /// code), derived from the decisions; the view shows it as `warnings`.
    #[serde(skip)]
    pub findings: Vec<FindingView>,
    pub acknowledgements: Vec<AcknowledgementView>,
    pub authorisations: Vec<AuthorisationView>,
    pub sign_offs: Vec<SignOffView>,
    /// An authorisation waits for a medical director's sign-off.
    pub awaiting_sign_off: bool,
}

/// The acceptances of several allocations in two queries.
pub fn of_allocations(conn: &mut DbConn, ids: &[i64]) -> ApiResult<HashMap<i64, Acceptances>> {
    let mut signed_through: HashMap<i64, i64> = HashMap::new();
    let mut out: HashMap<i64, Acceptances> = HashMap::new();
    for s in rows::sign_offs_of(conn, ids)? {
        let through = signed_through.entry(s.allocation_id).or_default();
        *through = (*through).max(s.through_decision_id);
        out.entry(s.allocation_id).or_default().sign_offs.push(SignOffView {
            comment: s.comment,
            signed_off_by: s.signed_off_by,
            signed_off_at: utc(s.signed_off_at),
        });
    }
    for d in rows::decisions_of(conn, ids)? {
        let stage = d.stage;
        let entry = out.entry(d.allocation_id).or_default();
        let found: Vec<FindingView> = from_stored_json("decision findings", &d.findings)?;
        for f in &found {
            match entry.findings.iter_mut().find(|e| e.code == f.code) {
                Some(e) => *e = f.clone(),
                None => entry.findings.push(f.clone()),
            }
        }
        let acknowledged: Vec<String> = from_stored_json("acknowledged", &d.acknowledged)?;
        if !acknowledged.is_empty() {
            entry.acknowledgements.push(AcknowledgementView {
                stage,
                codes: acknowledged,
                by: d.recorded_by.clone(),
                at: utc(d.recorded_at),
            });
        }
        if let (Some(by), Some(reason)) = (d.authorised_by, d.authorisation_reason) {
            let findings = found;
            let signed_off = signed_through.get(&d.allocation_id).is_some_and(|t| *t >= d.id);
            entry.awaiting_sign_off |= !signed_off;
            entry.authorisations.push(AuthorisationView {
                stage,
                codes: findings
                    .into_iter()
                    .filter(|f| f.severity == Severity::Authorise)
                    .map(|f| f.code)
                    .collect(),
                by,
                role: d.authoriser_role.unwrap_or_default(),
                at: d.authorised_at.map(utc).unwrap_or_else(|| utc(d.recorded_at)),
                reason,
                recorded_by: d.recorded_by,
                recorded_at: utc(d.recorded_at),
                signed_off,
            });
        }
    }
    Ok(out)
}

/// A medical director signs off every authorisation of the allocation so far; 409
/// `nothing_to_sign_off` when none waits.
pub fn sign_off(conn: &mut DbConn, actor: &Actor, allocation_id: i64, comment: &str) -> ApiResult<()> {
    let signed: i64 = rows::sign_offs_of(conn, &[allocation_id])?
        .iter()
        .map(|s| s.through_decision_id)
        .max()
        .unwrap_or(0);
    let Some(through) = rows::decisions_of(conn, &[allocation_id])?
        .iter()
        .filter(|d| d.authorised_by.is_some())
        .map(|d| d.id)
        .max()
        .filter(|last| *last > signed)
    else {
        return Err(ApiError::new(
            ErrorCode::NothingToSignOff,
            format!("allocation {allocation_id} has no authorisation waiting for a sign-off"),
        ));
    };
    rows::insert_sign_off(conn, allocation_id, through, comment, &actor.name, store::now())?;
    Ok(())
}
