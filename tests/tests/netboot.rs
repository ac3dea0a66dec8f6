//! Network boot, end to end, on a machine with a blank disk: SeaBIOS' iPXE
//! (Debian's ipxe-qemu) gets the iPXE script from QEMU's built-in TFTP
//! server and loads the kernel and initramfs `make netboot` wrote; stage 1
//! gets an address by DHCP and fetches the root squashfs over HTTP from a
//! server on the host (reached through a guestfwd, `restrict=on`).
//!
//! The server first serves a root with one byte flipped: stage 1 must
//! refuse it, saying which hash it wanted and which it got, and retry. Then
//! the real root is put in place: the next attempt boots it, and fetches the
//! install payload beside it (checked by hash). With no Keelson partitions
//! on the disk, STATE and VAR live in RAM and the node says so (console,
//! `nodectl health`). Its config comes from the same server (`keelson.config=`,
//! added to the script `make netboot` wrote): absent at first (the node
//! says so and retries), then served; the node applies it by itself (the
//! kernel arguments in it are reported, not rebooted for: a reboot would
//! lose a config kept in RAM), joins the real control plane and becomes
//! Ready. Then a config naming the blank disk installs the node to it from
//! RAM; it reboots (UEFI now) into slot A of the disk with its config, and
//! powers off on the power button.
//!
//! Ignored by default; `make test` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use keelson_tests::http_server::HttpServer;
use keelson_tests::nodectl::{json, Nodectl, Operator};
use keelson_tests::qemu::{ExtraDisk, Firmware, GuestFwd, Tftp};
use keelson_tests::scenario::{markers, Cluster};
use machine_config::schema::{DiskTarget, Install};
use sha2::{Digest as _, Sha256};

const NODE: &str = "keelson-netboot-0";
/// Where the iPXE script (`make netboot`) expects the root's server.
const ROOT_SERVER: (std::net::Ipv4Addr, u16) = (std::net::Ipv4Addr::new(10, 0, 2, 100), 8080);
const ROOT: &str = "rootfs.squashfs";

fn sha256_hex(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

#[test]
#[ignore = "boots the image in QEMU (minutes); run by make test"]
fn a_diskless_node_boots_a_root_from_http_only_when_its_hash_matches() {
    let relay = Path::new(env!("CARGO_BIN_EXE_keelson-relay"));
    let netboot = keelson_tests::artifacts::netboot_dir().unwrap_or_else(|e| panic!("{e}"));
    let script = std::fs::read_to_string(netboot.join("keelson.ipxe")).unwrap();
    let good_root = netboot.join(ROOT);
    let good_sha = sha256_hex(&good_root);
    assert!(
        script.contains(&format!("keelson.root_sha256={good_sha}")),
        "the iPXE script names the root's hash:\n{script}"
    );

    // The HTTP server's directory: first a root with one byte flipped.
    let host = tempfile::tempdir().unwrap();
    let www = host.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let mut bytes = std::fs::read(&good_root).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(www.join(ROOT), &bytes).unwrap();
    let bad_sha = sha256_hex(&www.join(ROOT));
    // The install payload beside the root, as `make netboot` wrote it.
    for f in ["media.json", "esp"] {
        std::os::unix::fs::symlink(netboot.join(f), www.join(f)).unwrap();
    }
    drop(bytes);
    let http = HttpServer::start(&www).unwrap_or_else(|e| panic!("{e}"));

    let op = Operator::new(&host.path().join("secrets")).unwrap_or_else(|e| panic!("{e}"));
    let certificates = op.node_certificates(NODE).unwrap_or_else(|e| panic!("{e}"));
    // The boot files as `make netboot` wrote them, the script with the
    // config's URL added to the kernel line.
    let tftp_dir = host.path().join("tftp");
    std::fs::create_dir_all(&tftp_dir).unwrap();
    for f in ["vmlinuz", "initramfs.img"] {
        std::os::unix::fs::symlink(netboot.join(f), tftp_dir.join(f)).unwrap();
    }
    let config_url = format!("http://{}:{}/node.yaml", ROOT_SERVER.0, ROOT_SERVER.1);
    let with_config: String = script
        .lines()
        .map(|l| match l.starts_with("kernel ") {
            true => format!("{l} keelson.config={config_url}\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(tftp_dir.join("keelson.ipxe"), with_config).unwrap();
    let tftp = Tftp {
        dir: tftp_dir,
        bootfile: "keelson.ipxe".into(),
    };
    let forwards = vec![GuestFwd {
        guest_ip: ROOT_SERVER.0,
        guest_port: ROOT_SERVER.1,
        command: format!("{} {}", relay.display(), http.port()),
    }];
    // A blank disk: not used by the network boot (no Keelson partitions);
    // the node installs to it at the end.
    let target = host.path().join("target.raw");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let disks = vec![ExtraDisk {
        path: target.clone(),
        format: "raw".into(),
        serial: "keelson-target".into(),
    }];
    let mut cluster = Cluster::start_netboot(NODE, relay, tftp, forwards, disks, |cfg| {
        cfg.machine.certificates = Some(certificates.clone());
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("work directory: {}", cluster.work_dir().display());
    let endpoint = format!("127.0.0.1:{}", cluster.machine_api_port);
    let nodectl = Nodectl {
        bin: op.bin.clone(),
        endpoint: endpoint.clone(),
    };
    let admin = op
        .contexts(host.path(), "admin", "admin", &endpoint)
        .unwrap();

    // 1. The flipped root is refused, with both hashes, and retried.
    let refused = cluster
        .vm
        .wait_for_line(
            r"keelson: netboot root failed attempt=1 .*SHA-256 mismatch",
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", refused.at.as_secs_f64(), refused.text);
    assert!(
        refused.text.contains(&good_sha) && refused.text.contains(&bad_sha),
        "the refusal names the wanted and the served hash: {}",
        refused.text
    );
    assert!(refused.text.contains("retry_in_s="), "{}", refused.text);

    // 2. The real root in place (atomically): a later attempt boots it.
    let staged = www.join(".rootfs.tmp");
    std::fs::copy(&good_root, &staged).unwrap();
    std::fs::rename(&staged, www.join(ROOT)).unwrap();
    let ok = cluster
        .vm
        .wait_for_line(
            r"keelson: netboot root ok .* attempt=(\d+)",
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", ok.at.as_secs_f64(), ok.text);
    assert!(ok.text.contains(&good_sha), "{}", ok.text);
    let gets: Vec<_> = http
        .served()
        .into_iter()
        .filter(|s| s.path == format!("/{ROOT}"))
        .collect();
    assert!(gets.len() >= 2, "one refused and one good fetch: {gets:?}");

    // 3. No disk: STATE and VAR in RAM; maintenance mode, and no config
    // on the server yet.
    let ram = cluster
        .vm
        .wait_for_line(
            r"keelson: storage in RAM: STATE VAR",
            Duration::from_secs(180),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", ram.at.as_secs_f64(), ram.text);
    cluster
        .vm
        .wait_for_line(markers::MAINTENANCE, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = cluster
        .vm
        .wait_for_line(
            r"keelson: config from keelson.config failed attempt=\d+ .*404",
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", missing.at.as_secs_f64(), missing.text);

    // 4. The config served: the node applies it by itself and joins.
    let yaml = keelson_tests::node_config::to_yaml(&cluster.config).unwrap();
    std::fs::write(www.join(".node.yaml"), &yaml).unwrap();
    std::fs::rename(www.join(".node.yaml"), www.join("node.yaml")).unwrap();
    let applied = cluster
        .vm
        .wait_for_line(
            r"keelson: config from keelson.config applied .*generation=1",
            Duration::from_secs(180),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", applied.at.as_secs_f64(), applied.text);
    let ready = cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", ready.at.as_secs_f64(), ready.text);
    cluster
        .cp
        .wait_node_ready(NODE, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));

    // 5. Health says where the root came from and what is in RAM.
    let health = json(&nodectl.ok(&admin, &["health", "--wait", "-o", "json"]));
    let root = health["root"].as_str().unwrap_or_default();
    assert!(
        root.contains(&format!("http://10.0.2.100:8080/{ROOT}")) && root.contains(&good_sha),
        "{health}"
    );
    assert_eq!(
        health["inRam"],
        serde_json::json!(["STATE", "VAR"]),
        "{health}"
    );
    let problems = health["bootProblems"].to_string();
    assert!(
        !problems.contains("not found"),
        "a diskless network boot is not a problem: {problems}"
    );
    // The config is generation 1, from its URL, applied by keelson.config;
    // the node did not reboot for its kernel arguments.
    let history = nodectl.ok(&admin, &["config", "history", "-o", "json"]);
    assert!(
        history.contains(&config_url) && history.contains("keelson.config"),
        "{history}"
    );
    assert!(
        !cluster
            .vm
            .console()
            .lines()
            .iter()
            .any(|l| l.text.contains("shutdown begins")),
        "no reboot to apply the config"
    );
    // No A/B slots to upgrade: refused, saying why.
    let r = nodectl.run(Some(&admin), &["upgrade", "status"]);
    assert!(
        r.code != 0 && r.stderr.contains("booted from the network"),
        "upgrade on a network-booted node: {r:?}"
    );

    // 6. Installed to the blank disk from RAM: the payload came with the
    // root (checked by hash); the node reboots into the disk (UEFI now: the
    // installed disk boots like the raw image) with its config.
    let payload = cluster.vm.console().lines().iter().any(|l| {
        l.text
            .contains("keelson: netboot install payload ok files=")
    });
    assert!(payload, "the install payload came with the root");
    let mut cfg = cluster.config.clone();
    cfg.machine.install = Some(Install {
        disk: DiskTarget::Path("/dev/disk/by-id/virtio-keelson-target".into()),
        wipe: false,
    });
    let file = host.path().join("install.yaml");
    std::fs::write(&file, keelson_tests::node_config::to_yaml(&cfg).unwrap()).unwrap();
    let r = nodectl.run(
        Some(&admin),
        &["apply-config", "-f", &file.display().to_string()],
    );
    assert!(
        r.code == 0 && r.stdout.contains("installing to /dev/vda"),
        "{r:?}"
    );
    {
        let next = cluster.vm.next_start();
        next.firmware = Firmware::Ovmf;
        next.tftp = None;
    }
    let done = cluster
        .vm
        .wait_for_line(r"keelson: install (done|failed)", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", done.at.as_secs_f64(), done.text);
    assert!(done.text.contains("install done"), "{}", done.text);
    let ready = cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", ready.at.as_secs_f64(), ready.text);
    assert!(ready.text.contains("slot=A"), "{}", ready.text);
    let health = json(&nodectl.eventually(
        &admin,
        &["health", "--wait", "-o", "json"],
        Duration::from_secs(120),
    ));
    assert_eq!(health["root"], "slot A", "{health}");
    let history = nodectl.ok(&admin, &["config", "history", "-o", "json"]);
    assert!(history.contains("install"), "{history}");

    // 7. The power button ends it cleanly.
    let (clean, took) = cluster
        .power_off(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        clean,
        "powered off by itself; console:\n{}",
        cluster.vm.console_tail(40)
    );
    eprintln!("powered off in {:.1} s", took.as_secs_f64());
}
