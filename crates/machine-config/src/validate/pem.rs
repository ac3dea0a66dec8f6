//! PEM framing, X.509 certificates, private keys and ed25519 public keys, as
//! they appear in a config: checked without I/O and without a TLS stack.
//!
//! Each check returns a message saying what is wrong (`Err(String)`), which
//! the caller attaches to the config path.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// One `-----BEGIN LABEL----- ... -----END LABEL-----` block, decoded.
pub(crate) struct PemBlock {
    /// The label (`CERTIFICATE`, `PRIVATE KEY`...).
    pub label: String,
    /// The DER bytes of the base64 body.
    pub der: Vec<u8>,
}

/// Splits `text` into PEM blocks, refusing anything that is not cleanly
/// framed: text outside blocks, mismatched BEGIN/END labels, bad base64.
pub(crate) fn blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim).enumerate();
    while let Some((n, line)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let label = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or_else(|| {
                format!(
                    "not PEM: line {} of the value should be a `-----BEGIN ...-----` line",
                    n + 1
                )
            })?;
        let mut body = String::new();
        let mut ended = false;
        for (m, line) in lines.by_ref() {
            if let Some(end) = line
                .strip_prefix("-----END ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                if end != label {
                    return Err(format!(
                        "not PEM: line {} ends a {end:?} block but {label:?} was begun",
                        m + 1
                    ));
                }
                ended = true;
                break;
            }
            body.push_str(line);
        }
        if !ended {
            return Err(format!("not PEM: the {label:?} block has no END line"));
        }
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("not PEM: the {label:?} block is not valid base64 ({e})"))?;
        if der.is_empty() {
            return Err(format!("not PEM: the {label:?} block is empty"));
        }
        out.push(PemBlock {
            label: label.to_string(),
            der,
        });
    }
    if out.is_empty() {
        return Err("not PEM: no `-----BEGIN ...-----` block found".to_string());
    }
    Ok(out)
}

/// Facts about a parsed certificate that validation cares about.
pub(crate) struct CertInfo {
    /// Basic constraints say this is a CA.
    pub is_ca: bool,
}

/// Checks a PEM bundle of one or more X.509 certificates and returns what
/// each says about itself.
pub(crate) fn certificates(text: &str) -> Result<Vec<CertInfo>, String> {
    let blocks = blocks(text)?;
    let mut out = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        if b.label != "CERTIFICATE" {
            return Err(format!(
                "PEM block {} is a {:?}, expected a \"CERTIFICATE\"",
                i + 1,
                b.label
            ));
        }
        let (rest, cert) = x509_parser::parse_x509_certificate(&b.der)
            .map_err(|e| format!("PEM block {} is not a valid X.509 certificate ({e})", i + 1))?;
        if !rest.is_empty() {
            return Err(format!(
                "PEM block {} has {} bytes of trailing data after the certificate",
                i + 1,
                rest.len()
            ));
        }
        out.push(CertInfo {
            is_ca: cert.is_ca(),
        });
    }
    Ok(out)
}

/// Checks a PEM private key: exactly one block labelled `PRIVATE KEY`
/// (PKCS#8), `EC PRIVATE KEY` or `RSA PRIVATE KEY`, holding a DER sequence.
pub(crate) fn private_key(text: &str) -> Result<(), String> {
    const LABELS: [&str; 3] = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];
    let blocks = blocks(text)?;
    let [block] = blocks.as_slice() else {
        return Err(format!(
            "expected exactly one private key block, found {}",
            blocks.len()
        ));
    };
    if !LABELS.contains(&block.label.as_str()) {
        return Err(format!(
            "the PEM block is a {:?}, expected one of {LABELS:?}",
            block.label
        ));
    }
    // Every accepted form is a DER SEQUENCE.
    if block.der.first() != Some(&0x30) {
        return Err("the private key is not DER-encoded (no ASN.1 SEQUENCE)".to_string());
    }
    Ok(())
}

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE,
/// AlgorithmIdentifier id-Ed25519 (1.3.101.112), BIT STRING of 33 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Decodes an ed25519 public key written as base64 of its 32 raw bytes or
/// as a PEM `PUBLIC KEY` (SPKI) block, and checks it is a valid curve
/// point.
pub(crate) fn ed25519_public_key(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let raw: Vec<u8> = if trimmed.starts_with("-----BEGIN") {
        let blocks = blocks(trimmed)?;
        let [block] = blocks.as_slice() else {
            return Err(format!("expected one PEM block, found {}", blocks.len()));
        };
        if block.label != "PUBLIC KEY" {
            return Err(format!(
                "the PEM block is a {:?}, expected \"PUBLIC KEY\"",
                block.label
            ));
        }
        match block.der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(key) => key.to_vec(),
            None => return Err("the PUBLIC KEY is not an ed25519 key".to_string()),
        }
    } else {
        STANDARD.decode(trimmed.as_bytes()).map_err(|e| {
            format!(
                "not base64 ({e}) and not PEM: expected base64 of the 32 key bytes \
                 or a PEM PUBLIC KEY block"
            )
        })?
    };
    let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
        format!(
            "an ed25519 public key is 32 bytes, this is {} bytes",
            raw.len()
        )
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "the 32 bytes are not a valid ed25519 public key (not a curve point)")?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn framing_errors_say_what_is_wrong() {
        let e = blocks("hello").err().unwrap();
        assert!(e.contains("BEGIN"), "{e}");
        let e = blocks("-----BEGIN A-----\nAAAA\n-----END B-----\n")
            .err()
            .unwrap();
        assert!(e.contains("\"B\"") && e.contains("\"A\""), "{e}");
        let e = blocks("-----BEGIN A-----\nAAAA\n").err().unwrap();
        assert!(e.contains("no END"), "{e}");
        let e = blocks("-----BEGIN A-----\n!!!!\n-----END A-----")
            .err()
            .unwrap();
        assert!(e.contains("base64"), "{e}");
        let ok = blocks("-----BEGIN A-----\nAAEC\n-----END A-----\n").unwrap();
        assert_eq!(ok[0].der, vec![0, 1, 2]);
    }

    #[test]
    fn ed25519_keys_in_both_forms() {
        // The RFC 8032 test vector 1 public key.
        let raw = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap();
        let b64 = STANDARD.encode(&raw);
        assert_eq!(ed25519_public_key(&b64).unwrap().to_vec(), raw);
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&raw);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&der)
        );
        assert_eq!(ed25519_public_key(&pem).unwrap().to_vec(), raw);
        let short = STANDARD.encode([1u8; 31]);
        assert!(ed25519_public_key(&short).unwrap_err().contains("31 bytes"));
    }
}
