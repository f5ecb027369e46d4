//! `GET /fhir/R5/metadata`: the CapabilityStatement. It is built from [`SERVED`], the same table
//! the searches take their parameters from, so it lists exactly what the server does.

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::base_url;
use crate::error::{ApiError, ApiResult, FHIR_CONTENT_TYPE};

/// A search parameter a resource supports.
pub struct Param {
    pub name: &'static str,
    /// FHIR search parameter type: `token`, `reference`, `date`.
    pub kind: &'static str,
    pub documentation: &'static str,
}

/// What the server does with one resource type.
pub struct Served {
    pub resource: &'static str,
    /// `read`, `search-type`, `create`, `update`.
    pub interactions: &'static [&'static str],
    pub search: &'static [Param],
    /// `create` honours `If-None-Exist`.
    pub conditional_create: bool,
    pub documentation: &'static str,
}

const fn p(name: &'static str, kind: &'static str, documentation: &'static str) -> Param {
    Param {
        name,
        kind,
        documentation,
    }
}

pub const SERVED: &[Served] = &[
    Served {
        resource: "Patient",
        interactions: &["read", "search-type", "create"],
        search: &[p(
            "identifier",
            "token",
            "The MRN: system = the hospital's MRN system, value = the MRN",
        )],
        conditional_create: true,
        documentation: "The recipient. Create needs the body-weight and declared-abo-rhd extensions; the blood group of record is an Observation (LOINC 882-1).",
    },
    Served {
        resource: "ServiceRequest",
        interactions: &["read", "search-type", "create", "update"],
        search: &[
            p("patient", "reference", "The recipient (Patient/<id>)"),
            p(
                "status",
                "token",
                "active (open) | on-hold (awaiting approval) | completed (fulfilled) | revoked (cancelled or declined); draft, entered-in-error and unknown match nothing",
            ),
            p(
                "identifier",
                "token",
                "The placer's order identifier: <system>|<value>, or <value> in any system",
            ),
            p(
                "_lastUpdated",
                "date",
                "When the order last changed (eq, ge, gt, le, lt)",
            ),
        ],
        conditional_create: true,
        documentation: "A course of granulocytes for a patient. Create needs the indication: supportingInfo #anc naming a contained Observation (LOINC 751-8, UCUM /uL) and the refractory-hours extension; If-None-Exist: identifier=<system>|<value> makes it idempotent. Update only revokes (cancels) the order, with If-Match; the request-status extension gives granulo's exact status.",
    },
    Served {
        resource: "Specimen",
        interactions: &["read", "create"],
        search: &[],
        conditional_create: false,
        documentation: "The recipient's crossmatch sample. Create needs the recent-transfusion-or-pregnancy extension (valueBoolean); the specimen-valid-until extension says until when crossmatches on it count.",
    },
    Served {
        resource: "BiologicallyDerivedProduct",
        interactions: &["read", "search-type"],
        search: &[
            p(
                "identifier",
                "token",
                "The ISBT 128 DIN: https://www.isbt128.org/uri/DonationIdentificationNumber|<DIN> or the DIN alone (13 characters; with the check character or as scanned it is checked and read)",
            ),
            p(
                "product-status",
                "token",
                "available (usable now: available, allocated or issued and unexpired) | unavailable",
            ),
            p(
                "request",
                "reference",
                "A ServiceRequest the unit has an allocation (not cancelled) to: ServiceRequest/<id>",
            ),
            p(
                "expiration",
                "date",
                "The expiry (eq, ge, gt, le, lt; a bare date is a day in the facility's time zone)",
            ),
        ],
        conditional_create: false,
        documentation: "A granulocyte unit; the id is the unit's. A hospital sees only units with an allocation (not cancelled) to one of its requests. The unit-status extension carries granulo's exact status.",
    },
    Served {
        resource: "BiologicallyDerivedProductDispense",
        interactions: &["read", "search-type"],
        search: &[
            p("patient", "reference", "The recipient (Patient/<id>)"),
            p("based-on", "reference", "The order (ServiceRequest/<id>)"),
            p(
                "status",
                "token",
                "allocated | issued (also transfused) | returned | unfulfilled (cancelled); the other R5 codes find nothing",
            ),
        ],
        conditional_create: false,
        documentation: "The allocation of a unit to an order and its issue; the id is the allocation's. The allocation-status extension carries granulo's exact status (transfused shows as issued).",
    },
    Served {
        resource: "Observation",
        interactions: &["read", "search-type", "create"],
        search: &[
            p(
                "patient",
                "reference",
                "The patient (Patient/<id>); patient or based-on is required",
            ),
            p(
                "code",
                "token",
                "http://loinc.org|882-1 (group of record), http://loinc.org|1250-0 (red-cell crossmatch), http://loinc.org|751-8 (neutrophil count), https://granulo.org/fhir/CodeSystem/observation-code|leukocyte-crossmatch; a code alone matches any system",
            ),
            p(
                "based-on",
                "reference",
                "The order (ServiceRequest/<id>) a crossmatched unit is or was allocated to; patient or based-on is required",
            ),
        ],
        conditional_create: false,
        documentation: "Ids abo-rh-<patient id> (group of record, LOINC 882-1), xm-<crossmatch id> (crossmatch result) and anc-<id> (absolute neutrophil count, LOINC 751-8). Only neutrophil counts are created: a hospital creates those of its own patients, and a count whose focus is a dispense feeds that transfusion's outcome.",
    },
];

/// The search parameter names of `resource` (none if it is not served).
pub fn search_names(resource: &str) -> Vec<&'static str> {
    SERVED
        .iter()
        .find(|s| s.resource == resource)
        .map(|s| s.search.iter().map(|p| p.name).collect())
        .unwrap_or_default()
}

/// The statement describes this running server: it dates from its start.
static STARTED: std::sync::LazyLock<chrono::DateTime<chrono::Utc>> = std::sync::LazyLock::new(chrono::Utc::now);

pub fn capability_statement_json(base: &str) -> serde_json::Value {
    let resources: Vec<serde_json::Value> = SERVED
        .iter()
        .map(|s| {
            let mut r = json!({
                "type": s.resource,
                "documentation": s.documentation,
                "interaction": s.interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": false,
                "updateCreate": false,
                "conditionalCreate": s.conditional_create,
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            });
            if !s.search.is_empty() {
                r["searchParam"] = s
                    .search
                    .iter()
                    .map(|p| json!({"name": p.name, "type": p.kind, "documentation": p.documentation}))
                    .collect();
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": STARTED.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "publisher": "granulo",
        "kind": "instance",
        "software": {"name": "granulo", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "granulo: donor granulocyte orders, units and issues for hospital systems",
            "url": base,
        },
        "fhirVersion": "5.0.0",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search results are Bundles of type searchset with total; _count defaults to 50 and is at most 200; an unknown search parameter is refused. Every error is an OperationOutcome whose first issue carries granulo's error code.",
            "security": {
                "cors": false,
                "service": [{
                    "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "OAuth",
                        "display": "OAuth",
                    }],
                    "text": "OAuth 2.0 client credentials",
                }],
                "description": "Bearer tokens as for /api/v1: hospital systems obtain one with their client credentials at POST /api/v1/auth/token ({client_id, client_secret}); staff sign in at POST /api/v1/auth/login. A hospital sees only its own patients, orders and the units allocated or issued to them.",
            },
            "resource": resources,
        }],
    })
}

/// The CapabilityStatement (no token needed, as FHIR expects of `metadata`).
pub async fn capability_statement(req: HttpRequest) -> ApiResult<HttpResponse> {
    let body = serde_json::to_vec(&capability_statement_json(&base_url(&req))).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_TYPE, FHIR_CONTENT_TYPE))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_resource_lists_interactions_and_search_types_fhir_knows() {
        for s in SERVED {
            for i in s.interactions {
                assert!(["read", "search-type", "create", "update"].contains(i), "{i}");
            }
            assert_eq!(
                s.interactions.contains(&"search-type"),
                !s.search.is_empty(),
                "{}",
                s.resource
            );
            for p in s.search {
                assert!(["token", "reference", "date"].contains(&p.kind), "{}", p.name);
            }
        }
        assert_eq!(search_names("Patient"), vec!["identifier"]);
        assert!(search_names("Medication").is_empty());
    }
}
