//! Access-token signing keys, shared by every instance (`credentials::jwt`). Each key is sealed
//! under the secrets key (context `signing-key`); the row names it by its `kid`, an HMAC
//! fingerprint. The signer is the one row without `retire_after` (a unique index holds that).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretString};

use super::DbConn;
use super::audit::{self, Actor, Change};
use super::schema::signing_keys;
use crate::credentials::jwt::{self, JwtKeys, KeySet, KeySetError, SigningKey};
use crate::credentials::sealed::{Keyring, SealError};

/// The sealing context of signing keys.
pub const CONTEXT: &str = "signing-key";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
pub struct Row {
    pub kid: String,
    pub sealed_key: String,
    pub created_at: NaiveDateTime,
    pub created_by: String,
    pub retire_after: Option<NaiveDateTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(
        "signing key {kid} does not open ({source}); is GRANULO_SECRETS_KEY (or _PREVIOUS) the one it was sealed under?"
    )]
    Seal { kid: String, source: SealError },
    #[error("signing key {0} is not the key its row names")]
    WrongKid(String),
    #[error("the signing keys are inconsistent: {0}")]
    Set(#[from] KeySetError),
    #[error("there is no signing key {0}")]
    NoSuchKey(String),
    #[error("key {0} is the signer: run `granulo keys rotate` first, then retire it")]
    Signer(String),
    #[error("there are no signing keys yet: start the server once (or set GRANULO_JWT_SECRET)")]
    Empty,
}

/// Every key, oldest first.
pub fn list(conn: &mut DbConn) -> QueryResult<Vec<Row>> {
    signing_keys::table
        .select(Row::as_select())
        .order((signing_keys::created_at.asc(), signing_keys::kid.asc()))
        .load(conn)
}

fn open(ring: &Keyring, row: &Row) -> Result<Vec<u8>, KeysError> {
    let secret = ring.open(&row.sealed_key, CONTEXT).map_err(|source| KeysError::Seal {
        kid: row.kid.clone(),
        source,
    })?;
    // A sealed key copied into another row opens, but does not match the row's kid.
    if jwt::kid_of(&secret) != row.kid {
        return Err(KeysError::WrongKid(row.kid.clone()));
    }
    Ok(secret)
}

/// The key set as stored, opened with `ring`.
pub fn load(conn: &mut DbConn, ring: &Keyring) -> Result<KeySet, KeysError> {
    let rows = list(conn)?;
    if rows.is_empty() {
        return Err(KeysError::Empty);
    }
    let keys = rows
        .iter()
        .map(|row| {
            let secret = open(ring, row)?;
            Ok(SigningKey::new(
                &secret,
                row.retire_after.map(|t| t.and_utc().timestamp()),
            ))
        })
        .collect::<Result<Vec<_>, KeysError>>()?;
    Ok(KeySet::new(keys)?)
}

/// Re-read the keys into `jwt` (a stored set; a fixed one is left alone). A key that does not
/// open is logged and the copy kept: an instance with an outdated secrets key keeps verifying
/// what it can rather than refusing every sign-in.
pub fn refresh(conn: &mut DbConn, jwt: &JwtKeys) -> QueryResult<()> {
    let Some(ring) = jwt.ring() else {
        return Ok(());
    };
    match load(conn, ring) {
        Ok(set) => jwt.replace(set),
        Err(KeysError::Query(e)) => return Err(e),
        Err(e) => tracing::error!(error = %e, "the signing keys could not be re-read; keeping the previous copy"),
    }
    Ok(())
}

/// Serialise writers of the key set (SQLite's `BEGIN IMMEDIATE` already does).
fn lock(conn: &mut DbConn) -> QueryResult<()> {
    if let DbConn::Postgres(pg) = conn {
        diesel::sql_query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").execute(pg)?;
    }
    Ok(())
}

fn insert(conn: &mut DbConn, ring: &Keyring, secret: &[u8], by: &str, at: NaiveDateTime) -> QueryResult<String> {
    let kid = jwt::kid_of(secret);
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(&kid),
            signing_keys::sealed_key.eq(ring.seal(secret, CONTEXT)),
            signing_keys::created_at.eq(at),
            signing_keys::created_by.eq(by),
            signing_keys::retire_after.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    Ok(kid)
}

/// The first start with key rotation: the configured key (`GRANULO_JWT_SECRET` or the SQLite
/// sidecar) becomes the first key, and the signer. Afterwards the table is the source of
/// truth and the configured key is not read again. Returns the kid when it was stored. Runs in
/// a write transaction.
pub fn seed(
    conn: &mut DbConn,
    ring: &Keyring,
    configured: &SecretString,
    actor: &Actor,
) -> QueryResult<Option<String>> {
    lock(conn)?;
    let existing: i64 = signing_keys::table.count().get_result(conn)?;
    if existing > 0 {
        return Ok(None);
    }
    let at = super::now();
    let kid = insert(conn, ring, configured.expose_secret().as_bytes(), &actor.name, at)?;
    audit::append(
        conn,
        actor,
        Change::created(
            "signing_key.create",
            "signing_key",
            &kid,
            serde_json::json!({"kid": kid, "source": "configured", "signer": true}),
        ),
    )?;
    Ok(Some(kid))
}

/// What `rotate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub new_kid: String,
    pub old_kid: String,
    /// When the old signer stops verifying.
    pub old_retires_at: NaiveDateTime,
}

/// A new random signing key (256 bits) becomes the signer; the old signer keeps verifying
/// until every token it signed has expired (`jwt::RETIRE_AFTER_SECS`), then retires. Runs in a
/// write transaction, audited.
pub fn rotate(conn: &mut DbConn, ring: &Keyring, actor: &Actor, at: NaiveDateTime) -> Result<Rotated, KeysError> {
    lock(conn)?;
    let old_kid: String = signing_keys::table
        .filter(signing_keys::retire_after.is_null())
        .select(signing_keys::kid)
        .first(conn)
        .optional()?
        .ok_or(KeysError::Empty)?;
    let old_retires_at = at + chrono::Duration::seconds(jwt::RETIRE_AFTER_SECS);
    diesel::update(signing_keys::table.find(&old_kid))
        .set(signing_keys::retire_after.eq(Some(old_retires_at)))
        .execute(conn)?;
    let mut secret = [0u8; jwt::NEW_KEY_BYTES];
    rand::fill(&mut secret);
    let new_kid = insert(conn, ring, &secret, &actor.name, at)?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "signing_key.rotate",
            "signing_key",
            &new_kid,
            serde_json::json!({"signer": old_kid}),
            serde_json::json!({
                "signer": new_kid,
                "retiring": {"kid": old_kid, "retire_after": old_retires_at.and_utc()},
            }),
        ),
    )?;
    Ok(Rotated {
        new_kid,
        old_kid,
        old_retires_at,
    })
}

/// Retire a key that no longer signs at once (it may have leaked): tokens it signed stop
/// verifying on every instance within `jwt::MAX_AGE`. The signer is refused: rotate first.
/// Runs in a write transaction, audited.
pub fn retire(conn: &mut DbConn, kid: &str, actor: &Actor, at: NaiveDateTime) -> Result<(), KeysError> {
    lock(conn)?;
    let row: Row = signing_keys::table
        .find(kid)
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| KeysError::NoSuchKey(kid.to_owned()))?;
    let Some(was) = row.retire_after else {
        return Err(KeysError::Signer(kid.to_owned()));
    };
    if was <= at {
        return Ok(());
    }
    diesel::update(signing_keys::table.find(kid))
        .set(signing_keys::retire_after.eq(Some(at)))
        .execute(conn)?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "signing_key.retire",
            "signing_key",
            kid,
            serde_json::json!({"retire_after": was.and_utc()}),
            serde_json::json!({"retire_after": at.and_utc()}),
        ),
    )?;
    Ok(())
}

/// Re-seal every key not sealed under `ring`'s current secrets key (for `granulo secrets
/// rotate`, which audits the rotation as a whole). Returns how many were re-sealed. Run it in
/// the rotation's write transaction: a key that opens under no configured secrets key fails
/// the whole rotation.
pub fn reseal(conn: &mut DbConn, ring: &Keyring) -> Result<usize, KeysError> {
    let mut resealed = 0;
    for row in list(conn)? {
        if ring.is_current(&row.sealed_key) {
            continue;
        }
        let secret = open(ring, &row)?;
        diesel::update(signing_keys::table.find(&row.kid))
            .set(signing_keys::sealed_key.eq(ring.seal(&secret, CONTEXT)))
            .execute(conn)?;
        resealed += 1;
    }
    Ok(resealed)
}
