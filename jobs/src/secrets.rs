//! Encryption of marketplace tokens at rest: AES-256-GCM with a random 96-bit nonce stored in
//! front of the ciphertext, and the key's id stored beside it so keys can rotate (new tokens are
//! sealed with the active key; old ones still open with the key they name).

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub token_keys: Vec<engine::settings::Secret>,
    pub active_token_key: String,
    /// "development" or "production" (`STOFLOW_ENV` sets it too). Production refuses the
    /// development keys shipped in config.default.toml.
    pub environment: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("token key {0:?} is not \"id:base64\" of 32 bytes")]
    BadKey(String),
    #[error("active_token_key {0:?} is not among token_keys")]
    NoActiveKey(String),
    #[error("no token key {0:?} to open this token (was it removed from token_keys?)")]
    UnknownKey(String),
    #[error("a stored token does not decrypt (corrupt, or the key changed under the same id)")]
    Corrupt,
}

pub struct TokenCipher {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl TokenCipher {
    pub fn new(s: &SecuritySettings) -> Result<Self, CipherError> {
        let mut keys = HashMap::new();
        for k in &s.token_keys {
            let (id, b64) = k
                .expose()
                .split_once(':')
                .ok_or_else(|| CipherError::BadKey(redact(k.expose())))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| CipherError::BadKey(id.to_string()))?;
            let cipher =
                Aes256Gcm::new_from_slice(&raw).map_err(|_| CipherError::BadKey(id.to_string()))?;
            keys.insert(id.to_string(), cipher);
        }
        if !keys.contains_key(&s.active_token_key) {
            return Err(CipherError::NoActiveKey(s.active_token_key.clone()));
        }
        Ok(Self {
            active: s.active_token_key.clone(),
            keys,
        })
    }

    /// Encrypts with the active key: (key id, nonce ‖ ciphertext).
    pub fn seal(&self, plaintext: &str) -> (String, Vec<u8>) {
        let nonce: [u8; 12] = rand::random();
        let ct = self.keys[&self.active]
            .encrypt(&Nonce::from(nonce), plaintext.as_bytes())
            .expect("AES-GCM encryption does not fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend(ct);
        (self.active.clone(), out)
    }

    pub fn open(&self, key_id: &str, sealed: &[u8]) -> Result<String, CipherError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| CipherError::UnknownKey(key_id.to_string()))?;
        if sealed.len() < 12 {
            return Err(CipherError::Corrupt);
        }
        let (nonce, ct) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CipherError::Corrupt)?;
        let pt = key
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| CipherError::Corrupt)?;
        String::from_utf8(pt).map_err(|_| CipherError::Corrupt)
    }
}

/// A key's id without its material, for error messages.
fn redact(k: &str) -> String {
    k.split(':')
        .next()
        .unwrap_or("?")
        .chars()
        .take(20)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(keys: &[&str], active: &str) -> SecuritySettings {
        SecuritySettings {
            token_keys: keys.iter().map(|k| Secret::new(*k)).collect(),
            active_token_key: active.into(),
            environment: "development".into(),
        }
    }

    #[test]
    fn sealed_tokens_open_with_their_key_after_rotation_and_are_not_plaintext() {
        let k1 = format!(
            "k1:{}",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32])
        );
        let k2 = format!(
            "k2:{}",
            base64::engine::general_purpose::STANDARD.encode([2u8; 32])
        );
        let old = TokenCipher::new(&settings(&[&k1], "k1")).unwrap();
        let (id, sealed) = old.seal("v^1.1#secret-token");
        assert_eq!(id, "k1");
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "ciphertext carries no plaintext"
        );
        let rotated = TokenCipher::new(&settings(&[&k1, &k2], "k2")).unwrap();
        assert_eq!(rotated.open(&id, &sealed).unwrap(), "v^1.1#secret-token");
        assert_eq!(rotated.seal("x").0, "k2");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            rotated.open(&id, &tampered),
            Err(CipherError::Corrupt)
        ));
        assert!(matches!(
            rotated.open("gone", &sealed),
            Err(CipherError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused_at_boot() {
        assert!(TokenCipher::new(&settings(&["k1:c2hvcnQ="], "k1")).is_err());
        let k1 = format!(
            "k1:{}",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32])
        );
        assert!(matches!(
            TokenCipher::new(&settings(&[&k1], "k9")),
            Err(CipherError::NoActiveKey(_))
        ));
    }
}
