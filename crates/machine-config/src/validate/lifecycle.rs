//! Checks of the node lifecycle sections: `shutdown` step deadlines against
//! the total, the `upgrade` health gate, and the `api` listener.

use super::Checker;
use crate::schema::MachineConfig;
use crate::values::Duration;

/// Ports on the node that other services already listen on.
const TAKEN_PORTS: &[(u16, &str)] = &[
    (10248, "kubelet's healthz"),
    (10250, "kubelet's API"),
    (10255, "kubelet's read-only API"),
];

pub(super) fn check(cfg: &MachineConfig, c: &mut Checker) {
    shutdown(cfg, c);
    let up = &cfg.upgrade;
    if up.healthy_after.get().is_zero() {
        c.error(
            "upgrade.healthyAfter",
            "must be longer than 0s: a slot must prove itself before it becomes the default",
        );
    }
    if up.health_timeout <= up.healthy_after {
        c.error(
            "upgrade.healthTimeout",
            format!(
                "{} must be longer than healthyAfter ({}): otherwise a new slot is rolled \
                 back before it can ever be declared healthy",
                up.health_timeout, up.healthy_after
            ),
        );
    }
    let port = cfg.api.port;
    if port == 0 {
        c.error("api.port", "0 is not a port");
    } else if let Some((_, who)) = TAKEN_PORTS.iter().find(|(p, _)| *p == port) {
        c.error("api.port", format!("port {port} is {who}"));
    }
}

fn shutdown(cfg: &MachineConfig, c: &mut Checker) {
    let s = &cfg.shutdown;
    let steps: [(&str, Duration); 5] = [
        ("kubelet", s.kubelet),
        ("pods", s.pods),
        ("containerd", s.containerd),
        ("processes", s.processes),
        ("unmount", s.unmount),
    ];
    for (name, d) in &steps {
        if d.get().is_zero() {
            c.error(
                format!("shutdown.{name}"),
                "must be longer than 0s: every step needs time to finish cleanly",
            );
        }
    }
    let sum = steps.iter().fold(std::time::Duration::ZERO, |acc, (_, d)| {
        acc.saturating_add(d.get())
    });
    if sum > s.total.get() {
        let parts = steps
            .iter()
            .map(|(n, d)| format!("{n} {d}"))
            .collect::<Vec<_>>()
            .join(" + ");
        c.error(
            "shutdown.total",
            format!(
                "{} is shorter than the steps it bounds ({parts} = {}): the last steps \
                 would be cut short; raise total or shorten a step",
                s.total,
                Duration(sum)
            ),
        );
    }
}
