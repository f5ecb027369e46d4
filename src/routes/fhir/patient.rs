//! Patient: read, search by MRN, create and conditional create (`If-None-Exist`), over
//! `services::patients`. The facts granulo needs that FHIR's Patient has no element for
//! (weight, the group the hospital declares, CMV serostatus, antibodies) are extensions of
//! granulo's; the blood group of record is an Observation (LOINC 882-1), never a Patient field.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::metadata::search_names;
use super::model::{
    Extension, ISBT_ABO_RHD, Identifier, Meta, Quantity, Reference, RhdKnown, abo_rhd_coding, extension, extensions,
};
use super::search::{Search, Token};
use super::{Page, bundle, created, read};
use crate::auth::AuthUser;
use crate::domain::blood::{Cmv, Sex};
use crate::domain::isbt128;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::input::Text;
use crate::routes::with_policy;
use crate::services::patients::{self as work, PatientInput, PatientView};
use crate::state::AppState;
use crate::store::DbConn;
use crate::store::hospitals::{self, Hospital};
use crate::store::patients::{self as rows, PatientFilter};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/Patient")
            .route(web::post().to(create))
            .route(web::get().to(search)),
    )
    .service(web::resource("/Patient/{id}").route(web::get().to(get)));
}

/// The system of `managingOrganization.identifier`: granulo's hospital codes.
pub fn hospital_code_system() -> String {
    format!("{}/NamingSystem/hospital-code", super::model::CANONICAL)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientResource {
    resource_type: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Meta>,
    extension: Vec<Extension>,
    identifier: Vec<Identifier>,
    active: bool,
    name: Vec<HumanName>,
    gender: &'static str,
    birth_date: NaiveDate,
    managing_organization: Reference,
    #[serde(skip)]
    updated_at: DateTime<Utc>,
}

super::model::resource!(PatientResource, "Patient", updated_at);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanName {
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    given: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    prefix: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    suffix: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period: Option<serde_json::Value>,
}

fn fhir_gender(sex: Sex) -> &'static str {
    match sex {
        Sex::Female => "female",
        Sex::Male => "male",
        Sex::Unknown => "unknown",
    }
}

/// The Patient of a patient record.
pub fn resource(p: &PatientView, hospital: &Hospital) -> PatientResource {
    let mut ext = vec![
        Extension {
            value_quantity: Some(Quantity::ucum(p.weight_kg, "kg", "kg")),
            ..Extension::ours("body-weight")
        },
        Extension {
            value_coding: Some(abo_rhd_coding(p.abo, RhdKnown::Typed(p.rhd))),
            ..Extension::ours("declared-abo-rhd")
        },
        Extension {
            value_code: Some(p.cmv.as_str().to_owned()),
            ..Extension::ours("cmv-serostatus")
        },
        Extension {
            value_boolean: Some(p.granulocyte_antibodies),
            ..Extension::ours("granulocyte-antibodies")
        },
        Extension {
            value_boolean: Some(p.childbearing_potential),
            ..Extension::ours("childbearing-potential")
        },
    ];
    ext.extend(p.hla_antibodies.iter().map(|a| Extension {
        value_string: Some(a.clone()),
        ..Extension::ours("hla-antibody")
    }));
    PatientResource {
        resource_type: "Patient",
        id: p.id.to_string(),
        meta: None,
        extension: ext,
        identifier: vec![Identifier {
            use_: Some("usual".to_owned()),
            ..Identifier::new(hospital.mrn_system(), &p.mrn)
        }],
        active: true,
        name: vec![HumanName {
            use_: Some("official".to_owned()),
            text: None,
            family: Some(p.family_name.clone()),
            given: vec![p.given_name.clone()],
            prefix: Vec::new(),
            suffix: Vec::new(),
            period: None,
        }],
        gender: fhir_gender(p.sex),
        birth_date: p.date_of_birth,
        managing_organization: Reference {
            identifier: Some(Identifier::new(hospital_code_system(), &hospital.code)),
            display: Some(hospital.name.clone()),
            ..Reference::default()
        },
        updated_at: p.updated_at,
    }
}

/// A Patient as an integration engine sends it. Elements granulo does not keep but that change
/// nothing about the patient's meaning (contact details, language, …) are accepted and ignored;
/// anything else unknown is refused.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatientIn {
    resource_type: String,
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(default, rename = "meta")]
    _meta: Option<IgnoredAny>,
    #[serde(default, rename = "text")]
    _text: Option<IgnoredAny>,
    #[serde(default, rename = "language")]
    _language: Option<IgnoredAny>,
    #[serde(default)]
    extension: Vec<Extension>,
    #[serde(default)]
    identifier: Vec<Identifier>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    name: Vec<HumanName>,
    #[serde(default)]
    gender: Option<String>,
    #[serde(default)]
    birth_date: Option<NaiveDate>,
    #[serde(default)]
    managing_organization: Option<Reference>,
    // Read and ignored.
    #[serde(default, rename = "telecom")]
    _telecom: Option<IgnoredAny>,
    #[serde(default, rename = "address")]
    _address: Option<IgnoredAny>,
    #[serde(default, rename = "maritalStatus")]
    _marital_status: Option<IgnoredAny>,
    #[serde(default, rename = "multipleBirthBoolean")]
    _multiple_birth_boolean: Option<IgnoredAny>,
    #[serde(default, rename = "multipleBirthInteger")]
    _multiple_birth_integer: Option<IgnoredAny>,
    #[serde(default, rename = "deceasedBoolean")]
    _deceased_boolean: Option<IgnoredAny>,
    #[serde(default, rename = "deceasedDateTime")]
    _deceased_date_time: Option<IgnoredAny>,
    #[serde(default, rename = "contact")]
    _contact: Option<IgnoredAny>,
    #[serde(default, rename = "communication")]
    _communication: Option<IgnoredAny>,
    #[serde(default, rename = "generalPractitioner")]
    _general_practitioner: Option<IgnoredAny>,
    #[serde(default, rename = "photo")]
    _photo: Option<IgnoredAny>,
}

/// The hospital a new Patient belongs to: the caller's own, or for staff the one named by
/// `managingOrganization.identifier` (or, failing that, the one whose MRN system the identifier
/// uses).
fn hospital_of(conn: &mut DbConn, input: &PatientIn, scope: Option<i64>) -> ApiResult<Hospital> {
    let named = input
        .managing_organization
        .as_ref()
        .and_then(|o| o.identifier.as_ref())
        .filter(|i| i.system.as_deref() == Some(&hospital_code_system()))
        .and_then(|i| i.value.clone());
    if let Some(h) = scope {
        let own = hospitals::find(conn, h)?.ok_or_else(|| ApiError::not_found("hospital"))?;
        if named.as_deref().is_some_and(|code| code != own.code) {
            return Err(ApiError::field(
                "managingOrganization",
                "is your own hospital (or absent) for a hospital account",
            ));
        }
        return Ok(own);
    }
    let all = hospitals::all(conn)?;
    let found: Vec<Hospital> = match named {
        Some(code) => all.into_iter().filter(|h| h.code == code).collect(),
        None => all
            .into_iter()
            .filter(|h| {
                let system = h.mrn_system();
                input.identifier.iter().any(|i| i.system.as_deref() == Some(&system))
            })
            .collect(),
    };
    match <[Hospital; 1]>::try_from(found) {
        Ok([h]) if h.active => Ok(h),
        Ok([h]) => Err(ApiError::refused(
            ErrorCode::UnknownHospital,
            format!("hospital {} is inactive", h.code),
            Vec::new(),
        )),
        Err(_) => Err(ApiError::refused(
            ErrorCode::UnknownHospital,
            format!(
                "name the patient's hospital in managingOrganization.identifier (system {}, value = the hospital code)",
                hospital_code_system()
            ),
            Vec::new(),
        )),
    }
}

/// The MRN: the identifier in the hospital's MRN system, or a sole identifier with no system.
fn mrn_of(identifiers: &[Identifier], hospital: &Hospital) -> Result<String, String> {
    let system = hospital.mrn_system();
    let in_system: Vec<&Identifier> = identifiers
        .iter()
        .filter(|i| i.system.as_deref() == Some(&system))
        .collect();
    let chosen = match (in_system.as_slice(), identifiers) {
        ([one], _) => *one,
        ([], [one]) if one.system.is_none() => one,
        ([], _) => return Err(format!("needs the MRN as an identifier with system {system}")),
        _ => return Err(format!("has more than one identifier with system {system}")),
    };
    chosen
        .value
        .clone()
        .ok_or_else(|| "the MRN identifier has no value".to_owned())
}

/// Reads a Patient into the input `/api/v1` takes; every problem is listed at once.
fn patient_input(input: &PatientIn, hospital: &Hospital, scope: Option<i64>) -> ApiResult<PatientInput> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };
    if input.resource_type != "Patient" {
        bad("resourceType", "must be Patient".to_owned());
    }
    if input.active == Some(false) {
        bad("active", "an inactive patient cannot be registered".to_owned());
    }
    let mrn = mrn_of(&input.identifier, hospital).unwrap_or_else(|m| {
        bad("identifier", m);
        String::new()
    });
    let name = input
        .name
        .iter()
        .find(|n| n.use_.as_deref() == Some("official"))
        .or_else(|| input.name.first());
    let family = name.and_then(|n| n.family.clone()).unwrap_or_default();
    let given = name.map(|n| n.given.join(" ")).unwrap_or_default();
    if family.is_empty() {
        bad("name", "needs a family name".to_owned());
    }
    if given.is_empty() {
        bad("name", "needs a given name".to_owned());
    }
    let sex = match input.gender.as_deref() {
        Some("female") => Sex::Female,
        Some("male") => Sex::Male,
        Some("other" | "unknown") | None => Sex::Unknown,
        Some(g) => {
            bad("gender", format!("{g} is not male, female, other or unknown"));
            Sex::Unknown
        }
    };
    if input.birth_date.is_none() {
        bad("birthDate", "is required (YYYY-MM-DD)".to_owned());
    }
    let ext = &input.extension;
    let one = |name: &str| extension(ext, name);
    let weight = match one("body-weight") {
        Ok(Some(e)) => e.value_quantity.as_ref().and_then(|q| q.value_in("kg")),
        Ok(None) => None,
        Err(m) => {
            bad("extension", m);
            None
        }
    };
    if weight.is_none() {
        bad(
            "extension",
            format!(
                "needs the body weight: extension {} with valueQuantity in UCUM kg",
                super::model::extension_url("body-weight")
            ),
        );
    }
    let declared = match one("declared-abo-rhd") {
        Ok(Some(e)) => e
            .value_coding
            .as_ref()
            .filter(|c| c.system.as_deref() == Some(ISBT_ABO_RHD))
            .and_then(|c| c.code.as_deref())
            .and_then(isbt128::group_of_code)
            .and_then(|(abo, rhd)| abo.zip(rhd)),
        Ok(None) => None,
        Err(m) => {
            bad("extension", m);
            None
        }
    };
    if declared.is_none() {
        bad(
            "extension",
            format!(
                "needs the ABO/RhD group the hospital knows: extension {} with valueCoding in {ISBT_ABO_RHD} (ISBT 128 Table 4, e.g. 62 = A RhD positive)",
                super::model::extension_url("declared-abo-rhd")
            ),
        );
    }
    let cmv = match one("cmv-serostatus") {
        Ok(Some(e)) => match e.value_code.as_deref().and_then(Cmv::parse) {
            Some(c) => c,
            None => {
                bad(
                    "extension",
                    "cmv-serostatus is negative, positive or unknown".to_owned(),
                );
                Cmv::Unknown
            }
        },
        Ok(None) => Cmv::Unknown,
        Err(m) => {
            bad("extension", m);
            Cmv::Unknown
        }
    };
    let flag = |name: &str, errors: &mut Vec<FieldError>| match extension(ext, name) {
        Ok(e) => e.and_then(|e| e.value_boolean),
        Err(m) => {
            errors.push(FieldError {
                field: "extension".to_owned(),
                message: m,
            });
            None
        }
    };
    let granulocyte_antibodies = flag("granulocyte-antibodies", &mut errors);
    let childbearing_potential = flag("childbearing-potential", &mut errors);
    let hla_antibodies: Vec<String> = extensions(ext, "hla-antibody")
        .filter_map(|e| e.value_string.clone())
        .collect();
    fn text<const MIN: usize, const MAX: usize>(
        field: &str,
        value: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<Text<MIN, MAX>> {
        if value.is_empty() {
            return None; // already reported
        }
        Text::field(field, value)
            .map_err(|e| errors.extend(e.problem().errors))
            .ok()
    }
    let mrn = text::<1, 64>("identifier", &mrn, &mut errors);
    let given = text::<1, 100>("name.given", &given, &mut errors);
    let family = text::<1, 100>("name.family", &family, &mut errors);
    let (Some(mrn), Some(given_name), Some(family_name), Some(birth), Some(weight_kg), Some((abo, rhd)), true) = (
        mrn,
        given,
        family,
        input.birth_date,
        weight,
        declared,
        errors.is_empty(),
    ) else {
        return Err(ApiError::validation(errors));
    };
    Ok(PatientInput {
        mrn,
        given_name,
        family_name,
        date_of_birth: birth,
        sex,
        weight_kg,
        abo,
        rhd,
        cmv,
        childbearing_potential,
        hla_antibodies,
        granulocyte_antibodies,
        hospital_id: scope.is_none().then_some(hospital.id),
    })
}

/// The patients an `identifier` token matches within what the caller may see.
fn matching(conn: &mut DbConn, token: Option<&Token>, scope: Option<i64>) -> ApiResult<PatientFilter> {
    let all = hospitals::all(conn)?;
    let mut hospital_ids: Vec<i64> = all
        .iter()
        .filter(|h| scope.is_none_or(|s| s == h.id))
        .filter(|h| {
            token.is_none_or(|t| match t.system.as_deref() {
                None => true,
                Some(system) => system == h.mrn_system(),
            })
        })
        .map(|h| h.id)
        .collect();
    hospital_ids.sort_unstable();
    Ok(PatientFilter {
        hospital_ids: (scope.is_some() || token.is_some_and(|t| t.system.is_some())).then_some(hospital_ids),
        mrn: token.and_then(|t| t.code.clone()),
    })
}

fn resources(conn: &mut DbConn, list: Vec<PatientView>) -> ApiResult<Vec<PatientResource>> {
    let mut cache: Vec<Hospital> = Vec::new();
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let h = match cache.iter().find(|h| h.id == p.hospital_id) {
            Some(h) => h.clone(),
            None => {
                let h = hospitals::find(conn, p.hospital_id)?.ok_or_else(|| ApiError::not_found("hospital"))?;
                cache.push(h.clone());
                h
            }
        };
        out.push(resource(&p, &h));
    }
    Ok(out)
}

/// `GET /Patient/{id}`.
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = super::path_id(&id, "Patient")?;
    let found = state
        .db(with_policy(move |conn, policy| {
            let p = work::get(conn, id, scope, policy)?;
            let h = hospitals::find(conn, p.hospital_id)?.ok_or_else(|| ApiError::not_found("hospital"))?;
            Ok(resource(&p, &h))
        }))
        .await?;
    read(found)
}

/// `GET /Patient?identifier=system|mrn`.
pub async fn search(state: web::Data<AppState>, caller: AuthUser, req: HttpRequest) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let search = Search::parse(req.query_string(), &search_names("Patient"))?;
    let token = search.one("identifier")?.map(Token::parse);
    let after = search.after_id()?;
    let count = search.count;
    let page = state
        .db(with_policy(move |conn, policy| {
            let filter = matching(conn, token.as_ref(), scope)?;
            let total = rows::count(conn, &filter)?;
            let found = rows::search(conn, &filter, after, count + 1)?;
            let views = work::views(conn, found, policy)?;
            Ok(Page::of(total, resources(conn, views)?, count))
        }))
        .await?;
    bundle(&req, &search, page)
}

/// `POST /Patient`, conditional with `If-None-Exist: identifier=system|mrn`: one match is
/// answered 200 with it and nothing is written; none creates; several is 412.
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
    body: crate::extract::JsonBody<PatientIn>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let condition = super::if_none_exist(&req, "Patient")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let retry = condition.clone();
    let outcome = state
        .write(with_policy(move |conn, policy| {
            if let Some(found) = existing(conn, condition.as_ref(), scope, policy)? {
                return Ok((false, found));
            }
            let hospital = hospital_of(conn, &input, scope)?;
            let patient = patient_input(&input, &hospital, scope)?;
            let made = work::create(conn, &actor, patient, scope, policy)?;
            Ok((true, resource(&made, &hospital)))
        }))
        .await;
    match outcome {
        Ok((true, r)) => created(&req, r),
        Ok((false, r)) => read(r),
        // A concurrent conditional create of the same MRN won: answer with its patient.
        Err(e) if e.code() == ErrorCode::MrnTaken && retry.is_some() => {
            let found = state
                .db(with_policy(move |conn, policy| {
                    existing(conn, retry.as_ref(), scope, policy)
                }))
                .await?;
            found.map_or(Err(e), read)
        }
        Err(e) => Err(e),
    }
}

/// The one patient an `If-None-Exist` condition matches; several is 412.
fn existing(
    conn: &mut DbConn,
    condition: Option<&Token>,
    scope: Option<i64>,
    policy: &crate::domain::policy::Policy,
) -> ApiResult<Option<PatientResource>> {
    let Some(token) = condition else { return Ok(None) };
    let filter = matching(conn, Some(token), scope)?;
    let found = rows::search(conn, &filter, None, 2)?;
    if found.len() > 1 {
        return Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            "If-None-Exist matches more than one patient",
        ));
    }
    let views = work::views(conn, found, policy)?;
    Ok(resources(conn, views)?.pop())
}
