//! Writing a bundle into the inactive slot: a [`PayloadSink`] that puts the
//! kernel and initramfs under `<EFI>/<slot>/` (each through a `.new` name,
//! renamed once its hash matched) and the root squashfs on the raw
//! `SYSTEM-<slot>` device, and [`install`], which drives the decoder over a
//! stream of chunks and settles STATE and grubenv: the slot `writing` once
//! the manifest is verified and accepted, then `trial` with `next_entry`
//! set when the whole bundle checked out, or `invalid` on any error (the
//! active slot and grubenv untouched).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bundle::{
    BundleError, Decoder, Limits, Manifest, PayloadInfo, PayloadName, PayloadSink, TrustedKeys,
};

use super::efi::EfiSession;
use super::grubenv;
use super::state::{PendingTrial, Slot, SlotState, StateFile};

/// Buffer in front of the block device.
const DEVICE_BUFFER: usize = 1 << 20;

/// Where a bundle goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The slot written (never the booted one).
    pub slot: Slot,
    /// The booted slot.
    pub booted: Slot,
    /// The running OS version (for `min_upgrade_from`).
    pub running_version: String,
    /// The slot's root device (`SYSTEM-<slot>`).
    pub device: PathBuf,
    /// Its size in bytes.
    pub device_size: u64,
}

/// A verified bundle written into its slot.
#[derive(Clone, Debug)]
pub struct Written {
    /// Its manifest.
    pub manifest: Manifest,
    /// Bundle bytes received.
    pub bytes: u64,
}

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The node's state forbids it; nothing was written.
    #[error("{0}")]
    Precondition(String),
    /// The bundle was refused (bad, foreign, truncated, too old, or its
    /// payload could not be written).
    #[error("{0}")]
    Bundle(#[from] BundleError),
    /// The upload stream broke.
    #[error("the upload ended early ({reason}): {bundle}")]
    Stream {
        /// What the stream said.
        reason: String,
        /// What the decoder made of the bytes received.
        bundle: String,
    },
    /// The bundle was fine, but STATE or grubenv could not be updated.
    #[error("{0}")]
    Finalize(String),
}

/// The open output of one payload.
enum Output {
    /// `<EFI>/<slot>/<name>.new`, renamed to `<name>` at `end`.
    File {
        tmp: PathBuf,
        dest: PathBuf,
        out: BufWriter<File>,
    },
    /// The raw block device.
    Device { out: BufWriter<File> },
}

/// The sink writing into the inactive slot.
pub struct SlotWriter<'a> {
    target: &'a Target,
    efi: &'a Path,
    state: &'a StateFile,
    /// The manifest was accepted and the slot marked `writing`: from here
    /// on, a failure leaves the slot `invalid`.
    touched: bool,
    open: Option<Output>,
}

impl<'a> SlotWriter<'a> {
    /// A sink for `target`, the EFI partition mounted at `efi`, recording
    /// in `state`.
    pub fn new(target: &'a Target, efi: &'a Path, state: &'a StateFile) -> Self {
        SlotWriter {
            target,
            efi,
            state,
            touched: false,
            open: None,
        }
    }

    fn file_name(part: PayloadName) -> &'static str {
        match part {
            PayloadName::Kernel => "vmlinuz",
            PayloadName::Initramfs => "initramfs.img",
            PayloadName::Rootfs => "rootfs",
        }
    }
}

fn ctx(what: String) -> impl FnOnce(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl PayloadSink for SlotWriter<'_> {
    fn verified(&mut self, manifest: &Manifest, signer: &str) -> Result<(), BundleError> {
        manifest.check_upgrade_from(&self.target.running_version)?;
        let slot = self.target.slot;
        tracing::info!(
            version = %manifest.os_version,
            build_id = %manifest.build_id,
            signer,
            slot = %slot,
            "bundle signature verified"
        );
        self.state
            .update(|r| {
                r.set_slot(
                    slot,
                    SlotState::Writing,
                    Some(manifest.os_version.clone()),
                    crate::events::now_ms(),
                );
                // A staged trial of this slot is being overwritten.
                if r.trial.as_ref().is_some_and(|t| t.slot == slot) {
                    r.trial = None;
                }
            })
            .map_err(|e| BundleError::Io {
                what: format!("recording slot {slot} as being written in STATE"),
                source: std::io::Error::other(e.to_string()),
            })?;
        self.touched = true;
        // A trial staged earlier for this slot must not boot what is about
        // to be half-written (a power cut during the write).
        let env_path = self.efi.join(super::efi::GRUBENV);
        let staged = grubenv::read(&env_path)
            .map(|env| env.get("next_entry") == Some(slot.as_str()))
            .unwrap_or(false);
        if staged {
            grubenv::update(&env_path, |env| env.unset("next_entry")).map_err(|e| {
                BundleError::Io {
                    what: format!("clearing the trial of slot {slot} staged in grubenv"),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        }
        Ok(())
    }

    fn begin(&mut self, part: &PayloadInfo) -> std::io::Result<()> {
        let slot = self.target.slot;
        let output = match part.name {
            PayloadName::Rootfs => {
                if part.size > self.target.device_size {
                    return Err(std::io::Error::other(format!(
                        "the rootfs is {} bytes, {} ({}) holds {}",
                        part.size,
                        slot.partition(),
                        self.target.device.display(),
                        self.target.device_size
                    )));
                }
                let f = OpenOptions::new()
                    .write(true)
                    .truncate(false)
                    .open(&self.target.device)
                    .map_err(ctx(format!("opening {}", self.target.device.display())))?;
                Output::Device {
                    out: BufWriter::with_capacity(DEVICE_BUFFER, f),
                }
            }
            name => {
                let dir = self.efi.join(slot.as_str());
                std::fs::create_dir_all(&dir)
                    .map_err(ctx(format!("creating {}", dir.display())))?;
                let dest = dir.join(Self::file_name(name));
                let tmp = dir.join(format!("{}.new", Self::file_name(name)));
                let f = File::create(&tmp).map_err(ctx(format!("creating {}", tmp.display())))?;
                Output::File {
                    tmp,
                    dest,
                    out: BufWriter::with_capacity(DEVICE_BUFFER, f),
                }
            }
        };
        self.open = Some(output);
        Ok(())
    }

    fn data(&mut self, _: &PayloadInfo, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.open {
            Some(Output::File { out, tmp, .. }) => out
                .write_all(bytes)
                .map_err(ctx(format!("writing {}", tmp.display()))),
            Some(Output::Device { out }) => out
                .write_all(bytes)
                .map_err(ctx(format!("writing {}", self.target.device.display()))),
            None => Err(std::io::Error::other("data before begin")),
        }
    }

    fn end(&mut self, _: &PayloadInfo) -> std::io::Result<()> {
        match self.open.take() {
            Some(Output::File { tmp, dest, out }) => {
                let f = out
                    .into_inner()
                    .map_err(|e| ctx(format!("writing {}", tmp.display()))(e.into_error()))?;
                f.sync_all()
                    .map_err(ctx(format!("fsync of {}", tmp.display())))?;
                drop(f);
                if let Err(e) = std::fs::rename(&tmp, &dest) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(ctx(format!(
                        "renaming {} to {}",
                        tmp.display(),
                        dest.display()
                    ))(e));
                }
                if let Some(dir) = dest.parent() {
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(ctx(format!("fsync of {}", dir.display())))?;
                }
                Ok(())
            }
            Some(Output::Device { out }) => {
                let dev = self.target.device.display().to_string();
                let f = out
                    .into_inner()
                    .map_err(|e| ctx(format!("writing {dev}"))(e.into_error()))?;
                f.sync_all().map_err(ctx(format!("fsync of {dev}")))
            }
            None => Err(std::io::Error::other("end before begin")),
        }
    }

    fn abort(&mut self, part: &PayloadInfo, reason: &BundleError) {
        tracing::warn!(part = %part.name, reason = %reason, "payload abandoned");
        if let Some(Output::File { tmp, out, .. }) = self.open.take() {
            drop(out);
            if let Err(e) = std::fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "cannot remove a partial payload");
            }
        }
    }
}

/// Refuses an upgrade the node's state does not allow: the target is the
/// booted slot or GRUB's default, or the booted slot is itself on trial.
pub fn check_target(
    target: &Target,
    efi: &EfiSession,
    state: &StateFile,
) -> Result<(), InstallError> {
    if target.slot == target.booted {
        return Err(InstallError::Precondition(format!(
            "slot {} is the booted slot: only the inactive slot is written",
            target.slot
        )));
    }
    let rec = state
        .load()
        .map_err(|e| InstallError::Precondition(e.to_string()))?;
    if let Some(t) = rec.trial.filter(|t| t.slot == target.booted) {
        return Err(InstallError::Precondition(format!(
            "slot {} (version {}) is on trial, its health gate is pending: wait for it to be committed or rolled back",
            t.slot, t.version
        )));
    }
    let env =
        grubenv::read(&efi.grubenv()).map_err(|e| InstallError::Precondition(e.to_string()))?;
    if env.get("default") == Some(target.slot.as_str()) {
        return Err(InstallError::Precondition(format!(
            "slot {} is GRUB's default (what boots if slot {} fails): an upgrade never overwrites it; reboot into it first, or wait until the running slot is committed",
            target.slot, target.booted
        )));
    }
    Ok(())
}

/// Streams `chunks` (an `Err` is a broken upload) into `target`'s slot
/// through the decoder; when the bundle is accepted, records the trial in
/// STATE and sets grubenv's `next_entry`. Any error leaves the slot
/// `invalid` if it had been touched, and grubenv as it was.
pub fn install(
    target: &Target,
    efi: &EfiSession,
    state: &StateFile,
    trusted: TrustedKeys,
    chunks: impl IntoIterator<Item = Result<Vec<u8>, String>>,
) -> Result<Written, InstallError> {
    let limits = Limits {
        rootfs: target.device_size,
        ..Limits::default()
    };
    let mut decoder = Decoder::new(trusted, limits);
    let mut sink = SlotWriter::new(target, efi.root(), state);
    let mut bytes = 0u64;
    let result: Result<Manifest, InstallError> = 'feed: {
        for chunk in chunks {
            match chunk {
                Ok(b) => {
                    bytes += b.len() as u64;
                    if let Err(e) = decoder.push(&b, &mut sink) {
                        break 'feed Err(e.into());
                    }
                }
                Err(reason) => {
                    let bundle = match decoder.finish(&mut sink) {
                        Err(e) => e.to_string(),
                        Ok(_) => "the bundle was complete".to_string(),
                    };
                    break 'feed Err(InstallError::Stream { reason, bundle });
                }
            }
        }
        decoder.finish(&mut sink).map_err(InstallError::from)
    };
    let touched = sink.touched;
    drop(sink);
    let slot = target.slot;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            if touched {
                mark_invalid(state, slot);
            }
            return Err(e);
        }
    };
    let now = crate::events::now_ms();
    let recorded = state.update(|r| {
        let booted = r.slot(target.booted, target.booted, &target.running_version);
        r.slots.insert(target.booted, booted);
        r.set_slot(
            slot,
            SlotState::Trial,
            Some(manifest.os_version.clone()),
            now,
        );
        r.trial = Some(PendingTrial {
            slot,
            from: target.booted,
            version: manifest.os_version.clone(),
            unix_ms: now,
            booted_unix_ms: None,
        });
    });
    if let Err(e) = recorded {
        mark_invalid(state, slot);
        return Err(InstallError::Finalize(format!(
            "the bundle checked out, but the trial could not be recorded: {e}"
        )));
    }
    if let Err(e) = grubenv::update(&efi.grubenv(), |env| env.set("next_entry", slot.as_str())) {
        if let Err(e2) = state.update(|r| {
            r.set_slot(
                slot,
                SlotState::Invalid,
                Some(manifest.os_version.clone()),
                now,
            );
            r.trial = None;
        }) {
            tracing::error!(error = %e2, "upgrade record not reverted");
        }
        return Err(InstallError::Finalize(format!(
            "the bundle checked out, but GRUB's next_entry could not be set: {e}"
        )));
    }
    Ok(Written { manifest, bytes })
}

fn mark_invalid(state: &StateFile, slot: Slot) {
    let now = crate::events::now_ms();
    if let Err(e) = state.update(|r| {
        let version = r.slots.get(&slot).and_then(|s| s.os_version.clone());
        r.set_slot(slot, SlotState::Invalid, version, now);
        if r.trial.as_ref().is_some_and(|t| t.slot == slot) {
            r.trial = None;
        }
    }) {
        tracing::error!(slot = %slot, error = %e, "cannot mark the slot invalid in STATE");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::upgrade::state::Record;
    use bundle::{BundleMeta, SigningKey};

    struct Fixture {
        _dir: tempfile::TempDir,
        efi_dir: PathBuf,
        state: StateFile,
        target: Target,
        bundle: Vec<u8>,
        rootfs: Vec<u8>,
        kernel: Vec<u8>,
        key: SigningKey,
    }

    const DEVICE_SIZE: u64 = 256 * 1024;

    fn fixture(min_upgrade_from: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let efi_dir = dir.path().join("efi");
        std::fs::create_dir_all(efi_dir.join("grub")).unwrap();
        std::fs::create_dir_all(efi_dir.join("A")).unwrap();
        let mut env = format!("{}default=A\n", grubenv::HEADER).into_bytes();
        env.resize(grubenv::SIZE, b'#');
        std::fs::write(efi_dir.join("grub/grubenv"), env).unwrap();
        let device = dir.path().join("system-b");
        std::fs::write(&device, vec![0xEE; DEVICE_SIZE as usize]).unwrap();
        let kernel: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let initramfs: Vec<u8> = (0..7000u32).map(|i| (i % 13) as u8).collect();
        let rootfs: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let p = dir.path();
        std::fs::write(p.join("k"), &kernel).unwrap();
        std::fs::write(p.join("i"), &initramfs).unwrap();
        std::fs::write(p.join("r"), &rootfs).unwrap();
        let key = SigningKey::from_seed([7; 32]);
        let mut bundle = Vec::new();
        bundle::write_bundle(
            &mut bundle,
            &key,
            &BundleMeta {
                os_version: "2.0.0".into(),
                build_id: "test".into(),
                created: None,
                min_upgrade_from: min_upgrade_from.map(str::to_string),
            },
            &p.join("k"),
            &p.join("i"),
            &p.join("r"),
        )
        .unwrap();
        Fixture {
            state: StateFile {
                dir: p.join("state"),
                remount: false,
            },
            target: Target {
                slot: Slot::B,
                booted: Slot::A,
                running_version: "1.0.0".into(),
                device,
                device_size: DEVICE_SIZE,
            },
            efi_dir,
            bundle,
            rootfs,
            kernel,
            key,
            _dir: dir,
        }
    }

    fn chunks(b: &[u8], n: usize) -> Vec<Result<Vec<u8>, String>> {
        b.chunks(n).map(|c| Ok(c.to_vec())).collect()
    }

    fn trusted(key: &SigningKey) -> TrustedKeys {
        TrustedKeys::from_base64(&[key.public_base64()]).unwrap()
    }

    fn leftovers(efi: &Path) -> Vec<String> {
        std::fs::read_dir(efi.join("B"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".new"))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_good_bundle_fills_the_slot_and_sets_the_one_shot_trial() {
        let f = fixture(Some("1.0"));
        let efi = EfiSession::at(&f.efi_dir);
        check_target(&f.target, &efi, &f.state).unwrap();
        let w = install(
            &f.target,
            &efi,
            &f.state,
            trusted(&f.key),
            chunks(&f.bundle, 4099),
        )
        .unwrap();
        assert_eq!(w.manifest.os_version, "2.0.0");
        assert_eq!(w.bytes, f.bundle.len() as u64);
        assert_eq!(
            std::fs::read(f.efi_dir.join("B/vmlinuz")).unwrap(),
            f.kernel
        );
        assert!(f.efi_dir.join("B/initramfs.img").exists());
        let dev = std::fs::read(&f.target.device).unwrap();
        assert_eq!(
            dev.len() as u64,
            DEVICE_SIZE,
            "the device is written, not resized"
        );
        assert_eq!(&dev[..f.rootfs.len()], &f.rootfs[..]);
        assert!(leftovers(&f.efi_dir).is_empty());
        let env = grubenv::read(&efi.grubenv()).unwrap();
        assert_eq!(env.get("next_entry"), Some("B"));
        assert_eq!(
            env.get("default"),
            Some("A"),
            "the good slot stays the default"
        );
        let rec = f.state.load().unwrap();
        assert_eq!(rec.slots[&Slot::B].state, SlotState::Trial);
        assert_eq!(rec.slots[&Slot::B].os_version.as_deref(), Some("2.0.0"));
        assert_eq!(rec.slots[&Slot::A].state, SlotState::Good);
        assert_eq!(rec.slots[&Slot::A].os_version.as_deref(), Some("1.0.0"));
        let t = rec.trial.unwrap();
        assert_eq!(
            (t.slot, t.from, t.version.as_str()),
            (Slot::B, Slot::A, "2.0.0")
        );
        drop(efi);
        // The booted trial slot may not be upgraded over its fallback.
        let on_b = Target {
            slot: Slot::A,
            booted: Slot::B,
            ..f.target.clone()
        };
        let efi = EfiSession::at(&f.efi_dir);
        let e = check_target(&on_b, &efi, &f.state).unwrap_err().to_string();
        assert!(e.contains("is on trial"), "{e}");
        // Nor, with the trial gone, over GRUB's default.
        f.state.update(|r| r.trial = None).unwrap();
        let e = check_target(&on_b, &efi, &f.state).unwrap_err().to_string();
        assert!(e.contains("slot A is GRUB's default"), "{e}");
    }

    #[test]
    fn a_flipped_rootfs_byte_leaves_the_slot_invalid_and_no_new_files() {
        let f = fixture(None);
        let mut bad = f.bundle.clone();
        let at = bad.len() - 100; // inside the rootfs payload
        bad[at] ^= 1;
        let efi = EfiSession::at(&f.efi_dir);
        let e = install(
            &f.target,
            &efi,
            &f.state,
            trusted(&f.key),
            chunks(&bad, 8192),
        )
        .unwrap_err();
        assert!(matches!(e, InstallError::Bundle(_)), "{e}");
        assert!(e.to_string().contains("rootfs"), "{e}");
        let rec = f.state.load().unwrap();
        assert_eq!(rec.slots[&Slot::B].state, SlotState::Invalid);
        assert_eq!(rec.trial, None);
        assert!(leftovers(&f.efi_dir).is_empty());
        let env = grubenv::read(&efi.grubenv()).unwrap();
        assert_eq!(env.get("next_entry"), None);
        assert_eq!(env.get("default"), Some("A"));
    }

    #[test]
    fn an_untrusted_key_writes_nothing_at_all() {
        let f = fixture(None);
        let other = SigningKey::from_seed([9; 32]);
        let efi = EfiSession::at(&f.efi_dir);
        let before = std::fs::read(&f.target.device).unwrap();
        let env_before = std::fs::read(efi.grubenv()).unwrap();
        let e = install(
            &f.target,
            &efi,
            &f.state,
            trusted(&other),
            chunks(&f.bundle, 1000),
        )
        .unwrap_err();
        assert!(matches!(e, InstallError::Bundle(_)), "{e}");
        assert!(!f.efi_dir.join("B").exists(), "no slot directory created");
        assert_eq!(std::fs::read(&f.target.device).unwrap(), before);
        assert_eq!(std::fs::read(efi.grubenv()).unwrap(), env_before);
        assert!(!f.state.path().exists(), "STATE untouched");
    }

    #[test]
    fn a_node_older_than_min_upgrade_from_is_refused_before_writing() {
        let f = fixture(Some("1.5"));
        let efi = EfiSession::at(&f.efi_dir);
        let e = install(
            &f.target,
            &efi,
            &f.state,
            trusted(&f.key),
            chunks(&f.bundle, 1 << 16),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("1.5") && e.to_string().contains("1.0.0"),
            "{e}"
        );
        assert!(!f.efi_dir.join("B").exists());
        assert_eq!(f.state.load().unwrap(), Record::default());
    }

    #[test]
    fn a_broken_upload_is_truncated_and_invalidates_the_slot() {
        let f = fixture(None);
        let efi = EfiSession::at(&f.efi_dir);
        let mut parts = chunks(&f.bundle[..f.bundle.len() / 2], 3000);
        parts.push(Err("client cancelled".into()));
        let e = install(&f.target, &efi, &f.state, trusted(&f.key), parts).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("client cancelled") && msg.contains("truncated"),
            "{msg}"
        );
        assert_eq!(
            f.state.load().unwrap().slots[&Slot::B].state,
            SlotState::Invalid
        );
        assert!(leftovers(&f.efi_dir).is_empty());
        assert_eq!(
            grubenv::read(&efi.grubenv()).unwrap().get("next_entry"),
            None
        );
    }

    #[test]
    fn a_second_upload_over_a_staged_trial_unstages_it_before_writing() {
        let f = fixture(None);
        let efi = EfiSession::at(&f.efi_dir);
        install(
            &f.target,
            &efi,
            &f.state,
            trusted(&f.key),
            chunks(&f.bundle, 1 << 16),
        )
        .unwrap();
        assert_eq!(
            grubenv::read(&efi.grubenv()).unwrap().get("next_entry"),
            Some("B")
        );
        // Cut in the middle of the rootfs (a power cut mid-write looks the
        // same to the next boot).
        let cut = f.bundle.len() - 20_000;
        let mut parts = chunks(&f.bundle[..cut], 1 << 16);
        parts.push(Err("connection reset".into()));
        install(&f.target, &efi, &f.state, trusted(&f.key), parts).unwrap_err();
        let env = grubenv::read(&efi.grubenv()).unwrap();
        assert_eq!(
            env.get("next_entry"),
            None,
            "GRUB must not boot a half-written slot"
        );
        let rec = f.state.load().unwrap();
        assert_eq!(rec.trial, None);
        assert_eq!(rec.slots[&Slot::B].state, SlotState::Invalid);
    }

    #[test]
    fn a_rootfs_larger_than_the_device_is_refused() {
        let mut f = fixture(None);
        f.target.device_size = 50_000;
        let efi = EfiSession::at(&f.efi_dir);
        let e = install(
            &f.target,
            &efi,
            &f.state,
            trusted(&f.key),
            chunks(&f.bundle, 1 << 16),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rootfs"), "{e}");
        assert_eq!(
            grubenv::read(&efi.grubenv()).unwrap().get("next_entry"),
            None
        );
    }
}
