//! Decoder throughput on a synthetic bundle held in memory (default
//! 256 MiB: kernel 16, initramfs 48, rootfs 192), pushed in 64 KiB and
//! 1 MiB chunks into a sink that drops the bytes, against plain SHA-256 of
//! the same payload bytes (the floor: the decoder hashes every byte once).
//! Prints a Markdown table for bench/results.md.
//!
//! `cargo run --release -p bundle --example throughput [-- MIB [RUNS]]`

use std::time::Instant;

use bundle::{
    encode_header, Decoder, DiscardSink, Limits, Manifest, PayloadInfo, PayloadName, SigningKey,
    TrustedKeys, FORMAT_VERSION,
};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    if mib < 4 {
        return Err("the bundle must be at least 4 MiB".into());
    }
    let sizes = [mib / 16, mib * 3 / 16, mib - mib / 16 - mib * 3 / 16].map(|m| m << 20);

    // Pseudo-random payloads (xorshift), so nothing compresses or repeats.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| {
            let mut v = Vec::with_capacity(n as usize);
            while (v.len() as u64) < n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                v.extend_from_slice(&state.to_le_bytes());
            }
            v.truncate(n as usize);
            v
        })
        .collect();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        os_version: "1.0.0".into(),
        build_id: "throughput".into(),
        created: None,
        min_upgrade_from: None,
        payloads: [0, 1, 2].map(|i| PayloadInfo {
            name: PayloadName::ALL[i],
            size: sizes[i],
            sha256: Sha256::digest(&payloads[i]).into(),
        }),
    };
    let key = SigningKey::from_seed([1; 32]);
    let mut bundle = encode_header(&key, &manifest.to_canonical_json())?;
    for p in &payloads {
        bundle.extend_from_slice(p);
    }
    drop(payloads);
    let trusted = TrustedKeys::from_base64(&[key.public_base64()])?;
    let limits = Limits {
        kernel: u64::MAX,
        initramfs: u64::MAX,
        rootfs: u64::MAX,
    };
    let total = bundle.len() as f64;

    let best = |f: &dyn Fn() -> Result<(), Box<dyn std::error::Error>>| {
        let mut best = f64::MAX;
        for _ in 0..runs {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok::<f64, Box<dyn std::error::Error>>(best)
    };
    let sha = best(&|| {
        std::hint::black_box(Sha256::digest(
            &bundle[bundle.len() - sizes.iter().sum::<u64>() as usize..],
        ));
        Ok(())
    })?;
    println!("| bundle decoder ({mib} MiB, best of {runs}, release) | MB/s |");
    println!("|---|---|");
    println!(
        "| plain SHA-256 of the payloads | {:.0} |",
        total / sha / 1e6
    );
    for chunk in [64 << 10, 1 << 20] {
        let secs = best(&|| {
            let mut d = Decoder::new(trusted.clone(), limits);
            for c in bundle.chunks(chunk) {
                d.push(c, &mut DiscardSink)?;
            }
            d.finish(&mut DiscardSink)?;
            Ok(())
        })?;
        println!(
            "| Decoder::push, {} KiB chunks, verify + hash | {:.0} |",
            chunk >> 10,
            total / secs / 1e6
        );
    }
    Ok(())
}
