//! Access tokens: HS256 JWTs with pinned algorithm and validated `iss`, `aud`, `exp`, `nbf`,
//! `iat`, `sub` and `jti`. They carry the session id so that revoking the session ends them.
//!
//! Several keys can verify at once and exactly one signs; every token names its key in the
//! header's `kid`. A token without a `kid`, with one no key has, or with a retired key's is
//! refused. The keys live in the database (`store::signing_keys`, sealed), so every instance
//! sees the same set; `JwtKeys` is this instance's copy of it, re-read when it meets a `kid` it
//! does not know (at most once per `UNKNOWN_KID_RELOAD`), when it issues a token, and when the
//! copy is older than `MAX_AGE`.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Role;
use super::sealed::Keyring;

pub const ISSUER: &str = "granulo";
pub const AUDIENCE: &str = "granulo-api";
/// Clock skew tolerated between instances, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// The longest access-token lifetime that can be configured (`GRANULO_ACCESS_TOKEN_MINUTES`).
pub const MAX_ACCESS_TOKEN_MINUTES: i64 = 60;
/// How long a replaced signing key keeps verifying: every token it signed has expired by then.
pub const RETIRE_AFTER_SECS: i64 = MAX_ACCESS_TOKEN_MINUTES * 60 + LEEWAY_SECS as i64;
/// A `kid` this instance does not know makes it re-read the keys at most this often, so that a
/// flood of forged `kid`s cannot hammer the database.
pub const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(5);
/// The copy of the key set is re-read when older than this, so that a key retired in the
/// database stops verifying on every instance within a minute.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// New keys: 256 random bits.
pub const NEW_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// `user:<id>` or `client:<id>`.
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// Session (token family) id.
    pub sid: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital_id: Option<i64>,
    /// Username, or a hospital system's client id. With `role` and `hospital_id` it lets a
    /// request authenticate without a database read of its own: the session check then runs in
    /// the request's unit of work and refuses when the account no longer matches. Tokens issued
    /// before this claim existed are checked by a read of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The `kid` of a key: a short HMAC fingerprint keyed by the key itself, which names it without
/// revealing anything about it.
pub fn kid_of(secret: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        // HMAC takes keys of any length.
        return String::new();
    };
    mac.update(b"granulo signing key id");
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// One key: its id, its HS256 key, and from when (Unix time) it no longer verifies; `None` for
/// the key that signs.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    retire_after: Option<i64>,
}

impl SigningKey {
    pub fn new(secret: &[u8], retire_after: Option<i64>) -> Self {
        Self {
            kid: kid_of(secret),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            retire_after,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn retire_after(&self) -> Option<i64> {
        self.retire_after
    }

    /// Whether a token signed with this key is accepted at `now`.
    pub fn verifies_at(&self, now: i64) -> bool {
        self.retire_after.is_none_or(|t| now < t)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("no signing key: every key has a retire time")]
    NoSigner,
    #[error("more than one key without a retire time")]
    SeveralSigners,
}

/// The keys that verify, exactly one of which (the one without a retire time) signs.
pub struct KeySet {
    keys: Vec<SigningKey>,
    signer: usize,
}

impl KeySet {
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeySetError> {
        let mut signers = keys.iter().enumerate().filter(|(_, k)| k.retire_after.is_none());
        let signer = signers.next().map(|(i, _)| i).ok_or(KeySetError::NoSigner)?;
        if signers.next().is_some() {
            return Err(KeySetError::SeveralSigners);
        }
        Ok(Self { keys, signer })
    }

    pub fn signer(&self) -> &SigningKey {
        &self.keys[self.signer]
    }

    /// The key named `kid`, whether or not it still verifies.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The key that verifies a token naming `kid` at `now`, if any.
    pub fn verifier(&self, kid: &str, now: i64) -> Option<&SigningKey> {
        self.get(kid).filter(|k| k.verifies_at(now))
    }
}

/// When this instance last read the keys, and last did so for an unknown `kid`.
#[derive(Debug, Clone, Copy)]
pub struct Reloads {
    loaded_at: Instant,
    unknown_kid_at: Option<Instant>,
}

impl Reloads {
    pub fn new(loaded_at: Instant) -> Self {
        Self {
            loaded_at,
            unknown_kid_at: None,
        }
    }

    /// Whether the copy is older than `MAX_AGE` (without claiming the re-read).
    pub fn is_stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.loaded_at) >= MAX_AGE
    }

    /// The copy is older than `MAX_AGE`: the caller re-reads it (and others need not).
    pub fn claim_stale(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.loaded_at) < MAX_AGE {
            return false;
        }
        self.loaded_at = now;
        true
    }

    /// A token names an unknown `kid`: re-read unless that was done less than
    /// `UNKNOWN_KID_RELOAD` ago.
    pub fn claim_unknown_kid(&mut self, now: Instant) -> bool {
        if self
            .unknown_kid_at
            .is_some_and(|t| now.saturating_duration_since(t) < UNKNOWN_KID_RELOAD)
        {
            return false;
        }
        self.unknown_kid_at = Some(now);
        true
    }

    pub fn loaded(&mut self, now: Instant) {
        self.loaded_at = now;
    }
}

/// This instance's copy of the key set; cheap to clone (shared).
#[derive(Clone)]
pub struct JwtKeys {
    inner: Arc<Inner>,
}

struct Inner {
    set: RwLock<Arc<KeySet>>,
    reloads: Mutex<Reloads>,
    /// Opens the stored keys; `None` for a fixed set (`JwtKeys::new`).
    ring: Option<Arc<Keyring>>,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
    /// The header names a key this instance does not have (it may re-read the keys).
    UnknownKey,
}

fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    validation
}

impl JwtKeys {
    /// A fixed set of one key, which signs (tests, tools).
    pub fn new(secret: &SecretString) -> Self {
        let key = SigningKey::new(secret.expose_secret().as_bytes(), None);
        let set = KeySet {
            keys: vec![key],
            signer: 0,
        };
        Self::build(set, None)
    }

    /// The set read from the database; `ring` opens it again when it is re-read.
    pub fn stored(set: KeySet, ring: Arc<Keyring>) -> Self {
        Self::build(set, Some(ring))
    }

    fn build(set: KeySet, ring: Option<Arc<Keyring>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                set: RwLock::new(Arc::new(set)),
                reloads: Mutex::new(Reloads::new(Instant::now())),
                ring,
                validation: validation(),
            }),
        }
    }

    /// The keyring the stored keys are sealed with, when this set is re-read from the database.
    pub fn ring(&self) -> Option<&Keyring> {
        self.inner.ring.as_deref()
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.inner.set.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Put a freshly read set in place.
    pub fn replace(&self, set: KeySet) {
        *self.inner.set.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        self.reloads().loaded(Instant::now());
    }

    fn reloads(&self) -> std::sync::MutexGuard<'_, Reloads> {
        self.inner.reloads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the caller should re-read the keys because the copy is old (see `Reloads`).
    pub fn claim_stale_reload(&self, now: Instant) -> bool {
        self.inner.ring.is_some() && self.reloads().claim_stale(now)
    }

    /// Whether the keys are due a re-read because the copy is old; nothing is claimed.
    pub fn reload_due(&self, now: Instant) -> bool {
        self.inner.ring.is_some() && self.reloads().is_stale(now)
    }

    /// Whether the caller should re-read the keys for an unknown `kid` (throttled).
    pub fn claim_unknown_kid_reload(&self, now: Instant) -> bool {
        self.inner.ring.is_some() && self.reloads().claim_unknown_kid(now)
    }

    pub fn signer_kid(&self) -> String {
        self.current().signer().kid.clone()
    }

    /// Sign with the signing key, naming it in `kid`.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let set = self.current();
        let signer = set.signer();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.encoding)
    }

    /// Verify signature and claims; `now` is the current Unix time.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let set = self.current();
        let key = set.get(&kid).ok_or(TokenError::UnknownKey)?;
        if !key.verifies_at(now) {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.inner.validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        let claims = data.claims;
        // jsonwebtoken does not look at iat; a token "issued" in the future is forged or the
        // issuing clock is wrong.
        if claims.iat > now + LEEWAY_SECS as i64 || claims.jti.is_empty() || claims.sid.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn keys() -> JwtKeys {
        JwtKeys::new(&SecretString::from("k".repeat(40)))
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "user:1".into(),
            exp: now + 900,
            nbf: now,
            iat: now,
            jti: "j".into(),
            sid: "s".into(),
            role: Role::Admin,
            hospital_id: None,
            name: Some("admin".into()),
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn round_trip() {
        let c = claims(now());
        let t = keys().sign(&c).expect("sign");
        assert_eq!(keys().verify(&t, now()).expect("valid"), c);
    }

    #[test]
    fn rejects_expired_wrong_key_wrong_audience_and_future_iat() {
        let n = now();
        let mut c = claims(n - 3600);
        let t = keys().sign(&c).expect("sign");
        assert_eq!(keys().verify(&t, n), Err(TokenError::Expired));

        c = claims(n);
        // Another key names itself with another kid (the same kid over another key: below).
        let other = JwtKeys::new(&SecretString::from("z".repeat(40)));
        assert_eq!(
            keys().verify(&other.sign(&c).expect("sign"), n),
            Err(TokenError::UnknownKey)
        );

        let mut wrong_aud = claims(n);
        wrong_aud.aud = "someone-else".into();
        assert_eq!(
            keys().verify(&keys().sign(&wrong_aud).expect("sign"), n),
            Err(TokenError::Invalid)
        );

        let mut wrong_iss = claims(n);
        wrong_iss.iss = "evil".into();
        assert_eq!(
            keys().verify(&keys().sign(&wrong_iss).expect("sign"), n),
            Err(TokenError::Invalid)
        );

        let mut future = claims(n);
        future.iat = n + 3600;
        future.nbf = n;
        assert_eq!(
            keys().verify(&keys().sign(&future).expect("sign"), n),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn rejects_alg_none_and_other_algorithms() {
        let n = now();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = engine.encode(serde_json::to_vec(&claims(n)).expect("json"));
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{}.", engine.encode(header), payload);
            assert_eq!(keys().verify(&token, n), Err(TokenError::Invalid), "{header}");
        }
        assert_eq!(keys().verify("not.a.jwt", n), Err(TokenError::Invalid));
        assert_eq!(keys().verify("", n), Err(TokenError::Invalid));
    }

    fn key(c: char) -> Vec<u8> {
        c.to_string().repeat(40).into_bytes()
    }

    fn set(retiring_at: i64) -> KeySet {
        KeySet::new(vec![
            SigningKey::new(&key('a'), Some(retiring_at)),
            SigningKey::new(&key('b'), None),
        ])
        .expect("one signer")
    }

    #[test]
    fn one_key_signs_and_the_others_verify_until_they_retire() {
        let t = 1_000_000;
        let set = set(t);
        let (a, b) = (kid_of(&key('a')), kid_of(&key('b')));
        assert_eq!(set.signer().kid(), b);
        assert!(set.verifier(&a, t - 1).is_some());
        assert!(set.verifier(&a, t).is_none(), "retired at its retire time");
        assert!(set.verifier(&b, t + 10_000_000).is_some(), "the signer never retires");
        assert!(set.verifier("0123456789abcdef", t).is_none());
        assert_eq!(
            KeySet::new(vec![SigningKey::new(&key('a'), Some(t))]).err(),
            Some(KeySetError::NoSigner)
        );
        assert_eq!(
            KeySet::new(vec![SigningKey::new(&key('a'), None), SigningKey::new(&key('b'), None)]).err(),
            Some(KeySetError::SeveralSigners)
        );
    }

    #[test]
    fn the_kid_names_the_key_without_revealing_it() {
        let kid = kid_of(&key('a'));
        assert_eq!(kid.len(), 16);
        assert!(kid.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(kid, kid_of(&key('a')));
        assert_ne!(kid, kid_of(&key('b')));
        assert!(!String::from_utf8(key('a')).expect("ascii").contains(&kid));
    }

    #[test]
    fn tokens_name_their_key_and_unknown_missing_or_retired_kids_are_refused() {
        let n = now();
        let keys = JwtKeys::build(set(n + 100), None);
        let signed = keys.sign(&claims(n)).expect("sign");
        let header = jsonwebtoken::decode_header(&signed).expect("header");
        assert_eq!(header.kid.as_deref(), Some(kid_of(&key('b')).as_str()));
        assert_eq!(header.alg, Algorithm::HS256);
        assert!(keys.verify(&signed, n).is_ok());

        // Signed by the retiring key before the rotation: accepted until its retire time.
        let old = JwtKeys::new(&SecretString::from("a".repeat(40)));
        let before = old.sign(&claims(n)).expect("sign");
        assert!(keys.verify(&before, n + 99).is_ok());
        assert_eq!(keys.verify(&before, n + 100), Err(TokenError::Invalid));

        // A key this set does not have.
        let other = JwtKeys::new(&SecretString::from("z".repeat(40)));
        assert_eq!(
            keys.verify(&other.sign(&claims(n)).expect("sign"), n),
            Err(TokenError::UnknownKey)
        );

        let secret = key('b');
        let encoding = EncodingKey::from_secret(&secret);
        // No kid at all, right key.
        let bare = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(n), &encoding).expect("sign");
        assert_eq!(keys.verify(&bare, n), Err(TokenError::Invalid));
        // The signer's kid over another key's signature.
        let mut lying = Header::new(Algorithm::HS256);
        lying.kid = Some(kid_of(&key('b')));
        let forged = jsonwebtoken::encode(&lying, &claims(n), &EncodingKey::from_secret(&key('z'))).expect("sign");
        assert_eq!(keys.verify(&forged, n), Err(TokenError::Invalid));
        // The right key and kid under another HMAC algorithm: the algorithm stays pinned.
        let mut hs384 = Header::new(Algorithm::HS384);
        hs384.kid = Some(kid_of(&key('b')));
        let other_alg = jsonwebtoken::encode(&hs384, &claims(n), &encoding).expect("sign");
        assert_eq!(keys.verify(&other_alg, n), Err(TokenError::Invalid));
    }

    #[test]
    fn reloads_are_throttled() {
        let t0 = Instant::now();
        let mut r = Reloads::new(t0);
        assert!(r.claim_unknown_kid(t0));
        assert!(!r.claim_unknown_kid(t0 + Duration::from_secs(1)));
        assert!(!r.claim_unknown_kid(t0 + UNKNOWN_KID_RELOAD - Duration::from_millis(1)));
        assert!(r.claim_unknown_kid(t0 + UNKNOWN_KID_RELOAD));

        assert!(!r.claim_stale(t0 + Duration::from_secs(30)));
        assert!(r.claim_stale(t0 + MAX_AGE));
        assert!(!r.claim_stale(t0 + MAX_AGE + Duration::from_secs(1)), "claimed once");
        r.loaded(t0 + MAX_AGE * 3);
        assert!(!r.claim_stale(t0 + MAX_AGE * 3 + Duration::from_secs(59)));
    }
}
