//! ApplyConfiguration and its companions (confirm, rollback): validate,
//! plan, decide by mode, store the generation in STATE, then change the
//! running node. A config that fails validation changes nothing; so does a
//! `no-reboot` config that needs a reboot, and a dry run.
//!
//! Modes:
//! - `auto`: live when the plan allows it, else stored and an ordered
//!   reboot;
//! - `no-reboot`: live, or refused with the plan's reboot lines;
//! - `reboot`: stored, then an ordered reboot;
//! - `staged`: stored for the next boot, nothing else;
//! - `try`: applied live and stored as a trial (STATE's `current.yaml` is
//!   left as it was, so a reboot during the trial boots the previous
//!   config); reverted live at the deadline unless confirmed.
//!
//! The node cannot reconfigure its network live yet: the plan's network
//! changes are marked `reboot` here (with the reason in the summary).

use std::sync::Arc;
use std::time::Duration;

use machine_config::plan::{Apply, ChangeKind, Plan};
use machine_config::MachineConfig;

use super::{NodeCtl, ShutdownRequest};
use crate::config_store::{NewGeneration, Record, Source, StoreError};
use crate::events::now_ms;
use crate::shutdown::Ending;

/// How to apply (the API's `ApplyMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Live where possible, else reboot.
    Auto,
    /// Live only; refuse what needs a reboot.
    NoReboot,
    /// Store, then reboot.
    Reboot,
    /// Store for the next boot.
    Staged,
    /// Live, reverted unless confirmed in time.
    Try,
}

impl ApplyMode {
    /// The name stored in the generation's record.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyMode::Auto => "auto",
            ApplyMode::NoReboot => "no-reboot",
            ApplyMode::Reboot => "reboot",
            ApplyMode::Staged => "staged",
            ApplyMode::Try => "try",
        }
    }
}

/// One ApplyConfiguration call.
#[derive(Clone, Debug)]
pub struct ApplyRequest {
    /// The config's bytes (YAML).
    pub bytes: Vec<u8>,
    /// Where it came from.
    pub source: Source,
    /// How to apply it.
    pub mode: ApplyMode,
    /// For `try`: revert unless confirmed within this.
    pub try_timeout: Duration,
    /// Plan only.
    pub dry_run: bool,
    /// The client certificate's common name.
    pub applied_by: String,
}

/// What the node did.
#[derive(Clone, Debug)]
pub struct ApplyOutcome {
    /// The plan from the config in effect.
    pub plan: Plan,
    /// "applied live", "rebooting to apply", "staged for the next boot", ...
    pub outcome: String,
    /// The generation stored (0 for a dry run).
    pub generation: u64,
    /// Validation warnings and what could not be applied live.
    pub warnings: Vec<String>,
    /// For `try`: when the node reverts unless confirmed.
    pub revert_at_unix_ms: u64,
    /// Whether the node reboots to finish.
    pub reboot_required: bool,
}

/// Why a config was refused (nothing changed) or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not a valid config: every problem, with where.
    #[error("the config is invalid; nothing was changed:\n{0}")]
    Invalid(String),
    /// `no-reboot` (or `try`) with changes that need a reboot.
    #[error("{mode} refused: these changes need a reboot (nothing was changed):\n{lines}")]
    NeedsReboot {
        /// The mode asked for.
        mode: &'static str,
        /// The reboot lines of the plan.
        lines: String,
    },
    /// A `try` is pending: confirm it or let it revert first.
    #[error("generation {0} is on trial: confirm it (`nodectl config confirm`) or wait for it to revert before applying another config")]
    TrialPending(u64),
    /// Nothing to confirm.
    #[error("no config is on trial")]
    NoTrial,
    /// A mode that makes no sense here.
    #[error("{0}")]
    Unsupported(String),
    /// The node is shutting down.
    #[error(transparent)]
    ShuttingDown(#[from] super::ShuttingDown),
    /// STATE could not be written or read.
    #[error("config store: {0}")]
    Store(#[from] StoreError),
    /// An install was refused (nothing was written).
    #[error("install refused: {0}")]
    Install(String),
    /// STATE could not be made writable.
    #[error("making STATE writable: {0}")]
    StateMount(String),
}

/// The plan as this node will carry it out: network changes need a reboot.
pub fn node_plan(old: Option<&MachineConfig>, new: &MachineConfig) -> Plan {
    let mut plan = machine_config::plan::plan(old, new);
    if old.is_some() {
        for c in &mut plan.changes {
            if c.kind == ChangeKind::Network && c.apply == Apply::Live {
                c.apply = Apply::Reboot;
                c.summary.push_str(
                    " (at the next boot: this node does not reconfigure its network live)",
                );
            }
        }
    }
    plan
}

/// On a node whose STATE is in RAM (no disk), a reboot would come back
/// without the config: kernel arguments, which such a node takes from its
/// network boot script, are left out of the plan (and reported), and
/// anything else that needs a reboot is refused. Returns the plan to carry
/// out and the warnings.
fn ram_state_plan(plan: Plan, mode: ApplyMode) -> Result<(Plan, Vec<String>), ApplyError> {
    let (args, changes): (Vec<_>, Vec<_>) = plan
        .changes
        .into_iter()
        .partition(|c| c.kind == ChangeKind::KernelArgs);
    let plan = Plan { changes };
    let warnings = args
        .iter()
        .map(|c| {
            format!(
                "{}: not applied: STATE is in RAM (network boot): the kernel command line comes from the boot script",
                c.summary
            )
        })
        .collect();
    if plan.needs_reboot() || matches!(mode, ApplyMode::Reboot | ApplyMode::Staged) {
        let lines = reboot_lines(&plan);
        return Err(ApplyError::Unsupported(format!(
            "STATE is in RAM (this node has no disk): a reboot would lose the config, so {} cannot be done{}",
            match mode {
                ApplyMode::Reboot | ApplyMode::Staged => format!("mode {}", mode.as_str()),
                _ => "this change".to_string(),
            },
            if lines.is_empty() { String::new() } else { format!(":\n{lines}") }
        )));
    }
    Ok((plan, warnings))
}

/// The plan's lines that need a reboot.
fn reboot_lines(plan: &Plan) -> String {
    plan.changes
        .iter()
        .filter(|c| c.apply == Apply::Reboot)
        .map(|c| format!("  reboot  {}", c.summary))
        .collect::<Vec<_>>()
        .join("\n")
}

impl NodeCtl {
    /// Runs `f` on the store with STATE writable.
    fn with_store<T>(
        &self,
        f: impl FnOnce(&crate::config_store::ConfigStore) -> Result<T, StoreError>,
    ) -> Result<T, ApplyError> {
        let store = self.store()?;
        if !crate::sys::is_pid1() {
            return Ok(f(&store)?);
        }
        crate::stage2::with_state_writable(|| f(&store))
            .map_err(|e| ApplyError::StateMount(e.to_string()))?
            .map_err(ApplyError::from)
    }

    /// ApplyConfiguration.
    pub async fn apply_config(&self, req: ApplyRequest) -> Result<ApplyOutcome, ApplyError> {
        let _guard = self.begin_change().await?;
        let loaded =
            machine_config::load(&req.bytes).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
        let new = Arc::new(loaded.config);
        let old = self.config();
        let mut plan = node_plan(old.as_deref(), &new);
        let mut warnings = warnings;
        // A live node (ISO or network boot) given an install target
        // installs; an installed node keeps the setting for the record.
        let live = crate::install::LiveBoot::of(&self.state());
        if let (Some(install), Some(live)) = (&new.machine.install, live) {
            let out = ApplyOutcome {
                plan,
                outcome: String::new(),
                generation: 0,
                warnings,
                revert_at_unix_ms: 0,
                reboot_required: true,
            };
            return self.apply_install(&req, install, live, out).await;
        }
        if self.state().in_ram.iter().any(|p| p == "STATE") {
            let (kept, dropped) = ram_state_plan(plan, req.mode)?;
            plan = kept;
            warnings.extend(dropped);
        }
        let mut out = ApplyOutcome {
            plan: plan.clone(),
            outcome: String::new(),
            generation: 0,
            warnings,
            revert_at_unix_ms: 0,
            reboot_required: false,
        };
        let needs_reboot = plan.needs_reboot();
        let refuse_reboot = |mode: ApplyMode| ApplyError::NeedsReboot {
            mode: mode.as_str(),
            lines: reboot_lines(&plan),
        };
        if let Some(t) = self.store()?.pending_try()? {
            return Err(ApplyError::TrialPending(t.generation));
        }
        match req.mode {
            ApplyMode::NoReboot | ApplyMode::Try if needs_reboot => {
                return Err(refuse_reboot(req.mode))
            }
            ApplyMode::Try if old.is_none() => {
                return Err(ApplyError::Unsupported(
                    "try needs a config to revert to: a node in maintenance mode takes its first config with auto, no-reboot, reboot or staged".into(),
                ))
            }
            _ => {}
        }
        if req.dry_run {
            out.outcome = "dry run: nothing was changed".into();
            out.reboot_required = needs_reboot || req.mode == ApplyMode::Reboot;
            return Ok(out);
        }
        let meta = NewGeneration {
            source: req.source.clone(),
            applied_by: req.applied_by.clone(),
            mode: req.mode.as_str().to_string(),
        };
        let fields = |gen: u64| {
            vec![
                ("generation", gen.to_string()),
                ("mode", req.mode.as_str().to_string()),
                ("applied_by", req.applied_by.clone()),
            ]
        };
        match req.mode {
            ApplyMode::Staged => {
                let rec = self.with_store(|s| s.stage(&req.bytes, meta))?;
                out.generation = rec.generation;
                out.outcome = "staged: applied at the next boot".into();
                self.events.emit(
                    "config-staged",
                    format!("generation {} staged", rec.generation),
                    &fields(rec.generation),
                );
                return Ok(out);
            }
            ApplyMode::Reboot | ApplyMode::Auto
                if needs_reboot || req.mode == ApplyMode::Reboot =>
            {
                let rec = self.with_store(|s| s.commit(&req.bytes, meta))?;
                out.generation = rec.generation;
                out.outcome = "stored; rebooting to apply".into();
                out.reboot_required = true;
                self.events.emit(
                    "config-applied",
                    format!("generation {} stored; rebooting", rec.generation),
                    &fields(rec.generation),
                );
                self.reboot_soon(format!("api:apply-config generation {}", rec.generation));
                return Ok(out);
            }
            _ => {}
        }
        let rec: Record = if req.mode == ApplyMode::Try {
            let revert_at =
                now_ms() + u64::try_from(req.try_timeout.as_millis()).unwrap_or(u64::MAX);
            out.revert_at_unix_ms = revert_at;
            self.with_store(|s| s.begin_try(&req.bytes, meta, revert_at))?
        } else {
            self.with_store(|s| s.commit(&req.bytes, meta))?
        };
        out.generation = rec.generation;
        // The first config ends maintenance mode: say "applied" for it.
        let first = old.is_none();
        let problems = match old {
            Some(old) => super::reconfigure::live(self, &old, &new, &plan).await,
            None => {
                self.first_config(Arc::clone(&new));
                Vec::new()
            }
        };
        self.set_config(Arc::clone(&new));
        out.warnings.extend(problems);
        out.outcome = match req.mode {
            ApplyMode::Try => {
                self.arm_trial(rec.generation, req.try_timeout);
                format!(
                    "applied live on trial: confirm within {}s or it reverts",
                    req.try_timeout.as_secs()
                )
            }
            _ if first => "applied".into(),
            _ => "applied live".into(),
        };
        self.events.emit(
            "config-applied",
            format!("generation {} {}", rec.generation, out.outcome),
            &fields(rec.generation),
        );
        tracing::info!(
            generation = rec.generation,
            mode = req.mode.as_str(),
            changes = plan.changes.len(),
            "config applied"
        );
        Ok(out)
    }

    /// The first config of a node in maintenance mode: kernel settings,
    /// apid with the config's certificates, then the services.
    fn first_config(&self, cfg: Arc<MachineConfig>) {
        {
            let mut st = self.state();
            crate::apply::hostname(&mut st, &cfg);
            crate::apply::modules(&mut st, &cfg);
            crate::apply::sysctls(&mut st, &cfg);
            crate::apply::report(&st);
        }
        crate::console::marker("maintenance mode ends: config applied");
        let node = self.clone();
        tokio::spawn(async move {
            // Let the response reach the client through apid before apid
            // restarts with the config's certificates.
            tokio::time::sleep(Duration::from_secs(1)).await;
            node.start_apid();
            super::start_services(&node, cfg).await;
        });
    }

    /// Starts an ordered reboot after a moment (the response first).
    fn reboot_soon(&self, cause: String) {
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            node.request_shutdown(ShutdownRequest {
                cause,
                ending: Ending::Reboot,
                force: false,
                drain: Default::default(),
            });
        });
    }

    /// Reverts trial `generation` at the deadline unless confirmed.
    fn arm_trial(&self, generation: u64, timeout: Duration) {
        let node = self.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Err(e) = node.revert_trial(generation).await {
                tracing::error!(generation, error = %e, "trial not reverted");
            }
        });
        if let Some(old) = self
            .inner
            .trial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task.abort_handle())
        {
            old.abort();
        }
    }

    async fn revert_trial(&self, generation: u64) -> Result<(), ApplyError> {
        let _guard = self.begin_change().await?;
        let store = self.store()?;
        match store.pending_try()? {
            Some(t) if t.generation == generation => {}
            _ => return Ok(()),
        }
        let (_, bytes) = store.current()?.ok_or(ApplyError::NoTrial)?;
        let previous = Arc::new(
            machine_config::load(&bytes)
                .map_err(|e| ApplyError::Invalid(e.to_string()))?
                .config,
        );
        let trial = self.config();
        if let Some(trial) = trial {
            let plan = node_plan(Some(&trial), &previous);
            let problems = super::reconfigure::live(self, &trial, &previous, &plan).await;
            for p in problems {
                tracing::warn!(generation, "revert: {p}");
            }
        }
        self.with_store(|s| s.revert_try())?;
        self.set_config(previous);
        crate::console::marker(&format!(
            "config generation {generation} reverted: not confirmed in time"
        ));
        self.events.emit(
            "config-reverted",
            format!("generation {generation} reverted: not confirmed in time"),
            &[("generation", generation.to_string())],
        );
        Ok(())
    }

    /// ConfirmConfiguration: keeps the trial config.
    pub async fn confirm_config(&self) -> Result<u64, ApplyError> {
        let _guard = self.begin_change().await?;
        if self.store()?.pending_try()?.is_none() {
            return Err(ApplyError::NoTrial);
        }
        let rec = self.with_store(|s| s.confirm_try())?;
        if let Some(t) = self
            .inner
            .trial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
        self.events.emit(
            "config-confirmed",
            format!("generation {} confirmed", rec.generation),
            &[("generation", rec.generation.to_string())],
        );
        Ok(rec.generation)
    }

    /// RollbackConfiguration: applies a stored generation (0: the previous
    /// one) again, as a new generation.
    pub async fn rollback_config(
        &self,
        generation: u64,
        mode: ApplyMode,
        try_timeout: Duration,
        applied_by: String,
    ) -> Result<ApplyOutcome, ApplyError> {
        let store = self.store()?;
        let generation = if generation == 0 {
            store.previous()?.map(|r| r.generation).ok_or_else(|| {
                ApplyError::Unsupported("there is no previous generation to roll back to".into())
            })?
        } else {
            generation
        };
        let (rec, bytes) = store.get(generation)?;
        self.apply_config(ApplyRequest {
            bytes,
            source: rec.source.clone(),
            mode,
            try_timeout,
            dry_run: false,
            applied_by,
        })
        .await
    }

    /// The store's records, newest first.
    pub fn config_history(&self) -> Result<Vec<Record>, ApplyError> {
        Ok(self.store()?.history()?)
    }

    /// A stored generation (0: current) and its bytes.
    pub fn config_generation(&self, generation: u64) -> Result<(Record, Vec<u8>), ApplyError> {
        Ok(self.store()?.get(generation)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(extra: &str) -> MachineConfig {
        let yaml = format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\n  sysctls:\n    net.core.somaxconn: \"1024\"\n{extra}"
        );
        machine_config::load(yaml.as_bytes()).unwrap().config
    }

    #[test]
    fn network_changes_wait_for_a_reboot_and_say_why() {
        let old = config("");
        let new = config("network:\n  interfaces:\n    - name: eth1\n      dhcp: true\n");
        let plan = node_plan(Some(&old), &new);
        assert!(plan.needs_reboot());
        let net: Vec<_> = plan
            .changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Network)
            .collect();
        assert!(!net.is_empty());
        for c in net {
            assert_eq!(c.apply, Apply::Reboot);
            assert!(c.summary.contains("does not reconfigure its network live"));
        }
        assert!(reboot_lines(&plan).contains("reboot"));
        // A sysctl change alone stays live; the first config is all live.
        let sysctl = config("").clone();
        let mut changed = sysctl.clone();
        changed
            .machine
            .sysctls
            .insert("net.core.somaxconn".into(), "2048".into());
        assert!(!node_plan(Some(&sysctl), &changed).needs_reboot());
        assert!(!node_plan(None, &new).needs_reboot());
    }

    #[test]
    fn a_node_with_state_in_ram_never_reboots_to_apply() {
        let args = "  kernel:\n    args: [\"mitigations=off\"]\n";
        let old = config("");
        let new = config(args);
        // Kernel args alone: left out and reported; the rest goes live.
        let plan = node_plan(None, &new);
        assert!(plan.needs_reboot(), "on a disk, kernel args need a reboot");
        let (kept, warnings) = ram_state_plan(plan, ApplyMode::Auto).unwrap();
        assert!(!kept.needs_reboot());
        assert!(kept
            .changes
            .iter()
            .all(|c| c.kind != ChangeKind::KernelArgs));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("mitigations=off") && warnings[0].contains("RAM"));
        // A network change needs a reboot: refused, with the line.
        let net = config("network:\n  interfaces:\n    - name: eth1\n      dhcp: true\n");
        let err = ram_state_plan(node_plan(Some(&old), &net), ApplyMode::Auto).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("STATE is in RAM") && text.contains("eth1"),
            "{text}"
        );
        // Reboot and staged modes cannot work at all.
        for mode in [ApplyMode::Reboot, ApplyMode::Staged] {
            let err = ram_state_plan(node_plan(Some(&old), &old), mode).unwrap_err();
            assert!(err.to_string().contains(mode.as_str()), "{err}");
        }
    }
}
