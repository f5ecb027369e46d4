//! `ServiceRequest`: a hospital's order for a course of granulocytes (docs/fhir-parts/service-request.md).
//! Create, read, search and revoke go through `services::requests`, as on `/api/v1`: the same
//! checks, approval gate, audit and cancellation rules.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel::Connection as _;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::metadata;
use super::model::{
    Annotation, CodeableConcept, CodeableReference, Coding, Extension, Identifier, LOINC, Meta, Period, Quantity,
    Reference, UCUM, V2_0508, code_system, extension,
};
use super::search::{self, DateBound, Search, Token};
use crate::auth::AuthUser;
use crate::domain::policy::Policy;
use crate::domain::requests::{Priority, RequestStatus};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, Validator};
use crate::extract::JsonBody;
use crate::input::Text;
use crate::routes::with_policy;
use crate::services::allocations as allocation_work;
use crate::services::patients;
use crate::services::requests::{
    self as work, IndicationInput, OrderIdentifier, RequestInput, RequestView, Requirements,
};
use crate::state::AppState;
use crate::store::{DbConn, patients as patient_rows, requests as rows};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ServiceRequest")
            .route(web::get().to(search))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/ServiceRequest/{id}")
            .route(web::get().to(read))
            .route(web::put().to(update)),
    );
}

/// FHIR's request status system (search tokens may name it).
const REQUEST_STATUS: &str = "http://hl7.org/fhir/request-status";
/// granulo's product code for what it supplies.
const PRODUCT_CODE: &str = "granulocytes";
const PRODUCT_TEXT: &str = "Granulocytes, apheresis";
/// The LOINC code of the neutrophil count the indication rests on (docs/fhir.md).
const LOINC_NEUTROPHILS: &str = "751-8";
/// The id of the contained ANC Observation.
const ANC_ID: &str = "anc";

// ---------------------------------------------------------------------------------------------
// Mappings between granulo's codes and FHIR's (pure; table tests below).

/// The FHIR status of a request. Declined and cancelled are both `revoked`; the
/// `request-status` extension tells them apart.
pub fn fhir_status(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::PendingApproval => "on-hold",
        RequestStatus::Open => "active",
        RequestStatus::Fulfilled => "completed",
        RequestStatus::Cancelled | RequestStatus::Declined => "revoked",
    }
}

/// The statuses a `status` search token stands for: `None` for a code FHIR does not define,
/// an empty list for one no granulo request ever has.
pub fn statuses_of(code: &str) -> Option<Vec<RequestStatus>> {
    Some(match code {
        "active" => vec![RequestStatus::Open],
        "on-hold" => vec![RequestStatus::PendingApproval],
        "completed" => vec![RequestStatus::Fulfilled],
        "revoked" => vec![RequestStatus::Cancelled, RequestStatus::Declined],
        "draft" | "entered-in-error" | "unknown" => vec![],
        _ => return None,
    })
}

/// The FHIR priority of a request: granulo's `scheduled` is a routine order whose timing says when.
pub fn fhir_priority(p: Priority) -> &'static str {
    match p {
        Priority::Routine | Priority::Scheduled => "routine",
        Priority::Asap => "asap",
        Priority::Stat => "stat",
    }
}

/// granulo's priority for a FHIR one: it has no `urgent`, which it serves as `asap`.
pub fn priority_of(code: &str) -> Option<Priority> {
    match code {
        "routine" => Some(Priority::Routine),
        "urgent" | "asap" => Some(Priority::Asap),
        "stat" => Some(Priority::Stat),
        _ => None,
    }
}

/// An absolute neutrophil count per µL from a UCUM quantity in `/uL`, `10*9/L` or `10*3/uL`.
/// The unit must be named: a bare number could be either scale, a thousandfold apart.
pub fn anc_per_ul(q: &Quantity) -> Result<u32, String> {
    let ucum = q.system.as_deref().is_none_or(|s| s == UCUM);
    let factor = match q.code.as_deref() {
        Some("/uL") if ucum => 1.0,
        Some("10*9/L" | "10*3/uL") if ucum => 1000.0,
        _ => return Err("must be in UCUM /uL, 10*9/L or 10*3/uL (code and system http://unitsofmeasure.org)".into()),
    };
    if q.comparator.is_some() {
        return Err("must be a measured value, without a comparator".into());
    }
    let v = q.value.ok_or("needs a value")?;
    let per_ul = (v * factor).round();
    if !per_ul.is_finite() || per_ul < 0.0 || per_ul > f64::from(u32::MAX) {
        return Err("must be a count of at least 0".into());
    }
    // Whole and within range: checked above.
    Ok(per_ul as u32)
}

// ---------------------------------------------------------------------------------------------
// The resource as served.

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<TimingRepeat>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimingRepeat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds_period: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_unit: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderDetail {
    pub parameter: Vec<OrderParameter>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderParameter {
    pub code: CodeableConcept,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_boolean: Option<bool>,
}

/// The contained neutrophil count the indication rests on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AncObservation {
    resource_type: &'static str,
    id: &'static str,
    status: &'static str,
    code: CodeableConcept,
    subject: Reference,
    value_quantity: Quantity,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRequest {
    resource_type: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Meta>,
    contained: Vec<AncObservation>,
    extension: Vec<Extension>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    identifier: Vec<Identifier>,
    status: &'static str,
    intent: &'static str,
    priority: &'static str,
    code: CodeableReference,
    order_detail: Vec<OrderDetail>,
    quantity_quantity: Quantity,
    subject: Reference,
    occurrence_timing: Timing,
    authored_on: DateTime<Utc>,
    requester: Reference,
    reason: Vec<CodeableReference>,
    supporting_info: Vec<CodeableReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    specimen: Vec<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    note: Vec<Annotation>,
    #[serde(skip)]
    updated_at: DateTime<Utc>,
}

super::model::resource!(ServiceRequest, "ServiceRequest", updated_at);

fn product() -> CodeableConcept {
    CodeableConcept::coded(Coding::new(code_system("product"), PRODUCT_CODE, PRODUCT_TEXT))
}

fn v2_0508(code: &str, display: &str) -> CodeableConcept {
    CodeableConcept::coded(Coding::new(V2_0508, code, display))
}

fn units(n: i64) -> Quantity {
    // `{unit}` is a UCUM annotation: a count of units (bags).
    #[expect(clippy::cast_precision_loss, reason = "at most 30 units")]
    Quantity::ucum(n as f64, "{unit}", "unit")
}

/// The resource for a request: `samples_valid` are the patient's samples valid now.
pub fn resource(v: RequestView, samples_valid: Vec<i64>) -> ServiceRequest {
    let patient = Reference::to("Patient", v.patient_id);
    let extension = vec![
        Extension {
            value_quantity: Some(Quantity::ucum(f64::from(v.indication.refractory_hours), "h", "h")),
            ..Extension::ours("refractory-hours")
        },
        Extension {
            value_code: Some(v.status.as_str().to_owned()),
            ..Extension::ours("request-status")
        },
    ];
    let note = match v.status {
        RequestStatus::Declined => v.decision_reason.as_ref().map(|r| format!("Declined: {r}")),
        RequestStatus::Cancelled => v.cancel_reason.as_ref().map(|r| format!("Cancelled: {r}")),
        _ => None,
    };
    let flag = |b: Option<bool>| Some(b.unwrap_or(false));
    ServiceRequest {
        resource_type: "ServiceRequest",
        id: v.id.to_string(),
        meta: None,
        contained: vec![AncObservation {
            resource_type: "Observation",
            id: ANC_ID,
            status: "final",
            code: CodeableConcept {
                coding: vec![Coding {
                    system: Some(LOINC.to_owned()),
                    code: Some(LOINC_NEUTROPHILS.to_owned()),
                    ..Coding::default()
                }],
                text: Some("Absolute neutrophil count".to_owned()),
            },
            subject: patient.clone(),
            value_quantity: Quantity::ucum(f64::from(v.indication.anc_per_ul), "/uL", "/µL"),
        }],
        extension,
        identifier: v
            .order_identifier
            .iter()
            .map(|o| Identifier {
                use_: None,
                system: o.system.clone(),
                value: Some(o.value.clone()),
            })
            .collect(),
        status: fhir_status(v.status),
        intent: "order",
        priority: fhir_priority(v.priority),
        code: CodeableReference {
            concept: Some(product()),
            reference: None,
        },
        order_detail: vec![OrderDetail {
            parameter: vec![
                OrderParameter {
                    code: v2_0508("IR", "Irradiated"),
                    value_boolean: flag(v.requirements.irradiated),
                },
                OrderParameter {
                    code: v2_0508("CM", "CMV Negative"),
                    value_boolean: flag(v.requirements.cmv_negative),
                },
                OrderParameter {
                    code: v2_0508("HL", "HLA Matched"),
                    value_boolean: flag(v.requirements.hla_compatible),
                },
            ],
        }],
        quantity_quantity: units(i64::from(v.units_requested)),
        subject: patient,
        occurrence_timing: Timing {
            repeat: Some(TimingRepeat {
                bounds_period: Some(Period {
                    start: Some(v.needed_by),
                    end: None,
                }),
                count: Some(i64::from(v.units_requested)),
                frequency: Some(1),
                period: Some(1.0),
                period_unit: Some("d".to_owned()),
            }),
        },
        authored_on: v.created_at,
        requester: Reference::display(v.requested_by),
        reason: vec![CodeableReference {
            concept: Some(CodeableConcept::text(v.indication.infection)),
            reference: None,
        }],
        supporting_info: vec![CodeableReference {
            concept: None,
            reference: Some(Reference {
                reference: Some(format!("#{ANC_ID}")),
                ..Reference::default()
            }),
        }],
        specimen: samples_valid
            .into_iter()
            .map(|s| Reference::to("Specimen", s))
            .collect(),
        note: note.into_iter().map(|text| Annotation { text }).collect(),
        updated_at: v.updated_at,
    }
}

/// The resource of a stored request, with the patient's samples valid now.
fn resource_of(conn: &mut DbConn, v: RequestView) -> ApiResult<ServiceRequest> {
    let now = Utc::now();
    let valid = patient_rows::samples_of(conn, v.patient_id)?
        .into_iter()
        .filter(|s| s.valid_until.and_utc() > now)
        .map(|s| s.id)
        .collect();
    Ok(resource(v, valid))
}

fn load(conn: &mut DbConn, id: i64, scope: Option<i64>, policy: &Policy) -> ApiResult<(RequestView, ServiceRequest)> {
    let v = work::get(conn, id, scope, policy)?;
    let r = resource_of(conn, v.clone())?;
    Ok((v, r))
}

// ---------------------------------------------------------------------------------------------
// The resource as received.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRequestIn {
    resource_type: Option<String>,
    id: Option<String>,
    #[allow(dead_code)]
    meta: Option<IgnoredAny>,
    #[allow(dead_code)]
    text: Option<IgnoredAny>,
    #[serde(default)]
    extension: Vec<Extension>,
    #[serde(default)]
    contained: Vec<serde_json::Value>,
    #[serde(default)]
    identifier: Vec<Identifier>,
    status: Option<String>,
    intent: Option<String>,
    priority: Option<String>,
    code: Option<CodeableReference>,
    #[serde(default)]
    order_detail: Vec<OrderDetail>,
    quantity_quantity: Option<Quantity>,
    subject: Option<Reference>,
    occurrence_date_time: Option<DateTime<Utc>>,
    occurrence_timing: Option<Timing>,
    /// When granulo recorded the order; read back as sent, never taken from the client.
    #[allow(dead_code)]
    authored_on: Option<IgnoredAny>,
    /// The requesting account is the caller; read back as sent, never taken from the client.
    #[allow(dead_code)]
    requester: Option<IgnoredAny>,
    #[serde(default)]
    reason: Vec<CodeableReference>,
    #[serde(default)]
    supporting_info: Vec<CodeableReference>,
    #[serde(default)]
    specimen: Vec<Reference>,
    #[serde(default)]
    note: Vec<Annotation>,
}

/// A contained Observation carrying the neutrophil count.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AncIn {
    #[allow(dead_code)]
    resource_type: String,
    id: Option<String>,
    #[allow(dead_code)]
    meta: Option<IgnoredAny>,
    #[allow(dead_code)]
    text: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    extension: Vec<Extension>,
    status: Option<String>,
    code: Option<CodeableConcept>,
    subject: Option<Reference>,
    value_quantity: Option<Quantity>,
}

/// What an order says, as granulo reads it.
#[derive(Debug, Clone)]
pub struct Order {
    /// The FHIR status sent.
    pub status: String,
    pub patient_id: i64,
    pub units: u32,
    pub needed_by: DateTime<Utc>,
    pub priority: Priority,
    pub anc_per_ul: u32,
    pub infection: String,
    pub refractory_hours: u32,
    pub requirements: Requirements,
    pub identifier: Option<OrderIdentifier>,
    pub specimens: Vec<i64>,
    pub notes: Vec<String>,
}

impl Order {
    fn input(&self) -> RequestInput {
        RequestInput {
            patient_id: self.patient_id,
            units_requested: self.units,
            needed_by: self.needed_by,
            priority: self.priority,
            indication: IndicationInput {
                anc_per_ul: self.anc_per_ul,
                infection: self.infection.clone(),
                refractory_hours: self.refractory_hours,
            },
            requirements: Some(self.requirements.clone()),
            order_identifier: self.identifier.clone(),
        }
    }
}

const SR: &str = "ServiceRequest";

fn at(element: &str) -> String {
    format!("{SR}.{element}")
}

/// The number of units a quantity states: a whole count, in no unit or UCUM `{unit}`/`1`.
fn units_of(q: &Quantity) -> Option<u32> {
    let count_unit = ["{unit}", "{units}", "1"].iter().any(|c| q.value_in(c).is_some());
    let v = q.value.filter(|_| count_unit && q.comparator.is_none())?;
    (v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v)).then_some(v as u32)
}

/// The text of the infection: the reason's text, or else its codings written out so none is lost.
fn infection_of(reason: &CodeableReference) -> Option<String> {
    let concept = reason.concept.as_ref()?;
    if let Some(t) = concept.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    let codings: Vec<String> = concept
        .coding
        .iter()
        .map(|c| {
            let code = format!(
                "{}|{}",
                c.system.as_deref().unwrap_or(""),
                c.code.as_deref().unwrap_or("")
            );
            match c.display.as_deref() {
                Some(d) => format!("{d} ({code})"),
                None => code,
            }
        })
        .collect();
    (!codings.is_empty()).then(|| codings.join("; "))
}

/// Reads an order, listing every element it cannot take. `on_create`: a new order (status
/// `active`, no notes); otherwise a revocation (status `revoked`, notes give the reason).
pub fn read_order(input: ServiceRequestIn, on_create: bool) -> ApiResult<Order> {
    let mut v = Validator::new();
    if input.resource_type.as_deref().is_some_and(|t| t != SR) {
        v.push("resourceType", "must be ServiceRequest");
    }
    let status = input.status.clone().unwrap_or_default();
    if on_create {
        v.check(
            status == "active",
            &at("status"),
            "must be active: granulo decides whether the order waits for approval (on-hold)",
        );
        v.check(
            input.note.is_empty(),
            &at("note"),
            "is not read on create; granulo has nowhere to keep it",
        );
    } else {
        v.check(
            status == "revoked",
            &at("status"),
            "must be revoked: an update only revokes (cancels) the order",
        );
    }
    v.check(
        matches!(input.intent.as_deref(), Some("order" | "original-order")),
        &at("intent"),
        "must be order (or original-order)",
    );
    let priority = match input.priority.as_deref() {
        None => Some(Priority::Routine),
        Some(p) => priority_of(p),
    };
    v.check(
        priority.is_some(),
        &at("priority"),
        "must be routine, urgent, asap or stat",
    );
    if let Some(code) = &input.code {
        let ours = code
            .concept
            .as_ref()
            .is_some_and(|c| c.code_in(&code_system("product")) == Some(PRODUCT_CODE));
        v.check(
            ours && code.reference.is_none(),
            &at("code"),
            format!(
                "granulo supplies granulocytes only: code.concept must carry {}|{PRODUCT_CODE}",
                code_system("product")
            ),
        );
    }
    let patient_id = input.subject.as_ref().and_then(|s| s.id_of("Patient"));
    v.check(patient_id.is_some(), &at("subject"), "must be a reference Patient/<id>");

    // The course: a daily unit from the start of the timing (or occurrenceDateTime).
    let mut needed_by = input.occurrence_date_time;
    let mut count = None;
    if let Some(t) = &input.occurrence_timing {
        let path = at("occurrenceTiming.repeat");
        match &t.repeat {
            None => v.push(&path, "is required: boundsPeriod.start and count"),
            Some(r) => {
                v.check(
                    input.occurrence_date_time.is_none(),
                    &at("occurrence[x]"),
                    "give occurrenceTiming or occurrenceDateTime, not both",
                );
                let start = r.bounds_period.as_ref().and_then(|p| p.start);
                v.check(
                    start.is_some(),
                    &format!("{path}.boundsPeriod.start"),
                    "is required: when the first unit is needed",
                );
                v.check(
                    r.bounds_period.as_ref().is_none_or(|p| p.end.is_none()),
                    &format!("{path}.boundsPeriod.end"),
                    "is not read: the course lasts count days from the start",
                );
                v.check(
                    r.frequency.is_none_or(|f| f == 1)
                        && r.period.is_none_or(|p| p == 1.0)
                        && r.period_unit.as_deref().is_none_or(|u| u == "d"),
                    &path,
                    "must be one unit a day: frequency 1, period 1, periodUnit d",
                );
                needed_by = needed_by.or(start);
                match r.count {
                    Some(c) => match u32::try_from(c) {
                        Ok(c) => count = Some(c),
                        Err(_) => v.push(&format!("{path}.count"), "must be a number of units"),
                    },
                    None => v.push(&format!("{path}.count"), "is required: the number of daily units"),
                }
            }
        }
    }
    v.check(
        needed_by.is_some(),
        &at("occurrence[x]"),
        "is required: occurrenceTiming (boundsPeriod.start and count) or occurrenceDateTime",
    );
    let quantity = input.quantity_quantity.as_ref().map(units_of);
    if quantity == Some(None) {
        v.push(
            &at("quantityQuantity"),
            "must be a whole number of units (no unit, or UCUM {unit})",
        );
    }
    let units = match (quantity.flatten(), count) {
        (Some(q), Some(c)) if q != c => {
            v.push(
                &at("quantityQuantity"),
                format!("says {q} units but occurrenceTiming.repeat.count says {c}"),
            );
            None
        }
        (Some(n), _) | (None, Some(n)) => Some(n),
        (None, None) => {
            if quantity.is_none() {
                v.push(
                    &at("quantityQuantity"),
                    "is required (or occurrenceTiming.repeat.count): the number of units",
                );
            }
            None
        }
    };

    // The indication: the infection, the neutrophil count and how long it has been refractory.
    let infection = match input.reason.as_slice() {
        [one] if one.reference.is_none() => infection_of(one),
        _ => None,
    };
    v.check(
        infection.is_some(),
        &at("reason"),
        "must be one concept naming the infection treated (text, or a coding)",
    );
    let anc = anc_of(&mut v, &input, patient_id);
    let refractory = match extension(&input.extension, "refractory-hours") {
        Err(e) => {
            v.push(&at("extension"), e);
            None
        }
        Ok(None) => {
            v.push(
                &at("extension"),
                format!(
                    "the extension {} (valueQuantity in UCUM h) is required: how long the infection has been refractory decides the indication",
                    super::model::extension_url("refractory-hours")
                ),
            );
            None
        }
        Ok(Some(e)) => {
            let hours = e
                .value_quantity
                .as_ref()
                .filter(|q| q.code.as_deref() == Some("h"))
                .and_then(|q| q.value_in("h"))
                .filter(|h| h.is_finite() && *h >= 0.0 && h.fract() == 0.0 && *h <= f64::from(u32::MAX));
            if hours.is_none() {
                v.push(
                    &at("extension"),
                    "refractory-hours must be a whole number of hours (valueQuantity, UCUM code h)",
                );
            }
            hours.map(|h| h as u32)
        }
    };

    let requirements = requirements_of(&mut v, &input.order_detail);
    let identifier = match input.identifier.as_slice() {
        [] => None,
        [one] => match one.value.as_deref() {
            Some(value) => Some(OrderIdentifier {
                system: one.system.clone(),
                value: value.to_owned(),
            }),
            None => {
                v.push(&at("identifier"), "needs a value");
                None
            }
        },
        _ => {
            v.push(&at("identifier"), "at most one: the placer's order number");
            None
        }
    };
    let mut specimens = Vec::new();
    for (i, s) in input.specimen.iter().enumerate() {
        match s.id_of("Specimen") {
            Some(id) => specimens.push(id),
            None => v.push(&format!("{SR}.specimen[{i}]"), "must be a reference Specimen/<id>"),
        }
    }
    let notes: Vec<String> = input
        .note
        .iter()
        .map(|n| n.text.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if !on_create {
        v.check(
            Text::<0, 500>::new(&notes.join("; ")).is_ok(),
            &at("note"),
            "the reason for revoking is at most 500 characters",
        );
    }
    v.finish()?;
    match (patient_id, units, needed_by, priority, infection, anc, refractory) {
        (
            Some(patient_id),
            Some(units),
            Some(needed_by),
            Some(priority),
            Some(infection),
            Some(anc_per_ul),
            Some(refractory_hours),
        ) => Ok(Order {
            status,
            patient_id,
            units,
            needed_by,
            priority,
            anc_per_ul,
            infection,
            refractory_hours,
            requirements,
            identifier,
            specimens,
            notes,
        }),
        _ => Err(ApiError::internal(anyhow::anyhow!(
            "an order passed its checks incomplete"
        ))),
    }
}

/// The neutrophil count: supportingInfo `#<id>` naming a contained Observation, LOINC 751-8.
fn anc_of(v: &mut Validator, input: &ServiceRequestIn, patient_id: Option<i64>) -> Option<u32> {
    let mut found = None;
    let mut referenced = Vec::new();
    for (i, info) in input.supporting_info.iter().enumerate() {
        let local = info
            .reference
            .as_ref()
            .and_then(|r| r.reference.as_deref())
            .and_then(|r| r.strip_prefix('#'));
        match (local, &info.concept) {
            (Some(id), None) => referenced.push(id.to_owned()),
            _ => v.push(
                &format!("{SR}.supportingInfo[{i}]"),
                "must be a reference #<id> to a contained Observation (the neutrophil count)",
            ),
        }
    }
    for (i, c) in input.contained.iter().enumerate() {
        let path = format!("{SR}.contained[{i}]");
        if c.get("resourceType").and_then(|t| t.as_str()) != Some("Observation") {
            v.push(&path, "only the neutrophil count Observation may be contained");
            continue;
        }
        let obs: AncIn = match serde_json::from_value(c.clone()) {
            Ok(o) => o,
            Err(e) => {
                v.push(&path, format!("is not an Observation granulo reads: {e}"));
                continue;
            }
        };
        let id = obs.id.clone().unwrap_or_default();
        if !referenced.contains(&id) {
            v.push(&path, "is not referenced from supportingInfo");
            continue;
        }
        let is_anc = obs
            .code
            .as_ref()
            .is_some_and(|c| c.code_in(LOINC) == Some(LOINC_NEUTROPHILS));
        if !is_anc {
            v.push(
                &format!("{path}.code"),
                format!("must be {LOINC}|{LOINC_NEUTROPHILS} (neutrophils)"),
            );
            continue;
        }
        if !matches!(
            obs.status.as_deref(),
            Some("final" | "amended" | "corrected" | "preliminary")
        ) {
            v.push(
                &format!("{path}.status"),
                "must be final, amended, corrected or preliminary",
            );
        }
        if let Some(s) = &obs.subject {
            v.check(
                s.id_of("Patient").is_some() && s.id_of("Patient") == patient_id,
                &format!("{path}.subject"),
                "must be the patient of the order",
            );
        }
        match obs.value_quantity.as_ref().map(anc_per_ul) {
            None => v.push(&format!("{path}.valueQuantity"), "is required"),
            Some(Err(e)) => v.push(&format!("{path}.valueQuantity"), e),
            Some(Ok(n)) => {
                if found.replace(n).is_some() {
                    v.push(&path, "only one neutrophil count may be given");
                }
            }
        }
    }
    for id in &referenced {
        let contained = input
            .contained
            .iter()
            .any(|c| c.get("id").and_then(|i| i.as_str()) == Some(id));
        v.check(
            contained,
            &at("supportingInfo"),
            format!("#{id} names no contained resource"),
        );
    }
    if found.is_none() && input.contained.is_empty() {
        v.push(
            &at("supportingInfo"),
            format!(
                "is required: a reference #anc to a contained Observation {LOINC}|{LOINC_NEUTROPHILS} with the absolute neutrophil count (valueQuantity in UCUM /uL), on which the indication rests"
            ),
        );
    }
    found
}

/// Processing requirements: orderDetail parameters IR, CM, HL (HL7 v2 table 0508), each a
/// valueBoolean.
fn requirements_of(v: &mut Validator, details: &[OrderDetail]) -> Requirements {
    let mut r = Requirements::default();
    for (i, d) in details.iter().enumerate() {
        for (j, p) in d.parameter.iter().enumerate() {
            let path = format!("{SR}.orderDetail[{i}].parameter[{j}]");
            let slot = match p.code.code_in(V2_0508) {
                Some("IR") => &mut r.irradiated,
                Some("CM") => &mut r.cmv_negative,
                Some("HL") => &mut r.hla_compatible,
                _ => {
                    v.push(
                        &format!("{path}.code"),
                        format!("must be {V2_0508} IR (irradiated), CM (CMV negative) or HL (HLA matched)"),
                    );
                    continue;
                }
            };
            match p.value_boolean {
                None => v.push(&format!("{path}.valueBoolean"), "is required"),
                Some(b) => {
                    if slot.replace(b).is_some() {
                        v.push(&path, "each requirement may be given once");
                    }
                }
            }
        }
    }
    r
}

/// The service's field names as elements of the resource.
fn fhir_fields(e: ApiError) -> ApiError {
    super::as_elements(e, |field| {
        let element = match field {
            "units_requested" => "quantityQuantity",
            "needed_by" => "occurrence[x]",
            "indication.infection" => "reason",
            "indication.anc_per_ul" => "supportingInfo",
            "indication.refractory_hours" => "extension",
            "requirements.irradiated" => "orderDetail",
            "order_identifier.value" | "order_identifier.system" => "identifier",
            "reason" => "note",
            _ => return None,
        };
        Some(at(element))
    })
}

// ---------------------------------------------------------------------------------------------
// Interactions.

async fn read(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = super::path_id(&id, "ServiceRequest")?;
    let (_, r) = state
        .db(with_policy(move |conn, policy| load(conn, id, scope, policy)))
        .await?;
    super::read(r)
}

/// The search parameters as a filter; the caller's hospital always applies.
fn filter_of(s: &Search, scope: Option<i64>, tz: chrono_tz::Tz) -> ApiResult<rows::Filter> {
    let mut f = rows::Filter {
        hospital_id: scope,
        ..rows::Filter::default()
    };
    for values in s.any_of("patient") {
        f.patients.push(
            values
                .iter()
                .map(|v| search::reference_id("patient", v, "Patient"))
                .collect::<ApiResult<_>>()?,
        );
    }
    for values in s.any_of("status") {
        let mut statuses = Vec::new();
        for v in &values {
            let t = Token::parse(v);
            let known = t.system.as_deref().is_none_or(|s| s == REQUEST_STATUS);
            let found = t
                .code
                .as_deref()
                .filter(|_| known)
                .and_then(statuses_of)
                .ok_or_else(|| {
                    search::invalid(
                        "status",
                        "must be draft, active, on-hold, revoked, completed, entered-in-error or unknown",
                    )
                })?;
            statuses.extend(found);
        }
        f.statuses.push(statuses);
    }
    for values in s.any_of("identifier") {
        f.identifiers.push(
            values
                .iter()
                .map(|v| {
                    let t = Token::parse(v);
                    rows::IdentifierToken {
                        system: t.system,
                        value: t.code,
                    }
                })
                .collect(),
        );
    }
    let bounds = s
        .all("_lastUpdated")
        .map(|v| search::date_bound("_lastUpdated", v, tz))
        .collect::<ApiResult<Vec<DateBound>>>()?;
    let b = DateBound::all(&bounds);
    f.updated_from = b.from.map(|t| t.naive_utc());
    f.updated_before = b.to.map(|t| t.naive_utc());
    Ok(f)
}

async fn search(state: web::Data<AppState>, caller: AuthUser, req: HttpRequest) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let s = Search::parse(super::query(&req), &metadata::search_names(SR))?;
    let filter = filter_of(&s, scope, state.settings.timezone)?;
    let after = s.after_id()?;
    let count = s.count;
    let (total, items) = state
        .db(with_policy(move |conn, policy| {
            let total = rows::count(conn, &filter)?;
            let mut items = Vec::new();
            for r in rows::search(conn, &filter, after, count + 1)? {
                let v = work::view(conn, r, policy)?;
                items.push(resource_of(conn, v)?);
            }
            Ok((total, items))
        }))
        .await?;
    super::bundle(&req, &s, super::Page::of(total, items, count))
}

/// `If-None-Exist: identifier=[system|]value`: the order identifier a create is conditional on.
fn if_none_exist(req: &HttpRequest) -> ApiResult<Option<(Option<String>, String)>> {
    Ok(super::if_none_exist(req, "ServiceRequest")?.and_then(|t| t.code.map(|code| (t.system, code))))
}

/// Every specimen must be a sample of the order's patient.
fn check_specimens(conn: &mut DbConn, specimens: &[i64], patient_id: i64) -> ApiResult<()> {
    for &id in specimens {
        let ok = patient_rows::find_sample(conn, id)?.is_some_and(|s| s.patient_id == patient_id);
        if !ok {
            return Err(ApiError::refused(
                ErrorCode::UnknownSample,
                format!("Specimen/{id} is not a sample of Patient/{patient_id}"),
                vec![],
            ));
        }
    }
    Ok(())
}

/// The one existing order the condition names, `None` when there is none; several are 412.
fn existing(
    conn: &mut DbConn,
    hospital_id: i64,
    condition: &(Option<String>, String),
    policy: &Policy,
) -> ApiResult<Option<ServiceRequest>> {
    let found = work::with_order_identifier(conn, hospital_id, condition.0.as_deref(), &condition.1, 2)?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => {
            let v = work::view(conn, one.clone(), policy)?;
            Ok(Some(resource_of(conn, v)?))
        }
        _ => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            "If-None-Exist matches more than one order of the hospital",
        )),
    }
}

/// `POST /ServiceRequest`: places the order; with `If-None-Exist` on its identifier, an order
/// already placed is answered (200) and nothing is written.
async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
    body: JsonBody<ServiceRequestIn>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let condition = if_none_exist(&req)?;
    let order = read_order(body.into_inner(), true)?;
    let actor = caller.actor();
    let tz = state.settings.timezone;
    let (fresh, r) = state
        .write(with_policy(move |conn, policy| {
            // The caller's hospital (staff: the patient's) is where the condition is looked up.
            let patient = patients::find(conn, order.patient_id, scope)
                .map_err(|e| e.or_unknown(ErrorCode::UnknownPatient, "patient", order.patient_id))?;
            if let Some(c) = &condition
                && let Some(found) = existing(conn, patient.hospital_id, c, policy)?
            {
                return Ok((false, found));
            }
            check_specimens(conn, &order.specimens, patient.id)?;
            // A savepoint: a concurrent create of the same order loses on the unique index and
            // is answered with the winner's order.
            let created = conn.transaction(|conn| work::create(conn, &actor, order.input(), scope, policy, tz));
            match created {
                Ok(v) => Ok((true, resource_of(conn, v)?)),
                Err(e) if e.code() == ErrorCode::OrderIdentifierTaken => match &condition {
                    Some(c) => match existing(conn, patient.hospital_id, c, policy)? {
                        Some(found) => Ok((false, found)),
                        None => Err(e),
                    },
                    None => Err(e),
                },
                Err(e) => Err(fhir_fields(e)),
            }
        }))
        .await?;
    if fresh { super::created(&req, r) } else { super::read(r) }
}

/// Why a revocation cannot be taken: what it says that differs from the order.
fn differences(sent: &Order, v: &RequestView) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut differs = |ok: bool, element: &str| {
        if !ok {
            out.push(FieldError {
                field: at(element),
                message:
                    "differs from the order: an update only revokes it (revoke it and place a new order to change it)"
                        .to_owned(),
            });
        }
    };
    let stored_priority = priority_of(fhir_priority(v.priority));
    differs(sent.patient_id == v.patient_id, "subject");
    differs(
        i64::from(sent.units) == i64::from(v.units_requested),
        "quantityQuantity",
    );
    differs(sent.needed_by == v.needed_by, "occurrence[x]");
    differs(Some(sent.priority) == stored_priority, "priority");
    differs(sent.anc_per_ul == v.indication.anc_per_ul, "supportingInfo");
    differs(sent.infection == v.indication.infection, "reason");
    differs(sent.refractory_hours == v.indication.refractory_hours, "extension");
    let same = |a: Option<bool>, b: Option<bool>| a.unwrap_or(false) == b.unwrap_or(false);
    differs(
        same(sent.requirements.cmv_negative, v.requirements.cmv_negative)
            && same(sent.requirements.hla_compatible, v.requirements.hla_compatible)
            && sent
                .requirements
                .irradiated
                .is_none_or(|i| Some(i) == v.requirements.irradiated),
        "orderDetail",
    );
    let identifier_same = match (&sent.identifier, &v.order_identifier) {
        (None, None) => true,
        (Some(a), Some(b)) => a.value == b.value && (a.system.is_none() || a.system == b.system),
        _ => false,
    };
    differs(identifier_same, "identifier");
    out
}

/// `PUT /ServiceRequest/{id}`: revokes (cancels) the order. The body is the order as read with
/// status `revoked` (a note gives the reason); `If-Match` must name the version read.
async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
    id: web::Path<String>,
    body: JsonBody<ServiceRequestIn>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = super::path_id(&id, "ServiceRequest")?;
    let (_, current) = state
        .db(with_policy(move |conn, policy| load(conn, id, scope, policy)))
        .await?;
    let (_, version) = super::stamp(current)?;
    super::check_if_match(&req, &version)?;
    let body = body.into_inner();
    if body.id.as_deref().is_some_and(|b| b != id.to_string()) {
        return Err(ApiError::field("ServiceRequest.id", "must be the id in the URL"));
    }
    let sent = read_order(body, false)?;
    let actor = caller.actor();
    let updated = state
        .write(with_policy(move |conn, policy| {
            let (v, now) = load(conn, id, scope, policy)?;
            // Changed since the If-Match check: the client revokes what it has not seen.
            if super::stamp(now)?.1 != version {
                return Err(ApiError::new(
                    ErrorCode::PreconditionFailed,
                    format!("ServiceRequest/{id} changed while it was being revoked; read it again"),
                ));
            }
            let different = differences(&sent, &v);
            if !different.is_empty() {
                return Err(ApiError::validation(different));
            }
            let reason = (!sent.notes.is_empty()).then(|| sent.notes.join("; "));
            allocation_work::cancel_request(conn, &actor, id, reason.as_deref(), scope, policy).map_err(fhir_fields)?;
            let (_, r) = load(conn, id, scope, policy)?;
            Ok(r)
        }))
        .await?;
    super::read(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_both_ways() {
        use RequestStatus::*;
        for (ours, fhir) in [
            (PendingApproval, "on-hold"),
            (Open, "active"),
            (Fulfilled, "completed"),
            (Cancelled, "revoked"),
            (Declined, "revoked"),
        ] {
            assert_eq!(fhir_status(ours), fhir, "{ours}");
            assert!(statuses_of(fhir).expect("known").contains(&ours), "{fhir}");
        }
        for (code, ours) in [
            ("active", vec![Open]),
            ("on-hold", vec![PendingApproval]),
            ("completed", vec![Fulfilled]),
            ("revoked", vec![Cancelled, Declined]),
            ("draft", vec![]),
            ("entered-in-error", vec![]),
            ("unknown", vec![]),
        ] {
            assert_eq!(statuses_of(code), Some(ours), "{code}");
        }
        assert_eq!(statuses_of("cancelled"), None);
        assert_eq!(statuses_of("open"), None);
    }

    #[test]
    fn priorities_map_and_urgent_reads_back_as_asap() {
        use Priority::*;
        for (ours, fhir) in [
            (Routine, "routine"),
            (Scheduled, "routine"),
            (Asap, "asap"),
            (Stat, "stat"),
        ] {
            assert_eq!(fhir_priority(ours), fhir, "{ours}");
        }
        for (fhir, ours) in [
            ("routine", Some(Routine)),
            ("urgent", Some(Asap)),
            ("asap", Some(Asap)),
            ("stat", Some(Stat)),
            ("scheduled", None),
            ("ROUTINE", None),
        ] {
            assert_eq!(priority_of(fhir), ours, "{fhir}");
        }
    }

    #[test]
    fn neutrophil_counts_read_in_three_units_and_never_bare() {
        let q = |v: f64, code: Option<&str>| Quantity {
            value: Some(v),
            code: code.map(str::to_owned),
            system: code.map(|_| UCUM.to_owned()),
            ..Quantity::default()
        };
        assert_eq!(anc_per_ul(&q(150.0, Some("/uL"))), Ok(150));
        assert_eq!(anc_per_ul(&q(0.45, Some("10*9/L"))), Ok(450));
        assert_eq!(anc_per_ul(&q(0.2, Some("10*3/uL"))), Ok(200));
        assert_eq!(anc_per_ul(&q(0.0, Some("/uL"))), Ok(0));
        assert!(anc_per_ul(&q(150.0, None)).is_err(), "a bare number is ambiguous");
        assert!(anc_per_ul(&q(150.0, Some("/mL"))).is_err());
        assert!(anc_per_ul(&q(-1.0, Some("/uL"))).is_err());
        let other_system = Quantity {
            system: Some("http://example.org".into()),
            ..q(150.0, Some("/uL"))
        };
        assert!(anc_per_ul(&other_system).is_err());
        let below = Quantity {
            comparator: Some("<".into()),
            ..q(100.0, Some("/uL"))
        };
        assert!(anc_per_ul(&below).is_err());
    }

    #[test]
    fn unit_counts_are_whole_numbers() {
        let q = |v: f64, code: Option<&str>| Quantity {
            value: Some(v),
            code: code.map(str::to_owned),
            ..Quantity::default()
        };
        assert_eq!(units_of(&q(5.0, None)), Some(5));
        assert_eq!(units_of(&q(5.0, Some("{unit}"))), Some(5));
        assert_eq!(units_of(&q(5.5, None)), None);
        assert_eq!(units_of(&q(5.0, Some("mL"))), None);
        assert_eq!(units_of(&q(-2.0, None)), None);
    }
}
