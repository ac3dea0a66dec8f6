//! The DHCP client against a real server: dnsmasq in a second namespace on
//! the other end of a veth pair. Covers the first lease (address, prefix,
//! router, MTU, DNS options), renewal (leases capped at 6 s so T1 comes at
//! 3 s), expiry when the server is gone (address and route removed, DNS
//! facts change), rediscovery when it is back, a NAK when the network is
//! renumbered (new address, old one removed), and RELEASE at stop.
//! dnsmasq runs with `--no-ping` (its ping check of a new address would
//! delay every OFFER by 3 s).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use machine_config::schema::{Interface, Network};
use serde_json::Value;
use tokio::sync::watch;

use super::netns::{can_run, Netns};
use crate::network::{apply_with, spawn_dhcp_renewal, NetworkState, Timing, DHCP_ROUTE_METRIC};

/// dnsmasq serving DHCP (no DNS) on one interface of a namespace.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts run `run` (its own log and lease file) handing out `range`;
    /// `authoritative` makes it NAK requests for addresses it does not know.
    fn start(ns: &str, dir: &Path, run: &str, range: &str, authoritative: bool) -> Dnsmasq {
        let log = dir.join(format!("dnsmasq-{run}.log"));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
        ])
        .args([
            "--port=0",
            "--interface=kn0p",
            "--bind-interfaces",
            "--user=root",
            "--log-dhcp",
            "--no-ping",
        ])
        .arg(format!("--dhcp-range={range},255.255.255.0,2m"))
        .arg("--dhcp-option=option:router,10.77.0.1")
        .arg("--dhcp-option=option:dns-server,10.77.0.53,10.77.0.54")
        .arg("--dhcp-option=option:domain-search,corp.test,lab.test")
        .arg("--dhcp-option=option:mtu,1400")
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join(format!("leases-{run}")).display()
        ))
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!(
            "--pid-file={}",
            dir.join(format!("pid-{run}")).display()
        ));
        if authoritative {
            cmd.arg("--dhcp-authoritative");
        }
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .expect("start dnsmasq (package dnsmasq-base, scripts/install-deps.sh)");
        // Wait until it listens (it logs its start).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("DHCP, IP range")
        {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Dnsmasq { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addrs(ns: &Netns) -> Vec<String> {
    ns.ip_json(&["addr", "show", "dev", "kn0"])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Whether the config's static route is in namespace `ns`.
fn static_route(ns: &str) -> bool {
    let out = super::netns::run(
        "ip",
        &["-n", ns, "-j", "-4", "route", "show", "10.200.0.0/16"],
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    r[0]["gateway"] == "10.77.0.1" && r[0]["metric"] == 7
}

fn default_route(ns: &Netns) -> Option<Value> {
    ns.ip_json(&["-4", "route", "show", "default"])
        .as_array()
        .unwrap()
        .first()
        .cloned()
}

/// Waits (bounded) for the renewal tasks' state to satisfy `pred`.
async fn wait_state(
    rx: &mut watch::Receiver<NetworkState>,
    limit: Duration,
    what: &str,
    pred: impl Fn(&NetworkState) -> bool,
) -> NetworkState {
    let found = match tokio::time::timeout(limit, rx.wait_for(|s| pred(s))).await {
        Ok(Ok(st)) => Some(st.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| {
        panic!(
            "{what} not seen within {limit:?}; state: {:#?}",
            *rx.borrow()
        )
    })
}

#[test]
fn dhcp_lease_is_applied_renewed_lost_regained_and_released() {
    if !can_run("dhcp_lease_is_applied_renewed_lost_regained_and_released") {
        return;
    }
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let client_ns = Netns::new("dhcpc");
    let server_ns = Netns::new("dhcps");
    client_ns.ip(&["link", "add", "kn0", "type", "veth", "peer", "name", "kn0p"]);
    client_ns.ip(&["link", "set", "kn0p", "netns", &server_ns.name]);
    server_ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "kn0p"]);
    server_ns.ip(&["link", "set", "kn0p", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let server = Dnsmasq::start(
        &server_ns.name,
        dir.path(),
        "1",
        "10.77.0.50,10.77.0.60",
        false,
    );

    let cfg = Network {
        interfaces: vec![Interface {
            name: Some("kn0".into()),
            dhcp: true,
            // Its gateway is in the leased subnet: installed after each lease.
            routes: vec![machine_config::schema::Route {
                to: "10.200.0.0/16".parse().unwrap(),
                via: "10.77.0.1".parse().unwrap(),
                metric: Some(7),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let timing = Timing {
        dhcp_boot: Duration::from_secs(20),
        dhcp_retry_max: Duration::from_secs(1),
        max_lease: Some(Duration::from_secs(6)),
        ..Timing::default()
    };

    // First lease, through apply.
    let t = timing.clone();
    let started = Instant::now();
    let state = client_ns.block_on(move || async move { apply_with(&cfg, &t).await.unwrap() });
    let took = started.elapsed();
    let kn0 = &state.interfaces[0];
    assert_eq!(kn0.error, None, "{kn0:#?}");
    let lease = kn0.dhcp.clone().expect("a lease");
    let leased = lease.address.to_string();
    assert!(
        leased.starts_with("10.77.0.") && leased.ends_with("/24"),
        "{leased}"
    );
    assert_eq!(lease.server.to_string(), "10.77.0.1");
    assert_eq!(lease.lease_s, Some(120));
    assert_eq!((lease.renew_s, lease.expires_s), (Some(3), Some(6)));
    assert_eq!(addrs(&client_ns), vec![leased.clone()]);
    assert_eq!(kn0.addresses, vec![lease.address]);
    let route = default_route(&client_ns).expect("default route");
    assert_eq!(route["gateway"], "10.77.0.1");
    assert_eq!(route["metric"], DHCP_ROUTE_METRIC);
    assert!(
        static_route(&client_ns.name),
        "static route missing after the first lease"
    );
    assert_eq!(
        client_ns.ip_json(&["link", "show", "dev", "kn0"])[0]["mtu"],
        1400
    );
    let ns_list: Vec<String> = state.nameservers.iter().map(|n| n.to_string()).collect();
    assert_eq!(ns_list, vec!["10.77.0.53", "10.77.0.54"]);
    assert_eq!(state.search, vec!["corp.test", "lab.test"]);
    assert_eq!(state.first_address(), Some(lease.address.addr));
    eprintln!("first lease {leased} in {took:?}");

    // The rest runs in the client namespace with the renewal tasks.
    let server_log = client_ns.block_on({
        let server_ns_name = server_ns.name.clone();
        let client_ns_name = client_ns.name.clone();
        let dir = dir.path().to_path_buf();
        move || async move {
            let renewal = spawn_dhcp_renewal(&state, &timing).unwrap();
            assert_eq!(renewal.interfaces(), 1);
            let mut rx = renewal.state.clone();
            let mut dns = renewal.dns.clone();
            dns.mark_unchanged();

            // Renewal at T1 (3 s), twice, same address, DNS unchanged.
            let st = wait_state(&mut rx, Duration::from_secs(12), "two renewals", |s| {
                s.interfaces[0]
                    .dhcp
                    .as_ref()
                    .is_some_and(|l| l.renewals >= 2)
            })
            .await;
            assert_eq!(
                st.interfaces[0].dhcp.as_ref().unwrap().address.to_string(),
                leased
            );
            assert!(
                !dns.has_changed().unwrap(),
                "renewal with the same options changed DNS facts"
            );

            // Server gone: RENEW and REBIND go unanswered, the lease expires
            // (6 s after the last ACK), address and route are removed and the
            // DNS facts change.
            let log_before = server.stop();
            let gone = Instant::now();
            let st = wait_state(&mut rx, Duration::from_secs(12), "expiry", |s| {
                s.interfaces[0].dhcp.is_none()
            })
            .await;
            let lost_after = gone.elapsed();
            assert!(st.interfaces[0].addresses.is_empty(), "{st:#?}");
            assert!(
                st.interfaces[0]
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .contains("expired"),
                "{st:#?}"
            );
            assert!(st.nameservers.is_empty());
            assert!(dns.has_changed().unwrap());
            assert!(dns.borrow_and_update().nameservers.is_empty());

            // Server back: rediscovery (retry pause capped at 1 s) gets a lease again.
            let server = Dnsmasq::start(&server_ns_name, &dir, "2", "10.77.0.50,10.77.0.60", false);
            let st = wait_state(&mut rx, Duration::from_secs(15), "a new lease", |s| {
                s.interfaces[0].dhcp.is_some()
            })
            .await;
            assert_eq!(st.interfaces[0].dhcp.as_ref().unwrap().renewals, 0);
            assert_eq!(st.interfaces[0].error, None);
            assert!(
                static_route(&client_ns_name),
                "static route not reinstalled"
            );
            assert!(dns.has_changed().unwrap());
            assert_eq!(dns.borrow_and_update().nameservers.len(), 2);

            let second_log = server.stop();

            // The network is renumbered: an authoritative server that does
            // not know the lease NAKs the next RENEW; the client drops the
            // old address and discovers a new one (and its static route).
            let server =
                Dnsmasq::start(&server_ns_name, &dir, "3", "10.77.0.100,10.77.0.110", true);
            let st = wait_state(
                &mut rx,
                Duration::from_secs(15),
                "a lease in the new range",
                |s| {
                    s.interfaces[0]
                        .dhcp
                        .as_ref()
                        .is_some_and(|l| l.address.to_string().starts_with("10.77.0.1"))
                },
            )
            .await;
            let new_addr = st.interfaces[0].dhcp.as_ref().unwrap().address;
            assert_eq!(
                st.interfaces[0].addresses,
                vec![new_addr],
                "old address kept: {st:#?}"
            );
            let out = super::netns::run(
                "ip",
                &[
                    "-n",
                    &client_ns_name,
                    "-j",
                    "-4",
                    "addr",
                    "show",
                    "dev",
                    "kn0",
                ],
            );
            assert!(
                out.contains(&new_addr.addr.to_string()) && !out.contains("10.77.0.5"),
                "{out}"
            );
            assert!(
                static_route(&client_ns_name),
                "static route not reinstalled after renumbering"
            );

            // Stop with release: the server hears DHCPRELEASE.
            renewal.stop(true).await;
            let deadline = Instant::now() + Duration::from_secs(5);
            while !server.log().contains("DHCPRELEASE") && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("lease lost {lost_after:?} after the server stopped");
            (log_before, second_log, server.stop())
        }
    });
    let (first_run, second_run, third_run) = server_log;
    // The server saw the initial exchange and at least two renewals.
    assert!(first_run.contains("DHCPDISCOVER(kn0p)"), "{first_run}");
    assert!(
        first_run.matches("DHCPACK(kn0p)").count() >= 3,
        "{first_run}"
    );
    // Only the initial OFFER and ACK went out broadcast: the renewals were
    // unicast RENEWs from the leased address, answered unicast.
    assert_eq!(
        first_run.matches("broadcast response").count(),
        2,
        "{first_run}"
    );
    // The restarted server saw the rediscovery.
    assert!(second_run.contains("DHCPDISCOVER(kn0p)"), "{second_run}");
    assert!(second_run.contains("DHCPACK(kn0p)"), "{second_run}");
    // The renumbered one refused the RENEW, granted a new lease, then heard the release.
    assert!(third_run.contains("DHCPNAK(kn0p)"), "{third_run}");
    assert!(third_run.contains("DHCPACK(kn0p) 10.77.0.1"), "{third_run}");
    assert!(third_run.contains("DHCPRELEASE(kn0p)"), "{third_run}");
    assert!(
        addrs(&client_ns).is_empty(),
        "released address still on kn0"
    );
}
