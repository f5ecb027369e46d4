//! `Observation`: three kinds of laboratory result about a patient (docs/fhir-parts/observation.md).
//!
//! * `abo-rh-<patient id>`: the blood group of record (LOINC 882-1), from the blood bank's typings;
//! * `xm-<crossmatch id>`: a crossmatch result (LOINC 1250-0 for red-cell crossmatches);
//! * `anc-<id>`: an absolute neutrophil count (LOINC 751-8), the one kind a client creates.
//!
//! Read and search assemble them per patient from the services; a hospital sees its own
//! patients' only. A search names a patient or an order: a search over every patient is refused.

use std::collections::{BTreeSet, HashMap};

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::{
    CodeableConcept, Coding, Extension, LOINC, Meta, Quantity, Reference, RhdKnown, UCUM, abo_rhd_coding, code_system,
};
use super::search::{Search, Token, invalid, reference_id};
use super::{Page, bundle, created, metadata, read};
use crate::auth::AuthUser;
use crate::domain::group::GroupStatus;
use crate::domain::outcome::AncStatus;
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, ErrorCode, Validator};
use crate::extract::JsonBody;
use crate::routes::with_policy;
use crate::services::allocations::counts::{self as outcomes, AncInput, AncRecord};
use crate::services::allocations::{self, CrossmatchMethod, CrossmatchResult, CrossmatchView, MAX_ANC};
use crate::services::patients::{self, PatientView};
use crate::services::requests;
use crate::state::AppState;
use crate::store::DbConn;
use crate::store::allocations as allocation_rows;

pub const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
pub const GROUP_CODE: (&str, &str) = ("882-1", "ABO and Rh group [Type] in Blood");
pub const CROSSMATCH_CODE: (&str, &str) = ("1250-0", "Major crossmatch [Interpretation]");
pub const ANC_CODE: (&str, &str) = ("751-8", "Neutrophils [#/volume] in Blood by Automated count");
/// granulo's code for a leukocyte (granulocyte) crossmatch, which LOINC 1250-0 (a red-cell
/// major crossmatch) does not describe.
pub const LEUKOCYTE_CROSSMATCH: (&str, &str) = ("leukocyte-crossmatch", "Leukocyte (granulocyte) crossmatch");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/Observation")
            .route(web::get().to(search))
            .route(web::post().to(create)),
    )
    .service(web::resource("/Observation/{id}").route(web::get().to(read_one)));
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    resource_type: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Meta>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extension: Vec<Extension>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    based_on: Vec<Reference>,
    status: &'static str,
    category: Vec<CodeableConcept>,
    code: CodeableConcept,
    subject: Reference,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    focus: Vec<Reference>,
    effective_date_time: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_quantity: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_codeable_concept: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    note: Vec<Note>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    specimen: Option<Reference>,
    #[serde(skip)]
    updated: DateTime<Utc>,
}

/// A whole number of cells per µL (a UCUM Quantity written without a decimal point, as counted).
#[derive(Debug, Clone, Serialize)]
struct Count {
    value: i32,
    unit: &'static str,
    system: &'static str,
    code: &'static str,
}

/// An Annotation with its author and time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Note {
    #[serde(skip_serializing_if = "Option::is_none")]
    author_string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<DateTime<Utc>>,
    text: String,
}

impl Note {
    fn text(text: impl Into<String>) -> Self {
        Self {
            author_string: None,
            time: None,
            text: text.into(),
        }
    }
}

super::model::resource!(Observation, "Observation", updated);

impl Observation {
    fn new(id: String, code: CodeableConcept, patient_id: i64, effective: DateTime<Utc>, status: &'static str) -> Self {
        Self {
            resource_type: "Observation",
            id,
            meta: None,
            extension: Vec::new(),
            based_on: Vec::new(),
            status,
            category: vec![CodeableConcept::coded(Coding::new(
                CATEGORY_SYSTEM,
                "laboratory",
                "Laboratory",
            ))],
            code,
            subject: Reference::to("Patient", patient_id),
            focus: Vec::new(),
            effective_date_time: effective,
            issued: None,
            value_quantity: None,
            value_codeable_concept: None,
            note: Vec::new(),
            method: None,
            specimen: None,
            updated: effective,
        }
    }

    fn order_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.based_on.iter().filter_map(|r| r.id_of("ServiceRequest"))
    }
}

fn loinc(code: (&str, &str)) -> CodeableConcept {
    CodeableConcept::coded(Coding::new(LOINC, code.0, code.1))
}

/// An Observation id: which record it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Group(i64),
    Crossmatch(i64),
    Anc(i64),
}

impl Id {
    fn parse(text: &str) -> Option<Self> {
        let number = |rest: &str| -> Option<i64> {
            // Exactly as this server writes it: no sign, no leading zero.
            let n: i64 = rest.parse().ok().filter(|n| *n > 0)?;
            (n.to_string() == rest).then_some(n)
        };
        if let Some(rest) = text.strip_prefix("abo-rh-") {
            number(rest).map(Self::Group)
        } else if let Some(rest) = text.strip_prefix("xm-") {
            number(rest).map(Self::Crossmatch)
        } else if let Some(rest) = text.strip_prefix("anc-") {
            number(rest).map(Self::Anc)
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The blood group of record

/// The patient's blood group of record, once the blood bank has typed at least one sample.
///
/// A group reads as a group only where the typings agree: discordant ABO gives no value at all,
/// discordant RhD gives the ABO group with "RhD not specified". Anything short of a confirmed
/// group is `preliminary`.
fn group_observation(p: &PatientView) -> Option<Observation> {
    let g = &p.group_of_record;
    let newest_sample = g.typings.iter().max_by_key(|t| (t.drawn_at, t.sample_id))?;
    let issued = g.typings.iter().map(|t| t.typed_at).max()?;
    let status = if g.status == GroupStatus::Confirmed {
        "final"
    } else {
        "preliminary"
    };
    let mut o = Observation::new(
        format!("abo-rh-{}", p.id),
        loinc(GROUP_CODE),
        p.id,
        newest_sample.drawn_at,
        status,
    );
    o.issued = Some(issued);
    o.updated = issued;
    o.specimen = Some(Reference::to("Specimen", newest_sample.sample_id));
    let mut status_ext = Extension::ours("group-of-record-status");
    status_ext.value_code = Some(g.status.as_str().to_owned());
    o.extension.push(status_ext);
    match (g.abo, g.rhd) {
        (Some(abo), Some(rhd)) => {
            o.value_codeable_concept = Some(CodeableConcept::coded(abo_rhd_coding(abo, RhdKnown::Typed(rhd))));
        }
        (Some(abo), None) => {
            o.value_codeable_concept = Some(CodeableConcept {
                coding: vec![abo_rhd_coding(abo, RhdKnown::NotSpecified)],
                text: Some(format!("{abo}; RhD not determined: the RhD typings disagree")),
            });
            o.note.push(Note::text(
                "The blood bank's RhD typings of this patient disagree: RhD is not determined and the patient counts as RhD-negative for selection until the blood bank resolves it.",
            ));
        }
        (None, _) => {
            o.note.push(Note::text(
                "The blood bank's ABO typings of this patient disagree: there is no blood group of record. Only group O units are selected until the blood bank resolves it.",
            ));
        }
    }
    if g.status == GroupStatus::Unconfirmed {
        o.note.push(Note::text(
            "Not yet confirmed: a second sample drawn at a different time must type the same. Until then only group O units are ABO-eligible and the patient counts as RhD-negative.",
        ));
    }
    Some(o)
}

// ---------------------------------------------------------------------------------------------
// Crossmatches

/// `staff`: the caller sees who resolved a result; a hospital sees only that the bank did.
fn crossmatch_observation(x: &CrossmatchView, orders: &[i64], staff: bool) -> Observation {
    use crate::domain::compatibility::CrossmatchKind;
    let code = match x.kind {
        CrossmatchKind::RedCell => loinc(CROSSMATCH_CODE),
        CrossmatchKind::Leukocyte => CodeableConcept::coded(Coding::new(
            code_system("observation-code"),
            LEUKOCYTE_CROSSMATCH.0,
            LEUKOCYTE_CROSSMATCH.1,
        )),
    };
    let mut o = Observation::new(format!("xm-{}", x.id), code, x.patient_id, x.performed_at, "final");
    o.based_on = orders.iter().map(|r| Reference::to("ServiceRequest", *r)).collect();
    o.focus = vec![Reference::to("BiologicallyDerivedProduct", x.unit_id)];
    o.specimen = Some(Reference::to("Specimen", x.sample_id));
    let (code, display) = match x.result {
        CrossmatchResult::Compatible => ("compatible", "Compatible"),
        CrossmatchResult::Incompatible => ("incompatible", "Incompatible"),
    };
    o.value_codeable_concept = Some(CodeableConcept::coded(Coding::new(
        code_system("crossmatch-result"),
        code,
        display,
    )));
    o.method = Some(CodeableConcept {
        coding: CrossmatchMethod::parse(&x.method)
            .map(|m| Coding::new(code_system("crossmatch-method"), m.as_str(), method_display(m)))
            .into_iter()
            .collect(),
        text: Some(x.method.clone()),
    });
    if let Some(r) = &x.resolution {
        o.note.push(Note {
            author_string: Some(if staff {
                r.resolved_by.clone()
            } else {
                super::dispense::STAFF_TO_HOSPITALS.to_owned()
            }),
            time: Some(r.resolved_at),
            text: format!(
                "Resolved by a medical director: {}. The result stands as recorded; it no longer blocks this unit for this patient.",
                r.reason
            ),
        });
        o.updated = o.updated.max(r.resolved_at);
    }
    o
}

fn method_display(m: CrossmatchMethod) -> &'static str {
    match m {
        CrossmatchMethod::Iat => "Indirect antiglobulin test",
        CrossmatchMethod::ImmediateSpin => "Immediate spin",
        CrossmatchMethod::Electronic => "Electronic (computer) crossmatch",
        CrossmatchMethod::Gift => "Granulocyte immunofluorescence test",
        CrossmatchMethod::Gat => "Granulocyte agglutination test",
        CrossmatchMethod::FlowCytometry => "Flow cytometry",
    }
}

/// The requests of `patient_id` that `unit_id` is or was allocated to, ascending.
fn orders_of(conn: &mut DbConn, unit_id: i64, patient_id: i64) -> ApiResult<Vec<i64>> {
    let mut out = BTreeSet::new();
    for a in allocation_rows::of_unit(conn, unit_id)? {
        if out.contains(&a.request_id) {
            continue;
        }
        if crate::store::requests::find(conn, a.request_id)?.is_some_and(|r| r.patient_id == patient_id) {
            out.insert(a.request_id);
        }
    }
    Ok(out.into_iter().collect())
}

/// Every crossmatch of the patient's samples.
fn crossmatches_of(conn: &mut DbConn, patient_id: i64) -> ApiResult<Vec<CrossmatchView>> {
    const PAGE: i64 = 500;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = allocations::crossmatches(conn, None, Some(patient_id), after, PAGE)?;
        after = page.last().map(|x| x.id);
        out.extend(page);
        if next.is_none() || after.is_none() {
            return Ok(out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Neutrophil counts

fn anc_observation(r: &AncRecord) -> Observation {
    let status = match r.status {
        AncStatus::Final => "final",
        AncStatus::Amended => "amended",
        AncStatus::Corrected => "corrected",
    };
    let mut o = Observation::new(
        format!("anc-{}", r.id),
        loinc(ANC_CODE),
        r.patient_id,
        r.effective_at,
        status,
    );
    o.issued = Some(r.created_at);
    o.updated = r.created_at;
    o.focus = r
        .allocation_id
        .map(|a| Reference::to("BiologicallyDerivedProductDispense", a))
        .into_iter()
        .collect();
    o.value_quantity = Some(Count {
        value: r.anc_per_ul,
        unit: "/uL",
        system: UCUM,
        code: "/uL",
    });
    o
}

// ---------------------------------------------------------------------------------------------
// Read and search

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("Observation/{id} not found"))
}

/// The patient if the caller may see it; `None` when it does not exist or is another
/// hospital's.
fn visible_patient(conn: &mut DbConn, id: i64, scope: Option<i64>, policy: &Policy) -> ApiResult<Option<PatientView>> {
    match patients::get(conn, id, scope, policy) {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn load(conn: &mut DbConn, text: &str, scope: Option<i64>, policy: &Policy) -> ApiResult<Observation> {
    let id = Id::parse(text).ok_or_else(|| not_found(text))?;
    match id {
        Id::Group(patient) => visible_patient(conn, patient, scope, policy)?
            .as_ref()
            .and_then(group_observation)
            .ok_or_else(|| not_found(text)),
        Id::Crossmatch(x) => {
            let found = match allocations::find_crossmatch(conn, x) {
                Ok(found) => found,
                Err(e) if e.code() == ErrorCode::NotFound => return Err(not_found(text)),
                Err(e) => return Err(e),
            };
            if visible_patient(conn, found.patient_id, scope, policy)?.is_none() {
                return Err(not_found(text));
            }
            let orders = orders_of(conn, found.unit_id, found.patient_id)?;
            Ok(crossmatch_observation(&found, &orders, scope.is_none()))
        }
        Id::Anc(r) => match outcomes::find(conn, r, scope) {
            Ok(found) => Ok(anc_observation(&found)),
            Err(e) if e.code() == ErrorCode::NotFound => Err(not_found(text)),
            Err(e) => Err(e),
        },
    }
}

async fn read_one(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = id.into_inner();
    let found = state
        .db(with_policy(move |conn, policy| load(conn, &id, scope, policy)))
        .await?;
    read(found)
}

/// Every observation of a patient the caller may see (none for another hospital's).
fn of_patient(conn: &mut DbConn, patient_id: i64, scope: Option<i64>, policy: &Policy) -> ApiResult<Vec<Observation>> {
    let Some(patient) = visible_patient(conn, patient_id, scope, policy)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Observation> = group_observation(&patient).into_iter().collect();
    let mut orders: HashMap<i64, Vec<i64>> = HashMap::new();
    for x in crossmatches_of(conn, patient_id)? {
        let of_unit = match orders.entry(x.unit_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(orders_of(conn, x.unit_id, patient_id)?),
        };
        out.push(crossmatch_observation(&x, of_unit, scope.is_none()));
    }
    out.extend(outcomes::of_patient(conn, patient_id)?.iter().map(anc_observation));
    Ok(out)
}

/// A search: AND across repeated parameters, OR within one (commas).
#[derive(Debug, Clone)]
struct Criteria {
    patients: Vec<BTreeSet<i64>>,
    orders: Vec<BTreeSet<i64>>,
    codes: Vec<Vec<Token>>,
}

impl Criteria {
    fn of(search: &Search) -> ApiResult<Self> {
        let ids = |name: &str, ty: &str| -> ApiResult<Vec<BTreeSet<i64>>> {
            search
                .any_of(name)
                .iter()
                .map(|list| list.iter().map(|v| reference_id(name, v, ty)).collect())
                .collect()
        };
        let c = Self {
            patients: ids("patient", "Patient")?,
            orders: ids("based-on", "ServiceRequest")?,
            codes: search
                .any_of("code")
                .iter()
                .map(|list| list.iter().map(|v| Token::parse(v)).collect())
                .collect(),
        };
        if c.patients.is_empty() && c.orders.is_empty() {
            return Err(invalid(
                "patient",
                "or based-on is required: an Observation search names a patient (patient=Patient/<id>) or an order (based-on=ServiceRequest/<id>); a search over every patient is refused",
            ));
        }
        Ok(c)
    }

    /// The patients whose observations may match.
    fn patients(&self, conn: &mut DbConn, scope: Option<i64>) -> ApiResult<BTreeSet<i64>> {
        let mut sets = self.patients.clone();
        for group in &self.orders {
            let mut of_orders = BTreeSet::new();
            for id in group {
                match requests::find(conn, *id, scope) {
                    Ok(r) => {
                        of_orders.insert(r.patient_id);
                    }
                    Err(e) if e.code() == ErrorCode::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            sets.push(of_orders);
        }
        let mut sets = sets.into_iter();
        let first = sets.next().unwrap_or_default();
        Ok(sets.fold(first, |acc, s| acc.intersection(&s).copied().collect()))
    }

    fn matches(&self, o: &Observation) -> bool {
        let codes_match = self.codes.iter().all(|any| {
            any.iter().any(|t| {
                o.code
                    .coding
                    .iter()
                    .any(|c| t.matches(c.system.as_deref().unwrap_or(""), c.code.as_deref().unwrap_or("")))
            })
        });
        let orders: BTreeSet<i64> = o.order_ids().collect();
        let orders_match = self.orders.iter().all(|any| any.iter().any(|r| orders.contains(r)));
        codes_match && orders_match
    }
}

async fn search(req: HttpRequest, state: web::Data<AppState>, caller: AuthUser) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let search = Search::parse(super::query(&req), &metadata::search_names("Observation"))?;
    let criteria = Criteria::of(&search)?;
    let (after, count) = (search.after.clone(), search.count);
    let (total, rows) = state
        .db(with_policy(move |conn, policy| {
            let mut found = Vec::new();
            for patient in criteria.patients(conn, scope)? {
                found.extend(
                    of_patient(conn, patient, scope, policy)?
                        .into_iter()
                        .filter(|o| criteria.matches(o)),
                );
            }
            found.sort_by(|a, b| a.id.cmp(&b.id));
            let total = i64::try_from(found.len()).unwrap_or(i64::MAX);
            let page: Vec<Observation> = found
                .into_iter()
                .filter(|o| after.as_deref().is_none_or(|a| o.id.as_str() > a))
                .take(usize::try_from(count).unwrap_or(0).saturating_add(1))
                .collect();
            Ok((total, page))
        }))
        .await?;
    bundle(&req, &search, Page::of(total, rows, count))
}

// ---------------------------------------------------------------------------------------------
// Create: absolute neutrophil counts only

/// An Observation as a client sends it: the elements of a neutrophil count. Any other element is
/// refused, never dropped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObservationIn {
    #[serde(default)]
    resource_type: Option<String>,
    #[serde(default, rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "meta")]
    _meta: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "text")]
    _text: Option<serde::de::IgnoredAny>,
    /// Read and ignored: granulo defines no extension on a count it is sent.
    #[serde(default, rename = "extension")]
    _extension: Vec<Extension>,
    #[serde(default)]
    status: Option<String>,
    /// Read and ignored: a count is always `laboratory`.
    #[serde(default, rename = "category")]
    _category: Vec<CodeableConcept>,
    #[serde(default)]
    code: Option<CodeableConcept>,
    #[serde(default)]
    subject: Option<Reference>,
    #[serde(default)]
    focus: Vec<Reference>,
    #[serde(default)]
    effective_date_time: Option<String>,
    /// Read and ignored: `issued` is when granulo recorded it.
    #[serde(default, rename = "issued")]
    _issued: Option<serde::de::IgnoredAny>,
    /// Read and ignored: the laboratory that counted.
    #[serde(default, rename = "performer")]
    _performer: Vec<Reference>,
    #[serde(default)]
    value_quantity: Option<Quantity>,
}

/// Cells per µL from a UCUM quantity: `/uL` as it is; `10*9/L` and `10*3/uL` (the same
/// quantity) × 1000, rounded to a whole cell.
pub fn anc_per_ul(q: &Quantity) -> Result<u32, String> {
    if q.comparator.is_some() {
        return Err("must be an exact count: a comparator (<, >) is not accepted".to_owned());
    }
    let Some(value) = q.value.filter(|v| v.is_finite()) else {
        return Err("needs a value".to_owned());
    };
    if q.system.as_deref() != Some(UCUM) {
        return Err(format!("must be in UCUM units (system {UCUM})"));
    }
    let factor = match q.code.as_deref() {
        Some("/uL") => 1.0,
        Some("10*9/L" | "10*3/uL") => 1000.0,
        _ => return Err("code must be the UCUM unit /uL, 10*9/L or 10*3/uL".to_owned()),
    };
    let per_ul = (value * factor).round();
    if value < 0.0 || per_ul > f64::from(MAX_ANC) {
        return Err(format!("must be between 0 and {MAX_ANC} /uL"));
    }
    // In 0..=MAX_ANC, so the conversion is exact.
    Ok(per_ul as u32)
}

fn to_input(o: ObservationIn) -> ApiResult<AncInput> {
    let code_ok = o.code.as_ref().is_some_and(|c| {
        let mut loinc = c.coding.iter().filter(|c| c.system.as_deref() == Some(LOINC));
        let first = loinc.next();
        first.is_some_and(|f| f.code.as_deref() == Some(ANC_CODE.0))
            && loinc.all(|c| c.code.as_deref() == Some(ANC_CODE.0))
    });
    if !code_ok {
        return Err(ApiError::field(
            "code",
            format!(
                "only an absolute neutrophil count can be created: code must be {LOINC}|{} ({}); blood groups and crossmatches are recorded by the blood bank",
                ANC_CODE.0, ANC_CODE.1
            ),
        ));
    }
    let mut v = Validator::new();
    if o.resource_type.as_deref().is_some_and(|t| t != "Observation") {
        v.push("resourceType", "must be Observation");
    }
    let status = match o.status.as_deref() {
        Some(s) => AncStatus::parse(s),
        None => None,
    };
    v.check(
        status.is_some(),
        "status",
        "must be final, amended or corrected: only a count that stands is recorded",
    );
    let patient = o.subject.as_ref().and_then(|s| s.id_of("Patient"));
    v.check(patient.is_some(), "subject", "must be Patient/<id>");
    let allocation = match o.focus.as_slice() {
        [] => None,
        [one] => {
            let id = one.id_of("BiologicallyDerivedProductDispense");
            v.check(id.is_some(), "focus", "must be BiologicallyDerivedProductDispense/<id>");
            id
        }
        _ => {
            v.push("focus", "names at most one dispense");
            None
        }
    };
    let effective = o
        .effective_date_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    v.check(
        effective.is_some(),
        "effectiveDateTime",
        "is required: when the sample was taken, to the second, with its time-zone offset",
    );
    let count = match o.value_quantity.as_ref().map(anc_per_ul) {
        Some(Ok(n)) => Some(n),
        Some(Err(message)) => {
            v.push("valueQuantity", message);
            None
        }
        None => {
            v.push("valueQuantity", "is required");
            None
        }
    };
    v.finish()?;
    match (status, patient, effective, count) {
        (Some(status), Some(patient_id), Some(effective_at), Some(anc_per_ul)) => Ok(AncInput {
            patient_id,
            allocation_id: allocation,
            anc_per_ul,
            effective_at,
            status,
        }),
        _ => Err(ApiError::internal(anyhow::anyhow!(
            "an Observation passed validation with a missing element"
        ))),
    }
}

async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<ObservationIn>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    if req.headers().contains_key("If-None-Exist") {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "conditional create (If-None-Exist) is not supported for Observation",
        ));
    }
    let input = to_input(body.into_inner())?;
    let actor = caller.actor();
    let recorded = state
        .write(move |conn| outcomes::record(conn, &actor, input, scope))
        .await?;
    created(&req, anc_observation(&recorded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(value: f64, code: &str) -> Quantity {
        Quantity::ucum(value, code, code)
    }

    #[test]
    fn counts_convert_to_cells_per_microlitre() {
        let cases = [
            (q(950.0, "/uL"), Ok(950)),
            (q(950.4, "/uL"), Ok(950)),
            (q(0.0, "/uL"), Ok(0)),
            (q(1.2, "10*9/L"), Ok(1200)),
            (q(0.0456, "10*9/L"), Ok(46)),
            (q(2.5, "10*3/uL"), Ok(2500)),
            (q(100.0, "10*9/L"), Ok(100_000)),
        ];
        for (quantity, want) in cases {
            assert_eq!(anc_per_ul(&quantity).map_err(|_| ()), want, "{quantity:?}");
        }
        let refused = [
            q(100.001, "10*9/L"),
            q(-1.0, "/uL"),
            q(950.0, "/mL"),
            q(950.0, "10*9/uL"),
            q(f64::NAN, "/uL"),
            Quantity {
                system: None,
                ..q(950.0, "/uL")
            },
            Quantity {
                comparator: Some("<".into()),
                ..q(500.0, "/uL")
            },
            Quantity {
                code: None,
                ..q(950.0, "/uL")
            },
            Quantity {
                value: None,
                ..q(950.0, "/uL")
            },
        ];
        for quantity in refused {
            assert!(anc_per_ul(&quantity).is_err(), "{quantity:?}");
        }
    }

    #[test]
    fn ids_name_their_kind_exactly() {
        assert_eq!(Id::parse("abo-rh-12"), Some(Id::Group(12)));
        assert_eq!(Id::parse("xm-3"), Some(Id::Crossmatch(3)));
        assert_eq!(Id::parse("anc-7"), Some(Id::Anc(7)));
        for bad in [
            "abo-rh-0", "xm-07", "anc-+7", "anc-", "12", "xm-3x", "ABO-RH-1", "anc--1",
        ] {
            assert_eq!(Id::parse(bad), None, "{bad}");
        }
    }
}
