//! Golden tests of the renderers: every file a node writes for a few
//! representative configs, compared byte for byte with `tests/golden/`
//! (`UPDATE_GOLDEN=1 cargo test -p machine-config --test render_golden`
//! rewrites them; review the diff). Then semantic checks of what matters on
//! a node: containerd's TOML has the CNI directories, the cgroupfs driver
//! and the sandbox image; extraConfig merges and cannot break those;
//! kubelet's command line and configuration agree with containerd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use machine_config::render::{self, NodeFacts, RenderError};
use machine_config::MachineConfig;

/// A full worker: static and DHCP interfaces, more nameservers than the C
/// library reads, mirrors, kubelet joined with a token, labels, taints.
const FULL: &str = r#"
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: worker-1.lab.example
  kernel:
    modules:
      - name: nf_conntrack
        parameters:
          hashsize: "65536"
  sysctls:
    net.core.somaxconn: "8192"
  files:
    - path: /etc/motd
      content: "managed by keelson\n"
    - path: /var/lib/app/token
      content: s3cr3t
      mode: "0600"
network:
  interfaces:
    - name: eth0
      addresses: [192.168.10.21/24, "fd00:10::21/64"]
      routes:
        - to: 0.0.0.0/0
          via: 192.168.10.1
    - mac: "52:54:00:12:34:57"
      dhcp: true
  nameservers: [192.168.10.1, 9.9.9.9]
  searchDomains: [lab.example]
  extraHosts:
    - ip: 192.168.10.5
      hostnames: [api.lab.example, api]
containerd:
  registryMirrors:
    docker.io: ["https://mirror.lab.example:5000", "http://10.0.0.9:5000"]
    registry.lab.example:5443: ["https://cache.lab.example"]
  extraConfig: |
    [plugins."io.containerd.grpc.v1.cri"]
    max_container_log_line_size = 32768
kubelet:
  apiServer: https://api.lab.example:6443
  caCert: |
    -----BEGIN CERTIFICATE-----
    MIIBdummyCAcertificateForGoldenTestsOnly
    -----END CERTIFICATE-----
  token: abcdef.0123456789abcdef
  labels:
    topology.kubernetes.io/zone: rack-2
    node-role.kubernetes.io/worker: ""
  taints:
    - key: dedicated
      value: storage
      effect: NoSchedule
    - key: maintenance
      effect: NoExecute
  clusterDns: [10.96.0.10]
  nodeStatusUpdateFrequency: 2s
  extraArgs:
    max-pods: "50"
    v: "2"
"#;

/// The smallest config: a hostname. kubelet runs standalone.
const MINIMAL: &str = r#"
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: lab1
"#;

/// The user's own kubeconfig (CA embedded), an IPv6 pod network without
/// masquerade, node IP chosen by subnet, CNI in custom directories.
const KUBECONFIG: &str = r#"
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: edge-7
network:
  interfaces:
    - name: enp1s0
      addresses: [10.1.0.7/16, 172.16.5.7/24]
cni:
  binDir: /opt/cni/bin
  confDir: /etc/cni/custom.d/
  bridge:
    name: pods0
    subnet: fd42:0:0:7::5/64
    ipMasq: false
kubelet:
  kubeconfig: |
    apiVersion: v1
    kind: Config
    clusters:
    - name: prod
      cluster:
        server: https://10.1.0.1:6443
        certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJwcm9kQ0EKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
    users:
    - name: edge-7
      user:
        token: prod-token
    contexts:
    - name: prod
      context: {cluster: prod, user: edge-7}
    current-context: prod
  nodeIp:
    subnet: 172.16.5.0/24
"#;

fn cfg(yaml: &str) -> MachineConfig {
    serde_saphyr::from_str(yaml).expect("test config parses")
}

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

/// Every file under `dir`, relative, sorted.
fn list_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// Renders `config` and compares every output with the golden files of
/// `case`: the files themselves (under their node path), `kubelet.args`
/// (one argument per line) and `files.txt` (order and modes).
fn check_golden(case: &str, config: &MachineConfig, facts: &NodeFacts) {
    let files = render::all(config, facts).unwrap();
    let mut outputs: Vec<(PathBuf, String)> = Vec::new();
    let mut index = String::new();
    for f in &files {
        index.push_str(&format!("{:04o} {}\n", f.mode, f.path));
        outputs.push((
            PathBuf::from(f.path.trim_start_matches('/')),
            f.content.clone(),
        ));
    }
    outputs.push(("files.txt".into(), index));
    if config.kubelet.enabled {
        let args = render::kubelet::render(config, facts).unwrap().args;
        outputs.push(("kubelet.args".into(), args.join("\n") + "\n"));
    }
    let dir = golden_dir(case);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = fs::remove_dir_all(&dir);
        for (rel, content) in &outputs {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
        }
    }
    let expected: BTreeSet<PathBuf> = outputs.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        list_files(&dir),
        expected,
        "golden files of {case} differ in names (UPDATE_GOLDEN=1 to rewrite)"
    );
    for (rel, content) in &outputs {
        let want = fs::read_to_string(dir.join(rel)).unwrap();
        assert_eq!(
            content,
            &want,
            "{case}/{} differs from its golden file (UPDATE_GOLDEN=1 to rewrite)",
            rel.display()
        );
    }
}

fn dhcp_facts() -> NodeFacts {
    NodeFacts {
        hostname: String::new(),
        node_ip: Some("192.168.20.34".parse().unwrap()),
        dhcp_nameservers: vec![
            "192.168.20.1".parse().unwrap(),
            "9.9.9.9".parse().unwrap(),
            "1.1.1.1".parse().unwrap(),
        ],
        dhcp_search: vec!["dhcp.example".into(), "lab.example.".into()],
    }
}

#[test]
fn golden_full_worker() {
    check_golden("full", &cfg(FULL), &dhcp_facts());
}

#[test]
fn golden_minimal_standalone() {
    check_golden("minimal", &cfg(MINIMAL), &NodeFacts::default());
}

#[test]
fn golden_user_kubeconfig_ipv6_pods() {
    check_golden("kubeconfig", &cfg(KUBECONFIG), &NodeFacts::default());
}

/// The shipped examples: what an operator copying them gets on the node.
fn example(name: &str) -> MachineConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let bytes = fs::read(&path).unwrap();
    machine_config::parse::parse(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .config
}

#[test]
fn golden_examples() {
    check_golden("example-node", &example("node.yaml"), &dhcp_facts());
    check_golden(
        "example-minimal",
        &example("minimal.yaml"),
        &NodeFacts::default(),
    );
}

fn containerd_toml(config: &MachineConfig) -> toml::Table {
    render::containerd::config_toml(config)
        .unwrap()
        .parse()
        .unwrap()
}

fn cri(t: &toml::Table) -> &toml::Table {
    t["plugins"]["io.containerd.grpc.v1.cri"]
        .as_table()
        .unwrap()
}

#[test]
fn containerd_config_matches_what_kubelet_and_cni_need() {
    let config = cfg(KUBECONFIG);
    let t = containerd_toml(&config);
    assert_eq!(t["version"].as_integer(), Some(2));
    assert_eq!(
        t["grpc"]["address"].as_str(),
        Some(render::CONTAINERD_SOCKET)
    );
    let cri = cri(&t);
    assert_eq!(cri["sandbox_image"].as_str(), Some("keelson.local/pause:1"));
    // The CNI directories come from the config, not containerd's defaults.
    assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/opt/cni/bin"));
    assert_eq!(cri["cni"]["conf_dir"].as_str(), Some("/etc/cni/custom.d/"));
    assert_eq!(cri["containerd"]["snapshotter"].as_str(), Some("overlayfs"));
    let runc = &cri["containerd"]["runtimes"]["runc"];
    assert_eq!(runc["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(false));
    assert_eq!(
        runc["options"]["BinaryName"].as_str(),
        Some("/usr/sbin/runc")
    );
    assert_eq!(
        cri["registry"]["config_path"].as_str(),
        Some("/etc/containerd/certs.d")
    );

    // And the conflist lands in the directory containerd reads.
    let conflist = render::cni::bridge_conflist(&config).unwrap();
    assert_eq!(
        conflist.path,
        "/etc/cni/custom.d/10-keelson-bridge.conflist"
    );
    let json: serde_json::Value = serde_json::from_str(&conflist.content).unwrap();
    let bridge = &json["plugins"][0];
    assert_eq!(bridge["bridge"], "pods0");
    assert_eq!(bridge["ipMasq"], false);
    assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "fd42:0:0:7::/64");
    assert_eq!(bridge["ipam"]["routes"][0]["dst"], "::/0");
    assert_eq!(json["plugins"][1]["type"], "portmap");
    assert_eq!(json["plugins"][1]["capabilities"]["portMappings"], true);

    // A null bridge writes no conflist (another CNI brings its own).
    let mut other = config.clone();
    other.cni.bridge = None;
    assert!(render::cni::bridge_conflist(&other).is_none());
    assert!(render::all(&other, &NodeFacts::default())
        .unwrap()
        .iter()
        .all(|f| !f.path.ends_with(".conflist")));
}

#[test]
fn containerd_extra_config_merges_without_losing_keelson_keys() {
    let mut config = cfg(MINIMAL);
    config.containerd.extra_config = r#"
[plugins."io.containerd.grpc.v1.cri"]
max_container_log_line_size = 32768
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = false   # restating Keelson's own value is fine
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
runtime_type = "io.containerd.kata.v2"
[metrics]
address = "127.0.0.1:1338"
"#
    .into();
    let t = containerd_toml(&config);
    let cri = cri(&t);
    assert_eq!(cri["max_container_log_line_size"].as_integer(), Some(32768));
    assert_eq!(
        cri["containerd"]["runtimes"]["kata"]["runtime_type"].as_str(),
        Some("io.containerd.kata.v2")
    );
    // Siblings of merged tables survive.
    assert_eq!(
        cri["containerd"]["runtimes"]["runc"]["options"]["BinaryName"].as_str(),
        Some("/usr/sbin/runc")
    );
    assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/usr/lib/cni"));
    assert_eq!(t["metrics"]["address"].as_str(), Some("127.0.0.1:1338"));
}

fn extra_error(extra: &str) -> RenderError {
    let mut config = cfg(MINIMAL);
    config.containerd.extra_config = extra.into();
    let err = render::containerd::config_toml(&config).unwrap_err();
    // all() refuses it the same way: no file is produced.
    assert_eq!(
        render::all(&config, &NodeFacts::default()).unwrap_err(),
        err
    );
    err
}

#[test]
fn containerd_extra_config_cannot_break_the_node() {
    let cases = [
        (
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = true\n",
            "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options.SystemdCgroup",
            "cgroupfs",
        ),
        (
            "[plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/opt/cni/bin\"\n",
            "plugins.\"io.containerd.grpc.v1.cri\".cni.bin_dir",
            "set cni.binDir instead",
        ),
        (
            "[plugins.\"io.containerd.grpc.v1.cri\".cni]\nconf_dir = \"/etc/cni/other\"\n",
            "plugins.\"io.containerd.grpc.v1.cri\".cni.conf_dir",
            "NotReady",
        ),
        (
            "[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"registry.k8s.io/pause:3.2\"\n",
            "plugins.\"io.containerd.grpc.v1.cri\".sandbox_image",
            "containerd.sandboxImage",
        ),
        // Replacing a whole parent table by a value loses the keys too.
        (
            "[plugins.\"io.containerd.grpc.v1.cri\"]\ncni = \"none\"\n",
            "plugins.\"io.containerd.grpc.v1.cri\".cni.bin_dir",
            "cni.binDir",
        ),
        (
            "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://m\"]\n",
            "plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors",
            "containerd.registryMirrors",
        ),
        ("[grpc]\naddress = \"/run/other.sock\"\n", "grpc.address", "kubelet"),
    ];
    for (extra, key, why) in cases {
        let msg = extra_error(extra).to_string();
        assert!(
            msg.starts_with("containerd.extraConfig: ") && msg.contains(key) && msg.contains(why),
            "for {extra:?}: {msg}"
        );
    }
    let msg =
        extra_error("[plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/opt/cni/bin\"\n")
            .to_string();
    assert!(msg.contains("Keelson sets \"/usr/lib/cni\""), "{msg}");
}

#[test]
fn containerd_extra_config_syntax_error_names_line_and_column() {
    let msg = extra_error("[metrics]\naddress = 127.0.0.1:1338\n").to_string();
    assert!(
        msg.starts_with("containerd.extraConfig: not valid TOML: line 2 col "),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn registry_mirrors_write_ordered_hosts_files_and_refuse_paths() {
    let config = cfg(FULL);
    let hosts = render::containerd::registry_hosts(&config);
    let paths: Vec<&str> = hosts.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            "/etc/containerd/certs.d/registry.lab.example:5443/hosts.toml"
        ]
    );
    let t: toml::Table = hosts[0].content.parse().unwrap();
    assert_eq!(t["server"].as_str(), Some("https://registry-1.docker.io"));
    // Mirrors are tried in the order given: the file keeps it.
    let order: Vec<&String> = t["host"].as_table().unwrap().keys().collect();
    assert_eq!(
        order,
        ["https://mirror.lab.example:5000", "http://10.0.0.9:5000"]
    );

    let mut bad = config.clone();
    bad.containerd
        .registry_mirrors
        .insert("../../kubernetes".into(), vec!["https://x".into()]);
    let err = render::containerd::config_toml(&bad).unwrap_err();
    assert!(err
        .to_string()
        .contains("\"../../kubernetes\" is not a registry host"));
    assert!(render::containerd::registry_hosts(&bad)
        .iter()
        .all(|f| !f.path.contains("..")));
}

#[test]
fn kubelet_command_line_and_config_agree_with_containerd() {
    let config = cfg(FULL);
    let out = render::kubelet::render(&config, &dhcp_facts()).unwrap();
    let args = &out.args;
    for want in [
        "--config=/etc/kubernetes/kubelet.yaml",
        "--kubeconfig=/etc/kubernetes/kubelet.kubeconfig",
        "--container-runtime=remote",
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--image-service-endpoint=unix:///run/containerd/containerd.sock",
        "--hostname-override=worker-1.lab.example",
        "--node-ip=192.168.10.21",
        "--node-labels=node-role.kubernetes.io/worker=,topology.kubernetes.io/zone=rack-2",
        "--register-with-taints=dedicated=storage:NoSchedule,maintenance:NoExecute",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{want} missing from {args:?}"
        );
    }
    // extraArgs come last, sorted.
    assert_eq!(&args[args.len() - 2..], ["--max-pods=50", "--v=2"]);

    let yaml = &out.files[0];
    assert_eq!(yaml.path, render::KUBELET_CONFIG);
    let doc: serde_json::Value = serde_saphyr::from_str(&yaml.content).unwrap();
    assert_eq!(doc["kind"], "KubeletConfiguration");
    assert_eq!(doc["cgroupDriver"], "cgroupfs");
    assert_eq!(doc["failSwapOn"], true);
    assert_eq!(doc["clusterDNS"][0], "10.96.0.10");
    assert_eq!(doc["nodeStatusUpdateFrequency"], "2s");
    assert_eq!(doc["authentication"]["anonymous"]["enabled"], false);
    assert_eq!(doc["authentication"]["webhook"]["enabled"], true);
    assert_eq!(
        doc["authentication"]["x509"]["clientCAFile"],
        "/etc/kubernetes/pki/ca.crt"
    );
    assert_eq!(doc["authorization"]["mode"], "Webhook");

    let kubeconfig = out
        .files
        .iter()
        .find(|f| f.path == render::KUBELET_KUBECONFIG)
        .unwrap();
    assert_eq!(kubeconfig.mode, 0o600, "the token is a secret");
    let kc: serde_json::Value = serde_saphyr::from_str(&kubeconfig.content).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://api.lab.example:6443"
    );
    assert_eq!(
        kc["clusters"][0]["cluster"]["certificate-authority"],
        "/etc/kubernetes/pki/ca.crt"
    );
    assert_eq!(kc["users"][0]["user"]["token"], "abcdef.0123456789abcdef");
    assert_eq!(kc["apiVersion"], "v1");
    assert_eq!(kc["kind"], "Config");
    assert_eq!(kc["current-context"], "keelson");
}

#[test]
fn kubelet_standalone_and_refusals() {
    let config = cfg(MINIMAL);
    let out = render::kubelet::render(&config, &NodeFacts::default()).unwrap();
    assert!(out.args.iter().all(|a| !a.starts_with("--kubeconfig")));
    assert!(
        out.args.iter().all(|a| !a.starts_with("--node-ip")),
        "no address known"
    );
    assert_eq!(out.files.len(), 1, "only kubelet.yaml: {:?}", out.files);
    let doc: serde_json::Value = serde_saphyr::from_str(&out.files[0].content).unwrap();
    assert_eq!(doc["authentication"]["webhook"]["enabled"], false);
    assert_eq!(doc["authorization"]["mode"], "AlwaysAllow");

    let mut owned = config.clone();
    owned
        .kubelet
        .extra_args
        .insert("cgroup-driver".into(), "systemd".into());
    let err = render::kubelet::render(&owned, &NodeFacts::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kubelet.extraArgs.cgroup-driver: --cgroup-driver is set by Keelson (the cgroup driver is always cgroupfs, matching containerd)"
    );

    let mut no_token = config.clone();
    no_token.kubelet.api_server = Some("https://10.0.0.1:6443".into());
    let err = render::kubelet::render(&no_token, &NodeFacts::default()).unwrap_err();
    assert!(err.to_string().starts_with(
        "kubelet.apiServer: https://10.0.0.1:6443 is set but kubelet.token is missing"
    ));

    // A disabled kubelet writes none of its files.
    let mut off = config.clone();
    off.kubelet.enabled = false;
    assert!(render::all(&off, &NodeFacts::default())
        .unwrap()
        .iter()
        .all(|f| !f.path.starts_with("/etc/kubernetes")));
}

#[test]
fn node_ip_follows_the_selection_rules() {
    let facts = dhcp_facts();
    let full = cfg(FULL);
    let ip = |s: &str| -> Option<IpAddr> { Some(s.parse().unwrap()) };
    // Default: first static address of the first interface.
    assert_eq!(render::node_ip(&full, &facts), ip("192.168.10.21"));
    // Subnet: the static address inside it.
    let kc = cfg(KUBECONFIG);
    assert_eq!(render::node_ip(&kc, &facts), ip("172.16.5.7"));
    // Subnet matching nothing static: the DHCP address if inside, else none.
    let mut by_subnet = kc.clone();
    by_subnet.kubelet.node_ip.as_mut().unwrap().subnet = Some("192.168.20.0/24".parse().unwrap());
    assert_eq!(render::node_ip(&by_subnet, &facts), ip("192.168.20.34"));
    by_subnet.kubelet.node_ip.as_mut().unwrap().subnet = Some("10.99.0.0/16".parse().unwrap());
    assert_eq!(render::node_ip(&by_subnet, &facts), None);
    // An explicit address wins.
    let mut exact = kc.clone();
    exact.kubelet.node_ip.as_mut().unwrap().address = ip("10.1.0.99");
    assert_eq!(render::node_ip(&exact, &facts), ip("10.1.0.99"));
    // DHCP-only first interface: the learned address; unknown: none, and
    // /etc/hosts falls back to 127.0.1.1 so the hostname still resolves.
    let mut dhcp_first = full.clone();
    dhcp_first.network.interfaces.reverse();
    assert_eq!(render::node_ip(&dhcp_first, &facts), ip("192.168.20.34"));
    assert_eq!(
        render::node_ip(&dhcp_first, &NodeFacts::default()),
        ip("192.168.10.21")
    );
    let minimal = cfg(MINIMAL);
    assert_eq!(render::node_ip(&minimal, &NodeFacts::default()), None);
    assert!(render::hosts(&minimal, &NodeFacts::default()).contains("127.0.1.1\tlab1\n"));
}

#[test]
fn resolv_conf_keeps_three_nameservers_and_says_which_were_dropped() {
    let text = render::resolv_conf(&cfg(FULL), &dhcp_facts());
    let servers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    // Config first, then DHCP, the duplicate 9.9.9.9 once.
    assert_eq!(servers, ["192.168.10.1", "9.9.9.9", "192.168.20.1"]);
    assert!(
        text.contains("# Dropped (the C library reads at most 3 nameservers): 1.1.1.1\n"),
        "{text}"
    );
    assert!(text.contains("search lab.example dhcp.example\n"), "{text}");
}

#[test]
fn machine_files_cannot_replace_rendered_files() {
    let mut config = cfg(FULL);
    config.machine.files.push(machine_config::schema::File {
        path: "/etc/hosts".into(),
        content: "1.2.3.4 evil\n".into(),
        mode: Default::default(),
    });
    let err = render::all(&config, &NodeFacts::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "machine.files[2].path: /etc/hosts is rendered by Keelson from network.extraHosts; set that instead"
    );

    // Another spelling of the same path is the same file.
    let mut config = cfg(FULL);
    config.machine.files.push(machine_config::schema::File {
        path: "/etc//containerd/./config.toml".into(),
        content: "version = 2\n".into(),
        mode: Default::default(),
    });
    let err = render::all(&config, &NodeFacts::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "machine.files[2].path: /etc//containerd/./config.toml is rendered by Keelson from containerd.extraConfig; set that instead"
    );

    let mut config = cfg(FULL);
    config.machine.files.push(machine_config::schema::File {
        path: "/etc/./motd".into(),
        content: "again\n".into(),
        mode: Default::default(),
    });
    let err = render::all(&config, &NodeFacts::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "machine.files[2].path: /etc/./motd is already written by machine.files[0]"
    );
}

#[test]
fn a_users_kubeconfig_ca_is_found_by_path_or_refused_when_garbled() {
    let mut config = cfg(KUBECONFIG);
    config.kubelet.kubeconfig = Some(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.1.0.1:6443\n    certificate-authority: /var/lib/keelson/ca.pem\n"
            .into(),
    );
    let out = render::kubelet::render(&config, &NodeFacts::default()).unwrap();
    // kubelet trusts the file the kubeconfig names; no ca.crt is written.
    assert!(out.files.iter().all(|f| f.path != render::KUBERNETES_CA));
    let doc: serde_json::Value = serde_saphyr::from_str(&out.files[0].content).unwrap();
    assert_eq!(
        doc["authentication"]["x509"]["clientCAFile"],
        "/var/lib/keelson/ca.pem"
    );
    let kc = out
        .files
        .iter()
        .find(|f| f.path == render::KUBELET_KUBECONFIG)
        .unwrap();
    assert_eq!(
        kc.content,
        config.kubelet.kubeconfig.clone().unwrap(),
        "verbatim"
    );
    assert_eq!(kc.mode, 0o600);

    config.kubelet.kubeconfig =
        Some("clusters:\n- cluster:\n    certificate-authority-data: '%%%not base64'\n".into());
    let err = render::kubelet::render(&config, &NodeFacts::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("kubelet.kubeconfig: clusters[0].cluster.certificate-authority-data is not valid base64"),
        "{err}"
    );
}
