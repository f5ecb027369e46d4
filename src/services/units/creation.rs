//! Creation of units (from one of our collections, or from a supplier, pooled or not), DIN
//! assignment, and irradiation.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use utoipa::{PartialSchema as _, ToSchema};

use super::storage::clean_location;
use super::view::{UnitView, snapshot, view};
use super::{UnitSource, begin, save};
use crate::domain::blood::{Abo, Cmv, Rhd, UnitRhd};
use crate::domain::isbt128::{self, Din};
use crate::domain::policy::Policy;
use crate::domain::scheduling::CollectionStatus;
use crate::domain::units::{self as rules, UnitAction, UnitStatus};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::input::{Text, UnitKey, parse_din_reference};
use crate::services::{is_past, stored, utc};
use crate::store::audit::{self, Actor, Change};
use crate::store::units::{self as rows, UnitData};
use crate::store::{self, DbConn, collections as collection_rows, donors as donor_rows};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceInput {
    /// From one of our completed collections: blood group, CMV and donor come from the donor,
    /// the collection end from the collection; the DIN is assigned.
    Collection { collection_id: i64 },
    /// From a supplier: the supplier's DIN (13 characters, 14 with check character, or the
    /// scanned `=` structure), blood group and collection time.
    External {
        #[schema(schema_with = Text::<1, 200>::schema)]
        supplier: String,
        din: String,
        abo: Abo,
        /// `pooled` for a pool of mixed RhD (ISBT 128 pooled RhD); selection counts it positive.
        rhd: UnitRhd,
        /// End of collection (of a pool: of its latest donation, as the supplier labels it).
        collected_at: DateTime<Utc>,
        cmv: Option<Cmv>,
        /// The expiry printed on the supplier's label; the unit expires at the earlier of this
        /// and the server's own computation.
        expires_at: Option<DateTime<Utc>>,
    },
}

/// A contributing donation of a pool: its DIN, or its DIN with what the supplier says of it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PoolMemberInput {
    Din(String),
    Donation {
        din: String,
        /// The donation's group: a pool is made of ABO-matched donations.
        abo: Option<Abo>,
        rhd: Option<Rhd>,
        /// When the donation was collected: the pool's expiry counts from the earliest.
        collected_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"source": {"type": "collection", "collection_id": 42}, "product_code": "E4583V00", "volume_ml": 250, "granulocyte_count": 2.5e10, "red_cell_volume_ml": 15.0, "storage_location": "Incubator 2"}))]
pub struct CreateUnitInput {
    pub source: SourceInput,
    /// ISBT 128 product code `αooootds` (8 characters, from the licensed database).
    pub product_code: String,
    /// 1–1000 mL.
    #[schema(minimum = 1, maximum = 1000)]
    pub volume_ml: u32,
    /// Granulocytes in the unit (e.g. 2.5e10).
    pub granulocyte_count: f64,
    /// 0–500 mL.
    #[schema(minimum = 0, maximum = 500)]
    pub red_cell_volume_ml: Option<f64>,
    /// External pooled units: every contributing donation (2–30), as its DIN or as
    /// `{din, abo?, rhd?, collected_at?}`.
    pub pooled_from: Option<Vec<PoolMemberInput>>,
    /// Where the unit is kept (e.g. "Incubator 2"), up to 100 characters.
    pub storage_location: Option<Text<0, 100>>,
}

const MAX_VOLUME_ML: u32 = 1000;
const MAX_GRANULOCYTES: f64 = 1e12;
const MAX_RED_CELLS_ML: f64 = 500.0;
const POOL_SIZE: (usize, usize) = (2, 30);

/// The next free DIN of our FIN. A number already taken (a supplier unit registered with our
/// own FIN) is skipped rather than refused, so one such unit cannot block every creation.
fn assign_din(conn: &mut DbConn, fin: &str, now: DateTime<Utc>) -> ApiResult<Din> {
    let year = now.year() % 100;
    loop {
        let sequence = rows::next_din_sequence(conn, fin, year)?;
        let sequence = u32::try_from(sequence).unwrap_or(u32::MAX);
        if sequence > Din::MAX_SEQUENCE {
            return Err(ApiError::new(
                ErrorCode::DinSequenceExhausted,
                format!("all DIN sequence numbers of {fin} for 20{year:02} are used"),
            ));
        }
        let din = Din::new(fin, u8::try_from(year).unwrap_or(0), sequence)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        if rows::find_by_din(conn, &din.as_text())?.is_none() {
            return Ok(din);
        }
    }
}

pub fn create(
    conn: &mut DbConn,
    actor: &Actor,
    fin: &str,
    tz: Tz,
    input: CreateUnitInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    create_recorded(conn, actor, fin, tz, input, policy, None)
}

/// [`create`], with `receipt` (how the unit was received) added to its audit entry.
pub(super) fn create_recorded(
    conn: &mut DbConn,
    actor: &Actor,
    fin: &str,
    tz: Tz,
    input: CreateUnitInput,
    policy: &Policy,
    receipt: Option<serde_json::Value>,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    let product_code = input.product_code.trim().trim_start_matches("=<").to_owned();
    if let Err(e) = isbt128::decode(&format!("=<{product_code}")) {
        v.push("product_code", e.to_string());
    }
    v.check(
        (1..=MAX_VOLUME_ML).contains(&input.volume_ml),
        "volume_ml",
        format!("must be between 1 and {MAX_VOLUME_ML}"),
    );
    v.check(
        input.granulocyte_count.is_finite()
            && input.granulocyte_count > 0.0
            && input.granulocyte_count <= MAX_GRANULOCYTES,
        "granulocyte_count",
        "must be a positive cell count (e.g. 2.5e10)",
    );
    v.check(
        input
            .red_cell_volume_ml
            .is_none_or(|ml| ml.is_finite() && (0.0..=MAX_RED_CELLS_ML).contains(&ml)),
        "red_cell_volume_ml",
        format!("must be between 0 and {MAX_RED_CELLS_ML}"),
    );
    let storage_location = clean_location(input.storage_location);
    let mut pool: Vec<rows::PoolMember> = Vec::new();
    if let Some(list) = &input.pooled_from {
        if matches!(input.source, SourceInput::Collection { .. }) {
            v.push("pooled_from", "only supplier units are pooled here");
        }
        v.check(
            (POOL_SIZE.0..=POOL_SIZE.1).contains(&list.len()),
            "pooled_from",
            format!("must list {} to {} donations", POOL_SIZE.0, POOL_SIZE.1),
        );
        for (i, member) in list.iter().enumerate() {
            let (raw, abo, rhd, collected_at) = match member {
                PoolMemberInput::Din(din) => (din, None, None, None),
                PoolMemberInput::Donation {
                    din,
                    abo,
                    rhd,
                    collected_at,
                } => (din, *abo, *rhd, *collected_at),
            };
            if collected_at.is_some_and(|t| !is_past(t, now)) {
                v.push(&format!("pooled_from[{i}].collected_at"), "must not be in the future");
            }
            match parse_din_reference(raw) {
                Ok(din) if pool.iter().any(|m| m.din == din.as_text()) => {
                    v.push(&format!("pooled_from[{i}]"), "is listed twice")
                }
                Ok(din) => pool.push(rows::PoolMember {
                    unit_id: 0,
                    din: din.as_text(),
                    abo,
                    rhd,
                    collected_at: collected_at.map(stored),
                }),
                Err(e) => v.push(
                    &format!("pooled_from[{i}]"),
                    e.problem()
                        .reasons
                        .first()
                        .map_or_else(String::new, |r| r.message.clone()),
                ),
            }
        }
    }
    let mut labelled_expiry: Option<DateTime<Utc>> = None;
    let mut rhd_pooled = false;
    let (source, din, collection_id, donor_id, supplier, abo, rhd, cmv, collected_at) = match input.source {
        SourceInput::External {
            supplier,
            din,
            abo,
            rhd,
            collected_at,
            cmv,
            expires_at,
        } => {
            labelled_expiry = expires_at.map(|t| utc(stored(t)));
            rhd_pooled = rhd == UnitRhd::Pooled;
            v.check(
                !rhd_pooled || !pool.is_empty(),
                "source.rhd",
                "pooled RhD is for a pool: list its donations in pooled_from",
            );
            let rhd_labelled = rhd;
            let rhd = rhd.for_selection();
            // Checked here, not by its type: a tagged enum's fields lose their path in serde.
            let supplier = Text::<1, 200>::check(&mut v, "source.supplier", &supplier);
            v.check(
                is_past(collected_at, now),
                "source.collected_at",
                "must not be in the future",
            );
            v.finish()?;
            let din = parse_din_reference(&din)?;
            let members: Vec<rules::PoolMemberFacts> = pool
                .iter()
                .map(|m| rules::PoolMemberFacts {
                    din: m.din.clone(),
                    abo: m.abo,
                    rhd: m.rhd,
                })
                .collect();
            let inconsistent = rules::pool_inconsistencies(abo, rhd_labelled, &members);
            if !inconsistent.is_empty() {
                return Err(ApiError::refused(
                    ErrorCode::PoolGroupInconsistent,
                    "the pool's donations do not match its labelled group",
                    crate::services::reasons(inconsistent),
                ));
            }
            (
                UnitSource::External,
                din,
                None,
                None,
                Some(supplier),
                abo,
                rhd,
                cmv.unwrap_or(Cmv::Unknown),
                utc(stored(collected_at)),
            )
        }
        SourceInput::Collection { collection_id } => {
            v.finish()?;
            let c = collection_rows::find(conn, collection_id)?
                .ok_or_else(|| ApiError::unknown(ErrorCode::UnknownCollection, "collection", collection_id))?;
            let status = c.status;
            let Some(ended_at) = c.ended_at.filter(|_| status == CollectionStatus::Completed) else {
                return Err(ApiError::new(
                    ErrorCode::CollectionNotCompleted,
                    format!("collection {collection_id} is {status}; units come from completed collections"),
                ));
            };
            let donor = donor_rows::find(conn, c.donor_id)?.ok_or_else(|| ApiError::not_found("donor"))?;
            let din = assign_din(conn, fin, now)?;
            (
                UnitSource::Collection,
                din,
                Some(collection_id),
                Some(donor.id),
                None,
                donor.abo,
                donor.rhd,
                donor.cmv,
                utc(ended_at),
            )
        }
    };
    let pooled = !pool.is_empty();
    // A pool's day counts from its earliest donation.
    let earliest = pool
        .iter()
        .filter_map(|m| m.collected_at.map(utc))
        .chain([collected_at])
        .min()
        .unwrap_or(collected_at);
    let expires_at = rules::capped_expiry(
        rules::expires_at(if pooled { earliest } else { collected_at }, pooled, tz, policy),
        labelled_expiry,
    );
    if expires_at <= now {
        return Err(ApiError::refused(
            ErrorCode::UnitExpired,
            format!("a unit collected at {collected_at} expired at {expires_at}"),
            vec![Reason {
                code: ErrorCode::UnitExpired.as_str().to_owned(),
                message: format!("expired at {expires_at}"),
            }],
        ));
    }
    let din_text = din.as_text();
    let row = rows::insert(
        conn,
        &UnitData {
            din: din_text.clone(),
            product_code,
            source,
            collection_id,
            donor_id,
            supplier,
            pooled,
            abo,
            rhd,
            cmv,
            volume_ml: i32::try_from(input.volume_ml).unwrap_or(i32::MAX),
            granulocyte_count: input.granulocyte_count,
            red_cell_volume_ml: input.red_cell_volume_ml,
            collected_at: stored(collected_at),
            expires_at: stored(expires_at),
            status: UnitStatus::Quarantined,
            status_reason: Some("awaiting release".to_owned()),
            storage_location,
            irradiated_at: None,
            irradiation_dose_gy: None,
            irradiation_device: None,
            irradiated_by: None,
            release_kind: None,
            released_at: None,
            released_by: None,
            emergency_physician: None,
            emergency_acknowledged_at: None,
            discarded_at: None,
            discarded_by: None,
            updated_at: stored(now),
        },
        stored(now),
    )
    .map_err(|e| {
        if !store::is_unique_violation(&e) {
            return ApiError::from(e);
        }
        match collection_id {
            Some(c) => ApiError::new(ErrorCode::UnitExists, format!("collection {c} already has a unit")),
            None => ApiError::new(ErrorCode::DinExists, format!("a unit with DIN {din_text} exists")),
        }
    })?;
    for m in &mut pool {
        m.unit_id = row.id;
    }
    rows::insert_pool_members(conn, &pool)?;
    if source == UnitSource::External {
        rows::insert_supply(
            conn,
            &rows::Supply {
                unit_id: row.id,
                rhd_pooled,
                labelled_expires_at: labelled_expiry.map(stored),
            },
        )?;
    }
    let created = view(conn, row, now)?;
    let mut after = snapshot(&created)?;
    if let (Some(receipt), Some(fields)) = (receipt, after.as_object_mut()) {
        fields.insert("receipt".to_owned(), receipt);
    }
    audit::append(conn, actor, Change::created("unit.create", "unit", created.id, after))?;
    // The product's red cells were taken from the donor: they count in the donor's exposure.
    if let Some(id) = collection_id {
        crate::services::collections::record_product_red_cells(conn, actor, id, input.red_cell_volume_ml, policy)?;
    }
    Ok(created)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dose_gy": 25.0, "device": "Gammacell 3000"}))]
pub struct IrradiationInput {
    pub dose_gy: f64,
    /// Default: now.
    pub irradiated_at: Option<DateTime<Utc>>,
    /// Irradiator used, up to 100 characters.
    pub device: Option<Text<0, 100>>,
}

pub fn irradiate(
    conn: &mut DbConn,
    actor: &Actor,
    key: &UnitKey,
    input: IrradiationInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let at = utc(stored(input.irradiated_at.unwrap_or(now)));
    let device = input.device.map(Text::into_inner).filter(|d| !d.is_empty());
    let mut v = Validator::new();
    v.check(is_past(at, now), "irradiated_at", "must not be in the future");
    v.finish()?;
    let (u, _) = begin(conn, key, UnitAction::Irradiate, now)?;
    if u.irradiated_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::AlreadyIrradiated,
            format!("unit {} is already irradiated", u.din),
        ));
    }
    if at < utc(u.collected_at) {
        return Err(ApiError::field("irradiated_at", "must not be before the collection"));
    }
    if let Some(problem) = rules::irradiation_dose_problem(input.dose_gy, policy) {
        return Err(ApiError::refused(
            ErrorCode::IrradiationDoseOutOfRange,
            "the irradiation dose is outside the policy range",
            crate::services::reasons(vec![problem]),
        ));
    }
    let mut data = UnitData::from(u.clone());
    data.irradiated_at = Some(stored(at));
    data.irradiation_dose_gy = Some(input.dose_gy);
    data.irradiation_device = device;
    data.irradiated_by = Some(actor.name.clone());
    data.updated_at = stored(now);
    save(conn, actor, "unit.irradiate", u, data, now)
}
