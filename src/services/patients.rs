//! Patients (owned by a hospital; MRN unique per hospital) and crossmatch samples. `scope` is
//! the caller's hospital for hospital accounts (they see only their own), `None` for staff.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{from_stored_json, is_past, stored, to_json, to_value, utc};
use crate::domain::alerts::AlertKind;
use crate::domain::blood::{Abo, Cmv, Rhd, Sex};
use crate::domain::compatibility::PatientFacts;
use crate::domain::group::{self, GroupOfRecord, GroupStatus, Typed, Typing};
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, ErrorCode, Validator, unique_as};
use crate::input::Text;
use crate::services::alerts::Raise;
use crate::store::audit::{self, Actor, Change};
use crate::store::patients::{self as rows, Patient, PatientData, Sample, TypingRow};
use crate::store::{self, DbConn, hospitals};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PatientView {
    pub id: i64,
    pub hospital_id: i64,
    /// Medical record number, unique within the hospital.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,62}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub mrn: String,
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
    #[schema(minimum = 0.3, maximum = 300)]
    pub weight_kg: f64,
    /// ABO group as the hospital declares it: shown beside the group of record, never used to
    /// select units.
    pub abo: Abo,
    /// RhD type as the hospital declares it (see `abo`).
    pub rhd: Rhd,
    pub cmv: Cmv,
    /// As stated on the record, or derived from sex and age (`recipient.childbearing_age_min`
    /// to `recipient.childbearing_age_max`) when the record does not say.
    pub childbearing_potential: bool,
    /// What the record states; null when it does not (then it is derived).
    pub childbearing_potential_stated: Option<bool>,
    /// HLA antibody specificities (e.g. `A2`, `B*07`).
    pub hla_antibodies: Vec<String>,
    pub granulocyte_antibodies: bool,
    /// The blood bank's own typing, which selection uses.
    pub group_of_record: GroupOfRecordView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One ABO/RhD typing of a sample by the blood bank.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TypingView {
    pub id: i64,
    pub sample_id: i64,
    pub patient_id: i64,
    /// When the typed sample was drawn.
    pub drawn_at: DateTime<Utc>,
    pub abo: Abo,
    pub rhd: Rhd,
    pub typed_by: String,
    pub typed_at: DateTime<Utc>,
}

/// The patient's blood group of record: confirmed by two concordant typings of two samples
/// drawn at different times. Until then only group O units are ABO-eligible and the patient
/// counts as RhD-negative.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupOfRecordView {
    /// The ABO group every typing agrees on (confirmed or not); null when untyped or discordant.
    pub abo: Option<Abo>,
    /// The RhD type every typing agrees on; null when untyped or discordant.
    pub rhd: Option<Rhd>,
    /// Both ABO and RhD confirmed.
    pub confirmed: bool,
    pub status: GroupStatus,
    pub abo_status: GroupStatus,
    pub rhd_status: GroupStatus,
    /// Oldest first.
    pub typings: Vec<TypingView>,
}

impl GroupOfRecordView {
    pub fn of(typings: Vec<TypingView>) -> Self {
        let g = group::group_of_record(&typings.iter().map(typing_fact).collect::<Vec<_>>());
        Self {
            abo: g.abo.concordant(),
            rhd: g.rhd.concordant(),
            confirmed: g.is_confirmed(),
            status: g.status(),
            abo_status: g.abo.status(),
            rhd_status: g.rhd.status(),
            typings,
        }
    }

    /// The group of record as the rules read it.
    pub fn group(&self) -> GroupOfRecord {
        fn typed<T: Copy>(status: GroupStatus, value: Option<T>) -> Typed<T> {
            match (status, value) {
                (GroupStatus::Confirmed, Some(v)) => Typed::Confirmed(v),
                (GroupStatus::Unconfirmed, Some(v)) => Typed::Unconfirmed(v),
                (GroupStatus::Discordant, _) => Typed::Discordant,
                _ => Typed::Untyped,
            }
        }
        GroupOfRecord {
            abo: typed(self.abo_status, self.abo),
            rhd: typed(self.rhd_status, self.rhd),
        }
    }
}

fn typing_fact(t: &TypingView) -> Typing {
    Typing {
        sample_id: t.sample_id,
        drawn_at: t.drawn_at,
        abo: t.abo,
        rhd: t.rhd,
    }
}

fn typing_view(row: TypingRow, drawn_at: chrono::NaiveDateTime) -> ApiResult<TypingView> {
    Ok(TypingView {
        id: row.id,
        sample_id: row.sample_id,
        patient_id: row.patient_id,
        drawn_at: utc(drawn_at),
        abo: row.abo,
        rhd: row.rhd,
        typed_by: row.typed_by,
        typed_at: utc(row.typed_at),
    })
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mrn": "STE-0048213", "given_name": "Sam", "family_name": "Okafor", "date_of_birth": "2012-06-30", "sex": "male", "weight_kg": 41.0, "abo": "A", "rhd": "negative", "cmv": "negative", "hla_antibodies": ["A2"], "hospital_id": 3}))]
pub struct PatientInput {
    pub mrn: Text<1, 64>,
    pub given_name: Text<1, 100>,
    pub family_name: Text<1, 100>,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    /// 0.3–300 kg (neonates included).
    #[schema(minimum = 0.3, maximum = 300)]
    pub weight_kg: f64,
    /// As the hospital knows it; units are selected by the blood bank's own typing.
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    /// Whether the patient has childbearing potential; when absent it is derived from sex and
    /// age (policy `recipient.childbearing_age_min`/`max`).
    pub childbearing_potential: Option<bool>,
    #[serde(default)]
    pub hla_antibodies: Vec<String>,
    /// Default false.
    pub granulocyte_antibodies: Option<bool>,
    /// Staff only (a hospital account's patients belong to its hospital).
    #[schema(minimum = 1)]
    pub hospital_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"weight_kg": 39.5}))]
pub struct PatientPatch {
    pub mrn: Option<Text<1, 64>>,
    pub given_name: Option<Text<1, 100>>,
    pub family_name: Option<Text<1, 100>>,
    pub date_of_birth: Option<NaiveDate>,
    pub sex: Option<Sex>,
    #[schema(minimum = 0.3, maximum = 300)]
    pub weight_kg: Option<f64>,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub cmv: Option<Cmv>,
    /// `null` removes the statement: derived from sex and age again.
    #[serde(default, deserialize_with = "crate::input::double_option")]
    pub childbearing_potential: Option<Option<bool>>,
    pub hla_antibodies: Option<Vec<String>>,
    pub granulocyte_antibodies: Option<bool>,
}

const WEIGHT_KG: (f64, f64) = (0.3, 300.0);
const MAX_AGE_YEARS: i32 = 130;

/// HLA antibody specificities: letters, digits, `*`, `:` (e.g. `A2`, `B*07:02`, `DR15`).
fn antibodies(v: &mut Validator, list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    v.check(list.len() <= 50, "hla_antibodies", "at most 50 specificities");
    for (i, raw) in list.iter().enumerate() {
        let s = raw.trim().to_ascii_uppercase();
        let ok = (2..=20).contains(&s.len())
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '*' || c == ':');
        if !ok {
            v.push(
                &format!("hla_antibodies[{i}]"),
                "must be an HLA specificity such as A2 or B*07",
            );
        } else if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn validate(input: &PatientInput, hospital_id: i64, today: NaiveDate) -> ApiResult<PatientData> {
    let mut v = Validator::new();
    let (mrn, given_name, family_name) = (
        input.mrn.to_string(),
        input.given_name.to_string(),
        input.family_name.to_string(),
    );
    let oldest = NaiveDate::from_ymd_opt(today.year() - MAX_AGE_YEARS, 1, 1).unwrap_or(NaiveDate::MIN);
    v.check(
        input.date_of_birth <= today && input.date_of_birth >= oldest,
        "date_of_birth",
        "must be a past date",
    );
    v.check(
        input.weight_kg.is_finite() && (WEIGHT_KG.0..=WEIGHT_KG.1).contains(&input.weight_kg),
        "weight_kg",
        format!("must be between {} and {} kg", WEIGHT_KG.0, WEIGHT_KG.1),
    );
    let hla = antibodies(&mut v, &input.hla_antibodies);
    v.finish()?;
    Ok(PatientData {
        hospital_id,
        mrn,
        given_name,
        family_name,
        date_of_birth: input.date_of_birth,
        sex: input.sex,
        weight_kg: input.weight_kg,
        abo: input.abo,
        rhd: input.rhd,
        cmv: input.cmv,
        childbearing_potential_stated: input.childbearing_potential,
        hla_antibodies: to_json(&hla)?,
        granulocyte_antibodies: input.granulocyte_antibodies.unwrap_or(false),
        updated_at: store::now(),
    })
}

/// Views of several patients with their typings, in one query for the typings.
pub fn views(conn: &mut DbConn, list: Vec<Patient>, policy: &Policy) -> ApiResult<Vec<PatientView>> {
    let ids: Vec<i64> = list.iter().map(|p| p.id).collect();
    let mut typings: std::collections::HashMap<i64, Vec<TypingView>> = std::collections::HashMap::new();
    for (row, drawn_at) in rows::typings_of(conn, &ids)? {
        typings
            .entry(row.patient_id)
            .or_default()
            .push(typing_view(row, drawn_at)?);
    }
    list.into_iter()
        .map(|p| {
            let mine = typings.remove(&p.id).unwrap_or_default();
            view_of(p, GroupOfRecordView::of(mine), policy)
        })
        .collect()
}

pub fn view(conn: &mut DbConn, p: Patient, policy: &Policy) -> ApiResult<PatientView> {
    views(conn, vec![p], policy)?
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a patient view went missing")))
}

fn view_of(p: Patient, group_of_record: GroupOfRecordView, policy: &Policy) -> ApiResult<PatientView> {
    let sex = p.sex;
    let today = utc(store::now()).date_naive();
    Ok(PatientView {
        childbearing_potential: crate::domain::recipient::childbearing_potential(
            p.childbearing_potential_stated,
            sex,
            p.date_of_birth,
            today,
            policy,
        ),
        childbearing_potential_stated: p.childbearing_potential_stated,
        sex,
        abo: p.abo,
        rhd: p.rhd,
        cmv: p.cmv,
        hla_antibodies: from_stored_json("hla_antibodies", &p.hla_antibodies)?,
        id: p.id,
        hospital_id: p.hospital_id,
        mrn: p.mrn,
        given_name: p.given_name,
        family_name: p.family_name,
        date_of_birth: p.date_of_birth,
        weight_kg: p.weight_kg,
        granulocyte_antibodies: p.granulocyte_antibodies,
        group_of_record,
        created_at: utc(p.created_at),
        updated_at: utc(p.updated_at),
    })
}

/// What the compatibility rules need to know about the patient: the group of record, never the
/// declared one.
pub fn facts(v: &PatientView) -> PatientFacts {
    let group = v.group_of_record.group();
    PatientFacts {
        abo: group.abo,
        rhd: group.rhd,
        sex: v.sex,
        childbearing_potential: v.childbearing_potential,
        cmv: v.cmv,
        weight_kg: v.weight_kg,
        hla_antibodies: v.hla_antibodies.clone(),
        granulocyte_antibodies: v.granulocyte_antibodies,
    }
}

/// Raises `patient.group_discordant` when the typings disagree or the declared group differs
/// from the typed one (once per patient: the alert stays until acknowledged).
fn check_group(conn: &mut DbConn, v: &PatientView) -> ApiResult<()> {
    let found = group::discrepancies(v.abo, v.rhd, &v.group_of_record.group());
    if found.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = found.iter().map(|r| r.message.clone()).collect();
    let codes: Vec<&str> = found.iter().map(|r| r.code).collect();
    crate::services::alerts::raise(
        conn,
        Raise {
            message: format!(
                "blood group of patient {} (MRN {}) needs review: {}; only group O units until resolved",
                v.id,
                v.mrn,
                what.join("; ")
            ),
            details: serde_json::json!({"patient_id": v.id, "hospital_id": v.hospital_id, "reasons": codes,
                                        "declared": {"abo": v.abo, "rhd": v.rhd},
                                        "typed": {"abo": v.group_of_record.abo, "rhd": v.group_of_record.rhd,
                                                  "status": v.group_of_record.status}}),
            ..Raise::event(AlertKind::PatientGroupDiscordant, v.id, v.id, utc(store::now()))
        },
    )?;
    Ok(())
}

/// The patient if the caller may see it; another hospital's patient is "not found".
pub fn find(conn: &mut DbConn, id: i64, scope: Option<i64>) -> ApiResult<Patient> {
    rows::find(conn, id)?
        .filter(|p| scope.is_none_or(|h| h == p.hospital_id))
        .ok_or_else(|| ApiError::not_found("patient"))
}

pub fn get(conn: &mut DbConn, id: i64, scope: Option<i64>, policy: &Policy) -> ApiResult<PatientView> {
    let p = find(conn, id, scope)?;
    view(conn, p, policy)
}

/// Several patients the caller may see (staff: any), in one query for the patients and one for
/// their typings; ids that do not exist or are out of scope are left out.
pub fn get_many(conn: &mut DbConn, ids: &[i64], scope: Option<i64>, policy: &Policy) -> ApiResult<Vec<PatientView>> {
    let found: Vec<Patient> = rows::find_many(conn, ids)?
        .into_iter()
        .filter(|p| scope.is_none_or(|h| h == p.hospital_id))
        .collect();
    views(conn, found, policy)
}

pub fn create(
    conn: &mut DbConn,
    actor: &Actor,
    input: PatientInput,
    scope: Option<i64>,
    policy: &Policy,
) -> ApiResult<PatientView> {
    let hospital_id = match (scope, input.hospital_id) {
        (Some(_), Some(_)) => return Err(ApiError::field("hospital_id", "is set from your account")),
        (Some(h), None) => h,
        (None, Some(h)) => h,
        (None, None) => return Err(ApiError::field("hospital_id", "is required for staff")),
    };
    let data = validate(&input, hospital_id, utc(store::now()).date_naive())?;
    if !hospitals::is_active(conn, hospital_id)? {
        return Err(ApiError::refused(
            ErrorCode::UnknownHospital,
            format!("hospital {hospital_id} does not exist or is inactive"),
            vec![],
        ));
    }
    let row = rows::insert(conn, &data, store::now()).map_err(unique_as(
        ErrorCode::MrnTaken,
        format!("hospital {hospital_id} already has a patient with MRN {}", data.mrn),
    ))?;
    let created = view(conn, row, policy)?;
    audit::append(
        conn,
        actor,
        Change::created("patient.create", "patient", created.id, to_value(&created)?),
    )?;
    Ok(created)
}

pub fn update(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    patch: PatientPatch,
    scope: Option<i64>,
    policy: &Policy,
) -> ApiResult<PatientView> {
    let found = find(conn, id, scope)?;
    let before = view(conn, found, policy)?;
    // Kept fields are checked again, as a changed one is.
    let merged = PatientInput {
        mrn: patch.mrn.map_or_else(|| Text::field("mrn", &before.mrn), Ok)?,
        given_name: patch
            .given_name
            .map_or_else(|| Text::field("given_name", &before.given_name), Ok)?,
        family_name: patch
            .family_name
            .map_or_else(|| Text::field("family_name", &before.family_name), Ok)?,
        date_of_birth: patch.date_of_birth.unwrap_or(before.date_of_birth),
        sex: patch.sex.unwrap_or(before.sex),
        weight_kg: patch.weight_kg.unwrap_or(before.weight_kg),
        abo: patch.abo.unwrap_or(before.abo),
        rhd: patch.rhd.unwrap_or(before.rhd),
        cmv: patch.cmv.unwrap_or(before.cmv),
        childbearing_potential: patch
            .childbearing_potential
            .unwrap_or(before.childbearing_potential_stated),
        hla_antibodies: patch.hla_antibodies.unwrap_or_else(|| before.hla_antibodies.clone()),
        granulocyte_antibodies: Some(patch.granulocyte_antibodies.unwrap_or(before.granulocyte_antibodies)),
        hospital_id: None,
    };
    let data = validate(&merged, before.hospital_id, utc(store::now()).date_naive())?;
    let row = rows::update(conn, id, &data).map_err(unique_as(
        ErrorCode::MrnTaken,
        format!("the hospital already has a patient with MRN {}", data.mrn),
    ))?;
    let after = view(conn, row, policy)?;
    audit::append(
        conn,
        actor,
        Change::updated("patient.update", "patient", id, to_value(&before)?, to_value(&after)?),
    )?;
    check_group(conn, &after)?;
    Ok(after)
}

pub fn list(
    conn: &mut DbConn,
    scope: Option<i64>,
    after_id: Option<i64>,
    limit: i64,
    policy: &Policy,
) -> ApiResult<(Vec<PatientView>, Option<String>)> {
    let found = rows::list(conn, scope, after_id, limit + 1)?;
    let (found, next) = crate::input::paginate(found, limit, |p| p.id);
    Ok((views(conn, found, policy)?, next))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"drawn_at": "2026-11-25T06:30:00Z", "transfused_or_pregnant_within_3_months": true}))]
pub struct SampleInput {
    pub drawn_at: DateTime<Utc>,
    pub transfused_or_pregnant_within_3_months: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SampleView {
    pub id: i64,
    pub patient_id: i64,
    pub drawn_at: DateTime<Utc>,
    pub transfused_or_pregnant_within_3_months: bool,
    /// Crossmatches on this sample are valid until then.
    pub valid_until: DateTime<Utc>,
    pub recorded_by: String,
    pub created_at: DateTime<Utc>,
}

pub fn sample_view(s: Sample) -> SampleView {
    SampleView {
        id: s.id,
        patient_id: s.patient_id,
        drawn_at: utc(s.drawn_at),
        transfused_or_pregnant_within_3_months: s.transfused_or_pregnant_within_3_months,
        valid_until: utc(s.valid_until),
        recorded_by: s.recorded_by,
        created_at: utc(s.created_at),
    }
}

/// Records a sample; its validity is the policy's (`domain::compatibility::sample_valid_until`).
pub fn add_sample(
    conn: &mut DbConn,
    actor: &Actor,
    patient_id: i64,
    input: SampleInput,
    scope: Option<i64>,
    policy: &Policy,
) -> ApiResult<SampleView> {
    let now = utc(store::now());
    if !is_past(input.drawn_at, now) {
        return Err(ApiError::field("drawn_at", "must not be in the future"));
    }
    find(conn, patient_id, scope)?;
    let drawn = utc(stored(input.drawn_at));
    let valid_until = crate::domain::compatibility::sample_valid_until(drawn, policy);
    let row = rows::insert_sample(
        conn,
        &rows::NewSample {
            patient_id,
            drawn_at: stored(drawn),
            transfused_or_pregnant_within_3_months: input.transfused_or_pregnant_within_3_months,
            valid_until: stored(valid_until),
            recorded_by: &actor.name,
            created_at: stored(now),
        },
    )?;
    let created = sample_view(row);
    audit::append(
        conn,
        actor,
        Change::created("patient.sample", "patient", patient_id, to_value(&created)?),
    )?;
    Ok(created)
}

pub fn samples(conn: &mut DbConn, patient_id: i64, scope: Option<i64>) -> ApiResult<Vec<SampleView>> {
    find(conn, patient_id, scope)?;
    Ok(rows::samples_of(conn, patient_id)?
        .into_iter()
        .map(sample_view)
        .collect())
}

/// The samples of several patients (staff), in one query.
pub fn samples_of_many(conn: &mut DbConn, patient_ids: &[i64]) -> ApiResult<Vec<SampleView>> {
    Ok(rows::samples_of_patients(conn, patient_ids)?
        .into_iter()
        .map(sample_view)
        .collect())
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"abo": "A", "rhd": "negative"}))]
pub struct TypingInput {
    pub abo: Abo,
    pub rhd: Rhd,
    /// When the typing was read. Default: now.
    pub typed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TypingResult {
    pub typing: TypingView,
    /// The patient's group of record with this typing.
    pub group_of_record: GroupOfRecordView,
}

/// Records the blood bank's ABO/RhD typing of a sample (staff only: the caller checks the
/// role), and raises `patient.group_discordant` when the typings or the declared group disagree.
pub fn type_sample(
    conn: &mut DbConn,
    actor: &Actor,
    sample_id: i64,
    input: TypingInput,
    policy: &Policy,
) -> ApiResult<TypingResult> {
    let now = utc(store::now());
    let at = utc(stored(input.typed_at.unwrap_or(now)));
    if !is_past(at, now) {
        return Err(ApiError::field("typed_at", "must not be in the future"));
    }
    let sample = rows::find_sample(conn, sample_id)?.ok_or_else(|| ApiError::not_found("sample"))?;
    if at < utc(sample.drawn_at) {
        return Err(ApiError::field("typed_at", "must not be before the sample was drawn"));
    }
    let row = rows::insert_typing(
        conn,
        &rows::NewTyping {
            sample_id,
            patient_id: sample.patient_id,
            abo: input.abo.as_str(),
            rhd: input.rhd.as_str(),
            typed_by: &actor.name,
            typed_at: stored(at),
            created_at: stored(now),
        },
    )?;
    let typing = typing_view(row, sample.drawn_at)?;
    let patient = rows::find(conn, sample.patient_id)?.ok_or_else(|| ApiError::not_found("patient"))?;
    let after = view(conn, patient, policy)?;
    audit::append(
        conn,
        actor,
        Change::created(
            "patient.typing",
            "patient",
            sample.patient_id,
            serde_json::json!({"typing": to_value(&typing)?, "group_of_record": to_value(&after.group_of_record)?}),
        ),
    )?;
    check_group(conn, &after)?;
    Ok(TypingResult {
        typing,
        group_of_record: after.group_of_record,
    })
}
