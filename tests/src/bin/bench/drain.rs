//! The drain benchmark (issue 9): a Keelson node running N evictable pods
//! is given a drain identity the way an operator gives it (the role
//! `nodectl gen drain-role` prints, its token applied live with
//! `apply-config --mode no-reboot`), then the power button starts the
//! shutdown, whose first step is the node's own drain. Timed from init's
//! console lines: the step's `took_ms` (cordon, evictions, waiting for the
//! pods to be gone), and the first and last eviction after the drain began.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keelson_tests::console::ConsoleLine;
use keelson_tests::control_plane::ControlPlane;
use keelson_tests::nodectl::Nodectl;
use keelson_tests::scenario::{drain_identity_token, with_drain_access};
use machine_config::MachineConfig;
use regex::Regex;

/// The drain's own bound in the benchmark: far above what 10 pods that stop
/// on SIGTERM need, so the figure is the drain's, not the deadline's.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

/// What one drained shutdown measured.
pub struct DrainRun {
    /// Evictable pods running when the shutdown was requested.
    pub pods: usize,
    /// init's drain report outcome (`done`, `timed-out`, `skipped`).
    pub outcome: String,
    /// Pods the drain evicted.
    pub evicted: usize,
    /// init's `shutdown step=drain took_ms`.
    pub step_ms: u64,
    /// `drain begins` → the first `drain evicted` line.
    pub first_eviction: Duration,
    /// `drain begins` → the last `drain evicted` line.
    pub last_eviction: Duration,
    /// `drain begins` → `drain done` (the evicted pods gone).
    pub done: Duration,
    /// The power button → QEMU exited (the whole shutdown).
    pub shutdown: Duration,
}

/// Gives the node a drain identity: the RBAC `nodectl gen drain-role`
/// prints, created in the cluster, and its token in the config's
/// `kubernetes` section, applied live.
pub fn give_identity(
    nodectl: &Nodectl,
    admin: &Path,
    cp: &ControlPlane,
    config: &MachineConfig,
    node: &str,
    dir: &Path,
) -> Result<()> {
    let token = drain_identity_token(nodectl, cp, node)?;
    let with_drain = with_drain_access(config, token, DRAIN_TIMEOUT);
    let file = dir.join("with-drain.yaml");
    let r = nodectl
        .apply_live(admin, &with_drain, &file)
        .with_context(|| format!("writing {}", file.display()))?;
    if r.code != 0 {
        bail!("apply-config with the drain identity failed: {r:?}");
    }
    Ok(())
}

/// Reads the drain of a finished shutdown from the console lines.
pub fn from_console(lines: &[ConsoleLine], pods: usize, shutdown: Duration) -> Result<DrainRun> {
    let begins = Regex::new(r"keelson: drain begins ")?;
    let evicted = Regex::new(r"keelson: drain evicted pod=")?;
    let done = Regex::new(r"keelson: drain done outcome=(\S+)")?;
    let step = Regex::new(r"keelson: shutdown step=drain outcome=\S+ took_ms=(\d+)")?;
    let began = lines
        .iter()
        .rfind(|l| begins.is_match(&l.text))
        .context("no `keelson: drain begins` on the console: the drain did not run")?
        .at;
    let evictions: Vec<Duration> = lines
        .iter()
        .filter(|l| l.at >= began && evicted.is_match(&l.text))
        .map(|l| l.at.saturating_sub(began))
        .collect();
    let (outcome, done_at) = lines
        .iter()
        .rev()
        .find_map(|l| done.captures(&l.text).map(|c| (c[1].to_string(), l.at)))
        .context("no `keelson: drain done` on the console")?;
    let step_ms = lines
        .iter()
        .rev()
        .find_map(|l| step.captures(&l.text)?[1].parse().ok())
        .context("no `keelson: shutdown step=drain` on the console")?;
    Ok(DrainRun {
        pods,
        outcome,
        evicted: evictions.len(),
        step_ms,
        first_eviction: evictions.first().copied().unwrap_or_default(),
        last_eviction: evictions.last().copied().unwrap_or_default(),
        done: done_at.saturating_sub(began),
        shutdown,
    })
}

/// The results section.
pub fn render(md: &mut String, run: &DrainRun) -> Result<()> {
    writeln!(md, "## Drain: {} evictable pods (n = 1)\n", run.pods)?;
    writeln!(md, "A Keelson node (direct kernel) with a drain identity given live (the role `nodectl gen drain-role` prints, its token applied with `apply-config --mode no-reboot`, `drainTimeout` {} s) runs {} bare pods that stop promptly on SIGTERM (default grace 30 s); the ACPI power button starts the shutdown, whose first step cordons the node, evicts the pods through the Eviction API and waits until they are gone. Times are init's (`shutdown step=drain took_ms`) and the harness's view of init's console lines.\n", DRAIN_TIMEOUT.as_secs(), run.pods)?;
    writeln!(md, "| pods | outcome | evicted | drain step (init) | drain begins → first eviction | → last eviction | → drain done | power button → power-off |\n|---:|---|---:|---:|---:|---:|---:|---:|")?;
    writeln!(
        md,
        "| {} | {} | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s |\n",
        run.pods,
        run.outcome,
        run.evicted,
        run.step_ms as f64 / 1000.0,
        run.first_eviction.as_secs_f64(),
        run.last_eviction.as_secs_f64(),
        run.done.as_secs_f64(),
        run.shutdown.as_secs_f64()
    )?;
    writeln!(md, "- The drain step is mostly kubelet stopping the evicted pods under TCG (each pod's SIGTERM, its sandbox torn down, the API told); the evictions themselves are requests to the API server.\n")?;
    Ok(())
}
