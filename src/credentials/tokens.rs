//! Opaque secrets: refresh tokens and client credentials. They carry 256 random bits, so a
//! plain SHA-256 is a sufficient stored form (a slow hash protects guessable secrets only).

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub fn new_refresh_token() -> String {
    format!("grt_{}", random_b64(32))
}

/// The value of a console session cookie.
pub fn new_console_cookie() -> String {
    format!("gcs_{}", random_b64(32))
}

/// The CSRF token of a console session: an HMAC of a fixed label keyed by the session's
/// cookie, so it needs no storage and a page from another session cannot supply it.
pub fn csrf_token(cookie: &str) -> String {
    use hmac::Mac as _;
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(cookie.as_bytes()) else {
        return String::new();
    };
    mac.update(b"granulo console form");
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a posted CSRF token is the session's (`expected`, from [`csrf_token`]), in
/// constant time.
pub fn csrf_matches_token(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

pub fn new_client_id() -> String {
    let mut buf = [0u8; 12];
    rand::fill(&mut buf);
    format!("gc_{}", hex::encode(buf))
}

pub fn new_client_secret() -> String {
    format!("gcs_{}", random_b64(32))
}

pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compare a presented secret with a stored hash in constant time.
pub fn secret_matches(presented: &str, stored_hash: &str) -> bool {
    sha256_hex(presented).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Compare two hashes (hex) in constant time.
pub fn secret_matches_hash(presented_hash: &str, stored_hash: &str) -> bool {
    presented_hash.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let (a, b) = (new_console_cookie(), new_console_cookie());
        let token = csrf_token(&a);
        assert_eq!(token, csrf_token(&a), "stable for a session");
        assert!(csrf_matches_token(&csrf_token(&a), &token));
        assert!(!csrf_matches_token(&csrf_token(&b), &token), "another session's token");
        assert!(!csrf_matches_token(&token, ""));
        assert!(!csrf_matches_token("", ""), "no session, no match");
        assert_ne!(token, a, "the token is not the cookie");
    }

    #[test]
    fn secrets_are_unique_and_verifiable() {
        let a = new_client_secret();
        let b = new_client_secret();
        assert_ne!(a, b);
        assert!(a.len() > 40);
        let stored = sha256_hex(&a);
        assert!(secret_matches(&a, &stored));
        assert!(!secret_matches(&b, &stored));
        assert!(new_refresh_token().starts_with("grt_"));
        assert!(new_client_id().starts_with("gc_"));
    }
}
