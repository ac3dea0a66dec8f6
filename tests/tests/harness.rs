//! The harness's own parts, run for real without the Keelson image: the
//! guestfwd relay, a per-test disk (GPT made by sfdisk, STATE rewritten,
//! read back through the overlay) and a VM booting the firmware alone under
//! QEMU with its console, QMP socket and cleanup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keelson_tests::disk::{self, TestDisk};
use keelson_tests::gpt;
use keelson_tests::process::is_alive;
use keelson_tests::qemu::{Vm, VmError, VmSpec};

#[test]
fn relay_carries_both_directions_and_exits_when_the_host_side_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The host service: reads a request until the client half-closes, then
    // answers it reversed and closes.
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        conn.read_to_end(&mut request).unwrap();
        request.reverse();
        conn.write_all(&request).unwrap();
    });

    let mut relay = Command::new(env!("CARGO_BIN_EXE_keelson-relay"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut stdin = relay.stdin.take().unwrap();
    let sent = payload.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&sent).unwrap();
        // Dropping stdin is the guest closing its side.
    });
    let mut reply = Vec::new();
    relay
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut reply)
        .unwrap();
    writer.join().unwrap();
    server.join().unwrap();
    let status = relay.wait().unwrap();

    let mut expected = payload;
    expected.reverse();
    assert_eq!(reply.len(), expected.len());
    assert!(reply == expected, "relay corrupted the stream");
    assert!(status.success(), "relay exited with {status}");
    let mut stderr = String::new();
    relay
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.is_empty(),
        "relay wrote to stderr (the guest's socket): {stderr}"
    );

    // Nothing listening: the relay fails instead of hanging.
    drop(TcpListener::bind("127.0.0.1:0").unwrap());
    let status = Command::new(env!("CARGO_BIN_EXE_keelson-relay"))
        .arg("1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

/// A 64 MiB GPT image like keelson.raw in miniature: EFI, STATE (ext4 with
/// a file the image put there and an old config), VAR.
fn miniature_image(dir: &Path) -> std::path::PathBuf {
    let image = dir.join("mini.raw");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&image)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"label: gpt\n\
              size=8MiB, type=uefi, name=EFI\n\
              size=16MiB, type=linux, name=STATE\n\
              type=linux, name=VAR\n",
        )
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());

    let state = gpt::find_partition(&image, "STATE").unwrap();
    let tree = dir.join("old-state");
    std::fs::create_dir_all(tree.join("pki")).unwrap();
    std::fs::create_dir_all(tree.join("config")).unwrap();
    std::fs::write(tree.join("pki/identity"), "node identity").unwrap();
    std::fs::write(tree.join("config/current.yaml"), "old: config").unwrap();
    std::fs::write(tree.join("config/generation"), "7").unwrap();
    let status = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-L", "STATE", "-d"])
        .arg(&tree)
        .arg("-E")
        .arg(format!("offset={}", state.offset))
        .arg(&image)
        .arg(format!("{}k", state.size / 1024))
        .status()
        .unwrap();
    assert!(status.success());
    image
}

#[test]
fn test_disk_carries_the_config_in_state_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let image = miniature_image(dir.path());

    let parts = gpt::read_partitions(&image).unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["EFI", "STATE", "VAR"]);
    assert_eq!(parts[1].size, 16 << 20);
    assert_eq!(parts[1].offset, parts[0].offset + (8 << 20));
    let err = gpt::find_partition(&image, "SYSTEM-B")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no partition named \"SYSTEM-B\"") && err.contains("EFI, STATE, VAR"),
        "{err}"
    );

    let work = dir.path().join("vm");
    std::fs::create_dir_all(&work).unwrap();
    let yaml = "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: t\n";
    let test_disk = TestDisk::prepare(&image, &work, Some(yaml), 1 << 30).unwrap();

    // The original image is untouched.
    assert_eq!(
        disk::read_file(&image, "STATE", "/config/current.yaml").unwrap(),
        b"old: config"
    );
    // The copy carries the new config; the old config directory is gone,
    // the rest of STATE is kept.
    let raw = &test_disk.raw;
    assert_eq!(
        disk::read_file(raw, "STATE", "/config/current.yaml").unwrap(),
        yaml.as_bytes()
    );
    assert_eq!(
        disk::read_file(raw, "STATE", "/pki/identity").unwrap(),
        b"node identity"
    );
    let missing = disk::read_file(raw, "STATE", "/config/generation").unwrap_err();
    assert!(missing.to_string().contains("File not found"), "{missing}");
    let header = disk::dumpe2fs_header(raw, "STATE").unwrap();
    assert_eq!(header.state, "clean");
    assert!(
        header.features.iter().any(|f| f == "has_journal"),
        "{header:?}"
    );
    assert!(!header.needs_recovery());

    // The overlay is 1 GiB, backed by the copy; exported, it reads the same.
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&test_disk.overlay)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1u64 << 30);
    assert_eq!(info["format"], "qcow2");
    let exported = test_disk
        .export_raw(&dir.path().join("export.raw"))
        .unwrap();
    assert_eq!(
        disk::read_file(&exported, "STATE", "/config/current.yaml").unwrap(),
        yaml.as_bytes()
    );

    let snapshot = test_disk
        .snapshot_raw(&dir.path().join("snap.raw"))
        .unwrap();
    assert_eq!(
        disk::read_file(&snapshot, "STATE", "/pki/identity").unwrap(),
        b"node identity"
    );

    // VAR holds no filesystem: a clear error naming the tool, not garbage.
    let err = disk::dumpe2fs_header(&exported, "VAR")
        .unwrap_err()
        .to_string();
    assert!(err.contains("dumpe2fs"), "{err}");
}

#[test]
fn firmware_boots_under_tcg_with_console_qmp_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = VmSpec::new(None, dir.path());
    spec.memory_mib = 256;
    let mut vm = Vm::boot(&spec).unwrap();
    let pid = vm.pid();

    // OVMF finds no disk, tries the NIC's iPXE ROM (nothing to boot on a
    // restricted network) and says so on the serial console.
    let banner = r"iPXE \d+\.\d+\.\d+";
    vm.wait_for_line(banner, Duration::from_secs(120)).unwrap();
    let line = vm
        .wait_for_line(r"BdsDxe: failed to load Boot0001", Duration::from_secs(120))
        .unwrap();
    assert!(line.at > Duration::ZERO);
    assert_eq!(vm.status().unwrap(), "running");

    // A pattern that never comes times out with the console tail.
    let err = vm
        .wait_for_line("keelson: never printed", Duration::from_secs(1))
        .unwrap_err();
    match &err {
        VmError::Timeout { tail, .. } => assert!(tail.contains(&line.text), "{err}"),
        other => panic!("expected a timeout, got {other}"),
    }

    // A hard reset through QMP starts the firmware again: a new banner.
    vm.reset().unwrap();
    let again = vm.wait_for_line(banner, Duration::from_secs(120)).unwrap();
    assert!(again.at > line.at);

    // Dropping the VM leaves no QEMU behind.
    drop(vm);
    assert!(!is_alive(pid), "QEMU {pid} still running after drop");
}
