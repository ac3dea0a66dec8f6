//! Keelson upgrade bundles: a signed manifest followed by the payloads of
//! one A/B slot (kernel, initramfs, root squashfs).
//!
//! This crate owns the byte format, the writer ([`write_bundle`]) and the
//! strict, sans-IO streaming reader ([`Decoder`]) a node drives from a
//! stream of chunks of any size. Pure `std::io`, no async runtime.
//!
//! # Format (version 1)
//!
//! All integers little-endian. `N` is the manifest length.
//!
//! | offset        | size | field                                              |
//! |---------------|------|----------------------------------------------------|
//! | 0             | 8    | magic `KEELSONB` (ASCII)                           |
//! | 8             | 4    | format version, u32, = 1                           |
//! | 12            | 4    | manifest length `N`, u32, 1 ..= 65536              |
//! | 16            | N    | manifest, canonical JSON, UTF-8                    |
//! | 16+N          | 32   | signer: the ed25519 public key that signed         |
//! | 48+N          | 64   | ed25519 signature                                  |
//! | 112+N         | K    | kernel payload (K = manifest `payloads[0].size`)   |
//! | 112+N+K       | I    | initramfs payload (I = `payloads[1].size`)         |
//! | 112+N+K+I     | R    | rootfs squashfs payload (R = `payloads[2].size`)   |
//! | 112+N+K+I+R   | -    | end: no byte may follow                            |
//!
//! The signature is ed25519 (RFC 8032, verified strictly) over the message
//! [`SIGNATURE_CONTEXT`] (`keelson-bundle-signature-v1` and a NUL byte)
//! followed by bytes `0 .. 16+N` of the bundle (magic, version, length,
//! manifest). The signer field only names the key: a bundle is accepted
//! only if that key is one of the trusted keys and the signature verifies
//! under it. It is checked before the manifest is parsed, so only
//! authenticated JSON is ever parsed, and before any payload byte is
//! passed on.
//!
//! The manifest is the compact JSON serialization of these fields, in this
//! order, with no whitespace; optional fields are omitted when absent
//! (never `null`). Any other byte sequence is refused, even if it is
//! equivalent JSON, so each manifest has exactly one encoding.
//!
//! ```json
//! {"format_version":1,"os_version":"1.2.0","build_id":"3f9a...",
//!  "created":"2026-11-26T07:00:00Z","min_upgrade_from":"1.0",
//!  "payloads":[{"name":"kernel","size":9000000,"sha256":"<64 hex>"},
//!              {"name":"initramfs","size":...,"sha256":"..."},
//!              {"name":"rootfs","size":...,"sha256":"..."}]}
//! ```
//!
//! - `format_version`: 1 (must equal the header's).
//! - `os_version`, `min_upgrade_from` (optional): versions per [`Version`].
//! - `build_id`: 1 to 128 of `A-Z a-z 0-9 . _ -`.
//! - `created` (optional): 1 to 64 printable ASCII characters.
//! - `payloads`: exactly `kernel`, `initramfs`, `rootfs` in that order,
//!   each with `size` (1 ..= the reader's [`Limits`]) and `sha256` (64
//!   lowercase hex characters). Unknown fields anywhere are refused.

mod decoder;
mod error;
mod keys;
mod manifest;
mod writer;

pub use decoder::{verify_reader, Decoder, DiscardSink, PayloadSink};
pub use error::{BundleError, PayloadListProblem, Region};
pub use keys::{key_id, SigningKey, TrustedKeys};
pub use manifest::{Limits, Manifest, PayloadInfo, PayloadName, Version};
pub use writer::{encode_header, prepare, write_bundle, BundleMeta, Prepared};

/// The first 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"KEELSONB";
/// The format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest accepted, bytes.
pub const MAX_MANIFEST_LEN: u32 = 64 * 1024;
/// Prefix of the signed message (domain separation: a signature over a
/// bundle cannot be a valid signature of anything else, and vice versa).
pub const SIGNATURE_CONTEXT: &[u8] = b"keelson-bundle-signature-v1\0";
/// Length of magic, format version and manifest length.
pub const HEADER_LEN: usize = 16;
/// Length of the signer public key field.
pub const SIGNER_LEN: usize = 32;
/// Length of the signature field.
pub const SIGNATURE_LEN: usize = 64;
