//! Keys: the ed25519 signing key (the PKCS#8 PEM file `nodectl gen secrets`
//! writes) and the set of trusted public keys a node's machine config
//! carries in `machine.trustedUpgradeKeys`.

use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use sha2::{Digest, Sha256};

use crate::error::BundleError;

/// The short id of a public key: the first 8 bytes of the SHA-256 of its 32
/// raw bytes, as 16 hex characters.
pub fn key_id(public: &[u8; 32]) -> String {
    let digest = Sha256::digest(public);
    hex::encode(&digest[..8])
}

/// The ed25519 key that signs bundles.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("SigningKey")
            .field("id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), the
    /// form `nodectl gen secrets` writes to `upgrade-signing.key`.
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, BundleError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
            BundleError::Key {
                what: "the signing key".into(),
                reason: format!("not an ed25519 PKCS#8 PEM private key: {e}"),
            }
        })?;
        Ok(SigningKey { key })
    }

    /// Reads a PKCS#8 PEM private key file.
    pub fn from_file(path: &Path) -> Result<SigningKey, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|source| BundleError::Io {
            what: format!("cannot read the signing key {}", path.display()),
            source,
        })?;
        SigningKey::from_pkcs8_pem(&text).map_err(|e| match e {
            BundleError::Key { reason, .. } => BundleError::Key {
                what: format!("the signing key {}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// A key from its 32-byte seed (tests, fuzzing, tools that keep raw
    /// seeds).
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        SigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The public key's 32 raw bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key as base64 of its 32 raw bytes: the form
    /// `machine.trustedUpgradeKeys` takes.
    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public_bytes())
    }

    /// The public key's id (see [`key_id`]).
    pub fn key_id(&self) -> String {
        key_id(&self.public_bytes())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key.sign(message).to_bytes()
    }
}

/// The public keys a node accepts bundles from.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<ed25519_dalek::VerifyingKey>,
}

impl TrustedKeys {
    /// Parses `machine.trustedUpgradeKeys`: each entry is base64 of the 32
    /// raw key bytes or a PEM `PUBLIC KEY` block. Weak (small-order) keys
    /// are refused; duplicates are kept once. An empty list is accepted
    /// here, and every bundle is then refused with
    /// [`BundleError::NoTrustedKeys`].
    pub fn from_base64(keys: &[String]) -> Result<TrustedKeys, BundleError> {
        let mut out: Vec<ed25519_dalek::VerifyingKey> = Vec::new();
        for (i, text) in keys.iter().enumerate() {
            let what = format!("trusted key [{i}]");
            let key = parse_public(text.trim()).map_err(|reason| BundleError::Key {
                what: what.clone(),
                reason,
            })?;
            if key.is_weak() {
                return Err(BundleError::Key {
                    what,
                    reason: "a weak (small-order) ed25519 point, which any signature verifies"
                        .into(),
                });
            }
            if !out.contains(&key) {
                out.push(key);
            }
        }
        Ok(TrustedKeys { keys: out })
    }

    /// The ids of the trusted keys (see [`key_id`]), in configuration order.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| key_id(k.as_bytes())).collect()
    }

    /// How many distinct keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn find(&self, raw: &[u8; 32]) -> Option<&ed25519_dalek::VerifyingKey> {
        self.keys.iter().find(|k| k.as_bytes() == raw)
    }
}

fn parse_public(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    if text.starts_with("-----BEGIN") {
        return ed25519_dalek::VerifyingKey::from_public_key_pem(text)
            .map_err(|e| format!("not an ed25519 PEM PUBLIC KEY: {e}"));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| {
            format!("not base64 ({e}): expected base64 of the 32 key bytes or a PEM PUBLIC KEY")
        })?;
    let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
        format!(
            "an ed25519 public key is 32 bytes, this is {} bytes",
            raw.len()
        )
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "the 32 bytes are not a point on the ed25519 curve".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

    #[test]
    fn a_pkcs8_pem_key_like_nodectl_writes_is_read_and_its_public_key_trusted() {
        let seed = [7u8; 32];
        // The same encoding nodectl's `gen secrets` uses: PKCS#8 v1 PEM.
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: seed,
            public_key: None,
        };
        let pem = bytes
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(
            key.public_bytes(),
            SigningKey::from_seed(seed).public_bytes()
        );
        let trusted = TrustedKeys::from_base64(&[key.public_base64()]).unwrap();
        assert_eq!(trusted.ids(), vec![key.key_id()]);
        assert_eq!(key.key_id().len(), 16);
        // The PEM PUBLIC KEY form is accepted too and is the same key.
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pub_pem = dalek
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let both = TrustedKeys::from_base64(&[key.public_base64(), pub_pem]).unwrap();
        assert_eq!(both.len(), 1, "the same key twice is kept once");
        // The private key's Debug never shows the secret.
        assert!(!format!("{key:?}").contains(&hex::encode(seed)));
        let _ = dalek.to_pkcs8_der().unwrap();
    }

    #[test]
    fn bad_keys_are_refused_naming_the_entry() {
        let good = SigningKey::from_seed([1; 32]).public_base64();
        for bad in [
            "not base64!".to_owned(),
            base64::engine::general_purpose::STANDARD.encode([1u8; 31]),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".to_owned(),
        ] {
            let e = TrustedKeys::from_base64(&[good.clone(), bad.clone()]).unwrap_err();
            assert!(
                matches!(&e, BundleError::Key { what, .. } if what.contains("trusted key [1]")),
                "{bad}: {e}"
            );
        }
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let e =
            TrustedKeys::from_base64(&[base64::engine::general_purpose::STANDARD.encode(identity)])
                .unwrap_err();
        assert!(e.to_string().contains("weak"), "{e}");
        assert!(SigningKey::from_pkcs8_pem("garbage").is_err());
    }
}
