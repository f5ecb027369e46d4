//! Password hashing with argon2id (OWASP minimum: 19 MiB, 2 passes, 1 lane) and the rules a
//! new password must meet. Hashing is CPU-bound (~50 ms): callers run it off the async threads.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 256;

fn hasher() -> Argon2<'static> {
    // The parameters are constants known to be valid; fall back to the crate default
    // (which is also argon2id v19 at 19 MiB / t=2) rather than panic.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash a password into a PHC string.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt_bytes = [0u8; 16];
    rand::fill(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes)?;
    Ok(hasher().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Check a password against a stored PHC string. A malformed hash never verifies.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when the username is unknown so that
/// unknown usernames take as long as wrong passwords.
pub fn dummy_hash() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    hash(&hex::encode(bytes)).unwrap_or_else(|_| {
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0123456789abcdef0123456789abcdef0123456789a".to_owned()
    })
}

/// Why a proposed password is refused, or `None` when it is acceptable.
pub fn policy_violation(password: &str, username: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Some(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    if password.trim().is_empty() {
        return Some("must not be only white space".to_owned());
    }
    if password.to_lowercase().contains(&username.to_lowercase()) && !username.is_empty() {
        return Some("must not contain the username".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse battery").expect("hash");
        let b = hash("correct horse battery").expect("hash");
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn password_policy() {
        assert!(policy_violation("short", "u").is_some());
        assert!(policy_violation("            ", "u").is_some());
        assert!(policy_violation("alice-is-the-best", "alice").is_some());
        assert!(policy_violation(&"x".repeat(300), "u").is_some());
        assert!(policy_violation("twelve chars!", "bob").is_none());
    }
}
