//! A/B upgrades on nodes: `nodectl upgrade -f BUNDLE` (check the bundle
//! locally, then stream it to each node's `Upgrade` call with a progress
//! display), `nodectl upgrade --url URL` (each node downloads it; nodectl
//! shows the node's progress), `nodectl upgrade status` (the slots and the last outcome) and
//! `nodectl rollback` (boot the other slot).
//!
//! Several nodes are upgraded one after the other, not in parallel: one
//! upload (and one progress display) at a time, and a node is not asked to
//! reboot before the previous one has accepted its bundle. Every node is
//! tried; the exit status is the worst, as for other commands.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use api::v1 as pb;
use api::v1::machine_client::MachineClient;
use serde::Serialize;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::cli::{ConnectArgs, SlotRollbackArgs, UpgradeArgs, UpgradeCommand};
use crate::commands::{CliError, Status};
use crate::output::{OutputFormat, Table};
use crate::remote::{self, block_on, fan_out, report, NodeError, NodeResult, Targets};
use crate::upgrade::{self, chunk_lengths, BundleInfo, Progress, UpgradeError, CHUNK_SIZE};

/// Runs `nodectl upgrade ...`.
pub fn run(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &UpgradeArgs,
) -> Result<Status, CliError> {
    match (&args.command, &args.file, &args.url) {
        (Some(UpgradeCommand::Status), _, _) => status(connect, format),
        (None, Some(_), _) if args.ca.is_some() => Err(CliError::Usage(
            "--ca pins the CA of the node's download and goes with --url; -f uploads from here"
                .into(),
        )),
        (None, Some(file), _) => upload(connect, format, args, file),
        (None, None, Some(url)) => from_url(connect, format, args, url),
        (None, None, None) => Err(CliError::Usage(
            "give the bundle: nodectl upgrade -f BUNDLE (or --url URL)".into(),
        )),
    }
}

// ---------------------------------------------------------------- views

/// A node's answer to `Upgrade` or `Rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchView {
    /// The node's message.
    pub message: String,
    /// The slot written or switched to.
    pub slot: String,
    /// The OS version in that slot.
    pub os_version: String,
    /// Bundle bytes received and verified (0 for a rollback).
    pub bytes: u64,
    /// Whether the node is now rebooting into `slot`.
    pub rebooting: bool,
}

impl From<pb::UpgradeResponse> for SwitchView {
    fn from(r: pb::UpgradeResponse) -> Self {
        SwitchView {
            message: r.message,
            slot: r.slot,
            os_version: r.os_version,
            bytes: r.bytes,
            rebooting: r.rebooting,
        }
    }
}

/// The human text of an `Upgrade` (`upgrade` true) or `Rollback` answer.
pub fn switch_text(v: &SwitchView, upgrade: bool) -> String {
    let mut out = String::new();
    if !v.message.is_empty() {
        out.push_str(&v.message);
        out.push('\n');
    }
    let version = if v.os_version.is_empty() {
        "unknown version".to_owned()
    } else {
        format!("version {}", v.os_version)
    };
    if upgrade {
        out.push_str(&format!(
            "slot {}: {version} written, {} bytes verified\n",
            v.slot, v.bytes
        ));
    } else {
        out.push_str(&format!("slot {}: {version}\n", v.slot));
    }
    out.push_str(&match (v.rebooting, upgrade) {
        (true, true) => format!(
            "rebooting into slot {} on trial: it becomes the default once healthy \
             (`nodectl upgrade status`)\n",
            v.slot
        ),
        (true, false) => format!("rebooting into slot {}\n", v.slot),
        (false, true) => format!(
            "not rebooting: slot {} is tried at the next reboot\n",
            v.slot
        ),
        (false, false) => format!("not rebooting: slot {} boots at the next reboot\n", v.slot),
    });
    out
}

/// One A/B slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    /// `A` or `B`.
    pub name: String,
    /// `good`, `trial`, `invalid`, `writing` or `unknown`.
    pub state: String,
    /// The OS version it holds (empty when unknown).
    pub os_version: String,
    /// Whether this boot runs from it.
    pub booted: bool,
    /// Whether GRUB boots it by default.
    pub is_default: bool,
}

/// The slots and the last upgrade's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatusView {
    /// Both slots.
    pub slots: Vec<SlotView>,
    /// `none`, `staged`, `trial`, `committed` or `rolled-back`.
    pub state: String,
    /// Why (rolled back), or what is pending (trial).
    pub detail: String,
    /// When the outcome happened (RFC 3339, `-` when unknown).
    pub at: String,
}

impl From<pb::UpgradeStatusResponse> for UpgradeStatusView {
    fn from(r: pb::UpgradeStatusResponse) -> Self {
        UpgradeStatusView {
            slots: r
                .slots
                .into_iter()
                .map(|s| SlotView {
                    name: s.name,
                    state: s.state,
                    os_version: s.os_version,
                    booted: s.booted,
                    is_default: s.is_default,
                })
                .collect(),
            state: r.state,
            detail: r.detail,
            at: super::remote::time_text(r.unix_ms),
        }
    }
}

impl UpgradeStatusView {
    /// The default slot's name, if the node reports one.
    pub fn default_slot(&self) -> Option<&str> {
        self.slots
            .iter()
            .find(|s| s.is_default)
            .map(|s| s.name.as_str())
    }

    /// The last outcome in words: `rolled-back at T: why`.
    pub fn outcome(&self) -> String {
        let state = if self.state.is_empty() {
            "none"
        } else {
            self.state.as_str()
        };
        let mut text = match state {
            "staged" => "staged (trial set, boots at the next reboot)".to_owned(),
            "trial" => "on trial (health gate pending)".to_owned(),
            other => other.to_owned(),
        };
        if self.at != "-" && state != "none" {
            text.push_str(&format!(" at {}", self.at));
        }
        if !self.detail.is_empty() {
            text.push_str(&format!(": {}", self.detail));
        }
        text
    }
}

/// `upgrade status` as text: the slot table, then the last outcome.
pub fn status_table(v: &UpgradeStatusView) -> String {
    let yes = |b: bool| if b { "yes" } else { "-" };
    let mut t = Table::new(["SLOT", "STATE", "VERSION", "BOOTED", "DEFAULT"]);
    for s in &v.slots {
        let version = if s.os_version.is_empty() {
            "-"
        } else {
            s.os_version.as_str()
        };
        t.row([
            s.name.as_str(),
            s.state.as_str(),
            version,
            yes(s.booted),
            yes(s.is_default),
        ]);
    }
    format!("{t}last upgrade: {}\n", v.outcome())
}

/// `UpgradeStatus` for commands that only add it to their output: `None`
/// when the node does not answer it (an older node answers
/// `Unimplemented`; maintenance mode refuses it).
pub async fn optional_status(c: &mut MachineClient<Channel>) -> Option<UpgradeStatusView> {
    match c.upgrade_status(pb::UpgradeStatusRequest {}).await {
        Ok(r) => Some(UpgradeStatusView::from(r.into_inner())),
        Err(e) => {
            tracing::debug!(code = ?e.code(), error = %e.message(), "no upgrade status");
            None
        }
    }
}

// ------------------------------------------------------------- commands

/// `nodectl upgrade status`
pub fn status(connect: &ConnectArgs, format: OutputFormat) -> Result<Status, CliError> {
    let targets = remote::targets(connect)?;
    let results = block_on(fan_out(&targets, |_node, mut c| async move {
        let r = c
            .upgrade_status(pb::UpgradeStatusRequest {})
            .await?
            .into_inner();
        Ok(UpgradeStatusView::from(r))
    }))?;
    report(format, &targets, &results, status_table)
}

/// `nodectl rollback [--reboot=false]`
pub fn rollback(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &SlotRollbackArgs,
) -> Result<Status, CliError> {
    let targets = remote::targets(connect)?;
    let no_reboot = !args.reboot;
    let results = block_on(fan_out(&targets, move |_node, mut c| async move {
        let r = c.rollback(pb::RollbackRequest { no_reboot }).await?;
        Ok(SwitchView::from(r.into_inner()))
    }))?;
    report(format, &targets, &results, |v| switch_text(v, false))
}

/// The one-line summary of what is about to be sent.
pub fn bundle_summary(path: &Path, info: &BundleInfo) -> String {
    let m = &info.manifest;
    let mut text = format!(
        "bundle {}: OS {}, build {}, {} bytes ({:.1} MiB)",
        path.display(),
        m.os_version,
        m.build_id,
        info.size,
        info.size as f64 / (1024.0 * 1024.0)
    );
    if let Some(min) = &m.min_upgrade_from {
        text.push_str(&format!(", upgrades from {min} or later"));
    }
    if info.key_checked {
        text.push_str(&format!(", signed by key {} (--pubkey)", info.signer));
    } else {
        text.push_str(&format!(
            ", signed by key {} (the node checks it against its trusted keys)",
            info.signer
        ));
    }
    text
}

/// `nodectl upgrade -f BUNDLE`
fn upload(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &UpgradeArgs,
    file: &Path,
) -> Result<Status, CliError> {
    let keys = args
        .pubkey
        .as_deref()
        .map(upgrade::trusted_keys)
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let info = match upgrade::inspect(file, keys.as_ref()) {
        Ok(info) => info,
        Err(UpgradeError::Read { path, source }) => return Err(CliError::Read { path, source }),
        Err(e) => {
            eprintln!("nodectl: {e}");
            eprintln!("{}: not sent to any node", file.display());
            return Ok(Status::Invalid);
        }
    };
    let targets = remote::targets(connect)?;
    eprintln!("{}", bundle_summary(file, &info));
    let upload = Upload {
        path: file.to_owned(),
        size: info.size,
        no_reboot: !args.reboots(),
        tty: std::io::stderr().is_terminal(),
    };
    let results = one_after_another(&targets, move |c, label| {
        let upload = upload.clone();
        async move { upload.send(c, &label).await }
    })?;
    report(format, &targets, &results, |v| switch_text(v, true))
}

/// Runs `call` on each node in turn, not in parallel (one progress display
/// and one upload or download at a time; a node is not asked to reboot
/// before the previous one has answered). `call` gets the node's client and
/// the label for its progress lines (`"<endpoint>: "` with several nodes).
fn one_after_another<F, Fut>(
    targets: &Targets,
    call: F,
) -> Result<Vec<NodeResult<SwitchView>>, CliError>
where
    F: Fn(MachineClient<Channel>, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<SwitchView, NodeError>> + Send + 'static,
{
    let several = targets.several();
    block_on(async {
        let mut all: Vec<NodeResult<SwitchView>> = Vec::new();
        for endpoint in &targets.endpoints {
            let one = Targets {
                endpoints: vec![endpoint.clone()],
                ..targets.clone()
            };
            let label = if several {
                format!("{endpoint}: ")
            } else {
                String::new()
            };
            let call = call.clone();
            let mut r = fan_out(&one, move |_node, c| call(c, label.clone())).await;
            all.append(&mut r);
        }
        all
    })
}

/// `nodectl upgrade --url URL [--ca FILE]`: each node downloads the bundle
/// itself; nodectl shows the node's progress and its answer.
fn from_url(
    connect: &ConnectArgs,
    format: OutputFormat,
    args: &UpgradeArgs,
    url: &str,
) -> Result<Status, CliError> {
    let ca_pem = match &args.ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(CliError::Usage(format!(
                    "--ca {}: no PEM certificate in it",
                    path.display()
                )));
            }
            pem
        }
        None => Vec::new(),
    };
    let targets = remote::targets(connect)?;
    let request = pb::UpgradeFromUrlRequest {
        url: url.to_owned(),
        ca_pem,
        no_reboot: !args.reboots(),
    };
    let tty = std::io::stderr().is_terminal();
    let results = one_after_another(&targets, move |c, label| {
        let request = request.clone();
        async move { follow_download(c, request, tty, &label).await }
    })?;
    report(format, &targets, &results, |v| switch_text(v, true))
}

/// Calls `UpgradeFromUrl` and draws the node's download progress until its
/// answer arrives.
async fn follow_download(
    mut c: MachineClient<Channel>,
    request: pb::UpgradeFromUrlRequest,
    tty: bool,
    label: &str,
) -> Result<SwitchView, NodeError> {
    let draw = |text: &str| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    };
    let start = Instant::now();
    eprintln!("{label}the node downloads {}", request.url);
    let mut stream = c
        .upgrade_from_url(request)
        .await
        .map_err(NodeError::Status)?
        .into_inner();
    let mut progress: Option<Progress> = None;
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(NodeError::Local(
                    "the node ended the call without an answer".into(),
                ))
            }
            Err(status) => {
                if tty && progress.is_some() {
                    draw("\n");
                }
                return Err(NodeError::Status(status));
            }
        };
        let bar = progress.get_or_insert_with(|| {
            Progress::new(message.total, tty, label).with_verb("the node downloaded")
        });
        if !message.note.is_empty() {
            if tty {
                draw("\n");
            }
            eprintln!("{label}{}", message.note);
        }
        if let Some(done) = message.done {
            draw(&bar.finish(message.received, start.elapsed()));
            return Ok(SwitchView::from(done));
        }
        if let Some(text) = bar.update(message.received, start.elapsed()) {
            draw(&text);
        }
    }
}

/// One bundle upload, the same for every node.
#[derive(Clone, Debug)]
struct Upload {
    path: PathBuf,
    size: u64,
    no_reboot: bool,
    tty: bool,
}

/// How the file reader ended.
enum ReadEnd {
    /// Every byte was handed to the stream.
    Done,
    /// The call ended first (the node answered or the connection broke).
    Stopped,
}

impl Upload {
    /// Streams the bundle to `c`'s `Upgrade`: the options, then the file in
    /// [`CHUNK_SIZE`] chunks read on a blocking thread, with progress on
    /// standard error prefixed with `label`.
    async fn send(
        self,
        mut c: MachineClient<Channel>,
        label: &str,
    ) -> Result<SwitchView, NodeError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::UpgradeRequest>(2);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let done = done.clone();
            let label = label.to_owned();
            let upload = self.clone();
            tokio::task::spawn_blocking(move || upload.read_into(&tx, &done, &label))
        };
        let answer = c.upgrade(ReceiverStream::new(rx)).await;
        done.store(true, Ordering::SeqCst);
        let read = reader
            .await
            .map_err(|e| NodeError::Local(format!("the file reader failed: {e}")))?;
        match (answer, read) {
            // A local read failure cut the stream: it is the cause.
            (_, Err(e)) => Err(NodeError::Local(e)),
            (Ok(r), Ok(_)) => Ok(SwitchView::from(r.into_inner())),
            (Err(status), Ok(_)) => Err(NodeError::Status(status)),
        }
    }

    /// Sends the options and the file's chunks into `tx` until the end of
    /// the file or until `done` (the call ended).
    fn read_into(
        &self,
        tx: &tokio::sync::mpsc::Sender<pb::UpgradeRequest>,
        done: &AtomicBool,
        label: &str,
    ) -> Result<ReadEnd, String> {
        let first = pb::UpgradeRequest {
            options: Some(pb::UpgradeOptions {
                size: self.size,
                no_reboot: self.no_reboot,
            }),
            chunk: Vec::new(),
        };
        if tx.blocking_send(first).is_err() {
            return Ok(ReadEnd::Stopped);
        }
        let mut file = std::fs::File::open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        let mut progress = Progress::new(self.size, self.tty, label);
        let start = Instant::now();
        let mut sent = 0u64;
        let draw = |text: &str| {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
        };
        for len in chunk_lengths(self.size, CHUNK_SIZE) {
            if done.load(Ordering::SeqCst) {
                if self.tty && sent > 0 {
                    draw("\n");
                }
                return Ok(ReadEnd::Stopped);
            }
            // CHUNK_SIZE (1 MiB) fits in usize on every target.
            let mut chunk = vec![0u8; len as usize];
            file.read_exact(&mut chunk).map_err(|e| {
                format!(
                    "cannot read {} at offset {sent}: {e} (did the file change?)",
                    self.path.display()
                )
            })?;
            if tx
                .blocking_send(pb::UpgradeRequest {
                    options: None,
                    chunk,
                })
                .is_err()
            {
                if self.tty {
                    draw("\n");
                }
                return Ok(ReadEnd::Stopped);
            }
            sent += len;
            if let Some(text) = progress.update(sent, start.elapsed()) {
                draw(&text);
            }
        }
        draw(&progress.finish(sent, start.elapsed()));
        tracing::debug!(
            bytes = sent,
            took_ms = start.elapsed().as_millis() as u64,
            "bundle sent"
        );
        Ok(ReadEnd::Done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn slot(name: &str, state: &str, version: &str, booted: bool, default: bool) -> SlotView {
        SlotView {
            name: name.into(),
            state: state.into(),
            os_version: version.into(),
            booted,
            is_default: default,
        }
    }

    #[test]
    fn status_table_lists_slots_and_the_last_outcome() {
        let v = UpgradeStatusView {
            slots: vec![
                slot("A", "good", "1.0.0", true, true),
                slot("B", "invalid", "", false, false),
            ],
            state: "rolled-back".into(),
            detail: "kubelet not healthy within 300s".into(),
            at: "2026-11-26T07:00:00Z".into(),
        };
        assert_eq!(
            status_table(&v),
            "SLOT  STATE    VERSION  BOOTED  DEFAULT\n\
             A     good     1.0.0    yes     yes\n\
             B     invalid  -        -       -\n\
             last upgrade: rolled-back at 2026-11-26T07:00:00Z: kubelet not healthy within 300s\n"
        );
        assert_eq!(v.default_slot(), Some("A"));
        let none = UpgradeStatusView {
            slots: vec![],
            state: String::new(),
            detail: String::new(),
            at: "-".into(),
        };
        assert_eq!(
            status_table(&none),
            "SLOT  STATE  VERSION  BOOTED  DEFAULT\nlast upgrade: none\n"
        );
        assert_eq!(none.default_slot(), None);
    }

    #[test]
    fn status_json_uses_camel_case_keys() {
        let v = UpgradeStatusView::from(pb::UpgradeStatusResponse {
            slots: vec![pb::SlotStatus {
                name: "B".into(),
                state: "trial".into(),
                os_version: "2.0.0".into(),
                booted: true,
                is_default: false,
            }],
            state: "trial".into(),
            detail: "healthy for 20s of 60s".into(),
            unix_ms: 0,
        });
        let json: serde_json::Value =
            serde_json::from_str(&crate::output::to_json(&v).unwrap()).unwrap();
        assert_eq!(json["slots"][0]["osVersion"], "2.0.0");
        assert_eq!(json["slots"][0]["isDefault"], false);
        assert_eq!(json["state"], "trial");
        assert_eq!(json["at"], "-");
        assert_eq!(
            v.outcome(),
            "on trial (health gate pending): healthy for 20s of 60s"
        );
    }

    #[test]
    fn switch_text_says_whether_the_node_reboots() {
        let mut v = SwitchView {
            message: "bundle verified and written".into(),
            slot: "B".into(),
            os_version: "2.0.0".into(),
            bytes: 1234,
            rebooting: true,
        };
        let t = switch_text(&v, true);
        assert!(
            t.starts_with(
                "bundle verified and written\nslot B: version 2.0.0 written, 1234 bytes verified\n"
            ),
            "{t}"
        );
        assert!(t.contains("rebooting into slot B on trial"), "{t}");
        v.rebooting = false;
        assert!(switch_text(&v, true).contains("not rebooting: slot B is tried at the next reboot"));
        v.slot = "A".into();
        v.message.clear();
        assert_eq!(
            switch_text(&v, false),
            "slot A: version 2.0.0\nnot rebooting: slot A boots at the next reboot\n"
        );
    }
}
