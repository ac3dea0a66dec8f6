//! Fuzz target: arbitrary bytes through the bundle reader, pushed in
//! chunks whose sizes come from the input. The reader must never panic,
//! must give the same outcome and the same sink calls for one push as for
//! the chunked pushes, must pair every `begin` with one `end` or `abort`,
//! and must accept only bundles whose payloads match their manifest.
//!
//! Input: byte 0 picks the mode, byte 1 seeds the chunk sizes, the rest is
//! - mode 0: the bundle itself (the signature stops almost everything: this
//!   hunts bugs in the header and signature stages);
//! - mode 1: u16 LE manifest length, that many bytes of manifest JSON which
//!   the target signs with the trusted key, then the payload stream (this
//!   reaches the JSON parser, the manifest checks and the payload stages);
//! - mode 2: a valid bundle built from the input (payload sizes and bytes,
//!   version strings), then one optional mutation (flip, truncate, append).
#![no_main]

use std::sync::OnceLock;

use bundle::{
    encode_header, BundleError, Decoder, Limits, Manifest, PayloadInfo, PayloadName, PayloadSink,
    SigningKey, TrustedKeys, FORMAT_VERSION,
};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn key() -> &'static (SigningKey, TrustedKeys) {
    static KEY: OnceLock<(SigningKey, TrustedKeys)> = OnceLock::new();
    KEY.get_or_init(|| {
        let k = SigningKey::from_seed([7; 32]);
        let t = TrustedKeys::from_base64(&[k.public_base64()]).expect("a valid key");
        (k, t)
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Begin(PayloadName),
    Data(PayloadName, Vec<u8>),
    End(PayloadName),
    Abort(PayloadName),
}

#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
}

impl PayloadSink for Recorder {
    fn begin(&mut self, part: &PayloadInfo) -> std::io::Result<()> {
        self.events.push(Event::Begin(part.name));
        Ok(())
    }
    fn data(&mut self, part: &PayloadInfo, bytes: &[u8]) -> std::io::Result<()> {
        assert!(!bytes.is_empty(), "empty data callback");
        match self.events.last_mut() {
            Some(Event::Data(n, buf)) if *n == part.name => buf.extend_from_slice(bytes),
            _ => self.events.push(Event::Data(part.name, bytes.to_vec())),
        }
        Ok(())
    }
    fn end(&mut self, part: &PayloadInfo) -> std::io::Result<()> {
        self.events.push(Event::End(part.name));
        Ok(())
    }
    fn abort(&mut self, part: &PayloadInfo, _: &BundleError) {
        self.events.push(Event::Abort(part.name));
    }
}

fn decode(bytes: &[u8], seed: u8) -> (Result<Manifest, String>, Recorder) {
    let mut sink = Recorder::default();
    let mut d = Decoder::new(key().1.clone(), Limits::default());
    let mut rest = bytes;
    let mut state = u32::from(seed) | 1;
    let mut result = Ok(());
    while !rest.is_empty() {
        // seed 0: one push; otherwise sizes 0..=4*seed, varying.
        let n = if seed == 0 {
            rest.len()
        } else {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % (4 * u32::from(seed) + 1)) as usize
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        if let Err(e) = d.push(chunk, &mut sink) {
            result = Err(e.to_string());
            break;
        }
    }
    let result = match result {
        Ok(()) => d.finish(&mut sink).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    (result, sink)
}

fn check(bytes: &[u8], seed: u8) -> Result<Manifest, String> {
    let (whole, whole_sink) = decode(bytes, 0);
    let (split, split_sink) = decode(bytes, seed);
    assert_eq!(whole, split, "the outcome depends on chunking");
    assert_eq!(
        whole_sink.events, split_sink.events,
        "sink calls depend on chunking"
    );
    let mut open = None;
    for e in &whole_sink.events {
        match e {
            Event::Begin(p) => {
                assert!(open.is_none());
                open = Some(*p);
            }
            Event::Data(p, _) => assert_eq!(open, Some(*p)),
            Event::End(p) | Event::Abort(p) => {
                assert_eq!(open, Some(*p));
                open = None;
            }
        }
    }
    assert!(open.is_none(), "a payload was neither ended nor aborted");
    if let Ok(m) = &whole {
        for p in &m.payloads {
            let data: Vec<u8> = whole_sink
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Data(n, d) if *n == p.name => Some(d.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(data.len() as u64, p.size);
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&data)), p.sha256);
        }
    }
    whole
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = input.split_at(n.min(input.len()));
    *input = b;
    a
}

fn version(bytes: &[u8]) -> String {
    // Mostly valid versions, sometimes not.
    bytes
        .iter()
        .map(|b| match b % 13 {
            10 => '.',
            11 => '-',
            12 => 'r',
            d => char::from(b'0' + d),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [mode, seed, rest @ ..] = data else {
        return;
    };
    let mut input = rest;
    match mode % 3 {
        0 => {
            let _ = check(input, *seed);
        }
        1 => {
            let len = take(&mut input, 2);
            let len = usize::from(u16::from_le_bytes([
                len.first().copied().unwrap_or(0),
                len.get(1).copied().unwrap_or(0),
            ]));
            let json = take(&mut input, len);
            let Ok(mut bundle) = encode_header(&key().0, json) else {
                return;
            };
            bundle.extend_from_slice(input);
            let _ = check(&bundle, *seed);
        }
        _ => {
            let head = take(&mut input, 8);
            let h = |i: usize| head.get(i).copied().unwrap_or(1);
            let sizes = [h(0), h(1), h(2)].map(|s| usize::from(s % 64) + 1);
            let os_version = version(take(&mut input, usize::from(h(3) % 6) + 1));
            let min = (h(4) & 1 == 1).then(|| version(take(&mut input, usize::from(h(4) % 5) + 1)));
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&n| {
                    let mut p = take(&mut input, n).to_vec();
                    p.resize(n, 0xa5);
                    p
                })
                .collect();
            let manifest = Manifest {
                format_version: FORMAT_VERSION,
                os_version,
                build_id: "fuzz".into(),
                created: None,
                min_upgrade_from: min,
                payloads: [0, 1, 2].map(|i| PayloadInfo {
                    name: PayloadName::ALL[i],
                    size: sizes[i] as u64,
                    sha256: Sha256::digest(&payloads[i]).into(),
                }),
            };
            let valid = manifest.validate(&Limits::default()).is_ok();
            let Ok(mut bundle) = encode_header(&key().0, &manifest.to_canonical_json()) else {
                return;
            };
            for p in &payloads {
                bundle.extend_from_slice(p);
            }
            let at = usize::from(h(6)) * 256 + usize::from(h(7));
            let mutated = match h(5) % 4 {
                0 => false,
                1 => {
                    let i = at % bundle.len();
                    bundle[i] ^= 0x10;
                    true
                }
                2 => {
                    bundle.truncate(at % bundle.len());
                    true
                }
                _ => {
                    bundle.push(h(6));
                    true
                }
            };
            let r = check(&bundle, *seed);
            if !mutated {
                assert_eq!(r.is_ok(), valid, "{r:?}");
                if let Ok(m) = r {
                    assert_eq!(m, manifest);
                }
            } else {
                assert!(r.is_err(), "a mutated bundle was accepted");
            }
        }
    }
});
