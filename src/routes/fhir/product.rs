//! `BiologicallyDerivedProduct`: a granulocyte unit (docs/fhir-parts/product-and-dispense.md).
//! Read and search only. Staff see every unit; a hospital sees a unit only while it has an
//! allocation that is not cancelled to one of its requests (allocated, issued, transfused or
//! returned to it), and only its own requests in `request`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::model::{
    CodeableConcept, Coding, Extension, ISBT_DIN, Identifier, Meta, Quantity, Range, Reference, RhdKnown, V2_0508,
    abo_rhd_coding, code_system,
};
use super::search::{self, DateBound, Search, Token};
use super::{Page, metadata};
use crate::auth::AuthUser;
use crate::config::Settings;
use crate::domain::blood::{Cmv, DonorType};
use crate::domain::policy::Policy;
use crate::domain::units::{self as unit_rules, UnitStatus};
use crate::error::{ApiError, ApiResult};
use crate::input::parse_din_reference;
use crate::routes::with_policy;
use crate::services::{self, stored, utc};
use crate::state::AppState;
use crate::store::units::{self as unit_rows, Unit, UnitSearch, Usable};
use crate::store::{self, DbConn, allocations as allocation_rows, donors as donor_rows};

pub const TYPE: &str = "BiologicallyDerivedProduct";

/// `productStatus` (R5 example binding).
pub const PRODUCT_STATUS: &str = "http://hl7.org/fhir/biologicallyderived-product-status";
/// `productCategory` (R5 example binding).
pub const PRODUCT_CATEGORY: &str = "http://hl7.org/fhir/product-category";
/// ICCBBA's product codes as the HL7 ICSR adverse-event IG writes `productCode` (interop.md §2.5);
/// the code is the 5-character Product Description Code.
pub const ICCBBA_TERMINOLOGY: &str = "https://iccbba.org/standardterminology";
/// ISBT 128 type of collection (Table 7), as in the official R5 example.
pub const ISBT_COLLECTION_TYPE: &str = "https://www.isbt128.org/uri/CollectionType";

/// granulo's identifier system for an ISBT 128 Facility Identification Number.
pub fn fin_system() -> String {
    format!("{}/NamingSystem/isbt128-fin", super::model::CANONICAL)
}

/// What hospital systems read from `productStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductStatus {
    Available,
    Unavailable,
}

impl ProductStatus {
    pub fn code(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Unavailable => "unavailable",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        match code {
            "available" => Some(Self::Available),
            "unavailable" => Some(Self::Unavailable),
            _ => None,
        }
    }
}

/// The statuses in which an unexpired unit can still be given: in stock, held for a patient,
/// or handed over and not yet transfused.
pub const USABLE: [UnitStatus; 3] = [UnitStatus::Available, UnitStatus::Allocated, UnitStatus::Issued];

/// `available` when the unit's status as of `now` is usable and it has not expired (an issued
/// unit past its expiry is not usable either, though it stays `issued`); otherwise
/// `unavailable`. The search filters with the same [`USABLE`] and expiry.
pub fn product_status(stored: UnitStatus, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> ProductStatus {
    let effective = unit_rules::effective_status(stored, expires_at, now);
    if USABLE.contains(&effective) && now < expires_at {
        ProductStatus::Available
    } else {
        ProductStatus::Unavailable
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Collection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Reference>,
    pub collected_date_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    #[serde(rename = "type")]
    pub type_: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_boolean: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_codeable_concept: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
}

impl Property {
    fn of(code: &str, display: &str) -> Self {
        Self {
            type_: CodeableConcept::coded(Coding::new(code_system("product-property"), code, display)),
            value_boolean: None,
            value_codeable_concept: None,
            value_quantity: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BiologicallyDerivedProduct {
    pub resource_type: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    pub product_category: Coding,
    pub product_code: CodeableConcept,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parent: Vec<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<Reference>,
    pub identifier: Vec<Identifier>,
    pub biological_source_event: Identifier,
    pub processing_facility: Vec<Reference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    pub product_status: Coding,
    pub expiration_date: DateTime<Utc>,
    pub collection: Collection,
    pub storage_temp_requirements: Range,
    pub property: Vec<Property>,
    #[serde(skip)]
    pub updated: DateTime<Utc>,
}

super::model::resource!(BiologicallyDerivedProduct, TYPE, updated);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/BiologicallyDerivedProduct").route(web::get().to(search_units)))
        .service(web::resource("/BiologicallyDerivedProduct/{id}").route(web::get().to(read_unit)));
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(&format!("{TYPE}/{id}"))
}

fn cmv_concept(cmv: Cmv) -> CodeableConcept {
    let ours = Coding::new(
        code_system("cmv-serostatus"),
        cmv.as_str(),
        format!("CMV antibody {}", cmv.as_str()),
    );
    let mut concept = CodeableConcept::coded(ours);
    if cmv == Cmv::Negative {
        concept.coding.push(Coding::new(V2_0508, "CM", "CMV Negative"));
    }
    concept
}

fn donor_display(kind: Option<DonorType>) -> &'static str {
    match kind {
        Some(DonorType::Community) => "volunteer donor",
        Some(DonorType::Directed) => "directed donor",
        Some(DonorType::Family) => "family donor",
        None => "donor",
    }
}

/// What a page of units needs beyond the units themselves.
struct Context<'a> {
    settings: &'a Settings,
    policy: &'a Policy,
    scope: Option<i64>,
    now: DateTime<Utc>,
}

/// The resources of `list`, with the facts read for the whole page in a fixed number of queries.
fn resources(conn: &mut DbConn, list: Vec<Unit>, ctx: &Context<'_>) -> ApiResult<Vec<BiologicallyDerivedProduct>> {
    let ids: Vec<i64> = list.iter().map(|u| u.id).collect();
    let mut requests: HashMap<i64, (BTreeSet<i64>, DateTime<Utc>)> = HashMap::new();
    for a in allocation_rows::uncancelled_of_units(conn, &ids)? {
        if ctx.scope.is_some_and(|h| h != a.hospital_id) {
            continue;
        }
        let entry = requests
            .entry(a.unit_id)
            .or_insert_with(|| (BTreeSet::new(), utc(a.updated_at)));
        entry.0.insert(a.request_id);
        entry.1 = entry.1.max(utc(a.updated_at));
    }
    let donor_ids: Vec<i64> = list.iter().filter_map(|u| u.donor_id).collect();
    let donor_types: HashMap<i64, DonorType> = if donor_ids.is_empty() {
        HashMap::new()
    } else {
        donor_rows::find_many(conn, &donor_ids)?
            .into_iter()
            .map(|d| (d.id, d.donor_type))
            .collect()
    };
    let views = services::units::views(conn, list, ctx.now)?;
    let member_dins: Vec<String> = views.iter().flat_map(|v| v.pooled_from.iter().cloned()).collect();
    let mut member_units: HashMap<String, i64> = HashMap::new();
    if !member_dins.is_empty() {
        let found = unit_rows::ids_of_dins(conn, &member_dins)?;
        let found_ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
        let visible: BTreeSet<i64> = match ctx.scope {
            None => found_ids.into_iter().collect(),
            Some(h) => allocation_rows::uncancelled_of_units(conn, &found_ids)?
                .into_iter()
                .filter(|a| a.hospital_id == h)
                .map(|a| a.unit_id)
                .collect(),
        };
        for (id, din) in found {
            if visible.contains(&id) {
                member_units.insert(din, id);
            }
        }
    }
    let unit_policy = &ctx.policy.unit;
    let storage = Range {
        low: Some(Quantity::ucum(unit_policy.storage_temp_min_c, "Cel", "°C")),
        high: Some(Quantity::ucum(unit_policy.storage_temp_max_c, "Cel", "°C")),
    };
    let mut out = Vec::with_capacity(views.len());
    for v in views {
        let din = Identifier::new(ISBT_DIN, v.din.clone());
        let (pdc, collection_type, division) = match v.product_code.get(..5) {
            Some(pdc) if v.product_code.len() == 8 => (
                pdc.to_owned(),
                v.product_code.get(5..6).map(str::to_owned),
                v.product_code.get(6..8).filter(|d| *d != "00").map(str::to_owned),
            ),
            _ => (v.product_code.clone(), None, None),
        };
        let product_code = CodeableConcept {
            coding: vec![Coding {
                system: Some(ICCBBA_TERMINOLOGY.to_owned()),
                version: None,
                code: Some(pdc),
                display: None,
            }],
            text: Some(format!("ISBT 128 product code {}", v.product_code)),
        };
        let (source, facility) = match v.source {
            services::units::UnitSource::Collection => (
                Reference::display(donor_display(v.donor_id.and_then(|d| donor_types.get(&d).copied()))),
                Reference {
                    identifier: Some(Identifier::new(fin_system(), ctx.settings.fin.clone())),
                    display: Some(ctx.settings.facility_name.clone()),
                    ..Reference::default()
                },
            ),
            services::units::UnitSource::External => {
                let supplier = v.supplier.clone().unwrap_or_else(|| "external supplier".to_owned());
                (
                    Reference::display(supplier.clone()),
                    Reference {
                        identifier: v.din.get(..5).map(|fin| Identifier::new(fin_system(), fin)),
                        display: Some(supplier),
                        ..Reference::default()
                    },
                )
            }
        };
        let parent = v
            .pooled_from
            .iter()
            .map(|member| Reference {
                reference: member_units.get(member).map(|id| format!("{TYPE}/{id}")),
                type_: Some(TYPE.to_owned()),
                identifier: Some(Identifier::new(ISBT_DIN, member.clone())),
                display: None,
            })
            .collect();
        let (request_ids, allocation_updated) = requests
            .remove(&v.id)
            .map_or((BTreeSet::new(), None), |(ids, at)| (ids, Some(at)));
        let status = product_status(v.status, v.expires_at, ctx.now);
        let mut unit_status = Extension::ours("unit-status");
        unit_status.value_code = Some(v.status.as_str().to_owned());
        let mut property = vec![
            Property {
                value_codeable_concept: Some(CodeableConcept::coded(abo_rhd_coding(
                    v.abo,
                    if v.rhd_pooled {
                        RhdKnown::Pooled
                    } else {
                        RhdKnown::Typed(v.rhd)
                    },
                ))),
                ..Property::of("abo-rhd", "ABO and RhD group")
            },
            Property {
                value_boolean: Some(v.irradiated),
                ..Property::of("irradiated", "Irradiated")
            },
            Property {
                value_codeable_concept: Some(cmv_concept(v.cmv)),
                ..Property::of("cmv-serostatus", "CMV serostatus")
            },
            Property {
                value_quantity: Some(Quantity::ucum(v.granulocyte_count, "{cells}", "granulocytes")),
                ..Property::of("granulocyte-count", "Granulocyte count")
            },
            Property {
                value_quantity: Some(Quantity::ucum(f64::from(v.volume_ml), "mL", "mL")),
                ..Property::of("volume", "Volume")
            },
        ];
        if let Some(t) = collection_type {
            property.push(Property {
                value_codeable_concept: Some(CodeableConcept {
                    coding: vec![Coding {
                        system: Some(ISBT_COLLECTION_TYPE.to_owned()),
                        version: None,
                        code: Some(t),
                        display: None,
                    }],
                    text: None,
                }),
                ..Property::of("collection-type", "ISBT 128 type of collection")
            });
        }
        out.push(BiologicallyDerivedProduct {
            resource_type: TYPE,
            id: v.id.to_string(),
            meta: None,
            extension: vec![unit_status],
            product_category: Coding::new(PRODUCT_CATEGORY, "cells", "Cells"),
            product_code,
            parent,
            request: request_ids
                .iter()
                .map(|id| Reference::to("ServiceRequest", *id))
                .collect(),
            identifier: vec![din.clone()],
            biological_source_event: din,
            processing_facility: vec![facility],
            division,
            product_status: Coding::new(
                PRODUCT_STATUS,
                status.code(),
                match status {
                    ProductStatus::Available => "Available",
                    ProductStatus::Unavailable => "Unavailable",
                },
            ),
            expiration_date: v.expires_at,
            collection: Collection {
                source: Some(source),
                collected_date_time: v.collected_at,
            },
            storage_temp_requirements: storage.clone(),
            property,
            updated: allocation_updated.map_or(v.updated_at, |a| a.max(v.updated_at)),
        });
    }
    Ok(out)
}

/// Whether a hospital (`scope`) may see the unit: an allocation that is not cancelled to one of
/// its requests. Staff see every unit.
fn visible(conn: &mut DbConn, unit_id: i64, scope: Option<i64>) -> ApiResult<bool> {
    let Some(h) = scope else { return Ok(true) };
    Ok(allocation_rows::uncancelled_of_units(conn, &[unit_id])?
        .iter()
        .any(|a| a.hospital_id == h))
}

pub async fn read_unit(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let raw = path.into_inner();
    let id = super::path_id(&raw, TYPE)?;
    let settings: Arc<Settings> = state.settings.clone();
    let resource = state
        .db(with_policy(move |conn, policy| {
            let u = unit_rows::find(conn, id)?.ok_or_else(|| not_found(&raw))?;
            if !visible(conn, id, scope)? {
                return Err(not_found(&raw));
            }
            let ctx = Context {
                settings: &settings,
                policy,
                scope,
                now: utc(store::now()),
            };
            resources(conn, vec![u], &ctx)?.pop().ok_or_else(|| not_found(&raw))
        }))
        .await?;
    super::read(resource)
}

/// The DINs an `identifier` token can match: granulo's identifiers are DINs in the ISBT 128
/// system, so a token naming another system (or none, `|x`) matches nothing.
fn dins_of(value: &str) -> ApiResult<Option<String>> {
    let token = Token::parse(value);
    if token.system.as_deref().is_some_and(|s| s != ISBT_DIN) {
        return Ok(None);
    }
    match token.code {
        Some(code) => parse_din_reference(&code).map(|d| Some(d.as_text())),
        None => Err(search::invalid("identifier", "needs a DIN after the system")),
    }
}

/// The product statuses a `product-status` OR-list asks for.
fn statuses_of(values: &[String]) -> ApiResult<BTreeSet<&'static str>> {
    let mut out = BTreeSet::new();
    for value in values {
        let token = Token::parse(value);
        let code = token.code.as_deref().unwrap_or("");
        let status = ProductStatus::parse(code)
            .ok_or_else(|| search::invalid("product-status", "takes available or unavailable"))?;
        if token.system.as_deref().is_none_or(|s| s == PRODUCT_STATUS) {
            out.insert(status.code());
        }
    }
    Ok(out)
}

pub async fn search_units(state: web::Data<AppState>, caller: AuthUser, req: HttpRequest) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let search = Search::parse(super::query(&req), &metadata::search_names(TYPE))?;
    let after = search.after_id()?;
    let tz = state.settings.timezone;
    let mut filter = UnitSearch {
        hospital: scope,
        ..UnitSearch::default()
    };
    // A parameter none of whose values can match leaves nothing to find.
    let mut nothing = false;
    for values in search.any_of("identifier") {
        let mut dins = Vec::new();
        for v in &values {
            if let Some(din) = dins_of(v)? {
                dins.push(din);
            }
        }
        nothing |= dins.is_empty();
        filter.dins.push(dins);
    }
    let mut wanted: BTreeSet<&'static str> = ["available", "unavailable"].into();
    for values in search.any_of("product-status") {
        let asked = statuses_of(&values)?;
        wanted = wanted.intersection(&asked).copied().collect();
    }
    nothing |= wanted.is_empty();
    let request_lists: Vec<Vec<i64>> = search
        .any_of("request")
        .iter()
        .map(|values| {
            values
                .iter()
                .map(|v| search::reference_id("request", v, "ServiceRequest"))
                .collect::<ApiResult<Vec<i64>>>()
        })
        .collect::<ApiResult<_>>()?;
    let bounds: Vec<DateBound> = search
        .all("expiration")
        .map(|v| search::date_bound("expiration", v, tz))
        .collect::<ApiResult<_>>()?;
    let bound = DateBound::all(&bounds);
    filter.expires_from = bound.from.map(stored);
    filter.expires_to = bound.to.map(stored);
    let count = search.count;
    let settings: Arc<Settings> = state.settings.clone();
    let page = state
        .db(with_policy(move |conn, policy| {
            let now = utc(store::now());
            if wanted.len() == 1 {
                filter.usable = Some(Usable {
                    statuses: USABLE.to_vec(),
                    at: stored(now),
                    in_: wanted.contains("available"),
                });
            }
            for ids in request_lists {
                // A hospital's search names only its own requests; another's matches nothing.
                let mut own = Vec::new();
                for id in ids {
                    if services::requests::find(conn, id, scope).is_ok() {
                        own.push(id);
                    }
                }
                nothing |= own.is_empty();
                filter.requests.push(own);
            }
            if nothing {
                return Ok(Page::of(0, Vec::new(), count));
            }
            let total = unit_rows::search_count(conn, &filter)?;
            let found = unit_rows::search(conn, &filter, after, count + 1)?;
            let ctx = Context {
                settings: &settings,
                policy,
                scope,
                now,
            };
            Ok(Page::of(total, resources(conn, found, &ctx)?, count))
        }))
        .await?;
    super::bundle(&req, &search, page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn product_status_follows_the_status_as_of_now_and_the_expiry() {
        use ProductStatus::{Available as A, Unavailable as U};
        use UnitStatus::*;
        let now = Utc::now();
        let fresh = now + TimeDelta::hours(1);
        let past = now - TimeDelta::seconds(1);
        // (stored status, before expiry, at or past expiry)
        let table = [
            (Quarantined, U, U),
            (Available, A, U),
            (Allocated, A, U),
            (Issued, A, U),
            (Transfused, U, U),
            (Expired, U, U),
            (Discarded, U, U),
        ];
        assert_eq!(table.len(), UnitStatus::ALL.len());
        for (status, before, after) in table {
            assert_eq!(product_status(status, fresh, now), before, "{status} before expiry");
            assert_eq!(product_status(status, past, now), after, "{status} after expiry");
            assert_eq!(product_status(status, now, now), after, "{status} at expiry");
            // The search's filter says the same.
            assert_eq!(before == A, USABLE.contains(&status), "{status}");
        }
    }

    #[test]
    fn blood_groups_take_the_table_4_default_column() {
        use super::super::model::ISBT_ABO_RHD;
        use crate::domain::blood::{Abo::*, Rhd::*};
        let table = [
            (O, Negative, "95"),
            (O, Positive, "51"),
            (A, Negative, "06"),
            (A, Positive, "62"),
            (B, Negative, "17"),
            (B, Positive, "73"),
            (Ab, Negative, "28"),
            (Ab, Positive, "84"),
        ];
        for (abo, rhd, code) in table {
            let c = abo_rhd_coding(abo, RhdKnown::Typed(rhd));
            assert!(c.is(ISBT_ABO_RHD, code), "{abo} {rhd}: {c:?}");
        }
        assert!(abo_rhd_coding(A, RhdKnown::Pooled).is(ISBT_ABO_RHD, "A0"));
        assert!(abo_rhd_coding(O, RhdKnown::Pooled).is(ISBT_ABO_RHD, "D0"));
    }

    #[test]
    fn identifiers_match_dins_in_the_isbt_system_only() {
        assert_eq!(dins_of("A999921123456").expect("din"), Some("A999921123456".to_owned()));
        assert_eq!(
            dins_of(&format!("{ISBT_DIN}|A9999211234563")).expect("keyed"),
            Some("A999921123456".to_owned())
        );
        assert_eq!(dins_of("urn:other|A999921123456").expect("other"), None);
        assert_eq!(dins_of("|A999921123456").expect("no system"), None);
        assert!(dins_of("A9999211234564").is_err(), "a wrong check character is refused");
        assert!(dins_of(&format!("{ISBT_DIN}|")).is_err());
    }
}
