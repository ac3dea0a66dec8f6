//! The last step: STATE (read-only at /system/state while the node runs) is
//! remounted read-write, the report written to it atomically, and STATE
//! unmounted (remounted read-only if busy). Every call is bounded.

use std::path::Path;
use std::time::Duration;

use super::bounded;
use super::report::{self, Outcome, ShutdownReport};
use super::unmount::{MountOps, OpResult};
use crate::mounts;

/// Bound of each call (remount, write with fsyncs, unmount).
const CALL_BOUND: Duration = Duration::from_secs(5);

/// Writes `report` to STATE mounted at `state` and closes STATE. `bound`
/// caps each call.
pub(crate) fn write_and_close(
    ops: &dyn MountOps,
    state: &Path,
    report: &ShutdownReport,
    bound: Duration,
) -> (Outcome, String) {
    let bound = bound.min(CALL_BOUND);
    if !mounts::is_mounted(&ops.table(), state) {
        return (
            Outcome::Skipped,
            format!(
                "STATE is not mounted at {}: report not written",
                state.display()
            ),
        );
    }
    if let Some(why) = failure(ops.remount(state, false, bound)) {
        return (
            Outcome::Failed,
            format!(
                "remounting {} read-write: {why}; report not written",
                state.display()
            ),
        );
    }
    let (dir, r) = (state.to_path_buf(), report.clone());
    let written = bounded::blocking("write report", bound, move || report::write(&dir, &r));
    let mut detail = match &written {
        Some(Ok(path)) => format!("written to {}", path.display()),
        Some(Err(e)) => format!("not written: {e}"),
        None => format!("not written: no end within {bound:?}"),
    };
    let mut outcome = match written {
        Some(Ok(_)) => Outcome::Ok,
        Some(Err(_)) => Outcome::Failed,
        None => Outcome::TimedOut,
    };
    match ops.unmount(state, bound) {
        OpResult::Done => detail.push_str("; STATE unmounted"),
        other => {
            let why = failure(other).unwrap_or_default();
            match ops.remount(state, true, bound) {
                OpResult::Done => {
                    detail.push_str(&format!("; STATE busy ({why}), remounted read-only"));
                    if outcome == Outcome::Ok {
                        outcome = Outcome::Forced;
                    }
                }
                ro => {
                    let ro = failure(ro).unwrap_or_default();
                    detail.push_str(&format!(
                        "; STATE neither unmounted ({why}) nor remounted read-only ({ro})"
                    ));
                    if outcome != Outcome::TimedOut {
                        outcome = Outcome::Failed;
                    }
                }
            }
        }
    }
    (outcome, detail)
}

fn failure(r: OpResult) -> Option<String> {
    match r {
        OpResult::Done => None,
        OpResult::Refused(why) => Some(why),
        OpResult::TimedOut => Some("no end within the bound".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::shutdown::report::StepRecord;
    use crate::shutdown::unmount::tests::Fake;
    use crate::shutdown::Ending;

    fn report() -> ShutdownReport {
        ShutdownReport {
            cause: "power-button".into(),
            ending: Ending::PowerOff,
            started_unix_ms: 1,
            took_ms: 2,
            steps: vec![StepRecord {
                name: "unmount".into(),
                took_ms: 1,
                outcome: Outcome::Ok,
                detail: String::new(),
            }],
            remounted_read_only: vec![],
            force: false,
            forced: false,
            version: "v".into(),
            boot_id: "b".into(),
            drain: None,
        }
    }

    /// A fake table with STATE mounted at the tempdir.
    fn fake_with_state(state: &Path, busy: Vec<&'static str>) -> Fake {
        let text = format!(
            "22 1 0:20 / / ro - squashfs /dev/vda2 ro\n31 22 254:4 / {} ro - ext4 /dev/vda4 ro\n",
            state.display()
        );
        Fake::new(&text, busy, vec![])
    }

    #[test]
    fn the_report_is_written_between_a_rw_remount_and_the_unmount() {
        let t = tempfile::tempdir().unwrap();
        let fake = fake_with_state(t.path(), vec![]);
        let (o, detail) = write_and_close(&fake, t.path(), &report(), Duration::from_secs(5));
        assert_eq!(o, Outcome::Ok, "{detail}");
        let log = fake.log.borrow().clone();
        let state = t.path().display().to_string();
        assert_eq!(
            log,
            vec![format!("remount-rw {state}"), format!("umount {state}")]
        );
        let back = report::read_previous(t.path());
        assert!(
            back.unwrap().is_none(),
            "written as last.json, not previous.json"
        );
        let text = std::fs::read_to_string(t.path().join("shutdown/last.json")).unwrap();
        assert!(text.contains("power-button"));
    }

    #[test]
    fn a_busy_state_is_remounted_read_only_after_the_write() {
        let t = tempfile::tempdir().unwrap();
        let state: &'static str = Box::leak(t.path().display().to_string().into_boxed_str());
        let fake = fake_with_state(t.path(), vec![state]);
        let (o, detail) = write_and_close(&fake, t.path(), &report(), Duration::from_secs(5));
        assert_eq!(o, Outcome::Forced, "{detail}");
        assert!(detail.contains("remounted read-only"), "{detail}");
        assert_eq!(
            fake.log.borrow().last().unwrap(),
            &format!("remount-ro {state}")
        );
        assert!(t.path().join("shutdown/last.json").exists());
    }

    #[test]
    fn no_state_mounted_means_no_report_and_says_so() {
        let t = tempfile::tempdir().unwrap();
        let fake = Fake::new("22 1 0:20 / / ro - squashfs /dev/vda2 ro\n", vec![], vec![]);
        let (o, detail) = write_and_close(&fake, t.path(), &report(), Duration::from_secs(5));
        assert_eq!(o, Outcome::Skipped);
        assert!(detail.contains("not mounted"), "{detail}");
        assert!(!t.path().join("shutdown").exists());
    }
}
