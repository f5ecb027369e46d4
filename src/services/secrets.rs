//! Stored secrets (`credentials::sealed`): sealing what an earlier release stored in plain text,
//! and re-sealing everything under a new key (`granulo secrets rotate`).

use crate::credentials::sealed::Keyring;
use crate::error::{ApiError, ApiResult};
use crate::store::audit::{self, Actor, Change};
use crate::store::{self, DbConn};

/// Re-seals under the current key every sealed value that is under another one, kind by kind;
/// audited. Run it in one write transaction: a value no configured key opens fails it whole.
pub fn reseal_all(conn: &mut DbConn, ring: &Keyring) -> ApiResult<Vec<(&'static str, usize)>> {
    let counts: Vec<(&'static str, usize)> = vec![
        // One line per kind of sealed value.
        (store::webhooks::SECRET_CONTEXT, store::webhooks::reseal(conn, ring)?),
        (
            store::signing_keys::CONTEXT,
            store::signing_keys::reseal(conn, ring).map_err(ApiError::internal)?,
        ),
        (store::mfa::SEED_CONTEXT, store::mfa::reseal(conn, ring)?),
    ];
    let resealed: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(kind, n)| ((*kind).to_owned(), (*n).into()))
        .collect();
    audit::append(
        conn,
        &Actor::system("secrets"),
        Change::created(
            "secrets.rotate",
            "secrets_key",
            ring.current_id(),
            serde_json::json!({"key_id": ring.current_id(), "resealed": resealed}),
        ),
    )?;
    Ok(counts)
}

/// Seals the webhook secrets an earlier release stored in plain text (start-up, one write
/// transaction, one audit row per subscription); how many.
pub fn seal_plaintext(conn: &mut DbConn, ring: &Keyring) -> ApiResult<usize> {
    let ids = store::webhooks::seal_plaintext(conn, ring)?;
    for id in &ids {
        audit::append(
            conn,
            &Actor::system("secrets"),
            Change::updated(
                "webhook.seal_secret",
                "webhook",
                id,
                serde_json::json!({"secret": "plain text"}),
                serde_json::json!({"secret": "sealed", "key_id": ring.current_id()}),
            ),
        )?;
    }
    Ok(ids.len())
}
