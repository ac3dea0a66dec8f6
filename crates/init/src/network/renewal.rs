//! Keeping DHCP leases alive after boot: one task per `dhcp: true`
//! interface renews at T1 (RENEW unicast to the granting server), rebinds at
//! T2 (REBIND broadcast), and at expiry removes the address and route and
//! starts discovery again (with capped exponential backoff). Interfaces that
//! got no lease during [`super::apply`] start with discovery.
//!
//! Every event is one log line (`iface=eth0 dhcp=renewed addr=10.0.2.15/24
//! lease_s=86400`). The network state is republished on a watch channel after
//! each event, and the DHCP DNS facts on a second one that only changes when
//! nameservers or search domains do, so init re-renders resolv.conf exactly
//! when needed.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::dhcp::client::{Client, DhcpError, Lease};
use super::dhcp::{self, lease_info};
use super::netlink::Netlink;
use super::state::{DhcpRuntime, NetworkState};
use super::{NetworkError, Timing};

/// First pause between failed background discovery attempts; doubles up
/// to [`Timing::dhcp_retry_max`].
const RETRY_START: Duration = Duration::from_secs(1);
/// How long leases get to be released at stop.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// DNS settings learnt from DHCP (what `resolv.conf` needs beyond the
/// config's own nameservers and search domains).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsFacts {
    /// Leased nameservers, in interface order, without duplicates.
    pub nameservers: Vec<IpAddr>,
    /// Leased search domains, without duplicates.
    pub search: Vec<String>,
}

impl DnsFacts {
    fn of(state: &NetworkState) -> DnsFacts {
        DnsFacts {
            nameservers: state.nameservers.clone(),
            search: state.search.clone(),
        }
    }
}

/// The running renewal tasks. Dropping it stops them (leases stay installed
/// until they expire in the kernel's view: never, so call [`Self::stop`]
/// with `release` at shutdown when the server should know).
pub struct DhcpRenewal {
    /// The network state, republished after every lease event.
    pub state: watch::Receiver<NetworkState>,
    /// DHCP DNS facts; marked changed only when they differ.
    pub dns: watch::Receiver<DnsFacts>,
    stop: watch::Sender<Stop>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Run,
    Stop { release: bool },
}

impl DhcpRenewal {
    /// Number of interfaces being kept alive.
    pub fn interfaces(&self) -> usize {
        self.tasks.len()
    }

    /// Stops every task; with `release`, each current lease is first given
    /// back to its server (DHCPRELEASE) and removed from its link. Bounded.
    pub async fn stop(mut self, release: bool) {
        let _ = self.stop.send(Stop::Stop { release });
        let tasks = std::mem::take(&mut self.tasks);
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(RELEASE_TIMEOUT, all).await.is_err() {
            tracing::warn!(
                dhcp = %"stop",
                "DHCP tasks did not stop within {RELEASE_TIMEOUT:?}"
            );
        }
    }
}

impl Drop for DhcpRenewal {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts keeping the leases of `state`'s `dhcp: true` interfaces alive
/// (and acquiring those that have none). Must run inside the tokio runtime
/// (and network namespace) the leases belong to.
pub fn spawn_dhcp_renewal(
    state: &NetworkState,
    timing: &Timing,
) -> Result<DhcpRenewal, NetworkError> {
    let nl = Netlink::connect().map_err(NetworkError::Netlink)?;
    let (state_tx, state_rx) = watch::channel(state.clone());
    let (dns_tx, dns_rx) = watch::channel(DnsFacts::of(state));
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let shared = Arc::new(Publisher { state_tx, dns_tx });
    let mut tasks = Vec::new();
    for (pos, iface) in state.interfaces.iter().enumerate() {
        let Some(rt) = iface.runtime.clone() else {
            continue;
        };
        let base_error = rt.base_error.clone();
        let task = Task {
            pos,
            rt,
            base_error,
            timing: timing.clone(),
            nl: nl.clone(),
            publisher: shared.clone(),
            retry_pause: None,
            previous: None,
        };
        tasks.push(tokio::spawn(task.run(stop_rx.clone())));
    }
    Ok(DhcpRenewal {
        state: state_rx,
        dns: dns_rx,
        stop: stop_tx,
        tasks,
    })
}

struct Publisher {
    state_tx: watch::Sender<NetworkState>,
    dns_tx: watch::Sender<DnsFacts>,
}

struct Task {
    pos: usize,
    rt: DhcpRuntime,
    base_error: Option<String>,
    timing: Timing,
    nl: Netlink,
    publisher: Arc<Publisher>,
    /// Pause before the next discovery attempt after a failed one.
    retry_pause: Option<Duration>,
    /// The last address held, asked for again when rediscovering.
    previous: Option<Ipv4Addr>,
}

/// What happened to a lease during one step.
enum Outcome {
    Acquired(Lease),
    Renewed(Lease),
    Rebound(Lease),
    /// The lease is gone: `event` is `nak` (refused) or `expired`.
    Lost(&'static str, String),
    Failed(String),
}

impl Task {
    fn iface(&self) -> &str {
        &self.rt.link.name
    }

    async fn run(mut self, mut stop: watch::Receiver<Stop>) {
        let client = match Client::new(&self.rt.link.name, self.rt.link.index, &self.rt.link.mac) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(iface = %self.iface(), dhcp = %"failed", error = %e);
                self.publish(Some(e.to_string())).await;
                return;
            }
        };
        loop {
            let step = self.step(&client);
            let outcome = tokio::select! {
                outcome = step => Some(outcome),
                _ = stop.wait_for(|s| *s != Stop::Run) => None,
            };
            match outcome {
                Some(outcome) => self.apply(outcome).await,
                None => {
                    if *stop.borrow() == (Stop::Stop { release: true }) {
                        self.release(&client).await;
                    }
                    return;
                }
            }
        }
    }

    /// One step of the lease's life: acquire when there is none, else wait
    /// for T1 and renew, rebind, or lose it.
    async fn step(&self, client: &Client) -> Outcome {
        let Some(lease) = self.rt.lease.clone() else {
            if let Some(pause) = self.retry_pause {
                tokio::time::sleep(pause).await;
            }
            let deadline = Instant::now() + self.timing.dhcp_boot;
            return match client.acquire(deadline, self.previous).await {
                Ok(lease) => Outcome::Acquired(lease),
                Err(e) => Outcome::Failed(e.to_string()),
            };
        };
        let Some(times) = lease.times(self.timing.max_lease) else {
            // An infinite lease: nothing to renew, ever.
            return std::future::pending::<Outcome>().await;
        };
        tokio::time::sleep_until(lease.obtained + times.renew).await;
        tracing::debug!(iface = %self.iface(), dhcp = %"renewing", server = %lease.offer.server);
        match client
            .extend(&lease, true, lease.obtained + times.rebind)
            .await
        {
            Ok(Some(new)) => return Outcome::Renewed(new),
            Ok(None) => {}
            Err(e @ DhcpError::Nak { .. }) => return Outcome::Lost("nak", e.to_string()),
            Err(e) => tracing::warn!(iface = %self.iface(), dhcp = %"renew-failed", error = %e),
        }
        tokio::time::sleep_until(lease.obtained + times.rebind).await;
        tracing::info!(iface = %self.iface(), dhcp = %"rebinding", addr = %lease.offer.address);
        match client
            .extend(&lease, false, lease.obtained + times.expiry)
            .await
        {
            Ok(Some(new)) => Outcome::Rebound(new),
            Ok(None) => Outcome::Lost(
                "expired",
                format!(
                    "lease of {} expired: no server answered RENEW or REBIND",
                    lease.offer.address
                ),
            ),
            Err(e @ DhcpError::Nak { .. }) => Outcome::Lost("nak", e.to_string()),
            Err(e) => Outcome::Lost("expired", e.to_string()),
        }
    }

    async fn apply(&mut self, outcome: Outcome) {
        let old = self.rt.lease.clone();
        let (event, new, err) = match outcome {
            Outcome::Acquired(l) => ("bound", Some(l), None),
            Outcome::Renewed(l) => ("renewed", Some(l), None),
            Outcome::Rebound(l) => ("rebound", Some(l), None),
            Outcome::Lost(event, e) => (event, None, Some(e)),
            Outcome::Failed(e) => {
                let pause = self
                    .retry_pause
                    .map_or(RETRY_START, |p| p * 2)
                    .min(self.timing.dhcp_retry_max);
                tracing::warn!(iface = %self.iface(), dhcp = %"no-lease", retry_s = pause.as_secs_f32(), error = %e);
                self.retry_pause = Some(pause);
                self.publish(Some(e)).await;
                return;
            }
        };
        match new {
            Some(lease) => {
                if let Err(e) = dhcp::install(&self.nl, &self.rt.link, old.as_ref(), &lease).await {
                    tracing::error!(iface = %self.iface(), dhcp = %"install-failed", error = %e);
                    self.publish(Some(e.to_string())).await;
                    return;
                }
                self.retry_pause = None;
                self.rt.renewals = if event == "bound" {
                    0
                } else {
                    self.rt.renewals + 1
                };
                log_lease(self.iface(), event, &lease);
                self.rt.lease = Some(lease);
                let route_errors = dhcp::install_static_routes(&self.nl, &self.rt.link).await;
                let route_error = (!route_errors.is_empty()).then(|| {
                    route_errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                if let Some(err) = &route_error {
                    tracing::error!(iface = %self.iface(), dhcp = %event, error = %err, "static routes not installed");
                }
                self.publish(route_error).await;
            }
            None => {
                let err = err.unwrap_or_default();
                tracing::warn!(iface = %self.iface(), dhcp = %event, error = %err);
                if let Some(old) = &old {
                    if let Err(e) = dhcp::uninstall(&self.nl, &self.rt.link, old).await {
                        tracing::error!(iface = %self.iface(), dhcp = %"uninstall-failed", error = %e);
                    }
                }
                self.previous = old.map(|l| l.offer.address);
                self.rt.lease = None;
                self.publish(Some(err)).await;
            }
        }
    }

    async fn release(&self, client: &Client) {
        let Some(lease) = &self.rt.lease else { return };
        match client.release(lease).await {
            Ok(()) => {
                tracing::info!(iface = %self.iface(), dhcp = %"released", addr = %lease.offer.address)
            }
            Err(e) => tracing::warn!(iface = %self.iface(), dhcp = %"release-failed", error = %e),
        }
        if let Err(e) = dhcp::uninstall(&self.nl, &self.rt.link, lease).await {
            tracing::warn!(iface = %self.iface(), dhcp = %"uninstall-failed", error = %e);
        }
    }

    /// Republishes this interface's lease, addresses and error.
    async fn publish(&self, dhcp_error: Option<String>) {
        let addresses = self.nl.global_addresses(self.rt.link.index).await;
        let info = self
            .rt
            .lease
            .as_ref()
            .map(|l| lease_info(l, self.timing.max_lease, self.rt.renewals));
        let error = match (&self.base_error, dhcp_error) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.clone().or(b),
        };
        let mut dns = DnsFacts::default();
        self.publisher.state_tx.send_modify(|st| {
            if let Some(iface) = st.interfaces.get_mut(self.pos) {
                iface.dhcp = info;
                iface.error = error;
                if let Ok(addrs) = addresses {
                    iface.addresses = addrs;
                }
                if let Some(rt) = iface.runtime.as_mut() {
                    rt.lease = self.rt.lease.clone();
                    rt.renewals = self.rt.renewals;
                }
            }
            st.refresh_dns();
            dns = DnsFacts::of(st);
        });
        self.publisher.dns_tx.send_if_modified(|cur| {
            if *cur == dns {
                false
            } else {
                *cur = dns;
                true
            }
        });
    }
}

/// The one log line of a lease event.
pub(crate) fn log_lease(iface: &str, event: &str, lease: &Lease) {
    let o = &lease.offer;
    let dns = o
        .nameservers
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        iface = %iface,
        dhcp = %event,
        addr = %format!("{}/{}", o.address, o.prefix),
        router = %o.router.map(|r| r.to_string()).unwrap_or_default(),
        dns = %dns,
        server = %o.server,
        lease_s = o.lease.map(|d| d.as_secs()).unwrap_or(u64::MAX),
    );
}
