//! Access tokens: HS256 JWTs with pinned algorithm and validated `iss`, `aud`, `exp`, `nbf`,
//! `iat`, `sub` and `jti`. They carry the session id so that revoking the session ends them.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::Role;

pub const ISSUER: &str = "granulo";
pub const AUDIENCE: &str = "granulo-api";
/// Clock skew tolerated between instances, in seconds.
pub const LEEWAY_SECS: u64 = 30;

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
}

/// Keys built once at start-up.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

impl JwtKeys {
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Verify signature and claims; `now` is the current Unix time.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
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
        let other = JwtKeys::new(&SecretString::from("z".repeat(40)));
        assert_eq!(
            keys().verify(&other.sign(&c).expect("sign"), n),
            Err(TokenError::Invalid)
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
}
