//! Filesystem checks before mounting: run `e2fsck -p` on a partition,
//! interpret its exit code (a bit mask), and record whether the journal
//! needed replay (read from the superblock first, see [`crate::ext4`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What e2fsck's exit code means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsckOutcome {
    /// 0: no errors.
    Clean,
    /// 1: errors were found and corrected.
    Corrected,
    /// 2: errors corrected; the system should be rebooted (only matters
    /// for a mounted root; ours are not mounted yet).
    CorrectedRebootWanted,
    /// 4: errors left uncorrected.
    Uncorrected,
    /// 8, 16, 32, 128 or a signal: e2fsck itself failed.
    Failed,
}

impl FsckOutcome {
    /// Interprets an e2fsck exit code (`None` when killed by a signal).
    pub fn from_exit_code(code: Option<i32>) -> FsckOutcome {
        match code {
            Some(0) => FsckOutcome::Clean,
            Some(c) if c & (8 | 16 | 32 | 128) != 0 => FsckOutcome::Failed,
            Some(c) if c & 4 != 0 => FsckOutcome::Uncorrected,
            Some(c) if c & 2 != 0 => FsckOutcome::CorrectedRebootWanted,
            Some(c) if c & 1 != 0 => FsckOutcome::Corrected,
            _ => FsckOutcome::Failed,
        }
    }

    /// Whether the filesystem may be mounted after this outcome.
    pub fn mountable(self) -> bool {
        matches!(
            self,
            FsckOutcome::Clean | FsckOutcome::Corrected | FsckOutcome::CorrectedRebootWanted
        )
    }
}

/// One filesystem check, as recorded in the boot state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsckReport {
    /// GPT partition name (`STATE`, `VAR`).
    pub partition: String,
    /// Device checked.
    pub device: PathBuf,
    /// The superblock said the journal needed replay: the previous
    /// shutdown was not clean.
    pub journal_needed_recovery: bool,
    /// e2fsck's exit code (`None`: it could not run or was killed).
    pub exit_code: Option<i32>,
    /// The interpretation.
    pub outcome: FsckOutcome,
    /// Whether a forced `e2fsck -y` followed because `-p` could not fix it.
    pub forced_repair: bool,
    /// Time taken, in milliseconds.
    pub took_ms: u64,
    /// Why e2fsck could not run, if it could not.
    pub error: Option<String>,
}

/// Checks one partition: superblock first, then `e2fsck -p`, then, if that
/// left errors, `e2fsck -f -y`. Uses plain `Command::status` (stage 1 has no
/// other reaper).
pub fn check(e2fsck: &Path, partition: &str, device: &Path) -> FsckReport {
    let start = Instant::now();
    let journal_needed_recovery = match crate::ext4::read_health(device, 0) {
        Ok(h) => h.needs_recovery,
        Err(e) => {
            tracing::warn!(partition, error = %e, "cannot read superblock");
            false
        }
    };
    if journal_needed_recovery {
        tracing::warn!(
            partition,
            device = %device.display(),
            "previous shutdown was not clean: the journal needs recovery"
        );
    }
    let run = |args: &[&str]| Command::new(e2fsck).args(args).arg(device).status();
    let mut report = FsckReport {
        partition: partition.to_string(),
        device: device.to_path_buf(),
        journal_needed_recovery,
        exit_code: None,
        outcome: FsckOutcome::Failed,
        forced_repair: false,
        took_ms: 0,
        error: None,
    };
    match run(&["-p"]) {
        Ok(status) => {
            report.exit_code = status.code();
            report.outcome = FsckOutcome::from_exit_code(status.code());
        }
        Err(e) => report.error = Some(format!("running {}: {e}", e2fsck.display())),
    }
    if report.error.is_none() && report.outcome == FsckOutcome::Uncorrected {
        tracing::warn!(partition, "e2fsck -p left errors; running e2fsck -f -y");
        report.forced_repair = true;
        match run(&["-f", "-y"]) {
            Ok(status) => {
                report.exit_code = status.code();
                report.outcome = FsckOutcome::from_exit_code(status.code());
            }
            Err(e) => report.error = Some(format!("running {}: {e}", e2fsck.display())),
        }
    }
    report.took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        partition,
        device = %device.display(),
        exit_code = ?report.exit_code,
        outcome = ?report.outcome,
        journal_needed_recovery,
        took_ms = report.took_ms,
        "fsck"
    );
    report
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn exit_codes_are_read_as_bit_masks() {
        use FsckOutcome::*;
        assert_eq!(FsckOutcome::from_exit_code(Some(0)), Clean);
        assert_eq!(FsckOutcome::from_exit_code(Some(1)), Corrected);
        assert_eq!(FsckOutcome::from_exit_code(Some(2)), CorrectedRebootWanted);
        assert_eq!(FsckOutcome::from_exit_code(Some(3)), CorrectedRebootWanted);
        assert_eq!(FsckOutcome::from_exit_code(Some(4)), Uncorrected);
        assert_eq!(FsckOutcome::from_exit_code(Some(5)), Uncorrected);
        assert_eq!(FsckOutcome::from_exit_code(Some(8)), Failed);
        assert_eq!(FsckOutcome::from_exit_code(Some(12)), Failed);
        assert_eq!(FsckOutcome::from_exit_code(Some(32)), Failed);
        assert_eq!(FsckOutcome::from_exit_code(None), Failed);
        assert!(Corrected.mountable() && !Uncorrected.mountable() && !Failed.mountable());
    }

    #[test]
    fn a_real_dirty_image_is_reported_and_repaired() {
        let e2fsck = Path::new("/sbin/e2fsck");
        if !e2fsck.exists() || Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("e2fsprogs not installed: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content/sub");
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("f"), "hi").unwrap();
        let img = dir.path().join("var.img");
        assert!(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(dir.path().join("content"))
            .arg(&img)
            .arg("8M")
            .status()
            .unwrap()
            .success());
        let clean = check(e2fsck, "VAR", &img);
        assert_eq!(clean.outcome, FsckOutcome::Clean);
        assert!(!clean.journal_needed_recovery);

        // What a power cut can leave: the journal flagged for replay, the
        // filesystem not marked clean, a directory entry naming a freed
        // inode. debugfs keeps the checksums right.
        let debugfs = |req: &str| {
            Command::new("debugfs")
                .args(["-w", "-R", req])
                .arg(&img)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(debugfs("clri sub/f"));
        assert!(debugfs("ssv state 0"));
        assert!(debugfs("feature needs_recovery"));
        let fixed = check(e2fsck, "VAR", &img);
        assert!(fixed.journal_needed_recovery, "{fixed:?}");
        assert_eq!(fixed.outcome, FsckOutcome::Corrected, "{fixed:?}");
        assert_eq!(fixed.exit_code, Some(1));
        let again = check(e2fsck, "VAR", &img);
        assert_eq!(again.outcome, FsckOutcome::Clean, "{again:?}");
        assert!(!again.journal_needed_recovery);

        let missing = check(Path::new("/nonexistent/e2fsck"), "STATE", &img);
        assert_eq!(missing.outcome, FsckOutcome::Failed);
        assert!(missing.error.unwrap().contains("/nonexistent/e2fsck"));
    }
}
