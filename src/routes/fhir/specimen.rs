//! `Specimen`: the recipient's crossmatch sample (docs/fhir-parts/service-request.md). Create
//! goes through `services::patients::add_sample`, which sets how long the sample stays valid.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::model::{CodeableConcept, Extension, Meta, Reference, extension, extension_url};
use super::path_id;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorCode, Validator};
use crate::extract::JsonBody;
use crate::routes::with_policy;
use crate::services::patients::{self as work, SampleInput, SampleView};
use crate::state::AppState;
use crate::store::patients as rows;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/Specimen").route(web::post().to(create)))
        .service(web::resource("/Specimen/{id}").route(web::get().to(read)));
}

const SPECIMEN: &str = "Specimen";
/// Whether the patient was transfused or pregnant in the last three months: it shortens how
/// long the sample is valid.
const RECENT: &str = "recent-transfusion-or-pregnancy";
const VALID_UNTIL: &str = "specimen-valid-until";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Collection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_date_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Specimen {
    resource_type: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Meta>,
    extension: Vec<Extension>,
    #[serde(rename = "type")]
    type_: CodeableConcept,
    subject: Reference,
    collection: Collection,
    #[serde(skip)]
    created_at: DateTime<Utc>,
}

super::model::resource!(Specimen, SPECIMEN, created_at);

pub fn resource(s: SampleView) -> Specimen {
    Specimen {
        resource_type: SPECIMEN,
        id: s.id.to_string(),
        meta: None,
        extension: vec![
            Extension {
                value_boolean: Some(s.transfused_or_pregnant_within_3_months),
                ..Extension::ours(RECENT)
            },
            Extension {
                value_date_time: Some(s.valid_until),
                ..Extension::ours(VALID_UNTIL)
            },
        ],
        type_: CodeableConcept::text("Blood"),
        subject: Reference::to("Patient", s.patient_id),
        collection: Collection {
            collected_date_time: Some(s.drawn_at),
        },
        created_at: s.created_at,
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecimenIn {
    resource_type: Option<String>,
    #[allow(dead_code)]
    id: Option<IgnoredAny>,
    #[allow(dead_code)]
    meta: Option<IgnoredAny>,
    #[allow(dead_code)]
    text: Option<IgnoredAny>,
    #[serde(default)]
    extension: Vec<Extension>,
    #[serde(rename = "type")]
    type_: Option<CodeableConcept>,
    subject: Option<Reference>,
    collection: Option<Collection>,
}

/// Reads a new sample: (patient, what `add_sample` takes).
fn read_sample(input: SpecimenIn) -> ApiResult<(i64, SampleInput)> {
    let mut v = Validator::new();
    let at = |element: &str| format!("{SPECIMEN}.{element}");
    if input.resource_type.as_deref().is_some_and(|t| t != SPECIMEN) {
        v.push("resourceType", "must be Specimen");
    }
    // A type, when sent, must say blood: granulo records crossmatch samples only.
    if let Some(t) = &input.type_ {
        let words = t
            .text
            .iter()
            .chain(t.coding.iter().filter_map(|c| c.display.as_ref()))
            .any(|w| w.to_ascii_lowercase().contains("blood"));
        v.check(
            words,
            &at("type"),
            "must be blood (text Blood): granulo records crossmatch samples only",
        );
    }
    let patient = input.subject.as_ref().and_then(|s| s.id_of("Patient"));
    v.check(patient.is_some(), &at("subject"), "must be a reference Patient/<id>");
    let drawn_at = input.collection.as_ref().and_then(|c| c.collected_date_time);
    v.check(
        drawn_at.is_some(),
        &at("collection.collectedDateTime"),
        "is required: when the sample was drawn",
    );
    let recent = match extension(&input.extension, RECENT) {
        Err(e) => {
            v.push(&at("extension"), e);
            None
        }
        Ok(found) => {
            let value = found.and_then(|e| e.value_boolean);
            if value.is_none() {
                v.push(
                    &at("extension"),
                    format!(
                        "the extension {} (valueBoolean) is required: whether the patient was transfused or pregnant in the last 3 months decides how long the sample is valid for crossmatching",
                        extension_url(RECENT)
                    ),
                );
            }
            value
        }
    };
    v.finish()?;
    match (patient, drawn_at, recent) {
        (Some(p), Some(drawn_at), Some(recent)) => Ok((
            p,
            SampleInput {
                drawn_at,
                transfused_or_pregnant_within_3_months: recent,
            },
        )),
        _ => Err(ApiError::internal(anyhow::anyhow!(
            "a sample passed its checks incomplete"
        ))),
    }
}

async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
    body: JsonBody<SpecimenIn>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let (patient, input) = read_sample(body.into_inner())?;
    let actor = caller.actor();
    let sample = state
        .write(with_policy(move |conn, policy| {
            // Another hospital's patient is answered as one that does not exist.
            work::find(conn, patient, scope)
                .map_err(|e| e.or_unknown(ErrorCode::UnknownPatient, "patient", patient))?;
            work::add_sample(conn, &actor, patient, input, scope, policy).map_err(|e| {
                super::as_elements(e, |field| {
                    (field == "drawn_at").then(|| format!("{SPECIMEN}.collection.collectedDateTime"))
                })
            })
        }))
        .await?;
    super::created(&req, resource(sample))
}

async fn read(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = path_id(&id, SPECIMEN)?;
    let sample = state
        .db(move |conn| {
            let s = rows::find_sample(conn, id)?.ok_or_else(|| ApiError::not_found(SPECIMEN))?;
            // The sample of a patient the caller may not see does not exist for it.
            work::find(conn, s.patient_id, scope).map_err(|e| {
                if e.code() == ErrorCode::NotFound {
                    ApiError::not_found(SPECIMEN)
                } else {
                    e
                }
            })?;
            Ok(work::sample_view(s))
        })
        .await?;
    super::read(resource(sample))
}
