//! The commands that call a node's API: each builds its request, calls every
//! target node in parallel ([`crate::remote::fan_out`]) and prints the
//! answers (a table for humans, JSON/YAML for scripts; streams line by
//! line, NDJSON with `-o json`).
//!
//! `apply-config` validates the config locally first: an invalid config is
//! refused with every problem listed (exit 1) and no node is called.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use api::v1 as pb;
use serde::Serialize;

use crate::cli::{
    ApplyConfigArgs, ApplyModeArg, ConnectArgs, EventsArgs, FollowArgs, HealthArgs, LogsArgs,
    PowerArgs, ReadArgs, RollbackArgs, ServiceCommand, DEFAULT_TRY_TIMEOUT,
};
use crate::commands::upgrade::{optional_status, UpgradeStatusView};
use crate::commands::{config::check_printing, read_input, CliError, Status};
use crate::output::{to_yaml, OutputFormat, Table};
use crate::remote::{self, block_on, fan_out, report, LinePrinter, NodeError};

/// A time as RFC 3339 UTC (`-` for 0).
pub(crate) fn time_text(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_ms.to_string())
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn mode_proto(mode: ApplyModeArg) -> pb::ApplyMode {
    match mode {
        ApplyModeArg::Auto => pb::ApplyMode::Auto,
        ApplyModeArg::NoReboot => pb::ApplyMode::NoReboot,
        ApplyModeArg::Reboot => pb::ApplyMode::Reboot,
        ApplyModeArg::Staged => pb::ApplyMode::Staged,
        ApplyModeArg::Try => pb::ApplyMode::Try,
    }
}

/// The `try` window in seconds: `--timeout` only makes sense with try.
fn try_timeout(mode: ApplyModeArg, timeout: Option<Duration>) -> Result<u32, CliError> {
    match (mode, timeout) {
        (ApplyModeArg::Try, t) => {
            let secs = t.unwrap_or(DEFAULT_TRY_TIMEOUT).as_secs();
            if secs == 0 {
                return Err(CliError::Usage("--timeout must be at least 1s".into()));
            }
            u32::try_from(secs)
                .map_err(|_| CliError::Usage(format!("--timeout {secs}s is too long")))
        }
        (_, Some(_)) => Err(CliError::Usage(
            "--timeout is the confirmation window of --mode try".into(),
        )),
        (_, None) => Ok(0),
    }
}

// ---------------------------------------------------------------- views

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionView {
    hostname: String,
    os_version: String,
    slot: String,
    kernel: String,
    build_id: String,
    maintenance: bool,
    uptime_s: u64,
    /// The slot GRUB boots by default (from `UpgradeStatus`; absent when
    /// the node does not answer it).
    #[serde(skip_serializing_if = "Option::is_none")]
    default_slot: Option<String>,
    /// The last upgrade's outcome in words (same source).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_upgrade: Option<String>,
}

impl From<pb::VersionResponse> for VersionView {
    fn from(v: pb::VersionResponse) -> Self {
        VersionView {
            hostname: v.hostname,
            os_version: v.os_version,
            slot: v.slot,
            kernel: v.kernel,
            build_id: v.build_id,
            maintenance: v.maintenance,
            uptime_s: v.uptime_s,
            default_slot: None,
            last_upgrade: None,
        }
    }
}

impl VersionView {
    /// Adds what `UpgradeStatus` says (if the node answered it).
    fn with_upgrade(mut self, status: Option<UpgradeStatusView>) -> VersionView {
        if let Some(st) = status {
            self.default_slot = st.default_slot().map(str::to_owned);
            self.last_upgrade = Some(st.outcome());
        }
        self
    }
}

fn version_table(v: &VersionView) -> String {
    let mut t = Table::new(["FIELD", "VALUE"]);
    t.row(["hostname", &v.hostname]);
    t.row(["os version", &v.os_version]);
    t.row(["slot", &v.slot]);
    if let Some(d) = &v.default_slot {
        t.row(["default slot", d]);
    }
    t.row(["kernel", &v.kernel]);
    t.row(["build id", &v.build_id]);
    t.row(["uptime", &format!("{} s", v.uptime_s)]);
    t.row([
        "maintenance",
        if v.maintenance {
            "yes (no config applied yet)"
        } else {
            "no"
        },
    ]);
    if let Some(u) = &v.last_upgrade {
        t.row(["last upgrade", u]);
    }
    t.to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceView {
    name: String,
    state: String,
    pid: u32,
    restarts: u32,
    last_exit: String,
    since: String,
}

impl From<pb::ServiceStatus> for ServiceView {
    fn from(s: pb::ServiceStatus) -> Self {
        ServiceView {
            name: s.name,
            state: s.state,
            pid: s.pid,
            restarts: s.restarts,
            last_exit: s.last_exit,
            since: time_text(s.since_unix_ms),
        }
    }
}

fn services_table(services: &[ServiceView]) -> String {
    let mut t = Table::new(["SERVICE", "STATE", "PID", "RESTARTS", "SINCE", "LAST EXIT"]);
    for s in services {
        let pid = if s.pid == 0 {
            "-".to_owned()
        } else {
            s.pid.to_string()
        };
        t.row([
            s.name.clone(),
            s.state.clone(),
            pid,
            s.restarts.to_string(),
            s.since.clone(),
            s.last_exit.clone(),
        ]);
    }
    t.to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhaseView {
    name: String,
    took_ms: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthView {
    maintenance: bool,
    services: Vec<ServiceView>,
    phases: Vec<PhaseView>,
    boot_problems: Vec<String>,
    /// Set when the last upgrade was rolled back: why and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    upgrade_rolled_back: Option<String>,
    /// The hardware watchdog init keeps alive; empty: none.
    watchdog: String,
    /// Where the root came from (a slot, or a network boot's URL).
    root: String,
    /// Data partitions kept in RAM (lost at power-off).
    in_ram: Vec<String>,
}

/// Why and when the last upgrade was rolled back.
fn rolled_back_text(s: &UpgradeStatusView) -> String {
    let mut text = if s.detail.is_empty() {
        "no reason recorded".to_owned()
    } else {
        s.detail.clone()
    };
    if s.at != "-" {
        text.push_str(&format!(" (at {})", s.at));
    }
    text
}

fn health_table(h: &HealthView) -> String {
    let mut out = services_table(&h.services);
    if !h.phases.is_empty() {
        let mut t = Table::new(["BOOT PHASE", "TOOK"]);
        for p in &h.phases {
            t.row([p.name.clone(), format!("{} ms", p.took_ms)]);
        }
        out.push('\n');
        out.push_str(&t.to_string());
    }
    for p in &h.boot_problems {
        out.push_str(&format!("boot problem: {p}\n"));
    }
    // A node announces a fresh rollback as a boot problem itself: the
    // line is only for later boots (the outcome stays until the next
    // upgrade).
    let announced = h
        .boot_problems
        .iter()
        .any(|p| p.contains("upgrade rolled back"));
    if let (Some(why), false) = (&h.upgrade_rolled_back, announced) {
        out.push_str(&format!("upgrade rolled back: {why}\n"));
    }
    if h.maintenance {
        out.push_str("maintenance mode: no config applied yet\n");
    }
    if h.watchdog.is_empty() {
        out.push_str("watchdog: none (no device, or keelson.watchdog=off)\n");
    } else {
        out.push_str(&format!("watchdog: {}\n", h.watchdog));
    }
    if !h.root.is_empty() {
        out.push_str(&format!("root: {}\n", h.root));
    }
    if !h.in_ram.is_empty() {
        out.push_str(&format!(
            "in RAM (no partition; lost at power-off): {}\n",
            h.in_ram.join(", ")
        ));
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangeView {
    kind: String,
    path: String,
    apply: String,
    summary: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyView {
    generation: u64,
    outcome: String,
    reboot_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    revert_at: Option<String>,
    plan: Vec<ChangeView>,
    warnings: Vec<String>,
}

impl From<pb::ApplyConfigurationResponse> for ApplyView {
    fn from(r: pb::ApplyConfigurationResponse) -> Self {
        ApplyView {
            generation: r.generation,
            outcome: r.outcome,
            reboot_required: r.reboot_required,
            revert_at: (r.revert_at_unix_ms != 0).then(|| time_text(r.revert_at_unix_ms)),
            plan: r
                .plan
                .into_iter()
                .map(|c| ChangeView {
                    kind: c.kind,
                    path: c.path,
                    apply: c.apply,
                    summary: c.summary,
                })
                .collect(),
            warnings: r.warnings,
        }
    }
}

fn apply_table(a: &ApplyView) -> String {
    let mut out = String::new();
    for c in &a.plan {
        out.push_str(&format!("{:<7} {}\n", c.apply, c.summary));
    }
    if a.plan.is_empty() {
        out.push_str("no changes\n");
    }
    for w in &a.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    let mut line = if a.generation == 0 {
        a.outcome.clone()
    } else {
        format!("generation {}: {}", a.generation, a.outcome)
    };
    if a.reboot_required {
        line.push_str(" (the node reboots to finish)");
    }
    out.push_str(&line);
    out.push('\n');
    if let Some(at) = &a.revert_at {
        out.push_str(&format!(
            "reverts at {at} unless confirmed: `nodectl config confirm`\n"
        ));
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SourceView {
    #[serde(skip_serializing_if = "String::is_empty")]
    file: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    git_repo: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    git_ref: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    git_commit: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    git_path: String,
}

impl SourceView {
    fn text(&self) -> String {
        if !self.git_repo.is_empty() {
            let commit: String = self.git_commit.chars().take(12).collect();
            format!(
                "{}@{}:{} ({commit})",
                self.git_repo, self.git_ref, self.git_path
            )
        } else if !self.file.is_empty() {
            self.file.clone()
        } else {
            "-".into()
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordView {
    generation: u64,
    state: String,
    mode: String,
    applied_by: String,
    applied: String,
    sha256: String,
    source: SourceView,
}

impl From<pb::ConfigRecord> for RecordView {
    fn from(r: pb::ConfigRecord) -> Self {
        let s = r.source.unwrap_or_default();
        RecordView {
            generation: r.generation,
            state: r.state,
            mode: r.mode,
            applied_by: r.applied_by,
            applied: time_text(r.applied_unix_ms),
            sha256: r.sha256,
            source: SourceView {
                file: s.file,
                git_repo: s.git_repo,
                git_ref: s.git_ref,
                git_commit: s.git_commit,
                git_path: s.git_path,
            },
        }
    }
}

fn history_table(records: &[RecordView]) -> String {
    let mut t = Table::new(["GEN", "STATE", "MODE", "APPLIED", "BY", "SHA256", "SOURCE"]);
    for r in records {
        t.row([
            r.generation.to_string(),
            r.state.clone(),
            r.mode.clone(),
            r.applied.clone(),
            r.applied_by.clone(),
            r.sha256.chars().take(12).collect(),
            r.source.text(),
        ]);
    }
    t.to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GetConfigView {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<RecordView>,
    config: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProcessView {
    service: String,
    pid: u32,
    rss_bytes: u64,
    cpu_seconds: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsView {
    mem_total_bytes: u64,
    mem_available_bytes: u64,
    load1: f64,
    load5: f64,
    load15: f64,
    services: Vec<ProcessView>,
}

fn stats_table(s: &StatsView) -> String {
    let mut out = format!(
        "memory: {} available of {}\nload: {:.2} {:.2} {:.2}\n",
        mib(s.mem_available_bytes),
        mib(s.mem_total_bytes),
        s.load1,
        s.load5,
        s.load15
    );
    if !s.services.is_empty() {
        let mut t = Table::new(["SERVICE", "PID", "RSS", "CPU"]);
        for p in &s.services {
            t.row([
                p.service.clone(),
                p.pid.to_string(),
                mib(p.rss_bytes),
                format!("{:.2} s", p.cpu_seconds),
            ]);
        }
        out.push('\n');
        out.push_str(&t.to_string());
    }
    out
}

#[derive(Serialize)]
struct MountView {
    source: String,
    target: String,
    fstype: String,
    options: String,
}

fn mounts_table(mounts: &[MountView]) -> String {
    let mut t = Table::new(["SOURCE", "TARGET", "TYPE", "OPTIONS"]);
    for m in mounts {
        t.row([
            m.source.clone(),
            m.target.clone(),
            m.fstype.clone(),
            m.options.clone(),
        ]);
    }
    t.to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepView {
    name: String,
    took_ms: u64,
    outcome: String,
    detail: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShutdownReportView {
    cause: String,
    ending: String,
    started: String,
    took_ms: u64,
    forced: bool,
    version: String,
    steps: Vec<StepView>,
    remounted_read_only: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain: Option<DrainView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodNoteView {
    pod: String,
    reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DrainView {
    outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    cordoned_by_us: bool,
    evicted: Vec<String>,
    left: Vec<PodNoteView>,
    skipped: Vec<PodNoteView>,
    took_ms: u64,
}

impl From<pb::DrainReport> for DrainView {
    fn from(d: pb::DrainReport) -> Self {
        let notes = |v: Vec<pb::PodNote>| {
            v.into_iter()
                .map(|n| PodNoteView {
                    pod: n.pod,
                    reason: n.reason,
                })
                .collect()
        };
        DrainView {
            outcome: d.outcome,
            reason: d.reason,
            cordoned_by_us: d.cordoned_by_us,
            evicted: d.evicted,
            left: notes(d.left),
            skipped: notes(d.skipped),
            took_ms: d.took_ms,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LastShutdownView {
    found: bool,
    previous_clean: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<ShutdownReportView>,
    boot_findings: Vec<String>,
}

impl From<pb::LastShutdownResponse> for LastShutdownView {
    fn from(r: pb::LastShutdownResponse) -> Self {
        LastShutdownView {
            found: r.found,
            previous_clean: r.previous_clean,
            report: r.report.filter(|_| r.found).map(|s| ShutdownReportView {
                cause: s.cause,
                ending: s.ending,
                started: time_text(s.started_unix_ms),
                took_ms: s.took_ms,
                forced: s.forced,
                version: s.version,
                steps: s
                    .steps
                    .into_iter()
                    .map(|st| StepView {
                        name: st.name,
                        took_ms: st.took_ms,
                        outcome: st.outcome,
                        detail: st.detail,
                    })
                    .collect(),
                remounted_read_only: s.remounted_read_only,
                drain: s.drain.map(DrainView::from),
            }),
            boot_findings: r.boot_findings,
        }
    }
}

fn last_shutdown_table(v: &LastShutdownView) -> String {
    let mut out = String::new();
    match &v.report {
        Some(r) => {
            out.push_str(&format!(
                "previous shutdown: {} by {} at {}, took {} ms{} (version {})\n",
                r.ending,
                r.cause,
                r.started,
                r.took_ms,
                if r.forced { ", forced" } else { "" },
                r.version
            ));
            let mut t = Table::new(["STEP", "OUTCOME", "TOOK", "DETAIL"]);
            for s in &r.steps {
                t.row([
                    s.name.clone(),
                    s.outcome.clone(),
                    format!("{} ms", s.took_ms),
                    s.detail.clone(),
                ]);
            }
            out.push_str(&t.to_string());
            for m in &r.remounted_read_only {
                out.push_str(&format!("remounted read-only: {m}\n"));
            }
            if let Some(d) = &r.drain {
                out.push_str(&format!(
                    "drain: {} in {} ms{}{}\n",
                    d.outcome,
                    d.took_ms,
                    if d.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", d.reason)
                    },
                    if d.cordoned_by_us {
                        ", cordoned by keelson"
                    } else {
                        ""
                    }
                ));
                for p in &d.evicted {
                    out.push_str(&format!("  evicted {p}\n"));
                }
                for n in &d.left {
                    out.push_str(&format!("  left {} ({})\n", n.pod, n.reason));
                }
            }
        }
        None => out.push_str("previous shutdown: no report found\n"),
    }
    out.push_str(if v.previous_clean {
        "previous shutdown was clean\n"
    } else {
        "previous shutdown was NOT clean\n"
    });
    for f in &v.boot_findings {
        out.push_str(&format!("boot finding: {f}\n"));
    }
    out
}

#[derive(Serialize)]
struct MessageView {
    message: String,
}

// ------------------------------------------------------------- commands

/// Runs a unary call on every target and prints the results. The names in
/// brackets are cloned into each node's call.
macro_rules! unary {
    ($connect:expr, $format:expr, $table:expr, [$($v:ident),*], |$client:ident| async move $body:block) => {{
        let targets = remote::targets($connect)?;
        let results = block_on(fan_out(&targets, move |_node, mut $client| {
            $(let $v = $v.clone();)*
            async move $body
        }))?;
        report($format, &targets, &results, $table)
    }};
}

/// `nodectl version`
pub fn version(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    unary!(connect, format, version_table, [], |c| async move {
        let v = c.version(pb::VersionRequest {}).await?.into_inner();
        let status = optional_status(&mut c).await;
        Ok(VersionView::from(v).with_upgrade(status))
    })
}

/// `nodectl services`
pub fn services(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    unary!(
        connect,
        format,
        |s: &Vec<ServiceView>| services_table(s),
        [],
        |c| async move {
            let r = c
                .service_list(pb::ServiceListRequest {})
                .await?
                .into_inner();
            Ok(r.services
                .into_iter()
                .map(ServiceView::from)
                .collect::<Vec<_>>())
        }
    )
}

/// `nodectl service restart|stop|start|kill NAME`
pub fn service(
    connect: &ConnectArgs,
    format: OutputFormat,
    cmd: &ServiceCommand,
) -> Result<Status, CliError> {
    let (verb, name, signal) = match cmd {
        ServiceCommand::Restart { name } => ("restart", name.clone(), String::new()),
        ServiceCommand::Stop { name } => ("stop", name.clone(), String::new()),
        ServiceCommand::Start { name } => ("start", name.clone(), String::new()),
        ServiceCommand::Kill { name, signal } => {
            ("kill", name.clone(), signal.clone().unwrap_or_default())
        }
    };
    let table = move |s: &ServiceView| format!("{verb} {}: now {}\n", s.name, s.state);
    unary!(connect, format, table, [name, signal], |c| async move {
        let req = pb::ServiceRequest { name: name.clone() };
        let r = match verb {
            "restart" => c.service_restart(req).await?,
            "stop" => c.service_stop(req).await?,
            "kill" => {
                c.service_kill(pb::ServiceKillRequest {
                    name: name.clone(),
                    signal,
                })
                .await?
            }
            _ => c.service_start(req).await?,
        }
        .into_inner();
        Ok(ServiceView::from(r.status.unwrap_or_else(|| {
            pb::ServiceStatus {
                name: name.clone(),
                ..Default::default()
            }
        })))
    })
}

/// `nodectl health [--wait]`
pub fn health(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &HealthArgs,
) -> Result<Status, CliError> {
    let wait = args.wait;
    unary!(connect, format, health_table, [], |c| async move {
        let h = c.health(pb::HealthRequest { wait }).await?.into_inner();
        let upgrade_rolled_back = optional_status(&mut c)
            .await
            .filter(|s| s.state == "rolled-back")
            .map(|s| rolled_back_text(&s));
        Ok(HealthView {
            upgrade_rolled_back,
            maintenance: h.maintenance,
            services: h.services.into_iter().map(ServiceView::from).collect(),
            phases: h
                .phases
                .into_iter()
                .map(|p| PhaseView {
                    name: p.name,
                    took_ms: p.took_ms,
                })
                .collect(),
            boot_problems: h.boot_problems,
            watchdog: h.watchdog,
            root: h.root,
            in_ram: h.in_ram,
        })
    })
}

/// `nodectl stats`
pub fn stats(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    unary!(connect, format, stats_table, [], |c| async move {
        let s = c.stats(pb::StatsRequest {}).await?.into_inner();
        Ok(StatsView {
            mem_total_bytes: s.mem_total_bytes,
            mem_available_bytes: s.mem_available_bytes,
            load1: s.load1,
            load5: s.load5,
            load15: s.load15,
            services: s
                .services
                .into_iter()
                .map(|p| ProcessView {
                    service: p.service,
                    pid: p.pid,
                    rss_bytes: p.rss_bytes,
                    cpu_seconds: p.cpu_seconds,
                })
                .collect(),
        })
    })
}

/// `nodectl mounts`
pub fn mounts(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    unary!(
        connect,
        format,
        |m: &Vec<MountView>| mounts_table(m),
        [],
        |c| async move {
            let r = c.mounts(pb::MountsRequest {}).await?.into_inner();
            Ok(r.mounts
                .into_iter()
                .map(|m| MountView {
                    source: m.source,
                    target: m.target,
                    fstype: m.fstype,
                    options: m.options,
                })
                .collect::<Vec<_>>())
        }
    )
}

/// `nodectl reboot|shutdown [--force] [--no-drain | --drain-timeout D]`
pub fn power(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &PowerArgs,
    reboot: bool,
) -> Result<Status, CliError> {
    let force = args.force;
    let no_drain = args.no_drain;
    let drain_timeout_ms = args.drain_timeout.map(|d| d.as_millis() as u64);
    let table = |m: &MessageView| format!("{}\n", m.message);
    unary!(connect, format, table, [], |c| async move {
        let req = pb::PowerRequest {
            force,
            no_drain,
            drain_timeout_ms,
        };
        let r = if reboot {
            c.reboot(req).await?
        } else {
            c.shutdown(req).await?
        }
        .into_inner();
        let message = if r.message.is_empty() {
            if reboot { "rebooting" } else { "shutting down" }.to_owned()
        } else {
            r.message
        };
        Ok(MessageView { message })
    })
}

/// `nodectl last-shutdown`
pub fn last_shutdown(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    unary!(connect, format, last_shutdown_table, [], |c| async move {
        let r = c
            .last_shutdown(pb::LastShutdownRequest {})
            .await?
            .into_inner();
        Ok(LastShutdownView::from(r))
    })
}

/// `nodectl config confirm`
pub fn confirm(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    #[derive(Serialize)]
    struct Confirmed {
        generation: u64,
    }
    let table = |c: &Confirmed| format!("confirmed generation {}\n", c.generation);
    unary!(connect, format, table, [], |c| async move {
        let r = c
            .confirm_configuration(pb::ConfirmConfigurationRequest {})
            .await?
            .into_inner();
        Ok(Confirmed {
            generation: r.generation,
        })
    })
}

/// `nodectl config history`
pub fn history(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    unary!(
        connect,
        format,
        |r: &Vec<RecordView>| history_table(r),
        [],
        |c| async move {
            let r = c
                .config_history(pb::ConfigHistoryRequest {})
                .await?
                .into_inner();
            Ok(r.records
                .into_iter()
                .map(RecordView::from)
                .collect::<Vec<_>>())
        }
    )
}

/// `nodectl config rollback [GEN]`
pub fn rollback(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &RollbackArgs,
) -> Result<Status, CliError> {
    let req = pb::RollbackConfigurationRequest {
        generation: args.generation.unwrap_or(0),
        mode: mode_proto(args.mode).into(),
        try_timeout_s: try_timeout(args.mode, args.timeout)?,
    };
    unary!(connect, format, apply_table, [req], |c| async move {
        let r = c.rollback_configuration(req).await?.into_inner();
        Ok(ApplyView::from(r))
    })
}

/// `nodectl get config [--generation N]`: the YAML as stored on the node
/// (raw bytes with one node and `-o table`).
pub fn get_config(
    connect: &ConnectArgs,
    format: OutputFormat,
    generation: Option<u64>,
) -> Result<Status, CliError> {
    let targets = remote::targets(connect)?;
    let generation = generation.unwrap_or(0);
    let results = block_on(fan_out(&targets, move |_node, mut c| async move {
        let r = c
            .get_configuration(pb::GetConfigurationRequest { generation })
            .await?
            .into_inner();
        Ok((r.config, r.record))
    }))?;
    if format == OutputFormat::Table && !targets.several() {
        let status = remote::report_errors(&results);
        for (_, r) in &results {
            if let Ok((bytes, _)) = r {
                write_raw(bytes)?;
            }
        }
        return Ok(status);
    }
    let views: Vec<_> = results
        .into_iter()
        .map(|(node, r)| {
            let view = r.map(|(bytes, record)| GetConfigView {
                record: record.map(RecordView::from),
                config: String::from_utf8_lossy(&bytes).into_owned(),
            });
            (node, view)
        })
        .collect();
    report(format, &targets, &views, |v| {
        let mut text = v.config.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    })
}

fn write_raw(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::Stdout),
    }
}

/// `nodectl apply-config`
pub fn apply_config(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &ApplyConfigArgs,
) -> Result<Status, CliError> {
    let try_timeout_s = try_timeout(args.mode, args.timeout)?;
    let (name, bytes, source) = match (&args.file, &args.git) {
        (_, Some(repo)) => {
            let Some(path) = &args.path else {
                return Err(CliError::Usage("--git needs --path".into()));
            };
            let (bytes, src) = machine_config::git::read_at_ref(repo, &args.git_ref, path)?;
            eprintln!(
                "read {}@{}:{} (commit {})",
                src.repo, src.git_ref, src.path, src.commit
            );
            let name = format!("{}@{}:{}", repo.display(), args.git_ref, path);
            let source = pb::ConfigSource {
                git_repo: src.repo,
                git_ref: src.git_ref,
                git_commit: src.commit,
                git_path: src.path,
                ..Default::default()
            };
            (name, bytes, source)
        }
        (Some(file), None) => {
            let bytes = read_input(file)?;
            let (name, recorded) = if file == Path::new("-") {
                ("<stdin>".to_owned(), "<stdin>".to_owned())
            } else {
                let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
                (file.display().to_string(), abs.display().to_string())
            };
            let source = pb::ConfigSource {
                file: recorded,
                ..Default::default()
            };
            (name, bytes, source)
        }
        (None, None) => {
            return Err(CliError::Usage(
                "give the config: -f FILE or --git REPO --path PATH".into(),
            ))
        }
    };
    if check_printing(&name, &bytes).is_none() {
        eprintln!("{name}: not sent to any node");
        return Ok(Status::Invalid);
    }
    let req = pb::ApplyConfigurationRequest {
        config: bytes,
        source: Some(source),
        mode: mode_proto(args.mode).into(),
        try_timeout_s,
        dry_run: args.dry_run,
    };
    let dry_run = args.dry_run;
    let table = move |a: &ApplyView| {
        let mut t = apply_table(a);
        if dry_run {
            t.push_str("dry run: nothing was changed\n");
        }
        t
    };
    unary!(connect, format, table, [req], |c| async move {
        let r = c.apply_configuration(req).await?.into_inner();
        Ok(ApplyView::from(r))
    })
}

// -------------------------------------------------------------- streams

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    time: String,
    stream: &'a str,
    line: &'a str,
}

/// One log line in the chosen format (NDJSON for json, a YAML document per
/// line for yaml).
fn log_line_text(format: OutputFormat, node: Option<&str>, l: &pb::LogLine) -> String {
    let view = LineView {
        node,
        time: time_text(l.unix_ms),
        stream: &l.stream,
        line: l.line.trim_end_matches('\n'),
    };
    match format {
        OutputFormat::Table => view.line.to_owned(),
        OutputFormat::Json => serde_json::to_string(&view).unwrap_or_default(),
        OutputFormat::Yaml => format!("---\n{}", to_yaml(&view).unwrap_or_default().trim_end()),
    }
}

/// Prints a log stream (Logs or Dmesg) from every node as it arrives.
fn log_stream<F, Fut>(
    connect: &ConnectArgs,
    format: OutputFormat,
    open: F,
) -> Result<Status, CliError>
where
    F: Fn(api::v1::machine_client::MachineClient<tonic::transport::Channel>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<
            Output = Result<tonic::Response<tonic::Streaming<pb::LogLine>>, tonic::Status>,
        > + Send
        + 'static,
{
    let targets = remote::targets(connect)?;
    let several = targets.several();
    let results = block_on(fan_out(&targets, move |node, c| {
        let open = open.clone();
        async move {
            let printer = LinePrinter::new(&node, several && format == OutputFormat::Table);
            let label = (several && format != OutputFormat::Table).then_some(node.as_str());
            let mut stream = open(c).await?.into_inner();
            while let Some(line) = stream.message().await? {
                printer.line(&log_line_text(format, label, &line))?;
            }
            Ok(())
        }
    }))?;
    Ok(remote::report_errors(&results))
}

/// `nodectl logs NAME [-f] [--tail N]`
pub fn logs(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &LogsArgs,
) -> Result<Status, CliError> {
    let req = pb::LogsRequest {
        service: args.name.clone(),
        follow: args.follow,
        tail: args.tail.unwrap_or(0),
    };
    log_stream(connect, format, move |mut c| {
        let req = req.clone();
        async move { c.logs(req).await }
    })
}

/// `nodectl dmesg [-f]`
pub fn dmesg(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &FollowArgs,
) -> Result<Status, CliError> {
    let follow = args.follow;
    log_stream(connect, format, move |mut c| async move {
        c.dmesg(pb::DmesgRequest { follow }).await
    })
}

#[derive(Serialize)]
struct EventView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    time: String,
    kind: &'a str,
    message: &'a str,
    fields: std::collections::BTreeMap<&'a str, &'a str>,
}

/// `nodectl events [--tail N]`: follows until interrupted.
pub fn events(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &EventsArgs,
) -> Result<Status, CliError> {
    let targets = remote::targets(connect)?;
    let several = targets.several();
    let tail = args.tail;
    let results = block_on(fan_out(&targets, move |node, mut c| async move {
        let printer = LinePrinter::new(&node, several && format == OutputFormat::Table);
        let mut stream = c.events(pb::EventsRequest { tail }).await?.into_inner();
        while let Some(e) = stream.message().await? {
            let view = EventView {
                node: (several && format != OutputFormat::Table).then_some(node.as_str()),
                time: time_text(e.unix_ms),
                kind: &e.kind,
                message: &e.message,
                fields: e
                    .fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            };
            let text = match format {
                OutputFormat::Table => {
                    let mut t = format!("{}  {}  {}", view.time, view.kind, view.message);
                    for (k, v) in &view.fields {
                        t.push_str(&format!(" {k}={v}"));
                    }
                    t
                }
                OutputFormat::Json => serde_json::to_string(&view).unwrap_or_default(),
                OutputFormat::Yaml => {
                    format!("---\n{}", to_yaml(&view).unwrap_or_default().trim_end())
                }
            };
            printer.line(&text)?;
        }
        Ok(())
    }))?;
    Ok(remote::report_errors(&results))
}

/// `nodectl read PATH`: the file's bytes, unchanged, on standard output
/// (several nodes: each node's content line by line, prefixed).
pub fn read(connect: &ConnectArgs, args: &ReadArgs) -> Result<Status, CliError> {
    let targets = remote::targets(connect)?;
    let several = targets.several();
    let path = args.path.clone();
    let results = block_on(fan_out(&targets, move |node, mut c| {
        let path = path.clone();
        async move {
            let mut stream = c
                .read(pb::ReadRequest { path: path.clone() })
                .await?
                .into_inner();
            let mut kept = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = stream.message().await? {
                truncated |= chunk.truncated;
                if several {
                    kept.extend_from_slice(&chunk.data);
                } else {
                    write_raw(&chunk.data).map_err(|e| NodeError::Local(e.to_string()))?;
                }
            }
            if truncated {
                eprintln!("{node}: {path}: cut at the node's size cap");
            }
            Ok(kept)
        }
    }))?;
    let status = remote::report_errors(&results);
    if several {
        let mut out = String::new();
        for (node, r) in &results {
            if let Ok(bytes) = r {
                out.push_str(&remote::prefix_lines(node, &String::from_utf8_lossy(bytes)));
            }
        }
        crate::commands::emit(&out)?;
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn health_shows_a_rollback_once() {
        let mut h = HealthView {
            maintenance: false,
            services: vec![],
            phases: vec![],
            boot_problems: vec![],
            upgrade_rolled_back: Some("kubelet not healthy within 300s".into()),
            watchdog: "i6300ESB timer (/dev/watchdog0), timeout 60s".into(),
            root: String::new(),
            in_ram: vec![],
        };
        assert_eq!(
            health_table(&h),
            "SERVICE  STATE  PID  RESTARTS  SINCE  LAST EXIT\n\
             upgrade rolled back: kubelet not healthy within 300s\n\
             watchdog: i6300ESB timer (/dev/watchdog0), timeout 60s\n"
        );
        h.boot_problems
            .push("upgrade rolled back (slot B): kubelet not healthy within 300s".into());
        let t = health_table(&h);
        assert_eq!(t.matches("rolled back").count(), 1, "{t}");
        assert!(
            t.contains("boot problem: upgrade rolled back (slot B)"),
            "{t}"
        );
        h.upgrade_rolled_back = None;
        h.boot_problems.clear();
        assert!(!health_table(&h).contains("rolled back"));

        // A diskless network boot says where its root came from and what
        // it keeps in RAM.
        h.root = "http://10.0.2.100:8080/rootfs.squashfs (sha256 ab12, 97 bytes)".into();
        h.in_ram = vec!["STATE".into(), "VAR".into()];
        let t = health_table(&h);
        assert!(
            t.contains("root: http://10.0.2.100:8080/rootfs.squashfs (sha256 ab12"),
            "{t}"
        );
        assert!(
            t.contains("in RAM (no partition; lost at power-off): STATE, VAR"),
            "{t}"
        );
    }
}
