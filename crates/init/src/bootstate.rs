//! The boot state: what this boot did and found (phase timings, fsck
//! results, modules and sysctls applied, maintenance mode, errors). Stage 1
//! fills the first part and hands it to stage 2 as JSON in `/run`; stage 2
//! completes it; the machine API (a later issue) serves it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsck::FsckReport;

/// Where stage 1 leaves its state for stage 2 (inside the `/run` tmpfs that
/// is moved into the new root).
pub const STAGE1_STATE: &str = "/run/keelson/stage1.json";

/// One timed boot phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Phase name as printed in `keelson: phase=<name>`.
    pub name: String,
    /// Duration in milliseconds.
    pub took_ms: u64,
}

/// The outcome of loading one kernel module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModuleResult {
    /// Module name.
    pub name: String,
    /// Whether `/sys/module/<name>` exists after loading (read back).
    pub verified: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The outcome of setting one sysctl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SysctlResult {
    /// Dotted key (`net.ipv4.ip_forward`).
    pub key: String,
    /// The value asked for.
    pub wanted: String,
    /// The value read back from `/proc/sys` afterwards, if readable.
    pub read_back: Option<String>,
    /// Whether the read-back value matches.
    pub verified: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Everything this boot recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BootState {
    /// The slot booted (`A` or `B`).
    pub slot: String,
    /// Problems with the kernel command line (a missing or bad slot).
    pub cmdline_warnings: Vec<String>,
    /// Timed phases, stage 1 first.
    pub phases: Vec<Phase>,
    /// Filesystem checks run by stage 1.
    pub fsck: Vec<FsckReport>,
    /// Kernel modules of the config.
    pub modules: Vec<ModuleResult>,
    /// Sysctls of the config.
    pub sysctls: Vec<SysctlResult>,
    /// True when there is no config: the node waits for one.
    pub maintenance: bool,
    /// Non-fatal errors met during boot, one line each.
    pub errors: Vec<String>,
    /// The hardware watchdog stage 1 armed, if any.
    #[serde(default)]
    pub watchdog: Option<crate::watchdog::Armed>,
    /// The root fetched over the network, on a network boot.
    #[serde(default)]
    pub net_root: Option<crate::netroot::NetRootRecord>,
    /// The boot media the root came from (an ISO boot), if any.
    #[serde(default)]
    pub media: Option<crate::media::MediaRecord>,
    /// Data partitions kept in RAM because the machine has none (`STATE`,
    /// `VAR`): lost at power-off.
    #[serde(default)]
    pub in_ram: Vec<String>,
}

impl BootState {
    /// Records a phase and prints its marker line.
    pub fn phase(&mut self, name: &str, took: std::time::Duration) {
        let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        crate::console::marker(&format!("phase={name} took_ms={took_ms}"));
        self.phases.push(Phase {
            name: name.to_string(),
            took_ms,
        });
    }

    /// Records a non-fatal error (and logs it).
    pub fn error(&mut self, what: impl Into<String>) {
        let what = what.into();
        tracing::error!("{what}");
        self.errors.push(what);
    }

    /// Writes the state as JSON to `path` (creating its directory).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }

    /// Reads a state saved by [`BootState::save`].
    pub fn load(path: &Path) -> std::io::Result<BootState> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

/// Times a closure and records it as a phase.
pub fn timed<T>(state: &mut BootState, name: &str, f: impl FnOnce(&mut BootState) -> T) -> T {
    let start = std::time::Instant::now();
    let out = f(state);
    state.phase(name, start.elapsed());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn state_survives_the_handover_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/keelson/stage1.json");
        let mut s = BootState {
            slot: "B".into(),
            ..BootState::default()
        };
        timed(&mut s, "detect", |_| ());
        s.error("STATE missing");
        s.save(&path).unwrap();
        let back = BootState::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.phases[0].name, "detect");
        assert_eq!(back.errors, vec!["STATE missing".to_string()]);
    }
}
