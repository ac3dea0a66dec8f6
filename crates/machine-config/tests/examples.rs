//! The shipped example configs load without errors, with exactly the
//! warnings listed here, and use what they claim to show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn example(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn node_yaml_is_a_full_valid_worker() {
    let doc = machine_config::parse(&example("node.yaml")).unwrap();
    let report = doc.validate();
    assert!(report.errors.is_empty(), "errors:\n{report}");
    assert!(report.warnings.is_empty(), "warnings:\n{report}");

    let cfg = &doc.config;
    assert_eq!(cfg.machine.hostname, "worker-1");
    assert!(!cfg.machine.kernel.modules[0].parameters.is_empty());
    assert_eq!(cfg.machine.trusted_upgrade_keys.len(), 2);
    let certs = cfg.machine.certificates.as_ref().unwrap();
    assert!(certs.cert.is_some() && certs.key.is_some());
    let ifaces = &cfg.network.interfaces;
    assert!(ifaces.iter().any(|i| i.dhcp && i.name.is_some()));
    let static_if = ifaces.iter().find(|i| i.mac.is_some()).unwrap();
    assert!(static_if.addresses.iter().any(|a| a.addr.is_ipv4()));
    assert!(static_if.addresses.iter().any(|a| a.addr.is_ipv6()));
    assert!(!static_if.routes.is_empty());
    assert!(!cfg.containerd.registry_mirrors.is_empty());
    assert!(!cfg.containerd.preload_images.is_empty());
    assert!(cfg.kubelet.api_server.is_some() && cfg.kubelet.token.is_some());
    assert!(!cfg.kubelet.labels.is_empty() && !cfg.kubelet.taints.is_empty());
    assert!(cfg.kubernetes.is_some());

    // Locations point where a reader of the file would look.
    let text = String::from_utf8(example("node.yaml")).unwrap();
    let loc = doc
        .location_of("network.interfaces[1].addresses[1]")
        .unwrap();
    let line = text.lines().nth(loc.line - 1).unwrap();
    assert_eq!(&line[loc.column - 1..], "fd00:10::21/64");

    // And the same through the one-call API.
    let loaded = machine_config::load(&example("node.yaml")).unwrap();
    assert_eq!(loaded.config, doc.config);
    assert!(loaded.warnings.is_empty());
}

#[test]
fn minimal_yaml_is_valid_and_takes_every_default() {
    let loaded = machine_config::load(&example("minimal.yaml")).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let cfg = loaded.config;
    assert_eq!(cfg.machine.hostname, "node-1");
    assert_eq!(cfg.cni.bin_dir, "/usr/lib/cni");
    assert_eq!(cfg.containerd.sandbox_image, "keelson.local/pause:1");
    assert!(cfg.network.interfaces.is_empty());
}

#[test]
fn examples_survive_a_write_and_reparse() {
    for name in ["node.yaml", "minimal.yaml"] {
        let cfg = machine_config::parse(&example(name)).unwrap().config;
        let yaml = machine_config::to_yaml(&cfg).unwrap();
        let again = machine_config::parse(yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"))
            .config;
        assert_eq!(again, cfg, "{name}");
    }
}
