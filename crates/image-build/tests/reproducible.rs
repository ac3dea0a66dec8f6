//! Same inputs, same bytes: builds the disk image twice into two fresh
//! directories and compares them, naming the partition that differs.
//!
//! Needs the node binaries (`make node-binaries`, or KEELSON_NODE_BIN) and
//! the Kubernetes build (`make kube`, or KEELSON_KUBERNETES_DIR). Slow (two
//! full image builds): run with
//! `cargo test --release -p image-build --test reproducible -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn input(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(default))
}

fn build(out: &Path, node_bin: &Path, kube: &Path, config: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_image-build"))
        .arg("disk")
        .arg("--out")
        .arg(out)
        .arg("--node-bin")
        .arg(node_bin)
        .arg("--kubernetes")
        .arg(kube)
        .arg("--config")
        .arg(config)
        .args(["--seed", "reproducible-test", "--version", "0.0.0-test"])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "image-build disk failed for {}",
        out.display()
    );
}

fn sha256_range(path: &Path, start: u64, len: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut h = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = buf.len().min(left as usize);
        f.read_exact(&mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n as u64;
    }
    hex::encode(h.finalize())
}

#[test]
#[ignore = "two full image builds; needs node binaries and the Kubernetes build"]
fn two_builds_from_the_same_inputs_are_byte_identical() {
    let node_bin = input(
        "KEELSON_NODE_BIN",
        "target/x86_64-unknown-linux-gnu/release",
    );
    let kube = input("KEELSON_KUBERNETES_DIR", "out/kubernetes");
    let config = workspace().join("examples/node.yaml");
    assert!(
        node_bin.join("init").is_file(),
        "no {}/init: run make node-binaries",
        node_bin.display()
    );
    assert!(
        kube.join("bin/kubelet").is_file(),
        "no {}/bin/kubelet: run make kube",
        kube.display()
    );

    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build(a.path(), &node_bin, &kube, &config);
    build(b.path(), &node_bin, &kube, &config);

    let raw_a = a.path().join("keelson.raw");
    let raw_b = b.path().join("keelson.raw");
    let len = std::fs::metadata(&raw_a).unwrap().len();
    assert_eq!(len, std::fs::metadata(&raw_b).unwrap().len());
    let whole_a = sha256_range(&raw_a, 0, len);
    let whole_b = sha256_range(&raw_b, 0, len);
    if whole_a != whole_b {
        let mut f = std::fs::File::open(&raw_a).unwrap();
        let gpt = gptman::GPT::find_from(&mut f).unwrap();
        let mut differing = Vec::new();
        for (_, p) in gpt.iter().filter(|(_, p)| p.is_used()) {
            let start = p.starting_lba * 512;
            let plen = (p.ending_lba - p.starting_lba + 1) * 512;
            if sha256_range(&raw_a, start, plen) != sha256_range(&raw_b, start, plen) {
                differing.push(p.partition_name.as_str().to_string());
            }
        }
        panic!("keelson.raw differs between two builds: partitions {differing:?} (or the GPT itself if empty)");
    }
    for f in ["boot/initramfs.img", "boot/vmlinuz", "version.json"] {
        let x = std::fs::read(a.path().join(f)).unwrap();
        let y = std::fs::read(b.path().join(f)).unwrap();
        assert!(x == y, "{f} differs between two builds");
    }
    eprintln!("reproducible: keelson.raw sha256 {whole_a} ({len} bytes) in both builds");
}
