//! The strict, sans-IO streaming reader: bytes go in by [`Decoder::push`]
//! in chunks of any size, verified payload bytes come out through a
//! [`PayloadSink`]. No payload byte reaches the sink before the signature
//! and manifest are verified.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::error::{BundleError, Region};
use crate::keys::{key_id, TrustedKeys};
use crate::manifest::{Limits, Manifest, PayloadInfo};
use crate::{
    FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_MANIFEST_LEN, SIGNATURE_CONTEXT, SIGNATURE_LEN,
    SIGNER_LEN,
};

/// Where verified payload bytes go (for a node: the inactive slot).
///
/// First, once, `verified` with the manifest whose signature checked out,
/// before any payload: the place to refuse the bundle for the node's own
/// reasons (e.g. [`Manifest::check_upgrade_from`]) before a byte is
/// written. Then, for each payload, the decoder calls `begin`, then `data`
/// zero or more
/// times with consecutive bytes, then exactly one of `end` (all bytes
/// received and the SHA-256 matches) or `abort` (anything went wrong after
/// `begin`, whatever `begin` returned). `end` of the last payload does not
/// mean the bundle is accepted: only [`Decoder::finish`] returning `Ok`
/// does (trailing bytes may still follow).
pub trait PayloadSink {
    /// The signature verified and the manifest is valid; `signer` is the
    /// id of the trusted key that signed. An error refuses the bundle
    /// (returned as is by `push`). Default: accept.
    fn verified(&mut self, manifest: &Manifest, signer: &str) -> Result<(), BundleError> {
        let _ = (manifest, signer);
        Ok(())
    }
    /// A payload starts; `part` has its declared size and hash.
    fn begin(&mut self, part: &PayloadInfo) -> std::io::Result<()>;
    /// The next bytes of the payload (not yet hash-checked).
    fn data(&mut self, part: &PayloadInfo, bytes: &[u8]) -> std::io::Result<()>;
    /// The payload is complete and its hash matches.
    fn end(&mut self, part: &PayloadInfo) -> std::io::Result<()>;
    /// The payload must be abandoned; `reason` says why.
    fn abort(&mut self, part: &PayloadInfo, reason: &BundleError);
}

/// A sink that drops every byte (verification only).
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardSink;

impl PayloadSink for DiscardSink {
    fn begin(&mut self, _: &PayloadInfo) -> std::io::Result<()> {
        Ok(())
    }
    fn data(&mut self, _: &PayloadInfo, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &PayloadInfo) -> std::io::Result<()> {
        Ok(())
    }
    fn abort(&mut self, _: &PayloadInfo, _: &BundleError) {}
}

enum State {
    /// Collecting the 16-byte header into `head`.
    Header,
    /// Collecting the manifest into `head` (which ends at `HEADER_LEN + len`).
    Manifest { len: usize },
    /// Collecting signer key and signature into `sig`.
    Signature,
    /// Streaming payload `index` (`begin` was called).
    Payload {
        index: usize,
        remaining: u64,
        hasher: Box<Sha256>,
    },
    /// Every payload ended.
    Done,
    /// Refused; the message of the first error.
    Failed(String),
}

/// The streaming bundle reader. Feed it with [`Decoder::push`], end with
/// [`Decoder::finish`].
pub struct Decoder {
    trusted: TrustedKeys,
    limits: Limits,
    state: State,
    /// Bytes consumed so far.
    offset: u64,
    /// Header and manifest: the signed bytes (after the context string).
    head: Vec<u8>,
    /// Signer public key and signature.
    sig: Vec<u8>,
    manifest: Option<Manifest>,
    signer: Option<String>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("offset", &self.offset)
            .field("trusted", &self.trusted.ids())
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder accepting bundles signed by one of `trusted`, with payload
    /// sizes within `limits`.
    pub fn new(trusted: TrustedKeys, limits: Limits) -> Decoder {
        Decoder {
            trusted,
            limits,
            state: State::Header,
            offset: 0,
            head: Vec::with_capacity(HEADER_LEN),
            sig: Vec::with_capacity(SIGNER_LEN + SIGNATURE_LEN),
            manifest: None,
            signer: None,
        }
    }

    /// The verified manifest, once the signature checked out (before the
    /// first payload byte is passed on).
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Id of the trusted key that signed the bundle, once verified.
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The bundle's total length, known once the manifest is verified (for
    /// progress reporting).
    pub fn total_len(&self) -> Option<u64> {
        let m = self.manifest.as_ref()?;
        Some((self.head.len() + SIGNER_LEN + SIGNATURE_LEN) as u64 + m.payload_bytes())
    }

    /// Consumes the next chunk of the bundle (any size, including 0).
    /// Payload bytes go to `sink`; the first error is returned and every
    /// later call returns [`BundleError::AlreadyFailed`].
    pub fn push(&mut self, input: &[u8], sink: &mut impl PayloadSink) -> Result<(), BundleError> {
        if let State::Failed(previous) = &self.state {
            return Err(BundleError::AlreadyFailed {
                previous: previous.clone(),
            });
        }
        if self.trusted.is_empty() {
            return Err(self.fail(BundleError::NoTrustedKeys, sink));
        }
        match self.consume(input, sink) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e, sink)),
        }
    }

    /// Ends the input: `Ok` with the manifest if the bundle was complete and
    /// valid, else the error (an open payload is aborted).
    pub fn finish(mut self, sink: &mut impl PayloadSink) -> Result<Manifest, BundleError> {
        let (region, missing) = match &self.state {
            State::Failed(previous) => {
                return Err(BundleError::AlreadyFailed {
                    previous: previous.clone(),
                })
            }
            State::Done => {
                return self.manifest.take().ok_or(BundleError::AlreadyFailed {
                    previous: "no manifest after the last payload".into(),
                })
            }
            State::Header => (Region::Header, HEADER_LEN - self.head.len()),
            State::Manifest { len } => (Region::Manifest, HEADER_LEN + len - self.head.len()),
            State::Signature => (
                Region::Signature,
                SIGNER_LEN + SIGNATURE_LEN - self.sig.len(),
            ),
            State::Payload {
                index, remaining, ..
            } => {
                let part = self.part(*index).name;
                let e = BundleError::Truncated {
                    region: Region::Payload(part),
                    missing: *remaining,
                    offset: self.offset,
                };
                return Err(self.fail(e, sink));
            }
        };
        let e = BundleError::Truncated {
            region,
            missing: missing as u64,
            offset: self.offset,
        };
        Err(self.fail(e, sink))
    }

    /// Records `e` as the decoder's end and aborts an open payload.
    fn fail(&mut self, e: BundleError, sink: &mut impl PayloadSink) -> BundleError {
        let state = std::mem::replace(&mut self.state, State::Failed(e.to_string()));
        if let State::Payload { index, .. } = state {
            sink.abort(self.part(index), &e);
        }
        e
    }

    fn part(&self, index: usize) -> &PayloadInfo {
        match &self.manifest {
            Some(m) => &m.payloads[index],
            // The payload states are entered only after the manifest is set.
            None => unreachable!("payload state without a manifest"),
        }
    }

    fn consume(
        &mut self,
        mut input: &[u8],
        sink: &mut impl PayloadSink,
    ) -> Result<(), BundleError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Header => {
                    let n = take(&mut self.head, HEADER_LEN, &mut input);
                    self.offset += n as u64;
                    if self.head.len() == HEADER_LEN {
                        let len = self.parse_header()?;
                        self.head.reserve_exact(len);
                        self.state = State::Manifest { len };
                    }
                }
                State::Manifest { len } => {
                    let want = HEADER_LEN + *len;
                    let n = take(&mut self.head, want, &mut input);
                    self.offset += n as u64;
                    if self.head.len() == want {
                        self.state = State::Signature;
                    }
                }
                State::Signature => {
                    let n = take(&mut self.sig, SIGNER_LEN + SIGNATURE_LEN, &mut input);
                    self.offset += n as u64;
                    if self.sig.len() == SIGNER_LEN + SIGNATURE_LEN {
                        self.verify()?;
                        if let (Some(m), Some(signer)) = (&self.manifest, &self.signer) {
                            sink.verified(m, signer)?;
                        }
                        self.start_payload(0, sink)?;
                    }
                }
                State::Payload {
                    index,
                    remaining,
                    hasher,
                } => {
                    let index = *index;
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (chunk, rest) = input.split_at(n);
                    input = rest;
                    hasher.update(chunk);
                    *remaining -= n as u64;
                    let done = (*remaining == 0).then(|| std::mem::take(&mut **hasher));
                    self.offset += n as u64;
                    let part = self.part(index);
                    sink.data(part, chunk).map_err(|source| BundleError::Sink {
                        part: part.name,
                        offset: self.offset,
                        source,
                    })?;
                    if let Some(hasher) = done {
                        self.end_payload(index, hasher.finalize().into(), sink)?;
                    }
                }
                State::Done => {
                    return Err(BundleError::TrailingData {
                        offset: self.offset,
                    });
                }
                State::Failed(_) => {
                    // `push` returns before consuming in this state.
                    unreachable!("consume after failure")
                }
            }
        }
        Ok(())
    }

    /// Checks magic, format version and manifest length; returns the length.
    fn parse_header(&self) -> Result<usize, BundleError> {
        let h = &self.head;
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&h[0..8]);
        if magic != MAGIC {
            return Err(BundleError::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
        if len == 0 || len > MAX_MANIFEST_LEN {
            return Err(BundleError::ManifestLength {
                len,
                max: MAX_MANIFEST_LEN,
            });
        }
        Ok(len as usize)
    }

    /// Verifies the signature over context + header + manifest, then parses
    /// and validates the manifest.
    fn verify(&mut self) -> Result<(), BundleError> {
        let mut signer = [0u8; SIGNER_LEN];
        signer.copy_from_slice(&self.sig[..SIGNER_LEN]);
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&self.sig[SIGNER_LEN..]);
        let signer_id = key_id(&signer);
        let Some(key) = self.trusted.find(&signer) else {
            return Err(BundleError::UntrustedSigner {
                signer: signer_id,
                trusted: self.trusted.ids(),
            });
        };
        let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + self.head.len());
        message.extend_from_slice(SIGNATURE_CONTEXT);
        message.extend_from_slice(&self.head);
        let signature = ed25519_dalek::Signature::from_bytes(&sig);
        if key.verify_strict(&message, &signature).is_err() {
            return Err(BundleError::SignatureInvalid {
                signer: signer_id,
                offset: self.offset - SIGNATURE_LEN as u64,
            });
        }
        let manifest = Manifest::from_json(&self.head[HEADER_LEN..], &self.limits)?;
        self.manifest = Some(manifest);
        self.signer = Some(signer_id);
        Ok(())
    }

    fn start_payload(
        &mut self,
        index: usize,
        sink: &mut impl PayloadSink,
    ) -> Result<(), BundleError> {
        let remaining = self.part(index).size;
        self.state = State::Payload {
            index,
            remaining,
            hasher: Box::new(Sha256::new()),
        };
        let part = self.part(index);
        sink.begin(part).map_err(|source| BundleError::Sink {
            part: part.name,
            offset: self.offset,
            source,
        })
    }

    /// Checks a complete payload's hash; ends it and begins the next.
    fn end_payload(
        &mut self,
        index: usize,
        actual: [u8; 32],
        sink: &mut impl PayloadSink,
    ) -> Result<(), BundleError> {
        let part = self.part(index);
        if actual != part.sha256 {
            // State is still Payload: `fail` aborts it.
            return Err(BundleError::HashMismatch {
                part: part.name,
                expected: part.sha256_hex(),
                actual: hex::encode(actual),
                offset: self.offset,
            });
        }
        // Ended: from here on a failure must not abort this part.
        self.state = State::Done;
        let part = self.part(index);
        sink.end(part).map_err(|source| BundleError::Sink {
            part: part.name,
            offset: self.offset,
            source,
        })?;
        if index + 1 < crate::manifest::PayloadName::ALL.len() {
            self.start_payload(index + 1, sink)?;
        }
        Ok(())
    }
}

/// Moves up to `want - buf.len()` bytes from the front of `input` into
/// `buf`; returns how many.
fn take(buf: &mut Vec<u8>, want: usize, input: &mut &[u8]) -> usize {
    let n = want.saturating_sub(buf.len()).min(input.len());
    let (chunk, rest) = input.split_at(n);
    buf.extend_from_slice(chunk);
    *input = rest;
    n
}

/// Reads a whole bundle from `reader` and verifies it, discarding the
/// payloads: `Ok` with the manifest only if the bundle is complete, signed
/// by a trusted key and every hash matches.
pub fn verify_reader(
    mut reader: impl Read,
    trusted: TrustedKeys,
    limits: Limits,
) -> Result<Manifest, BundleError> {
    let mut decoder = Decoder::new(trusted, limits);
    let mut sink = DiscardSink;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(BundleError::Io {
                    what: format!("cannot read the bundle at offset {}", decoder.offset()),
                    source,
                })
            }
        };
        decoder.push(&buf[..n], &mut sink)?;
    }
    decoder.finish(&mut sink)
}
