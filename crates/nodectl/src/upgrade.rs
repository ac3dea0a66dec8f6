//! The local side of `nodectl upgrade`: reading an upgrade bundle's header
//! and manifest before anything is sent ([`inspect`]), the trusted key of
//! `--pubkey` ([`trusted_keys`]), how the file is cut into the `Upgrade`
//! stream's chunks ([`chunk_lengths`]) and the progress line on standard
//! error ([`Progress`]). No network here: `commands::upgrade` streams.
//!
//! Locally only the start of a bundle is checked, with the same decoder
//! the node runs (`bundle::Decoder`): header, signature, manifest, and that
//! the file's size is the one the manifest declares. Payload hashes are
//! left to the node (no second read of the file here). Without `--pubkey`
//! the decoder trusts the key the bundle names as its signer: that proves
//! the header is intact, not that the signer is one the node trusts: only
//! the node (or `--pubkey`) decides that.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bundle::{BundleError, Decoder, DiscardSink, Limits, Manifest, TrustedKeys};

/// Bytes per `Upgrade` stream message after the options.
pub const CHUNK_SIZE: u64 = 1 << 20;

/// Offset of the signer key after the manifest (`16 + N`), and the fixed
/// bytes that follow the manifest (signer 32 + signature 64).
const AFTER_MANIFEST: usize = bundle::SIGNER_LEN + bundle::SIGNATURE_LEN;

/// Payload size bounds for local reading: the node applies its own (its
/// inactive partition's size); nodectl refuses nothing a node might take.
pub fn local_limits() -> Limits {
    Limits {
        kernel: 1 << 40,
        initramfs: 1 << 40,
        rootfs: 1 << 40,
    }
}

/// Why a bundle is refused before any node is called.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The bundle file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{} is empty (0 bytes): not an upgrade bundle", .path.display())]
    Empty {
        /// The bundle file.
        path: PathBuf,
    },
    /// The bytes are not a valid bundle (bad magic, bad signature,
    /// manifest, hash...).
    #[error("{}: {source}", .path.display())]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// What the bundle reader refused.
        #[source]
        source: BundleError,
    },
    /// The file is shorter or longer than its manifest says.
    #[error(
        "{}: the file is {actual} bytes but its manifest declares a {declared}-byte bundle ({})",
        .path.display(),
        if .actual < .declared { "truncated" } else { "extra bytes at the end" }
    )]
    Length {
        /// The bundle file.
        path: PathBuf,
        /// The file's size.
        actual: u64,
        /// Header + manifest + signature + payload sizes.
        declared: u64,
    },
    /// `--pubkey` is neither a readable key file nor a key.
    #[error("--pubkey {arg:?}: {reason}")]
    PublicKey {
        /// The argument.
        arg: String,
        /// Why it is not a key.
        reason: String,
    },
}

/// What `nodectl upgrade` is about to send, read from the bundle itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleInfo {
    /// The bundle's manifest (signature checked against `trusted_by`).
    pub manifest: Manifest,
    /// The file's size in bytes (= the size the manifest declares).
    pub size: u64,
    /// Key id of the key that signed.
    pub signer: String,
    /// Whether the signer was checked against `--pubkey` (`false`: only
    /// against the key the bundle names).
    pub key_checked: bool,
}

/// The key the bundle names as its signer, trusted on its own word (see
/// the module doc).
fn self_trust(head: &[u8], manifest_len: usize) -> Result<TrustedKeys, BundleError> {
    let start = bundle::HEADER_LEN + manifest_len;
    let signer = head
        .get(start..start + bundle::SIGNER_LEN)
        .ok_or(BundleError::Truncated {
            region: bundle::Region::Signature,
            missing: (start + bundle::SIGNER_LEN).saturating_sub(head.len()) as u64,
            offset: head.len() as u64,
        })?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(signer);
    TrustedKeys::from_base64(&[b64])
}

/// Checks the fixed header (magic, format version, manifest length) of
/// `head` (at least its first 16 bytes) and returns the manifest length.
fn header_manifest_len(head: &[u8]) -> Result<usize, BundleError> {
    let missing = |n: usize| BundleError::Truncated {
        region: bundle::Region::Header,
        missing: (n - head.len()) as u64,
        offset: head.len() as u64,
    };
    if head.len() < bundle::HEADER_LEN {
        // Name the magic when what there is already is not it.
        let n = head.len().min(8);
        if head[..n] != bundle::MAGIC[..n] {
            let mut found = [0u8; 8];
            found[..n].copy_from_slice(&head[..n]);
            return Err(BundleError::BadMagic { found });
        }
        return Err(missing(bundle::HEADER_LEN));
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&head[..8]);
    if magic != bundle::MAGIC {
        return Err(BundleError::BadMagic { found: magic });
    }
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let version = word(8);
    if version != bundle::FORMAT_VERSION {
        return Err(BundleError::UnsupportedFormat {
            found: version,
            supported: bundle::FORMAT_VERSION,
        });
    }
    let len = word(12);
    if len == 0 || len > bundle::MAX_MANIFEST_LEN {
        return Err(BundleError::ManifestLength {
            len,
            max: bundle::MAX_MANIFEST_LEN,
        });
    }
    Ok(len as usize)
}

/// A decoder for a bundle whose first bytes are `head`: trusting `keys`
/// when given, else the signer the bundle names. Pushing `head` into it
/// verifies the signature and the manifest.
pub fn decoder_for(head: &[u8], keys: Option<&TrustedKeys>) -> Result<Decoder, BundleError> {
    let len = header_manifest_len(head)?;
    let trusted = match keys {
        Some(k) => k.clone(),
        None => self_trust(head, len)?,
    };
    Ok(Decoder::new(trusted, local_limits()))
}

/// Reads and checks the header, manifest and signature of the bundle at
/// `path` (the first `16 + N + 96` bytes; payload hashes are checked while
/// streaming), and that the file's size is the one its manifest declares.
/// `keys`: the `--pubkey` to check the signer against.
pub fn inspect(path: &Path, keys: Option<&TrustedKeys>) -> Result<BundleInfo, UpgradeError> {
    let read_err = |source| UpgradeError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size == 0 {
        return Err(UpgradeError::Empty {
            path: path.to_owned(),
        });
    }
    let want = (bundle::HEADER_LEN + bundle::MAX_MANIFEST_LEN as usize + AFTER_MANIFEST) as u64;
    let mut head = Vec::new();
    file.take(want).read_to_end(&mut head).map_err(read_err)?;
    inspect_head(&head, size, keys).map_err(|e| match e {
        InspectError::Bundle(source) => UpgradeError::Bundle {
            path: path.to_owned(),
            source,
        },
        InspectError::Length { actual, declared } => UpgradeError::Length {
            path: path.to_owned(),
            actual,
            declared,
        },
    })
}

/// [`inspect`]'s failure before the path is attached.
#[derive(Debug)]
pub enum InspectError {
    /// The bundle reader refused the bytes.
    Bundle(BundleError),
    /// The size differs from the manifest's.
    Length {
        /// The file's size.
        actual: u64,
        /// The size the manifest declares.
        declared: u64,
    },
}

/// [`inspect`] on bytes: `head` is the start of a file of `size` bytes (at
/// least the header, manifest and signature, or the whole file).
pub fn inspect_head(
    head: &[u8],
    size: u64,
    keys: Option<&TrustedKeys>,
) -> Result<BundleInfo, InspectError> {
    let mut decoder = decoder_for(head, keys).map_err(InspectError::Bundle)?;
    let len = header_manifest_len(head).map_err(InspectError::Bundle)?;
    let end = (bundle::HEADER_LEN + len + AFTER_MANIFEST).min(head.len());
    decoder
        .push(&head[..end], &mut DiscardSink)
        .map_err(InspectError::Bundle)?;
    let (Some(manifest), Some(declared), Some(signer)) = (
        decoder.manifest().cloned(),
        decoder.total_len(),
        decoder.signer().map(str::to_owned),
    ) else {
        // The push ended before the signature: the file is that short.
        return Err(match decoder.finish(&mut DiscardSink) {
            Err(e) => InspectError::Bundle(e),
            Ok(_) => InspectError::Length {
                actual: size,
                declared: size + 1,
            },
        });
    };
    if declared != size {
        return Err(InspectError::Length {
            actual: size,
            declared,
        });
    }
    Ok(BundleInfo {
        manifest,
        size,
        signer,
        key_checked: keys.is_some(),
    })
}

/// The `--pubkey` argument as trusted keys: a file holding a public key
/// (base64 of the 32 bytes, or PEM `PUBLIC KEY`) or the private signing key
/// (PKCS#8 PEM, as `nodectl gen secrets` writes it), else the argument
/// itself as a key.
pub fn trusted_keys(arg: &str) -> Result<TrustedKeys, UpgradeError> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        std::fs::read_to_string(path).map_err(|e| UpgradeError::PublicKey {
            arg: arg.to_owned(),
            reason: format!("cannot read the file: {e}"),
        })?
    } else {
        arg.to_owned()
    };
    let not_key = |e: BundleError| UpgradeError::PublicKey {
        arg: arg.to_owned(),
        reason: if path.is_file() {
            format!("the file holds no ed25519 key: {e}")
        } else {
            format!("neither a file nor a key: {e}")
        },
    };
    let public = if text.contains("PRIVATE KEY") {
        bundle::SigningKey::from_pkcs8_pem(&text)
            .map_err(not_key)?
            .public_base64()
    } else {
        text.trim().to_owned()
    };
    TrustedKeys::from_base64(&[public]).map_err(not_key)
}

/// The lengths of the chunks a `total`-byte file is sent in: `chunk` bytes
/// each, the last one the rest (no empty chunk).
pub fn chunk_lengths(total: u64, chunk: u64) -> impl Iterator<Item = u64> {
    let chunk = chunk.max(1);
    let mut left = total;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(chunk);
        left -= n;
        Some(n)
    })
}

/// `sent / total MiB (P%)  R MB/s` at `elapsed` since the start.
pub fn progress_text(sent: u64, total: u64, elapsed: Duration) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let pct = (sent * 100).checked_div(total).unwrap_or(100);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        sent as f64 / secs / 1e6
    } else {
        0.0
    };
    format!(
        "{:.1}/{:.1} MiB ({pct}%)  {rate:.1} MB/s",
        mib(sent),
        mib(total)
    )
}

/// Width of the bar (characters between the brackets).
const BAR_WIDTH: u64 = 30;
/// Least time between two redraws of the bar on a terminal.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// The progress display of one upload: on a terminal a bar redrawn in
/// place (`\r`), otherwise one plain line per 10% sent.
#[derive(Clone, Debug)]
pub struct Progress {
    total: u64,
    tty: bool,
    label: String,
    verb: &'static str,
    last_draw: Option<Duration>,
    last_tenth: u64,
}

impl Progress {
    /// A display for `total` bytes, prefixed with `label` (e.g. the node).
    pub fn new(total: u64, tty: bool, label: &str) -> Progress {
        Progress {
            total,
            tty,
            label: label.to_owned(),
            verb: "sent",
            last_draw: None,
            last_tenth: 0,
        }
    }

    /// The same display saying `verb` (e.g. `downloaded`) instead of `sent`
    /// on its plain lines.
    pub fn with_verb(mut self, verb: &'static str) -> Progress {
        self.verb = verb;
        self
    }

    fn bar(&self, sent: u64, elapsed: Duration) -> String {
        let filled = (sent.min(self.total) * BAR_WIDTH)
            .checked_div(self.total)
            .unwrap_or(BAR_WIDTH);
        format!(
            "\r{}[{}{}] {}\x1b[K",
            self.label,
            "#".repeat(filled as usize),
            " ".repeat((BAR_WIDTH - filled) as usize),
            progress_text(sent, self.total, elapsed)
        )
    }

    /// What to write to standard error now that `sent` bytes are out,
    /// `elapsed` after the start; `None` when nothing is due.
    pub fn update(&mut self, sent: u64, elapsed: Duration) -> Option<String> {
        if self.tty {
            let due = self
                .last_draw
                .is_none_or(|t| elapsed.saturating_sub(t) >= REDRAW_EVERY);
            if !due {
                return None;
            }
            self.last_draw = Some(elapsed);
            return Some(self.bar(sent, elapsed));
        }
        let tenth = (sent.min(self.total) * 10)
            .checked_div(self.total)
            .unwrap_or(10);
        if tenth <= self.last_tenth || tenth >= 10 {
            // The 100% line is `finish`'s.
            return None;
        }
        self.last_tenth = tenth;
        Some(format!(
            "{}{} {}\n",
            self.label,
            self.verb,
            progress_text(sent, self.total, elapsed)
        ))
    }

    /// The final line once the stream ended with `sent` bytes out.
    pub fn finish(&mut self, sent: u64, elapsed: Duration) -> String {
        if self.tty {
            format!("{}\n", self.bar(sent, elapsed))
        } else {
            format!(
                "{}{} {}\n",
                self.label,
                self.verb,
                progress_text(sent, self.total, elapsed)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sample_bundle(kernel: &[u8], initramfs: &[u8], rootfs: &[u8], seed: u8) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let (k, i, r) = (
            write("k", kernel),
            write("i", initramfs),
            write("r", rootfs),
        );
        let key = bundle::SigningKey::from_seed([seed; 32]);
        let meta = bundle::BundleMeta {
            os_version: "2.0.0".into(),
            build_id: "build-2".into(),
            created: None,
            min_upgrade_from: None,
        };
        let mut out = Vec::new();
        bundle::write_bundle(&mut out, &key, &meta, &k, &i, &r).unwrap();
        out
    }

    #[test]
    fn chunks_are_full_but_the_last_and_cover_the_file() {
        let mib = CHUNK_SIZE;
        assert_eq!(
            chunk_lengths(2 * mib + 5, mib).collect::<Vec<_>>(),
            vec![mib, mib, 5]
        );
        assert_eq!(chunk_lengths(mib, mib).collect::<Vec<_>>(), vec![mib]);
        assert_eq!(chunk_lengths(1, mib).collect::<Vec<_>>(), vec![1]);
        assert_eq!(chunk_lengths(0, mib).count(), 0);
        let total = 7 * mib + 12345;
        assert_eq!(chunk_lengths(total, mib).sum::<u64>(), total);
        assert_eq!(chunk_lengths(total, mib).count(), 8);
    }

    #[test]
    fn progress_lines_report_bytes_percent_and_rate() {
        let mib = 1 << 20;
        assert_eq!(
            progress_text(5 * mib, 10 * mib, Duration::from_secs(1)),
            format!("5.0/10.0 MiB (50%)  {:.1} MB/s", (5 * mib) as f64 / 1e6)
        );
        // Not a terminal: one line per tenth, none twice, the end by finish.
        let mut p = Progress::new(10 * mib, false, "");
        let t = Duration::from_secs(1);
        assert!(p.update(mib / 2, t).is_none());
        assert!(p
            .update(mib, t)
            .unwrap()
            .starts_with("sent 1.0/10.0 MiB (10%)"));
        assert!(p.update(mib + 1, t).is_none());
        assert!(p.update(3 * mib, t).unwrap().contains("(30%)"));
        assert!(p.update(10 * mib, t).is_none());
        assert!(p.finish(10 * mib, t).contains("(100%)"));
        // A terminal: a bar redrawn in place, at most every 200 ms.
        let mut p = Progress::new(10 * mib, true, "n1: ");
        let bar = p.update(5 * mib, Duration::from_millis(10)).unwrap();
        assert!(bar.starts_with("\rn1: ["), "{bar:?}");
        assert_eq!(bar.matches('#').count(), 15);
        assert!(p.update(6 * mib, Duration::from_millis(100)).is_none());
        assert!(p.update(6 * mib, Duration::from_millis(300)).is_some());
        assert!(p.finish(10 * mib, t).ends_with('\n'));
    }

    #[test]
    fn a_bundle_is_read_locally_with_its_size_version_and_signer() {
        let b = sample_bundle(b"kernel", b"initramfs", b"rootfs bytes", 1);
        let info = inspect_head(&b, b.len() as u64, None).unwrap();
        assert_eq!(info.manifest.os_version, "2.0.0");
        assert_eq!(info.manifest.build_id, "build-2");
        assert_eq!(info.size, b.len() as u64);
        let key = bundle::SigningKey::from_seed([1; 32]);
        assert_eq!(info.signer, key.key_id());
        assert!(!info.key_checked);
        // With the right --pubkey, and with another one.
        let right = trusted_keys(&key.public_base64()).unwrap();
        assert!(
            inspect_head(&b, b.len() as u64, Some(&right))
                .unwrap()
                .key_checked
        );
        let other = bundle::SigningKey::from_seed([2; 32]).public_base64();
        let wrong = trusted_keys(&other).unwrap();
        match inspect_head(&b, b.len() as u64, Some(&wrong)) {
            Err(InspectError::Bundle(BundleError::UntrustedSigner { signer, .. })) => {
                assert_eq!(signer, key.key_id())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_truncated_and_foreign_files_are_refused_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.bundle");
        std::fs::write(&empty, b"").unwrap();
        let e = inspect(&empty, None).unwrap_err();
        assert!(matches!(e, UpgradeError::Empty { .. }));
        assert!(e.to_string().contains("is empty (0 bytes)"), "{e}");

        let foreign = dir.path().join("disk.img");
        std::fs::write(&foreign, b"\x7fELF\x02\x01\x01\0 and more bytes").unwrap();
        let e = inspect(&foreign, None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("not a Keelson bundle"), "{text}");
        assert!(text.contains("7f, 45, 4c, 46"), "the bad magic: {text}");
        assert!(text.contains("disk.img"), "{text}");
        // Shorter than the magic, and not its start.
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, b"PK").unwrap();
        assert!(inspect(&tiny, None)
            .unwrap_err()
            .to_string()
            .contains("not a Keelson bundle"));

        let b = sample_bundle(b"kernel", b"initramfs", b"rootfs bytes", 1);
        let cut = dir.path().join("cut.bundle");
        std::fs::write(&cut, &b[..b.len() - 3]).unwrap();
        match inspect(&cut, None).unwrap_err() {
            UpgradeError::Length {
                actual, declared, ..
            } => {
                assert_eq!((actual, declared), (b.len() as u64 - 3, b.len() as u64))
            }
            other => panic!("{other}"),
        }
        let long = dir.path().join("long.bundle");
        let mut extended = b.clone();
        extended.push(0);
        std::fs::write(&long, &extended).unwrap();
        assert!(inspect(&long, None)
            .unwrap_err()
            .to_string()
            .contains("extra bytes at the end"));
        // Cut inside the manifest: the reader's truncation error.
        let e = inspect_head(&b[..40], 40, None).unwrap_err();
        assert!(
            matches!(e, InspectError::Bundle(BundleError::Truncated { .. })),
            "{e:?}"
        );
        // An altered manifest byte: the signature no longer verifies.
        let mut altered = b.clone();
        let at = 16 + altered[16..].iter().position(|&c| c == b'2').unwrap();
        altered[at] = b'3';
        let e = inspect_head(&altered, altered.len() as u64, None).unwrap_err();
        assert!(
            matches!(
                e,
                InspectError::Bundle(BundleError::SignatureInvalid { .. })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn pubkey_takes_a_key_a_public_key_file_or_the_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = bundle::SigningKey::from_seed([9; 32]);
        let pub_file = dir.path().join("upgrade.pub");
        std::fs::write(&pub_file, format!("{}\n", key.public_base64())).unwrap();
        let ids = trusted_keys(pub_file.to_str().unwrap()).unwrap().ids();
        assert_eq!(ids, vec![key.key_id()]);
        // The private key file `nodectl gen secrets` writes.
        let generated = crate::secrets::UpgradeSigningKey::generate().unwrap();
        let key_file = dir.path().join("upgrade-signing.key");
        std::fs::write(&key_file, generated.to_pkcs8_pem().unwrap()).unwrap();
        let from_private = trusted_keys(key_file.to_str().unwrap()).unwrap().ids();
        let from_public = trusted_keys(&generated.public_base64()).unwrap().ids();
        assert_eq!(from_private, from_public);
        assert_ne!(from_private, ids);
        let e = trusted_keys("no-such-file-nor-key")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither a file nor a key"), "{e}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello").unwrap();
        let e = trusted_keys(junk.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("the file holds no ed25519 key"), "{e}");
    }
}
