//! The reader's contract, through the public API: a bundle written by the
//! writer reads back byte for byte; every malformed bundle is refused with
//! its precise error; nothing reaches the sink before the signature is
//! verified; a begun payload is always ended or aborted; and the outcome
//! does not depend on how the input is chunked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bundle::{
    encode_header, prepare, verify_reader, write_bundle, BundleError, BundleMeta, Decoder,
    DiscardSink, Limits, Manifest, PayloadInfo, PayloadListProblem, PayloadName, PayloadSink,
    Region, SigningKey, TrustedKeys, FORMAT_VERSION,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn key() -> SigningKey {
    SigningKey::from_seed([42; 32])
}

fn other_key() -> SigningKey {
    SigningKey::from_seed([43; 32])
}

fn trusted(keys: &[&SigningKey]) -> TrustedKeys {
    let list: Vec<String> = keys.iter().map(|k| k.public_base64()).collect();
    TrustedKeys::from_base64(&list).unwrap()
}

/// What the sink saw, data coalesced per payload.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Begin(PayloadName),
    Data(PayloadName, Vec<u8>),
    End(PayloadName),
    Abort(PayloadName, String),
}

#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
    fail_data_of: Option<PayloadName>,
}

impl PayloadSink for Recorder {
    fn begin(&mut self, part: &PayloadInfo) -> std::io::Result<()> {
        self.events.push(Event::Begin(part.name));
        Ok(())
    }
    fn data(&mut self, part: &PayloadInfo, bytes: &[u8]) -> std::io::Result<()> {
        assert!(!bytes.is_empty() || part.size == 0, "empty data callback");
        if self.fail_data_of == Some(part.name) {
            return Err(std::io::Error::other("disk full"));
        }
        match self.events.last_mut() {
            Some(Event::Data(name, buf)) if *name == part.name => buf.extend_from_slice(bytes),
            _ => self.events.push(Event::Data(part.name, bytes.to_vec())),
        }
        Ok(())
    }
    fn end(&mut self, part: &PayloadInfo) -> std::io::Result<()> {
        self.events.push(Event::End(part.name));
        Ok(())
    }
    fn abort(&mut self, part: &PayloadInfo, reason: &BundleError) {
        self.events
            .push(Event::Abort(part.name, reason.to_string()));
    }
}

impl Recorder {
    /// Every Begin is followed by exactly one End or Abort of the same part.
    fn assert_well_formed(&self) {
        let mut open: Option<PayloadName> = None;
        for e in &self.events {
            match e {
                Event::Begin(p) => {
                    assert_eq!(open, None, "begin {p} while another is open");
                    open = Some(*p);
                }
                Event::Data(p, _) => assert_eq!(open, Some(*p)),
                Event::End(p) | Event::Abort(p, _) => {
                    assert_eq!(open, Some(*p));
                    open = None;
                }
            }
        }
        assert_eq!(open, None, "a payload was begun and never ended or aborted");
    }
}

fn manifest_for(payloads: &[Vec<u8>; 3], min: Option<&str>) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        os_version: "2.0.0".into(),
        build_id: "test-build".into(),
        created: None,
        min_upgrade_from: min.map(str::to_owned),
        payloads: [0, 1, 2].map(|i| PayloadInfo {
            name: PayloadName::ALL[i],
            size: payloads[i].len() as u64,
            sha256: Sha256::digest(&payloads[i]).into(),
        }),
    }
}

fn assemble(key: &SigningKey, manifest_json: &[u8], payloads: &[Vec<u8>; 3]) -> Vec<u8> {
    let mut b = encode_header(key, manifest_json).unwrap();
    for p in payloads {
        b.extend_from_slice(p);
    }
    b
}

fn payloads() -> [Vec<u8>; 3] {
    [
        (0..300u32).map(|i| (i * 7) as u8).collect(),
        (0..1000u32).map(|i| (i * 13 + 1) as u8).collect(),
        (0..5000u32).map(|i| (i * 31 + 5) as u8).collect(),
    ]
}

fn good_bundle() -> (Vec<u8>, Manifest, [Vec<u8>; 3]) {
    let p = payloads();
    let m = manifest_for(&p, Some("1.0"));
    (assemble(&key(), &m.to_canonical_json(), &p), m, p)
}

/// Pushes `bytes` split at `cuts` and finishes.
fn decode_chunked(
    bytes: &[u8],
    cuts: &[usize],
    keys: TrustedKeys,
    limits: Limits,
) -> (Result<Manifest, BundleError>, Recorder) {
    let mut sink = Recorder::default();
    let mut d = Decoder::new(keys, limits);
    let mut at = 0;
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c.min(&bytes.len()).to_owned())
        .collect();
    points.sort_unstable();
    points.push(bytes.len());
    for p in points {
        if let Err(e) = d.push(&bytes[at..p], &mut sink) {
            sink.assert_well_formed();
            return (Err(e), sink);
        }
        at = p;
    }
    let r = d.finish(&mut sink);
    sink.assert_well_formed();
    (r, sink)
}

fn decode(bytes: &[u8]) -> (Result<Manifest, BundleError>, Recorder) {
    decode_chunked(bytes, &[], trusted(&[&key()]), Limits::default())
}

fn header_len(m: &Manifest) -> usize {
    16 + m.to_canonical_json().len() + 96
}

#[test]
fn a_written_bundle_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = payloads();
    let names = ["vmlinuz", "initramfs.img", "rootfs.squashfs"];
    for (n, data) in names.iter().zip(&p) {
        std::fs::write(dir.path().join(n), data).unwrap();
    }
    let meta = BundleMeta {
        os_version: "2.1.0-rc1".into(),
        build_id: "abc123".into(),
        created: Some("2026-11-26T07:00:00Z".into()),
        min_upgrade_from: Some("2.0".into()),
    };
    let mut out = Vec::new();
    let written = write_bundle(
        &mut out,
        &key(),
        &meta,
        &dir.path().join(names[0]),
        &dir.path().join(names[1]),
        &dir.path().join(names[2]),
    )
    .unwrap();
    let (r, sink) = decode(&out);
    let read = r.unwrap();
    assert_eq!(read, written);
    assert_eq!(read.os_version, "2.1.0-rc1");
    assert_eq!(read.created.as_deref(), Some("2026-11-26T07:00:00Z"));
    let expected: Vec<Event> = PayloadName::ALL
        .iter()
        .zip(&p)
        .flat_map(|(n, d)| [Event::Begin(*n), Event::Data(*n, d.clone()), Event::End(*n)])
        .collect();
    assert_eq!(sink.events, expected);
    assert_eq!(
        verify_reader(&out[..], trusted(&[&key()]), Limits::default()).unwrap(),
        written
    );
    // Total length is known from the manifest.
    let mut d = Decoder::new(trusted(&[&key()]), Limits::default());
    d.push(&out[..header_len(&read)], &mut DiscardSink).unwrap();
    assert_eq!(d.total_len(), Some(out.len() as u64));
    assert_eq!(d.signer(), Some(key().key_id().as_str()));
}

#[test]
fn the_decoder_can_move_between_threads() {
    // init drives it from an async task or a blocking thread.
    fn is_send<T: Send + 'static>() {}
    is_send::<Decoder>();
    is_send::<BundleError>();
}

#[test]
fn the_manifest_is_verified_before_any_payload_byte_reaches_the_sink() {
    let (b, m, _) = good_bundle();
    let h = header_len(&m);
    let mut d = Decoder::new(trusted(&[&key()]), Limits::default());
    let mut sink = Recorder::default();
    d.push(&b[..h - 1], &mut sink).unwrap();
    assert!(d.manifest().is_none());
    assert!(sink.events.is_empty());
    d.push(&b[h - 1..h], &mut sink).unwrap();
    assert_eq!(d.manifest(), Some(&m));
    assert_eq!(sink.events, vec![Event::Begin(PayloadName::Kernel)]);

    // Signed by someone else: refused, and the sink never hears of it.
    let p = payloads();
    let forged = assemble(&other_key(), &m.to_canonical_json(), &p);
    let (r, sink) = decode(&forged);
    match r.unwrap_err() {
        BundleError::UntrustedSigner { signer, trusted } => {
            assert_eq!(signer, other_key().key_id());
            assert_eq!(trusted, vec![key().key_id()]);
        }
        e => panic!("{e}"),
    }
    assert!(sink.events.is_empty());
}

#[test]
fn the_sink_can_refuse_a_verified_manifest_before_any_payload() {
    struct TooOld(Recorder, Option<String>);
    impl PayloadSink for TooOld {
        fn verified(&mut self, m: &Manifest, signer: &str) -> Result<(), BundleError> {
            self.1 = Some(signer.to_owned());
            m.check_upgrade_from("0.9")
        }
        fn begin(&mut self, p: &PayloadInfo) -> std::io::Result<()> {
            self.0.begin(p)
        }
        fn data(&mut self, p: &PayloadInfo, b: &[u8]) -> std::io::Result<()> {
            self.0.data(p, b)
        }
        fn end(&mut self, p: &PayloadInfo) -> std::io::Result<()> {
            self.0.end(p)
        }
        fn abort(&mut self, p: &PayloadInfo, r: &BundleError) {
            self.0.abort(p, r)
        }
    }
    let (b, _, _) = good_bundle();
    let mut sink = TooOld(Recorder::default(), None);
    let mut d = Decoder::new(trusted(&[&key()]), Limits::default());
    let e = d.push(&b, &mut sink).unwrap_err();
    assert!(
        matches!(&e, BundleError::UpgradeFromTooOld { running, min } if running == "0.9" && min == "1.0"),
        "{e}"
    );
    assert_eq!(sink.1, Some(key().key_id()));
    assert!(sink.0.events.is_empty(), "{:?}", sink.0.events);
}

#[test]
fn a_bundle_from_any_of_several_trusted_keys_is_accepted() {
    let (b, m, _) = good_bundle();
    let keys = trusted(&[&other_key(), &key()]);
    let (r, _) = decode_chunked(&b, &[], keys, Limits::default());
    assert_eq!(r.unwrap(), m);
}

#[test]
fn no_trusted_key_refuses_everything() {
    let (b, _, _) = good_bundle();
    let (r, sink) = decode_chunked(&b, &[], TrustedKeys::default(), Limits::default());
    assert!(matches!(r.unwrap_err(), BundleError::NoTrustedKeys));
    assert!(sink.events.is_empty());
}

#[test]
fn a_zeroed_or_altered_signature_is_refused() {
    let (b, m, _) = good_bundle();
    let sig_at = 16 + m.to_canonical_json().len() + 32;
    let mut zeroed = b.clone();
    zeroed[sig_at..sig_at + 64].fill(0);
    let (r, sink) = decode(&zeroed);
    match r.unwrap_err() {
        BundleError::SignatureInvalid { signer, offset } => {
            assert_eq!(signer, key().key_id());
            assert_eq!(offset, sig_at as u64);
        }
        e => panic!("{e}"),
    }
    assert!(sink.events.is_empty());

    // A manifest byte changed after signing (a size digit: 300 -> 900).
    let json = m.to_canonical_json();
    let pos = json.windows(10).position(|w| w == b"\"size\":300").unwrap() + 7;
    let mut tampered = b.clone();
    tampered[16 + pos] = b'9';
    let (r, _) = decode(&tampered);
    assert!(matches!(
        r.unwrap_err(),
        BundleError::SignatureInvalid { .. }
    ));

    // Zeroed signer field: an unknown key.
    let mut no_signer = b;
    no_signer[sig_at - 32..sig_at].fill(0);
    let (r, _) = decode(&no_signer);
    assert!(matches!(
        r.unwrap_err(),
        BundleError::UntrustedSigner { .. }
    ));
}

#[test]
fn bad_magic_version_and_manifest_length_are_refused_at_their_offset() {
    let (b, _, _) = good_bundle();
    let mut bad = b.clone();
    bad[0] = b'X';
    let (r, _) = decode(&bad);
    assert!(matches!(r.unwrap_err(), BundleError::BadMagic { found } if &found == b"XEELSONB"));

    let mut bad = b.clone();
    bad[8..12].copy_from_slice(&2u32.to_le_bytes());
    let (r, _) = decode(&bad);
    assert!(matches!(
        r.unwrap_err(),
        BundleError::UnsupportedFormat {
            found: 2,
            supported: 1
        }
    ));

    for len in [0u32, 64 * 1024 + 1, u32::MAX] {
        let mut bad = b.clone();
        bad[12..16].copy_from_slice(&len.to_le_bytes());
        let (r, _) = decode(&bad);
        assert!(
            matches!(r.unwrap_err(), BundleError::ManifestLength { len: l, max: 65536 } if l == len),
            "{len}"
        );
    }
    // The writer refuses to sign a manifest over the bound.
    let big = vec![b' '; 64 * 1024 + 1];
    assert!(matches!(
        encode_header(&key(), &big).unwrap_err(),
        BundleError::ManifestLength { .. }
    ));
}

/// A bundle whose (signed) manifest is `json`, with the usual payloads.
fn signed_json(json: &str) -> Result<Manifest, BundleError> {
    decode(&assemble(&key(), json.as_bytes(), &payloads())).0
}

fn entry(name: &str, data: &[u8]) -> String {
    format!(
        r#"{{"name":"{name}","size":{},"sha256":"{}"}}"#,
        data.len(),
        hex::encode(Sha256::digest(data))
    )
}

fn with_entries(entries: &[String]) -> String {
    format!(
        r#"{{"format_version":1,"os_version":"2.0.0","build_id":"b","payloads":[{}]}}"#,
        entries.join(",")
    )
}

#[test]
fn malformed_manifests_are_refused_precisely() {
    let p = payloads();
    let [k, i, r] = [
        entry("kernel", &p[0]),
        entry("initramfs", &p[1]),
        entry("rootfs", &p[2]),
    ];
    // The reference: canonical and valid.
    assert!(signed_json(&with_entries(&[k.clone(), i.clone(), r.clone()])).is_ok());

    match signed_json("{\"format_version\":1,\n \"os_version\":").unwrap_err() {
        BundleError::ManifestJson { line, column, .. } => {
            assert_eq!((line, column), (2, 14));
        }
        e => panic!("{e}"),
    }
    let unknown = with_entries(&[k.clone(), i.clone(), r.clone()])
        .replace("\"build_id\"", "\"colour\":\"red\",\"build_id\"");
    match signed_json(&unknown).unwrap_err() {
        BundleError::ManifestJson { message, line, .. } => {
            assert!(message.contains("unknown field `colour`"), "{message}");
            assert_eq!(line, 1);
        }
        e => panic!("{e}"),
    }
    let spaced = with_entries(&[k.clone(), i.clone(), r.clone()]).replace(",", ", ");
    assert!(matches!(
        signed_json(&spaced).unwrap_err(),
        BundleError::ManifestNotCanonical
    ));

    let cases: Vec<(Vec<String>, PayloadListProblem)> = vec![
        (
            vec![i.clone(), k.clone(), r.clone()],
            PayloadListProblem::OutOfOrder {
                index: 0,
                name: "initramfs".into(),
                expected: PayloadName::Kernel,
            },
        ),
        (
            vec![k.clone(), r.clone(), i.clone()],
            PayloadListProblem::OutOfOrder {
                index: 1,
                name: "rootfs".into(),
                expected: PayloadName::Initramfs,
            },
        ),
        (
            vec![k.clone(), k.clone(), r.clone()],
            PayloadListProblem::Duplicate {
                index: 1,
                name: "kernel".into(),
            },
        ),
        (
            vec![k.clone(), i.clone(), r.clone(), r.clone()],
            PayloadListProblem::Duplicate {
                index: 3,
                name: "rootfs".into(),
            },
        ),
        (
            vec![k.clone(), entry("dtb", b"x"), r.clone()],
            PayloadListProblem::Unknown {
                index: 1,
                name: "dtb".into(),
            },
        ),
        (
            vec![k.clone(), i.clone()],
            PayloadListProblem::Missing {
                names: vec![PayloadName::Rootfs],
            },
        ),
        (
            vec![],
            PayloadListProblem::Missing {
                names: PayloadName::ALL.to_vec(),
            },
        ),
    ];
    for (entries, problem) in cases {
        match signed_json(&with_entries(&entries)).unwrap_err() {
            BundleError::PayloadList(got) => assert_eq!(got, problem),
            e => panic!("{problem}: {e}"),
        }
    }

    let bad_hash = with_entries(&[
        k.clone().replace("\"sha256\":\"", "\"sha256\":\"Z"),
        i.clone(),
        r.clone(),
    ]);
    assert!(matches!(
        signed_json(&bad_hash).unwrap_err(),
        BundleError::ManifestInvalid { field, .. } if field == "payloads[0].sha256"
    ));
    let bad_version = with_entries(&[k.clone(), i.clone(), r.clone()]).replace("2.0.0", "two");
    assert!(matches!(
        signed_json(&bad_version).unwrap_err(),
        BundleError::BadVersion { value, .. } if value == "two"
    ));
    let bad_format =
        with_entries(&[k, i, r]).replace("\"format_version\":1", "\"format_version\":2");
    assert!(matches!(
        signed_json(&bad_format).unwrap_err(),
        BundleError::ManifestInvalid { field, .. } if field == "format_version"
    ));
}

#[test]
fn a_declared_size_over_the_limit_is_refused_before_any_payload() {
    let (b, _, p) = good_bundle();
    let limits = Limits {
        kernel: 1 << 20,
        initramfs: 999,
        rootfs: 1 << 20,
    };
    let (r, sink) = decode_chunked(&b, &[], trusted(&[&key()]), limits);
    match r.unwrap_err() {
        BundleError::PayloadTooLarge { part, size, max } => {
            assert_eq!(
                (part, size, max),
                (PayloadName::Initramfs, p[1].len() as u64, 999)
            );
        }
        e => panic!("{e}"),
    }
    assert!(sink.events.is_empty());
    // The default limits: a kernel of 64 MiB + 1 is refused without
    // sending 64 MiB.
    let json = with_entries(&[
        entry("kernel", &p[0]).replace("\"size\":300", &format!("\"size\":{}", (64 << 20) + 1)),
        entry("initramfs", &p[1]),
        entry("rootfs", &p[2]),
    ]);
    assert!(matches!(
        signed_json(&json).unwrap_err(),
        BundleError::PayloadTooLarge {
            part: PayloadName::Kernel,
            ..
        }
    ));
}

#[test]
fn a_flipped_payload_byte_is_a_hash_mismatch_naming_the_part_and_aborting_it() {
    let (b, m, p) = good_bundle();
    let h = header_len(&m);
    let starts = [h, h + p[0].len(), h + p[0].len() + p[1].len()];
    for (idx, part) in PayloadName::ALL.into_iter().enumerate() {
        let mut bad = b.clone();
        bad[starts[idx] + p[idx].len() / 2] ^= 0x01;
        let (r, sink) = decode(&bad);
        match r.unwrap_err() {
            BundleError::HashMismatch {
                part: got,
                expected,
                actual,
                offset,
            } => {
                assert_eq!(got, part);
                assert_eq!(expected, m.payload(part).sha256_hex());
                let mut flipped = p[idx].clone();
                flipped[p[idx].len() / 2] ^= 0x01;
                assert_eq!(actual, hex::encode(Sha256::digest(&flipped)));
                assert_eq!(offset, (starts[idx] + p[idx].len()) as u64);
            }
            e => panic!("{e}"),
        }
        // Earlier parts ended, this one aborted, later ones never begun.
        let last = sink.events.last().unwrap();
        assert!(matches!(last, Event::Abort(n, why) if *n == part && why.contains("sha256")));
        let ended: Vec<PayloadName> = sink
            .events
            .iter()
            .filter_map(|e| match e {
                Event::End(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(ended, PayloadName::ALL[..idx].to_vec());
    }
}

#[test]
fn truncation_at_every_region_boundary_names_the_region_and_the_missing_bytes() {
    let (b, m, p) = good_bundle();
    let n = m.to_canonical_json().len();
    let h = header_len(&m);
    let (k, i, r) = (p[0].len(), p[1].len(), p[2].len());
    let cases: Vec<(usize, Region, usize)> = vec![
        (0, Region::Header, 16),
        (8, Region::Header, 8),
        (15, Region::Header, 1),
        (16, Region::Manifest, n),
        (16 + n / 2, Region::Manifest, n - n / 2),
        (16 + n, Region::Signature, 96),
        (16 + n + 32, Region::Signature, 64),
        (h - 1, Region::Signature, 1),
        (h, Region::Payload(PayloadName::Kernel), k),
        (h + k - 1, Region::Payload(PayloadName::Kernel), 1),
        (h + k, Region::Payload(PayloadName::Initramfs), i),
        (h + k + i, Region::Payload(PayloadName::Rootfs), r),
        (h + k + i + r - 1, Region::Payload(PayloadName::Rootfs), 1),
    ];
    for (len, region, missing) in cases {
        let (res, sink) = decode(&b[..len]);
        match res.unwrap_err() {
            BundleError::Truncated {
                region: got,
                missing: m,
                offset,
            } => {
                assert_eq!(
                    (got, m, offset),
                    (region, missing as u64, len as u64),
                    "cut at {len}"
                );
            }
            e => panic!("cut at {len}: {e}"),
        }
        if let Region::Payload(part) = region {
            assert!(matches!(sink.events.last(), Some(Event::Abort(n, _)) if *n == part));
        } else {
            assert!(sink.events.is_empty());
        }
    }
    assert_eq!(decode(&b[..h + k + i + r]).0.unwrap(), m);
}

#[test]
fn a_byte_after_the_last_payload_is_refused() {
    let (mut b, _, _) = good_bundle();
    let len = b.len() as u64;
    b.push(0);
    let (r, sink) = decode(&b);
    assert!(matches!(r.unwrap_err(), BundleError::TrailingData { offset } if offset == len));
    // Every payload ended before the extra byte was seen: a node must wait
    // for finish() before trusting what it wrote.
    assert_eq!(sink.events.last(), Some(&Event::End(PayloadName::Rootfs)));
}

#[test]
fn the_decoder_stays_refused_after_an_error() {
    let (mut b, _, _) = good_bundle();
    b[0] = 0;
    let mut d = Decoder::new(trusted(&[&key()]), Limits::default());
    let first = d.push(&b[..20], &mut DiscardSink).unwrap_err();
    let again = d.push(&b[20..], &mut DiscardSink).unwrap_err();
    assert!(
        matches!(&again, BundleError::AlreadyFailed { previous } if *previous == first.to_string())
    );
    assert!(matches!(
        d.finish(&mut DiscardSink).unwrap_err(),
        BundleError::AlreadyFailed { .. }
    ));
}

#[test]
fn a_failing_sink_stops_the_decoder_and_is_told_to_abort() {
    let (b, _, _) = good_bundle();
    let mut sink = Recorder {
        fail_data_of: Some(PayloadName::Initramfs),
        ..Recorder::default()
    };
    let mut d = Decoder::new(trusted(&[&key()]), Limits::default());
    let e = d.push(&b, &mut sink).unwrap_err();
    assert!(
        matches!(&e, BundleError::Sink { part: PayloadName::Initramfs, source, .. } if source.to_string() == "disk full")
    );
    sink.assert_well_formed();
    assert!(matches!(
        sink.events.last(),
        Some(Event::Abort(PayloadName::Initramfs, _))
    ));
}

#[test]
fn the_writer_refuses_a_file_that_changed_between_its_two_passes() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = ["k", "i", "r"].iter().map(|n| dir.path().join(n)).collect();
    for (path, data) in paths.iter().zip(payloads()) {
        std::fs::write(path, data).unwrap();
    }
    let meta = BundleMeta {
        os_version: "1".into(),
        build_id: "x".into(),
        created: None,
        min_upgrade_from: None,
    };
    let prepared = prepare(&paths[0], &paths[1], &paths[2]).unwrap();
    let mut data = payloads()[1].clone();
    data[0] ^= 1;
    std::fs::write(&paths[1], &data).unwrap();
    let e = prepared.write(Vec::new(), &key(), &meta).unwrap_err();
    assert!(
        matches!(&e, BundleError::PayloadChanged { path, .. } if path.ends_with("/i")),
        "{e}"
    );
    data.push(0);
    std::fs::write(&paths[1], &data).unwrap();
    assert!(matches!(
        prepared.write(Vec::new(), &key(), &meta).unwrap_err(),
        BundleError::PayloadChanged { .. }
    ));
    // Bad metadata is refused before anything is written.
    let bad = BundleMeta {
        os_version: "v1".into(),
        ..meta
    };
    let mut out = Vec::new();
    assert!(matches!(
        prepare(&paths[0], &paths[1], &paths[2])
            .unwrap()
            .write(&mut out, &key(), &bad)
            .unwrap_err(),
        BundleError::BadVersion { .. }
    ));
    assert!(out.is_empty());
    // An empty payload file is refused too.
    std::fs::write(&paths[0], b"").unwrap();
    assert!(matches!(
        prepare(&paths[0], &paths[1], &paths[2])
            .unwrap()
            .manifest(&bad)
            .unwrap_err(),
        BundleError::ManifestInvalid { .. } | BundleError::BadVersion { .. }
    ));
}

/// How a test bundle is damaged before decoding.
#[derive(Clone, Debug)]
enum Damage {
    None,
    Flip(usize),
    Truncate(usize),
    Append(u8),
    Untrusted,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        any::<usize>().prop_map(Damage::Flip),
        any::<usize>().prop_map(Damage::Truncate),
        any::<u8>().prop_map(Damage::Append),
        Just(Damage::Untrusted),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Same result, same sink events, for every chunking of the input.
    #[test]
    fn the_outcome_does_not_depend_on_chunking(
        k in proptest::collection::vec(any::<u8>(), 1..200),
        i in proptest::collection::vec(any::<u8>(), 1..200),
        r in proptest::collection::vec(any::<u8>(), 1..600),
        dmg in damage(),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let p = [k, i, r];
        let m = manifest_for(&p, None);
        let signer = if matches!(dmg, Damage::Untrusted) { other_key() } else { key() };
        let mut b = assemble(&signer, &m.to_canonical_json(), &p);
        match dmg {
            Damage::Flip(at) => { let at = at % b.len(); b[at] ^= 0x80; }
            Damage::Truncate(at) => b.truncate(at % b.len()),
            Damage::Append(x) => b.push(x),
            Damage::None | Damage::Untrusted => {}
        }
        let cuts: Vec<usize> = cuts.into_iter().map(|c| c % (b.len() + 1)).collect();
        let (whole, whole_sink) = decode(&b);
        let (split, split_sink) =
            decode_chunked(&b, &cuts, trusted(&[&key()]), Limits::default());
        match (&whole, &split) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            _ => prop_assert!(false, "whole {:?} vs split {:?}", whole, split),
        }
        prop_assert_eq!(&whole_sink.events, &split_sink.events);
        if matches!(dmg, Damage::None) {
            prop_assert_eq!(whole.unwrap(), m);
        } else {
            prop_assert!(whole.is_err(), "damage {:?} accepted", dmg);
        }
    }
}
