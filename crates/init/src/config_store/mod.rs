//! The machine config generation store: every applied config kept in a
//! directory (on a node `/system/state/config`) with a generation number,
//! its sha256, where it came from, who applied it and when; the `try` and
//! `staged` apply modes; the newest [`KEEP`] generations kept.
//!
//! Layout of the directory:
//! - `current.yaml`: the bytes of the current generation. Stage 2 boots from
//!   exactly this file, and an image may bake it with nothing else around it
//!   (it is then adopted as generation 1, mode `image`, by the first call
//!   that writes).
//! - `generations/NNNNNN.yaml` (exact bytes) and `generations/NNNNNN.json`
//!   (the [`Record`]).
//! - `try.json` ([`TryState`]): a generation on trial. `current.yaml` is not
//!   changed by a try, so a reboot during the trial boots the previous
//!   config; only [`ConfigStore::confirm_try`] makes it current.
//! - `staged.json` (`{"generation": N}`): the generation for the next boot.
//!
//! Crash safety: files are written with [`fsio::write_atomic`] (temp file,
//! fsync, rename, fsync dir). Each change has one commit point: the rename
//! of `current.yaml` (commit, confirm, take staged), of `try.json` (begin a
//! try), of `staged.json` (stage) or the removal of `try.json` (revert).
//! Generation files are written before it and nothing that the old state
//! needs is touched until after it. The effective state is derived on every
//! read from those commit points, not trusted from the records:
//! - the current generation is the newest record saved as `current` whose
//!   sha256 matches `current.yaml`;
//! - `try.json`/`staged.json` count only while they name a generation newer
//!   than the current one (so a commit supersedes a pending stage);
//! - a record saved as `current` that is not the current one is `previous`
//!   if older, `reverted` if newer (its commit never reached the rename); a
//!   `trying`/`staged` record no pointer names is `reverted`.
//!
//! Every mutating call first writes those derived states back, removes
//! stale pointers, temp files and generation files without a record, and
//! prunes at the end. Reads never write, so they work on a read-only mount.
//! Calls take an internal lock; the store assumes it is the only process
//! writing the directory. All calls do blocking file I/O.

mod fsio;
mod sha256;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The active config inside the store directory (what stage 2 boots).
pub const CURRENT_FILE: &str = "current.yaml";
/// Subdirectory holding one `.yaml` + `.json` pair per generation.
pub const GENERATIONS_DIR: &str = "generations";
/// Pointer to the generation on trial.
pub const TRY_FILE: &str = "try.json";
/// Pointer to the generation staged for the next boot.
pub const STAGED_FILE: &str = "staged.json";
/// How many of the newest generations are kept (plus the current, trying
/// and staged ones when they are older).
pub const KEEP: usize = 20;

/// Mode recorded for a config adopted from `current.yaml` (baked by
/// image-build, or found changed outside the store).
pub const MODE_IMAGE: &str = "image";
/// `applied_by` of a config baked into the image.
pub const APPLIED_BY_IMAGE: &str = "image-build";
/// `applied_by` of a `current.yaml` found not matching any record.
pub const APPLIED_BY_UNKNOWN: &str = "unknown";

/// Where a generation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The config in `current.yaml`.
    Current,
    /// Was current before; a rollback target.
    Previous,
    /// Waits for the next boot.
    Staged,
    /// Applied live on trial; reverted unless confirmed.
    Trying,
    /// A try that was reverted, a stage that was replaced or superseded, or
    /// a change interrupted before its commit point.
    Reverted,
}

impl State {
    /// The kebab-case name (as in the record file and the API).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Previous => "previous",
            State::Staged => "staged",
            State::Trying => "trying",
            State::Reverted => "reverted",
        }
    }
}

/// Where a config came from (mirrors the API's `ConfigSource`); empty
/// strings where not applicable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Source {
    /// A file path on the operator's machine.
    pub file: String,
    /// Git repository URL or path.
    pub git_repo: String,
    /// Git ref the config was read at.
    pub git_ref: String,
    /// Commit id the ref resolved to.
    pub git_commit: String,
    /// Path of the config inside the repository.
    pub git_path: String,
}

/// One stored generation (`generations/NNNNNN.json`; mirrors the API's
/// `ConfigRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3…, never reused.
    pub generation: u64,
    /// sha256 of the config bytes, lowercase hex.
    pub sha256: String,
    /// Where the config came from.
    pub source: Source,
    /// Common name of the client certificate that applied it.
    pub applied_by: String,
    /// When it was stored, ms since the Unix epoch.
    pub applied_unix_ms: u64,
    /// auto, no-reboot, reboot, staged, try, rollback or image.
    pub mode: String,
    /// Where it stands now.
    pub state: State,
}

/// What the caller knows about a config being stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGeneration {
    /// Where it came from.
    pub source: Source,
    /// Client certificate common name.
    pub applied_by: String,
    /// The apply mode (auto, no-reboot, reboot, staged, try, rollback).
    pub mode: String,
}

/// A pending try (`try.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TryState {
    /// The generation on trial.
    pub generation: u64,
    /// The generation that was current when the try began (what a revert,
    /// or a reboot, goes back to); `None` if there was none.
    pub previous_generation: Option<u64>,
    /// When to revert unless confirmed, ms since the Unix epoch.
    pub revert_at_unix_ms: u64,
}

/// `staged.json`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct StagedPointer {
    generation: u64,
}

/// A config store failure; each names the file and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem call failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("writing", "renaming into place", …).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store path is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The store path.
        path: PathBuf,
    },
    /// A generation record does not parse.
    #[error("{} is not a valid generation record: {source}", path.display())]
    BadRecord {
        /// The record file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A record's generation differs from its file name.
    #[error("{} holds generation {found}, but its name says {expected}", path.display())]
    MisnamedRecord {
        /// The record file.
        path: PathBuf,
        /// The number in the file name.
        expected: u64,
        /// The number inside.
        found: u64,
    },
    /// `try.json` or `staged.json` does not parse.
    #[error("{} is not a valid pointer file: {source}", path.display())]
    BadPointer {
        /// The pointer file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// `try.json` or `staged.json` names a generation that is not stored.
    #[error("{} names generation {generation}, which is not stored", path.display())]
    DanglingPointer {
        /// The pointer file.
        path: PathBuf,
        /// The generation it names.
        generation: u64,
    },
    /// A generation's bytes do not match its recorded sha256.
    #[error("{} is corrupted: its record says sha256 {expected}, the file hashes to {actual}", path.display())]
    Corrupted {
        /// The config file.
        path: PathBuf,
        /// sha256 in the record.
        expected: String,
        /// sha256 of the file's bytes.
        actual: String,
    },
    /// The asked-for generation is not stored.
    #[error("generation {generation} is not stored (kept: {kept})")]
    NotFound {
        /// The generation asked for.
        generation: u64,
        /// The stored generations, e.g. `6-25` or `none`.
        kept: String,
    },
    /// Generation 0 (the current one) asked for, but there is none.
    #[error("there is no current config ({} does not exist)", path.display())]
    NoCurrent {
        /// `current.yaml`.
        path: PathBuf,
    },
    /// A try is pending; it must be confirmed or reverted first.
    #[error("a try of generation {generation} is pending ({}); confirm or revert it first", path.display())]
    TryPending {
        /// The generation on trial.
        generation: u64,
        /// `try.json`.
        path: PathBuf,
    },
    /// Confirm or revert asked for, but no try is pending.
    #[error("no try is pending ({} does not name a generation newer than the current one)", path.display())]
    NoTryPending {
        /// `try.json`.
        path: PathBuf,
    },
    /// A record could not be encoded (not expected to happen).
    #[error("encoding {}: {source}", path.display())]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The config store over one directory. See the module documentation.
#[derive(Debug)]
pub struct ConfigStore {
    dir: PathBuf,
    lock: Mutex<()>,
}

/// The store's state as derived from the files (see the module docs).
#[derive(Debug, Default)]
struct View {
    /// Every record, with its effective state.
    records: BTreeMap<u64, Record>,
    /// The state each record file holds (absent for an adoption not yet
    /// written).
    stored: BTreeMap<u64, State>,
    current: Option<u64>,
    current_bytes: Option<Vec<u8>>,
    /// `current.yaml` matches no record: this generation number was given
    /// to it in `records` but is not written yet.
    adopted: Option<u64>,
    try_state: Option<TryState>,
    try_stale: bool,
    staged: Option<u64>,
    staged_stale: bool,
    /// Generation config files with no record (a crash before the record).
    orphans: Vec<u64>,
    /// The next unused generation number.
    next: u64,
}

impl ConfigStore {
    /// Opens the store in `dir`. Writes nothing: works on a read-only mount
    /// and on a directory that does not exist yet (created by the first
    /// write).
    pub fn open(dir: &Path) -> Result<ConfigStore, StoreError> {
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(StoreError::NotADirectory {
                    path: dir.to_path_buf(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("inspecting", dir, e)),
        }
        Ok(ConfigStore {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current generation and its bytes (those of `current.yaml`), or
    /// `None` if there is no `current.yaml`. A baked config not yet adopted
    /// is reported as the generation it will get, mode `image`.
    pub fn current(&self) -> Result<Option<(Record, Vec<u8>)>, StoreError> {
        let _guard = self.lock();
        let view = self.load()?;
        Ok(match (view.current, view.current_bytes) {
            (Some(g), Some(bytes)) => view.records.get(&g).cloned().map(|r| (r, bytes)),
            _ => None,
        })
    }

    /// Stores `bytes` as a new generation and makes it current:
    /// `current.yaml` is rewritten, the old current becomes `previous`, a
    /// pending stage is superseded (`reverted`). Refused while a try is
    /// pending.
    pub fn commit(&self, bytes: &[u8], meta: NewGeneration) -> Result<Record, StoreError> {
        let _guard = self.lock();
        let view = self.prepare()?;
        self.refuse_pending_try(&view)?;
        let record = self.write_generation(view.next, bytes, meta, State::Current)?;
        fsio::write_atomic(&self.current_path(), bytes)?;
        tracing::info!(
            generation = record.generation,
            mode = %record.mode,
            applied_by = %record.applied_by,
            sha256 = %record.sha256,
            previous = ?view.current,
            "config generation committed"
        );
        self.finish(record.generation)
    }

    /// Stores `bytes` as a new generation on trial (`trying`) and writes
    /// `try.json`. `current.yaml` is left as it is, so a reboot before
    /// [`confirm_try`](Self::confirm_try) boots the previous config. The
    /// caller applies the config live and calls
    /// [`revert_try`](Self::revert_try) at `revert_at_unix_ms`. Refused
    /// while another try is pending.
    pub fn begin_try(
        &self,
        bytes: &[u8],
        meta: NewGeneration,
        revert_at_unix_ms: u64,
    ) -> Result<Record, StoreError> {
        let _guard = self.lock();
        let view = self.prepare()?;
        self.refuse_pending_try(&view)?;
        let record = self.write_generation(view.next, bytes, meta, State::Trying)?;
        let pointer = TryState {
            generation: record.generation,
            previous_generation: view.current,
            revert_at_unix_ms,
        };
        let path = self.try_path();
        fsio::write_atomic(&path, &encode(&path, &pointer)?)?;
        tracing::info!(
            generation = record.generation,
            previous = ?view.current,
            revert_at_unix_ms,
            applied_by = %record.applied_by,
            sha256 = %record.sha256,
            "config try started"
        );
        self.finish(record.generation)
    }

    /// The pending try, if any.
    pub fn pending_try(&self) -> Result<Option<TryState>, StoreError> {
        let _guard = self.lock();
        Ok(self.load()?.try_state)
    }

    /// Makes the generation on trial current (`current.yaml` rewritten,
    /// `try.json` removed, the old current `previous`). Fails with
    /// [`StoreError::NoTryPending`] if there is none, and changes nothing if
    /// the trial's bytes no longer match their sha256.
    pub fn confirm_try(&self) -> Result<Record, StoreError> {
        let _guard = self.lock();
        let view = self.prepare()?;
        let Some(pending) = view.try_state else {
            return Err(StoreError::NoTryPending {
                path: self.try_path(),
            });
        };
        self.promote(&view, pending.generation)?;
        tracing::info!(
            generation = pending.generation,
            previous = ?view.current,
            "config try confirmed"
        );
        self.finish(pending.generation)
    }

    /// Ends the pending try without making it current: `try.json` removed,
    /// the generation `reverted`; returns its record. `current.yaml` already
    /// holds the previous config; the caller re-applies it live. Fails with
    /// [`StoreError::NoTryPending`] if there is none.
    pub fn revert_try(&self) -> Result<Record, StoreError> {
        let _guard = self.lock();
        let view = self.prepare()?;
        let Some(pending) = view.try_state else {
            return Err(StoreError::NoTryPending {
                path: self.try_path(),
            });
        };
        fsio::remove_durable(&self.try_path())?;
        tracing::info!(
            generation = pending.generation,
            back_to = ?view.current,
            "config try reverted"
        );
        self.finish(pending.generation)
    }

    /// Stores `bytes` as a new generation for the next boot (`staged`,
    /// `staged.json`). A stage still pending is replaced (it becomes
    /// `reverted`). A later commit or confirmed try supersedes the stage.
    pub fn stage(&self, bytes: &[u8], meta: NewGeneration) -> Result<Record, StoreError> {
        let _guard = self.lock();
        let view = self.prepare()?;
        let record = self.write_generation(view.next, bytes, meta, State::Staged)?;
        let path = self.staged_path();
        let pointer = StagedPointer {
            generation: record.generation,
        };
        fsio::write_atomic(&path, &encode(&path, &pointer)?)?;
        tracing::info!(
            generation = record.generation,
            replaces = ?view.staged,
            applied_by = %record.applied_by,
            sha256 = %record.sha256,
            "config staged for next boot"
        );
        self.finish(record.generation)
    }

    /// The generation staged for the next boot, if any.
    pub fn pending_stage(&self) -> Result<Option<Record>, StoreError> {
        let _guard = self.lock();
        let view = self.load()?;
        Ok(view.staged.and_then(|g| view.records.get(&g).cloned()))
    }

    /// At boot: makes the staged generation current (`current.yaml`
    /// rewritten, `staged.json` removed) and returns it; `None` if nothing
    /// is staged. Changes nothing if its bytes no longer match their sha256.
    pub fn take_staged(&self) -> Result<Option<Record>, StoreError> {
        let _guard = self.lock();
        let view = self.prepare()?;
        let Some(generation) = view.staged else {
            return Ok(None);
        };
        self.promote(&view, generation)?;
        tracing::info!(
            generation,
            previous = ?view.current,
            "staged config made current"
        );
        self.finish(generation).map(Some)
    }

    /// Every kept generation, newest first.
    pub fn history(&self) -> Result<Vec<Record>, StoreError> {
        let _guard = self.lock();
        Ok(self.load()?.records.into_values().rev().collect())
    }

    /// One generation and its bytes (0 = the current one). The bytes are
    /// checked against the recorded sha256.
    pub fn get(&self, generation: u64) -> Result<(Record, Vec<u8>), StoreError> {
        let _guard = self.lock();
        let view = self.load()?;
        let wanted = if generation == 0 {
            view.current.ok_or_else(|| StoreError::NoCurrent {
                path: self.current_path(),
            })?
        } else {
            generation
        };
        let record = view
            .records
            .get(&wanted)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                generation,
                kept: kept_ranges(view.records.keys().copied()),
            })?;
        let bytes = match (view.adopted, &view.current_bytes) {
            (Some(a), Some(bytes)) if a == wanted => bytes.clone(),
            _ => self.read_verified(&record)?,
        };
        Ok((record, bytes))
    }

    /// The generation that was current before the current one (the target
    /// of a rollback to "generation 0"), if one is kept.
    pub fn previous(&self) -> Result<Option<Record>, StoreError> {
        let _guard = self.lock();
        let view = self.load()?;
        let below = view.current.unwrap_or(u64::MAX);
        Ok(view
            .records
            .range(..below)
            .rev()
            .map(|(_, r)| r)
            .find(|r| r.state == State::Previous)
            .cloned())
    }

    // ---- internals ----

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic while holding it leaves nothing
        // inconsistent in memory (the files are crash-safe by design).
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    fn try_path(&self) -> PathBuf {
        self.dir.join(TRY_FILE)
    }

    fn staged_path(&self) -> PathBuf {
        self.dir.join(STAGED_FILE)
    }

    fn generations(&self) -> PathBuf {
        self.dir.join(GENERATIONS_DIR)
    }

    fn config_path(&self, generation: u64) -> PathBuf {
        self.generations().join(format!("{generation:06}.yaml"))
    }

    fn record_path(&self, generation: u64) -> PathBuf {
        self.generations().join(format!("{generation:06}.json"))
    }

    fn refuse_pending_try(&self, view: &View) -> Result<(), StoreError> {
        match view.try_state {
            Some(t) => Err(StoreError::TryPending {
                generation: t.generation,
                path: self.try_path(),
            }),
            None => Ok(()),
        }
    }

    /// Reads the files and derives the effective state. Writes nothing.
    fn load(&self) -> Result<View, StoreError> {
        let mut view = View::default();
        let gens_dir = self.generations();
        let mut configs = BTreeSet::new();
        let mut records = BTreeSet::new();
        match std::fs::read_dir(&gens_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| StoreError::io("listing", &gens_dir, e))?;
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    match parse_generation_name(&name) {
                        Some((g, "yaml")) => {
                            configs.insert(g);
                        }
                        Some((g, "json")) => {
                            records.insert(g);
                        }
                        // Temp files and anything else are not ours to read.
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("listing", &gens_dir, e)),
        }
        for &g in &records {
            let path = self.record_path(g);
            let raw = std::fs::read(&path).map_err(|e| StoreError::io("reading", &path, e))?;
            let record: Record =
                serde_json::from_slice(&raw).map_err(|source| StoreError::BadRecord {
                    path: path.clone(),
                    source,
                })?;
            if record.generation != g {
                return Err(StoreError::MisnamedRecord {
                    path,
                    expected: g,
                    found: record.generation,
                });
            }
            view.stored.insert(g, record.state);
            view.records.insert(g, record);
        }
        view.orphans = configs.difference(&records).copied().collect();
        view.next = configs.union(&records).max().map_or(1, |g| g + 1);

        let current_path = self.current_path();
        view.current_bytes = fsio::read_optional(&current_path)?;
        if let Some(bytes) = &view.current_bytes {
            let sha = sha256::hex_digest(bytes);
            view.current = view
                .records
                .values()
                .rev()
                .find(|r| r.state == State::Current && r.sha256 == sha)
                .map(|r| r.generation);
            if view.current.is_none() {
                let g = view.next;
                view.next += 1;
                let applied_by = if view.records.is_empty() {
                    APPLIED_BY_IMAGE
                } else {
                    APPLIED_BY_UNKNOWN
                };
                view.records.insert(
                    g,
                    Record {
                        generation: g,
                        sha256: sha,
                        source: Source {
                            file: CURRENT_FILE.to_string(),
                            ..Source::default()
                        },
                        applied_by: applied_by.to_string(),
                        applied_unix_ms: mtime_ms(&current_path),
                        mode: MODE_IMAGE.to_string(),
                        state: State::Current,
                    },
                );
                view.current = Some(g);
                view.adopted = Some(g);
            }
        }

        let try_path = self.try_path();
        if let Some(raw) = fsio::read_optional(&try_path)? {
            let pointer: TryState =
                serde_json::from_slice(&raw).map_err(|source| StoreError::BadPointer {
                    path: try_path.clone(),
                    source,
                })?;
            if self.pointer_live(&view, &try_path, pointer.generation)? {
                view.try_state = Some(pointer);
            } else {
                view.try_stale = true;
            }
        }
        let staged_path = self.staged_path();
        if let Some(raw) = fsio::read_optional(&staged_path)? {
            let pointer: StagedPointer =
                serde_json::from_slice(&raw).map_err(|source| StoreError::BadPointer {
                    path: staged_path.clone(),
                    source,
                })?;
            if self.pointer_live(&view, &staged_path, pointer.generation)? {
                view.staged = Some(pointer.generation);
            } else {
                view.staged_stale = true;
            }
        }

        let current = view.current;
        let trying = view.try_state.map(|t| t.generation);
        let staged = view.staged;
        for record in view.records.values_mut() {
            let g = Some(record.generation);
            record.state = if g == current {
                State::Current
            } else if g == trying {
                State::Trying
            } else if g == staged {
                State::Staged
            } else {
                match record.state {
                    State::Current if current.is_some_and(|c| record.generation > c) => {
                        State::Reverted
                    }
                    State::Current => State::Previous,
                    State::Trying | State::Staged => State::Reverted,
                    other => other,
                }
            };
        }
        Ok(view)
    }

    /// Whether a pointer to `generation` is in effect: it must name a stored
    /// generation; it is stale once the current one is at least as new.
    fn pointer_live(&self, view: &View, path: &Path, generation: u64) -> Result<bool, StoreError> {
        if !view.records.contains_key(&generation) {
            return Err(StoreError::DanglingPointer {
                path: path.to_path_buf(),
                generation,
            });
        }
        Ok(view.current.is_none_or(|c| generation > c))
    }

    /// Loads and writes the derived state back (see the module docs).
    fn prepare(&self) -> Result<View, StoreError> {
        let view = self.load()?;
        self.repair(&view)?;
        Ok(view)
    }

    /// Makes the files say what `view` derived: adoption written, record
    /// states updated, stale pointers, temp files and orphans removed. None
    /// of this changes the effective state.
    fn repair(&self, view: &View) -> Result<(), StoreError> {
        let gens_dir = self.generations();
        fsio::ensure_dir(&self.dir)?;
        fsio::ensure_dir(&gens_dir)?;
        for dir in [&self.dir, &gens_dir] {
            for path in fsio::clean_temps(dir)? {
                tracing::warn!(path = %path.display(), "config store: removed a temporary file left by a crash");
            }
        }
        if !view.orphans.is_empty() {
            for &g in &view.orphans {
                fsio::remove(&self.config_path(g))?;
            }
            fsio::sync_dir(&gens_dir)?;
            tracing::warn!(generations = ?view.orphans, "config store: removed generation files without a record (a write interrupted by a crash)");
        }
        if let (Some(g), Some(bytes)) = (view.adopted, &view.current_bytes) {
            if let Some(record) = view.records.get(&g) {
                fsio::write_atomic(&self.config_path(g), bytes)?;
                self.write_record(record)?;
                tracing::info!(
                    generation = g,
                    applied_by = %record.applied_by,
                    sha256 = %record.sha256,
                    "config store: adopted current.yaml as a generation"
                );
            }
        }
        for (g, record) in &view.records {
            match view.stored.get(g) {
                Some(&stored) if stored != record.state => {
                    self.write_record(record)?;
                    tracing::debug!(
                        generation = g,
                        from = stored.as_str(),
                        to = record.state.as_str(),
                        "config generation state updated"
                    );
                }
                _ => {}
            }
        }
        if view.try_stale {
            fsio::remove_durable(&self.try_path())?;
        }
        if view.staged_stale {
            fsio::remove_durable(&self.staged_path())?;
        }
        Ok(())
    }

    /// After a change: write the derived state back, prune, and return the
    /// record of `generation`.
    fn finish(&self, generation: u64) -> Result<Record, StoreError> {
        let view = self.prepare()?;
        self.prune(&view)?;
        view.records
            .get(&generation)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                generation,
                kept: kept_ranges(view.records.keys().copied()),
            })
    }

    /// Removes all but the newest [`KEEP`] generations, sparing the
    /// current, trying and staged ones. The record goes first, so a crash
    /// leaves an orphan config file (ignored, removed later), never a
    /// record without its config.
    fn prune(&self, view: &View) -> Result<(), StoreError> {
        let mut keep: BTreeSet<u64> = view.records.keys().rev().take(KEEP).copied().collect();
        keep.extend(view.current);
        keep.extend(view.try_state.map(|t| t.generation));
        keep.extend(view.staged);
        let doomed: Vec<u64> = view
            .records
            .keys()
            .filter(|g| !keep.contains(g))
            .copied()
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for &g in &doomed {
            fsio::remove(&self.record_path(g))?;
        }
        fsio::sync_dir(&self.generations())?;
        for &g in &doomed {
            fsio::remove(&self.config_path(g))?;
        }
        fsio::sync_dir(&self.generations())?;
        tracing::info!(generations = ?doomed, kept = KEEP, "config generations pruned");
        Ok(())
    }

    /// Writes a new generation's config, then its record.
    fn write_generation(
        &self,
        generation: u64,
        bytes: &[u8],
        meta: NewGeneration,
        state: State,
    ) -> Result<Record, StoreError> {
        let record = Record {
            generation,
            sha256: sha256::hex_digest(bytes),
            source: meta.source,
            applied_by: meta.applied_by,
            applied_unix_ms: now_ms(),
            mode: meta.mode,
            state,
        };
        fsio::write_atomic(&self.config_path(generation), bytes)?;
        self.write_record(&record)?;
        Ok(record)
    }

    fn write_record(&self, record: &Record) -> Result<(), StoreError> {
        let path = self.record_path(record.generation);
        let mut raw = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Encode {
            path: path.clone(),
            source,
        })?;
        raw.push(b'\n');
        fsio::write_atomic(&path, &raw)
    }

    /// Makes a stored generation current: its bytes verified, its record
    /// saved as `current`, then `current.yaml` replaced (the commit point).
    fn promote(&self, view: &View, generation: u64) -> Result<(), StoreError> {
        let mut record =
            view.records
                .get(&generation)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    generation,
                    kept: kept_ranges(view.records.keys().copied()),
                })?;
        let bytes = self.read_verified(&record)?;
        record.state = State::Current;
        self.write_record(&record)?;
        fsio::write_atomic(&self.current_path(), &bytes)
    }

    /// A generation's config bytes, checked against its sha256.
    fn read_verified(&self, record: &Record) -> Result<Vec<u8>, StoreError> {
        let path = self.config_path(record.generation);
        let bytes = std::fs::read(&path).map_err(|e| StoreError::io("reading", &path, e))?;
        let actual = sha256::hex_digest(&bytes);
        if actual != record.sha256 {
            return Err(StoreError::Corrupted {
                path,
                expected: record.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// `000042.json` → `(42, "json")`.
fn parse_generation_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

fn encode<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut raw = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    raw.push(b'\n');
    Ok(raw)
}

/// Kept generations as ranges: `1-3, 7, 9-28`, or `none`.
fn kept_ranges(generations: impl Iterator<Item = u64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    let flush = |run: (u64, u64), parts: &mut Vec<String>| {
        parts.push(if run.0 == run.1 {
            run.0.to_string()
        } else {
            format!("{}-{}", run.0, run.1)
        });
    };
    for g in generations {
        run = match run {
            Some((start, end)) if g == end + 1 => Some((start, g)),
            Some(done) => {
                flush(done, &mut parts);
                Some((g, g))
            }
            None => Some((g, g)),
        };
    }
    if let Some(done) = run {
        flush(done, &mut parts);
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Modification time of `path` in ms since the epoch (0 if unknown): the
/// adoption time of a baked config is when image-build wrote it.
fn mtime_ms(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<&Source> for api::v1::ConfigSource {
    fn from(s: &Source) -> Self {
        api::v1::ConfigSource {
            file: s.file.clone(),
            git_repo: s.git_repo.clone(),
            git_ref: s.git_ref.clone(),
            git_commit: s.git_commit.clone(),
            git_path: s.git_path.clone(),
        }
    }
}

impl From<&api::v1::ConfigSource> for Source {
    fn from(s: &api::v1::ConfigSource) -> Self {
        Source {
            file: s.file.clone(),
            git_repo: s.git_repo.clone(),
            git_ref: s.git_ref.clone(),
            git_commit: s.git_commit.clone(),
            git_path: s.git_path.clone(),
        }
    }
}

impl From<&Record> for api::v1::ConfigRecord {
    fn from(r: &Record) -> Self {
        api::v1::ConfigRecord {
            generation: r.generation,
            sha256: r.sha256.clone(),
            source: Some((&r.source).into()),
            applied_by: r.applied_by.clone(),
            applied_unix_ms: r.applied_unix_ms,
            mode: r.mode.clone(),
            state: r.state.as_str().to_string(),
        }
    }
}
