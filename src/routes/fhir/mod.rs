//! The FHIR R5 facade at `/fhir/R5` for hospital systems (docs/fhir.md): the same services,
//! transactions, roles, hospital scoping and audit as `/api/v1`, in the resources an
//! integration engine already speaks. Every error is an OperationOutcome carrying the same
//! stable code as the problem+json of `/api/v1`.

pub mod dispense;
pub mod metadata;
pub mod model;
pub mod observation;
pub mod outcome;
pub mod patient;
pub mod product;
pub mod search;
pub mod service_request;
pub mod specimen;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult, ErrorCode, FHIR_CONTENT_TYPE, PROBLEM_CONTENT_TYPE};
use model::{Meta, Resource};
use search::Search;

/// Where the facade is mounted.
pub const BASE_PATH: &str = "/fhir/R5";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(BASE_PATH)
            .wrap(from_fn(super::idempotency::idempotency_key))
            .wrap(from_fn(fhir_exchange))
            .service(web::resource("/metadata").route(web::get().to(metadata::capability_statement)))
            .configure(patient::routes)
            .configure(service_request::routes)
            .configure(specimen::routes)
            .configure(product::routes)
            .configure(dispense::routes)
            .configure(observation::routes)
            .default_service(web::to(|req: HttpRequest| async move {
                Err::<HttpResponse, _>(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no FHIR resource type or interaction at {}", req.path()),
                ))
            })),
    );
}

/// The absolute base of the facade as the client reached it (for `fullUrl`, `Location` and
/// paging links).
pub fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}{BASE_PATH}", info.scheme(), info.host())
}

/// The record id in a FHIR logical id: granulo's ids are positive numbers, so anything else
/// names nothing (404, as any id that does not exist).
pub fn path_id(raw: &str, resource_type: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found(&format!("{resource_type}/{raw}")))
}

/// A field error of a `/api/v1` service, renamed to the resource's elements: `rename` gives
/// the element path for a field (fields it does not know keep their name). Other errors pass.
pub fn as_elements(e: ApiError, rename: impl Fn(&str) -> Option<String>) -> ApiError {
    if e.code() != ErrorCode::ValidationFailed {
        return e;
    }
    let errors = e
        .problem()
        .errors
        .into_iter()
        .map(|f| crate::error::FieldError {
            field: rename(&f.field).unwrap_or(f.field),
            message: f.message,
        })
        .collect();
    ApiError::validation(errors)
}

/// The version of a resource: a digest of everything it says except `meta`, so it changes
/// exactly when the resource does (`meta.versionId` and the `ETag`).
pub fn stamp<R: Resource>(mut resource: R) -> ApiResult<(R, String)> {
    *resource.meta_mut() = None;
    let bytes = serde_json::to_vec(&resource).map_err(ApiError::internal)?;
    let version = hex::encode(&Sha256::digest(&bytes)[..8]);
    let last_updated = resource.last_updated();
    *resource.meta_mut() = Some(Meta {
        version_id: Some(version.clone()),
        last_updated: Some(last_updated),
    });
    Ok((resource, version))
}

fn etag(version: &str) -> String {
    format!("W/\"{version}\"")
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> ApiResult<HttpResponse> {
    let bytes = serde_json::to_vec(body).map_err(ApiError::internal)?;
    Ok(HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, FHIR_CONTENT_TYPE))
        .body(bytes))
}

/// 200 with the resource, its `ETag` and `Last-Modified`.
pub fn read<R: Resource>(resource: R) -> ApiResult<HttpResponse> {
    respond(StatusCode::OK, None, resource)
}

/// 201 with the new resource and its `Location`.
pub fn created<R: Resource>(req: &HttpRequest, resource: R) -> ApiResult<HttpResponse> {
    respond(StatusCode::CREATED, Some(req), resource)
}

fn respond<R: Resource>(status: StatusCode, location: Option<&HttpRequest>, resource: R) -> ApiResult<HttpResponse> {
    let last_modified = resource.last_updated();
    let id = resource.id();
    let (resource, version) = stamp(resource)?;
    let mut response = json(status, &resource)?;
    let headers = response.headers_mut();
    let mut put = |name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put(header::ETAG, etag(&version));
    put(
        header::LAST_MODIFIED,
        last_modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
    );
    if let Some(req) = location {
        put(
            header::LOCATION,
            format!("{}/{}/{id}/_history/{version}", base_url(req), R::TYPE),
        );
    }
    Ok(response)
}

/// `If-Match: W/"<version>"` on an update: required, and it must name the version now held.
pub fn check_if_match(req: &HttpRequest, current_version: &str) -> ApiResult<()> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Err(ApiError::new(
            ErrorCode::PreconditionRequired,
            "an update needs If-Match with the ETag (W/\"<versionId>\") of the version it changes",
        ));
    };
    let sent = value.to_str().unwrap_or("").trim();
    let sent = sent.strip_prefix("W/").unwrap_or(sent).trim_matches('"');
    if sent != current_version {
        return Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!("If-Match names version {sent}; the resource is at version {current_version}"),
        ));
    }
    Ok(())
}

/// The identifier of an `If-None-Exist: identifier=[system|]value` header — the one condition
/// a create takes here. Its code is never empty, its system empty only when absent.
pub fn if_none_exist(req: &HttpRequest, resource_type: &str) -> ApiResult<Option<search::Token>> {
    let Some(raw) = req.headers().get("If-None-Exist") else {
        return Ok(None);
    };
    let bad = |message: &str| ApiError::field("If-None-Exist", message);
    let raw = raw.to_str().map_err(|_| bad("must be ASCII"))?;
    let raw = raw.trim().trim_start_matches('?');
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|_| bad("must be a query: identifier=<system>|<value>"))?;
    match pairs.as_slice() {
        [(name, value)] if name == "identifier" => {
            let t = search::Token::parse(value);
            match (&t.system, &t.code) {
                (Some(s), Some(v)) if !s.is_empty() && !v.is_empty() => Ok(Some(t)),
                (None, Some(v)) if !v.is_empty() => Ok(Some(t)),
                _ => Err(bad("identifier must be <system>|<value> or <value>")),
            }
        }
        [(name, _)] => Err(ApiError::new(
            ErrorCode::UnknownSearchParameter,
            format!("If-None-Exist on {resource_type} takes identifier only, not {name}"),
        )),
        _ => Err(bad("must name exactly one parameter: identifier=<system>|<value>")),
    }
}

/// One page of a search.
pub struct Page<R> {
    /// Matches in all pages.
    pub total: i64,
    /// This page, ascending by id, at most `count` long.
    pub items: Vec<R>,
    /// Whether a later page exists.
    pub more: bool,
}

impl<R> Page<R> {
    /// A page from the `count + 1` rows read after the cursor.
    pub fn of(total: i64, mut items: Vec<R>, count: i64) -> Self {
        let count = usize::try_from(count).unwrap_or(0);
        let more = items.len() > count;
        items.truncate(count);
        Self { total, items, more }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    resource_type: &'static str,
    #[serde(rename = "type")]
    type_: &'static str,
    total: i64,
    link: Vec<BundleLink>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entry: Vec<BundleEntry>,
}

#[derive(Serialize)]
struct BundleLink {
    relation: &'static str,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleEntry {
    full_url: String,
    resource: serde_json::Value,
    search: EntrySearch,
}

#[derive(Serialize)]
struct EntrySearch {
    mode: &'static str,
}

/// A `searchset` Bundle: `total`, the `self` link and, when more matches follow, a `next` link
/// carrying the same parameters and the keyset position.
pub fn bundle<R: Resource>(req: &HttpRequest, search: &Search, page: Page<R>) -> ApiResult<HttpResponse> {
    let base = base_url(req);
    let own = format!("{base}/{}", R::TYPE);
    let query = |after: Option<String>| {
        let mut pairs: Vec<(String, String)> = search.params.clone();
        pairs.push(("_count".to_owned(), search.count.to_string()));
        if let Some(a) = after {
            pairs.push(("_cursor".to_owned(), a));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    };
    let mut link = vec![BundleLink {
        relation: "self",
        url: format!("{own}?{}", query(search.after.clone())),
    }];
    if page.more
        && let Some(last) = page.items.last()
    {
        link.push(BundleLink {
            relation: "next",
            url: format!("{own}?{}", query(Some(last.id()))),
        });
    }
    let mut entry = Vec::with_capacity(page.items.len());
    for item in page.items {
        let id = item.id();
        let (item, _) = stamp(item)?;
        entry.push(BundleEntry {
            full_url: format!("{own}/{id}"),
            resource: serde_json::to_value(&item).map_err(ApiError::internal)?,
            search: EntrySearch { mode: "match" },
        });
    }
    json(
        StatusCode::OK,
        &Bundle {
            resource_type: "Bundle",
            type_: "searchset",
            total: page.total,
            link,
            entry,
        },
    )
}

/// The query string of a request, for [`Search::parse`].
pub fn query(req: &HttpRequest) -> &str {
    req.query_string()
}

/// Formats the facade answers in: FHIR JSON (`_format=json`, `application/fhir+json`) or plain
/// JSON. XML and Turtle are not served.
fn format_acceptable(value: &str) -> bool {
    let v = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(
        v.as_str(),
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir" | "application/*" | "*/*" | ""
    )
}

/// Whether the client asked for `application/json` rather than `application/fhir+json`.
fn wants_plain_json(req: &ServiceRequest) -> bool {
    let format = req
        .query_string()
        .split('&')
        .find_map(|p| p.strip_prefix("_format="))
        .map(|f| f.replace("%2F", "/").replace("%2f", "/"));
    if let Some(f) = format {
        return f == "application/json";
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("fhir+json")
}

/// Refuses formats other than JSON, answers plain JSON to a client that asks for it, and turns
/// every error on the way out — ours, the extractors' and the framework's — into an
/// OperationOutcome with the same status and code.
async fn fhir_exchange(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let format = req
        .query_string()
        .split('&')
        .find_map(|p| p.strip_prefix("_format="))
        .map(|f| {
            f.replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%2B", "+")
                .replace("%2b", "+")
        });
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let refused = format.as_deref().is_some_and(|f| !format_acceptable(f))
        || accept.as_deref().is_some_and(|a| {
            !a.split(',')
                .any(|part| format_acceptable(part) || part.contains("json"))
        });
    if refused {
        let (http, _) = req.into_parts();
        let e = ApiError::new(
            ErrorCode::NotAcceptable,
            "this FHIR server answers in JSON only: application/fhir+json or application/json",
        );
        return Ok(ServiceResponse::new(http, outcome::response(&e.problem())));
    }
    let plain = wants_plain_json(&req);
    let res = next.call(req).await?;
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        return Ok(to_outcome(res).await);
    }
    let mut res = res.map_into_boxed_body();
    if plain {
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(res)
}

async fn to_outcome<B: MessageBody + 'static>(res: ServiceResponse<B>) -> ServiceResponse<BoxBody> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_CONTENT_TYPE));
    let is_outcome = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(FHIR_CONTENT_TYPE));
    if is_outcome {
        return res.map_into_boxed_body();
    }
    let status = res.status();
    let keep: Vec<_> = [header::RETRY_AFTER, header::ALLOW, header::WWW_AUTHENTICATE]
        .into_iter()
        .filter_map(|name| res.headers().get(&name).cloned().map(|v| (name, v)))
        .collect();
    let (http, response) = res.into_parts();
    let method = http.method().to_string();
    let path = http.path().to_owned();
    let problem = if is_problem {
        let bytes = actix_web::body::to_bytes(response.into_body()).await.ok();
        bytes.and_then(|b| serde_json::from_slice::<outcome::ProblemIn>(&b).ok())
    } else {
        None
    };
    let problem = problem.unwrap_or_else(|| {
        let e = crate::extract::framework_error(status, &method, &path);
        outcome::ProblemIn::from(e.problem())
    });
    let mut out = outcome::response_in(status, &problem);
    for (name, value) in keep {
        out.headers_mut().insert(name, value);
    }
    ServiceResponse::new(http, out)
}
