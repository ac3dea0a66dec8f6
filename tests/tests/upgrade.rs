//! A/B upgrades end to end (issue 7): a node booted from `out/keelson.raw`
//! (v1, slot A, through OVMF and GRUB) is upgraded with bundles signed by
//! the operator's key from `nodectl gen secrets`, made here from the second
//! image `make image-v2` builds (another version string).
//!
//! - A bundle with one flipped kernel byte and one signed by a key the node
//!   does not trust are refused with the reason; the node keeps running v1.
//! - The good bundle: the node reboots into slot B on trial, runs v2, keeps
//!   its config and what a pod wrote under /var, commits B after the
//!   health period, and a plain reboot comes back on B.
//! - The power is cut (QEMU reset) while the good bundle is being written:
//!   the node boots v1 on A, says the write was cut off and slot B is
//!   invalid; the retried upgrade then succeeds.
//! - A bundle whose (signed) kernel GRUB cannot load goes to slot A; the
//!   trial boot falls back to B by itself, and the node says it rolled back.
//! - A bundle whose kubelet cannot run, which the node downloads itself
//!   (`nodectl upgrade --url`) from an HTTPS mirror on the host: refused
//!   under the node's system CAs, accepted with the mirror's CA pinned,
//!   resumed after the mirror cuts the download; the trial boots, is never
//!   healthy, and after the health timeout the node reboots into B by
//!   itself.
//! - A bundle whose init hangs after stage 1: the watchdog stage 1 armed
//!   (QEMU's i6300esb) resets the machine and GRUB boots B again.
//!
//! Ignored by default; `make test` runs it. It fails (never skips) when the
//! images are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bundle::{BundleMeta, SigningKey};
use keelson_tests::artifacts;
use keelson_tests::bundle_server::{BundleServer, Fault};
use keelson_tests::nodectl::{json, strings, Nodectl, Operator};
use keelson_tests::qemu::{GuestFwd, Vm};
use keelson_tests::scenario::{markers, writer_pod_yaml, Cluster};

const NODE: &str = "keelson-upgrade-0";
const WRITER: &str = "writer";
/// What the second image reports (Makefile `V2_VERSION`).
const V2: &str = "0.2.0-upgrade-test";
/// The health gate the scenario's config sets.
const HEALTHY_AFTER: Duration = Duration::from_secs(20);
/// How long after the upload starts the power is cut: past the kernel and
/// initramfs (16 MB at 1.5–3 MB/s under TCG), inside the root filesystem.
const POWER_CUT_AFTER: Duration = Duration::from_secs(12);
/// Where the guest reaches the bundle mirror (a guestfwd to the host).
const MIRROR: (std::net::Ipv4Addr, u16) = (std::net::Ipv4Addr::new(10, 0, 2, 101), 443);
/// Where the mirror cuts the first download (well inside the rootfs).
const MIRROR_CUT: u64 = 40 << 20;
/// The health timeout set (live) for the bundle whose kubelet cannot run.
const BROKEN_KUBELET_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for each console line in turn (each after the one before) and
/// shows it.
fn expect_lines(vm: &mut Vm, patterns: &[String], each: Duration) {
    for pattern in patterns {
        let l = vm
            .wait_for_line(pattern, each)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("[{:>6.1}s] {}", l.at.as_secs_f64(), l.text);
    }
}

/// `nodectl upgrade -f BUNDLE`, which must succeed (written, reboot asked).
fn upgrade_accepted(nodectl: &Nodectl, admin: &Path, bundle: &Path) {
    let r = nodectl.run(Some(admin), &["upgrade", "-f", bundle.to_str().unwrap()]);
    eprintln!("upgrade {}: {r:?}", bundle.display());
    assert_eq!(r.code, 0, "{r:?}");
}

/// Signs `kernel`, `initramfs`, `rootfs` into `out` with `key`.
fn make_bundle(out: &Path, key: &SigningKey, version: &str, parts: [&Path; 3]) -> PathBuf {
    let file = std::fs::File::create(out).unwrap();
    let meta = BundleMeta {
        os_version: version.into(),
        build_id: format!("upgrade-scenario-{version}"),
        created: None,
        min_upgrade_from: None,
    };
    bundle::write_bundle(
        std::io::BufWriter::new(file),
        key,
        &meta,
        parts[0],
        parts[1],
        parts[2],
    )
    .unwrap();
    out.to_path_buf()
}

fn version_of(n: &Nodectl, ctx: &Path) -> (String, String) {
    let v = json(&n.eventually(ctx, &["version", "-o", "json"], Duration::from_secs(120)));
    let get = |k: &str| {
        v.get(k)
            .or_else(|| v.get(0).and_then(|x| x.get(k)))
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    (get("osVersion"), get("slot"))
}

#[test]
#[ignore = "boots the image in QEMU (minutes); run by make test"]
fn upgrade_verifies_writes_the_other_slot_commits_when_healthy_and_falls_back() {
    let relay = Path::new(env!("CARGO_BIN_EXE_keelson-relay"));
    let v2 = artifacts::v2_boot_dir().unwrap_or_else(|e| panic!("{e}"));
    let host = tempfile::tempdir().unwrap();
    let op = Operator::new(&host.path().join("secrets")).unwrap_or_else(|e| panic!("{e}"));
    let certificates = op.node_certificates(NODE).unwrap_or_else(|e| panic!("{e}"));
    let key = SigningKey::from_file(&op.secrets.join("upgrade-signing.key")).unwrap();
    let mirror_dir = host.path().join("mirror");
    std::fs::create_dir(&mirror_dir).unwrap();
    let mirror = BundleServer::start(
        &mirror_dir,
        &[&MIRROR.0.to_string()],
        Fault::CutFirst(MIRROR_CUT),
    )
    .unwrap();
    let to_mirror = GuestFwd {
        guest_ip: MIRROR.0,
        guest_port: MIRROR.1,
        command: format!("{} {}", relay.display(), mirror.port()),
    };
    let mut cluster = Cluster::start_with_forwards(NODE, relay, vec![to_mirror], |cfg| {
        cfg.machine.certificates = Some(certificates.clone());
        cfg.machine.trusted_upgrade_keys = vec![key.public_base64()];
        cfg.upgrade.healthy_after = machine_config::Duration(HEALTHY_AFTER);
        cfg.upgrade.health_timeout = machine_config::Duration(Duration::from_secs(300));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("work directory: {}", cluster.work_dir().display());
    let ready = cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", ready.at.as_secs_f64(), ready.text);
    let nodectl = Nodectl {
        bin: op.bin.clone(),
        endpoint: format!("127.0.0.1:{}", cluster.machine_api_port),
    };
    let admin = op
        .contexts(host.path(), "admin", "admin", &nodectl.endpoint)
        .unwrap();
    let (v1, slot) = version_of(&nodectl, &admin);
    assert_eq!(slot, "A");
    assert_ne!(v1, V2);

    // Something under /var that must survive: the writer pod's lines.
    cluster.cp.create(&writer_pod_yaml(WRITER, NODE)).unwrap();
    cluster
        .cp
        .wait_pod_running(WRITER, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let writer_path = format!("/var/log/keelson-writer/{WRITER}");
    let lines_written = |n: &Nodectl| -> usize {
        let r = n.run(Some(&admin), &["read", &writer_path]);
        r.stdout.lines().filter(|l| l.starts_with("line ")).count()
    };

    let parts = [
        v2.join("vmlinuz"),
        v2.join("initramfs.img"),
        v2.join("rootfs.squashfs"),
    ];
    let parts_ref = [parts[0].as_path(), parts[1].as_path(), parts[2].as_path()];
    let good = make_bundle(&host.path().join("v2.bundle"), &key, V2, parts_ref);

    // (1) Refusals: a flipped payload byte (1 MiB into the kernel, the
    // first payload, so the refusal comes early), an untrusted signer.
    // Nothing changes: still v1 on A.
    let flipped = host.path().join("v2-flipped.bundle");
    {
        let mut bytes = std::fs::read(&good).unwrap();
        bytes[1 << 20] ^= 0x40;
        std::fs::write(&flipped, bytes).unwrap();
    }
    let stranger = SigningKey::from_seed([7; 32]);
    let foreign = make_bundle(
        &host.path().join("v2-foreign.bundle"),
        &stranger,
        V2,
        parts_ref,
    );
    for (bundle, why) in [(&flipped, "kernel"), (&foreign, "trust")] {
        let r = nodectl.run(Some(&admin), &["upgrade", "-f", bundle.to_str().unwrap()]);
        eprintln!("upgrade {}: {r:?}", bundle.display());
        assert_eq!(r.code, 1, "refused: {r:?}");
        let said = format!("{}{}", r.stdout, r.stderr).to_lowercase();
        assert!(said.contains(why), "the refusal names {why}: {said}");
    }
    let (v, slot) = version_of(&nodectl, &admin);
    assert_eq!((v.as_str(), slot.as_str()), (v1.as_str(), "A"));
    let status = nodectl.ok(&admin, &["upgrade", "status", "-o", "json"]);
    eprintln!("status after the refusals: {status}");
    assert!(strings(&json(&status)).contains("invalid"), "{status}");

    // (1b) Power cut in the middle of writing slot B: the node boots v1 on
    // A, says the write was cut off, slot B is invalid; the retry in (2)
    // succeeds.
    {
        let mut upload = nodectl
            .command(Some(&admin), &["upgrade", "-f", good.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let vm = &mut cluster.vm;
        let l = vm
            .wait_for_line(r"keelson: upgrade receiving ", Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("[{:>6.1}s] {}", l.at.as_secs_f64(), l.text);
        // Past the kernel and initramfs (16 MB), into the root filesystem.
        std::thread::sleep(POWER_CUT_AFTER);
        assert!(
            upload.try_wait().unwrap().is_none(),
            "the upload was still going when the power was cut"
        );
        vm.reset().unwrap();
        let out = upload.wait_with_output().unwrap();
        eprintln!(
            "nodectl upgrade after the power cut: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        assert!(!out.status.success(), "an upload cut off is not a success");
        expect_lines(
            vm,
            &[
                format!(r"keelson: upgrade interrupted slot=B version={V2}: "),
                markers::NODE_READY.to_string(),
            ],
            Duration::from_secs(300),
        );
        assert!(vm.starts() >= 2, "the reset was a power cycle");
        let (v, slot) = version_of(&nodectl, &admin);
        assert_eq!((v.as_str(), slot.as_str()), (v1.as_str(), "A"));
        let status = json(&nodectl.ok(&admin, &["upgrade", "status", "-o", "json"]));
        eprintln!("status after the power cut: {status}");
        let slot_b = status["slots"]
            .as_array()
            .and_then(|slots| slots.iter().find(|s| s["name"] == "B"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(slot_b["state"], "invalid", "{status}");
        let health = nodectl.ok(&admin, &["health", "-o", "json"]);
        assert!(health.contains("interrupted"), "health says so: {health}");
    }

    // (2) The good bundle: written to B, trial boot, v2 runs, /var and the
    // config survive, B is committed after the health period.
    let before = lines_written(&nodectl);
    assert!(before > 0, "the writer wrote before the upgrade");
    upgrade_accepted(&nodectl, &admin, &good);
    expect_lines(
        &mut cluster.vm,
        &[
            format!(r"keelson: upgrade written slot=B version={V2} "),
            r"keelson: shutdown done took_ms=\d+".to_string(),
            format!(r"keelson: upgrade trial slot=B version={V2} "),
            markers::NODE_READY.to_string(),
            format!(r"keelson: upgrade committed slot=B version={V2}"),
        ],
        Duration::from_secs(300),
    );
    let (v, slot) = version_of(&nodectl, &admin);
    assert_eq!((v.as_str(), slot.as_str()), (V2, "B"));
    // The config in STATE is still the one in effect (its hostname).
    let hostname = nodectl.ok(&admin, &["read", "/proc/sys/kernel/hostname"]);
    assert_eq!(hostname.trim(), NODE);
    let after = lines_written(&nodectl);
    assert!(
        after >= before,
        "lines under /var survived: {after} < {before}"
    );

    // A plain reboot now comes back on B: it is the default.
    nodectl.ok(&admin, &["reboot"]);
    let l = cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(400))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", l.at.as_secs_f64(), l.text);
    assert!(l.text.contains("slot=B"), "{}", l.text);

    // (3) A bundle whose kernel GRUB cannot load (signed, so accepted and
    // written to A): the trial boot falls back to B in the same boot, and
    // the node says the upgrade was rolled back and why. (Its other
    // payloads are small stand-ins: GRUB stops at the kernel.)
    let bad_kernel = host.path().join("not-a-kernel");
    std::fs::write(&bad_kernel, vec![0x5a; 1 << 20]).unwrap();
    let stand_in = host.path().join("stand-in");
    std::fs::write(&stand_in, vec![0xa5; 1 << 20]).unwrap();
    let broken = make_bundle(
        &host.path().join("v3-broken.bundle"),
        &key,
        "0.3.0-broken",
        [&bad_kernel, &stand_in, &stand_in],
    );
    upgrade_accepted(&nodectl, &admin, &broken);
    expect_lines(
        &mut cluster.vm,
        &[
            r"keelson: upgrade written slot=A version=0\.3\.0-broken ".to_string(),
            r"keelson: shutdown done took_ms=\d+".to_string(),
            r"keelson: upgrade rolled back slot=A reason=.+".to_string(),
        ],
        Duration::from_secs(400),
    );
    let (v, slot) = version_of(&nodectl, &admin);
    assert_eq!((v.as_str(), slot.as_str()), (V2, "B"));
    let status = json(&nodectl.ok(&admin, &["upgrade", "status", "-o", "json"]));
    eprintln!("status after the fallback: {status}");
    assert!(strings(&status).contains("rolled-back"), "{status}");
    // (4) A bundle whose kubelet cannot run (the v2 root filesystem with an
    // empty kubelet): written to A, the trial boots, init, apid and
    // containerd run but kubelet never does, and after the health timeout
    // (lowered live for this step) the node rolls back to B by itself.
    let mut short = cluster.config.clone();
    short.upgrade.health_timeout = machine_config::Duration(BROKEN_KUBELET_TIMEOUT);
    let r = nodectl
        .apply_live(
            &admin,
            &short,
            &host.path().join("short-health-timeout.yaml"),
        )
        .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let rootfs = rootfs_without_kubelet(&parts[2], host.path());
    make_bundle(
        &mirror_dir.join("v4-no-kubelet.bundle"),
        &key,
        "0.4.0-no-kubelet",
        [parts_ref[0], parts_ref[1], &rootfs],
    );
    let url = format!("https://{}/v4-no-kubelet.bundle", MIRROR.0);
    // The node's own CA bundle (Debian's) does not know the mirror's CA.
    let r = nodectl.run(Some(&admin), &["upgrade", "--url", &url]);
    eprintln!("upgrade --url without --ca: {r:?}");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("UnknownIssuer"), "{r:?}");
    assert!(r.stderr.contains("nothing was written"), "{r:?}");
    assert!(mirror.served().is_empty(), "{:?}", mirror.served());
    // Pinned: downloaded by the node, cut by the mirror, resumed.
    let ca = host.path().join("mirror-ca.pem");
    std::fs::write(&ca, mirror.ca_pem()).unwrap();
    let r = nodectl.run(
        Some(&admin),
        &["upgrade", "--url", &url, "--ca", ca.to_str().unwrap()],
    );
    eprintln!("upgrade --url --ca: {r:?}");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("; resumed at byte "), "{r:?}");
    let served = mirror.served();
    eprintln!("the mirror served: {served:?}");
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!((served[0].status, served[0].sent), (200, MIRROR_CUT));
    assert_eq!(served[1].status, 206, "{served:?}");
    expect_lines(
        &mut cluster.vm,
        &[
            r"keelson: upgrade written slot=A version=0\.4\.0-no-kubelet ".to_string(),
            r"keelson: upgrade trial slot=A version=0\.4\.0-no-kubelet ".to_string(),
            r"keelson: upgrade rolled back slot=A reason=not healthy within healthTimeout.*kubelet"
                .to_string(),
            markers::NODE_READY.to_string(),
        ],
        Duration::from_secs(400),
    );
    let (v, slot) = version_of(&nodectl, &admin);
    assert_eq!((v.as_str(), slot.as_str()), (V2, "B"));
    let status = json(&nodectl.ok(&admin, &["upgrade", "status", "-o", "json"]));
    eprintln!("status after the health timeout: {status}");
    assert_eq!(status["state"], "rolled-back", "{status}");
    assert!(strings(&status).contains("healthTimeout"), "{status}");

    // (5) A bundle whose init hangs for ever after stage 1 (a root
    // filesystem whose /sbin/init blocks): stage 1 armed the watchdog,
    // nothing pets it after the exec, it resets the machine and GRUB boots
    // B again; the node says the trial did not come up.
    let hangs = make_bundle(
        &host.path().join("v5-init-hangs.bundle"),
        &key,
        "0.5.0-init-hangs",
        [
            parts_ref[0],
            parts_ref[1],
            &rootfs_whose_init_hangs(host.path()),
        ],
    );
    let resets_before = cluster.vm.watchdog_resets();
    upgrade_accepted(&nodectl, &admin, &hangs);
    expect_lines(
        &mut cluster.vm,
        &[
            r"keelson: upgrade written slot=A version=0\.5\.0-init-hangs ".to_string(),
            r"keelson: shutdown done took_ms=\d+".to_string(),
            r"keelson: watchdog armed device=\S+ identity=.* timeout_s=\d+".to_string(),
            r"keelson: upgrade rolled back slot=A reason=slot A did not come up".to_string(),
            markers::NODE_READY.to_string(),
        ],
        Duration::from_secs(400),
    );
    assert_eq!(
        cluster.vm.watchdog_resets(),
        resets_before + 1,
        "the watchdog (not a panic or a reboot) reset the hung boot"
    );
    assert!(
        cluster
            .vm
            .console()
            .lines()
            .iter()
            .any(|l| l.text.contains("keelson: watchdog adopted")),
        "init adopts the watchdog on every good boot"
    );
    let (v, slot) = version_of(&nodectl, &admin);
    assert_eq!((v.as_str(), slot.as_str()), (V2, "B"));
    let health = json(&nodectl.ok(&admin, &["health", "-o", "json"]));
    assert!(
        health["watchdog"]
            .as_str()
            .unwrap_or_default()
            .contains("i6300ESB"),
        "health names the watchdog: {health}"
    );
}

/// The v2 root filesystem with `/usr/bin/kubelet` emptied (it can no longer
/// be executed), repacked; the rest is untouched.
fn rootfs_without_kubelet(rootfs: &Path, dir: &Path) -> PathBuf {
    let tree = dir.join("rootfs-tree");
    let status = Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&tree)
        .arg(rootfs)
        .status()
        .unwrap();
    assert!(status.success(), "unsquashfs {}", rootfs.display());
    std::fs::write(tree.join("usr/bin/kubelet"), b"").unwrap();
    squash(&tree, &dir.join("rootfs-no-kubelet.squashfs"))
}

/// A root filesystem whose `/sbin/init` blocks for ever (a static program
/// built here with gcc): stage 1 arms the watchdog, switches to it and
/// execs it, and nothing pets the watchdog again. It holds only what stage
/// 1 needs to switch (the mount points it moves).
fn rootfs_whose_init_hangs(dir: &Path) -> PathBuf {
    let tree = dir.join("hang-tree");
    for d in ["dev", "proc", "sys", "run", "usr/sbin"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("usr/sbin", tree.join("sbin")).unwrap();
    let source = dir.join("hang.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    )
    .unwrap();
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(tree.join("usr/sbin/init"))
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "gcc -static {}", source.display());
    squash(&tree, &dir.join("rootfs-init-hangs.squashfs"))
}

/// `mksquashfs` of `tree` into `out` (zstd, fast: these are test bundles),
/// removing the tree.
fn squash(tree: &Path, out: &Path) -> PathBuf {
    let status = Command::new("mksquashfs")
        .arg(tree)
        .arg(out)
        .args([
            "-noappend",
            "-all-root",
            "-no-xattrs",
            "-quiet",
            "-no-progress",
        ])
        .args(["-comp", "zstd", "-Xcompression-level", "3"])
        .status()
        .unwrap();
    assert!(status.success(), "mksquashfs {}", out.display());
    std::fs::remove_dir_all(tree).unwrap();
    out.to_path_buf()
}
