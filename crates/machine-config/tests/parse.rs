//! Parse errors name the YAML path, the parser's line and column, and what
//! was expected — one test per class of error a user can make.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use machine_config::{parse, Location, ParseErrorKind};

const HEAD: &str =
    "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\n";

/// Parses `HEAD + rest` and asserts the error's path, line, column, kind,
/// and that its message and display contain `needle`.
fn assert_error(
    rest: &str,
    path: &str,
    line: usize,
    column: usize,
    kind: ParseErrorKind,
    needle: &str,
) {
    let text = format!("{HEAD}{rest}");
    let err = parse(text.as_bytes())
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"));
    assert_eq!(err.path, path, "{err}");
    assert_eq!(err.location, Some(Location { line, column }), "{err}");
    assert_eq!(err.kind, kind, "{err}");
    assert!(err.message.contains(needle), "{err:?} lacks {needle:?}");
    assert_eq!(
        err.to_string(),
        format!("{path}: line {line} col {column}: {}", err.message)
    );
}

#[test]
fn bad_cidr_names_path_line_and_column() {
    let rest = "network:\n  interfaces:\n    - name: eth0\n      dhcp: true\n    - name: eth1\n      addresses:\n        - 10.0.0.5/24\n        - 10.0.0.300/24\n";
    assert_error(
        rest,
        "network.interfaces[1].addresses[1]",
        12,
        11,
        ParseErrorKind::InvalidValue,
        "\"10.0.0.300/24\" is not an IPv4 or IPv6 CIDR",
    );
}

#[test]
fn unknown_field_is_named_with_the_allowed_fields() {
    assert_error(
        "network:\n  interfaces:\n    - nmae: eth0\n",
        "network.interfaces[0].nmae",
        7,
        7,
        ParseErrorKind::UnknownField,
        "unknown field \"nmae\"; allowed fields here: name, mac, dhcp, addresses, routes, mtu",
    );
    assert_error(
        "swapfile: true\n",
        "swapfile",
        5,
        1,
        ParseErrorKind::UnknownField,
        "allowed fields here: apiVersion, kind, machine",
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_error(
        "network:\n  interfaces:\n    - name: eth0\n      dhcp: yes\n",
        "network.interfaces[0].dhcp",
        8,
        13,
        ParseErrorKind::InvalidValue,
        "true/false",
    );
    assert_error(
        "api:\n  port: 70000\n",
        "api.port",
        6,
        9,
        ParseErrorKind::InvalidValue,
        "expected a whole number from 0 to 65535",
    );
    assert_error(
        "network:\n  interfaces:\n    - name: eth0\n      mtu: 99999999999999999999999999\n",
        "network.interfaces[0].mtu",
        8,
        12,
        ParseErrorKind::InvalidValue,
        "0 to 4294967295",
    );
    assert_error(
        "shutdown:\n  total: 120\n",
        "shutdown.total",
        6,
        10,
        ParseErrorKind::InvalidValue,
        "\"120\" is not a duration",
    );
    assert_error(
        "  files:\n    - path: /etc/x\n      content: x\n      mode: rwx\n",
        "machine.files[0].mode",
        8,
        13,
        ParseErrorKind::InvalidValue,
        "is not a file mode",
    );
    assert_error(
        "kubelet:\n  taints:\n    - key: a\n      effect: NoWay\n",
        "kubelet.taints[0].effect",
        8,
        15,
        ParseErrorKind::InvalidValue,
        "NoWay",
    );
    assert_error(
        "network:\n  nameservers: [1.1.1.1, dns.example]\n",
        "network.nameservers[1]",
        6,
        26,
        ParseErrorKind::InvalidValue,
        "",
    );
}

#[test]
fn duplicate_keys_are_refused_where_they_repeat() {
    assert_error(
        "  sysctls:\n    vm.swappiness: \"10\"\n    vm.swappiness: \"20\"\n",
        "machine.sysctls.vm.swappiness",
        7,
        5,
        ParseErrorKind::DuplicateKey,
        "duplicate key \"vm.swappiness\"",
    );
    assert_error(
        "machine:\n  hostname: n2\n",
        "machine",
        5,
        1,
        ParseErrorKind::DuplicateKey,
        "duplicate key \"machine\"",
    );
}

#[test]
fn missing_fields_and_wrong_version() {
    let err = parse(b"apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\n").unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::MissingField);
    assert!(err.message.contains("\"machine\""), "{err}");
    assert!(err.location.is_some(), "{err}");

    let err = parse(b"apiVersion: keelson.dev/v1\nkind: MachineConfig\nmachine:\n  hostname: a\n")
        .unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::WrongVersion);
    assert_eq!(err.path, "apiVersion");
    assert_eq!(
        err.location,
        Some(Location {
            line: 1,
            column: 13
        })
    );
    assert!(
        err.message.contains("expected \"keelson.dev/v1alpha1\""),
        "{err}"
    );

    let err = parse(b"apiVersion: keelson.dev/v1alpha1\nkind: Pod\nmachine:\n  hostname: a\n")
        .unwrap_err();
    assert_eq!(
        (err.path.as_str(), err.location),
        ("kind", Some(Location { line: 2, column: 7 }))
    );
}

#[test]
fn a_second_document_is_refused() {
    let text = format!("{HEAD}---\n{HEAD}");
    let err = parse(text.as_bytes()).unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::MultipleDocuments);
    assert_eq!(err.location.map(|l| l.line), Some(6));
}

#[test]
fn malformed_yaml_is_a_located_syntax_error() {
    let err = parse(format!("{HEAD}network:\n  interfaces: [\n").as_bytes()).unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::Syntax, "{err}");
    assert!(err.location.is_some(), "{err}");
    let err = parse(b"apiVersion: \"unterminated\nkind: x\n").unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::Syntax, "{err}");
    assert!(err.location.is_some(), "{err}");
}

#[test]
fn location_index_knows_keys_values_and_items() {
    let text = format!(
        "{HEAD}  sysctls:\n    net.core.somaxconn: \"4096\"\nnetwork:\n  interfaces:\n    - name: eth0\n      addresses: [10.0.0.1/24, fd00::1/64]\n"
    );
    let doc = parse(text.as_bytes()).unwrap();
    assert_eq!(
        doc.location_of("machine.hostname"),
        Some(Location {
            line: 4,
            column: 13
        })
    );
    assert_eq!(
        doc.location_of("machine.sysctls.net.core.somaxconn"),
        Some(Location {
            line: 6,
            column: 25
        })
    );
    assert_eq!(
        doc.key_location_of("machine.sysctls.net.core.somaxconn"),
        Some(Location { line: 6, column: 5 })
    );
    assert_eq!(
        doc.location_of("network.interfaces[0].addresses[1]"),
        Some(Location {
            line: 10,
            column: 32
        })
    );
    assert_eq!(doc.location_of("network.interfaces[1]"), None);
    assert_eq!(doc.location_of("kubelet"), None);
}

#[test]
fn writer_output_parses_back() {
    let doc = parse(format!("{HEAD}  sysctls:\n    vm.swappiness: \"10\"\n").as_bytes()).unwrap();
    let yaml = machine_config::to_yaml(&doc.config).unwrap();
    assert_eq!(parse(yaml.as_bytes()).unwrap().config, doc.config);
}

#[test]
fn install_disk_is_a_path_or_a_selector() {
    use machine_config::schema::{DiskSelector, DiskTarget};
    let disk = |rest: &str| {
        let text = format!("{HEAD}  install:\n{rest}");
        let doc = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        doc.config.machine.install.unwrap().disk
    };
    assert_eq!(
        disk("    disk: /dev/vda\n"),
        DiskTarget::Path("/dev/vda".into())
    );
    assert_eq!(
        disk("    disk: \"/dev/disk/by-id/virtio-abc\"\n"),
        DiskTarget::Path("/dev/disk/by-id/virtio-abc".into())
    );
    let sel = disk(
        "    disk:\n      size: \">= 8GiB\"\n      model: \"QEMU HARDDISK\"\n      serial: keelson-root\n      byId: virtio-keelson-root\n",
    );
    assert_eq!(
        sel,
        DiskTarget::Selector(DiskSelector {
            size: Some(">= 8GiB".parse().unwrap()),
            model: Some("QEMU HARDDISK".into()),
            serial: Some("keelson-root".into()),
            by_id: Some("virtio-keelson-root".into()),
        })
    );
    // Flow style, and a bare number is a size in bytes.
    assert_eq!(
        disk("    disk: {size: 21474836480}\n"),
        DiskTarget::Selector(DiskSelector {
            size: Some("20GiB".parse().unwrap()),
            ..DiskSelector::default()
        })
    );
    // Written back as the plain string or the mapping.
    let mut cfg = parse(format!("{HEAD}  install:\n    disk: /dev/vda\n").as_bytes())
        .unwrap()
        .config;
    let yaml = machine_config::to_yaml(&cfg).unwrap();
    assert!(yaml.contains("disk: /dev/vda\n"), "{yaml}");
    if let Some(install) = &mut cfg.machine.install {
        install.disk = sel;
    }
    let yaml = machine_config::to_yaml(&cfg).unwrap();
    assert!(
        yaml.contains("size: '>= 8GiB'") || yaml.contains("size: \">= 8GiB\""),
        "{yaml}"
    );
    assert!(yaml.contains("byId: virtio-keelson-root"), "{yaml}");
    assert_eq!(parse(yaml.as_bytes()).unwrap().config, cfg);
}

#[test]
fn install_disk_selector_errors_are_located_inside_it() {
    let install = "  install:\n    disk:\n";
    assert_error(
        &format!("{install}      size: \">= 8GiB\"\n      modle: QEMU\n"),
        "machine.install.disk.modle",
        8,
        7,
        ParseErrorKind::UnknownField,
        "unknown field \"modle\"; allowed fields here: size, model, serial, byId",
    );
    assert_error(
        &format!("{install}      size: 8 GiBs\n"),
        "machine.install.disk.size",
        7,
        13,
        ParseErrorKind::InvalidValue,
        "\"8 GiBs\": unknown unit \"GiBs\" (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)",
    );
    assert_error(
        &format!("{install}      model: a\n      model: b\n"),
        "machine.install.disk.model",
        8,
        7,
        ParseErrorKind::DuplicateKey,
        "duplicate key \"model\"",
    );
    let text = format!("{HEAD}  install:\n    disk: [/dev/vda]\n");
    let err = parse(text.as_bytes()).unwrap_err();
    assert_eq!(err.path, "machine.install.disk", "{err}");
    assert_eq!(err.kind, ParseErrorKind::InvalidValue, "{err}");
    assert!(
        err.message
            .contains("expected a device path (/dev/vda, /dev/disk/by-id/NAME) or a disk selector"),
        "{err}"
    );
}
