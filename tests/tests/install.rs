//! Installing from the boot ISO, end to end: OVMF boots `make iso` from a
//! CD drive with three more disks attached (a blank 4 GiB target, a 3 GiB
//! disk holding an ext4 filesystem, a 1 GiB disk). The node runs live from
//! RAM in maintenance mode. A first install to the target is cut by a
//! power cut in the middle (a hard reset while it writes STATE); the node
//! boots the ISO again. Then configs naming the disk with the filesystem,
//! the small disk and an ambiguous size are refused, each saying why, and
//! nothing on those disks changes. A config naming the target by its
//! `/dev/disk/by-id` name, without `wipe`, takes the half-written disk: the
//! node installs (progress on the console), reboots, and with the CD
//! ejected boots slot A from the disk with the config in effect, joins the
//! real control plane and becomes Ready. The installed disk has the raw
//! image's partitions (VAR taking the rest), clean ext4, the config in
//! STATE; upgrades are available (A/B slots), and the power button ends it.
//!
//! Ignored by default; `make test` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keelson_tests::nodectl::{json, Nodectl, Operator};
use keelson_tests::qemu::ExtraDisk;
use keelson_tests::scenario::{markers, Cluster};
use machine_config::schema::{DiskSelector, DiskTarget, Install};
use regex::Regex;

const NODE: &str = "keelson-install-0";
const GIB: u64 = 1 << 30;

/// A sparse raw disk of `size` bytes.
fn blank_disk(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn ext4_label(path: &Path) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("Filesystem volume name:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no ext4 on {}: {text}", path.display()))
}

fn with_install(cluster: &Cluster, disk: DiskTarget, wipe: bool) -> String {
    let mut cfg = cluster.config.clone();
    cfg.machine.install = Some(Install { disk, wipe });
    keelson_tests::node_config::to_yaml(&cfg).unwrap()
}

fn fingerprint(line: &str) -> String {
    Regex::new(markers::MAINTENANCE)
        .unwrap()
        .captures(line)
        .unwrap()[1]
        .to_string()
}

#[test]
#[ignore = "boots the ISO in QEMU (minutes); run by make test"]
fn the_iso_installs_to_the_disk_its_config_names_and_the_disk_boots_like_the_raw_image() {
    let relay = Path::new(env!("CARGO_BIN_EXE_keelson-relay"));
    let iso = keelson_tests::artifacts::iso_image().unwrap_or_else(|e| panic!("{e}"));
    let raw_image = keelson_tests::artifacts::disk_image().unwrap_or_else(|e| panic!("{e}"));
    let host = tempfile::tempdir().unwrap();
    let target = host.path().join("target.raw");
    let used = host.path().join("used.raw");
    let small = host.path().join("small.raw");
    blank_disk(&target, 4 * GIB);
    blank_disk(&used, 3 * GIB);
    blank_disk(&small, GIB);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "data"])
        .arg(&used)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let disk = |path: &PathBuf, serial: &str| ExtraDisk {
        path: path.clone(),
        format: "raw".into(),
        serial: serial.into(),
    };
    let disks = vec![
        disk(&target, "keelson-target"),
        disk(&used, "keelson-used"),
        disk(&small, "keelson-small"),
    ];

    let op = Operator::new(&host.path().join("secrets")).unwrap_or_else(|e| panic!("{e}"));
    let certificates = op.node_certificates(NODE).unwrap_or_else(|e| panic!("{e}"));
    let mut cluster = Cluster::start_media(NODE, relay, &iso, disks, |cfg| {
        cfg.machine.certificates = Some(certificates.clone());
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let power_on = Instant::now();
    eprintln!("work directory: {}", cluster.work_dir().display());
    let endpoint = format!("127.0.0.1:{}", cluster.machine_api_port);
    let nodectl = Nodectl {
        bin: op.bin.clone(),
        endpoint: endpoint.clone(),
    };
    let admin = op
        .contexts(host.path(), "admin", "admin", &endpoint)
        .unwrap();
    let configs = host.path().join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    let apply = |name: &str, yaml: &str, fp: &str| {
        let file = configs.join(name);
        std::fs::write(&file, yaml).unwrap();
        nodectl.run(
            None,
            &[
                "--insecure",
                "--fingerprint",
                fp,
                "apply-config",
                "-f",
                &file.display().to_string(),
            ],
        )
    };
    let by_id = DiskTarget::Path("/dev/disk/by-id/virtio-keelson-target".into());

    // 1. Live from the CD: the root checked and copied into RAM, STATE and
    // VAR in RAM, maintenance mode with the fingerprint on the console.
    let media = cluster
        .vm
        .wait_for_line(
            r"keelson: media root ok .*install_payload=true",
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", media.at.as_secs_f64(), media.text);
    cluster
        .vm
        .wait_for_line(
            r"keelson: storage in RAM: STATE VAR",
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let line = cluster
        .vm
        .wait_for_line(markers::MAINTENANCE, Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", line.at.as_secs_f64(), line.text);
    let fp = fingerprint(&line.text);

    // 2. A first install, cut by a power cut while it writes STATE.
    let r = nodectl_eventually(|| {
        apply(
            "first.yaml",
            &with_install(&cluster, by_id.clone(), false),
            &fp,
        )
    });
    assert!(r.stdout.contains("installing to /dev/vd"), "{r:?}");
    let cut = install_phase(&mut cluster, "state");
    cluster.vm.reset().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "[{:>6.1}s] power cut at: {}",
        cut.at.as_secs_f64(),
        cut.text
    );

    // 3. Live again. Refusals, each naming why; nothing changes.
    let line = cluster
        .vm
        .wait_for_line(markers::MAINTENANCE, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let fp = fingerprint(&line.text);
    assert_eq!(cluster.vm.starts(), 2, "the reset was a power cycle");
    let serial = DiskTarget::Selector(DiskSelector {
        serial: Some("keelson-used".into()),
        ..Default::default()
    });
    let r = nodectl_eventually(|| {
        apply(
            "used.yaml",
            &with_install(&cluster, serial.clone(), false),
            &fp,
        )
    });
    assert!(
        r.code != 0
            && r.stderr
                .contains("holds an ext4 filesystem labelled \"data\"")
            && r.stderr.contains("wipe: true"),
        "a disk with a filesystem is refused without wipe: {r:?}"
    );
    let r = apply(
        "small.yaml",
        &with_install(
            &cluster,
            DiskTarget::Path("/dev/disk/by-id/virtio-keelson-small".into()),
            true,
        ),
        &fp,
    );
    assert!(
        r.code != 0 && r.stderr.contains("the layout needs at least"),
        "a small disk is refused: {r:?}"
    );
    let ambiguous = DiskTarget::Selector(DiskSelector {
        size: Some(">= 3GiB".parse().unwrap()),
        ..Default::default()
    });
    let r = apply(
        "ambiguous.yaml",
        &with_install(&cluster, ambiguous, true),
        &fp,
    );
    assert!(
        r.code != 0 && r.stderr.contains("2 disks"),
        "an ambiguous selector is refused: {r:?}"
    );
    assert_eq!(ext4_label(&used), "data", "the refused disk is untouched");
    // An install reboots: a mode that promises no reboot is refused.
    let file = configs.join("no-reboot.yaml");
    std::fs::write(&file, with_install(&cluster, by_id.clone(), false)).unwrap();
    let r = nodectl.run(
        None,
        &[
            "--insecure",
            "--fingerprint",
            &fp,
            "apply-config",
            "--mode",
            "no-reboot",
            "-f",
            &file.display().to_string(),
        ],
    );
    assert!(
        r.code != 0 && r.stderr.contains("installs and reboots"),
        "an install in no-reboot mode is refused: {r:?}"
    );

    // 4. The half-written target is taken again without wipe: installs,
    // reboots, and boots from the disk with the CD ejected.
    let yaml = with_install(&cluster, by_id.clone(), false);
    let r = apply("node.yaml", &yaml, &fp);
    assert_eq!(r.code, 0, "install after the power cut: {r:?}");
    cluster.vm.next_start().cdrom = None;
    for phase in ["system-a", "esp", "state", "var", "partition-table"] {
        let l = install_phase(&mut cluster, phase);
        eprintln!("[{:>6.1}s] {}", l.at.as_secs_f64(), l.text);
    }
    let done = cluster
        .vm
        .wait_for_line(
            r"keelson: install done disk=/dev/vd\S+ took_ms=(\d+)",
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", done.at.as_secs_f64(), done.text);
    let ready = cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", ready.at.as_secs_f64(), ready.text);
    assert!(ready.text.contains("slot=A"), "{}", ready.text);
    assert_eq!(cluster.vm.starts(), 3, "one reboot into the installed disk");
    cluster
        .cp
        .wait_node_ready(NODE, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "bench: power-on to installed-and-Ready {:.1} s (incl. a cut install and a second live boot)",
        power_on.elapsed().as_secs_f64()
    );

    // 5. The installed node: booted from slot A of the disk, nothing in
    // RAM, the config as generation 1 applied by the install, A/B upgrades.
    let health = json(&nodectl.eventually(
        &admin,
        &["health", "--wait", "-o", "json"],
        Duration::from_secs(120),
    ));
    assert_eq!(health["root"], "slot A", "{health}");
    assert!(
        health["inRam"].as_array().is_none_or(|a| a.is_empty()),
        "{health}"
    );
    let history = nodectl.ok(&admin, &["config", "history", "-o", "json"]);
    assert!(history.contains("install"), "{history}");
    let status = nodectl.ok(&admin, &["upgrade", "status", "-o", "json"]);
    assert!(
        status.contains("\"A\""),
        "upgrade status on the installed node: {status}"
    );

    // 6. Power button; then the disk as the host sees it.
    let (clean, took) = cluster
        .power_off(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        clean,
        "powered off by itself; console:\n{}",
        cluster.vm.console_tail(40)
    );
    eprintln!("powered off in {:.1} s", took.as_secs_f64());
    let installed = keelson_tests::gpt::read_partitions(&target).unwrap();
    let image = keelson_tests::gpt::read_partitions(&raw_image).unwrap();
    let names =
        |p: &[keelson_tests::gpt::Partition]| p.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&installed),
        names(&image),
        "the raw image's partitions"
    );
    for (a, b) in installed.iter().zip(&image).take(4) {
        assert_eq!(
            (a.offset, a.size),
            (b.offset, b.size),
            "{} as in the raw image",
            a.name
        );
    }
    let var = installed.last().unwrap();
    assert!(
        var.offset + var.size > 4 * GIB - 2 * (1 << 20),
        "VAR takes the rest: {var:?}"
    );
    for part in ["STATE", "VAR"] {
        let h = keelson_tests::disk::dumpe2fs_header(&target, part).unwrap();
        assert!(
            !h.needs_recovery(),
            "{part} clean after the power button: {h:?}"
        );
    }
    let stored = keelson_tests::disk::read_file(&target, "STATE", "config/current.yaml").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stored),
        yaml,
        "the applied config is in STATE"
    );
    assert_eq!(
        ext4_label(&used),
        "data",
        "the refused disk is still untouched"
    );
}

/// Waits for the install to reach `phase`; fails at once if it fails.
fn install_phase(cluster: &mut Cluster, phase: &str) -> keelson_tests::console::ConsoleLine {
    let l = cluster
        .vm
        .wait_for_line(
            &format!(r"keelson: install (phase={phase} |failed)"),
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!l.text.contains("install failed"), "{}", l.text);
    l
}

/// Runs `f` until it connects (apid may still be starting), up to a minute.
fn nodectl_eventually(f: impl Fn() -> keelson_tests::nodectl::Run) -> keelson_tests::nodectl::Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = f();
        if r.code != 2 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
