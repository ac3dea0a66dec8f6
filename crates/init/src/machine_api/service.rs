//! The `Machine` service over the node: each RPC translated to a
//! [`NodeCtl`] operation or a read of the running system, and each failure
//! to a gRPC status that says what and why.

use std::pin::Pin;
use std::time::Duration;

use api::v1::machine_server::Machine;
use api::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::events::system_ms;
use crate::node::{ApplyError, ApplyMode, ApplyRequest, NodeCtl, ShutdownRequest};
use crate::shutdown::Ending;
use crate::supervisor::{ServiceState, ServiceStatus as SupStatus, SupervisorError};
use crate::upgrade::UpgradeError;

/// A server stream of `T`.
type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Bound on `Health { wait: true }`.
const HEALTH_WAIT: Duration = Duration::from_secs(120);
/// Default `try` timeout when the request gives none.
const TRY_DEFAULT: Duration = Duration::from_secs(60);
/// Services the API may not stop or restart by hand (apid carries the call).
const SERVICE_TAIL_DEFAULT: u32 = 100;

/// The API over one node.
pub struct MachineService {
    node: NodeCtl,
}

impl MachineService {
    /// The service for `node`.
    pub fn new(node: NodeCtl) -> Self {
        MachineService { node }
    }
}

/// The caller's certificate CN as apid passed it.
fn caller<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(api::CLIENT_CN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("local")
        .to_string()
}

fn mode(m: i32) -> Result<ApplyMode, Status> {
    Ok(match api::v1::ApplyMode::try_from(m) {
        Ok(api::v1::ApplyMode::Auto) => ApplyMode::Auto,
        Ok(api::v1::ApplyMode::NoReboot) => ApplyMode::NoReboot,
        Ok(api::v1::ApplyMode::Reboot) => ApplyMode::Reboot,
        Ok(api::v1::ApplyMode::Staged) => ApplyMode::Staged,
        Ok(api::v1::ApplyMode::Try) => ApplyMode::Try,
        Err(_) => return Err(Status::invalid_argument(format!("mode: unknown value {m}"))),
    })
}

fn apply_status(e: ApplyError) -> Status {
    let msg = e.to_string();
    match e {
        ApplyError::Invalid(_) | ApplyError::Unsupported(_) => Status::invalid_argument(msg),
        ApplyError::NeedsReboot { .. }
        | ApplyError::TrialPending(_)
        | ApplyError::NoTrial
        | ApplyError::Install(_) => Status::failed_precondition(msg),
        ApplyError::ShuttingDown(_) => Status::unavailable(msg),
        ApplyError::Store(crate::config_store::StoreError::NotFound { .. }) => {
            Status::not_found(msg)
        }
        ApplyError::Store(_) | ApplyError::StateMount(_) => Status::internal(msg),
    }
}

fn service_status(s: &SupStatus) -> api::v1::ServiceStatus {
    api::v1::ServiceStatus {
        name: s.name.clone(),
        state: s.state.as_str().to_string(),
        pid: s.pid.unwrap_or(0),
        restarts: s.restarts,
        last_exit: s
            .last_exit
            .as_ref()
            .map(|e| e.reason.to_string())
            .or_else(|| s.last_error.clone())
            .unwrap_or_default(),
        since_unix_ms: system_ms(s.since),
    }
}

fn sup_status(e: SupervisorError) -> Status {
    match e {
        SupervisorError::UnknownService(_) => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

fn plan_out(plan: &machine_config::plan::Plan) -> Vec<PlannedChange> {
    plan.changes
        .iter()
        .map(|c| PlannedChange {
            kind: format!("{:?}", c.kind).to_lowercase(),
            path: c.path.clone(),
            apply: c.apply.to_string(),
            summary: c.summary.clone(),
        })
        .collect()
}

fn stream_of<T: Send + 'static>(rx: mpsc::Receiver<Result<T, Status>>) -> Streamed<T> {
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl Machine for MachineService {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let manifest = crate::stage2::version_manifest();
        let field = |k: &str| {
            manifest
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .to_string()
        };
        Ok(Response::new(VersionResponse {
            os_version: field("version"),
            slot: self.node.state().slot.clone(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            build_id: field("build_id"),
            maintenance: self.node.maintenance(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            uptime_s: crate::sys::since_kernel_ms() / 1000,
        }))
    }

    async fn health(
        &self,
        req: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        if req.get_ref().wait {
            let deadline = tokio::time::Instant::now() + HEALTH_WAIT;
            while tokio::time::Instant::now() < deadline {
                let all = self.node.sup.status();
                if !all.is_empty() && all.iter().all(|s| s.state == ServiceState::Running) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let st = self.node.state().clone();
        let mut problems = st.errors.clone();
        for f in &st.fsck {
            if f.journal_needed_recovery {
                problems.push(format!(
                    "{}: the journal needed recovery at boot (previous shutdown was not clean); e2fsck: {:?}",
                    f.partition, f.outcome
                ));
            } else if !matches!(f.outcome, crate::fsck::FsckOutcome::Clean) {
                problems.push(format!("{}: e2fsck: {:?}", f.partition, f.outcome));
            }
        }
        let last = self.node.last_shutdown();
        if !last.previous_clean && !problems.iter().any(|p| p.contains("not clean")) {
            problems.push("previous shutdown was not clean".to_string());
        }
        Ok(Response::new(HealthResponse {
            services: self.node.sup.status().iter().map(service_status).collect(),
            phases: st
                .phases
                .iter()
                .map(|p| Phase {
                    name: p.name.clone(),
                    took_ms: p.took_ms,
                })
                .collect(),
            maintenance: self.node.maintenance(),
            boot_problems: problems,
            watchdog: st
                .watchdog
                .as_ref()
                .map(|w| format!("{} ({}), timeout {}s", w.identity, w.device, w.timeout_s))
                .unwrap_or_default(),
            root: match (&st.net_root, &st.media) {
                (Some(r), _) => format!("{} (sha256 {}, {} bytes)", r.url, r.sha256, r.bytes),
                (None, Some(m)) => format!(
                    "media {} from {} (version {}, sha256 {}, {} bytes, in RAM{})",
                    m.volume_id,
                    m.source,
                    m.version,
                    m.sha256,
                    m.bytes,
                    if m.install_payload {
                        "; can install"
                    } else {
                        "; no install payload"
                    }
                ),
                (None, None) => format!("slot {}", st.slot),
            },
            in_ram: st.in_ram.clone(),
        }))
    }

    type EventsStream = Streamed<Event>;
    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let (past, mut live) = self.node.events.subscribe(req.get_ref().tail as usize);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for e in &past {
                if tx.send(Ok(e.into())).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(e) => {
                        if tx.send(Ok((&e).into())).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "events subscriber lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    async fn apply_configuration(
        &self,
        req: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let applied_by = caller(&req);
        let r = req.into_inner();
        if r.config.is_empty() {
            return Err(Status::invalid_argument(
                "config: empty; send the machine config's YAML",
            ));
        }
        let src = r.source.unwrap_or_default();
        let out = self
            .node
            .apply_config(ApplyRequest {
                bytes: r.config,
                source: crate::config_store::Source {
                    file: src.file,
                    git_repo: src.git_repo,
                    git_ref: src.git_ref,
                    git_commit: src.git_commit,
                    git_path: src.git_path,
                },
                mode: mode(r.mode)?,
                try_timeout: if r.try_timeout_s == 0 {
                    TRY_DEFAULT
                } else {
                    Duration::from_secs(u64::from(r.try_timeout_s))
                },
                dry_run: r.dry_run,
                applied_by,
            })
            .await
            .map_err(apply_status)?;
        Ok(Response::new(ApplyConfigurationResponse {
            plan: plan_out(&out.plan),
            outcome: out.outcome,
            generation: out.generation,
            warnings: out.warnings,
            revert_at_unix_ms: out.revert_at_unix_ms,
            reboot_required: out.reboot_required,
        }))
    }

    async fn confirm_configuration(
        &self,
        _: Request<ConfirmConfigurationRequest>,
    ) -> Result<Response<ConfirmConfigurationResponse>, Status> {
        let generation = self.node.confirm_config().await.map_err(apply_status)?;
        Ok(Response::new(ConfirmConfigurationResponse { generation }))
    }

    async fn get_configuration(
        &self,
        req: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        let (rec, bytes) = self
            .node
            .config_generation(req.get_ref().generation)
            .map_err(apply_status)?;
        Ok(Response::new(GetConfigurationResponse {
            config: bytes,
            record: Some((&rec).into()),
        }))
    }

    async fn config_history(
        &self,
        _: Request<ConfigHistoryRequest>,
    ) -> Result<Response<ConfigHistoryResponse>, Status> {
        let records = self.node.config_history().map_err(apply_status)?;
        Ok(Response::new(ConfigHistoryResponse {
            records: records.iter().map(Into::into).collect(),
        }))
    }

    async fn rollback_configuration(
        &self,
        req: Request<RollbackConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let applied_by = caller(&req);
        let r = req.into_inner();
        let timeout = if r.try_timeout_s == 0 {
            TRY_DEFAULT
        } else {
            Duration::from_secs(u64::from(r.try_timeout_s))
        };
        let out = self
            .node
            .rollback_config(r.generation, mode(r.mode)?, timeout, applied_by)
            .await
            .map_err(apply_status)?;
        Ok(Response::new(ApplyConfigurationResponse {
            plan: plan_out(&out.plan),
            outcome: out.outcome,
            generation: out.generation,
            warnings: out.warnings,
            revert_at_unix_ms: out.revert_at_unix_ms,
            reboot_required: out.reboot_required,
        }))
    }

    async fn service_list(
        &self,
        _: Request<ServiceListRequest>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        Ok(Response::new(ServiceListResponse {
            services: self.node.sup.status().iter().map(service_status).collect(),
        }))
    }

    async fn service_start(
        &self,
        req: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let name = req.into_inner().name;
        let _g = self.begin_change().await?;
        self.status_of(&name)?;
        // `restart` also starts a stopped service, with its last spec.
        self.node.sup.restart(&name).await.map_err(sup_status)?;
        self.service_reply(&name)
    }

    async fn service_stop(
        &self,
        req: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let name = req.into_inner().name;
        if name == crate::apid_service::NAME {
            return Err(Status::failed_precondition(
                "apid carries the API: stopping it would cut this node off (use restart)",
            ));
        }
        let _g = self.begin_change().await?;
        self.status_of(&name)?;
        let timeout = self
            .node
            .config()
            .map_or(Duration::from_secs(20), |c| c.shutdown.kubelet.get());
        self.node
            .sup
            .stop(&name, timeout)
            .await
            .map_err(sup_status)?;
        self.service_reply(&name)
    }

    async fn service_restart(
        &self,
        req: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let name = req.into_inner().name;
        let _g = self.begin_change().await?;
        let before = self.status_of(&name)?;
        if name == crate::apid_service::NAME {
            // The reply travels through apid: restart it just after.
            let sup = self.node.sup.clone();
            after_reply(async move {
                if let Err(e) = sup.restart(crate::apid_service::NAME).await {
                    tracing::error!(error = %e, "apid restart");
                }
            });
            return Ok(Response::new(ServiceResponse {
                status: Some(service_status(&before)),
            }));
        }
        self.node.sup.restart(&name).await.map_err(sup_status)?;
        self.service_reply(&name)
    }

    async fn service_kill(
        &self,
        req: Request<ServiceKillRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let r = req.into_inner();
        let signal = parse_signal(&r.signal).map_err(Status::invalid_argument)?;
        let _g = self.begin_change().await?;
        let s = self.status_of(&r.name)?;
        let Some(pid) = s.pid else {
            return Err(Status::failed_precondition(format!(
                "{} has no running process (state {})",
                r.name,
                s.state.as_str()
            )));
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        if r.name == crate::apid_service::NAME {
            // The reply travels through apid: signal it just after.
            after_reply(async move {
                if let Err(e) = nix::sys::signal::kill(pid, signal) {
                    tracing::error!(%pid, error = %e, "signalling apid");
                }
            });
            tracing::info!(service = %r.name, %pid, signal = %signal, "signal scheduled");
            return self.service_reply(&r.name);
        }
        nix::sys::signal::kill(pid, signal)
            .map_err(|e| Status::failed_precondition(format!("kill {signal} {pid}: {e}")))?;
        tracing::info!(service = %r.name, %pid, signal = %signal, "signal sent");
        self.service_reply(&r.name)
    }

    type LogsStream = Streamed<LogLine>;
    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let tail = if r.tail == 0 {
            SERVICE_TAIL_DEFAULT
        } else {
            r.tail
        } as usize;
        let (past, mut live) = self
            .node
            .sup
            .follow_logs(&r.service, tail)
            .map_err(sup_status)?;
        let (tx, rx) = mpsc::channel(256);
        let follow = r.follow;
        tokio::spawn(async move {
            let line = |l: &crate::supervisor::LogLine| LogLine {
                unix_ms: system_ms(l.at),
                line: l.text.clone(),
                stream: format!("{:?}", l.stream).to_lowercase(),
            };
            for l in &past {
                if tx.send(Ok(line(l))).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(l) => {
                        if tx.send(Ok(line(&l))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    type DmesgStream = Streamed<LogLine>;
    async fn dmesg(
        &self,
        req: Request<DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        let mut records = super::kmsg::stream(req.get_ref().follow)
            .map_err(|e| Status::internal(format!("reading /dev/kmsg: {e}")))?;
        let boot_ms = crate::events::now_ms().saturating_sub(crate::sys::since_kernel_ms());
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(r) = records.recv().await {
                let l = LogLine {
                    unix_ms: boot_ms + r.usec / 1000,
                    line: r.message,
                    stream: r.priority.to_string(),
                };
                if tx.send(Ok(l)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    type ReadStream = Streamed<Chunk>;
    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let path = req.into_inner().path;
        let real = super::files::allowed(&path).map_err(|e| match e {
            super::files::PathError::Missing { .. } => Status::not_found(e.to_string()),
            _ => Status::permission_denied(e.to_string()),
        })?;
        let (chunks, cut) = tokio::task::spawn_blocking(move || super::files::read_chunks(&real))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::failed_precondition(format!("reading {path}: {e}")))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let n = chunks.len();
            if n == 0 {
                let _ = tx.send(Ok(Chunk::default())).await;
            }
            for (i, data) in chunks.into_iter().enumerate() {
                let truncated = cut && i + 1 == n;
                if tx.send(Ok(Chunk { data, truncated })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream_of(rx)))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let services: Vec<(String, Option<u32>)> = self
            .node
            .sup
            .status()
            .into_iter()
            .map(|s| (s.name, s.pid))
            .collect();
        let out = tokio::task::spawn_blocking(move || super::stats::collect(&services))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(out))
    }

    async fn mounts(&self, _: Request<MountsRequest>) -> Result<Response<MountsResponse>, Status> {
        Ok(Response::new(super::stats::mounts()))
    }

    async fn reboot(&self, req: Request<PowerRequest>) -> Result<Response<PowerResponse>, Status> {
        self.power(req, Ending::Reboot, "api:reboot")
    }

    async fn shutdown(
        &self,
        req: Request<PowerRequest>,
    ) -> Result<Response<PowerResponse>, Status> {
        self.power(req, Ending::PowerOff, "api:shutdown")
    }

    async fn last_shutdown(
        &self,
        _: Request<LastShutdownRequest>,
    ) -> Result<Response<LastShutdownResponse>, Status> {
        Ok(Response::new(self.node.last_shutdown()))
    }

    async fn upgrade(
        &self,
        req: Request<tonic::Streaming<UpgradeRequest>>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let who = caller(&req);
        let mut stream = req.into_inner();
        let (options, first) = match stream.message().await {
            Ok(Some(UpgradeRequest {
                options: Some(o),
                chunk,
            })) => (o, chunk),
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "options: the first message must carry the upgrade options",
                ))
            }
            Err(e) => return Err(Status::invalid_argument(format!("upload: {e}"))),
        };
        let no_reboot = options.no_reboot;
        // Bytes sent along with the options are the bundle's first bytes.
        let chunks = tokio_stream::once(Ok(first)).chain(stream.map(|m| {
            m.map(|r| r.chunk)
                .map_err(|e| format!("upload stream: {}", e.message()))
        }));
        let reply = crate::upgrade::upgrade(&self.node, &who, options, chunks)
            .await
            .map_err(upgrade_status)?;
        if !no_reboot {
            self.reboot_after_reply(format!("api:upgrade by {who}"));
        }
        Ok(Response::new(reply))
    }

    type UpgradeFromUrlStream = Streamed<UpgradeFromUrlProgress>;

    /// apid answers this call itself (it downloads, then calls Upgrade):
    /// PID 1 never fetches from the network.
    async fn upgrade_from_url(
        &self,
        _: Request<UpgradeFromUrlRequest>,
    ) -> Result<Response<Self::UpgradeFromUrlStream>, Status> {
        Err(Status::unimplemented(
            "UpgradeFromUrl is served by apid, which downloads the bundle and streams it into \
             Upgrade; init does not fetch from the network",
        ))
    }

    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let who = caller(&req);
        let no_reboot = req.get_ref().no_reboot;
        let reply = crate::upgrade::rollback(&self.node, &who, no_reboot)
            .await
            .map_err(upgrade_status)?;
        if !no_reboot {
            self.reboot_after_reply(format!("api:rollback by {who}"));
        }
        Ok(Response::new(reply))
    }

    async fn upgrade_status(
        &self,
        _: Request<UpgradeStatusRequest>,
    ) -> Result<Response<UpgradeStatusResponse>, Status> {
        crate::upgrade::status(&self.node)
            .await
            .map(Response::new)
            .map_err(upgrade_status)
    }
}

fn upgrade_status(e: UpgradeError) -> Status {
    let msg = e.to_string();
    match e {
        UpgradeError::BadRequest(_) | UpgradeError::Refused(_) => Status::invalid_argument(msg),
        UpgradeError::Precondition(_) => Status::failed_precondition(msg),
        UpgradeError::Busy(_) => Status::unavailable(msg),
        UpgradeError::Internal(_) => Status::internal(msg),
    }
}

/// `SIGKILL`, `KILL`, `kill`, `9`; empty means SIGTERM.
fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal, String> {
    use std::str::FromStr as _;
    let t = text.trim();
    if t.is_empty() {
        return Ok(nix::sys::signal::Signal::SIGTERM);
    }
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| format!("signal: {n} is not a signal number"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map_err(|_| format!("signal: {t:?} is not a signal name (e.g. SIGKILL, TERM, 9)"))
}

/// How long a reply gets to travel back through apid before an action
/// that may cut it off (restarting or signalling apid, ending the node).
const REPLY_GRACE: Duration = Duration::from_millis(500);

/// Runs `action` once the reply has had [`REPLY_GRACE`] to leave.
fn after_reply(action: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(REPLY_GRACE).await;
        action.await;
    });
}

impl MachineService {
    /// Reboots (ordered) once the reply has left, with `cause`.
    fn reboot_after_reply(&self, cause: String) {
        let node = self.node.clone();
        after_reply(async move {
            node.request_shutdown(ShutdownRequest {
                cause,
                ending: Ending::Reboot,
                force: false,
                drain: Default::default(),
            });
        });
    }

    /// The node's change lock, or Unavailable once a shutdown has begun.
    async fn begin_change(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, Status> {
        self.node
            .begin_change()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    fn status_of(&self, name: &str) -> Result<SupStatus, Status> {
        self.node
            .sup
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let known: Vec<String> =
                    self.node.sup.status().into_iter().map(|s| s.name).collect();
                Status::not_found(format!(
                    "no service {name:?}; this node runs: {}",
                    known.join(", ")
                ))
            })
    }

    fn service_reply(&self, name: &str) -> Result<Response<ServiceResponse>, Status> {
        let s = self.status_of(name)?;
        Ok(Response::new(ServiceResponse {
            status: Some(service_status(&s)),
        }))
    }

    fn power(
        &self,
        req: Request<PowerRequest>,
        ending: Ending,
        what: &str,
    ) -> Result<Response<PowerResponse>, Status> {
        let who = caller(&req);
        let force = req.get_ref().force;
        let drain = crate::shutdown::DrainOverride {
            no_drain: req.get_ref().no_drain,
            timeout: req.get_ref().drain_timeout_ms.map(Duration::from_millis),
        };
        let cause = format!("{what} by {who}");
        let node = self.node.clone();
        if node.shutting_down() {
            return Err(Status::unavailable("a shutdown is already under way"));
        }
        // After a moment, so this reply gets back through apid first.
        let req = ShutdownRequest {
            cause: cause.clone(),
            ending,
            force,
            drain,
        };
        after_reply(async move {
            node.request_shutdown(req);
        });
        Ok(Response::new(PowerResponse {
            message: format!(
                "{} started ({cause}{})",
                if ending == Ending::Reboot {
                    "reboot"
                } else {
                    "shutdown"
                },
                if force { ", forced" } else { "" }
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn signals_are_named_or_numbered() {
        assert_eq!(parse_signal("").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("SIGNOPE").unwrap_err().contains("SIGNOPE"));
        assert!(parse_signal("99").is_err());
    }
}
