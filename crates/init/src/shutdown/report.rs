//! The shutdown report: what an ordered shutdown did (cause, each step's
//! duration and outcome, what was forced, what had to be remounted
//! read-only), written as JSON to STATE just before reboot(2), and read
//! back by the next boot.
//!
//! # Files (under `<STATE>/shutdown/`)
//! - `last.json`: written by the shutdown of the running boot (atomically:
//!   temporary file, fsync, rename, fsync of the directory).
//! - `previous.json`: the report of the shutdown that ended the previous
//!   boot; [`consume`] renames `last.json` to it early at boot.
//! - `boot`: the boot id of the last boot that ran [`consume`]; its
//!   presence means "not the first boot".
//!
//! # How an unclean end is detected
//! Every boot calls [`consume`] while STATE is writable. A report present
//! means the previous boot ended through the ordered shutdown (it is moved
//! to `previous.json`, so it can never be mistaken for the report of a
//! later boot). No report while `boot` exists means the previous boot ended
//! some other way: power loss, reset, hang or crash. No `boot` marker means
//! the first boot of this disk. A boot that dies before calling [`consume`]
//! leaves no trace here; the filesystem checks of the next boot remain the
//! evidence then.

// `consume`, `read_previous` and `previous_shutdown` are called at boot and
// by the machine API, wired by the integrator.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Ending;
use crate::fsck::{FsckOutcome, FsckReport};

/// Directory of the reports, relative to STATE's mount point.
pub const DIR: &str = "shutdown";
/// The report written by this boot's shutdown.
pub const LAST: &str = "last.json";
/// The previous boot's report, after [`consume`].
pub const PREVIOUS: &str = "previous.json";
/// The boot marker (see the module documentation).
pub const BOOT_MARKER: &str = "boot";
/// Where the kernel publishes this boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// How one step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Done within its bound, nothing forced.
    Ok,
    /// Done, but only by force (SIGKILL, a read-only remount, a detach).
    Forced,
    /// Its bound passed first; the sequence went on.
    TimedOut,
    /// It could not be done.
    Failed,
    /// Not run (not applicable, not implemented yet, or skipped by force).
    Skipped,
}

impl Outcome {
    /// The word used in the report, the API and the console markers.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Forced => "forced",
            Outcome::TimedOut => "timed-out",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of the sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name (`kubelet`, `pods`, `unmount`, …).
    pub name: String,
    /// Duration in milliseconds.
    pub took_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened, for a person.
    pub detail: String,
}

/// The report of one ordered shutdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownReport {
    /// What started it: `api:shutdown`, `SIGTERM`, `power-button`, …
    pub cause: String,
    /// Power off or restart.
    pub ending: Ending,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Time from the start until the report was written (the writing of
    /// the report and the unmount of STATE come after).
    pub took_ms: u64,
    /// The steps, in order.
    pub steps: Vec<StepRecord>,
    /// Mount points that would not unmount and were remounted read-only.
    pub remounted_read_only: Vec<String>,
    /// The caller asked to skip the waits (`--force`).
    #[serde(default)]
    pub force: bool,
    /// Something was forced: `force` was asked, or a step ended forced or
    /// timed out.
    pub forced: bool,
    /// The image version that shut down.
    pub version: String,
    /// The kernel's boot id of the boot that shut down.
    pub boot_id: String,
    /// What the drain step did, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<drain::protocol::Report>,
}

impl ShutdownReport {
    /// Whether `force` was asked or any step was forced or timed out.
    /// A drain that ran out of time forced nothing on the node (its pods
    /// are stopped by the steps after it), so it does not count.
    pub fn anything_forced(force: bool, steps: &[StepRecord]) -> bool {
        force
            || steps.iter().any(|s| {
                s.name != "drain" && matches!(s.outcome, Outcome::Forced | Outcome::TimedOut)
            })
    }
}

impl From<&StepRecord> for api::v1::ShutdownStep {
    fn from(s: &StepRecord) -> Self {
        api::v1::ShutdownStep {
            name: s.name.clone(),
            took_ms: s.took_ms,
            outcome: s.outcome.as_str().to_string(),
            detail: s.detail.clone(),
        }
    }
}

impl From<&ShutdownReport> for api::v1::ShutdownReport {
    fn from(r: &ShutdownReport) -> Self {
        api::v1::ShutdownReport {
            cause: r.cause.clone(),
            ending: r.ending.as_str().to_string(),
            started_unix_ms: r.started_unix_ms,
            took_ms: r.took_ms,
            steps: r.steps.iter().map(Into::into).collect(),
            remounted_read_only: r.remounted_read_only.clone(),
            forced: r.forced,
            version: r.version.clone(),
            drain: r.drain.as_ref().map(drain_to_api),
        }
    }
}

fn drain_to_api(r: &drain::protocol::Report) -> api::v1::DrainReport {
    let notes = |v: &[drain::protocol::PodNote]| {
        v.iter()
            .map(|n| api::v1::PodNote {
                pod: n.pod.clone(),
                reason: n.reason.clone(),
            })
            .collect()
    };
    api::v1::DrainReport {
        outcome: r.outcome.as_str().to_string(),
        reason: r.reason.clone().unwrap_or_default(),
        cordoned_by_us: r.cordoned_by_us,
        evicted: r.evicted.clone(),
        left: notes(&r.left),
        skipped: notes(&r.skipped),
        took_ms: r.took_ms,
    }
}

/// A report file that could not be written or read.
#[derive(Debug, Error)]
pub enum ReportError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A report file is not valid JSON of a report.
    #[error("{path} is not a shutdown report: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ReportError + 'a {
    move |source| ReportError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// This boot's id (empty when unreadable, e.g. without /proc).
pub fn boot_id() -> String {
    fs::read_to_string(BOOT_ID)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Writes `bytes` to `path` atomically: `<path>.tmp`, fsync, rename, fsync
/// of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("fsync of", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("renaming to", path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ReportError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync of directory", dir))
}

/// Writes `report` as `<state_dir>/shutdown/last.json` (atomically; the
/// directory is created if needed). STATE must be writable. Returns the
/// path written.
pub fn write(state_dir: &Path, report: &ShutdownReport) -> Result<PathBuf, ReportError> {
    let dir = state_dir.join(DIR);
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let path = dir.join(LAST);
    let mut json = serde_json::to_vec_pretty(report).map_err(|source| ReportError::Parse {
        path: path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_atomic(&path, &json)?;
    Ok(path)
}

fn read_report(path: &Path) -> Result<Option<ShutdownReport>, ReportError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ReportError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// The previous boot's report as left by [`consume`]
/// (`<state_dir>/shutdown/previous.json`); `None` when there is none.
pub fn read_previous(state_dir: &Path) -> Result<Option<ShutdownReport>, ReportError> {
    read_report(&state_dir.join(DIR).join(PREVIOUS))
}

/// What this boot learned about the end of the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Previous {
    /// No boot ran on this disk before (no boot marker).
    FirstBoot,
    /// The previous boot ended with an ordered shutdown; its report.
    Reported(Box<ShutdownReport>),
    /// The previous boot left no report: it ended without an ordered
    /// shutdown. `boot_id` is its id when known; `unreadable` says why a
    /// report that was there could not be read.
    Missing {
        /// The previous boot's id (from the marker).
        boot_id: String,
        /// Set when a report existed but could not be parsed.
        unreadable: Option<String>,
    },
}

impl Previous {
    /// The previous boot's report, if it wrote one.
    pub fn report(&self) -> Option<&ShutdownReport> {
        match self {
            Previous::Reported(r) => Some(r),
            _ => None,
        }
    }
}

/// Run once per boot while STATE is writable (see the module
/// documentation): moves `last.json` to `previous.json` (or removes a stale
/// `previous.json` when there is no new report), then records `boot_id` as
/// the boot marker. Returns what the previous boot left.
pub fn consume(state_dir: &Path, boot_id: &str) -> Result<Previous, ReportError> {
    let dir = state_dir.join(DIR);
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let marker = dir.join(BOOT_MARKER);
    let last_boot = match fs::read_to_string(&marker) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading", &marker)(e)),
    };
    let last = dir.join(LAST);
    let previous = dir.join(PREVIOUS);
    let outcome = match read_report(&last) {
        Ok(Some(report)) => {
            fs::rename(&last, &previous).map_err(io("renaming to", &previous))?;
            Previous::Reported(Box::new(report))
        }
        read => {
            let unreadable = match read {
                Err(e) => {
                    // Keep the evidence, out of the way of the next boots.
                    let bad = dir.join("last.json.unreadable");
                    let _ = fs::rename(&last, &bad);
                    Some(e.to_string())
                }
                _ => None,
            };
            match fs::remove_file(&previous) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing", &previous)(e)),
            }
            match (last_boot, unreadable) {
                (None, None) => Previous::FirstBoot,
                (b, unreadable) => Previous::Missing {
                    boot_id: b.unwrap_or_default(),
                    unreadable,
                },
            }
        }
    };
    write_atomic(&marker, format!("{boot_id}\n").as_bytes())?;
    Ok(outcome)
}

/// The answer of the `LastShutdown` RPC: the previous shutdown's report and
/// this boot's findings. `previous_clean` is false when the previous boot
/// left no report (and this is not the first boot) or when a filesystem
/// check found a journal that needed recovery, or errors it corrected or
/// could not correct.
pub fn previous_shutdown(
    previous: &Previous,
    fsck: &[FsckReport],
) -> api::v1::LastShutdownResponse {
    let mut findings = Vec::new();
    let mut clean = true;
    match previous {
        Previous::FirstBoot => {}
        Previous::Reported(r) => {
            for s in r
                .steps
                .iter()
                .filter(|s| !matches!(s.outcome, Outcome::Ok | Outcome::Skipped))
            {
                findings.push(format!(
                    "previous shutdown ({}): step {} {}: {}",
                    r.cause, s.name, s.outcome, s.detail
                ));
            }
            for m in &r.remounted_read_only {
                findings.push(format!(
                    "previous shutdown: {m} would not unmount and was remounted read-only"
                ));
            }
        }
        Previous::Missing {
            boot_id,
            unreadable,
        } => {
            clean = false;
            let which = if boot_id.is_empty() {
                String::new()
            } else {
                format!(" (boot {boot_id})")
            };
            findings.push(match unreadable {
                Some(why) => format!(
                    "previous shutdown was not clean: the report of the previous boot{which} is unreadable: {why}"
                ),
                None => format!(
                    "previous shutdown was not clean: the previous boot{which} left no shutdown report (power loss, reset, hang or crash)"
                ),
            });
        }
    }
    for f in fsck {
        let what = format!("{} ({})", f.partition, f.device.display());
        if f.journal_needed_recovery {
            clean = false;
            findings.push(format!(
                "{what}: the journal needed recovery: the previous shutdown did not unmount it cleanly"
            ));
        }
        match f.outcome {
            FsckOutcome::Clean => {}
            FsckOutcome::Corrected | FsckOutcome::CorrectedRebootWanted => {
                clean = false;
                findings.push(format!(
                    "{what}: e2fsck corrected errors (exit code {}{})",
                    f.exit_code.map_or("none".to_string(), |c| c.to_string()),
                    if f.forced_repair {
                        ", forced repair"
                    } else {
                        ""
                    }
                ));
            }
            FsckOutcome::Uncorrected => {
                clean = false;
                findings.push(format!(
                    "{what}: e2fsck left errors uncorrected (exit code {})",
                    f.exit_code.map_or("none".to_string(), |c| c.to_string())
                ));
            }
            FsckOutcome::Failed => findings.push(format!(
                "{what}: could not be checked: {}",
                f.error.as_deref().unwrap_or("e2fsck failed")
            )),
        }
    }
    api::v1::LastShutdownResponse {
        found: previous.report().is_some(),
        report: previous.report().map(Into::into),
        previous_clean: clean,
        boot_findings: findings,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sample() -> ShutdownReport {
        let steps = vec![
            StepRecord {
                name: "drain".into(),
                took_ms: 0,
                outcome: Outcome::Skipped,
                detail: "not implemented".into(),
            },
            StepRecord {
                name: "kubelet".into(),
                took_ms: 20_004,
                outcome: Outcome::Forced,
                detail: "SIGKILL after 20s".into(),
            },
            StepRecord {
                name: "unmount".into(),
                took_ms: 120,
                outcome: Outcome::Ok,
                detail: "12 unmounted".into(),
            },
        ];
        ShutdownReport {
            cause: "api:reboot".into(),
            ending: Ending::Reboot,
            started_unix_ms: 1_790_000_000_000,
            took_ms: 20_500,
            forced: ShutdownReport::anything_forced(false, &steps),
            steps,
            remounted_read_only: vec!["/var".into()],
            force: false,
            version: "0.1.0".into(),
            boot_id: "b-1".into(),
            drain: None,
        }
    }

    fn fsck(partition: &str, recovery: bool, outcome: FsckOutcome, code: i32) -> FsckReport {
        FsckReport {
            partition: partition.into(),
            device: PathBuf::from("/dev/vda5"),
            journal_needed_recovery: recovery,
            exit_code: Some(code),
            outcome,
            forced_repair: false,
            took_ms: 5,
            error: None,
        }
    }

    #[test]
    fn the_report_round_trips_through_json_with_the_documented_words() {
        let r = sample();
        assert!(r.forced, "a forced step makes the report forced");
        let t = tempfile::tempdir().unwrap();
        let path = write(t.path(), &r).unwrap();
        assert_eq!(path, t.path().join("shutdown/last.json"));
        assert!(!t.path().join("shutdown/last.json.tmp").exists());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"ending\": \"reboot\""), "{text}");
        assert!(text.contains("\"outcome\": \"forced\""), "{text}");
        assert!(text.contains("\"outcome\": \"skipped\""), "{text}");
        let back: ShutdownReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        // The API form carries the same words.
        let api: api::v1::ShutdownReport = (&r).into();
        assert_eq!(api.ending, "reboot");
        assert_eq!(api.steps[1].outcome, "forced");
        assert_eq!(api.steps.len(), 3);
        assert_eq!(api.remounted_read_only, vec!["/var".to_string()]);
        assert!(api.forced);
        let words: Vec<&str> = [
            Outcome::Ok,
            Outcome::Forced,
            Outcome::TimedOut,
            Outcome::Failed,
            Outcome::Skipped,
        ]
        .iter()
        .map(|o| o.as_str())
        .collect();
        for w in &words {
            let json = format!("\"{w}\"");
            let o: Outcome = serde_json::from_str(&json).unwrap();
            assert_eq!(o.as_str(), *w);
        }
        assert_eq!(Ending::PowerOff.as_str(), "power-off");
    }

    #[test]
    fn consume_tells_first_boot_reported_and_missing_apart() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path();
        // First boot: nothing there.
        let p = consume(state, "boot-1").unwrap();
        assert_eq!(p, Previous::FirstBoot);
        assert!(read_previous(state).unwrap().is_none());
        // boot-1 shuts down cleanly and writes its report.
        let mut r = sample();
        r.boot_id = "boot-1".into();
        write(state, &r).unwrap();
        let p = consume(state, "boot-2").unwrap();
        assert_eq!(p.report(), Some(&r));
        assert!(!state.join("shutdown/last.json").exists());
        assert_eq!(read_previous(state).unwrap(), Some(r));
        // boot-2 loses power: no report. The next boot says so and drops
        // the now stale previous.json.
        let p = consume(state, "boot-3").unwrap();
        assert_eq!(
            p,
            Previous::Missing {
                boot_id: "boot-2".into(),
                unreadable: None
            }
        );
        assert!(read_previous(state).unwrap().is_none());
        assert_eq!(
            fs::read_to_string(state.join("shutdown/boot"))
                .unwrap()
                .trim(),
            "boot-3"
        );
    }

    #[test]
    fn a_torn_report_counts_as_missing_and_is_kept_aside() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path();
        consume(state, "boot-1").unwrap();
        fs::write(state.join("shutdown/last.json"), b"{\"cause\": \"SIGT").unwrap();
        let p = consume(state, "boot-2").unwrap();
        match &p {
            Previous::Missing {
                boot_id,
                unreadable: Some(why),
            } => {
                assert_eq!(boot_id, "boot-1");
                assert!(why.contains("last.json"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(state.join("shutdown/last.json.unreadable").exists());
        let answer = previous_shutdown(&p, &[]);
        assert!(!answer.previous_clean);
        assert!(!answer.found);
    }

    #[test]
    fn previous_clean_needs_a_report_and_clean_journals() {
        let clean_fsck = [
            fsck("STATE", false, FsckOutcome::Clean, 0),
            fsck("VAR", false, FsckOutcome::Clean, 0),
        ];
        // A first boot with clean filesystems is clean.
        let a = previous_shutdown(&Previous::FirstBoot, &clean_fsck);
        assert!(a.previous_clean && !a.found && a.boot_findings.is_empty());

        // A report and clean journals: clean, with the forced step and the
        // read-only remount listed.
        let a = previous_shutdown(&Previous::Reported(Box::new(sample())), &clean_fsck);
        assert!(a.previous_clean && a.found);
        assert_eq!(a.report.as_ref().unwrap().cause, "api:reboot");
        assert_eq!(a.boot_findings.len(), 2, "{:?}", a.boot_findings);
        assert!(a.boot_findings[0].contains("kubelet forced"));
        assert!(a.boot_findings[1].contains("/var"));

        // No report after a previous boot: not clean, said in words.
        let missing = Previous::Missing {
            boot_id: "b-7".into(),
            unreadable: None,
        };
        let a = previous_shutdown(&missing, &clean_fsck);
        assert!(!a.previous_clean && !a.found);
        assert!(a.boot_findings[0].contains("not clean"));
        assert!(a.boot_findings[0].contains("b-7"));

        // A report, but VAR's journal needed recovery and e2fsck corrected
        // errors: not clean.
        let dirty = [
            fsck("STATE", false, FsckOutcome::Clean, 0),
            fsck("VAR", true, FsckOutcome::Corrected, 1),
        ];
        let a = previous_shutdown(&Previous::Reported(Box::new(sample())), &dirty);
        assert!(!a.previous_clean && a.found);
        let var: Vec<&String> = a
            .boot_findings
            .iter()
            .filter(|l| l.starts_with("VAR"))
            .collect();
        assert_eq!(var.len(), 2, "{:?}", a.boot_findings);
        assert!(var[0].contains("journal needed recovery"));
        assert!(var[1].contains("corrected errors (exit code 1"));

        // Corrected without a dirty journal is also evidence.
        let a = previous_shutdown(
            &Previous::FirstBoot,
            &[fsck("STATE", false, FsckOutcome::Corrected, 1)],
        );
        assert!(!a.previous_clean);
    }
}
