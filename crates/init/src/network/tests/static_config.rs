//! Static configuration against the real kernel: links by MAC and name, a
//! link that appears late, MTU, IPv4 and IPv6 addresses and routes, per
//! interface errors, idempotence, and `down_all`. Verified with `ip -j`.

use std::time::{Duration, Instant};

use machine_config::schema::{Interface, Network, Route};
use serde_json::Value;

use super::netns::{can_run, Netns};
use crate::network::{apply_with, down_all, NetworkState, Timing};

fn link(ns: &Netns, dev: &str) -> Value {
    ns.ip_json(&["link", "show", "dev", dev])[0].clone()
}

fn addrs(ns: &Netns, dev: &str) -> Vec<String> {
    ns.ip_json(&["addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn routes(ns: &Netns, family: &str) -> Vec<(String, String, u64, String)> {
    ns.ip_json(&[family, "route", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["gateway"].is_string())
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_string(),
                r["gateway"].as_str().unwrap().to_string(),
                r["metric"].as_u64().unwrap_or(0),
                r["dev"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn config() -> Network {
    let route = |to: &str, via: &str, metric| Route {
        to: to.parse().unwrap(),
        via: via.parse().unwrap(),
        metric,
    };
    Network {
        interfaces: vec![
            // By MAC, written in upper case: matched case-insensitively.
            Interface {
                mac: Some("02:AA:BB:CC:DD:01".into()),
                mtu: Some(1400),
                addresses: vec![
                    "10.88.0.5/24".parse().unwrap(),
                    "fd00:88::5/64".parse().unwrap(),
                ],
                routes: vec![
                    route("0.0.0.0/0", "10.88.0.1", None),
                    route("10.99.0.0/16", "10.88.0.1", Some(50)),
                    route("::/0", "fd00:88::1", None),
                ],
                ..Default::default()
            },
            // Never appears: an error on this interface only.
            Interface {
                name: Some("absent0".into()),
                addresses: vec!["10.66.0.5/24".parse().unwrap()],
                ..Default::default()
            },
            // Its route's gateway is not on any of its networks: the address
            // still lands, the route fails with the kernel's reason.
            Interface {
                name: Some("kn1".into()),
                addresses: vec!["10.89.0.5/24".parse().unwrap()],
                routes: vec![route("10.50.0.0/16", "192.0.2.1", None)],
                ..Default::default()
            },
            // Created 1 s after apply starts (a NIC still probing).
            Interface {
                name: Some("late0".into()),
                addresses: vec!["10.90.0.5/24".parse().unwrap()],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[test]
fn static_config_lands_in_the_kernel_and_failures_stay_per_interface() {
    if !can_run("static_config_lands_in_the_kernel_and_failures_stay_per_interface") {
        return;
    }
    let ns = Netns::new("static");
    ns.ip(&[
        "link",
        "add",
        "kn0",
        "address",
        "02:aa:bb:cc:dd:01",
        "type",
        "veth",
        "peer",
        "name",
        "kn0p",
    ]);
    ns.ip(&["link", "add", "kn1", "type", "veth", "peer", "name", "kn1p"]);
    ns.ip(&["link", "set", "kn0p", "up"]);
    ns.ip(&["link", "set", "kn1p", "up"]);

    let timing = Timing {
        link_wait: Duration::from_secs(3),
        ..Timing::default()
    };
    let late_ns = ns.name.clone();
    let creator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        super::netns::run(
            "ip",
            &[
                "-n", &late_ns, "link", "add", "late0", "type", "veth", "peer", "name", "late0p",
            ],
        );
    });
    let started = Instant::now();
    let cfg = config();
    let (t1, t2) = (timing.clone(), timing.clone());
    let c1 = cfg.clone();
    let first: NetworkState =
        ns.block_on(move || async move { apply_with(&c1, &t1).await.unwrap() });
    let took = started.elapsed();
    creator.join().unwrap();
    // Bounded by the link wait of the absent interface, done concurrently.
    assert!(took < Duration::from_secs(6), "apply took {took:?}");

    // lo is up, not listed (it did not fail).
    assert!(link(&ns, "lo")["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP"));
    assert_eq!(first.interfaces.len(), 4, "{first:#?}");

    // kn0: found by MAC, MTU, up, both addresses, three routes.
    let kn0 = &first.interfaces[0];
    assert_eq!(kn0.name, "kn0");
    assert_eq!(kn0.mac.as_deref(), Some("02:aa:bb:cc:dd:01"));
    assert_eq!(kn0.error, None, "{kn0:#?}");
    let l = link(&ns, "kn0");
    assert_eq!(l["mtu"], 1400);
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let a = addrs(&ns, "kn0");
    assert!(
        a.contains(&"10.88.0.5/24".to_string()) && a.contains(&"fd00:88::5/64".to_string()),
        "{a:?}"
    );
    let reported: Vec<String> = kn0.addresses.iter().map(|c| c.to_string()).collect();
    assert_eq!(reported, vec!["10.88.0.5/24", "fd00:88::5/64"]);
    let v4 = routes(&ns, "-4");
    assert!(
        v4.contains(&("default".into(), "10.88.0.1".into(), 0, "kn0".into())),
        "{v4:?}"
    );
    assert!(
        v4.contains(&("10.99.0.0/16".into(), "10.88.0.1".into(), 50, "kn0".into())),
        "{v4:?}"
    );
    let v6 = routes(&ns, "-6");
    assert!(
        v6.iter()
            .any(|r| r.0 == "default" && r.1 == "fd00:88::1" && r.3 == "kn0"),
        "{v6:?}"
    );

    // absent0: its own error, named.
    let absent = &first.interfaces[1];
    assert_eq!(absent.name, "absent0");
    let err = absent.error.as_deref().unwrap();
    assert!(err.contains("no link absent0 appeared within 3 s"), "{err}");

    // kn1: address applied, route refused with the kernel's cause.
    let kn1 = &first.interfaces[2];
    assert_eq!(addrs(&ns, "kn1"), vec!["10.89.0.5/24"]);
    let err = kn1.error.as_deref().unwrap();
    assert!(
        err.contains("add route 10.50.0.0/16 via 192.0.2.1 dev kn1") && err.contains("unreachable"),
        "{err}"
    );

    // late0: waited for, then configured.
    assert_eq!(first.interfaces[3].error, None);
    assert_eq!(addrs(&ns, "late0"), vec!["10.90.0.5/24"]);

    // The node IP is the first IPv4 address in interface order.
    assert_eq!(first.first_address(), Some("10.88.0.5".parse().unwrap()));

    // Applying again changes nothing and reports no new error.
    let c2 = cfg.clone();
    let second: NetworkState =
        ns.block_on(move || async move { apply_with(&c2, &t2).await.unwrap() });
    assert_eq!(
        second.interfaces[0].error, None,
        "{:#?}",
        second.interfaces[0]
    );
    assert_eq!(second.interfaces[3].error, None);
    assert_eq!(addrs(&ns, "kn0").len(), 2);
    assert_eq!(routes(&ns, "-4").len(), v4.len());

    // down_all: every non-loopback link goes down, lo stays up.
    let mut downed = ns.block_on(|| async { down_all().await.unwrap() });
    downed.sort();
    assert_eq!(downed, vec!["kn0", "kn0p", "kn1", "kn1p", "late0"]);
    for dev in ["kn0", "kn1", "late0"] {
        assert!(
            !link(&ns, dev)["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "UP"),
            "{dev} still up"
        );
    }
    assert!(link(&ns, "lo")["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP"));
}
