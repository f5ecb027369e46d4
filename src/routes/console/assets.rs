//! The console's static files, embedded in the binary: it works offline, with no CDN.
//! htmx and its SSE extension are vendored from the npm registry with their licences
//! (`scripts/console/vendor`); `console.js` and `console.css` are ours.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use sha2::{Digest, Sha256};

use super::{ConsoleError, ConsoleResult};
use crate::error::ApiError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/console/vendor/htmx.min.js"),
    },
    Asset {
        name: "htmx-ext-sse.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/console/vendor/htmx-ext-sse.min.js"),
    },
    Asset {
        name: "LICENSE-htmx",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../../assets/console/vendor/LICENSE-htmx"),
    },
    Asset {
        name: "LICENSE-htmx-ext-sse",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../../assets/console/vendor/LICENSE-htmx-ext-sse"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../assets/console/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../assets/console/console.css"),
    },
];

/// A short digest of every asset: part of their URLs, so a new binary's files are fetched
/// anew while a browser keeps the old ones as long as they are current.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut digest = Sha256::new();
        for asset in ASSETS {
            digest.update(asset.body);
        }
        hex::encode(&digest.finalize()[..6])
    })
}

/// The URL of an asset.
pub fn path(name: &str) -> String {
    format!("/console/assets/{name}?v={}", version())
}

/// `GET /console/assets/{name}`: no session needed (the sign-in page uses them too).
pub async fn serve(name: web::Path<String>) -> ConsoleResult {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name.as_str())
        .ok_or_else(|| ConsoleError::from(ApiError::not_found("asset")))?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(asset.body))
}
