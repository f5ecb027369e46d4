//! `BiologicallyDerivedProductDispense`: the allocation of a unit to an order and its issue
//! (docs/fhir-parts/product-and-dispense.md). Read and search only; the id is the allocation's.
//! A hospital sees the allocations to its own requests, and no staff names.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::model::{
    Annotation, CodeableConcept, Coding, Extension, ISBT_DIN, Identifier, Meta, Period, Reference, code_system,
};
use super::search::{self, Search, Token};
use super::{Page, metadata};
use crate::auth::AuthUser;
use crate::domain::compatibility::CrossmatchFacts;
use crate::domain::requests::AllocationStatus;
use crate::error::{ApiError, ApiResult};
use crate::services::{self, utc};
use crate::state::AppState;
use crate::store::allocations::{self as rows, Allocation, AllocationSearch};
use crate::store::{DbConn, hospitals, requests as request_rows, units as unit_rows};

pub const TYPE: &str = "BiologicallyDerivedProductDispense";

pub const STATUS: &str = "http://hl7.org/fhir/biologicallyderivedproductdispense-status";
pub const MATCH_STATUS: &str = "http://hl7.org/fhir/CodeSystem/biologicallyderivedproductdispense-match-status";
pub const PERFORMER_FUNCTION: &str =
    "http://hl7.org/fhir/CodeSystem/biologicallyderivedproductdispense-performer-function";

/// What a hospital is told of the staff who allocated and issued a unit.
pub const STAFF_TO_HOSPITALS: &str = "blood bank staff";

/// The FHIR status of an allocation. A transfused unit was handed over: `issued` (the
/// `allocation-status` extension says `transfused`); a cancelled allocation was not fulfilled.
pub fn dispense_status(status: AllocationStatus) -> &'static str {
    match status {
        AllocationStatus::Allocated => "allocated",
        AllocationStatus::Issued | AllocationStatus::Transfused => "issued",
        AllocationStatus::Returned => "returned",
        AllocationStatus::Cancelled => "unfulfilled",
    }
}

/// The allocation statuses a FHIR status code searches for; `None` for a code that is not in
/// the R5 value set. The codes granulo never answers with find nothing.
pub fn allocation_statuses(code: &str) -> Option<&'static [AllocationStatus]> {
    use AllocationStatus::*;
    Some(match code {
        "allocated" => &[Allocated],
        "issued" => &[Issued, Transfused],
        "returned" => &[Returned],
        "unfulfilled" => &[Cancelled],
        "preparation" | "in-progress" | "entered-in-error" | "unknown" => &[],
        _ => return None,
    })
}

/// `crossmatched` when the pair stands crossmatched (`domain::compatibility::crossmatched`);
/// otherwise the unit was `selected`.
pub fn match_status(crossmatches: &[CrossmatchFacts]) -> &'static str {
    if crate::domain::compatibility::crossmatched(crossmatches) {
        "crossmatched"
    } else {
        "selected"
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Performer {
    pub function: CodeableConcept,
    pub actor: Reference,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BiologicallyDerivedProductDispense {
    pub resource_type: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    pub based_on: Vec<Reference>,
    pub status: &'static str,
    pub product: Reference,
    pub patient: Reference,
    pub match_status: CodeableConcept,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub performer: Vec<Performer>,
    pub prepared_date: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_handed_over: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub note: Vec<Annotation>,
    #[serde(skip)]
    pub updated: DateTime<Utc>,
}

super::model::resource!(BiologicallyDerivedProductDispense, TYPE, updated);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/BiologicallyDerivedProductDispense").route(web::get().to(search_dispenses)))
        .service(web::resource("/BiologicallyDerivedProductDispense/{id}").route(web::get().to(read_dispense)));
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(&format!("{TYPE}/{id}"))
}

fn coded(system: &str, code: &str, display: Option<&str>) -> CodeableConcept {
    CodeableConcept {
        coding: vec![Coding {
            system: Some(system.to_owned()),
            version: None,
            code: Some(code.to_owned()),
            display: display.map(str::to_owned),
        }],
        text: display.map(str::to_owned),
    }
}

/// The resources of `list`; `staff` callers see who allocated and issued.
fn resources(
    conn: &mut DbConn,
    list: Vec<Allocation>,
    staff: bool,
) -> ApiResult<Vec<BiologicallyDerivedProductDispense>> {
    let mut hospital_names: HashMap<i64, String> = HashMap::new();
    let mut out = Vec::with_capacity(list.len());
    for a in list {
        let r = request_rows::find(conn, a.request_id)?.ok_or_else(|| ApiError::not_found("request"))?;
        if let Entry::Vacant(slot) = hospital_names.entry(r.hospital_id) {
            slot.insert(hospitals::find(conn, r.hospital_id)?.map_or_else(String::new, |h| h.name));
        }
        let din = unit_rows::find(conn, a.unit_id)?.map(|u| u.din);
        let crossmatches = services::allocations::crossmatch_facts(conn, a.unit_id, r.patient_id)?;
        let who = |name: &str| Reference::display(if staff { name } else { STAFF_TO_HOSPITALS });
        let mut performer = vec![Performer {
            function: coded(
                &code_system("dispense-performer-function"),
                "allocation",
                Some("Allocation"),
            ),
            actor: who(&a.allocated_by),
        }];
        if let Some(by) = &a.issued_by {
            performer.push(Performer {
                function: coded(PERFORMER_FUNCTION, "release", None),
                actor: who(by),
            });
        }
        let mut allocation_status = Extension::ours("allocation-status");
        allocation_status.value_code = Some(a.status.as_str().to_owned());
        let mut extension = vec![allocation_status];
        if a.transfusion_started_at.is_some() || a.transfusion_ended_at.is_some() {
            let mut transfusion = Extension::ours("transfusion-period");
            transfusion.value_period = Some(Period {
                start: a.transfusion_started_at.map(utc),
                end: a.transfusion_ended_at.map(utc),
            });
            extension.push(transfusion);
        }
        let ended = matches!(a.status, AllocationStatus::Returned | AllocationStatus::Cancelled);
        let match_code = match_status(&crossmatches);
        out.push(BiologicallyDerivedProductDispense {
            resource_type: TYPE,
            id: a.id.to_string(),
            meta: None,
            extension,
            based_on: vec![Reference::to("ServiceRequest", a.request_id)],
            status: dispense_status(a.status),
            product: Reference {
                identifier: din.map(|d| Identifier::new(ISBT_DIN, d)),
                ..Reference::to(super::product::TYPE, a.unit_id)
            },
            patient: Reference::to("Patient", r.patient_id),
            match_status: coded(MATCH_STATUS, match_code, None),
            performer,
            prepared_date: utc(a.allocated_at),
            when_handed_over: a.issued_at.map(utc),
            destination: hospital_names
                .get(&r.hospital_id)
                .filter(|n| !n.is_empty())
                .map(|n| Reference::display(n.clone())),
            note: a
                .end_reason
                .clone()
                .filter(|reason| ended && !reason.trim().is_empty())
                .map(|text| Annotation { text })
                .into_iter()
                .collect(),
            updated: utc(a.updated_at),
        });
    }
    Ok(out)
}

pub async fn read_dispense(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let raw = path.into_inner();
    let id = super::path_id(&raw, TYPE)?;
    let resource = state
        .db(move |conn| {
            let a = services::allocations::find(conn, id, scope).map_err(|_| not_found(&raw))?;
            resources(conn, vec![a], scope.is_none())?
                .pop()
                .ok_or_else(|| not_found(&raw))
        })
        .await?;
    super::read(resource)
}

/// The allocation statuses a `status` OR-list asks for.
fn statuses_of(values: &[String]) -> ApiResult<Vec<AllocationStatus>> {
    let mut out = Vec::new();
    for value in values {
        let token = Token::parse(value);
        let code = token.code.as_deref().unwrap_or("");
        let found = allocation_statuses(code).ok_or_else(|| {
            search::invalid(
                "status",
                "takes a BiologicallyDerivedProductDispense status (allocated, issued, returned, unfulfilled, …)",
            )
        })?;
        if token.system.as_deref().is_none_or(|s| s == STATUS) {
            out.extend_from_slice(found);
        }
    }
    Ok(out)
}

pub async fn search_dispenses(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let search = Search::parse(super::query(&req), &metadata::search_names(TYPE))?;
    let after = search.after_id()?;
    let ids = |name: &str, resource_type: &str| -> ApiResult<Vec<Vec<i64>>> {
        search
            .any_of(name)
            .iter()
            .map(|values| {
                values
                    .iter()
                    .map(|v| search::reference_id(name, v, resource_type))
                    .collect()
            })
            .collect()
    };
    let filter = AllocationSearch {
        hospital: scope,
        patients: ids("patient", "Patient")?,
        requests: ids("based-on", "ServiceRequest")?,
        statuses: search
            .any_of("status")
            .iter()
            .map(|values| statuses_of(values))
            .collect::<ApiResult<_>>()?,
    };
    // An OR-list none of whose values can match leaves nothing to find.
    let nothing = filter.statuses.iter().any(Vec::is_empty);
    let count = search.count;
    let page = state
        .db(move |conn| {
            if nothing {
                return Ok(Page::of(0, Vec::new(), count));
            }
            let total = rows::search_count(conn, &filter)?;
            let found = rows::search(conn, &filter, after, count + 1)?;
            Ok(Page::of(total, resources(conn, found, scope.is_none())?, count))
        })
        .await?;
    super::bundle(&req, &search, page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::compatibility::CrossmatchKind;

    #[test]
    fn every_allocation_status_has_its_fhir_status_and_is_found_by_it() {
        use AllocationStatus::*;
        let table = [
            (Allocated, "allocated"),
            (Issued, "issued"),
            (Transfused, "issued"),
            (Returned, "returned"),
            (Cancelled, "unfulfilled"),
        ];
        assert_eq!(table.len(), AllocationStatus::ALL.len());
        for (ours, fhir) in table {
            assert_eq!(dispense_status(ours), fhir, "{ours}");
            assert!(
                allocation_statuses(fhir).is_some_and(|s| s.contains(&ours)),
                "{fhir} finds {ours}"
            );
        }
    }

    #[test]
    fn every_fhir_status_searches_for_the_allocations_shown_with_it() {
        use AllocationStatus::*;
        let table: [(&str, &[AllocationStatus]); 8] = [
            ("preparation", &[]),
            ("in-progress", &[]),
            ("allocated", &[Allocated]),
            ("issued", &[Issued, Transfused]),
            ("unfulfilled", &[Cancelled]),
            ("returned", &[Returned]),
            ("entered-in-error", &[]),
            ("unknown", &[]),
        ];
        for (fhir, ours) in table {
            assert_eq!(allocation_statuses(fhir), Some(ours), "{fhir}");
            for s in ours {
                assert_eq!(dispense_status(*s), fhir);
            }
        }
        assert_eq!(allocation_statuses("cancelled"), None);
        assert_eq!(allocation_statuses("transfused"), None);
    }

    #[test]
    fn the_match_status_names_the_crossmatch_verdict() {
        assert_eq!(match_status(&[]), "selected");
        let x = CrossmatchFacts {
            id: 1,
            kind: CrossmatchKind::RedCell,
            compatible: true,
            resolved: false,
            sample_valid_until: Utc::now(),
        };
        assert_eq!(match_status(&[x]), "crossmatched");
    }
}
