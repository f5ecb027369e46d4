//! Time-based one-time passwords (RFC 6238) as every authenticator app makes them: HMAC-SHA-1,
//! 6 digits, 30-second steps. Pure: the clock and the last accepted step are arguments, so the
//! rules (±1 step of drift, each step's code accepted once, RFC 6238 §5.2) are table-tested.

use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, TOTP};

pub const DIGITS: usize = 6;
pub const STEP_SECS: u64 = 30;
/// 160 bits, the length RFC 4226 recommends and HMAC-SHA-1's block output.
pub const SEED_BYTES: usize = 20;
/// The issuer an authenticator app shows beside the account.
pub const ISSUER: &str = "granulo";

pub fn new_seed() -> Vec<u8> {
    let mut seed = vec![0u8; SEED_BYTES];
    rand::fill(seed.as_mut_slice());
    seed
}

fn totp(seed: &[u8], digits: usize, account: &str) -> Option<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        digits,
        1,
        STEP_SECS,
        seed.to_vec(),
        Some(ISSUER.to_owned()),
        account.replace(':', "_"),
    )
    .ok()
}

/// What an authenticator app is given: the seed in base32 and an `otpauth://totp/…` URI.
pub fn provisioning(seed: &[u8], account: &str) -> Option<(String, String)> {
    let t = totp(seed, DIGITS, account)?;
    Some((t.get_secret_base32(), t.get_url()))
}

/// The 30-second step `unix` falls in.
pub fn step_at(unix: u64) -> u64 {
    unix / STEP_SECS
}

/// The code of one step (for tests, the demo and clients that compute it themselves).
pub fn code_at_step(seed: &[u8], digits: usize, step: u64) -> Option<String> {
    Some(totp(seed, digits, "x")?.generate(step * STEP_SECS))
}

/// The step whose code `code` is, if it is the code of the current step or one step either
/// side and that step is later than `last_step` (a code is accepted once, and never one older
/// than a code already accepted). Compared in constant time.
pub fn verify(seed: &[u8], digits: usize, code: &str, unix: u64, last_step: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(seed, digits, "x")?;
    let now = step_at(unix);
    let mut matched = None;
    for step in [now.checked_sub(1), Some(now), now.checked_add(1)]
        .into_iter()
        .flatten()
    {
        if last_step.is_some_and(|last| step <= last) {
            continue;
        }
        let expected = t.generate(step * STEP_SECS);
        let same: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        if same && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SEED: &[u8] = b"12345678901234567890";

    /// RFC 6238 Appendix B, SHA-1 column (8 digits).
    #[test]
    fn rfc6238_appendix_b_vectors() {
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                code_at_step(RFC_SEED, 8, step_at(time)).as_deref(),
                Some(code),
                "T={time}"
            );
            assert_eq!(verify(RFC_SEED, 8, code, time, None), Some(step_at(time)), "T={time}");
        }
    }

    #[test]
    fn drift_replay_and_format_rules() {
        let t = 1_111_111_111u64;
        let s = step_at(t);
        let at = |step: u64| code_at_step(RFC_SEED, 8, step).unwrap_or_default();
        let cases: &[(&str, String, Option<u64>, Option<u64>)] = &[
            ("current step", at(s), None, Some(s)),
            ("one step behind", at(s - 1), None, Some(s - 1)),
            ("one step ahead", at(s + 1), None, Some(s + 1)),
            ("two steps behind", at(s - 2), None, None),
            ("two steps ahead", at(s + 2), None, None),
            ("replayed: step already accepted", at(s), Some(s), None),
            ("older than the accepted step", at(s - 1), Some(s), None),
            ("later than the accepted step", at(s + 1), Some(s), Some(s + 1)),
            ("current after an older step", at(s), Some(s - 1), Some(s)),
            ("wrong code", "00000000".to_owned(), None, None),
            ("too short", at(s)[..6].to_owned(), None, None),
            ("not digits", "1405047a".to_owned(), None, None),
            ("empty", String::new(), None, None),
        ];
        for (what, code, last, expected) in cases {
            assert_eq!(verify(RFC_SEED, 8, code, t, *last), *expected, "{what}");
        }
        // Surrounding spaces, as pasted from an app, are fine.
        assert_eq!(verify(RFC_SEED, 8, &format!(" {} ", at(s)), t, None), Some(s));
    }

    #[test]
    fn six_digit_codes_and_provisioning() {
        let seed = new_seed();
        assert_eq!(seed.len(), SEED_BYTES);
        let now = 1_700_000_000;
        let code = code_at_step(&seed, DIGITS, step_at(now)).unwrap_or_default();
        assert_eq!(code.len(), 6);
        assert_eq!(verify(&seed, DIGITS, &code, now, None), Some(step_at(now)));
        let (secret, uri) = provisioning(&seed, "j.smith@example.org").unwrap_or_default();
        assert_eq!(secret.len(), 32, "160 bits in base32");
        assert!(uri.starts_with("otpauth://totp/granulo:j.smith"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        assert!(uri.contains("issuer=granulo"), "{uri}");
    }
}
