//! Bringing the node's services up from a config: the network (on a
//! thread of its own), the rendered files, containerd, the preloaded
//! images, kubelet, then the `keelson: node ready` marker. Run at boot, and
//! when a node in maintenance mode receives its first config.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use machine_config::render::NodeFacts;
use machine_config::MachineConfig;

use super::NodeCtl;
use crate::bootstate::BootState;
use crate::{apply, console, network, services};

/// How long kubelet may take to start and settle before the node-ready
/// marker is given up on.
const KUBELET_READY: Duration = Duration::from_secs(120);

/// Bound on configuring the network at boot (links, addresses, the first
/// DHCP lease); the node goes on without it after that.
const NETWORK_BOUND: Duration = Duration::from_secs(60);

/// Network, files, containerd, images, kubelet; then the ready marker.
pub async fn start_services(node: &NodeCtl, cfg: Arc<MachineConfig>) {
    let sup = &node.sup;
    // Before any early return below: the upgrade health gate must judge a
    // boot whose services never come up too (once per boot).
    tokio::spawn(crate::upgrade::after_boot(node.clone(), Some(cfg.clone())));
    // Leaving maintenance mode: its DHCP gives way to the config's network.
    if let Some(stop) = node.network_stop_hook() {
        stop.await;
    }
    let t = Instant::now();
    let (facts, dns) = configure_network(node, &cfg.network, &cfg.machine.hostname).await;
    node.state().phase("network", t.elapsed());
    node.set_facts(facts.clone());
    if let Some(dns) = dns {
        tokio::spawn(follow_dns(node.clone(), dns));
    }

    let t = Instant::now();
    let kubelet_args = render_files(&cfg, &facts, &mut node.state());
    node.state().phase("render-files", t.elapsed());

    let t = Instant::now();
    let containerd_ready = match sup.start(services::containerd_spec()) {
        Ok(h) => match h.wait_ready(Duration::from_secs(95)).await {
            Ok(()) => true,
            Err(e) => {
                node.state().error(format!("containerd not ready: {e}"));
                false
            }
        },
        Err(e) => {
            node.state().error(format!("starting containerd: {e}"));
            false
        }
    };
    node.state().phase("containerd", t.elapsed());
    if !containerd_ready {
        return;
    }
    let t = Instant::now();
    let archives = services::preload_list(Path::new(services::IMAGES_DIR), Some(&cfg));
    let imported = services::import_images(sup, &archives).await;
    tracing::info!(imported, of = archives.len(), "preloaded images");
    node.state().phase("preload-images", t.elapsed());

    let Some(args) = kubelet_args.filter(|_| cfg.kubelet.enabled) else {
        tracing::info!("kubelet disabled by the config");
        return;
    };
    let t = Instant::now();
    if let Err(e) = sup.start(services::kubelet_spec(&cfg, args)) {
        node.state().error(format!("starting kubelet: {e}"));
        return;
    }
    if !services::kubelet_settled(sup, KUBELET_READY).await {
        node.state()
            .error("kubelet did not keep running: node not ready".to_string());
        return;
    }
    node.state().phase("kubelet", t.elapsed());
    let slot = node.state().slot.clone();
    node.events.emit(
        "node-ready",
        "containerd answers CRI and kubelet is running",
        &[("slot", slot.clone())],
    );
    console::marker(&format!(
        "node ready slot={slot} version={} since_kernel_ms={}",
        crate::stage2::version(),
        crate::sys::since_kernel_ms()
    ));
    console::marker(&format!(
        "init rss_kib={}",
        crate::stage2::rss_kib().unwrap_or(0)
    ));
    tokio::spawn(super::uncordon::after_boot(node.clone(), cfg));
}

/// Maintenance mode: DHCP on every Ethernet interface with a device behind
/// it, so that the API (and its fingerprint) can be reached to give the
/// node its first config.
pub async fn maintenance_network(node: &NodeCtl) {
    // A trial slot that cannot read the config is not healthy either.
    tokio::spawn(crate::upgrade::after_boot(node.clone(), None));
    let names = network::ethernet_interfaces(Path::new("/sys/class/net"));
    if names.is_empty() {
        node.state()
            .error("maintenance mode: no Ethernet interface to reach the API on");
        return;
    }
    let net = network::dhcp_on(&names);
    let t = Instant::now();
    let (facts, _) = configure_network(node, &net, "").await;
    node.state().phase("maintenance-network", t.elapsed());
    match facts.node_ip {
        Some(ip) => console::marker(&format!(
            "maintenance mode: API at {ip}:{} (DHCP on {})",
            api::DEFAULT_PORT,
            names.join(", ")
        )),
        None => console::marker("maintenance mode: no address from DHCP"),
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Some(url) = crate::cmdline::parse(&cmdline).config_url {
        console::marker(&format!("maintenance mode: fetching the config from {url}"));
        tokio::spawn(super::config_url::apply_from(node.clone(), url));
    }
}

/// What the network thread reports once the boot-time configuration is
/// done: the state, and the DNS facts DHCP keeps publishing.
type NetworkReport = (
    Result<network::NetworkState, String>,
    Option<tokio::sync::watch::Receiver<network::DnsFacts>>,
);

/// Configures the network (links, addresses, routes, DHCP) and keeps the
/// leases renewed, on a thread of its own with its own runtime: a network
/// step that blocks can never stall PID 1's main loop (services, reaping,
/// signals). Returns what the renderers need to know, within
/// [`NETWORK_BOUND`].
async fn configure_network(
    node: &NodeCtl,
    net: &machine_config::schema::Network,
    hostname: &str,
) -> (
    NodeFacts,
    Option<tokio::sync::watch::Receiver<network::DnsFacts>>,
) {
    let mut facts = NodeFacts {
        hostname: hostname.to_string(),
        ..NodeFacts::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<NetworkReport>();
    let net_cfg = net.clone();
    let dhcp = net.interfaces.iter().any(|i| i.dhcp);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<tokio::sync::oneshot::Sender<()>>();
    node.set_network_stop(stop_tx);
    let spawned = std::thread::Builder::new()
        .name("network".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send((Err(format!("network runtime: {e}")), None));
                    return;
                }
            };
            rt.block_on(async move {
                let state = match network::apply(&net_cfg).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send((Err(e.to_string()), None));
                        return;
                    }
                };
                let renewal = if dhcp {
                    match network::spawn_dhcp_renewal(&state, &network::Timing::default()) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::error!(error = %e, "DHCP renewal not started");
                            None
                        }
                    }
                } else {
                    None
                };
                let dns = renewal.as_ref().map(|r| r.dns.clone());
                let _ = tx.send((Ok(state), dns));
                // Keep the leases (and this runtime) alive until the
                // shutdown asks for them to be released.
                if let Ok(done) = stop_rx.await {
                    if let Some(r) = renewal {
                        r.stop(true).await;
                        tracing::info!("DHCP leases released");
                    }
                    let _ = done.send(());
                } else {
                    std::future::pending::<()>().await;
                }
            });
        });
    if let Err(e) = spawned {
        node.state().error(format!("network thread: {e}"));
        return (facts, None);
    }
    let (state, dns) = match tokio::time::timeout(NETWORK_BOUND, rx).await {
        Ok(Ok((Ok(state), dns))) => (state, dns),
        Ok(Ok((Err(e), _))) => {
            node.state().error(format!("network: {e}"));
            return (facts, None);
        }
        Ok(Err(_)) => {
            node.state()
                .error("network: the network thread ended without a report".to_string());
            return (facts, None);
        }
        Err(_) => {
            node.state().error(format!(
                "network: not configured within {NETWORK_BOUND:?}; going on without it"
            ));
            return (facts, None);
        }
    };
    for iface in &state.interfaces {
        match &iface.error {
            Some(e) => node
                .state()
                .error(format!("network interface {}: {e}", iface.name)),
            None => tracing::info!(
                interface = %iface.name,
                addresses = ?iface.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                dhcp = iface.dhcp.is_some(),
                "interface configured"
            ),
        }
    }
    facts.node_ip = state.first_address();
    facts.dhcp_nameservers = state.nameservers.clone();
    facts.dhcp_search = state.search.clone();
    (facts, dns)
}

/// Rewrites /etc/resolv.conf whenever DHCP's DNS facts change, for as
/// long as the renewal runs (from the config in effect at that moment).
async fn follow_dns(node: NodeCtl, mut dns: tokio::sync::watch::Receiver<network::DnsFacts>) {
    while dns.changed().await.is_ok() {
        let d = dns.borrow_and_update().clone();
        let Some(cfg) = node.config() else { continue };
        let mut facts = node.facts();
        facts.dhcp_nameservers = d.nameservers;
        facts.dhcp_search = d.search;
        node.set_facts(facts.clone());
        let file = machine_config::render::RenderedFile {
            path: machine_config::render::RESOLV_CONF.to_string(),
            content: machine_config::render::resolv_conf(&cfg, &facts),
            mode: 0o644,
        };
        match apply::write_file(Path::new("/"), &file) {
            Ok(_) => tracing::info!("resolv.conf updated from DHCP"),
            Err(e) => tracing::warn!(error = %e, "resolv.conf not updated"),
        }
    }
}

/// Renders and writes every file; returns kubelet's flags (None when the
/// config cannot be rendered).
pub fn render_files(
    cfg: &MachineConfig,
    facts: &NodeFacts,
    st: &mut BootState,
) -> Option<Vec<String>> {
    match machine_config::render::all(cfg, facts) {
        Ok(files) => {
            let n = apply::files(st, Path::new("/"), &files);
            tracing::info!(written = n, of = files.len(), "files rendered");
        }
        Err(e) => {
            st.error(format!("rendering files: {e}"));
            return None;
        }
    }
    if !cfg.kubelet.enabled {
        return Some(Vec::new());
    }
    match machine_config::render::kubelet::render(cfg, facts) {
        Ok(k) => Some(k.args),
        Err(e) => {
            st.error(format!("rendering kubelet flags: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn maintenance_dhcp_covers_ethernet_devices_only() {
        let t = tempfile::tempdir().unwrap();
        for (name, kind, device) in [
            ("eth0", "1", true),
            ("eth1", "1", true),
            ("lo", "772", false),
            ("cni0", "1", false),
        ] {
            let d = t.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            if device {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
        }
        assert_eq!(network::ethernet_interfaces(t.path()), ["eth0", "eth1"]);
    }
}
