//! Validation reports every problem of a config at once, each at the path,
//! line and column a user would look at.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use machine_config::{parse, validate, Location, Severity};

/// One config with a problem in nearly every section.
const BAD: &str = r#"apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: Bad_Host
  install:
    disk: sda
  kernel:
    modules:
      - name: "nf conntrack"
      - name: overlay
        enabled: false
      - name: nf-nat
        parameters:
          9bad: "1"
      - name: nf_nat
    args: ["keelson.slot=B"]
  sysctls:
    net/ipv4/ip_forward: "1"
    net..core: "1"
    net.ipv4.ip_forward: "0"
  files:
    - path: /usr/bin/evil
      content: x
    - path: /etc/../root/.ssh/authorized_keys
      content: x
    - path: /etc/tool
      content: x
      mode: "4755"
    - path: /etc/tool
      content: y
    - path: relative/path
      content: x
  swap:
    enabled: true
  trustedUpgradeKeys:
    - not-base64!
    - AAAA
  certificates:
    ca: "hello"
    cert: |
      -----BEGIN CERTIFICATE-----
      AAAA
      -----END CERTIFICATE-----
network:
  interfaces:
    - name: eth0
      mac: "52:54:00:00:00:01"
    - {}
    - name: eth1
      addresses: [192.168.1.10/24]
      routes:
        - to: 0.0.0.0/0
          via: 10.0.0.1
      mtu: 20
    - name: eth1
      dhcp: true
    - mac: "52:54:00:zz:00:01"
containerd:
  extraConfig: |
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
  preloadImages: [/opt/images/a.tar]
  sandboxImage: ""
cni:
  binDir: opt/cni/bin
kubelet:
  apiServer: http://10.0.0.1:6443
  labels:
    node-role.kubernetes.io/worker: ""
    "bad key!": x
  extraArgs:
    cgroup-driver: systemd
    --max-pods: "10"
  taints:
    - key: a
      effect: NoSchedule
    - key: a
      effect: NoSchedule
shutdown:
  kubelet: 0s
  pods: 90s
  total: 1m
upgrade:
  healthyAfter: 10m
  healthTimeout: 5m
"#;

#[test]
fn every_problem_is_reported_with_its_location() {
    let doc = parse(BAD.as_bytes()).unwrap();
    let report = doc.validate();
    println!("{report}");
    assert!(!report.is_ok());

    // (severity, path, line, column, words of the message)
    let expected: &[(Severity, &str, usize, usize, &str)] = &[
        (
            Severity::Error,
            "machine.hostname",
            4,
            13,
            "not a valid hostname",
        ),
        (
            Severity::Error,
            "machine.install.disk",
            6,
            11,
            "not an absolute path",
        ),
        (
            Severity::Error,
            "machine.kernel.modules[0].name",
            9,
            15,
            "is not allowed",
        ),
        (
            Severity::Error,
            "machine.kernel.modules[2].parameters.9bad",
            14,
            11,
            "not a module parameter name",
        ),
        (
            Severity::Error,
            "machine.kernel.modules[3].name",
            15,
            15,
            "same module as \"nf-nat\"",
        ),
        (
            Severity::Error,
            "machine.kernel.args[0]",
            16,
            12,
            "Keelson sets `keelson.`",
        ),
        (
            Severity::Error,
            "machine.sysctls.net/ipv4/ip_forward",
            18,
            5,
            "contains '/'",
        ),
        (
            Severity::Error,
            "machine.sysctls.net..core",
            19,
            5,
            "empty segment",
        ),
        (
            Severity::Error,
            "machine.files[0].path",
            22,
            13,
            "outside /etc and /var",
        ),
        (
            Severity::Error,
            "machine.files[1].path",
            24,
            13,
            "\"..\" component",
        ),
        (
            Severity::Error,
            "machine.files[3].path",
            29,
            13,
            "written twice",
        ),
        (
            Severity::Error,
            "machine.files[4].path",
            31,
            13,
            "not an absolute path",
        ),
        (
            Severity::Error,
            "machine.swap.enabled",
            34,
            14,
            "kubelet 1.20 refuses",
        ),
        (
            Severity::Error,
            "machine.trustedUpgradeKeys[0]",
            36,
            7,
            "not base64",
        ),
        (
            Severity::Error,
            "machine.trustedUpgradeKeys[1]",
            37,
            7,
            "32 bytes, this is 3 bytes",
        ),
        (Severity::Error, "machine.certificates.ca", 39, 9, "not PEM"),
        (
            Severity::Error,
            "machine.certificates.cert",
            41,
            7,
            "not a valid X.509 certificate",
        ),
        (
            Severity::Error,
            "machine.certificates.key",
            39,
            5,
            "without its private key",
        ),
        (
            Severity::Error,
            "network.interfaces[0]",
            46,
            7,
            "both name and mac",
        ),
        (
            Severity::Error,
            "network.interfaces[1]",
            48,
            7,
            "give either name or mac",
        ),
        (
            Severity::Error,
            "network.interfaces[2].mtu",
            54,
            12,
            "outside 68..=65535",
        ),
        (
            Severity::Error,
            "network.interfaces[2].routes[0].via",
            53,
            16,
            "not inside any static address",
        ),
        (
            Severity::Error,
            "network.interfaces[3].name",
            55,
            13,
            "already configured at network.interfaces[2]",
        ),
        (
            Severity::Error,
            "network.interfaces[4].mac",
            57,
            12,
            "not a MAC address",
        ),
        (
            Severity::Error,
            "containerd.extraConfig",
            60,
            5,
            "SystemdCgroup cannot be changed (Keelson sets false)",
        ),
        (
            Severity::Error,
            "containerd.preloadImages[0]",
            62,
            19,
            "neither under /var",
        ),
        (
            Severity::Error,
            "containerd.sandboxImage",
            63,
            17,
            "is empty",
        ),
        (
            Severity::Error,
            "cni.binDir",
            65,
            11,
            "not an absolute path",
        ),
        (
            Severity::Error,
            "kubelet.apiServer",
            67,
            14,
            "not an https:// URL",
        ),
        (
            Severity::Error,
            "kubelet.caCert",
            67,
            3,
            "required with apiServer",
        ),
        (Severity::Error, "kubelet.token", 67, 3, "no credentials"),
        (
            Severity::Error,
            "kubelet.labels.node-role.kubernetes.io/worker",
            69,
            5,
            "kubelet refuses to start",
        ),
        (
            Severity::Error,
            "kubelet.labels.bad key!",
            70,
            5,
            "label key",
        ),
        (
            Severity::Error,
            "kubelet.extraArgs.cgroup-driver",
            72,
            5,
            "set by Keelson",
        ),
        (
            Severity::Error,
            "kubelet.extraArgs.--max-pods",
            73,
            5,
            "without the leading dashes",
        ),
        (Severity::Error, "kubelet.taints[1]", 77, 7, "given twice"),
        (
            Severity::Error,
            "shutdown.kubelet",
            80,
            12,
            "longer than 0s",
        ),
        (
            Severity::Error,
            "shutdown.total",
            82,
            10,
            "shorter than the steps",
        ),
        (
            Severity::Error,
            "upgrade.healthTimeout",
            85,
            18,
            "longer than healthyAfter",
        ),
        (
            Severity::Warning,
            "machine.sysctls.net.ipv4.ip_forward",
            20,
            26,
            "pods cannot reach",
        ),
        (
            Severity::Warning,
            "machine.kernel.modules[1]",
            10,
            9,
            "containerd's overlayfs",
        ),
        (Severity::Warning, "machine.files[2].mode", 28, 13, "setuid"),
        (
            Severity::Warning,
            "network.interfaces[1]",
            48,
            7,
            "neither dhcp nor addresses",
        ),
    ];
    let all: Vec<_> = report.errors.iter().chain(&report.warnings).collect();
    for (severity, path, line, column, words) in expected {
        let found = all
            .iter()
            .find(|p| p.path == *path && p.severity == *severity && p.message.contains(words));
        let p = found.unwrap_or_else(|| panic!("no {severity:?} at {path} saying {words:?}"));
        assert_eq!(
            p.location,
            Some(Location {
                line: *line,
                column: *column
            }),
            "{p}"
        );
        assert_eq!(
            p.to_string(),
            format!("{path}: line {line} col {column}: {}", p.message)
        );
    }
    let expected_errors = expected.iter().filter(|e| e.0 == Severity::Error).count();
    assert!(
        report.errors.len() >= expected_errors,
        "{} errors, expected at least {expected_errors}",
        report.errors.len()
    );

    // The unlocated entry point finds exactly the same problems.
    let bare = validate(&doc.config);
    assert_eq!(bare.errors.len(), report.errors.len());
    assert!(bare.errors.iter().all(|p| p.location.is_none()));
    assert_eq!(
        bare.errors[0].to_string(),
        format!("machine.hostname: {}", bare.errors[0].message)
    );

    // load() refuses it and lists every problem, one per line.
    let err = machine_config::load(BAD.as_bytes()).unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text.lines().count(),
        report.errors.len() + report.warnings.len()
    );
    assert!(text
        .lines()
        .next()
        .unwrap()
        .starts_with("error: machine.hostname: line 4 col 13: "));
}

/// A config that is valid except for one thing, to test one rule alone.
fn problems_of(rest: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\n{rest}"
    );
    let report = parse(text.as_bytes()).unwrap().validate();
    report
        .errors
        .iter()
        .chain(&report.warnings)
        .map(|p| format!("{:?} {p}", p.severity))
        .collect()
}

#[test]
fn gateway_rules_follow_addresses_dhcp_and_link_local() {
    // Reachable from a static network: fine.
    assert!(problems_of("network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.0.5/24]\n      routes:\n        - {to: 0.0.0.0/0, via: 10.0.0.1}\n").is_empty());
    // DHCP interface: the subnet is unknown until the lease, so accepted.
    assert!(problems_of("network:\n  interfaces:\n    - name: eth0\n      dhcp: true\n      routes:\n        - {to: 10.9.0.0/16, via: 172.16.0.1}\n").is_empty());
    // IPv6 link-local gateways are always on-link.
    assert!(problems_of("network:\n  interfaces:\n    - name: eth0\n      addresses: [fd00::5/64]\n      routes:\n        - {to: \"::/0\", via: \"fe80::1\"}\n").is_empty());
    // Static only and outside: refused, naming the networks it has.
    let p = problems_of("network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.0.5/24]\n      routes:\n        - {to: 10.9.0.0/16, via: 10.1.0.1}\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("network.interfaces[0].routes[0].via: line 10 col 34: gateway 10.1.0.1 is not inside any static address of this interface (10.0.0.0/24)"), "{p:?}");
    // Host bits in a destination, mixed families.
    let p = problems_of("network:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.0.5/24]\n      routes:\n        - {to: 10.9.1.0/16, via: 10.0.0.1}\n        - {to: \"::/0\", via: 10.0.0.1}\n");
    assert!(
        p.iter().any(|m| m.contains("did you mean 10.9.0.0/16")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.contains("different IP families")),
        "{p:?}"
    );
}

#[test]
fn credentials_and_drain_rules() {
    assert!(problems_of("kubelet:\n  token: abc.def\n")
        .iter()
        .any(|m| m.contains("no apiServer")));
    let p = problems_of("kubernetes:\n  drainTimeout: 1m\n");
    assert!(
        p.iter()
            .any(|m| m.contains("kubernetes.endpoint")
                && m.contains("draining needs the API server")),
        "{p:?}"
    );
    assert!(problems_of("kubernetes:\n  drainTimeout: 0s\n").is_empty());
    let p = problems_of("upgrade:\n  healthyAfter: 1m\n  healthTimeout: 1m\n");
    assert!(
        p[0].contains(
            "upgrade.healthTimeout: line 7 col 18: 1m must be longer than healthyAfter (1m)"
        ),
        "{p:?}"
    );
    let p = problems_of("api:\n  port: 10250\n");
    assert!(p[0].contains("kubelet's API"), "{p:?}");
}

#[test]
fn warnings_do_not_stop_a_config() {
    let text = "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\n  sysctls:\n    net.bridge.bridge-nf-call-iptables: \"0\"\ncni:\n  binDir: /opt/cni/bin\n";
    let loaded = machine_config::load(text.as_bytes()).unwrap();
    let paths: Vec<_> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "machine.sysctls.net.bridge.bridge-nf-call-iptables",
            "cni.binDir"
        ]
    );
    assert!(
        loaded.warnings[0].message.contains("Service traffic"),
        "{}",
        loaded.warnings[0]
    );
    assert!(
        loaded.warnings[1].message.contains("NotReady"),
        "{}",
        loaded.warnings[1]
    );
}

#[test]
fn install_disk_paths_and_selectors_are_checked_field_by_field() {
    let install = |disk: &str| problems_of(&format!("  install:\n    disk: {disk}\n"));
    assert!(install("/dev/vda").is_empty());
    assert!(install("/dev/nvme0n1").is_empty());
    assert!(install("/dev/disk/by-id/virtio-keelson-root").is_empty());
    assert!(install("{size: \">= 8GiB\"}").is_empty());
    assert!(install("{model: QEMU HARDDISK, serial: x, byId: virtio-x}").is_empty());

    let p = install("vda");
    assert_eq!(
        p,
        ["Error machine.install.disk: line 6 col 11: \"vda\" is not an absolute path"]
    );
    let p = install("/var/vda");
    assert!(p[0].contains("is not a device path under /dev"), "{p:?}");
    let p = install("/dev/disk/by-path/pci-0000:00:04.0");
    assert!(
        p[0].contains("cannot be resolved by the installer (a node has no udev)"),
        "{p:?}"
    );
    assert_eq!(
        install("{}"),
        [
            "Error machine.install.disk: line 6 col 11: a disk selector needs at least one of \
          size, model, serial, byId"
        ]
    );
    assert_eq!(
        install("{size: \"< 1\"}"),
        [
            "Error machine.install.disk.size: line 6 col 18: \"< 1B\" matches no disk: \
          every disk has at least one byte"
        ]
    );
    assert_eq!(
        install("{model: \"  \"}"),
        [
            "Error machine.install.disk.model: line 6 col 19: model is empty: \
          leave it out to accept any model"
        ]
    );
    assert!(install("{serial: \"\"}")[0].contains("machine.install.disk.serial"));
    assert!(install("{serial: \"a\\tb\"}")[0].contains("control characters"));
    assert!(install("{byId: \"\"}")[0].contains("machine.install.disk.byId"));
    assert_eq!(
        install("{byId: a/b}"),
        [
            "Error machine.install.disk.byId: line 6 col 18: \"a/b\" contains '/': \
          byId is one name under /dev/disk/by-id"
        ]
    );
    let p = install("{byId: /dev/disk/by-id/virtio-x}");
    assert!(
        p[0].contains(
            "byId takes the name only (\"virtio-x\"), or write disk: /dev/disk/by-id/virtio-x"
        ),
        "{p:?}"
    );
    assert!(install("{byId: \"a b\"}")[0].contains("not a /dev/disk/by-id name"));
    // Every problem at once.
    assert_eq!(install("{byId: \"\", model: \"\", size: \"0\"}").len(), 3);
}
