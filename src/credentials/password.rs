//! Password hashing with argon2id (OWASP minimum: 19 MiB, 2 passes, 1 lane) and the rules a
//! new password must meet. Hashing is CPU-bound (~50 ms): callers run it off the async threads.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;

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
///
/// What `PasswordVerifier` does (recompute with the stored algorithm, version, parameters and
/// salt; compare in constant time), but in this thread's kept working memory: the crate
/// allocates 19 MiB per call, which the allocator then kept in one arena after another
/// (see `state::cpu`).
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let Ok(version) = parsed.version.map(Version::try_from).transpose() else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut computed = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let hashed = WORKING_MEMORY.with_borrow_mut(|memory| {
        memory.resize(blocks, Block::default());
        Argon2::new(algorithm, version.unwrap_or_default(), params).hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut computed,
            &mut memory[..blocks],
        )
    });
    hashed.is_ok() && bool::from(expected.as_bytes().ct_eq(&computed))
}

/// Free this thread's argon2 working memory (the next verification allocates it again).
pub fn release_working_memory() {
    drop(WORKING_MEMORY.take());
}

thread_local! {
    /// Argon2 blocks, reused by every verification on this thread (overwritten before read).
    static WORKING_MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
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
    fn verification_agrees_with_the_crate_and_reuses_memory() {
        use argon2::PasswordVerifier as _;
        // Hashes of other parameters and algorithms, as an older deployment may have stored.
        let others = [
            Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(8, 1, 1, None).expect("params"),
            ),
            Argon2::new(
                Algorithm::Argon2i,
                Version::V0x10,
                Params::new(16, 3, 2, Some(16)).expect("params"),
            ),
        ];
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        for hasher in others {
            let phc = hasher
                .hash_password(b"pass phrase one", &salt)
                .expect("hash")
                .to_string();
            // Several times on this thread: the kept memory changes size and is reused.
            for _ in 0..2 {
                assert!(verify("pass phrase one", &phc));
                assert!(!verify("pass phrase two", &phc));
            }
        }
        let ours = hash("pass phrase one").expect("hash");
        assert!(verify("pass phrase one", &ours));
        // Released when idle, allocated again by the next verification.
        assert!(WORKING_MEMORY.with_borrow(Vec::capacity) >= 19 * 1024);
        release_working_memory();
        assert_eq!(WORKING_MEMORY.with_borrow(Vec::capacity), 0);
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(hasher().verify_password(b"pass phrase one", &parsed).is_ok());
        assert!(verify("pass phrase one", &ours));
        // A truncated output or a foreign algorithm never verifies.
        assert!(!verify("pass phrase one", &ours[..ours.len() - 4]));
        assert!(!verify("pass phrase one", &ours.replace("argon2id", "scrypt")));
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
