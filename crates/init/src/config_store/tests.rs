//! Behaviour of the config store as a user of `nodectl config …` and a
//! rebooting node would see it, on real files in temporary directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

fn meta(who: &str, mode: &str) -> NewGeneration {
    NewGeneration {
        source: Source {
            git_repo: "https://git.example/fleet".into(),
            git_ref: "main".into(),
            git_commit: "0123abcd".into(),
            git_path: format!("nodes/{who}.yaml"),
            ..Source::default()
        },
        applied_by: who.into(),
        mode: mode.into(),
    }
}

fn config(n: u32) -> Vec<u8> {
    format!("version: v1\nmachine:\n  hostname: node-{n}\n").into_bytes()
}

fn current_yaml(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(CURRENT_FILE)).unwrap()
}

fn states(store: &ConfigStore) -> Vec<(u64, State)> {
    store
        .history()
        .unwrap()
        .iter()
        .map(|r| (r.generation, r.state))
        .collect()
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
                out.insert(path, (Vec::new(), meta.modified().unwrap()));
            } else {
                out.insert(
                    path.clone(),
                    (std::fs::read(&path).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

#[test]
fn config_store_commits_number_generations_and_move_current() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    assert!(store.current().unwrap().is_none());

    let first = store.commit(b"abc", meta("alice", "auto")).unwrap();
    assert_eq!(first.generation, 1);
    // The FIPS 180-2 digest of "abc".
    assert_eq!(
        first.sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    store.commit(&config(2), meta("bob", "no-reboot")).unwrap();
    let third = store.commit(&config(3), meta("carol", "reboot")).unwrap();

    assert_eq!(third.generation, 3);
    assert_eq!(third.state, State::Current);
    assert_eq!(third.applied_by, "carol");
    assert_eq!(third.mode, "reboot");
    assert_eq!(third.source.git_path, "nodes/carol.yaml");
    assert!(third.applied_unix_ms > 1_600_000_000_000);
    assert_eq!(
        states(&store),
        vec![
            (3, State::Current),
            (2, State::Previous),
            (1, State::Previous)
        ]
    );
    assert_eq!(current_yaml(tmp.path()), config(3));
    let (record, bytes) = store.current().unwrap().unwrap();
    assert_eq!((record.generation, bytes), (3, config(3)));
    assert_eq!(store.get(0).unwrap().0.generation, 3);
    assert_eq!(store.get(2).unwrap().1, config(2));
    assert_eq!(store.get(1).unwrap().1, b"abc");
    assert_eq!(store.previous().unwrap().unwrap().generation, 2);

    // On disk: exact bytes and a kebab-case record per generation.
    let gens = tmp.path().join(GENERATIONS_DIR);
    assert_eq!(std::fs::read(gens.join("000002.yaml")).unwrap(), config(2));
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gens.join("000002.json")).unwrap()).unwrap();
    assert_eq!(raw["state"], "previous");
    assert_eq!(raw["mode"], "no-reboot");
    assert_eq!(raw["applied_by"], "bob");
    assert_eq!(raw["source"]["git_commit"], "0123abcd");
    assert_eq!(raw["source"]["file"], "");
}

#[test]
fn config_store_keeps_newest_twenty_and_never_reuses_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    for n in 1..=25 {
        store.commit(&config(n), meta("ci", "auto")).unwrap();
    }
    let kept: Vec<u64> = store
        .history()
        .unwrap()
        .iter()
        .map(|r| r.generation)
        .collect();
    assert_eq!(kept, (6..=25).rev().collect::<Vec<_>>());
    assert_eq!(
        std::fs::read_dir(tmp.path().join(GENERATIONS_DIR))
            .unwrap()
            .count(),
        40
    );
    assert_eq!(current_yaml(tmp.path()), config(25));

    let err = store.get(3).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { generation: 3, .. }));
    assert_eq!(err.to_string(), "generation 3 is not stored (kept: 6-25)");

    let next = store.commit(&config(26), meta("ci", "auto")).unwrap();
    assert_eq!(next.generation, 26);
}

#[test]
fn config_store_pruning_spares_an_old_current_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("ci", "auto")).unwrap();
    // Each stage replaces the previous one; the current stays generation 1.
    for n in 2..=25 {
        store.stage(&config(n), meta("ci", "staged")).unwrap();
    }
    let history = store.history().unwrap();
    assert_eq!(history.len(), 21);
    assert_eq!(history[0].generation, 25);
    assert_eq!(history[0].state, State::Staged);
    let last = history.last().unwrap();
    assert_eq!((last.generation, last.state), (1, State::Current));
    assert_eq!(store.get(0).unwrap().1, config(1));
    assert!(store.get(5).is_err());
}

#[test]
fn config_store_try_then_confirm_makes_it_current() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();

    let trying = store
        .begin_try(&config(2), meta("bob", "try"), 1_900_000_000_000)
        .unwrap();
    assert_eq!((trying.generation, trying.state), (2, State::Trying));
    assert_eq!(current_yaml(tmp.path()), config(1));
    assert_eq!(
        store.pending_try().unwrap(),
        Some(TryState {
            generation: 2,
            previous_generation: Some(1),
            revert_at_unix_ms: 1_900_000_000_000,
        })
    );
    // No second try, no commit while one is pending.
    assert!(matches!(
        store.begin_try(&config(3), meta("bob", "try"), 0),
        Err(StoreError::TryPending { generation: 2, .. })
    ));
    assert!(matches!(
        store.commit(&config(3), meta("bob", "auto")),
        Err(StoreError::TryPending { generation: 2, .. })
    ));

    let confirmed = store.confirm_try().unwrap();
    assert_eq!((confirmed.generation, confirmed.state), (2, State::Current));
    assert_eq!(current_yaml(tmp.path()), config(2));
    assert_eq!(store.pending_try().unwrap(), None);
    assert!(!tmp.path().join(TRY_FILE).exists());
    assert_eq!(
        states(&store),
        vec![(2, State::Current), (1, State::Previous)]
    );
    assert!(matches!(
        store.confirm_try(),
        Err(StoreError::NoTryPending { .. })
    ));
}

#[test]
fn config_store_try_then_revert_leaves_current_yaml_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    let before = current_yaml(tmp.path());

    store
        .begin_try(&config(2), meta("bob", "try"), 1_900_000_000_000)
        .unwrap();
    let reverted = store.revert_try().unwrap();

    assert_eq!((reverted.generation, reverted.state), (2, State::Reverted));
    assert_eq!(current_yaml(tmp.path()), before);
    assert_eq!(store.pending_try().unwrap(), None);
    assert_eq!(
        states(&store),
        vec![(2, State::Reverted), (1, State::Current)]
    );
    assert_eq!(store.current().unwrap().unwrap().0.generation, 1);
    assert!(matches!(
        store.revert_try(),
        Err(StoreError::NoTryPending { .. })
    ));
    // The reverted config stays readable (e.g. to try it again).
    assert_eq!(store.get(2).unwrap().1, config(2));
}

#[test]
fn config_store_try_survives_a_reboot_and_boots_the_previous_config() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = ConfigStore::open(tmp.path()).unwrap();
        store.commit(&config(1), meta("alice", "auto")).unwrap();
        store
            .begin_try(&config(2), meta("bob", "try"), 1_900_000_000_000)
            .unwrap();
    }
    // "Reboot": stage 2 reads current.yaml, then init reopens the store.
    assert_eq!(current_yaml(tmp.path()), config(1));
    let store = ConfigStore::open(tmp.path()).unwrap();
    let pending = store.pending_try().unwrap().unwrap();
    assert_eq!(pending.generation, 2);
    assert_eq!(pending.previous_generation, Some(1));
    assert_eq!(store.current().unwrap().unwrap().0.generation, 1);

    assert_eq!(store.revert_try().unwrap().generation, 2);
    assert_eq!(
        states(&store),
        vec![(2, State::Reverted), (1, State::Current)]
    );
}

#[test]
fn config_store_stage_then_take_staged_at_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();

    let staged = store.stage(&config(2), meta("bob", "staged")).unwrap();
    assert_eq!((staged.generation, staged.state), (2, State::Staged));
    assert_eq!(current_yaml(tmp.path()), config(1));
    // A newer stage replaces the older one.
    store.stage(&config(3), meta("bob", "staged")).unwrap();
    assert_eq!(store.pending_stage().unwrap().unwrap().generation, 3);
    assert_eq!(
        states(&store),
        vec![
            (3, State::Staged),
            (2, State::Reverted),
            (1, State::Current)
        ]
    );

    let store = ConfigStore::open(tmp.path()).unwrap(); // reboot
    let taken = store.take_staged().unwrap().unwrap();
    assert_eq!((taken.generation, taken.state), (3, State::Current));
    assert_eq!(current_yaml(tmp.path()), config(3));
    assert!(!tmp.path().join(STAGED_FILE).exists());
    assert_eq!(store.take_staged().unwrap(), None);
    assert_eq!(store.previous().unwrap().unwrap().generation, 1);
}

#[test]
fn config_store_commit_supersedes_a_pending_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    store.stage(&config(2), meta("bob", "staged")).unwrap();
    store.commit(&config(3), meta("carol", "auto")).unwrap();

    assert_eq!(store.pending_stage().unwrap(), None);
    assert_eq!(store.take_staged().unwrap(), None);
    assert_eq!(current_yaml(tmp.path()), config(3));
    assert_eq!(
        states(&store),
        vec![
            (3, State::Current),
            (2, State::Reverted),
            (1, State::Previous)
        ]
    );
}

#[test]
fn config_store_adopts_a_baked_config_as_generation_one() {
    let tmp = tempfile::tempdir().unwrap();
    let baked = config(0);
    std::fs::write(tmp.path().join(CURRENT_FILE), &baked).unwrap();
    let before = snapshot(tmp.path());

    let store = ConfigStore::open(tmp.path()).unwrap();
    let (record, bytes) = store.current().unwrap().unwrap();
    assert_eq!(bytes, baked);
    assert_eq!(record.generation, 1);
    assert_eq!(record.mode, "image");
    assert_eq!(record.applied_by, "image-build");
    assert_eq!(record.source.file, "current.yaml");
    assert_eq!(store.get(0).unwrap().1, baked);
    assert_eq!(store.history().unwrap().len(), 1);
    // Reading did not write anything.
    assert_eq!(snapshot(tmp.path()), before);

    let next = store.commit(&config(1), meta("alice", "auto")).unwrap();
    assert_eq!(next.generation, 2);
    let history = store.history().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[1].generation,
            history[1].state,
            history[1].mode.as_str()
        ),
        (1, State::Previous, "image")
    );
    assert_eq!(store.get(1).unwrap().1, baked);
    assert_eq!(
        std::fs::read(tmp.path().join(GENERATIONS_DIR).join("000001.yaml")).unwrap(),
        baked
    );
}

#[test]
fn config_store_detects_a_corrupted_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    store.stage(&config(2), meta("alice", "staged")).unwrap();
    let bad = tmp.path().join(GENERATIONS_DIR).join("000002.yaml");
    std::fs::write(&bad, b"version: v1\nmachine: {}\n").unwrap();

    let err = store.get(2).unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains(&sha256::hex_digest(&config(2))), "{err}");
    assert!(
        err.contains(&sha256::hex_digest(b"version: v1\nmachine: {}\n")),
        "{err}"
    );
    // Booting a corrupted stage is refused and changes nothing.
    assert!(matches!(
        store.take_staged(),
        Err(StoreError::Corrupted { .. })
    ));
    assert_eq!(current_yaml(tmp.path()), config(1));
    assert_eq!(store.pending_stage().unwrap().unwrap().generation, 2);
}

#[test]
fn config_store_reports_a_record_that_does_not_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    store.commit(&config(2), meta("alice", "auto")).unwrap();
    let broken = tmp.path().join(GENERATIONS_DIR).join("000001.json");
    std::fs::write(&broken, b"{\"generation\": 1, \"sha").unwrap();

    let err = store.history().unwrap_err();
    assert!(matches!(err, StoreError::BadRecord { .. }));
    assert!(err.to_string().contains("000001.json"), "{err}");
    assert!(store.commit(&config(3), meta("alice", "auto")).is_err());
    assert_eq!(current_yaml(tmp.path()), config(2));
}

#[test]
fn config_store_reads_do_not_write_on_a_read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    {
        let store = ConfigStore::open(&dir).unwrap();
        store.commit(&config(1), meta("alice", "auto")).unwrap();
        store.commit(&config(2), meta("alice", "auto")).unwrap();
        store
            .begin_try(&config(3), meta("bob", "try"), 1_900_000_000_000)
            .unwrap();
    }
    let before = snapshot(&dir);
    let ro = std::fs::Permissions::from_mode(0o555);
    std::fs::set_permissions(dir.join(GENERATIONS_DIR), ro.clone()).unwrap();
    std::fs::set_permissions(&dir, ro).unwrap();

    let store = ConfigStore::open(&dir).unwrap();
    assert_eq!(store.current().unwrap().unwrap().1, config(2));
    assert_eq!(store.history().unwrap().len(), 3);
    assert_eq!(store.get(3).unwrap().1, config(3));
    assert_eq!(store.pending_try().unwrap().unwrap().generation, 3);
    assert_eq!(store.previous().unwrap().unwrap().generation, 1);
    assert_eq!(store.pending_stage().unwrap(), None);
    // As root the permission bits stop nothing: check nothing changed.
    assert_eq!(snapshot(&dir), before);

    let rw = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(&dir, rw.clone()).unwrap();
    std::fs::set_permissions(dir.join(GENERATIONS_DIR), rw).unwrap();
}

#[test]
fn config_store_open_on_a_missing_directory_then_first_write_creates_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state").join("config");
    let store = ConfigStore::open(&dir).unwrap();
    assert!(store.current().unwrap().is_none());
    assert!(store.history().unwrap().is_empty());
    assert!(matches!(store.get(0), Err(StoreError::NoCurrent { .. })));
    assert!(!dir.exists());

    store.commit(&config(1), meta("alice", "auto")).unwrap();
    assert_eq!(current_yaml(&dir), config(1));

    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        ConfigStore::open(&file),
        Err(StoreError::NotADirectory { .. })
    ));
}

#[test]
fn config_store_ignores_then_cleans_crash_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    let gens = tmp.path().join(GENERATIONS_DIR);
    // A torn temp file and a config written without its record.
    std::fs::write(tmp.path().join(".current.yaml.tmp"), b"vers").unwrap();
    std::fs::write(gens.join(".000002.json.tmp"), b"{").unwrap();
    std::fs::write(gens.join("000002.yaml"), config(2)).unwrap();

    assert_eq!(states(&store), vec![(1, State::Current)]);
    assert_eq!(store.current().unwrap().unwrap().1, config(1));

    // The next write cleans up and does not reuse generation 2.
    let next = store.commit(&config(3), meta("alice", "auto")).unwrap();
    assert_eq!(next.generation, 3);
    assert!(!tmp.path().join(".current.yaml.tmp").exists());
    assert!(!gens.join(".000002.json.tmp").exists());
    assert!(!gens.join("000002.yaml").exists());
    assert_eq!(
        states(&store),
        vec![(3, State::Current), (1, State::Previous)]
    );
}

#[test]
fn config_store_crash_before_the_commit_point_keeps_the_old_state() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    // A commit that wrote its generation files but died before renaming
    // current.yaml.
    store
        .write_generation(2, &config(2), meta("bob", "auto"), State::Current)
        .unwrap();
    assert_eq!(store.current().unwrap().unwrap().0.generation, 1);
    assert_eq!(
        states(&store),
        vec![(2, State::Reverted), (1, State::Current)]
    );

    // A confirm that saved the record as current but died before the rename:
    // the try is still pending.
    let trying = store
        .begin_try(&config(3), meta("bob", "try"), 1_900_000_000_000)
        .unwrap();
    let mut half = trying.clone();
    half.state = State::Current;
    store.write_record(&half).unwrap();
    assert_eq!(store.pending_try().unwrap().unwrap().generation, 3);
    assert_eq!(store.current().unwrap().unwrap().0.generation, 1);
    // And confirming again finishes the job.
    store.confirm_try().unwrap();
    assert_eq!(current_yaml(tmp.path()), config(3));
}

#[test]
fn config_store_crash_after_the_commit_point_has_the_new_state() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    // Generation files and current.yaml written; the old record not yet
    // updated to `previous`.
    store
        .write_generation(2, &config(2), meta("bob", "auto"), State::Current)
        .unwrap();
    std::fs::write(tmp.path().join(CURRENT_FILE), config(2)).unwrap();

    assert_eq!(
        states(&store),
        vec![(2, State::Current), (1, State::Previous)]
    );
    assert_eq!(store.previous().unwrap().unwrap().generation, 1);
}

#[test]
fn config_store_record_maps_to_the_api_message() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    let record = store
        .begin_try(&config(2), meta("bob", "try"), 1_900_000_000_000)
        .unwrap();
    let msg = api::v1::ConfigRecord::from(&record);
    assert_eq!(msg.generation, 2);
    assert_eq!(msg.state, "trying");
    assert_eq!(msg.mode, "try");
    assert_eq!(msg.applied_by, "bob");
    assert_eq!(msg.sha256, record.sha256);
    assert_eq!(msg.applied_unix_ms, record.applied_unix_ms);
    let source = msg.source.unwrap();
    assert_eq!(source.git_path, "nodes/bob.yaml");
    assert_eq!(Source::from(&source), record.source);
}

#[test]
fn config_store_kept_ranges_compress_runs() {
    assert_eq!(kept_ranges([1, 2, 3, 7, 9, 10].into_iter()), "1-3, 7, 9-10");
    assert_eq!(kept_ranges(std::iter::empty()), "none");
}

#[test]
fn config_store_adopts_a_current_yaml_changed_outside_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(tmp.path()).unwrap();
    store.commit(&config(1), meta("alice", "auto")).unwrap();
    std::fs::write(tmp.path().join(CURRENT_FILE), config(9)).unwrap();

    let (record, bytes) = store.current().unwrap().unwrap();
    assert_eq!(bytes, config(9));
    assert_eq!(
        (
            record.generation,
            record.mode.as_str(),
            record.applied_by.as_str()
        ),
        (2, "image", "unknown")
    );
    store.commit(&config(3), meta("alice", "auto")).unwrap();
    assert_eq!(
        states(&store),
        vec![
            (3, State::Current),
            (2, State::Previous),
            (1, State::Previous)
        ]
    );
    assert_eq!(store.get(2).unwrap().1, config(9));
}
