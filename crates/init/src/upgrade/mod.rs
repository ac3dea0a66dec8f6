//! A/B upgrades on the node: receiving a signed bundle into the inactive
//! slot ([`upgrade`]), switching back to the other slot ([`rollback`]),
//! reporting the slots ([`status`]), and at boot the trial's health gate
//! and the record of a fallback ([`after_boot`]). The record lives in
//! STATE (`upgrade/state.json`, see [`state`]); GRUB's choice in grubenv
//! on the EFI partition ([`grubenv`], mounted per operation by [`efi`]).

pub mod efi;
pub mod grubenv;
pub mod state;
pub mod write;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{Stream, StreamExt};
use machine_config::MachineConfig;

use crate::console;
use crate::node::{NodeCtl, ShutdownRequest};
use crate::shutdown::Ending;
use crate::supervisor::{ServiceState, ServiceStatus};
use state::{BootDecision, OutcomeState, PendingTrial, Slot, SlotState, StateFile};

/// Upload chunks queued between the API task and the writing thread.
const CHANNEL_DEPTH: usize = 8;
/// How long a call waits for another change to finish before it is refused.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How often the health gate looks at the services.
const GATE_TICK: Duration = Duration::from_secs(1);
/// Event kind of every upgrade event.
const EVENT: &str = "upgrade";

/// Why an upgrade call failed; each maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The request itself is wrong (InvalidArgument).
    #[error("{0}")]
    BadRequest(String),
    /// The bundle was refused (InvalidArgument): the bundle error's text.
    #[error("{0}")]
    Refused(String),
    /// The node's config or state does not allow it (FailedPrecondition).
    #[error("{0}")]
    Precondition(String),
    /// A shutdown or another change is under way (Unavailable).
    #[error("{0}")]
    Busy(String),
    /// Something on the node failed (Internal).
    #[error("{0}")]
    Internal(String),
}

/// The booted slot (`keelson.slot`).
fn booted(node: &NodeCtl) -> Result<Slot, UpgradeError> {
    let st = node.state();
    if let Some(r) = &st.net_root {
        return Err(UpgradeError::Precondition(format!(
            "this node booted from the network ({}): it has no A/B slots; serve the new image's netboot directory and restart it",
            r.url
        )));
    }
    if let Some(m) = &st.media {
        return Err(UpgradeError::Precondition(format!(
            "this node runs live from boot media ({}): it has no A/B slots; install it to a disk (machine.install in its config) or boot the new ISO",
            m.volume_id
        )));
    }
    let s = st.slot.clone();
    Slot::parse(&s)
        .ok_or_else(|| UpgradeError::Precondition(format!("the booted slot {s:?} is not A or B")))
}

/// Takes the node's change lock, refusing during a shutdown or when another
/// change holds it for more than [`LOCK_WAIT`].
async fn lock(node: &NodeCtl) -> Result<tokio::sync::MutexGuard<'_, ()>, UpgradeError> {
    if node.shutting_down() {
        return Err(UpgradeError::Busy("a shutdown is under way".into()));
    }
    match tokio::time::timeout(LOCK_WAIT, node.begin_change()).await {
        Ok(Ok(g)) => Ok(g),
        Ok(Err(e)) => Err(UpgradeError::Busy(e.to_string())),
        Err(_) => Err(UpgradeError::Busy(
            "another change (config apply, upgrade or rollback) is in progress".into(),
        )),
    }
}

fn refuse(e: UpgradeError) -> UpgradeError {
    console::marker(&format!("upgrade refused reason={e}"));
    e
}

/// Receives a bundle (the chunks after the options message) into the
/// inactive slot and sets it as GRUB's one-shot trial. The caller reboots
/// (unless `options.no_reboot`) once the reply is out.
pub async fn upgrade(
    node: &NodeCtl,
    who: &str,
    options: api::v1::UpgradeOptions,
    mut chunks: impl Stream<Item = Result<Vec<u8>, String>> + Unpin,
) -> Result<api::v1::UpgradeResponse, UpgradeError> {
    let Some(cfg) = node.config() else {
        return Err(refuse(UpgradeError::Precondition(
            "maintenance mode: no config, so no machine.trustedUpgradeKeys".into(),
        )));
    };
    if cfg.machine.trusted_upgrade_keys.is_empty() {
        return Err(refuse(UpgradeError::Precondition(
            "machine.trustedUpgradeKeys is empty in the config: this node accepts no bundle".into(),
        )));
    }
    let trusted =
        bundle::TrustedKeys::from_base64(&cfg.machine.trusted_upgrade_keys).map_err(|e| {
            refuse(UpgradeError::Precondition(format!(
                "machine.trustedUpgradeKeys: {e}"
            )))
        })?;
    let max = bundle::Limits::default();
    let absurd =
        max.kernel + max.initramfs + max.rootfs + u64::from(bundle::MAX_MANIFEST_LEN) + 112;
    if options.size > absurd {
        return Err(refuse(UpgradeError::BadRequest(format!(
            "options.size: {} bytes is larger than any bundle can be ({absurd})",
            options.size
        ))));
    }
    let _guard = lock(node).await.map_err(refuse)?;
    let booted = booted(node).map_err(refuse)?;
    let slot = booted.other();
    let device = crate::partitions::find(
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        slot.partition(),
    )
    .ok_or_else(|| {
        refuse(UpgradeError::Precondition(format!(
            "partition {} not found",
            slot.partition()
        )))
    })?;
    let device_size = crate::grow::size_of(&device.dev).map_err(|e| {
        refuse(UpgradeError::Internal(format!(
            "size of {}: {e}",
            device.dev.display()
        )))
    })?;
    let target = write::Target {
        slot,
        booted,
        running_version: crate::stage2::version(),
        device: device.dev.clone(),
        device_size,
    };
    console::marker(&format!("upgrade receiving size={}", options.size));
    tracing::info!(slot = %slot, size = options.size, by = who, "upgrade receiving");
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(CHANNEL_DEPTH);
    let job = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            let session =
                efi::mount().map_err(|e| write::InstallError::Precondition(e.to_string()))?;
            let state = StateFile::node();
            write::check_target(&target, &session, &state)?;
            let chunks = std::iter::from_fn(|| rx.blocking_recv());
            write::install(&target, &session, &state, trusted, chunks)
        })
    };
    while let Some(msg) = chunks.next().await {
        let item = if node.shutting_down() {
            Err("a shutdown began during the upload".to_string())
        } else {
            msg
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    let result = job
        .await
        .map_err(|e| UpgradeError::Internal(format!("the writing thread failed: {e}")));
    let written = match result {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            let err = match e {
                write::InstallError::Precondition(m) => UpgradeError::Precondition(m),
                write::InstallError::Finalize(m) => UpgradeError::Internal(m),
                e @ (write::InstallError::Bundle(_) | write::InstallError::Stream { .. }) => {
                    UpgradeError::Refused(e.to_string())
                }
            };
            node.events.emit(
                EVENT,
                format!("upgrade refused: {err}"),
                &[("slot", slot.to_string()), ("outcome", "refused".into())],
            );
            return Err(refuse(err));
        }
        Err(e) => return Err(refuse(e)),
    };
    let version = written.manifest.os_version.clone();
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    console::marker(&format!(
        "upgrade written slot={slot} version={version} bytes={} took_ms={took_ms}",
        written.bytes
    ));
    node.events.emit(
        EVENT,
        format!("version {version} written to slot {slot} by {who}; trial set for the next boot"),
        &[
            ("slot", slot.to_string()),
            ("version", version.clone()),
            ("bytes", written.bytes.to_string()),
            ("outcome", "written".into()),
        ],
    );
    Ok(api::v1::UpgradeResponse {
        message: format!(
            "version {version} written to slot {slot}; {}",
            if options.no_reboot {
                "it boots on trial at the next reboot"
            } else {
                "rebooting into it on trial"
            }
        ),
        slot: slot.to_string(),
        os_version: version,
        bytes: written.bytes,
        rebooting: !options.no_reboot,
    })
}

/// Makes the other slot GRUB's default (it must hold a good image) and
/// clears any pending trial. The caller reboots unless `no_reboot`.
pub async fn rollback(
    node: &NodeCtl,
    who: &str,
    no_reboot: bool,
) -> Result<api::v1::UpgradeResponse, UpgradeError> {
    let _guard = lock(node).await?;
    let booted = booted(node)?;
    let running = crate::stage2::version();
    let who = who.to_string();
    let (other, version) =
        tokio::task::spawn_blocking(move || -> Result<(Slot, String), UpgradeError> {
            let state = StateFile::node();
            let rec = state
                .load()
                .map_err(|e| UpgradeError::Internal(e.to_string()))?;
            let other = booted.other();
            let o = rec.slot(other, booted, &running);
            if o.state != SlotState::Good {
                return Err(UpgradeError::Precondition(format!(
                    "slot {other} is {}{}: no good image to roll back to",
                    o.state.as_str(),
                    o.os_version
                        .map(|v| format!(" (version {v})"))
                        .unwrap_or_default()
                )));
            }
            let version = o.os_version.unwrap_or_default();
            let session = efi::mount().map_err(|e| UpgradeError::Internal(e.to_string()))?;
            grubenv::update(&session.grubenv(), |env| {
                env.set("default", other.as_str());
                env.unset("next_entry");
            })
            .map_err(|e| UpgradeError::Internal(e.to_string()))?;
            let now = crate::events::now_ms();
            let detail = format!("rollback to slot {other} (version {version}) requested by {who}");
            state
                .update(|r| {
                    match r.trial.clone() {
                        Some(t) if t.slot == booted => state::record_rollback(r, &t, &detail, now),
                        _ => {
                            r.trial = None;
                            r.last = Some(state::Outcome {
                                state: OutcomeState::RolledBack,
                                slot: booted,
                                detail: detail.clone(),
                                unix_ms: now,
                                reported: false,
                            });
                        }
                    }
                    if !r.slots.contains_key(&booted) {
                        r.set_slot(booted, SlotState::Good, Some(running.clone()), now);
                    }
                })
                .map_err(|e| {
                    UpgradeError::Internal(format!(
                        "grubenv switched to {other}, but STATE not updated: {e}"
                    ))
                })?;
            Ok((other, version))
        })
        .await
        .map_err(|e| UpgradeError::Internal(format!("rollback thread: {e}")))??;
    console::marker(&format!(
        "upgrade rolled back slot={booted} reason=rollback to {other} requested"
    ));
    node.events.emit(
        EVENT,
        format!("default slot switched from {booted} to {other}"),
        &[
            ("slot", booted.to_string()),
            ("to", other.to_string()),
            ("outcome", "rolled-back".into()),
        ],
    );
    Ok(api::v1::UpgradeResponse {
        message: format!(
            "slot {other} (version {version}) is the default; {}",
            if no_reboot {
                "it boots at the next reboot"
            } else {
                "rebooting into it"
            }
        ),
        slot: other.to_string(),
        os_version: version,
        bytes: 0,
        rebooting: !no_reboot,
    })
}

/// The slots (booted, default, state, version) and the last outcome.
pub async fn status(node: &NodeCtl) -> Result<api::v1::UpgradeStatusResponse, UpgradeError> {
    let booted = booted(node)?;
    let running = crate::stage2::version();
    tokio::task::spawn_blocking(move || {
        let rec = StateFile::node()
            .load()
            .map_err(|e| UpgradeError::Internal(e.to_string()))?;
        // Never wait for an upload to end: while one holds the EFI
        // partition, GRUB's choice is the one last seen.
        static SEEN: std::sync::Mutex<(Option<Slot>, Option<Slot>)> =
            std::sync::Mutex::new((None, None));
        let env = efi::try_mount()
            .map_err(|e| e.to_string())
            .and_then(|s| grubenv::read(&s.grubenv()).map_err(|e| e.to_string()));
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        match &env {
            Ok(env) => {
                *seen = (
                    env.get("default").and_then(Slot::parse),
                    env.get("next_entry").and_then(Slot::parse),
                )
            }
            Err(e) => tracing::warn!(error = %e, "grubenv not read for the upgrade status"),
        }
        let (default, next_entry) = *seen;
        Ok(status_of(&rec, booted, &running, default, next_entry))
    })
    .await
    .map_err(|e| UpgradeError::Internal(format!("status thread: {e}")))?
}

/// The status answer from the record and grubenv (pure).
fn status_of(
    rec: &state::Record,
    booted: Slot,
    running: &str,
    default: Option<Slot>,
    next_entry: Option<Slot>,
) -> api::v1::UpgradeStatusResponse {
    let slots = Slot::ALL
        .iter()
        .map(|&s| {
            let r = rec.slot(s, booted, running);
            api::v1::SlotStatus {
                name: s.to_string(),
                state: r.state.as_str().to_string(),
                os_version: r.os_version.unwrap_or_default(),
                booted: s == booted,
                is_default: default == Some(s),
            }
        })
        .collect();
    let (state, detail, unix_ms) = match (&rec.trial, &rec.last) {
        (Some(t), _) if t.slot == booted => (
            "trial".to_string(),
            format!(
                "version {} on slot {} runs its health gate",
                t.version, t.slot
            ),
            t.booted_unix_ms.unwrap_or(t.unix_ms),
        ),
        (Some(t), _) => (
            "staged".to_string(),
            format!(
                "version {} on slot {} boots on trial at the next reboot{}",
                t.version,
                t.slot,
                if next_entry == Some(t.slot) {
                    ""
                } else {
                    " (but grubenv's next_entry is not set)"
                }
            ),
            t.unix_ms,
        ),
        (None, Some(o)) => (o.state.as_str().to_string(), o.detail.clone(), o.unix_ms),
        (None, None) => ("none".to_string(), String::new(), 0),
    };
    api::v1::UpgradeStatusResponse {
        slots,
        state,
        detail,
        unix_ms,
    }
}

/// Whether the boot-time hook already ran in this boot.
static AFTER_BOOT: AtomicBool = AtomicBool::new(false);

/// At boot (once, whichever of the boot paths calls it first): applies the
/// boot decision. A trial boot runs the health gate (commit, or roll back
/// and reboot after `upgrade.healthTimeout` counted from boot); a boot of
/// the old slot after a failed trial records the rollback and says so.
pub async fn after_boot(node: NodeCtl, cfg: Option<Arc<MachineConfig>>) {
    if AFTER_BOOT.swap(true, Ordering::SeqCst) {
        return;
    }
    recover_interrupted_writes(&node).await;
    let booted = match booted(&node) {
        Ok(b) => b,
        Err(e) if node.state().net_root.is_some() || node.state().media.is_some() => {
            tracing::info!(reason = %e, "upgrade: no boot decision");
            return;
        }
        Err(e) => {
            tracing::warn!(reason = %e, "upgrade: booted slot unknown, no boot decision");
            return;
        }
    };
    let decided =
        tokio::task::spawn_blocking(move || -> Result<(state::Record, BootDecision), String> {
            let rec = StateFile::node().load().map_err(|e| e.to_string())?;
            if rec.trial.is_none() {
                return Ok((rec, BootDecision::Nothing));
            }
            let session = efi::mount().map_err(|e| e.to_string())?;
            let env = grubenv::read(&session.grubenv()).map_err(|e| e.to_string())?;
            let next_entry = env.get("next_entry").and_then(Slot::parse);
            let decision = state::decide(&rec, booted, next_entry);
            Ok((rec, decision))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let (rec, decision) = match decided {
        Ok(d) => d,
        Err(e) => {
            node.state()
                .error(format!("upgrade: boot decision not made: {e}"));
            return;
        }
    };
    match decision {
        BootDecision::Nothing => {
            // A rollback the previous boot decided (health timeout, or by
            // hand): say so on this boot of the old slot.
            if let Some(o) = state::unreported_rollback(&rec).cloned() {
                announce_rollback(&node, o.slot, &o.detail);
                blocking_update(|r| {
                    if let Some(last) = r.last.as_mut() {
                        last.reported = true;
                    }
                })
                .await;
            }
        }
        BootDecision::Staged { trial } => tracing::info!(
            slot = %trial.slot,
            version = %trial.version,
            "upgrade staged: the trial boots at the next reboot"
        ),
        BootDecision::FellBack { trial, detail } => {
            announce_rollback(&node, trial.slot, &detail);
            blocking_update(move |r| {
                state::record_rollback(r, &trial, &detail, crate::events::now_ms());
                if let Some(last) = r.last.as_mut() {
                    last.reported = true;
                }
            })
            .await;
        }
        BootDecision::Trial { trial } => health_gate(node, cfg, trial).await,
    }
}

/// A slot still recorded as `writing` at boot was cut off mid-write (power
/// loss, reset, crash): it is marked invalid, and the console, events and
/// health say so. The active slot and GRUB's default were never touched.
async fn recover_interrupted_writes(node: &NodeCtl) {
    let found = tokio::task::spawn_blocking(|| -> Result<Vec<(Slot, Option<String>)>, String> {
        // The EFI session lock: a write in progress (none can be, this
        // early, but the lock makes it certain) finishes first.
        let _one = efi::exclusive();
        let file = StateFile::node();
        let mut rec = file.load().map_err(|e| e.to_string())?;
        let now = crate::events::now_ms();
        if state::invalidate_interrupted(&mut rec, now).is_empty() {
            return Ok(Vec::new());
        }
        let mut cut = Vec::new();
        file.update(|r| cut = state::invalidate_interrupted(r, now))
            .map_err(|e| e.to_string())?;
        Ok(cut)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let cut = match found {
        Ok(cut) => cut,
        Err(e) => {
            node.state()
                .error(format!("upgrade: interrupted writes not checked: {e}"));
            return;
        }
    };
    for (slot, version) in cut {
        let version = version.unwrap_or_else(|| "unknown".into());
        console::marker(&format!(
            "upgrade interrupted slot={slot} version={version}: the write did not finish (power loss, reset or crash); the slot is invalid until an upgrade writes it again"
        ));
        node.state().error(format!(
            "upgrade of slot {slot} (version {version}) was interrupted before it was written; the slot is invalid, retry the upgrade"
        ));
        node.events.emit(
            EVENT,
            format!("upgrade of slot {slot} (version {version}) was cut off mid-write; slot marked invalid"),
            &[
                ("slot", slot.to_string()),
                ("version", version.clone()),
                ("outcome", "interrupted".into()),
            ],
        );
    }
}

/// Applies `change` to the record on a blocking thread, holding the EFI
/// session lock (so it never interleaves with an operation); errors are
/// logged.
async fn blocking_update(
    change: impl FnOnce(&mut state::Record) + Send + 'static,
) -> Option<state::Record> {
    let update = move || {
        let _one = efi::exclusive();
        StateFile::node().update(change)
    };
    match tokio::task::spawn_blocking(update).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "upgrade record not updated");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "upgrade record thread failed");
            None
        }
    }
}

fn announce_rollback(node: &NodeCtl, slot: Slot, reason: &str) {
    console::marker(&format!("upgrade rolled back slot={slot} reason={reason}"));
    node.state()
        .error(format!("upgrade rolled back (slot {slot}): {reason}"));
    node.events.emit(
        EVENT,
        format!("upgrade of slot {slot} rolled back: {reason}"),
        &[
            ("slot", slot.to_string()),
            ("outcome", "rolled-back".into()),
            ("reason", reason.to_string()),
        ],
    );
}

/// The services a slot must keep running to be committed.
fn required_services(kubelet: bool) -> Vec<&'static str> {
    let mut v = vec![crate::apid_service::NAME, "containerd"];
    if kubelet {
        v.push("kubelet");
    }
    v
}

/// Whether every required service runs: their restart counts if so, else
/// what is wrong with the first that does not (pure).
fn check_health(
    statuses: &[ServiceStatus],
    required: &[&str],
) -> Result<BTreeMap<String, u32>, String> {
    let mut restarts = BTreeMap::new();
    for name in required {
        let Some(s) = statuses.iter().find(|s| s.name == *name) else {
            return Err(format!("{name} was never started"));
        };
        if s.state != ServiceState::Running {
            let why = s
                .last_error
                .clone()
                .or_else(|| s.last_exit.map(|e| e.reason.to_string()))
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            return Err(format!(
                "{name} is {}{why}, restarts={}",
                s.state, s.restarts
            ));
        }
        restarts.insert((*name).to_string(), s.restarts);
    }
    Ok(restarts)
}

fn gate_timing(cfg: Option<&MachineConfig>) -> (Duration, Duration, bool) {
    let up = cfg.map(|c| c.upgrade.clone()).unwrap_or_default();
    (
        up.healthy_after.get(),
        up.health_timeout.get(),
        cfg.is_none_or(|c| c.kubelet.enabled),
    )
}

/// The trial's health gate: commit once init, apid, containerd and (if
/// enabled) kubelet have run without a restart for `healthyAfter`; roll
/// back and reboot if that has not happened by `healthTimeout` after boot.
async fn health_gate(node: NodeCtl, cfg: Option<Arc<MachineConfig>>, trial: PendingTrial) {
    let (healthy_after, _, _) = gate_timing(node.config().or_else(|| cfg.clone()).as_deref());
    console::marker(&format!(
        "upgrade trial slot={} version={} healthy_after_s={}",
        trial.slot,
        trial.version,
        healthy_after.as_secs()
    ));
    node.events.emit(
        EVENT,
        format!(
            "slot {} (version {}) booted on trial; health gate started",
            trial.slot, trial.version
        ),
        &[
            ("slot", trial.slot.to_string()),
            ("outcome", "trial".into()),
        ],
    );
    {
        let slot = trial.slot;
        blocking_update(move |r| {
            if let Some(t) = r.trial.as_mut().filter(|t| t.slot == slot) {
                t.booted_unix_ms = Some(crate::events::now_ms());
            }
        })
        .await;
    }
    let mut gate = Gate::default();
    loop {
        if node.shutting_down() {
            tracing::info!("upgrade health gate stopped: the node is shutting down");
            return;
        }
        let cfg_now = node.config().or_else(|| cfg.clone());
        let (healthy_after, timeout, kubelet) = gate_timing(cfg_now.as_deref());
        let health = check_health(&node.sup.status(), &required_services(kubelet));
        let since_boot = Duration::from_millis(crate::sys::since_kernel_ms());
        match gate.observe(health, since_boot, healthy_after, timeout) {
            Verdict::Wait => {}
            Verdict::Commit => {
                commit(&node, &trial, healthy_after).await;
                return;
            }
            Verdict::GiveUp(reason) => {
                give_up(&node, &trial, reason).await;
                return;
            }
        }
        tokio::time::sleep(GATE_TICK).await;
    }
}

/// What the gate concludes from one look at the services.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not yet.
    Wait,
    /// Healthy for long enough: commit.
    Commit,
    /// Not healthy by the timeout: roll back, with this reason.
    GiveUp(String),
}

/// The health gate's memory between looks (pure; times are since boot).
#[derive(Debug)]
struct Gate {
    /// Since when every service has run, with their restart counts then.
    stable: Option<(Duration, BTreeMap<String, u32>)>,
    /// The last thing found wrong.
    last_problem: String,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            stable: None,
            last_problem: "no service checked yet".to_string(),
        }
    }
}

impl Gate {
    /// One look: `health` from [`check_health`] at `now` (since boot).
    fn observe(
        &mut self,
        health: Result<BTreeMap<String, u32>, String>,
        now: Duration,
        healthy_after: Duration,
        timeout: Duration,
    ) -> Verdict {
        match health {
            Ok(restarts) => match &self.stable {
                Some((since, r)) if *r == restarts => {
                    if now.saturating_sub(*since) >= healthy_after {
                        return Verdict::Commit;
                    }
                }
                Some((_, r)) => {
                    let restarted: Vec<&str> = restarts
                        .iter()
                        .filter(|(k, v)| r.get(*k) != Some(*v))
                        .map(|(k, _)| k.as_str())
                        .collect();
                    self.last_problem = format!("{} restarted", restarted.join(", "));
                    self.stable = Some((now, restarts));
                }
                None => self.stable = Some((now, restarts)),
            },
            Err(problem) => {
                self.stable = None;
                self.last_problem = problem;
            }
        }
        if now < timeout {
            return Verdict::Wait;
        }
        Verdict::GiveUp(match &self.stable {
            Some((since, _)) => format!(
                "not healthy within healthTimeout {}s: services running for only {}s of the {}s needed (last problem: {})",
                timeout.as_secs(),
                now.saturating_sub(*since).as_secs(),
                healthy_after.as_secs(),
                self.last_problem
            ),
            None => format!(
                "not healthy within healthTimeout {}s: {}",
                timeout.as_secs(),
                self.last_problem
            ),
        })
    }
}

/// The trial passed: default=<slot> in grubenv, the record committed.
async fn commit(node: &NodeCtl, trial: &PendingTrial, healthy_after: Duration) {
    let t = trial.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<bool, String> {
        let session = efi::mount().map_err(|e| e.to_string())?;
        let state = StateFile::node();
        let rec = state.load().map_err(|e| e.to_string())?;
        if rec.trial.as_ref().map(|x| (x.slot, x.unix_ms)) != Some((t.slot, t.unix_ms)) {
            // Rolled back by hand meanwhile.
            return Ok(false);
        }
        grubenv::update(&session.grubenv(), |env| {
            env.set("default", t.slot.as_str());
            env.unset("next_entry");
        })
        .map_err(|e| e.to_string())?;
        state
            .update(|r| {
                state::record_commit(r, &t, healthy_after.as_secs(), crate::events::now_ms())
            })
            .map_err(|e| format!("grubenv default={} set, but STATE not updated: {e}", t.slot))?;
        Ok(true)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match done {
        Ok(true) => {
            console::marker(&format!(
                "upgrade committed slot={} version={}",
                trial.slot, trial.version
            ));
            node.events.emit(
                EVENT,
                format!(
                    "slot {} (version {}) is healthy and now the default",
                    trial.slot, trial.version
                ),
                &[
                    ("slot", trial.slot.to_string()),
                    ("version", trial.version.clone()),
                    ("outcome", "committed".into()),
                ],
            );
        }
        Ok(false) => tracing::info!("upgrade trial no longer pending: not committed"),
        Err(e) => node.state().error(format!(
            "upgrade: slot {} healthy but not committed: {e}",
            trial.slot
        )),
    }
}

/// The trial failed its gate: record it, make sure GRUB boots the old slot,
/// reboot.
async fn give_up(node: &NodeCtl, trial: &PendingTrial, reason: String) {
    let t = trial.clone();
    let why = reason.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let session = efi::mount().map_err(|e| e.to_string())?;
        let state = StateFile::node();
        let rec = state.load().map_err(|e| e.to_string())?;
        if rec.trial.as_ref().map(|x| (x.slot, x.unix_ms)) != Some((t.slot, t.unix_ms)) {
            // Rolled back by hand meanwhile: that call set GRUB's default.
            return Ok(());
        }
        state
            .update(|r| state::record_rollback(r, &t, &why, crate::events::now_ms()))
            .map_err(|e| e.to_string())?;
        grubenv::update(&session.grubenv(), |env| {
            env.set("default", t.from.as_str());
            env.unset("next_entry");
        })
        .map_err(|e| e.to_string())?;
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = done {
        // GRUB's default is still the old slot (the trial never set it).
        node.state().error(format!(
            "upgrade rollback of slot {} not fully recorded: {e}",
            trial.slot
        ));
    }
    announce_rollback(node, trial.slot, &reason);
    node.request_shutdown(ShutdownRequest {
        cause: "upgrade-health-timeout".to_string(),
        ending: Ending::Reboot,
        force: false,
        drain: Default::default(),
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::supervisor::{ExitInfo, ExitReason};
    use std::time::SystemTime;

    fn svc(name: &str, state: ServiceState, restarts: u32) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state,
            pid: None,
            restarts,
            last_exit: None,
            last_error: None,
            since: SystemTime::now(),
        }
    }

    #[test]
    fn health_needs_every_required_service_running_and_names_the_first_that_is_not() {
        let mut all = vec![
            svc("apid", ServiceState::Running, 0),
            svc("containerd", ServiceState::Running, 1),
        ];
        assert!(check_health(&all, &required_services(false)).is_ok());
        let e = check_health(&all, &required_services(true)).unwrap_err();
        assert_eq!(e, "kubelet was never started");
        let mut k = svc("kubelet", ServiceState::BackingOff, 4);
        k.last_exit = Some(ExitInfo {
            reason: ExitReason::Code(1),
            at: SystemTime::now(),
        });
        all.push(k);
        let e = check_health(&all, &required_services(true)).unwrap_err();
        assert_eq!(e, "kubelet is backing-off (exit code 1), restarts=4");
        all[2].state = ServiceState::Running;
        let r = check_health(&all, &required_services(true)).unwrap();
        assert_eq!(r["kubelet"], 4);
        assert_eq!(r["containerd"], 1);
    }

    #[test]
    fn status_reports_slots_default_and_the_pending_trial() {
        let mut rec = state::Record::default();
        rec.set_slot(Slot::B, SlotState::Trial, Some("2.0.0".into()), 1);
        rec.trial = Some(PendingTrial {
            slot: Slot::B,
            from: Slot::A,
            version: "2.0.0".into(),
            unix_ms: 7,
            booted_unix_ms: None,
        });
        let s = status_of(&rec, Slot::A, "1.0.0", Some(Slot::A), Some(Slot::B));
        assert_eq!(s.state, "staged");
        assert_eq!(s.slots[0].name, "A");
        assert_eq!(
            (s.slots[0].state.as_str(), s.slots[0].os_version.as_str()),
            ("good", "1.0.0")
        );
        assert!(s.slots[0].booted && s.slots[0].is_default);
        assert_eq!(s.slots[1].state, "trial");
        assert!(!s.slots[1].booted && !s.slots[1].is_default);
        let s = status_of(&rec, Slot::B, "2.0.0", Some(Slot::A), None);
        assert_eq!(s.state, "trial");
        let t = rec.trial.clone().unwrap();
        state::record_rollback(&mut rec, &t, "kubelet never ran", 9);
        let s = status_of(&rec, Slot::A, "1.0.0", Some(Slot::A), None);
        assert_eq!(
            (s.state.as_str(), s.detail.as_str(), s.unix_ms),
            ("rolled-back", "kubelet never ran", 9)
        );
        assert_eq!(s.slots[1].state, "invalid");
    }

    fn ok(pairs: &[(&str, u32)]) -> Result<BTreeMap<String, u32>, String> {
        Ok(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn the_gate_commits_after_healthy_after_without_a_restart() {
        let s = Duration::from_secs;
        let mut g = Gate::default();
        let healthy = ok(&[("apid", 0), ("containerd", 0), ("kubelet", 0)]);
        assert_eq!(
            g.observe(healthy.clone(), s(30), s(60), s(300)),
            Verdict::Wait
        );
        assert_eq!(
            g.observe(healthy.clone(), s(89), s(60), s(300)),
            Verdict::Wait
        );
        assert_eq!(g.observe(healthy, s(90), s(60), s(300)), Verdict::Commit);
    }

    #[test]
    fn a_restart_or_a_failure_starts_the_healthy_period_again() {
        let s = Duration::from_secs;
        let mut g = Gate::default();
        assert_eq!(
            g.observe(ok(&[("kubelet", 0)]), s(10), s(60), s(300)),
            Verdict::Wait
        );
        // kubelet restarted between two looks: still Running, count moved.
        assert_eq!(
            g.observe(ok(&[("kubelet", 1)]), s(50), s(60), s(300)),
            Verdict::Wait
        );
        assert_eq!(
            g.observe(ok(&[("kubelet", 1)]), s(80), s(60), s(300)),
            Verdict::Wait
        );
        assert_eq!(
            g.observe(ok(&[("kubelet", 1)]), s(110), s(60), s(300)),
            Verdict::Commit
        );
        let mut g = Gate::default();
        g.observe(ok(&[("kubelet", 0)]), s(10), s(60), s(300));
        g.observe(Err("kubelet is backing-off".into()), s(40), s(60), s(300));
        assert_eq!(
            g.observe(ok(&[("kubelet", 1)]), s(71), s(60), s(300)),
            Verdict::Wait
        );
    }

    #[test]
    fn the_gate_gives_up_at_the_timeout_naming_the_last_problem() {
        let s = Duration::from_secs;
        let mut g = Gate::default();
        g.observe(
            Err("kubelet is backing-off (exit code 1), restarts=3".into()),
            s(100),
            s(60),
            s(300),
        );
        match g.observe(Err("kubelet is backing-off (exit code 1), restarts=9".into()), s(300), s(60), s(300)) {
            Verdict::GiveUp(r) => assert_eq!(
                r,
                "not healthy within healthTimeout 300s: kubelet is backing-off (exit code 1), restarts=9"
            ),
            v => panic!("{v:?}"),
        }
        let mut g = Gate::default();
        g.observe(ok(&[("kubelet", 0)]), s(280), s(60), s(300));
        match g.observe(ok(&[("kubelet", 0)]), s(301), s(60), s(300)) {
            Verdict::GiveUp(r) => assert!(r.contains("running for only 21s of the 60s"), "{r}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn gate_timing_follows_the_config_or_its_defaults() {
        let (after, timeout, kubelet) = gate_timing(None);
        assert_eq!(
            (after.as_secs(), timeout.as_secs(), kubelet),
            (60, 300, true)
        );
    }
}
