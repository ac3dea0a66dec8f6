//! The upgrade benchmark (issue 7), `bench upgrade --out FILE`: a v1 node
//! booted as a user boots it (OVMF, GRUB, slot A) is upgraded to the second
//! image (`make image-v2`) with a bundle signed by the operator's key.
//!
//! - Baseline, in the same VM just before: a privileged busybox pod runs
//!   `dd if=/dev/zero of=/dev/vda3 bs=1M count=N conv=fsync` (SYSTEM-B, the
//!   partition the upgrade then writes), N the bundle's size in MiB, timed
//!   by the guest's /proc/uptime: the raw write speed of that partition
//!   with nothing else in the path.
//! - The upgrade: `nodectl upgrade -f` (upload through the forwarded API
//!   port, mTLS, apid, init's verify-while-writing), init's own
//!   `upgrade written bytes= took_ms=` gives the node's throughput; the
//!   ratio to dd is the cost of receiving, verifying and hashing.
//! - Timed from the command's start: its return (written, reboot asked),
//!   `node ready slot=B`, and `upgrade committed` (after
//!   `upgrade.healthyAfter`, set to [`HEALTHY_AFTER`] here).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bundle::{BundleMeta, SigningKey};
use keelson_tests::artifacts;
use keelson_tests::nodectl::{Nodectl, Operator};
use keelson_tests::scenario::{markers, Cluster};
use regex::Regex;

const NODE: &str = "keelson-bench-upgrade";
/// The health gate of the benchmark's config.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// SYSTEM-B on the virtio disk (GPT: EFI, SYSTEM-A, SYSTEM-B, STATE, VAR).
const SYSTEM_B: &str = "/dev/vda3";
/// Where the dd pod leaves dd's report (a hostPath under /var/log, which
/// `nodectl read` may read).
const DD_DIR: &str = "/var/log/keelson-bench";

/// What one upgrade measured.
pub struct UpgradeRun {
    /// The bundle's size.
    pub bundle_bytes: u64,
    /// dd: bytes written.
    pub dd_bytes: u64,
    /// dd's time by the guest's clock (/proc/uptime around it).
    pub dd_secs: f64,
    /// init's `upgrade written ... bytes=`.
    pub written_bytes: u64,
    /// init's `upgrade written ... took_ms=`.
    pub written_ms: u64,
    /// Command start → `nodectl upgrade` returned.
    pub command: Duration,
    /// Command start → `node ready slot=B`.
    pub ready_on_b: Duration,
    /// Command start → `upgrade committed`.
    pub committed: Duration,
    /// The v1 and v2 version strings.
    pub versions: (String, String),
}

impl UpgradeRun {
    fn dd_mb_s(&self) -> f64 {
        self.dd_bytes as f64 / 1e6 / self.dd_secs.max(1e-9)
    }

    fn node_mb_s(&self) -> f64 {
        self.written_bytes as f64 / 1e6 / (self.written_ms.max(1) as f64 / 1000.0)
    }
}

/// `bench upgrade --out FILE`.
pub fn main(args: &[String]) -> Result<()> {
    let out = match args {
        [flag, file] if flag == "--out" => PathBuf::from(file),
        _ => bail!("usage: bench upgrade --out FILE"),
    };
    let run = measure()?;
    let mut md = String::new();
    render(&mut md, &run)?;
    std::fs::write(&out, md).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn measure() -> Result<UpgradeRun> {
    let relay = artifacts::relay_binary()?;
    let v2 = artifacts::v2_boot_dir()?;
    let host = tempfile::Builder::new()
        .prefix("keelson-bench-upgrade-")
        .tempdir()?;
    let op = Operator::new(&host.path().join("secrets"))?;
    let certificates = op.node_certificates(NODE)?;
    let key = SigningKey::from_file(&op.secrets.join("upgrade-signing.key"))
        .context("the upgrade signing key from nodectl gen secrets")?;
    let mut cluster = Cluster::start_with(NODE, &relay, |cfg| {
        cfg.machine.certificates = Some(certificates.clone());
        cfg.machine.trusted_upgrade_keys = vec![key.public_base64()];
        cfg.upgrade.healthy_after = machine_config::Duration(HEALTHY_AFTER);
    })?;
    eprintln!(
        "upgrade bench: booting v1 ({})",
        cluster.work_dir().display()
    );
    cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(420))?;
    let nodectl = Nodectl {
        bin: op.bin.clone(),
        endpoint: format!("127.0.0.1:{}", cluster.machine_api_port),
    };
    let admin = op.contexts(host.path(), "admin", "admin", &nodectl.endpoint)?;
    let v1 = version(&nodectl, &admin)?;

    let v2_version = std::fs::read_to_string(v2.join("../version.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "0.2.0-upgrade-test".into());
    let bundle_path = host.path().join("v2.bundle");
    bundle::write_bundle(
        std::io::BufWriter::new(std::fs::File::create(&bundle_path)?),
        &key,
        &BundleMeta {
            os_version: v2_version.clone(),
            build_id: "upgrade-bench".into(),
            created: None,
            min_upgrade_from: None,
        },
        &v2.join("vmlinuz"),
        &v2.join("initramfs.img"),
        &v2.join("rootfs.squashfs"),
    )
    .context("signing the v2 bundle")?;
    let bundle_bytes = std::fs::metadata(&bundle_path)?.len();

    // The baseline: dd of as many MiB onto SYSTEM-B, in a pod.
    let count = bundle_bytes.div_ceil(1 << 20);
    cluster.cp.create(&dd_pod_yaml(count))?;
    eprintln!("upgrade bench: dd of {count} MiB to {SYSTEM_B} ...");
    let report = wait_for_dd(&nodectl, &admin)?;
    let (dd_bytes, dd_secs) = parse_dd(&report)?;
    eprintln!("upgrade bench: dd wrote {dd_bytes} bytes in {dd_secs} s");

    eprintln!("upgrade bench: nodectl upgrade -f ({bundle_bytes} bytes) ...");
    let start = Instant::now();
    let r = nodectl.run(
        Some(&admin),
        &["upgrade", "-f", &bundle_path.to_string_lossy()],
    );
    let command = start.elapsed();
    if r.code != 0 {
        bail!("nodectl upgrade failed: {r:?}");
    }
    let written = cluster.vm.wait_for_line(
        r"keelson: upgrade written slot=B version=\S+ bytes=(\d+) took_ms=(\d+)",
        Duration::from_secs(60),
    )?;
    let caps = Regex::new(r"bytes=(\d+) took_ms=(\d+)")?
        .captures(&written.text)
        .context("the upgrade written line")?;
    let written_bytes: u64 = caps[1].parse()?;
    let written_ms: u64 = caps[2].parse()?;
    let ready = cluster
        .vm
        .wait_for_line(r"keelson: node ready slot=B ", Duration::from_secs(600))?;
    let ready_on_b = start.elapsed();
    eprintln!("upgrade bench: {}", ready.text);
    cluster.vm.wait_for_line(
        r"keelson: upgrade committed slot=B",
        HEALTHY_AFTER + Duration::from_secs(300),
    )?;
    let committed = start.elapsed();
    let v2_seen = version(&nodectl, &admin)?;
    if v2_seen != v2_version {
        bail!("the node runs {v2_seen:?} after the upgrade, not {v2_version:?}");
    }
    Ok(UpgradeRun {
        bundle_bytes,
        dd_bytes,
        dd_secs,
        written_bytes,
        written_ms,
        command,
        ready_on_b,
        committed,
        versions: (v1, v2_version),
    })
}

/// `nodectl version`'s OS version.
fn version(nodectl: &Nodectl, admin: &Path) -> Result<String> {
    let text = nodectl.eventually(admin, &["version", "-o", "json"], Duration::from_secs(120));
    let v: serde_json::Value = serde_json::from_str(&text).context("nodectl version -o json")?;
    Ok(v["osVersion"].as_str().unwrap_or_default().to_string())
}

/// A privileged busybox pod that writes `count` MiB of zeros to SYSTEM-B
/// and leaves dd's report under [`DD_DIR`].
fn dd_pod_yaml(count: u64) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: dd
  namespace: default
spec:
  nodeName: {NODE}
  automountServiceAccountToken: false
  restartPolicy: Never
  volumes:
  - name: out
    hostPath:
      path: {DD_DIR}
      type: DirectoryOrCreate
  containers:
  - name: dd
    image: keelson.local/busybox:1
    imagePullPolicy: Never
    securityContext:
      privileged: true
    volumeMounts:
    - name: out
      mountPath: /out
    command: ["/bin/sh", "-c", "s=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero of={SYSTEM_B} bs=1M count={count} conv=fsync 2> /out/dd.tmp; e=$(cut -d' ' -f1 /proc/uptime); echo uptime $s $e >> /out/dd.tmp; mv /out/dd.tmp /out/dd.txt"]
"#
    )
}

/// Waits until the dd pod has left its report and returns it.
fn wait_for_dd(nodectl: &Nodectl, admin: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let path = format!("{DD_DIR}/dd.txt");
    loop {
        let r = nodectl.run(Some(admin), &["read", &path]);
        if r.code == 0 && !r.stdout.is_empty() {
            return Ok(r.stdout);
        }
        if Instant::now() > deadline {
            bail!("no {path} after 600 s: {r:?}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The dd pod's report: busybox dd's `N+P records out` (1 MiB records;
/// this busybox prints no byte count or time) and the guest's uptime
/// before and after (`uptime START END`, from /proc/uptime) → (bytes,
/// seconds).
fn parse_dd(report: &str) -> Result<(u64, f64)> {
    let records = Regex::new(r"(\d+)\+(\d+) records out")?;
    let uptime = Regex::new(r"uptime ([\d.]+) ([\d.]+)")?;
    let (Some(r), Some(u)) = (records.captures(report), uptime.captures(report)) else {
        bail!("dd's report: {report:?}");
    };
    let full: u64 = r[1].parse()?;
    let partial: u64 = r[2].parse()?;
    if partial != 0 {
        bail!("dd wrote a partial record (the partition is smaller than the bundle?): {report:?}");
    }
    let (start, end): (f64, f64) = (u[1].parse()?, u[2].parse()?);
    Ok((full << 20, end - start))
}

/// The section of `bench/results.md`.
pub fn render(md: &mut String, run: &UpgradeRun) -> Result<()> {
    writeln!(md, "## A/B upgrade on the node (issue 7)\n")?;
    writeln!(md, "One node booted through OVMF and GRUB (slot A, {}), upgraded to {} with `nodectl upgrade -f` of a {} bundle (kernel, initramfs, rootfs squashfs). Just before, in the same VM, a privileged pod wrote as many MiB of zeros to SYSTEM-B, the partition the upgrade then writes, with `dd bs=1M conv=fsync`. The node's figure is init's own `upgrade written bytes= took_ms=`: from the first byte received to the last payload verified and synced, with the upload (mTLS through the forwarded port, apid, init) in the path. `upgrade.healthyAfter` is {} s here (default 60).\n",
        run.versions.0, run.versions.1, crate::mib(run.bundle_bytes), HEALTHY_AFTER.as_secs())?;
    writeln!(
        md,
        "| what | bytes | seconds | MB/s |\n|---|---:|---:|---:|"
    )?;
    writeln!(
        md,
        "| `dd` of zeros to SYSTEM-B | {} | {:.1} | {:.1} |",
        run.dd_bytes,
        run.dd_secs,
        run.dd_mb_s()
    )?;
    writeln!(
        md,
        "| upgrade: receive, verify, write, sync | {} | {:.1} | {:.1} |",
        run.written_bytes,
        run.written_ms as f64 / 1000.0,
        run.node_mb_s()
    )?;
    writeln!(
        md,
        "\nRatio upgrade / dd: **{:.2}**. The disk is not what limits the upgrade: the difference is work on the guest's emulated CPU (TLS, HTTP/2 and gRPC in apid and init, SHA-256 of every byte) and user-mode networking; the same decoder runs at ~1.5 GB/s on the host (below).\n",
        run.node_mb_s() / run.dd_mb_s().max(1e-9)
    )?;
    writeln!(
        md,
        "| from `nodectl upgrade -f` starting to | seconds |\n|---|---:|"
    )?;
    writeln!(
        md,
        "| the command's return (written, trial set, reboot asked) | {:.1} |",
        run.command.as_secs_f64()
    )?;
    writeln!(
        md,
        "| `keelson: node ready slot=B` (ordered shutdown, GRUB, trial boot) | {:.1} |",
        run.ready_on_b.as_secs_f64()
    )?;
    writeln!(
        md,
        "| `keelson: upgrade committed slot=B` (healthy for {} s) | {:.1} |",
        HEALTHY_AFTER.as_secs(),
        run.committed.as_secs_f64()
    )?;
    writeln!(md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn busybox_dd_reports_are_read() {
        let report = "109+0 records in\n109+0 records out\nuptime 95.12 137.62\n";
        let (bytes, secs) = parse_dd(report).unwrap();
        assert_eq!(bytes, 109 << 20);
        assert!((secs - 42.5).abs() < 1e-9, "{secs}");
        assert!(parse_dd("dd: can't open '/dev/vda3': No such file").is_err());
        assert!(parse_dd("109+0 records in\n109+0 records out\n").is_err());
    }
}
