//! Any config the writer produces parses back to the same value.
//!
//! Strategies generate every schema type, with strings drawn from printable
//! text plus the values YAML loves to misread (`true`, `null`, `0755`,
//! `- x`, `a: b`, leading/trailing spaces, quotes, multi-line text).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use machine_config::schema::*;
use machine_config::{parse, to_yaml, Cidr, Duration, FileMode, SizeExpr, SizeOp};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

/// Text a user could write, including YAML's trap values.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-zA-Z0-9 ._:/@=,+-]{0,24}",
        1 => "[ -~]{0,30}",
        1 => "[ -~\n]{0,60}",
        1 => "[a-z]{1,8}\n[a-z ]{0,20}\n",
        1 => "[ -~\u{e9}\u{4e16}\u{1F600}]{0,12}",
        2 => prop::sample::select(vec![
            "", "true", "False", "yes", "no", "on", "off", "null", "~", "Null", "0755",
            "0x1F", "1e3", "-1", "+1", ".inf", ".nan", "1_000", "12:30", "- item",
            "key: value", "# not a comment", "'quoted'", "\"dq\"", " lead", "trail ",
            "a\\b", "*alias", "&anchor", "!tag", "%percent", "@at", "`tick`", "---",
            "...", "|", ">", "[a]", "{a: b}", "2001-01-01", "\t tab",
        ])
        .prop_map(str::to_string),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
    ]
}

fn cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(o, prefix)| Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(o)),
            prefix
        }),
        (any::<[u16; 8]>(), 0u8..=128).prop_map(|(s, prefix)| Cidr {
            addr: IpAddr::V6(Ipv6Addr::from(s)),
            prefix
        }),
    ]
}

/// Whole milliseconds up to ~31 years: the text form allows 12 digits.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..1_000).prop_map(|s| Duration::from_secs(s * 60)),
        (0u64..1_000_000_000_000).prop_map(|ms| Duration(std::time::Duration::from_millis(ms))),
    ]
}

/// Any size expression: every operator, any byte count.
fn size_expr() -> impl Strategy<Value = SizeExpr> {
    let op = prop::sample::select(vec![
        SizeOp::Eq,
        SizeOp::Ge,
        SizeOp::Le,
        SizeOp::Gt,
        SizeOp::Lt,
    ]);
    let bytes = prop_oneof![
        any::<u64>(),
        (0u64..10_000, 0u32..5).prop_map(|(n, p)| n * 1024u64.pow(p)),
        (0u64..10_000, 0u32..5).prop_map(|(n, p)| n * 1000u64.pow(p)),
    ];
    (op, bytes).prop_map(|(op, bytes)| SizeExpr { op, bytes })
}

/// A path (any text: strings YAML could misread included) or a selector
/// (empty ones included).
fn disk_target() -> BoxedStrategy<DiskTarget> {
    prop_oneof![
        text().prop_map(DiskTarget::Path),
        (
            option::of(size_expr()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
        )
            .prop_map(
                |(size, model, serial, by_id)| DiskTarget::Selector(DiskSelector {
                    size,
                    model,
                    serial,
                    by_id,
                })
            ),
    ]
    .boxed()
}

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(text(), text(), 0..4)
}

/// Boxed (as is [`disk_target`]): unboxed, building the value tree of a
/// whole config takes close to a test thread's 2 MiB stack in debug builds.
fn machine() -> BoxedStrategy<Machine> {
    let install =
        option::of((disk_target(), any::<bool>()).prop_map(|(disk, wipe)| Install { disk, wipe }));
    let module =
        (text(), map(), any::<bool>()).prop_map(|(name, parameters, enabled)| KernelModule {
            name,
            parameters,
            enabled,
        });
    let kernel =
        (vec(module, 0..3), vec(text(), 0..3)).prop_map(|(modules, args)| Kernel { modules, args });
    let file = (text(), text(), 0u32..=0o7777).prop_map(|(path, content, mode)| File {
        path,
        content,
        mode: FileMode(mode),
    });
    let swap = option::of(
        (any::<bool>(), option::of(text())).prop_map(|(enabled, size)| Swap { enabled, size }),
    );
    let certs = option::of(
        (
            text(),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            vec(text(), 0..3),
        )
            .prop_map(|(ca, ca_key, cert, key, alt_names)| Certificates {
                ca,
                ca_key,
                cert,
                key,
                alt_names,
            }),
    );
    (
        text(),
        install,
        kernel,
        map(),
        vec(file, 0..3),
        vec(text(), 0..3).prop_map(|servers| Time { servers }),
        swap,
        vec(text(), 0..3),
        certs,
    )
        .prop_map(
            |(
                hostname,
                install,
                kernel,
                sysctls,
                files,
                time,
                swap,
                trusted_upgrade_keys,
                certificates,
            )| Machine {
                hostname,
                install,
                kernel,
                sysctls,
                files,
                time,
                swap,
                trusted_upgrade_keys,
                certificates,
            },
        )
        .boxed()
}

fn network() -> impl Strategy<Value = Network> {
    let route = (cidr(), ip(), option::of(any::<u32>())).prop_map(|(to, via, metric)| Route {
        to,
        via,
        metric,
    });
    let iface = (
        option::of(text()),
        option::of(text()),
        any::<bool>(),
        vec(cidr(), 0..3),
        vec(route, 0..3),
        option::of(any::<u32>()),
    )
        .prop_map(|(name, mac, dhcp, addresses, routes, mtu)| Interface {
            name,
            mac,
            dhcp,
            addresses,
            routes,
            mtu,
        });
    let host = (ip(), vec(text(), 0..3)).prop_map(|(ip, hostnames)| HostEntry { ip, hostnames });
    (
        vec(iface, 0..3),
        vec(ip(), 0..3),
        vec(text(), 0..3),
        vec(host, 0..2),
    )
        .prop_map(
            |(interfaces, nameservers, search_domains, extra_hosts)| Network {
                interfaces,
                nameservers,
                search_domains,
                extra_hosts,
            },
        )
}

fn containerd() -> impl Strategy<Value = Containerd> {
    (
        text(),
        btree_map(text(), vec(text(), 0..3), 0..3),
        vec(text(), 0..3),
        text(),
    )
        .prop_map(
            |(extra_config, registry_mirrors, preload_images, sandbox_image)| Containerd {
                extra_config,
                registry_mirrors,
                preload_images,
                sandbox_image,
            },
        )
}

fn cni() -> impl Strategy<Value = Cni> {
    let bridge = option::of(
        (text(), cidr(), any::<bool>()).prop_map(|(name, subnet, ip_masq)| CniBridge {
            name,
            subnet,
            ip_masq,
        }),
    );
    (text(), text(), bridge).prop_map(|(bin_dir, conf_dir, bridge)| Cni {
        bin_dir,
        conf_dir,
        bridge,
    })
}

fn kubelet() -> impl Strategy<Value = Kubelet> {
    let node_ip = option::of(
        (option::of(ip()), option::of(cidr()))
            .prop_map(|(address, subnet)| NodeIp { address, subnet }),
    );
    let effect = prop::sample::select(vec![
        TaintEffect::NoSchedule,
        TaintEffect::PreferNoSchedule,
        TaintEffect::NoExecute,
    ]);
    let taint =
        (text(), text(), effect).prop_map(|(key, value, effect)| Taint { key, value, effect });
    let access = (
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
    );
    (
        any::<bool>(),
        text(),
        access,
        node_ip,
        map(),
        vec(taint, 0..3),
        vec(ip(), 0..3),
        text(),
        duration(),
        map(),
    )
        .prop_map(
            |(
                enabled,
                binary,
                (api_server, ca_cert, token, kubeconfig),
                node_ip,
                labels,
                taints,
                cluster_dns,
                cluster_domain,
                node_status_update_frequency,
                extra_args,
            )| Kubelet {
                enabled,
                binary,
                api_server,
                ca_cert,
                token,
                kubeconfig,
                node_ip,
                labels,
                taints,
                cluster_dns,
                cluster_domain,
                node_status_update_frequency,
                extra_args,
            },
        )
}

fn kubernetes() -> impl Strategy<Value = Option<Kubernetes>> {
    option::of(
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            duration(),
        )
            .prop_map(
                |(endpoint, ca_cert, token, kubeconfig, drain_timeout)| Kubernetes {
                    endpoint,
                    ca_cert,
                    token,
                    kubeconfig,
                    drain_timeout,
                },
            ),
    )
}

fn lifecycle() -> impl Strategy<Value = (Shutdown, Upgrade, Api)> {
    (
        (
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
        ),
        (duration(), duration()),
        any::<u16>(),
    )
        .prop_map(
            |(
                (kubelet, pods, containerd, processes, unmount, total),
                (healthy_after, health_timeout),
                port,
            )| {
                (
                    Shutdown {
                        kubelet,
                        pods,
                        containerd,
                        processes,
                        unmount,
                        total,
                    },
                    Upgrade {
                        healthy_after,
                        health_timeout,
                    },
                    Api { port },
                )
            },
        )
}

fn machine_config() -> impl Strategy<Value = MachineConfig> {
    (
        machine(),
        network(),
        containerd(),
        cni(),
        kubelet(),
        kubernetes(),
        lifecycle(),
    )
        .prop_map(
            |(machine, network, containerd, cni, kubelet, kubernetes, (shutdown, upgrade, api))| {
                MachineConfig {
                    api_version: API_VERSION.to_string(),
                    kind: KIND.to_string(),
                    machine,
                    network,
                    containerd,
                    cni,
                    kubelet,
                    kubernetes,
                    shutdown,
                    upgrade,
                    api,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn written_configs_parse_back_equal(cfg in machine_config()) {
        let yaml = to_yaml(&cfg).unwrap();
        let back = parse(yaml.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n--- written:\n{yaml}")))?;
        prop_assert_eq!(back.config, cfg, "written:\n{}", yaml);
    }

    #[test]
    fn validation_never_panics_on_any_written_config(cfg in machine_config()) {
        let yaml = to_yaml(&cfg).unwrap();
        let doc = parse(yaml.as_bytes()).unwrap();
        let located = doc.validate();
        let bare = machine_config::validate(&cfg);
        // Locating problems never changes which problems there are.
        prop_assert_eq!(located.errors.len(), bare.errors.len());
        prop_assert_eq!(located.warnings.len(), bare.warnings.len());
    }
}
