//! The install benchmark (issue 8), `bench install --out FILE [--runs N]`:
//! the boot ISO's size and the time from power-on to a node installed
//! from it and running.
//!
//! - Sizes: the ISO (`out/keelson-VERSION.iso`, apparent size), and from
//!   its `keelson/media.json` (extracted with `xorriso`) the root squashfs
//!   and the ESP payload an install writes.
//! - Per run (default 2, each next to a fresh control plane): OVMF boots
//!   the ISO from a CD drive (AHCI) with one blank sparse 4 GiB raw disk
//!   attached (serial `keelson-target`) and nothing else. Timed from
//!   QEMU's first start (power-on): `keelson: media root ok` (stage 1
//!   copied the root off the CD and checked it; its own `took_ms=` too),
//!   the maintenance marker (apid up, its fingerprint on the console),
//!   `nodectl apply-config --insecure --fingerprint` of the test config
//!   with `machine.install.disk` naming the target by
//!   `/dev/disk/by-id/virtio-keelson-target` (retried until apid answers)
//!   and its return, `keelson: install done ... took_ms=` (the node's own
//!   write time; the bytes are the `total=` of the install phase lines),
//!   then, after the reboot with the CD ejected, `keelson: node ready
//!   slot=A` from the disk and node `Ready` in the API server (polled on
//!   its own thread, as in the boot benchmark): power-on to installed and
//!   running. The power button ends each run.
//!
//! `KEELSON_KEEP_WORK=1` keeps each run's work directory (console log,
//! control plane logs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keelson_tests::artifacts;
use keelson_tests::nodectl::{Nodectl, Operator, Run};
use keelson_tests::peer;
use keelson_tests::qemu::ExtraDisk;
use keelson_tests::scenario::{markers, Cluster};
use machine_config::schema::{DiskTarget, Install};
use regex::Regex;

use crate::{median, mib};

const NODE: &str = "keelson-bench-install";
/// The blank target disk's size.
const TARGET_SIZE: u64 = 4 << 30;
/// Its serial, and so its `/dev/disk/by-id` name on the node.
const TARGET_SERIAL: &str = "keelson-target";
const TARGET_BY_ID: &str = "/dev/disk/by-id/virtio-keelson-target";
/// The install's phases in the order init runs them.
const PHASES: &[&str] = &[
    "wipe",
    "system-a",
    "system-b",
    "esp",
    "state",
    "var",
    "partition-table",
];

/// The ISO and what its `keelson/media.json` lists.
pub struct IsoSizes {
    /// The ISO's file name.
    pub name: String,
    /// Its apparent size.
    pub iso_bytes: u64,
    /// The root squashfs.
    pub root_bytes: u64,
    /// The ESP payload: the sum of the `esp` files.
    pub esp_bytes: u64,
    /// The `esp` files' paths.
    pub esp_files: Vec<String>,
    /// The version the media holds.
    pub version: String,
}

/// What one run measured. Durations are from QEMU's first start.
pub struct InstallRun {
    /// `keelson: media root ok`.
    pub media_ok: Duration,
    /// Its `took_ms=` (stage 1's copy and check, guest clock).
    pub media_took_ms: u64,
    /// Its `bytes=`.
    pub media_bytes: u64,
    /// The maintenance marker.
    pub maintenance: Duration,
    /// The apply that was accepted started (after retries while apid was
    /// not yet answering).
    pub apply_started: Duration,
    /// It returned.
    pub apply_returned: Duration,
    /// Tries until apid answered.
    pub apply_tries: u32,
    /// `keelson: install done`.
    pub install_done: Duration,
    /// Its `took_ms=` (the node's own write time).
    pub install_took_ms: u64,
    /// The `total=` of the install phase lines.
    pub install_bytes: u64,
    /// Each phase's first console line (name, time).
    pub phases: Vec<(String, Duration)>,
    /// `keelson: node ready slot=A` after the reboot.
    pub node_ready: Duration,
    /// Node `Ready` in the API server.
    pub api_ready: Duration,
    /// Power button → QEMU's exit.
    pub power_off: Duration,
    /// Whether the guest powered off by itself.
    pub powered_off: bool,
}

impl InstallRun {
    fn install_mb_s(&self) -> f64 {
        self.install_bytes as f64 / 1e6 / (self.install_took_ms.max(1) as f64 / 1000.0)
    }

    /// Seconds in each phase by the console's times: from its first line
    /// to the next phase's (the last, to `install done`).
    fn phase_secs(&self) -> Vec<(String, f64)> {
        self.phases
            .iter()
            .enumerate()
            .map(|(i, (name, at))| {
                let end = self
                    .phases
                    .get(i + 1)
                    .map_or(self.install_done, |(_, next)| *next);
                (name.clone(), end.saturating_sub(*at).as_secs_f64())
            })
            .collect()
    }
}

/// `bench install --out FILE [--runs N]`.
pub fn main(args: &[String]) -> Result<()> {
    let usage = "usage: bench install --out FILE [--runs N]";
    let mut out = None;
    let mut runs = 2usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--runs" => {
                runs = value()?.parse().context("--runs takes a positive number")?;
                if runs == 0 {
                    bail!("--runs takes a positive number");
                }
            }
            other => bail!("unknown argument {other:?}; {usage}"),
        }
    }
    let out = out.context(usage)?;
    let iso = artifacts::iso_image()?;
    let sizes = iso_sizes(&iso)?;
    eprintln!(
        "install bench: {} ({}), root {}, ESP payload {}",
        sizes.name,
        mib(sizes.iso_bytes),
        mib(sizes.root_bytes),
        mib(sizes.esp_bytes)
    );
    let mut results = Vec::new();
    for i in 0..runs {
        eprintln!("install bench: run {}/{runs} ...", i + 1);
        let run = measure(&iso).with_context(|| format!("install run {}", i + 1))?;
        eprintln!(
            "install bench: run {}: media root ok {:.1}s, maintenance {:.1}s, install done {:.1}s (took_ms={}, {:.1} MB/s), node ready slot=A {:.1}s, API Ready {:.1}s",
            i + 1,
            run.media_ok.as_secs_f64(),
            run.maintenance.as_secs_f64(),
            run.install_done.as_secs_f64(),
            run.install_took_ms,
            run.install_mb_s(),
            run.node_ready.as_secs_f64(),
            run.api_ready.as_secs_f64()
        );
        results.push(run);
    }
    let mut md = String::new();
    render(&mut md, &sizes, &results)?;
    std::fs::write(&out, md).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The ISO's size and its `keelson/media.json`'s root and ESP sizes.
fn iso_sizes(iso: &Path) -> Result<IsoSizes> {
    let iso_bytes = std::fs::metadata(iso)
        .with_context(|| format!("stat {}", iso.display()))?
        .len();
    let dir = tempfile::Builder::new()
        .prefix("keelson-bench-iso-")
        .tempdir()?;
    let json = dir.path().join("media.json");
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/keelson/media.json"])
        .arg(&json)
        .output()
        .context("running xorriso")?;
    if !out.status.success() {
        bail!(
            "xorriso could not extract /keelson/media.json from {}: {}",
            iso.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&json).context("reading the extracted media.json")?;
    parse_media_json(&text, iso_bytes, iso)
}

fn parse_media_json(text: &str, iso_bytes: u64, iso: &Path) -> Result<IsoSizes> {
    let v: serde_json::Value = serde_json::from_str(text).context("parsing media.json")?;
    let root_bytes = v["root"]["size"]
        .as_u64()
        .context("media.json has no root.size")?;
    let esp = v["esp"].as_array().context("media.json has no esp list")?;
    let mut esp_bytes = 0;
    let mut esp_files = Vec::new();
    for f in esp {
        esp_bytes += f["size"].as_u64().context("an esp file without size")?;
        esp_files.push(f["path"].as_str().unwrap_or("?").to_string());
    }
    Ok(IsoSizes {
        name: iso
            .file_name()
            .map_or_else(|| iso.display().to_string(), |n| n.to_string_lossy().into()),
        iso_bytes,
        root_bytes,
        esp_bytes,
        esp_files,
        version: v["version"].as_str().unwrap_or("?").to_string(),
    })
}

/// The first capture of `re` in `text` as a number.
fn number(re: &str, text: &str) -> Result<u64> {
    Regex::new(re)?
        .captures(text)
        .with_context(|| format!("no /{re}/ in {text:?}"))?[1]
        .parse()
        .with_context(|| format!("/{re}/ in {text:?}"))
}

fn measure(iso: &Path) -> Result<InstallRun> {
    let relay = artifacts::relay_binary()?;
    let host = tempfile::Builder::new()
        .prefix("keelson-bench-install-")
        .tempdir()?;
    let target = host.path().join("target.raw");
    std::fs::File::create(&target)?.set_len(TARGET_SIZE)?;
    let op = Operator::new(&host.path().join("secrets"))?;
    let certificates = op.node_certificates(NODE)?;
    let disks = vec![ExtraDisk {
        path: target.clone(),
        format: "raw".into(),
        serial: TARGET_SERIAL.into(),
    }];
    let mut cluster = Cluster::start_media(NODE, &relay, iso, disks, |cfg| {
        cfg.machine.certificates = Some(certificates.clone());
    })?;
    let booted_at = cluster.vm.started();
    eprintln!(
        "install bench: booting the ISO ({})",
        cluster.work_dir().display()
    );

    let media = cluster.vm.wait_for_line(
        r"keelson: media root ok .*install_payload=true",
        Duration::from_secs(300),
    )?;
    eprintln!("[{:>6.1}s] {}", media.at.as_secs_f64(), media.text);
    let media_took_ms = number(r"took_ms=(\d+)", &media.text)?;
    let media_bytes = number(r" bytes=(\d+)", &media.text)?;
    let maintenance = cluster
        .vm
        .wait_for_line(markers::MAINTENANCE, Duration::from_secs(240))?;
    eprintln!(
        "[{:>6.1}s] {}",
        maintenance.at.as_secs_f64(),
        maintenance.text
    );
    let fingerprint = Regex::new(markers::MAINTENANCE)?
        .captures(&maintenance.text)
        .context("the maintenance line")?[1]
        .to_string();

    let mut cfg = cluster.config.clone();
    cfg.machine.install = Some(Install {
        disk: DiskTarget::Path(TARGET_BY_ID.into()),
        wipe: false,
    });
    let yaml = keelson_tests::node_config::to_yaml(&cfg)?;
    let file = host.path().join("node.yaml");
    std::fs::write(&file, &yaml)?;
    let nodectl = Nodectl {
        bin: op.bin.clone(),
        endpoint: format!("127.0.0.1:{}", cluster.machine_api_port),
    };
    let file_arg = file.display().to_string();
    let apply = || -> Run {
        nodectl.run(
            None,
            &[
                "--insecure",
                "--fingerprint",
                &fingerprint,
                "apply-config",
                "-f",
                &file_arg,
            ],
        )
    };
    // apid may not answer yet: exit 2 is "could not connect" (or another
    // failure); retried for up to a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    let (r, apply_started, apply_returned) = loop {
        tries += 1;
        let started = booted_at.elapsed();
        let r = apply();
        let returned = booted_at.elapsed();
        if r.code != 2 || Instant::now() > deadline {
            break (r, started, returned);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    if r.code != 0 || !r.stdout.contains("installing to /dev/vd") {
        bail!("nodectl apply-config with machine.install: {r:?}");
    }
    eprintln!(
        "[{:>6.1}s] apply-config returned (try {tries}): {}",
        apply_returned.as_secs_f64(),
        r.stdout.trim()
    );
    // The reboot after the install is a power cycle in the harness: QEMU
    // starts again without the CD.
    cluster.vm.next_start().cdrom = None;
    let done = cluster.vm.wait_for_line(
        r"keelson: install (done disk=/dev/vd\S+ took_ms=\d+|failed)",
        Duration::from_secs(900),
    )?;
    eprintln!("[{:>6.1}s] {}", done.at.as_secs_f64(), done.text);
    if done.text.contains("install failed") {
        bail!("the install failed: {}", done.text);
    }
    let install_took_ms = number(r"took_ms=(\d+)", &done.text)?;
    let phase_re = Regex::new(r"keelson: install phase=(\S+) written=(\d+) total=(\d+)")?;
    let mut phases: Vec<(String, Duration)> = Vec::new();
    let mut install_bytes = 0u64;
    for l in cluster.vm.console().all_matching(&phase_re) {
        let Some(c) = phase_re.captures(&l.text) else {
            continue;
        };
        install_bytes = install_bytes.max(c[3].parse()?);
        if !phases.iter().any(|(p, _)| p == &c[1]) {
            phases.push((c[1].to_string(), l.at));
        }
    }
    let seen: Vec<&str> = phases.iter().map(|(p, _)| p.as_str()).collect();
    if seen != PHASES {
        eprintln!("install bench: phases seen {seen:?}, expected {PHASES:?}");
    }

    let (ready, api_ready) = peer::wait_marker_and_api(
        &mut cluster.vm,
        &cluster.cp,
        NODE,
        booted_at,
        markers::NODE_READY,
        Duration::from_secs(600),
    )?;
    eprintln!("[{:>6.1}s] {}", ready.at.as_secs_f64(), ready.text);
    eprintln!(
        "[{:>6.1}s] node {NODE} Ready in the API server",
        api_ready.as_secs_f64()
    );
    if !ready.text.contains("slot=A") {
        bail!("the installed node did not boot slot A: {}", ready.text);
    }
    if cluster.vm.starts() != 2 {
        bail!(
            "expected one reboot into the installed disk, QEMU started {} times",
            cluster.vm.starts()
        );
    }
    let (powered_off, power_off) = cluster.power_off(Duration::from_secs(180))?;
    eprintln!(
        "install bench: power button → exit {:.1}s (powered off by itself: {powered_off})",
        power_off.as_secs_f64()
    );
    Ok(InstallRun {
        media_ok: media.at,
        media_took_ms,
        media_bytes,
        maintenance: maintenance.at,
        apply_started,
        apply_returned,
        apply_tries: tries,
        install_done: done.at,
        install_took_ms,
        install_bytes,
        phases,
        node_ready: ready.at,
        api_ready,
        power_off,
        powered_off,
    })
}

/// One table row: the label, each run's value and the median.
fn row(md: &mut String, label: &str, values: &[f64], digits: usize) -> Result<()> {
    let cells: Vec<String> = values.iter().map(|v| format!("{v:.digits$}")).collect();
    writeln!(
        md,
        "| {label} | {} | {:.digits$} |",
        cells.join(" | "),
        median(values.to_vec())
    )?;
    Ok(())
}

/// The section of `bench/results.md`.
pub fn render(md: &mut String, sizes: &IsoSizes, runs: &[InstallRun]) -> Result<()> {
    let n = runs.len();
    writeln!(md, "## Install from the ISO (issue 8)\n")?;
    writeln!(
        md,
        "Each run boots `{}` ({}) next to a fresh control plane: QEMU with `-accel tcg -machine q35 -cpu max -smp 1 -m 2048` on the 2 shared host cores, OVMF, the ISO in a CD drive on the q35 AHCI controller, one blank sparse 4 GiB raw virtio disk (serial `{TARGET_SERIAL}`) and nothing else attached. The node runs live: stage 1 copies the root squashfs off the CD into RAM and checks it (`keelson: media root ok`), then starts maintenance mode (`keelson: maintenance mode: apid fingerprint …`). The harness then runs `nodectl apply-config --insecure --fingerprint` (retried while apid does not answer yet) with the test config (`examples/node.yaml` patched for the test control plane: hostname, DHCP on eth0, kubelet with the test API server, its CA and a bootstrap token), the machine API's certificates, and `machine.install.disk: {TARGET_BY_ID}` (no `wipe`). The node writes the disk and reboots; the harness starts QEMU again without the CD, and the node boots slot A from the disk and joins. Times are from QEMU's first start (power-on) as the harness sees them (console read every 50 ms, the API server polled every 200 ms on its own thread); `took_ms` values are init's own, by the guest's clock. Each run ends with the power button.\n",
        sizes.name, sizes.version
    )?;
    writeln!(md, "| what | bytes | size |\n|---|---:|---:|")?;
    writeln!(
        md,
        "| `{}` (apparent) | {} | {} |",
        sizes.name,
        sizes.iso_bytes,
        mib(sizes.iso_bytes)
    )?;
    writeln!(
        md,
        "| root squashfs (`media.json` `root`) | {} | {} |",
        sizes.root_bytes,
        mib(sizes.root_bytes)
    )?;
    writeln!(
        md,
        "| ESP payload (`media.json` `esp`: {}) | {} | {} |\n",
        sizes
            .esp_files
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", "),
        sizes.esp_bytes,
        mib(sizes.esp_bytes)
    )?;

    writeln!(
        md,
        "n = {n}{}: medians of so few runs are rough.\n",
        if n == 2 {
            " (median = mean of the two)"
        } else {
            ""
        }
    )?;
    let head: Vec<String> = (1..=n).map(|i| format!("run {i}")).collect();
    writeln!(
        md,
        "| from power-on (QEMU start) to, seconds | {} | median |\n|---|{}---:|",
        head.join(" | "),
        "---:|".repeat(n)
    )?;
    let secs = |f: &dyn Fn(&InstallRun) -> Duration| -> Vec<f64> {
        runs.iter().map(|r| f(r).as_secs_f64()).collect()
    };
    row(
        md,
        "`keelson: media root ok` (root copied off the CD and checked)",
        &secs(&|r| r.media_ok),
        1,
    )?;
    row(
        md,
        "maintenance marker (apid up, fingerprint on the console)",
        &secs(&|r| r.maintenance),
        1,
    )?;
    row(
        md,
        "`nodectl apply-config` returned (install accepted)",
        &secs(&|r| r.apply_returned),
        1,
    )?;
    row(
        md,
        "`keelson: install done` (disk written)",
        &secs(&|r| r.install_done),
        1,
    )?;
    row(
        md,
        "`keelson: node ready slot=A` (rebooted, booted from the disk)",
        &secs(&|r| r.node_ready),
        1,
    )?;
    row(
        md,
        "**node `Ready` in the API server: installed and running**",
        &secs(&|r| r.api_ready),
        1,
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| other figures, seconds | {} | median |\n|---|{}---:|",
        head.join(" | "),
        "---:|".repeat(n)
    )?;
    row(
        md,
        "stage 1's root copy and check (`media root ok took_ms`, guest clock)",
        &runs
            .iter()
            .map(|r| r.media_took_ms as f64 / 1000.0)
            .collect::<Vec<_>>(),
        1,
    )?;
    row(
        md,
        "`nodectl apply-config`: command start → return",
        &runs
            .iter()
            .map(|r| {
                r.apply_returned
                    .saturating_sub(r.apply_started)
                    .as_secs_f64()
            })
            .collect::<Vec<_>>(),
        2,
    )?;
    row(
        md,
        "the node's install (`install done took_ms`, guest clock)",
        &runs
            .iter()
            .map(|r| r.install_took_ms as f64 / 1000.0)
            .collect::<Vec<_>>(),
        1,
    )?;
    row(
        md,
        "`install done` → `node ready slot=A` (shutdown, reboot, OVMF, GRUB, boot)",
        &runs
            .iter()
            .map(|r| r.node_ready.saturating_sub(r.install_done).as_secs_f64())
            .collect::<Vec<_>>(),
        1,
    )?;
    row(md, "power button → QEMU exit", &secs(&|r| r.power_off), 1)?;
    writeln!(md)?;
    let tries: Vec<String> = runs.iter().map(|r| r.apply_tries.to_string()).collect();
    writeln!(
        md,
        "`apply-config` tries until apid answered, per run: {}. The guest powered off by itself after the power button in {} of {n} runs. Stage 1 copied {} bytes of root per run.\n",
        tries.join(", "),
        runs.iter().filter(|r| r.powered_off).count(),
        runs.first().map_or(0, |r| r.media_bytes)
    )?;

    writeln!(
        md,
        "Install write throughput: the bytes are the `total=` of the install phase lines (root squashfs + ESP payload); the time is init's `install done took_ms`, which also covers wiping the ends of the disk, making the ESP (FAT) and the STATE and VAR (ext4) filesystems, storing the config in STATE and writing the partition table.\n"
    )?;
    writeln!(
        md,
        "| run | bytes | took_ms | MB/s |\n|---:|---:|---:|---:|"
    )?;
    for (i, r) in runs.iter().enumerate() {
        writeln!(
            md,
            "| {} | {} | {} | {:.1} |",
            i + 1,
            r.install_bytes,
            r.install_took_ms,
            r.install_mb_s()
        )?;
    }
    writeln!(
        md,
        "| median | | {:.0} | {:.1} |\n",
        median(runs.iter().map(|r| r.install_took_ms as f64).collect()),
        median(runs.iter().map(InstallRun::install_mb_s).collect())
    )?;

    // Phases by the console's times (the first line of each phase to the
    // next phase's first line).
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for (p, _) in &r.phases {
            if !names.contains(p) {
                names.push(p.clone());
            }
        }
    }
    writeln!(
        md,
        "Install phases by the console's times (from a phase's first progress line to the next phase's; the last to `install done`), seconds:\n"
    )?;
    writeln!(
        md,
        "| phase | {} | median |\n|---|{}---:|",
        head.join(" | "),
        "---:|".repeat(n)
    )?;
    for name in &names {
        let values: Vec<f64> = runs
            .iter()
            .map(|r| {
                r.phase_secs()
                    .into_iter()
                    .find(|(p, _)| p == name)
                    .map_or(f64::NAN, |(_, s)| s)
            })
            .collect();
        row(md, &format!("`{name}`"), &values, 1)?;
    }
    writeln!(md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn media_json_sizes_are_read() {
        let text = r#"{"version":"0.1.0","volumeId":"KEELSON_0_1_0","root":{"path":"keelson/rootfs.squashfs","size":100,"sha256":"x"},"esp":[{"path":"A/vmlinuz","size":7,"sha256":"y"},{"path":"grub/grub.cfg","size":3,"sha256":"z"}]}"#;
        let s = parse_media_json(text, 1000, Path::new("out/keelson-0.1.0.iso")).unwrap();
        assert_eq!((s.iso_bytes, s.root_bytes, s.esp_bytes), (1000, 100, 10));
        assert_eq!(s.esp_files, ["A/vmlinuz", "grub/grub.cfg"]);
        assert_eq!(s.name, "keelson-0.1.0.iso");
        assert_eq!(s.version, "0.1.0");
        assert!(parse_media_json("{}", 0, Path::new("x.iso")).is_err());
    }

    #[test]
    fn numbers_come_from_console_lines() {
        let line = "keelson: install done disk=/dev/vda took_ms=41234";
        assert_eq!(number(r"took_ms=(\d+)", line).unwrap(), 41234);
        assert!(number(r"bytes=(\d+)", line).is_err());
    }
}
