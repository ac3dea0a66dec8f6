//! ApplyConfiguration on a live node (booted from the ISO or the network)
//! whose config
//! has `machine.install`: every check first, in the call (a refusal
//! changes nothing and says why); then the install runs in the background,
//! its progress on the console and in `nodectl events`, and the node
//! reboots into the installed system. A failed install leaves the node
//! live, as it was, ready for another config.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use machine_config::schema::Install;

use super::config_apply::{ApplyError, ApplyMode, ApplyOutcome, ApplyRequest};
use super::{NodeCtl, ShutdownRequest};
use crate::config_store::NewGeneration;
use crate::install::write::{Progress, Report};
use crate::install::LiveBoot;
use crate::shutdown::Ending;

/// Progress is reported at least every this many bytes within a phase.
const REPORT_EVERY: u64 = 16 * 1024 * 1024;

impl NodeCtl {
    /// Checks and starts an install; `out` carries the plan and warnings
    /// computed so far.
    pub(super) async fn apply_install(
        &self,
        req: &ApplyRequest,
        install: &Install,
        live: LiveBoot,
        mut out: ApplyOutcome,
    ) -> Result<ApplyOutcome, ApplyError> {
        if matches!(
            req.mode,
            ApplyMode::NoReboot | ApplyMode::Try | ApplyMode::Staged
        ) {
            return Err(ApplyError::Unsupported(format!(
                "machine.install on a live node installs and reboots now: mode {} cannot do that (use auto or reboot)",
                req.mode.as_str()
            )));
        }
        if self.inner.installing.load(Ordering::SeqCst) {
            return Err(ApplyError::Unsupported(
                "an install is under way: wait for the node to reboot into it (nodectl events)"
                    .into(),
            ));
        }
        let target = crate::install::prepare(
            install,
            &live,
            std::path::Path::new("/sys/block"),
            std::path::Path::new("/dev"),
        )
        .map_err(|e| ApplyError::Install(e.to_string()))?;
        let disk = target.describe();
        if !target.erases.is_empty() {
            out.warnings.push(format!(
                "machine.install.wipe: erasing what {disk} holds: {}",
                target.erases.join(", ")
            ));
        }
        out.reboot_required = true;
        if req.dry_run {
            out.outcome = format!("dry run: would install to {disk}; nothing was changed");
            return Ok(out);
        }
        self.inner.installing.store(true, Ordering::SeqCst);
        out.outcome = format!(
            "installing to {disk}: progress in `nodectl events`; the node reboots into the installed system when done"
        );
        crate::console::marker(&format!(
            "install started disk={} version={} erases=\"{}\"",
            target.disk.dev.display(),
            target.payload.manifest.version,
            target.erases.join(", ")
        ));
        self.events.emit(
            "install-started",
            format!(
                "installing version {} to {disk}",
                target.payload.manifest.version
            ),
            &[
                ("disk", target.disk.dev.display().to_string()),
                ("version", target.payload.manifest.version.clone()),
            ],
        );
        let meta = NewGeneration {
            source: req.source.clone(),
            applied_by: req.applied_by.clone(),
            mode: "install".into(),
        };
        let node = self.clone();
        let bytes = req.bytes.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let report = node.install_reporter();
            let result = crate::install::write::run(&target, &node.sup, &bytes, meta, report).await;
            let dev = target.disk.dev.display().to_string();
            match result {
                Ok(()) => {
                    let took = started.elapsed().as_millis();
                    crate::console::marker(&format!("install done disk={dev} took_ms={took}"));
                    node.events.emit(
                        "install-done",
                        format!(
                            "installed to {dev} in {:.1} s; rebooting into it",
                            took as f64 / 1000.0
                        ),
                        &[("disk", dev.clone()), ("took_ms", took.to_string())],
                    );
                    node.request_shutdown(ShutdownRequest {
                        cause: format!("install to {dev}"),
                        ending: Ending::Reboot,
                        force: false,
                        drain: Default::default(),
                    });
                }
                Err(e) => {
                    crate::console::marker(&format!(
                        "install failed disk={dev} error=\"{e}\": the node stays live; apply a config again to retry"
                    ));
                    node.events.emit(
                        "install-failed",
                        format!("install to {dev} failed: {e}"),
                        &[("disk", dev.clone())],
                    );
                    node.inner.installing.store(false, Ordering::SeqCst);
                }
            }
        });
        Ok(out)
    }

    /// A progress reporter: a console line and an `install-progress` event
    /// at each phase and every [`REPORT_EVERY`] bytes.
    fn install_reporter(&self) -> Report {
        let node = self.clone();
        let last: Mutex<Option<(&'static str, u64)>> = Mutex::new(None);
        Arc::new(move |p: Progress| {
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            let due = match *last {
                Some((phase, at)) => {
                    phase != p.phase || p.written >= at + REPORT_EVERY || p.written == p.total
                }
                None => true,
            };
            if !due {
                return;
            }
            *last = Some((p.phase, p.written));
            let pct = (p.written * 100).checked_div(p.total).unwrap_or(0);
            crate::console::marker(&format!(
                "install phase={} written={} total={} percent={pct}",
                p.phase, p.written, p.total
            ));
            node.events.emit(
                "install-progress",
                format!("{}: {} of {} bytes ({pct}%)", p.phase, p.written, p.total),
                &[
                    ("phase", p.phase.to_string()),
                    ("written", p.written.to_string()),
                    ("total", p.total.to_string()),
                ],
            );
        })
    }
}
