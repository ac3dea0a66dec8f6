//! The DHCP client against the server a node really meets: QEMU's user-mode
//! network (slirp, `restrict=on`). QEMU runs without a machine (`-machine
//! none`), its slirp netdev joined through a hub to a TAP device inside a
//! test namespace; the client runs on that TAP exactly as it runs on a
//! guest's virtio NIC. Nothing can leave the machine: slirp is restricted
//! and the TAP lives in a namespace with no other links.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use machine_config::schema::{Interface, Network, Route};

use super::netns::{can_run, Netns};
use crate::network::{apply_with, spawn_dhcp_renewal, Timing};

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn slirp_dhcp_gives_the_documented_lease_and_answers_renewals() {
    if !can_run("slirp_dhcp_gives_the_documented_lease_and_answers_renewals") {
        return;
    }
    let ns = Netns::new("slirp");
    let qemu = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "qemu-system-x86_64",
            "-machine",
            "none",
            "-nodefaults",
        ])
        .args(["-display", "none", "-monitor", "none", "-serial", "none"])
        .args(["-netdev", "user,id=u,restrict=on"])
        .args(["-netdev", "tap,id=t,ifname=kntap,script=no,downscript=no"])
        .args(["-netdev", "hubport,id=h1,hubid=0,netdev=u"])
        .args(["-netdev", "hubport,id=h2,hubid=0,netdev=t"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64 (package qemu-system-x86, scripts/install-deps.sh)");
    let _qemu = Qemu(qemu);

    let cfg = Network {
        interfaces: vec![Interface {
            name: Some("kntap".into()),
            dhcp: true,
            // slirp with restrict=on sends no router: the config names it.
            routes: vec![Route {
                to: "0.0.0.0/0".parse().unwrap(),
                via: "10.0.2.2".parse().unwrap(),
                metric: None,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    // The TAP appears once QEMU has started: apply waits for it.
    let timing = Timing {
        dhcp_boot: Duration::from_secs(20),
        max_lease: Some(Duration::from_secs(4)),
        ..Timing::default()
    };
    let (state, renewed) = ns.block_on(move || async move {
        let started = Instant::now();
        let state = apply_with(&cfg, &timing).await.unwrap();
        eprintln!(
            "slirp lease after {:?} (includes QEMU start)",
            started.elapsed()
        );
        let renewal = spawn_dhcp_renewal(&state, &timing).unwrap();
        let mut rx = renewal.state.clone();
        let renewed = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| {
                s.interfaces[0]
                    .dhcp
                    .as_ref()
                    .is_some_and(|l| l.renewals >= 1)
            }),
        )
        .await
        .map(|r| r.map(|s| s.clone()).ok())
        .ok()
        .flatten();
        renewal.stop(false).await;
        (state, renewed)
    });

    let iface = &state.interfaces[0];
    assert_eq!(iface.error, None, "{iface:#?}");
    let lease = iface.dhcp.as_ref().expect("a lease from slirp");
    eprintln!("slirp lease: {lease:?}");
    assert_eq!(lease.address.to_string(), "10.0.2.15/24");
    assert_eq!(lease.server.to_string(), "10.0.2.2");
    assert_eq!(lease.lease_s, Some(86400));
    // Measured: with restrict=on slirp leaves out the router (3) and DNS (6)
    // options; a node under QEMU gets its default route from the config.
    assert_eq!(lease.router, None);
    assert!(state.nameservers.is_empty());
    let addrs = ns.ip_json(&["-4", "addr", "show", "dev", "kntap"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.0.2.15");
    // The config's default route, installed once the lease made 10.0.2.2 reachable.
    let route = ns.ip_json(&["-4", "route", "show", "default"]);
    assert_eq!(route[0]["gateway"], "10.0.2.2");
    assert_eq!(route[0]["dev"], "kntap");
    // slirp answers the unicast RENEW (and ACKs the same address).
    let renewed = renewed.expect("no renewal ACK from slirp within 10 s");
    assert_eq!(
        renewed.interfaces[0]
            .dhcp
            .as_ref()
            .unwrap()
            .address
            .to_string(),
        "10.0.2.15/24"
    );
}
