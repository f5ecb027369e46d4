//! A donor's donations from other programmes (whole blood, apheresis elsewhere): recorded for
//! the red-cell-loss and interval rules, which read them through the donor record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::donors::find;
use super::{is_past, stored, to_value, utc};
use crate::domain::eligibility::ProcedureKind;
use crate::error::{ApiResult, Validator};
use crate::input::Text;
use crate::store::audit::{self, Actor, Change};
use crate::store::donors::{self as rows, DonationRow};
use crate::store::{self, DbConn};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "whole_blood", "donated_at": "2026-10-02T10:00:00Z", "site": "city donor centre"}))]
pub struct DonationInput {
    pub kind: ProcedureKind,
    pub donated_at: DateTime<Utc>,
    /// Red cells removed, 0–1000 mL (a whole-blood donation removes about 200 mL of red cells).
    #[schema(minimum = 0, maximum = 1000)]
    pub red_cell_loss_ml: Option<u32>,
    /// Whether red cells were returned to the donor. Default: false for whole blood and red-cell
    /// apheresis, true for the others.
    pub red_cells_returned: Option<bool>,
    /// Where, for the record (other programme or centre), up to 200 characters.
    pub site: Option<Text<1, 200>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DonationView {
    pub id: i64,
    pub donor_id: i64,
    pub kind: ProcedureKind,
    pub donated_at: DateTime<Utc>,
    pub red_cell_loss_ml: Option<i32>,
    pub red_cells_returned: bool,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub site: Option<String>,
    pub recorded_by: String,
    pub created_at: DateTime<Utc>,
}

const MAX_RED_CELL_LOSS_ML: u32 = 1000;

fn donation_view(r: DonationRow) -> ApiResult<DonationView> {
    Ok(DonationView {
        id: r.id,
        donor_id: r.donor_id,
        kind: r.kind,
        donated_at: utc(r.donated_at),
        red_cell_loss_ml: r.red_cell_loss_ml,
        red_cells_returned: r.red_cells_returned,
        site: r.site,
        recorded_by: r.recorded_by,
        created_at: utc(r.created_at),
    })
}

pub fn record_donation(
    conn: &mut DbConn,
    actor: &Actor,
    donor_id: i64,
    input: DonationInput,
) -> ApiResult<DonationView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    v.check(
        is_past(input.donated_at, now),
        "donated_at",
        "must not be in the future",
    );
    let loss = input.red_cell_loss_ml;
    v.check(
        loss.is_none_or(|ml| ml <= MAX_RED_CELL_LOSS_ML),
        "red_cell_loss_ml",
        format!("must be between 0 and {MAX_RED_CELL_LOSS_ML}"),
    );
    let site = input.site.map(Text::into_inner);
    v.finish()?;
    let returned = input.red_cells_returned.unwrap_or(!matches!(
        input.kind,
        ProcedureKind::WholeBlood | ProcedureKind::RedCells
    ));
    find(conn, donor_id)?;
    let row = rows::insert_donation(
        conn,
        &rows::NewDonation {
            donor_id,
            kind: input.kind,
            donated_at: stored(input.donated_at),
            red_cell_loss_ml: loss.and_then(|ml| i32::try_from(ml).ok()),
            red_cells_returned: returned,
            site: site.as_deref(),
            recorded_by: &actor.name,
            created_at: stored(now),
        },
    )?;
    let created = donation_view(row)?;
    audit::append(
        conn,
        actor,
        Change::created("donor.donation", "donor", donor_id, to_value(&created)?),
    )?;
    Ok(created)
}

pub fn donations(conn: &mut DbConn, donor_id: i64) -> ApiResult<Vec<DonationView>> {
    find(conn, donor_id)?;
    rows::donations_of(conn, &[donor_id])?
        .into_iter()
        .map(donation_view)
        .collect()
}
