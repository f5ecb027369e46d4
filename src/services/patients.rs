//! Patients (owned by a hospital; MRN unique per hospital) and crossmatch samples. `scope` is
//! the caller's hospital for hospital accounts (they see only their own), `None` for staff.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{from_stored_json, is_past, stored, stored_enum, to_json, to_value, utc};
use crate::domain::blood::{Abo, Cmv, Rhd, Sex};
use crate::domain::compatibility::PatientFacts;
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, Validator, unique_as};
use crate::store::audit::{self, Actor, Change};
use crate::store::patients::{self as rows, Patient, PatientData, Sample};
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
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub childbearing_potential: bool,
    /// HLA antibody specificities (e.g. `A2`, `B*07`).
    pub hla_antibodies: Vec<String>,
    pub granulocyte_antibodies: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mrn": "STE-0048213", "given_name": "Sam", "family_name": "Okafor", "date_of_birth": "2012-06-30", "sex": "male", "weight_kg": 41.0, "abo": "A", "rhd": "negative", "cmv": "negative", "hla_antibodies": ["A2"], "hospital_id": 3}))]
pub struct PatientInput {
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
    /// 0.3–300 kg (neonates included).
    #[schema(minimum = 0.3, maximum = 300)]
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    /// Default false.
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
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,62}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub mrn: Option<String>,
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
    #[schema(minimum = 0.3, maximum = 300)]
    pub weight_kg: Option<f64>,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub cmv: Option<Cmv>,
    pub childbearing_potential: Option<bool>,
    pub hla_antibodies: Option<Vec<String>>,
    pub granulocyte_antibodies: Option<bool>,
}

const WEIGHT_KG: (f64, f64) = (0.3, 300.0);
const MAX_AGE_YEARS: i32 = 130;

fn text(v: &mut Validator, field: &str, raw: &str, max: usize) -> String {
    let t = raw.trim().to_owned();
    v.check(
        !t.is_empty() && t.chars().count() <= max && !t.chars().any(char::is_control),
        field,
        format!("must be 1 to {max} characters"),
    );
    t
}

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
    let mrn = text(&mut v, "mrn", &input.mrn, 64);
    let given_name = text(&mut v, "given_name", &input.given_name, 100);
    let family_name = text(&mut v, "family_name", &input.family_name, 100);
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
        sex: input.sex.as_str().to_owned(),
        weight_kg: input.weight_kg,
        abo: input.abo.as_str().to_owned(),
        rhd: input.rhd.as_str().to_owned(),
        cmv: input.cmv.as_str().to_owned(),
        childbearing_potential: input.childbearing_potential.unwrap_or(false),
        hla_antibodies: to_json(&hla)?,
        granulocyte_antibodies: input.granulocyte_antibodies.unwrap_or(false),
        updated_at: store::now(),
    })
}

pub fn view(p: Patient) -> ApiResult<PatientView> {
    Ok(PatientView {
        sex: stored_enum("sex", &p.sex, Sex::parse)?,
        abo: stored_enum("abo", &p.abo, Abo::parse)?,
        rhd: stored_enum("rhd", &p.rhd, Rhd::parse)?,
        cmv: stored_enum("cmv", &p.cmv, Cmv::parse)?,
        hla_antibodies: from_stored_json("hla_antibodies", &p.hla_antibodies)?,
        id: p.id,
        hospital_id: p.hospital_id,
        mrn: p.mrn,
        given_name: p.given_name,
        family_name: p.family_name,
        date_of_birth: p.date_of_birth,
        weight_kg: p.weight_kg,
        childbearing_potential: p.childbearing_potential,
        granulocyte_antibodies: p.granulocyte_antibodies,
        created_at: utc(p.created_at),
        updated_at: utc(p.updated_at),
    })
}

/// What the compatibility rules need to know about the patient.
pub fn facts(v: &PatientView) -> PatientFacts {
    PatientFacts {
        abo: v.abo,
        rhd: v.rhd,
        sex: v.sex,
        childbearing_potential: v.childbearing_potential,
        cmv: v.cmv,
        weight_kg: v.weight_kg,
        hla_antibodies: v.hla_antibodies.clone(),
        granulocyte_antibodies: v.granulocyte_antibodies,
    }
}

/// The patient if the caller may see it; another hospital's patient is "not found".
pub fn find(conn: &mut DbConn, id: i64, scope: Option<i64>) -> ApiResult<Patient> {
    rows::find(conn, id)?
        .filter(|p| scope.is_none_or(|h| h == p.hospital_id))
        .ok_or_else(|| ApiError::not_found("patient"))
}

pub fn get(conn: &mut DbConn, id: i64, scope: Option<i64>) -> ApiResult<PatientView> {
    view(find(conn, id, scope)?)
}

pub fn create(conn: &mut DbConn, actor: &Actor, input: PatientInput, scope: Option<i64>) -> ApiResult<PatientView> {
    let hospital_id = match (scope, input.hospital_id) {
        (Some(_), Some(_)) => return Err(ApiError::field("hospital_id", "is set from your account")),
        (Some(h), None) => h,
        (None, Some(h)) => h,
        (None, None) => return Err(ApiError::field("hospital_id", "is required for staff")),
    };
    let data = validate(&input, hospital_id, utc(store::now()).date_naive())?;
    if !hospitals::is_active(conn, hospital_id)? {
        return Err(ApiError::refused(
            "unknown_hospital",
            format!("hospital {hospital_id} does not exist or is inactive"),
            vec![],
        ));
    }
    let row = rows::insert(conn, &data, store::now()).map_err(unique_as(
        "mrn_taken",
        format!("hospital {hospital_id} already has a patient with MRN {}", data.mrn),
    ))?;
    let created = view(row)?;
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
) -> ApiResult<PatientView> {
    let before = view(find(conn, id, scope)?)?;
    let merged = PatientInput {
        mrn: patch.mrn.unwrap_or_else(|| before.mrn.clone()),
        given_name: patch.given_name.unwrap_or_else(|| before.given_name.clone()),
        family_name: patch.family_name.unwrap_or_else(|| before.family_name.clone()),
        date_of_birth: patch.date_of_birth.unwrap_or(before.date_of_birth),
        sex: patch.sex.unwrap_or(before.sex),
        weight_kg: patch.weight_kg.unwrap_or(before.weight_kg),
        abo: patch.abo.unwrap_or(before.abo),
        rhd: patch.rhd.unwrap_or(before.rhd),
        cmv: patch.cmv.unwrap_or(before.cmv),
        childbearing_potential: Some(patch.childbearing_potential.unwrap_or(before.childbearing_potential)),
        hla_antibodies: patch.hla_antibodies.unwrap_or_else(|| before.hla_antibodies.clone()),
        granulocyte_antibodies: Some(patch.granulocyte_antibodies.unwrap_or(before.granulocyte_antibodies)),
        hospital_id: None,
    };
    let data = validate(&merged, before.hospital_id, utc(store::now()).date_naive())?;
    let row = rows::update(conn, id, &data).map_err(unique_as(
        "mrn_taken",
        format!("the hospital already has a patient with MRN {}", data.mrn),
    ))?;
    let after = view(row)?;
    audit::append(
        conn,
        actor,
        Change::updated("patient.update", "patient", id, to_value(&before)?, to_value(&after)?),
    )?;
    Ok(after)
}

pub fn list(
    conn: &mut DbConn,
    scope: Option<i64>,
    after_id: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<PatientView>, Option<String>)> {
    let found = rows::list(conn, scope, after_id, limit + 1)?;
    let (found, next) = crate::routes::paginate(found, limit, |p| p.id);
    Ok((found.into_iter().map(view).collect::<ApiResult<Vec<_>>>()?, next))
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
