//! The running node as one shared object: what this boot recorded, the
//! config in effect, the supervisor, the event log, and the operations the
//! machine API performs on it (applying configs, service control, starting
//! the ordered shutdown). Every mutating operation takes one lock, so two
//! API calls never reconfigure the node at the same time, and none starts
//! once a shutdown has begun.

mod bring_up;
mod config_apply;
mod config_url;
mod install;
mod reconfigure;
mod uncordon;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use machine_config::render::NodeFacts;
use machine_config::MachineConfig;
use tokio::sync::mpsc;

use crate::bootstate::BootState;
use crate::events::EventBus;
use crate::shutdown::Ending;
use crate::supervisor::Supervisor;

pub use bring_up::{maintenance_network, start_services};
pub use config_apply::{ApplyError, ApplyMode, ApplyRequest};

/// A request to end the node, from the API, a signal or the power button.
#[derive(Clone, Debug)]
pub struct ShutdownRequest {
    /// What asked (`api:shutdown`, `SIGTERM`, `power-button`, ...).
    pub cause: String,
    /// Power off or restart.
    pub ending: Ending,
    /// Skip the waits (SIGKILL at once).
    pub force: bool,
    /// The caller's say over step 2 (drain).
    pub drain: crate::shutdown::DrainOverride,
}

/// The shared node; cheap to clone.
#[derive(Clone)]
pub struct NodeCtl {
    inner: Arc<Inner>,
    /// The service supervisor.
    pub sup: Supervisor,
    /// The event log.
    pub events: EventBus,
}

struct Inner {
    state: Arc<Mutex<BootState>>,
    config: Mutex<Option<Arc<MachineConfig>>>,
    facts: Mutex<NodeFacts>,
    mutate: tokio::sync::Mutex<()>,
    shutting_down: AtomicBool,
    /// An install (from boot media) is being written.
    installing: AtomicBool,
    shutdown_tx: mpsc::Sender<ShutdownRequest>,
    store_dir: PathBuf,
    trial: Mutex<Option<tokio::task::AbortHandle>>,
    last_shutdown: Mutex<api::v1::LastShutdownResponse>,
    network_stop: Mutex<Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>>>,
}

/// Why a mutating call was refused before doing anything.
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down: no changes are accepted")]
pub struct ShuttingDown;

impl NodeCtl {
    /// The node after boot: its state, its config (None: maintenance), its
    /// supervisor and events; `store_dir` is the config store in STATE.
    /// Returns the receiver of shutdown requests, which the caller serves.
    pub fn new(
        state: BootState,
        config: Option<Arc<MachineConfig>>,
        sup: Supervisor,
        events: EventBus,
        store_dir: PathBuf,
    ) -> (NodeCtl, mpsc::Receiver<ShutdownRequest>) {
        let (shutdown_tx, rx) = mpsc::channel(4);
        let facts = NodeFacts {
            hostname: config
                .as_ref()
                .map(|c| c.machine.hostname.clone())
                .unwrap_or_default(),
            ..NodeFacts::default()
        };
        let node = NodeCtl {
            inner: Arc::new(Inner {
                state: Arc::new(Mutex::new(state)),
                config: Mutex::new(config),
                facts: Mutex::new(facts),
                mutate: tokio::sync::Mutex::new(()),
                shutting_down: AtomicBool::new(false),
                installing: AtomicBool::new(false),
                shutdown_tx,
                store_dir,
                trial: Mutex::new(None),
                last_shutdown: Mutex::new(api::v1::LastShutdownResponse::default()),
                network_stop: Mutex::new(None),
            }),
            sup,
            events,
        };
        (node, rx)
    }

    /// Locks the boot state (a poisoned lock still holds valid data: every
    /// update is a single push or assignment).
    pub fn state(&self) -> MutexGuard<'_, BootState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config in effect (None in maintenance mode).
    pub fn config(&self) -> Option<Arc<MachineConfig>> {
        self.inner
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_config(&self, cfg: Arc<MachineConfig>) {
        *self.inner.config.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
        self.state().maintenance = false;
    }

    /// What the renderers know about the running node (addresses, DHCP DNS).
    pub fn facts(&self) -> NodeFacts {
        self.inner
            .facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_facts(&self, facts: NodeFacts) {
        *self.inner.facts.lock().unwrap_or_else(|p| p.into_inner()) = facts;
    }

    /// Whether the node is in maintenance mode (no config yet).
    pub fn maintenance(&self) -> bool {
        self.config().is_none()
    }

    /// Whether a shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Takes the mutation lock for a call that changes the node; refused
    /// once a shutdown has begun.
    pub async fn begin_change(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, ShuttingDown> {
        if self.shutting_down() {
            return Err(ShuttingDown);
        }
        let guard = self.inner.mutate.lock().await;
        if self.shutting_down() {
            return Err(ShuttingDown);
        }
        Ok(guard)
    }

    /// Starts the ordered shutdown: from now on mutating calls are refused.
    /// Returns false when one had already begun (the request is dropped).
    pub fn request_shutdown(&self, req: ShutdownRequest) -> bool {
        if self.inner.shutting_down.swap(true, Ordering::SeqCst) {
            return false;
        }
        tracing::info!(cause = %req.cause, ending = ?req.ending, force = req.force, "shutdown requested");
        self.events.emit(
            "shutdown-started",
            format!("shutdown requested by {}", req.cause),
            &[
                ("cause", req.cause.clone()),
                ("force", req.force.to_string()),
            ],
        );
        if let Some(t) = self
            .inner
            .trial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            // A pending `try` is reverted at the next boot (its generation
            // is not confirmed in STATE); no live revert during shutdown.
            t.abort();
        }
        self.inner.shutdown_tx.try_send(req).is_ok()
    }

    /// Marks the shutdown as begun (a signal the caller already handles).
    pub fn mark_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The report of the previous shutdown and this boot's findings.
    pub fn last_shutdown(&self) -> api::v1::LastShutdownResponse {
        self.inner
            .last_shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets what [`NodeCtl::last_shutdown`] answers.
    pub fn set_last_shutdown(&self, r: api::v1::LastShutdownResponse) {
        *self
            .inner
            .last_shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = r;
    }

    fn set_network_stop(&self, tx: tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>) {
        *self
            .inner
            .network_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// The shutdown's hook before the links go down: stops DHCP renewal
    /// (releasing the leases) on the network thread, if it runs.
    pub fn network_stop_hook(&self) -> Option<crate::shutdown::Hook> {
        let tx = self
            .inner
            .network_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Some(Box::pin(async move {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            if tx.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }))
    }

    /// The config store in STATE.
    fn store(&self) -> Result<crate::config_store::ConfigStore, crate::config_store::StoreError> {
        crate::config_store::ConfigStore::open(&self.inner.store_dir)
    }

    /// Forwards supervisor transitions into the event log.
    pub fn forward_service_events(&self) {
        let mut rx = self.sup.events();
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(s) => {
                        let mut fields = vec![
                            ("service", s.name.clone()),
                            ("state", s.state.as_str().to_string()),
                        ];
                        if let Some(pid) = s.pid {
                            fields.push(("pid", pid.to_string()));
                        }
                        if let Some(e) = &s.last_error {
                            fields.push(("error", e.clone()));
                        }
                        events.emit(
                            "service",
                            format!("{} {}", s.name, s.state.as_str()),
                            &fields,
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Starts apid: mTLS with the config's certificates, or maintenance mode.
    /// A config whose certificates cannot be written leaves apid down (the
    /// error is in the boot state).
    pub fn start_apid(&self) {
        let cfg = self.config();
        if let Some(c) = &cfg {
            if let Err(e) = crate::apid_service::write_tls(c) {
                self.state().error(format!("apid: {e}"));
                return;
            }
        }
        let spec = crate::apid_service::spec(cfg.as_deref());
        let restarting = self
            .sup
            .status()
            .iter()
            .any(|s| s.name == crate::apid_service::NAME);
        if restarting {
            let sup = self.sup.clone();
            tokio::spawn(async move {
                let _ = sup
                    .stop(crate::apid_service::NAME, std::time::Duration::from_secs(5))
                    .await;
                if let Err(e) = sup.start(spec) {
                    tracing::error!(error = %e, "apid not restarted");
                }
            });
        } else {
            match self.sup.start(spec) {
                Ok(_) => {
                    tokio::spawn(crate::apid_service::echo_banner(self.sup.clone()));
                }
                Err(e) => self.state().error(format!("starting apid: {e}")),
            }
        }
    }
}
