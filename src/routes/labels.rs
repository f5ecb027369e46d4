//! Printable unit labels (staff): the ISBT 128 base label as PDF or ZPL II, each print
//! recorded and audited, and the list of prints. `GET /units/{id}/label` (the JSON preview)
//! is in `units` and records nothing.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::with_policy;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::input::UnitKey;
use crate::labels::zpl::DPIS;
use crate::services::units::{self as work, LabelFormat, LabelPrints, Printed};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ZplQuery {
    /// The printer's resolution: 203 (default) or 300 dots per inch.
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    #[param(schema_with = dpi_schema)]
    pub dpi: Option<u32>,
}

/// The documented `dpi`: the two resolutions ZPL labels are laid out for, nothing else.
fn dpi_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .enum_values(Some(crate::labels::zpl::DPIS.map(i64::from)))
        .description(Some("The printer's resolution: 203 (default) or 300 dots per inch."))
        .into()
}

async fn print(state: web::Data<AppState>, caller: AuthUser, key: &str, format: LabelFormat) -> ApiResult<Printed> {
    caller.require_staff()?;
    let key = UnitKey::parse(key)?;
    let (actor, facility, tz) = (
        caller.actor(),
        state.settings.facility_name.clone(),
        state.settings.timezone,
    );
    state
        .write(with_policy(move |conn, policy| {
            work::print(conn, &actor, &key, format, &facility, tz, policy)
        }))
        .await
}

fn reply(printed: Printed, content_type: &str, extension: &str) -> HttpResponse {
    let din = printed.label.din.replace(' ', "");
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "inline; filename=\"label-{din}-v{}.{extension}\"",
                printed.print.version
            ),
        ))
        .insert_header(("Label-Version", printed.print.version.to_string()))
        .insert_header(("Label-Reprint", printed.print.reprint.to_string()))
        .body(printed.body)
}

/// Print the unit's ISBT 128 base label as a 100 × 100 mm PDF: DIN, ABO/RhD, product and expiry
/// with special testing in the four quadrants, every data structure as a Code 128 bar code.
/// The print is recorded (`GET …/label/prints`) and audited (`unit.label_printed`, or
/// `unit.label_reprinted` for a version printed before). `Label-Version` names the version.
#[utoipa::path(
    get, path = "/api/v1/units/{id}/label.pdf", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")),
    responses(
        (status = 200, description = "the label, one PDF page of 100 × 100 mm", content_type = "application/pdf", body = Vec<u8>),
        (status = 404, description = "`not_found`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`label_not_printable`", body = crate::error::Problem, content_type = "application/problem+json")
    )
)]
pub async fn label_pdf(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let printed = print(state, caller, &key, LabelFormat::Pdf).await?;
    Ok(reply(printed, "application/pdf", "pdf"))
}

/// Print the same label as ZPL II for a Zebra printer (`dpi` 203 or 300): recorded and
/// audited like the PDF.
#[utoipa::path(
    get, path = "/api/v1/units/{id}/label.zpl", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN"), ZplQuery),
    responses(
        (status = 200, description = "the label in ZPL II", content_type = "text/plain", body = String),
        (status = 400, description = "`unsupported_dpi`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`label_not_printable`", body = crate::error::Problem, content_type = "application/problem+json")
    )
)]
pub async fn label_zpl(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    query: web::Query<ZplQuery>,
) -> ApiResult<HttpResponse> {
    let dpi = query.dpi.unwrap_or(203);
    let dpi = u16::try_from(dpi)
        .ok()
        .filter(|d| DPIS.contains(d))
        .ok_or_else(|| ApiError::new(ErrorCode::UnsupportedDpi, format!("dpi must be 203 or 300, not {dpi}")))?;
    let printed = print(state, caller, &key, LabelFormat::Zpl(dpi)).await?;
    Ok(reply(printed, "text/plain; charset=utf-8", "zpl"))
}

/// Every print of the unit's label, oldest first (who, when, which version and format), and
/// the version its label has now.
#[utoipa::path(
    get, path = "/api/v1/units/{id}/label/prints", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")),
    responses((status = 200, description = "the unit's label prints", body = LabelPrints))
)]
pub async fn label_prints(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let key = UnitKey::parse(&key)?;
    let (facility, tz) = (state.settings.facility_name.clone(), state.settings.timezone);
    let found = state
        .db(with_policy(move |conn, policy| {
            work::prints(conn, &key, &facility, tz, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}
