//! The upgrade record in STATE (`<STATE>/upgrade/state.json`, written
//! atomically): what each slot holds, the trial waiting for its health
//! gate, the last outcome; and the pure boot-time decision made from it,
//! the booted slot and GRUB's `next_entry`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record's path inside STATE.
pub const RECORD: &str = "upgrade/state.json";

/// An A/B slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Slot {
    /// `SYSTEM-A`, `EFI/A/`.
    A,
    /// `SYSTEM-B`, `EFI/B/`.
    B,
}

impl Slot {
    /// Both slots.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `A` or `B`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// `A` or `B` exactly (GRUB's entry ids, `keelson.slot=`).
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The GPT name of the slot's root partition.
    pub fn partition(self) -> &'static str {
        match self {
            Slot::A => "SYSTEM-A",
            Slot::B => "SYSTEM-B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// A committed image that came up healthy (or the image's own slot).
    Good,
    /// Written and verified, waiting for (or in) its trial boot.
    Trial,
    /// A failed write, or a trial that failed: not bootable.
    Invalid,
    /// Being written (a power cut leaves it so).
    Writing,
    /// Nothing known.
    Unknown,
}

impl SlotState {
    /// `good`, `trial`, `invalid`, `writing`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Good => "good",
            SlotState::Trial => "trial",
            SlotState::Invalid => "invalid",
            SlotState::Writing => "writing",
            SlotState::Unknown => "unknown",
        }
    }
}

/// One slot's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// What it holds.
    pub state: SlotState,
    /// The OS version written there, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// When the entry last changed (ms since the Unix epoch).
    #[serde(default)]
    pub unix_ms: u64,
}

/// A slot written and set as GRUB's one-shot `next_entry`, not yet
/// committed or rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTrial {
    /// The slot on trial.
    pub slot: Slot,
    /// The slot (the good one) it was written from.
    pub from: Slot,
    /// The OS version on trial.
    pub version: String,
    /// When it was written (ms since the Unix epoch).
    pub unix_ms: u64,
    /// When the trial slot booted and its health gate started, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_unix_ms: Option<u64>,
}

/// How the last upgrade (or rollback) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeState {
    /// The trial slot became the default.
    Committed,
    /// The node went back to the other slot.
    RolledBack,
}

impl OutcomeState {
    /// `committed` or `rolled-back`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeState::Committed => "committed",
            OutcomeState::RolledBack => "rolled-back",
        }
    }
}

/// The last outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Committed or rolled back.
    pub state: OutcomeState,
    /// The slot concerned (the trial slot, or the slot left by a rollback).
    pub slot: Slot,
    /// Why, or what happened.
    pub detail: String,
    /// When (ms since the Unix epoch).
    pub unix_ms: u64,
    /// A rollback was announced (console, events, health) on a boot of the
    /// slot the node went back to; until then the next boot announces it.
    #[serde(default)]
    pub reported: bool,
}

/// The whole record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Per slot; a slot absent here has no history.
    #[serde(default)]
    pub slots: BTreeMap<Slot, SlotRecord>,
    /// The trial waiting for its boot or its health gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<PendingTrial>,
    /// The last outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Outcome>,
}

impl Record {
    /// A slot's entry. The booted slot without one is the image's own slot
    /// (written by image-build, never by an upgrade): good, with the
    /// running version.
    pub fn slot(&self, slot: Slot, booted: Slot, running_version: &str) -> SlotRecord {
        match self.slots.get(&slot) {
            Some(r) => r.clone(),
            None if slot == booted => SlotRecord {
                state: SlotState::Good,
                os_version: Some(running_version.to_string()),
                unix_ms: 0,
            },
            None => SlotRecord {
                state: SlotState::Unknown,
                os_version: None,
                unix_ms: 0,
            },
        }
    }

    /// Sets a slot's entry.
    pub fn set_slot(&mut self, slot: Slot, state: SlotState, version: Option<String>, now: u64) {
        self.slots.insert(
            slot,
            SlotRecord {
                state,
                os_version: version,
                unix_ms: now,
            },
        );
    }
}

/// What the boot has to do about an upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootDecision {
    /// The trial slot booted: run the health gate, then commit or roll back.
    Trial {
        /// The trial.
        trial: PendingTrial,
    },
    /// The trial slot was attempted but the other slot booted: GRUB fell
    /// back (or the trial rebooted before it was confirmed healthy).
    FellBack {
        /// The trial that failed.
        trial: PendingTrial,
        /// What is known about why.
        detail: String,
    },
    /// `next_entry` still names the trial slot: it boots next time.
    Staged {
        /// The trial.
        trial: PendingTrial,
    },
    /// No upgrade pending.
    Nothing,
}

/// The decision for a boot of `booted` with the record `rec` and GRUB's
/// current `next_entry`.
pub fn decide(rec: &Record, booted: Slot, next_entry: Option<Slot>) -> BootDecision {
    let Some(trial) = &rec.trial else {
        return BootDecision::Nothing;
    };
    if booted == trial.slot {
        return BootDecision::Trial {
            trial: trial.clone(),
        };
    }
    if next_entry == Some(trial.slot) {
        return BootDecision::Staged {
            trial: trial.clone(),
        };
    }
    let detail = if trial.booted_unix_ms.is_some() {
        format!(
            "slot {} booted but rebooted before its health gate passed; booted {booted} again",
            trial.slot
        )
    } else {
        format!(
            "slot {} did not come up (kernel panic, init failure or hang); booted {booted} again",
            trial.slot
        )
    };
    BootDecision::FellBack {
        trial: trial.clone(),
        detail,
    }
}

/// A rollback recorded by an earlier boot (health timeout, `Rollback`)
/// that no boot has announced yet.
pub fn unreported_rollback(rec: &Record) -> Option<&Outcome> {
    rec.last
        .as_ref()
        .filter(|o| o.state == OutcomeState::RolledBack && !o.reported)
}

/// Records a failed trial: the slot invalid, the trial gone, the outcome.
pub fn record_rollback(rec: &mut Record, trial: &PendingTrial, detail: &str, now: u64) {
    rec.set_slot(
        trial.slot,
        SlotState::Invalid,
        Some(trial.version.clone()),
        now,
    );
    rec.trial = None;
    rec.last = Some(Outcome {
        state: OutcomeState::RolledBack,
        slot: trial.slot,
        detail: detail.to_string(),
        unix_ms: now,
        reported: false,
    });
}

/// Marks every slot still recorded as `writing` invalid and returns them
/// (with the version that was being written). Called at boot, where such a
/// slot can only be a write cut off by a power loss, reset or crash: no
/// write outlives the boot that started it.
pub fn invalidate_interrupted(rec: &mut Record, now: u64) -> Vec<(Slot, Option<String>)> {
    let cut: Vec<(Slot, Option<String>)> = rec
        .slots
        .iter()
        .filter(|(_, r)| r.state == SlotState::Writing)
        .map(|(slot, r)| (*slot, r.os_version.clone()))
        .collect();
    for (slot, version) in &cut {
        rec.set_slot(*slot, SlotState::Invalid, version.clone(), now);
    }
    cut
}

/// Records a trial that passed its health gate: the slot good, the trial
/// gone, the outcome.
pub fn record_commit(rec: &mut Record, trial: &PendingTrial, healthy_after_s: u64, now: u64) {
    rec.set_slot(
        trial.slot,
        SlotState::Good,
        Some(trial.version.clone()),
        now,
    );
    rec.trial = None;
    rec.last = Some(Outcome {
        state: OutcomeState::Committed,
        slot: trial.slot,
        detail: format!(
            "version {} on slot {} healthy for {healthy_after_s}s; it is the default now",
            trial.version, trial.slot
        ),
        unix_ms: now,
        reported: true,
    });
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File I/O failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The record is not valid JSON of this shape.
    #[error("{path} is not an upgrade record: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// STATE could not be made writable.
    #[error("making STATE writable: {0}")]
    Remount(String),
}

/// Where the record lives, and whether STATE has to be remounted
/// read-write to change it (on a node) or not (a test directory).
#[derive(Clone, Debug)]
pub struct StateFile {
    /// The STATE directory.
    pub dir: PathBuf,
    /// Remount STATE read-write around writes.
    pub remount: bool,
}

impl StateFile {
    /// The record on the node's STATE.
    pub fn node() -> StateFile {
        StateFile {
            dir: PathBuf::from(crate::stage2::STATE_MOUNT),
            remount: true,
        }
    }

    /// The record's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(RECORD)
    }

    /// Reads the record (empty if there is none).
    pub fn load(&self) -> Result<Record, StateError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| StateError::Parse { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(source) => Err(StateError::Io {
                op: "reading",
                path,
                source,
            }),
        }
    }

    /// Reads the record, applies `change`, writes it back atomically;
    /// returns the new record. An unreadable record is replaced (it is
    /// logged) rather than blocking every upgrade for ever.
    pub fn update(&self, change: impl FnOnce(&mut Record)) -> Result<Record, StateError> {
        let mut rec = match self.load() {
            Ok(r) => r,
            Err(e @ StateError::Parse { .. }) => {
                tracing::error!(error = %e, "upgrade record unreadable: starting a new one");
                Record::default()
            }
            Err(e) => return Err(e),
        };
        change(&mut rec);
        let path = self.path();
        let mut json = serde_json::to_vec_pretty(&rec).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        json.push(b'\n');
        if self.remount {
            crate::stage2::with_state_writable(|| write_atomic(&path, &json))
                .map_err(|e| StateError::Remount(e.to_string()))??;
        } else {
            write_atomic(&path, &json)?;
        }
        Ok(rec)
    }
}

/// `<path>.tmp`, fsync, rename, fsync of the directory (created if needed).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateError::Io {
            op,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("fsync of", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io("renaming to", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync of directory", dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_write_found_at_boot_was_cut_off_and_leaves_the_slot_invalid() {
        let mut rec = Record::default();
        rec.set_slot(Slot::A, SlotState::Good, Some("1".into()), 1);
        rec.set_slot(Slot::B, SlotState::Writing, Some("2".into()), 2);
        let cut = invalidate_interrupted(&mut rec, 9);
        assert_eq!(cut, vec![(Slot::B, Some("2".to_string()))]);
        assert_eq!(rec.slots[&Slot::B].state, SlotState::Invalid);
        assert_eq!(rec.slots[&Slot::B].unix_ms, 9);
        assert_eq!(rec.slots[&Slot::A].state, SlotState::Good);
        // Nothing left to find the second time.
        assert!(invalidate_interrupted(&mut rec, 10).is_empty());
        assert_eq!(rec.slots[&Slot::B].unix_ms, 9);
    }

    fn trial(slot: Slot) -> PendingTrial {
        PendingTrial {
            slot,
            from: slot.other(),
            version: "2.0.0".into(),
            unix_ms: 5,
            booted_unix_ms: None,
        }
    }

    fn with_trial(slot: Slot) -> Record {
        Record {
            trial: Some(trial(slot)),
            ..Record::default()
        }
    }

    #[test]
    fn booting_the_trial_slot_starts_the_health_gate() {
        // GRUB cleared next_entry before booting it.
        assert_eq!(
            decide(&with_trial(Slot::B), Slot::B, None),
            BootDecision::Trial {
                trial: trial(Slot::B)
            }
        );
    }

    #[test]
    fn booting_the_old_slot_after_the_trial_was_consumed_is_a_fallback() {
        match decide(&with_trial(Slot::B), Slot::A, None) {
            BootDecision::FellBack { trial: t, detail } => {
                assert_eq!(t.slot, Slot::B);
                assert_eq!(
                    detail,
                    "slot B did not come up (kernel panic, init failure or hang); booted A again"
                );
            }
            other => panic!("{other:?}"),
        }
        let mut rec = with_trial(Slot::B);
        rec.trial.as_mut().unwrap().booted_unix_ms = Some(9);
        match decide(&rec, Slot::A, None) {
            BootDecision::FellBack { detail, .. } => {
                assert!(detail.contains("before its health gate passed"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_trial_still_in_next_entry_is_staged_and_no_trial_is_nothing() {
        assert!(matches!(
            decide(&with_trial(Slot::B), Slot::A, Some(Slot::B)),
            BootDecision::Staged { .. }
        ));
        assert_eq!(
            decide(&Record::default(), Slot::A, Some(Slot::B)),
            BootDecision::Nothing
        );
    }

    #[test]
    fn the_image_slot_without_a_record_is_good_with_the_running_version() {
        let rec = Record::default();
        let a = rec.slot(Slot::A, Slot::A, "1.0.0");
        assert_eq!(a.state, SlotState::Good);
        assert_eq!(a.os_version.as_deref(), Some("1.0.0"));
        assert_eq!(
            rec.slot(Slot::B, Slot::A, "1.0.0").state,
            SlotState::Unknown
        );
    }

    #[test]
    fn commit_and_rollback_clear_the_trial_and_mark_the_slot() {
        let mut rec = with_trial(Slot::B);
        record_commit(&mut rec, &trial(Slot::B), 60, 10);
        assert_eq!(rec.trial, None);
        assert_eq!(rec.slots[&Slot::B].state, SlotState::Good);
        assert_eq!(rec.last.as_ref().unwrap().state, OutcomeState::Committed);
        let mut rec = with_trial(Slot::B);
        record_rollback(&mut rec, &trial(Slot::B), "kubelet backing-off", 11);
        assert_eq!(rec.trial, None);
        assert_eq!(rec.slots[&Slot::B].state, SlotState::Invalid);
        let last = rec.last.unwrap();
        assert_eq!(
            (last.state, last.slot, last.detail.as_str()),
            (OutcomeState::RolledBack, Slot::B, "kubelet backing-off")
        );
        // Until a boot of the old slot has said so.
        let mut rec = Record {
            last: Some(last),
            ..Record::default()
        };
        assert!(unreported_rollback(&rec).is_some());
        rec.last.as_mut().unwrap().reported = true;
        assert!(unreported_rollback(&rec).is_none());
    }

    #[test]
    fn the_record_round_trips_through_state_with_its_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let sf = StateFile {
            dir: dir.path().to_path_buf(),
            remount: false,
        };
        assert_eq!(sf.load().unwrap(), Record::default());
        let rec = sf
            .update(|r| {
                r.set_slot(Slot::A, SlotState::Good, Some("1.0.0".into()), 1);
                r.set_slot(Slot::B, SlotState::Trial, Some("2.0.0".into()), 2);
                r.trial = Some(trial(Slot::B));
            })
            .unwrap();
        assert_eq!(sf.load().unwrap(), rec);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(RECORD)).unwrap()).unwrap();
        assert_eq!(json["slots"]["B"]["state"], "trial");
        assert_eq!(json["trial"]["slot"], "B");
        assert_eq!(json["trial"]["from"], "A");
        assert!(!dir.path().join("upgrade/state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_record_is_reported_on_load_and_replaced_on_update() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("upgrade")).unwrap();
        std::fs::write(dir.path().join(RECORD), b"{not json").unwrap();
        let sf = StateFile {
            dir: dir.path().to_path_buf(),
            remount: false,
        };
        assert!(sf.load().unwrap_err().to_string().contains("state.json"));
        sf.update(|r| r.set_slot(Slot::A, SlotState::Good, None, 1))
            .unwrap();
        assert_eq!(sf.load().unwrap().slots[&Slot::A].state, SlotState::Good);
    }
}
