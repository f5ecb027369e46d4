//! Scanned ISBT 128 data, decoded (staff).

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::domain::isbt128;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"data": "=A99992600012300"}))]
pub struct DecodeRequest {
    /// One or more concatenated data structures as scanned, e.g. `=A99992112345600=%9500`.
    #[schema(min_length = 1, max_length = 500)]
    pub data: String,
}

#[derive(Serialize, ToSchema)]
pub struct DecodeResponse {
    /// One object per structure, tagged by `structure`: `din` (with `check_character` and
    /// `flags`), `blood_group`, `product_code`, `expiration_date`, `expiration_date_time`,
    /// `collection_date`, `collection_date_time`. Dates carry `local`, the wall-clock time as
    /// printed (read in the bank's `GRANULO_TIMEZONE`), and `at`, that instant in UTC (where
    /// the clock shows a time twice or not at all, the earlier instant).
    #[schema(value_type = Vec<Object>)]
    pub elements: Vec<isbt128::Element>,
}

const MAX_DATA: usize = 512;

/// Decode scanned ISBT 128 data; a check character that does not match refuses the scan.
#[utoipa::path(
    post, path = "/api/v1/isbt128/decode", tag = "units", security(("bearer" = [])), request_body = DecodeRequest,
    responses(
        (status = 200, description = "the decoded data elements", body = DecodeResponse),
        (status = 422, description = "`invalid_check_character`, `invalid_isbt128`, `unsupported_data_structure`",
         body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn decode(
    state: actix_web::web::Data<crate::state::AppState>,
    caller: AuthUser,
    body: JsonBody<DecodeRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let data = body.into_inner().data;
    if data.len() > MAX_DATA {
        return Err(ApiError::field(
            "data",
            format!("must be at most {MAX_DATA} characters"),
        ));
    }
    let elements = isbt128::decode_in(&data, state.settings.timezone)
        .map_err(|e| ApiError::isbt(&e, "the scanned data is not valid ISBT 128"))?;
    Ok(HttpResponse::Ok().json(DecodeResponse { elements }))
}
