//! The plan an operator reads before applying a config: which changes are
//! live and which wait for a reboot, line by line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use machine_config::plan::{plan, Apply, ChangeKind};
use machine_config::schema::{DiskSelector, DiskTarget, Install};
use machine_config::MachineConfig;

const BASE: &str = r#"
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: worker-1
  kernel:
    modules:
      - name: nf_conntrack
        parameters:
          hashsize: "65536"
      - name: dummy
  sysctls:
    net.core.somaxconn: "4096"
    vm.max_map_count: "262144"
  files:
    - path: /etc/motd
      content: "hello\n"
network:
  interfaces:
    - name: eth0
      addresses: [192.168.10.21/24]
  nameservers: [192.168.10.1]
containerd:
  registryMirrors:
    docker.io: ["https://mirror.lab:5000"]
kubelet:
  apiServer: https://10.0.0.1:6443
  caCert: "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"
  token: abcdef.0123456789abcdef
  labels:
    zone: a
"#;

fn cfg(yaml: &str) -> MachineConfig {
    serde_saphyr::from_str(yaml).expect("test config parses")
}

fn example(name: &str) -> MachineConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    machine_config::parse::parse(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .config
}

/// Compares `text` with `tests/golden/plan/<name>.txt` (`UPDATE_GOLDEN=1`
/// rewrites it).
fn check_golden(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/plan")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        want,
        "{} differs (UPDATE_GOLDEN=1 to rewrite)",
        path.display()
    );
}

#[test]
fn example_plans_read_as_golden() {
    let minimal = example("minimal.yaml");
    let node = example("node.yaml");
    check_golden("first-node", &plan(None, &node).to_string());
    let up = plan(Some(&minimal), &node);
    check_golden("minimal-to-node", &up.to_string());
    assert!(
        up.needs_reboot(),
        "node.yaml adds kernel args (an install disk alone needs no reboot)"
    );
    let down = plan(Some(&node), &minimal);
    check_golden("node-to-minimal", &down.to_string());
}

#[test]
fn same_config_plans_nothing() {
    let c = cfg(BASE);
    let p = plan(Some(&c), &c);
    assert!(p.is_empty());
    assert!(!p.needs_reboot());
    assert_eq!(p.to_string(), "");
}

#[test]
fn a_mixed_change_reads_line_by_line() {
    let old = cfg(BASE);
    let mut new = old.clone();
    new.machine.hostname = "worker-2".into();
    new.machine.kernel.args.push("mitigations=off".into());
    new.machine
        .sysctls
        .insert("net.core.somaxconn".into(), "8192".into());
    new.machine.sysctls.remove("vm.max_map_count");
    // A prerequisite turned off explicitly: compared in effective form.
    new.machine
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    new.machine.kernel.modules[0]
        .parameters
        .insert("hashsize".into(), "131072".into());
    new.machine.kernel.modules.remove(1);
    new.machine
        .kernel
        .modules
        .push(machine_config::schema::KernelModule {
            name: "wireguard".into(),
            parameters: Default::default(),
            enabled: true,
        });
    new.machine.files[0].content = "hello, world\n".into();
    new.machine.files[0].mode = machine_config::FileMode(0o600);
    new.network.interfaces[0].addresses = vec!["192.168.10.22/24".parse().unwrap()];
    new.containerd.sandbox_image = "keelson.local/pause:2".into();
    new.kubelet.labels.insert("zone".into(), "b".into());
    new.shutdown.total = machine_config::Duration::from_secs(180);

    let p = plan(Some(&old), &new);
    let expected = "\
live    hostname: worker-1 -> worker-2
reboot  kernel args: + mitigations=off
reboot  module dummy: no longer loaded, from the next boot (a loaded module is not unloaded from a running kernel)
reboot  module nf_conntrack: parameters hashsize=65536 -> hashsize=131072 (read when the module loads; it is already loaded)
live    module wireguard: load
live    sysctl net.core.somaxconn: 4096 -> 8192
live    sysctl net.ipv4.ip_forward: 1 -> 0
live    sysctl vm.max_map_count: no longer set (the kernel keeps 262144 until the next boot, then its default)
live    file /etc/motd: content changed (6 -> 13 bytes), mode 0644 -> 0600
live    network interface eth0: addresses 192.168.10.21/24 -> 192.168.10.22/24
live    containerd sandbox image: keelson.local/pause:1 -> keelson.local/pause:2 (containerd restarts; running containers keep running)
live    kubelet labels: zone: a -> b (kubelet restarts; a Node already registered keeps its labels, change them with kubectl)
live    shutdown total deadline: 2m -> 3m
";
    assert_eq!(p.to_string(), expected);
    assert!(p.needs_reboot());
    // The same plan twice: deterministic.
    assert_eq!(plan(Some(&old), &new), p);

    // JSON for `nodectl config plan -o json`.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["changes"][1]["kind"], "kernelArgs");
    assert_eq!(json["changes"][1]["apply"], "reboot");
    assert_eq!(json["changes"][1]["path"], "machine.kernel.args");
    assert_eq!(json["changes"][5]["kind"], "sysctl");
    assert_eq!(json["changes"][5]["apply"], "live");
    assert_eq!(
        json["changes"][5]["path"],
        "machine.sysctls.net.core.somaxconn"
    );
    assert_eq!(
        json["changes"][5]["summary"],
        "sysctl net.core.somaxconn: 4096 -> 8192"
    );
}

#[test]
fn live_only_changes_do_not_need_a_reboot() {
    let old = cfg(BASE);
    let mut new = old.clone();
    new.machine
        .sysctls
        .insert("net.core.somaxconn".into(), "8192".into());
    new.containerd
        .registry_mirrors
        .insert("quay.io".into(), vec!["https://q.lab".into()]);
    new.kubelet
        .extra_args
        .insert("max-pods".into(), "50".into());
    new.api.port = 50001;
    let p = plan(Some(&old), &new);
    assert!(!p.needs_reboot(), "{p}");
    assert!(p.changes.iter().all(|c| c.apply == Apply::Live));
    assert_eq!(
        p.to_string(),
        "\
live    sysctl net.core.somaxconn: 4096 -> 8192
live    containerd mirrors for quay.io: (none) -> https://q.lab (read at the next pull, no restart)
live    kubelet extraArgs: + max-pods=50 (kubelet restarts)
live    api port: 50000 -> 50001 (apid restarts; clients must use the new port)
"
    );
}

#[test]
fn restating_a_prerequisite_changes_nothing_and_dropping_one_shows() {
    let old = cfg(BASE);
    let mut same = old.clone();
    // Stating what is built in anyway: no change.
    same.machine
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "1".into());
    same.machine
        .kernel
        .modules
        .push(machine_config::schema::KernelModule {
            name: "overlay".into(),
            parameters: Default::default(),
            enabled: true,
        });
    assert!(
        plan(Some(&old), &same).is_empty(),
        "{}",
        plan(Some(&old), &same)
    );

    let mut dropped = old.clone();
    dropped
        .machine
        .kernel
        .modules
        .push(machine_config::schema::KernelModule {
            name: "br_netfilter".into(),
            parameters: Default::default(),
            enabled: false,
        });
    let p = plan(Some(&old), &dropped);
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].kind, ChangeKind::Module);
    assert_eq!(p.changes[0].apply, Apply::Reboot);
    assert!(p.changes[0]
        .summary
        .starts_with("module br_netfilter: no longer loaded"));
}

#[test]
fn first_config_lists_everything_applied() {
    let new = cfg(BASE);
    let p = plan(None, &new);
    let text = p.to_string();
    for line in [
        "live    hostname: set to worker-1\n",
        "live    module overlay: load\n",
        "live    module br_netfilter: load\n",
        "live    module nf_conntrack: load with hashsize=65536\n",
        "live    sysctl net.ipv4.ip_forward: set to 1\n",
        "live    sysctl net.bridge.bridge-nf-call-iptables: set to 1\n",
        "live    sysctl net.core.somaxconn: set to 4096\n",
        "live    file /etc/motd: create (6 bytes, mode 0644)\n",
        "live    network interface eth0: configure (addresses 192.168.10.21/24)\n",
        "live    nameservers: (none) -> 192.168.10.1 (resolv.conf rewritten)\n",
        "live    containerd: start (sandbox image keelson.local/pause:1, 1 registry mirrors, 0 preload images)\n",
        "live    cni: bridge cni0 on 10.244.0.0/24 with masquerade (plugins in /usr/lib/cni, configs in /etc/cni/net.d)\n",
        "live    kubelet: start (API server https://10.0.0.1:6443)\n",
        "live    shutdown deadlines: kubelet 20s, pods 30s, containerd 10s, processes 10s, unmount 15s, total 2m\n",
        "live    api: listen on port 50000\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!p.needs_reboot(), "{text}");

    // Kernel args on a first config still wait for a reboot.
    let mut with_args = new.clone();
    with_args.machine.kernel.args.push("console=ttyS1".into());
    let p = plan(None, &with_args);
    assert!(p.needs_reboot());
    assert!(p
        .to_string()
        .contains("reboot  kernel args: + console=ttyS1\n"));
}

#[test]
fn secrets_never_appear_in_the_plan() {
    let old = cfg(BASE);
    let mut new = old.clone();
    new.kubelet.token = Some("zzzzzz.secretsecretsecret".into());
    let p = plan(Some(&old), &new);
    let text = p.to_string();
    assert_eq!(text, "live    kubelet token changed (kubelet restarts)\n");
    assert!(!serde_json::to_string(&p).unwrap().contains("secret"));
}

#[test]
fn install_disk_and_interface_removal() {
    let mut old = cfg(BASE);
    old.machine.install = Some(Install {
        disk: DiskTarget::Path("/dev/vda".into()),
        wipe: false,
    });
    let mut new = old.clone();
    new.machine.install = Some(Install {
        disk: DiskTarget::Path("/dev/vdb".into()),
        wipe: true,
    });
    new.network.interfaces.clear();
    let p = plan(Some(&old), &new);
    assert_eq!(
        p.to_string(),
        "\
live    install disk: /dev/vda -> /dev/vdb (wipe) (used only when a live node installs)
live    network interface eth0: no longer configured (its addresses and routes are removed)
"
    );
}

#[test]
fn install_disk_changes_never_need_a_reboot() {
    let mut old = cfg(BASE);
    old.machine.install = Some(Install {
        disk: DiskTarget::Path("/dev/vda".into()),
        wipe: false,
    });
    let mut new = old.clone();
    new.machine.install = Some(Install {
        disk: DiskTarget::Selector(DiskSelector {
            size: Some(">= 8GiB".parse().unwrap()),
            model: Some("QEMU HARDDISK".into()),
            ..DiskSelector::default()
        }),
        wipe: false,
    });
    let p = plan(Some(&old), &new);
    assert!(!p.needs_reboot(), "{p}");
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].kind, ChangeKind::Install);
    assert_eq!(p.changes[0].apply, Apply::Live);
    assert_eq!(p.changes[0].path, "machine.install");
    assert_eq!(
        p.to_string(),
        "live    install disk: /dev/vda -> size >= 8GiB, model \"QEMU HARDDISK\" \
         (used only when a live node installs)\n"
    );
    // Removing it is just as harmless.
    let mut none = old.clone();
    none.machine.install = None;
    let p = plan(Some(&new), &none);
    assert!(!p.needs_reboot(), "{p}");
    assert_eq!(
        p.to_string(),
        "live    install disk: size >= 8GiB, model \"QEMU HARDDISK\" -> (none) \
         (used only when a live node installs)\n"
    );
    // The same size written in another unit is no change.
    let mut same = new.clone();
    if let Some(Install {
        disk: DiskTarget::Selector(s),
        ..
    }) = &mut same.machine.install
    {
        s.size = Some(">=8192MiB".parse().unwrap());
    }
    assert!(plan(Some(&new), &same).is_empty());
}

#[test]
fn trusted_keys_are_named_by_fingerprint_whatever_their_encoding() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let spki = "MCowBQYDK2VwAyEA03f05i7dPSezzxoIE+lKR4Fx+n5wbwYvvimMy6pmxIM=";
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{spki}\n-----END PUBLIC KEY-----\n");
    let raw = b64.encode(&b64.decode(spki).unwrap()[12..]);
    let mut old = cfg(BASE);
    old.machine.trusted_upgrade_keys = vec![pem];
    let mut new = old.clone();
    new.machine.trusted_upgrade_keys = vec![raw.clone()];
    assert!(
        plan(Some(&old), &new).is_empty(),
        "same key, other encoding"
    );

    let other = b64.encode([7u8; 32]);
    new.machine.trusted_upgrade_keys = vec![other.clone()];
    let p = plan(Some(&old), &new);
    let lines: Vec<String> = p.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{p}");
    assert!(lines[0].starts_with("live    trusted upgrade key: - ed25519:"));
    assert!(lines[0].ends_with(" (bundles signed only by it are refused)"));
    assert!(lines[1].starts_with("live    trusted upgrade key: + ed25519:"));
    let text = p.to_string();
    assert!(!text.contains(&raw) && !text.contains(&other) && !text.contains("MCow"));
}
