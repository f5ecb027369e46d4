//! Secrets at rest. Values the server must read back (webhook secrets, signing keys, TOTP seeds)
//! are sealed with XChaCha20-Poly1305 under a data key derived from `GRANULO_SECRETS_KEY`, so a
//! database dump or backup alone reveals none of them.
//!
//! A sealed value is `gs1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id names the
//! master key it was sealed under, so during a rotation the previous key still opens old values
//! and `granulo secrets rotate` finds the ones to re-seal. The context (what the value is, e.g.
//! `webhook-secret`) is authenticated data: a value copied into another column does not open.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The minimum length of `GRANULO_SECRETS_KEY`, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
const PREFIX: &str = "gs1";
const NONCE_BYTES: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the secrets key must be at least {MIN_KEY_BYTES} bytes")]
    KeyTooShort,
    #[error("the sealed value is not in the gs1 format")]
    Malformed,
    #[error("the sealed value was sealed under key {0}, which is not configured")]
    UnknownKey(String),
    #[error("the sealed value does not open: wrong key, wrong context or altered")]
    Unauthentic,
}

/// One master key: its id and the cipher of the data key derived from it.
struct SealingKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    fn new(master: &SecretString) -> Result<Self, SealError> {
        let bytes = master.expose_secret().trim().as_bytes();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(SealError::KeyTooShort);
        }
        let data_key = prf(bytes, b"granulo sealed secrets v1");
        let id = hex::encode(&prf(bytes, b"granulo secrets key id")[..4]);
        Ok(Self {
            id,
            cipher: XChaCha20Poly1305::new(&data_key.into()),
        })
    }
}

fn prf(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return [0; 32],
    };
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The current key (which seals) and any previous ones (which only open), for rotation.
pub struct Keyring {
    current: SealingKey,
    previous: Vec<SealingKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keyring(current {}, {} previous)",
            self.current.id,
            self.previous.len()
        )
    }
}

impl Keyring {
    pub fn new(current: &SecretString, previous: &[SecretString]) -> Result<Self, SealError> {
        Ok(Self {
            current: SealingKey::new(current)?,
            previous: previous.iter().map(SealingKey::new).collect::<Result<_, _>>()?,
        })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seal `plaintext` for `context` under the current key, with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: context.as_bytes(),
        };
        // Encryption fails only for messages beyond the cipher's 256 GiB limit.
        let sealed = self
            .current
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!(
            "{PREFIX}.{}.{}",
            self.current.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        )
    }

    pub fn seal_str(&self, plaintext: &str, context: &str) -> String {
        self.seal(plaintext.as_bytes(), context)
    }

    /// Open a sealed value with whichever configured key sealed it.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let (key_id, body) = split(sealed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_BYTES + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        key.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Unauthentic)
    }

    pub fn open_string(&self, sealed: &str, context: &str) -> Result<SecretString, SealError> {
        let bytes = self.open(sealed, context)?;
        String::from_utf8(bytes)
            .map(SecretString::from)
            .map_err(|_| SealError::Unauthentic)
    }

    /// Whether `sealed` is in the gs1 format and sealed under the current key (nothing to
    /// re-seal in a rotation).
    pub fn is_current(&self, sealed: &str) -> bool {
        split(sealed).is_ok_and(|(id, _)| id == self.current.id)
    }
}

/// Whether a stored value is sealed at all (as opposed to a value from before sealing).
pub fn is_sealed(value: &str) -> bool {
    split(value).is_ok()
}

fn split(sealed: &str) -> Result<(&str, &str), SealError> {
    let mut parts = sealed.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(PREFIX), Some(id), Some(body)) if id.len() == 8 && !body.is_empty() => Ok((id, body)),
        _ => Err(SealError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> SecretString {
        SecretString::from(c.to_string().repeat(40))
    }

    #[test]
    fn seals_and_opens_with_fresh_nonces() {
        let ring = Keyring::new(&key('a'), &[]).expect("key");
        let one = ring.seal_str("shared secret", "webhook-secret");
        let two = ring.seal_str("shared secret", "webhook-secret");
        assert_ne!(one, two, "a fresh nonce each time");
        assert!(!one.contains("shared"));
        assert!(is_sealed(&one) && ring.is_current(&one));
        assert_eq!(
            ring.open_string(&one, "webhook-secret").expect("opens").expose_secret(),
            "shared secret"
        );
    }

    #[test]
    fn refuses_wrong_context_wrong_key_and_tampering() {
        let ring = Keyring::new(&key('a'), &[]).expect("key");
        let sealed = ring.seal_str("s", "webhook-secret");
        assert_eq!(ring.open(&sealed, "totp-seed"), Err(SealError::Unauthentic));
        let other = Keyring::new(&key('b'), &[]).expect("key");
        assert!(matches!(
            other.open(&sealed, "webhook-secret"),
            Err(SealError::UnknownKey(_))
        ));
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert_eq!(ring.open(&flipped, "webhook-secret"), Err(SealError::Unauthentic));
        assert_eq!(ring.open("plain text", "webhook-secret"), Err(SealError::Malformed));
        assert!(!is_sealed("plain text"));
        assert_eq!(
            Keyring::new(&SecretString::from("short"), &[]).err(),
            Some(SealError::KeyTooShort)
        );
    }

    #[test]
    fn previous_keys_open_but_do_not_seal() {
        let old = Keyring::new(&key('a'), &[]).expect("key");
        let sealed = old.seal_str("s", "c");
        let rotated = Keyring::new(&key('b'), &[key('a')]).expect("keys");
        assert!(!rotated.is_current(&sealed));
        assert_eq!(rotated.open(&sealed, "c").expect("opens"), b"s");
        assert!(rotated.is_current(&rotated.seal_str("s", "c")));
        assert_ne!(old.current_id(), rotated.current_id());
    }
}
