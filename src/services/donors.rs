//! Donors: registration, changes, deferrals, and the donor record the eligibility rules read
//! (donations from other programmes are recorded in `donations`).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{PartialSchema as _, ToSchema};

use super::{from_stored_json, stored, to_json, to_value, utc};
use crate::domain::agents::same_agent;
use crate::domain::blood::{Abo, Cmv, DonorType, Hla, Rhd, Sex};
use crate::domain::eligibility::{
    ContraindicationFlag, Deferral, DonorFacts, Eligibility, GivenStimulation, PastProcedure, collection_red_cell_loss,
};
use crate::domain::policy::Policy;
use crate::domain::scheduling::{Booking, DonorRecord};
use crate::error::{ApiError, ApiResult, Validator};
use crate::input::Text;
use crate::store::audit::{self, Actor, Change};
use crate::store::collections::{self as collection_rows, Collection};
use crate::store::donors::{self as rows, DeferralRow, DonationRow, Donor, DonorData, DonorFilter};
use crate::store::{self, DbConn};

/// A donor as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DonorView {
    pub id: i64,
    /// Assigned by the server: `GD` and six or more digits.
    pub donor_number: String,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub given_name: String,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    #[schema(minimum = 30, maximum = 250)]
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub hla: Hla,
    pub donor_type: DonorType,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Policy checklist items the donor is flagged on (ineligible for that agent).
    pub contraindications: Vec<ContraindicationFlag>,
    pub active: bool,
    /// Stimulations received, per agent (cumulative exposure).
    pub stimulation_exposure: Vec<Exposure>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Exposure {
    pub agent: String,
    pub count: i64,
    pub last_administered_at: Option<DateTime<Utc>>,
}

/// The fields a client sets when registering a donor.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"given_name": "Ana", "family_name": "Silva", "date_of_birth": "1988-04-12", "sex": "female", "weight_kg": 68.0, "abo": "O", "rhd": "positive", "cmv": "negative", "hla": {"a": ["A*02:01", "A*01"], "b": ["B*07"], "c": [], "drb1": ["DRB1*15:01"]}, "donor_type": "community", "phone": "+44 20 7946 0000"}))]
pub struct DonorInput {
    #[schema(schema_with = Name::schema)]
    pub given_name: String,
    #[schema(schema_with = Name::schema)]
    pub family_name: String,
    /// `YYYY-MM-DD`.
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    /// 30–250 kg.
    #[schema(minimum = 30, maximum = 250)]
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    /// Alleles such as `A*02` or `A*02:01`, at most two per locus.
    #[serde(default)]
    pub hla: Hla,
    pub donor_type: DonorType,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Items of the policy's contraindication checklist this donor is flagged on.
    #[serde(default)]
    pub contraindications: Vec<ContraindicationFlag>,
}

/// A partial change; absent fields stay, `null` clears `phone` / `email`;
/// `{"active": false}` deactivates (donors are never deleted).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"weight_kg": 70.5, "phone": null}))]
pub struct DonorPatch {
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub given_name: Option<String>,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub family_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub sex: Option<Sex>,
    #[schema(minimum = 30, maximum = 250)]
    pub weight_kg: Option<f64>,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub cmv: Option<Cmv>,
    pub hla: Option<Hla>,
    pub donor_type: Option<DonorType>,
    #[serde(default, deserialize_with = "crate::input::double_option")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::input::double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    pub contraindications: Option<Vec<ContraindicationFlag>>,
    pub active: Option<bool>,
}

impl DonorPatch {
    fn apply(self, mut d: DonorInput) -> DonorInput {
        macro_rules! take {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { d.$f = v; })* };
        }
        take!(
            given_name,
            family_name,
            date_of_birth,
            sex,
            weight_kg,
            abo,
            rhd,
            cmv,
            hla,
            donor_type,
            phone,
            email,
            contraindications
        );
        d
    }
}

// Plausibility bounds of a record (not eligibility rules: those are in the policy).
const MAX_AGE_YEARS: i32 = 120;
const WEIGHT_KG: (f64, f64) = (30.0, 250.0);
type Name = Text<1, 100>;

fn clean_phone(v: &mut Validator, raw: Option<String>) -> Option<String> {
    let phone = raw.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty())?;
    let ok = (3..=32).contains(&phone.chars().count())
        && phone.chars().any(|c| c.is_ascii_digit())
        && phone.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
    v.check(
        ok,
        "phone",
        "must be 3 to 32 characters of digits, spaces and + - ( ) .",
    );
    Some(phone)
}

fn clean_email(v: &mut Validator, raw: Option<String>) -> Option<String> {
    let email = raw.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty())?;
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.contains('@'));
    v.check(ok, "email", "must be an e-mail address");
    Some(email)
}

/// Checks and normalises every field; all problems are reported at once.
/// Flags are checked against the policy checklist only when `check_flags` (they were sent):
/// a flag stored before the checklist changed must not block an unrelated change.
fn validate(input: DonorInput, today: NaiveDate, policy: &Policy, check_flags: bool) -> ApiResult<DonorInput> {
    let mut v = Validator::new();
    // Names stay `String` here: `DonorInput` is also the record a change is merged into.
    let given_name = Name::check(&mut v, "given_name", &input.given_name);
    let family_name = Name::check(&mut v, "family_name", &input.family_name);
    let oldest = NaiveDate::from_ymd_opt(today.year() - MAX_AGE_YEARS, 1, 1).unwrap_or(NaiveDate::MIN);
    v.check(
        input.date_of_birth <= today && input.date_of_birth >= oldest,
        "date_of_birth",
        format!("must be a past date within the last {MAX_AGE_YEARS} years"),
    );
    v.check(
        input.weight_kg.is_finite() && (WEIGHT_KG.0..=WEIGHT_KG.1).contains(&input.weight_kg),
        "weight_kg",
        format!("must be between {} and {} kg", WEIGHT_KG.0, WEIGHT_KG.1),
    );
    let hla = input.hla.normalized().unwrap_or_else(|errors| {
        for e in errors {
            v.push(&e.field, e.message);
        }
        Hla::default()
    });
    let mut flags: Vec<ContraindicationFlag> = Vec::new();
    if !check_flags {
        flags.clone_from(&input.contraindications);
    }
    for (i, flag) in input.contraindications.iter().enumerate().filter(|_| check_flags) {
        match policy
            .donor
            .contraindications
            .iter()
            .find(|c| same_agent(&c.agent, &flag.agent) && c.item.trim().eq_ignore_ascii_case(flag.item.trim()))
        {
            // Stored with the checklist's spelling.
            Some(c) if !flags.iter().any(|f| f.agent == c.agent && f.item == c.item) => {
                flags.push(ContraindicationFlag {
                    agent: c.agent.clone(),
                    item: c.item.clone(),
                })
            }
            Some(_) => {}
            None => v.push(
                &format!("contraindications[{i}]"),
                "is not an item of the policy's contraindication checklist",
            ),
        }
    }
    let phone = clean_phone(&mut v, input.phone);
    let email = clean_email(&mut v, input.email);
    v.finish()?;
    Ok(DonorInput {
        given_name,
        family_name,
        hla,
        contraindications: flags,
        phone,
        email,
        ..input
    })
}

fn search_text(given: &str, family: &str, number: &str) -> String {
    format!("{given} {family} {number}").to_lowercase()
}

fn data(input: &DonorInput, active: bool, number: &str) -> ApiResult<DonorData> {
    Ok(DonorData {
        given_name: input.given_name.clone(),
        family_name: input.family_name.clone(),
        date_of_birth: input.date_of_birth,
        sex: input.sex,
        weight_kg: input.weight_kg,
        abo: input.abo,
        rhd: input.rhd,
        cmv: input.cmv,
        hla: to_json(&input.hla)?,
        donor_type: input.donor_type,
        phone: input.phone.clone(),
        email: input.email.clone(),
        contraindications: to_json(&input.contraindications)?,
        active,
        search_text: search_text(&input.given_name, &input.family_name, number),
        updated_at: store::now(),
    })
}

fn input_of(d: &Donor) -> ApiResult<DonorInput> {
    Ok(DonorInput {
        given_name: d.given_name.clone(),
        family_name: d.family_name.clone(),
        date_of_birth: d.date_of_birth,
        sex: d.sex,
        weight_kg: d.weight_kg,
        abo: d.abo,
        rhd: d.rhd,
        cmv: d.cmv,
        hla: from_stored_json("hla", &d.hla)?,
        donor_type: d.donor_type,
        phone: d.phone.clone(),
        email: d.email.clone(),
        contraindications: from_stored_json("contraindications", &d.contraindications)?,
    })
}

fn view(d: Donor, exposure: Vec<Exposure>) -> ApiResult<DonorView> {
    let i = input_of(&d)?;
    Ok(DonorView {
        id: d.id,
        donor_number: d.donor_number,
        given_name: i.given_name,
        family_name: i.family_name,
        date_of_birth: i.date_of_birth,
        sex: i.sex,
        weight_kg: i.weight_kg,
        abo: i.abo,
        rhd: i.rhd,
        cmv: i.cmv,
        hla: i.hla,
        donor_type: i.donor_type,
        phone: i.phone,
        email: i.email,
        contraindications: i.contraindications,
        active: d.active,
        stimulation_exposure: exposure,
        created_at: utc(d.created_at),
        updated_at: utc(d.updated_at),
    })
}

fn views(conn: &mut DbConn, donors: Vec<Donor>) -> ApiResult<Vec<DonorView>> {
    let ids: Vec<i64> = donors.iter().map(|d| d.id).collect();
    let mut exposure: HashMap<i64, Vec<Exposure>> = HashMap::new();
    for row in rows::exposure_of(conn, &ids)? {
        exposure.entry(row.donor_id).or_default().push(Exposure {
            agent: row.agent,
            count: row.count,
            last_administered_at: row.last_administered_at.map(utc),
        });
    }
    donors
        .into_iter()
        .map(|d| {
            let e = exposure.remove(&d.id).unwrap_or_default();
            view(d, e)
        })
        .collect()
}

/// Audit snapshot: the donor's own fields (not derived exposure).
fn snapshot(d: &DonorView) -> ApiResult<serde_json::Value> {
    let mut value = to_value(d)?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("stimulation_exposure");
    }
    Ok(value)
}

pub fn find(conn: &mut DbConn, id: i64) -> ApiResult<Donor> {
    rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("donor"))
}

pub fn get(conn: &mut DbConn, id: i64) -> ApiResult<DonorView> {
    let donor = find(conn, id)?;
    let mut v = views(conn, vec![donor])?;
    v.pop().ok_or_else(|| ApiError::not_found("donor"))
}

pub fn register(conn: &mut DbConn, actor: &Actor, input: DonorInput, policy: &Policy) -> ApiResult<DonorView> {
    let now = utc(store::now());
    let input = validate(input, now.date_naive(), policy, true)?;
    let row = rows::insert(conn, &data(&input, true, "")?, stored(now))?;
    let created = view(row, Vec::new())?;
    audit::append(
        conn,
        actor,
        Change::created("donor.register", "donor", created.id, snapshot(&created)?),
    )?;
    Ok(created)
}

pub fn update(conn: &mut DbConn, actor: &Actor, id: i64, patch: DonorPatch, policy: &Policy) -> ApiResult<DonorView> {
    let before_row = find(conn, id)?;
    let active = patch.active.unwrap_or(before_row.active);
    let today = utc(store::now()).date_naive();
    let check_flags = patch.contraindications.is_some();
    let input = validate(patch.apply(input_of(&before_row)?), today, policy, check_flags)?;
    let number = before_row.donor_number.clone();
    let before = view(before_row, Vec::new())?;
    rows::update(conn, id, &data(&input, active, &number)?)?;
    let after = get(conn, id)?;
    let action = match (before.active, after.active) {
        (true, false) => "donor.deactivate",
        (false, true) => "donor.reactivate",
        _ => "donor.update",
    };
    audit::append(
        conn,
        actor,
        Change::updated(action, "donor", id, snapshot(&before)?, snapshot(&after)?),
    )?;
    Ok(after)
}

/// Query filters of the donor list, already parsed.
pub struct ListRequest {
    pub filter: DonorFilter,
    pub eligible_at: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// A page of donors. With `eligible_at` the list holds only donors eligible then; pages are
/// filled by scanning in id order, so cursors stay plain ids.
pub fn list(conn: &mut DbConn, req: ListRequest, policy: &Policy) -> ApiResult<(Vec<DonorView>, Option<String>)> {
    let Some(at) = req.eligible_at else {
        let rows = rows::list(conn, &req.filter, req.limit + 1)?;
        let (rows, next) = crate::input::paginate(rows, req.limit, |d| d.id);
        return Ok((views(conn, rows)?, next));
    };
    let picked: Vec<Donor> = eligible_rows(conn, req.filter, at, req.limit, policy)?
        .into_iter()
        .map(|(donor, _)| donor)
        .collect();
    let (rows, next) = crate::input::paginate(picked, req.limit, |d| d.id);
    Ok((views(conn, rows)?, next))
}

/// The donors of `filter` eligible for a collection at `at` (no planned agents, as the list's
/// `eligible_at` filter and the eligibility endpoint judge them), in id order, with their
/// records: read in batches (four queries each) until more than `limit` are found.
fn eligible_rows(
    conn: &mut DbConn,
    mut filter: DonorFilter,
    at: DateTime<Utc>,
    limit: i64,
    policy: &Policy,
) -> ApiResult<Vec<(Donor, DonorRecord)>> {
    const BATCH: i64 = 200;
    let mut picked = Vec::new();
    loop {
        let batch = rows::list(conn, &filter, BATCH)?;
        let exhausted = batch.len() < BATCH as usize;
        filter.after_id = batch.last().map(|d| d.id).or(filter.after_id);
        let records = records(conn, &batch)?;
        for (donor, record) in batch.into_iter().zip(records) {
            if record.eligibility_at(at, None, &[], policy).eligible {
                picked.push((donor, record));
            }
        }
        if exhausted || picked.len() as i64 > limit {
            break;
        }
    }
    Ok(picked)
}

/// An active donor eligible at a given time, with what the day's planning reads.
#[derive(Debug, Clone)]
pub struct EligibleDonor {
    pub donor: DonorView,
    /// The latest procedure that took place by now (another programme's donation included).
    pub last_procedure: Option<PastProcedure>,
    /// The earliest time from now on at which the donor is eligible (at the latest, `at`).
    pub eligible_from: Option<DateTime<Utc>>,
}

/// Active donors eligible for a collection at `at`, by the same rules as the eligibility
/// endpoint (no planned agents), in id order: at most `limit`, and whether there were more.
pub fn eligible_at(
    conn: &mut DbConn,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: i64,
    policy: &Policy,
) -> ApiResult<(Vec<EligibleDonor>, bool)> {
    let filter = DonorFilter {
        active: Some(true),
        ..DonorFilter::default()
    };
    let mut picked = eligible_rows(conn, filter, at, limit, policy)?;
    let more = picked.len() as i64 > limit;
    picked.truncate(usize::try_from(limit).unwrap_or(0));
    let (donors, records): (Vec<Donor>, Vec<DonorRecord>) = picked.into_iter().unzip();
    let found = views(conn, donors)?
        .into_iter()
        .zip(records)
        .map(|(donor, record)| EligibleDonor {
            donor,
            last_procedure: record.last_procedure(now),
            eligible_from: record.eligible_from(now.min(at), at, &[], policy),
        })
        .collect();
    Ok((found, more))
}

/// Several donors at once (unknown ids are left out), in the order the store returns them.
pub fn get_many(conn: &mut DbConn, ids: &[i64]) -> ApiResult<Vec<DonorView>> {
    let found = rows::find_many(conn, ids)?;
    views(conn, found)
}

pub fn deferral(r: &DeferralRow) -> Deferral {
    Deferral {
        reason: r.reason.clone(),
        permanent: r.permanent,
        starts_at: utc(r.starts_at),
        until: r.until.map(utc),
    }
}

fn donation(r: &DonationRow) -> ApiResult<PastProcedure> {
    Ok(PastProcedure {
        kind: r.kind,
        at: utc(r.donated_at),
        red_cell_loss_ml: r.red_cell_loss_ml.and_then(|ml| u32::try_from(ml).ok()),
        red_cells_returned: r.red_cells_returned,
        hes_ml: None,
    })
}

pub fn booking(c: &Collection) -> ApiResult<Booking> {
    Ok(Booking {
        id: c.id,
        status: c.status,
        scheduled_start: utc(c.scheduled_start),
        scheduled_end: utc(c.scheduled_end),
        started_at: c.started_at.map(utc),
        ended_at: c.ended_at.map(utc),
        red_cell_loss_ml: collection_red_cell_loss(
            c.product_red_cell_ml,
            c.red_cell_loss_ml.and_then(|ml| u32::try_from(ml).ok()),
        ),
        hes_ml: c.hes_volume_ml.and_then(|ml| u32::try_from(ml).ok()),
    })
}

/// The parts of a donor row the eligibility rules read.
pub struct DonorKey<'a> {
    pub id: i64,
    pub date_of_birth: NaiveDate,
    pub active: bool,
    /// The stored JSON of flagged contraindications.
    pub contraindications: &'a str,
}

/// The eligibility inputs of each donor, in the order given (four queries for the batch).
pub fn records(conn: &mut DbConn, donors: &[Donor]) -> ApiResult<Vec<DonorRecord>> {
    let keys: Vec<DonorKey<'_>> = donors
        .iter()
        .map(|d| DonorKey {
            id: d.id,
            date_of_birth: d.date_of_birth,
            active: d.active,
            contraindications: &d.contraindications,
        })
        .collect();
    records_for(conn, &keys, false)
}

/// With `all_active`, `donors` are every active donor and their history is read by joins
/// instead of long id lists.
pub fn records_for(conn: &mut DbConn, donors: &[DonorKey<'_>], all_active: bool) -> ApiResult<Vec<DonorRecord>> {
    let ids: Vec<i64> = donors.iter().map(|d| d.id).collect();
    let (deferral_rows, donation_rows, collection_list, given_rows) = if all_active {
        (
            rows::deferrals_of_active(conn)?,
            rows::donations_of_active(conn)?,
            collection_rows::of_active_donors(conn)?,
            collection_rows::given_to_active_donors(conn)?,
        )
    } else {
        (
            rows::deferrals_of(conn, &ids)?,
            rows::donations_of(conn, &ids)?,
            collection_rows::of_donors(conn, &ids)?,
            collection_rows::given_to_donors(conn, &ids)?,
        )
    };
    let mut deferrals: HashMap<i64, Vec<Deferral>> = HashMap::new();
    for r in deferral_rows {
        deferrals.entry(r.donor_id).or_default().push(deferral(&r));
    }
    let mut donations: HashMap<i64, Vec<PastProcedure>> = HashMap::new();
    for r in donation_rows {
        donations.entry(r.donor_id).or_default().push(donation(&r)?);
    }
    let mut bookings: HashMap<i64, Vec<Booking>> = HashMap::new();
    for c in collection_list {
        bookings.entry(c.donor_id).or_default().push(booking(&c)?);
    }
    let mut given: HashMap<i64, Vec<GivenStimulation>> = HashMap::new();
    for g in given_rows {
        given.entry(g.donor_id).or_default().push(GivenStimulation {
            agent: g.agent,
            at: utc(g.administered_at),
            collection_id: g.collection_id,
        });
    }
    donors
        .iter()
        .map(|d| {
            let flags: Vec<ContraindicationFlag> = if d.contraindications == "[]" {
                Vec::new()
            } else {
                from_stored_json("contraindications", d.contraindications)?
            };
            Ok(DonorRecord {
                facts: DonorFacts {
                    date_of_birth: d.date_of_birth,
                    active: d.active,
                    flagged_contraindications: flags,
                },
                deferrals: deferrals.remove(&d.id).unwrap_or_default(),
                donations: donations.remove(&d.id).unwrap_or_default(),
                bookings: bookings.remove(&d.id).unwrap_or_default(),
                stimulations: given.remove(&d.id).unwrap_or_default(),
            })
        })
        .collect()
}

pub fn record(conn: &mut DbConn, donor: &Donor) -> ApiResult<DonorRecord> {
    records(conn, std::slice::from_ref(donor))?
        .pop()
        .ok_or_else(|| ApiError::not_found("donor"))
}

pub fn eligibility(
    conn: &mut DbConn,
    id: i64,
    at: DateTime<Utc>,
    agents: &[String],
    policy: &Policy,
) -> ApiResult<Eligibility> {
    let donor = find(conn, id)?;
    Ok(record(conn, &donor)?.eligibility_at(at, None, agents, policy))
}

// ---------------------------------------------------------------------------------------------
// Deferrals

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "travel to a malaria area", "permanent": false, "until": "2027-05-25T00:00:00Z"}))]
pub struct DeferralInput {
    /// Why, 1–500 characters.
    pub reason: Text<1, 500>,
    pub permanent: bool,
    /// Required for a temporary deferral, absent for a permanent one.
    pub until: Option<DateTime<Utc>>,
    /// Default: now. May be in the past (recording a decision made earlier).
    pub starts_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeferralView {
    pub id: i64,
    pub donor_id: i64,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,498}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub reason: String,
    pub permanent: bool,
    pub starts_at: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    /// Who set it.
    pub set_by: String,
    pub created_at: DateTime<Utc>,
    /// Whether it applies now.
    pub active: bool,
    /// A deferral raised by a reactive result on this unit, pending confirmatory testing.
    pub source_unit_id: Option<i64>,
}

fn deferral_view(r: DeferralRow, now: DateTime<Utc>) -> DeferralView {
    let active = deferral(&r).is_active_at(now);
    DeferralView {
        id: r.id,
        donor_id: r.donor_id,
        reason: r.reason,
        permanent: r.permanent,
        starts_at: utc(r.starts_at),
        until: r.until.map(utc),
        set_by: r.set_by,
        created_at: utc(r.created_at),
        active,
        source_unit_id: r.source_unit_id,
    }
}

pub fn defer(conn: &mut DbConn, actor: &Actor, donor_id: i64, input: DeferralInput) -> ApiResult<DeferralView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    let reason = input.reason.into_inner();
    let starts_at = input.starts_at.unwrap_or(now);
    match (input.permanent, input.until) {
        (true, Some(_)) => v.push("until", "must be absent for a permanent deferral"),
        (false, None) => v.push("until", "is required for a temporary deferral"),
        (false, Some(until)) => {
            v.check(until > starts_at, "until", "must be after starts_at");
        }
        (true, None) => {}
    }
    v.finish()?;
    find(conn, donor_id)?;
    let row = rows::insert_deferral(
        conn,
        &rows::NewDeferral {
            donor_id,
            reason: &reason,
            permanent: input.permanent,
            starts_at: stored(starts_at),
            until: input.until.map(stored),
            set_by: &actor.name,
            created_at: stored(now),
            source_unit_id: None,
        },
    )?;
    let created = deferral_view(row, now);
    audit::append(
        conn,
        actor,
        Change::created("donor.defer", "donor", donor_id, to_value(&created)?),
    )?;
    Ok(created)
}

pub fn deferrals(conn: &mut DbConn, donor_id: i64) -> ApiResult<Vec<DeferralView>> {
    find(conn, donor_id)?;
    let now = utc(store::now());
    Ok(rows::deferrals_of(conn, &[donor_id])?
        .into_iter()
        .map(|r| deferral_view(r, now))
        .collect())
}

/// Defers the donor pending confirmatory testing of a reactive result on `unit_id` (open-ended,
/// not permanent), unless such a deferral from that unit is already recorded. Audited.
pub fn defer_for_reactive_result(
    conn: &mut DbConn,
    actor: &Actor,
    donor_id: i64,
    unit_id: i64,
    reason: &str,
) -> ApiResult<Option<DeferralView>> {
    let now = utc(store::now());
    let exists = rows::deferrals_of(conn, &[donor_id])?
        .iter()
        .any(|d| d.source_unit_id == Some(unit_id));
    if exists {
        return Ok(None);
    }
    let row = rows::insert_deferral(
        conn,
        &rows::NewDeferral {
            donor_id,
            reason,
            permanent: false,
            starts_at: stored(now),
            until: None,
            set_by: &actor.name,
            created_at: stored(now),
            source_unit_id: Some(unit_id),
        },
    )?;
    let created = deferral_view(row, now);
    audit::append(
        conn,
        actor,
        Change::created("donor.defer", "donor", donor_id, to_value(&created)?),
    )?;
    Ok(Some(created))
}

/// True when the donor has an active deferral raised by a reactive result.
pub fn reactive_deferral_active(conn: &mut DbConn, donor_id: i64) -> ApiResult<bool> {
    let now = utc(store::now());
    Ok(rows::deferrals_of(conn, &[donor_id])?
        .iter()
        .any(|d| d.source_unit_id.is_some() && deferral(d).is_active_at(now)))
}
