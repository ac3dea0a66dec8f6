//! Every way a bundle, a key or a version can be refused, each with what and
//! where (byte offset into the bundle when there is one).

use std::fmt;

use crate::manifest::PayloadName;

/// A region of the bundle, named in truncation errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The fixed header: magic, format version, manifest length.
    Header,
    /// The manifest JSON.
    Manifest,
    /// The signer's public key and the signature.
    Signature,
    /// One payload.
    Payload(PayloadName),
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Header => f.write_str("the header"),
            Region::Manifest => f.write_str("the manifest"),
            Region::Signature => f.write_str("the signature"),
            Region::Payload(p) => write!(f, "the {p} payload"),
        }
    }
}

/// What is wrong with the manifest's payload list, which must be exactly
/// `kernel`, `initramfs`, `rootfs`, in that order, each once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadListProblem {
    /// An entry names no payload this format knows.
    Unknown {
        /// Position in the list (0-based).
        index: usize,
        /// The name found.
        name: String,
    },
    /// An entry names a payload listed before it.
    Duplicate {
        /// Position in the list (0-based).
        index: usize,
        /// The name found.
        name: String,
    },
    /// An entry is a known payload, but not the one that belongs there.
    OutOfOrder {
        /// Position in the list (0-based).
        index: usize,
        /// The name found.
        name: String,
        /// The name that belongs at this position.
        expected: PayloadName,
    },
    /// The list ends before every payload is named.
    Missing {
        /// The payloads not listed.
        names: Vec<PayloadName>,
    },
}

impl fmt::Display for PayloadListProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadListProblem::Unknown { index, name } => {
                write!(f, "entry {index} names an unknown payload {name:?}")
            }
            PayloadListProblem::Duplicate { index, name } => {
                write!(f, "entry {index} names {name:?} a second time")
            }
            PayloadListProblem::OutOfOrder {
                index,
                name,
                expected,
            } => write!(f, "entry {index} is {name:?} where {expected:?} belongs"),
            PayloadListProblem::Missing { names } => {
                let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                write!(f, "missing {}", names.join(", "))
            }
        }
    }
}

/// Why a bundle (or a key, or a version) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The reader was given no trusted key: no bundle can be accepted.
    #[error(
        "no trusted upgrade key: machine.trustedUpgradeKeys is empty, so no bundle can be accepted"
    )]
    NoTrustedKeys,
    /// The first 8 bytes are not the bundle magic.
    #[error("not a Keelson bundle: bytes 0..8 are {found:02x?}, expected \"KEELSONB\"")]
    BadMagic {
        /// The 8 bytes found at offset 0.
        found: [u8; 8],
    },
    /// The header's format version is not one this reader knows.
    #[error(
        "unsupported bundle format version {found} at offset 8 (this reader knows {supported})"
    )]
    UnsupportedFormat {
        /// The version found.
        found: u32,
        /// The version this reader knows.
        supported: u32,
    },
    /// The header's manifest length is zero or above the format's bound.
    #[error("manifest length {len} at offset 12 is outside 1..={max} bytes")]
    ManifestLength {
        /// The declared length.
        len: u32,
        /// The format's bound.
        max: u32,
    },
    /// The signature was made by a key the node does not trust.
    #[error(
        "the bundle is signed by key {signer}, which is not trusted (trusted key ids: {})",
        trusted.join(", ")
    )]
    UntrustedSigner {
        /// Key id of the signer named in the bundle.
        signer: String,
        /// Key ids of the trusted keys.
        trusted: Vec<String>,
    },
    /// The signer is trusted but the signature does not verify: the header
    /// or manifest was altered, or the signature is not a real one.
    #[error(
        "the signature at offset {offset} does not verify under trusted key {signer}: \
         the manifest or the signature was altered"
    )]
    SignatureInvalid {
        /// Key id of the signer named in the bundle.
        signer: String,
        /// Offset of the signature.
        offset: u64,
    },
    /// The manifest is not JSON, or not the manifest's shape (unknown field,
    /// wrong type, missing field).
    #[error(
        "the manifest at offset 16 is not valid: {message} (manifest line {line}, column {column})"
    )]
    ManifestJson {
        /// serde_json's message.
        message: String,
        /// Line in the manifest (1-based).
        line: usize,
        /// Column in the manifest (1-based).
        column: usize,
    },
    /// The manifest is valid JSON but not in canonical form (compact, field
    /// order of the format, no null fields).
    #[error("the manifest is not in canonical form (compact JSON, fields in format order, absent optional fields omitted)")]
    ManifestNotCanonical,
    /// A manifest field has a value the format does not allow.
    #[error("manifest field {field}: {reason}")]
    ManifestInvalid {
        /// Path of the field, e.g. `payloads[1].sha256`.
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// The payload list is not exactly kernel, initramfs, rootfs.
    #[error("manifest payloads must be kernel, initramfs, rootfs in that order: {0}")]
    PayloadList(PayloadListProblem),
    /// A payload is larger than the reader's limit.
    #[error("the {part} payload declares {size} bytes, over the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload.
        part: PayloadName,
        /// Its declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A payload's bytes do not hash to what the manifest says.
    #[error(
        "the {part} payload (ending at offset {offset}) has sha256 {actual}, \
         but the manifest says {expected}"
    )]
    HashMismatch {
        /// The payload.
        part: PayloadName,
        /// Hex sha256 from the manifest.
        expected: String,
        /// Hex sha256 of the bytes received.
        actual: String,
        /// Offset just past the payload.
        offset: u64,
    },
    /// The input ended inside a region.
    #[error("the bundle is truncated: it ends at offset {offset}, {missing} bytes short of the end of {region}")]
    Truncated {
        /// The region that is incomplete.
        region: Region,
        /// Bytes missing to complete it.
        missing: u64,
        /// Total bytes received.
        offset: u64,
    },
    /// Bytes follow the last payload.
    #[error("unexpected bytes after the end of the bundle, from offset {offset}")]
    TrailingData {
        /// Offset of the first extra byte (the bundle's declared length).
        offset: u64,
    },
    /// The payload sink failed; the bundle itself may be fine. (The offset
    /// is where the bytes handed to the sink ended, so it depends on how
    /// the input was chunked.)
    #[error("writing the {part} payload failed at bundle offset {offset}: {source}")]
    Sink {
        /// The payload being written.
        part: PayloadName,
        /// Bundle offset reached.
        offset: u64,
        /// The sink's error.
        #[source]
        source: std::io::Error,
    },
    /// The decoder was used again after it refused the bundle.
    #[error("the decoder already refused this bundle: {previous}")]
    AlreadyFailed {
        /// The first error's message.
        previous: String,
    },
    /// The node runs a version older than the bundle allows upgrading from.
    #[error("this bundle upgrades from version {min} or later; the node runs {running}")]
    UpgradeFromTooOld {
        /// The running version.
        running: String,
        /// The bundle's min_upgrade_from.
        min: String,
    },
    /// A version string does not follow the version rule.
    #[error("{what} {value:?} is not a version (digits separated by dots, optionally followed by -suffix): {reason}")]
    BadVersion {
        /// Which version (e.g. `the running version`).
        what: String,
        /// The string.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key could not be read or is not an ed25519 key.
    #[error("cannot use {what}: {reason}")]
    Key {
        /// Which key (e.g. `trusted key 1`).
        what: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file or stream failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A payload file changed between the writer's hashing pass and its
    /// writing pass.
    #[error(
        "{path} changed while the bundle was written ({reason}); the output is not a valid bundle"
    )]
    PayloadChanged {
        /// The file.
        path: String,
        /// What differs.
        reason: String,
    },
}
