//! The EFI System Partition: FAT32 made with `mkfs.vfat` on a plain file and
//! filled with mtools (no mounts), holding GRUB (`grub-mkimage`, embedded
//! modules) as `EFI/BOOT/BOOTX64.EFI`, `grub/grub.cfg` implementing the A/B
//! choice, a 1024-byte `grub/grubenv`, and each slot's kernel and initramfs
//! under `A/` and `B/`. Deterministic: `--invariant`, a volume id from the
//! seed, and every timestamp at SOURCE_DATE_EPOCH.
//!
//! The tree is staged in a directory first ([`stage`]); [`make`] builds
//! the FAT from it, and the ISO (`iso.rs`) carries the same tree under
//! `/keelson/esp/` for the installer to copy onto a disk's ESP.

use std::path::Path;

use anyhow::{bail, Context};

use crate::bootdir;
use crate::tools::{self, known};

/// The kernel's console on every Keelson boot: the first serial port.
pub const CONSOLE: &str = "console=ttyS0,115200";

/// Reboot 10 s after a kernel panic (the A/B fallback and the watchdog
/// take it from there).
pub const PANIC: &str = "panic=10";

/// Kernel command line of slot `slot` (docs/architecture.md).
pub fn cmdline(slot: &str) -> String {
    format!("{CONSOLE} keelson.slot={slot} {PANIC}")
}

/// GRUB modules embedded in BOOTX64.EFI.
pub const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "normal",
    "linux",
    "echo",
    "loadenv",
    "test",
    "configfile",
    "search",
    "search_label",
    "search_fs_uuid",
    "serial",
    "terminal",
    "gzio",
    "all_video",
    "efi_gop",
    "reboot",
    "halt",
    "sleep",
    "minicmd",
    "ls",
    "cat",
    "boot",
];

/// grub.cfg: serial console, `default` from grubenv (the good slot), a
/// one-shot `next_entry` (the trial slot) cleared before it boots, with the
/// good slot as `fallback` so a trial kernel GRUB cannot load falls back in
/// the same boot. `fallback` is the slot's entry number (A is entry 0, B
/// entry 1), the form every GRUB 2 reads: with the id instead, this image's
/// GRUB 2.06 did not fall back (measured in the upgrade scenario: it
/// stopped at "Failed to boot both default and fallback entries").
pub fn grub_cfg() -> String {
    let mut s = String::from(
        "# Keelson A/B boot. grubenv holds `default` (the good slot) and an\n\
         # optional one-shot `next_entry` (a slot on trial), cleared here before\n\
         # it boots: a trial slot that fails falls back to `default` next boot,\n\
         # or in this boot (`fallback`) if GRUB cannot load its kernel.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set default=A\n\
         load_env\n\
         if [ -n \"${next_entry}\" ]; then\n\
         \x20 if [ \"${default}\" = B ]; then set fallback=1; else set fallback=0; fi\n\
         \x20 set default=\"${next_entry}\"\n\
         \x20 set next_entry=\n\
         \x20 save_env next_entry\n\
         fi\n\
         set timeout=0\n",
    );
    for slot in ["A", "B"] {
        s.push_str(&format!(
            "menuentry \"{slot}\" --id {slot} {{\n  linux /{slot}/vmlinuz {}\n  initrd /{slot}/initramfs.img\n}}\n",
            cmdline(slot)
        ));
    }
    s
}

/// Directories of the ESP, parents first (`B/` stays empty until an
/// upgrade writes slot B).
pub const DIRS: [&str; 5] = ["EFI", "EFI/BOOT", "grub", "A", "B"];

/// How [`stage`] puts the kernel and initramfs into the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payloads {
    /// Copies, their time set to the epoch (they go into the FAT image).
    Copy,
    /// Hard links to the given files when possible, else copies (see
    /// [`bootdir::link_or_copy`]); their times are left alone (a link
    /// shares them with its source).
    Link,
}

/// The ESP's file tree staged by [`stage`]: paths relative to its root,
/// `/`-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Every directory, parents first ([`DIRS`]).
    pub dirs: Vec<String>,
    /// Every file, in the order the FAT image gets them.
    pub files: Vec<String>,
}

/// Stages the ESP's file tree into `dir` (removed first if it exists: a
/// scratch directory): `EFI/BOOT/BOOTX64.EFI` (GRUB, prefix `/grub`),
/// `grub/grub.cfg` ([`grub_cfg`]), `grub/grubenv` (1024 bytes,
/// `default=A`), `A/vmlinuz`, `A/initramfs.img` and an empty `B/`. Files
/// made here get the time `epoch`. The installed disk's ESP ([`make`]) and
/// the ISO's copy of it are both this tree.
pub fn stage(
    dir: &Path,
    vmlinuz: &Path,
    initramfs: &Path,
    epoch: u64,
    payloads: Payloads,
) -> anyhow::Result<Tree> {
    if !Path::new("/usr/lib/grub/x86_64-efi").is_dir() {
        bail!("GRUB's x86_64-efi modules are missing: install grub-efi-amd64-bin (make deps)");
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    for d in DIRS {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let efi = dir.join("EFI/BOOT/BOOTX64.EFI");
    let mut mk = known::GRUB_MKIMAGE.command()?;
    mk.args(["-O", "x86_64-efi", "-p", "/grub", "-o"])
        .arg(&efi)
        .args(GRUB_MODULES);
    tools::run(&mut mk)?;
    let cfg = dir.join("grub/grub.cfg");
    std::fs::write(&cfg, grub_cfg()).with_context(|| format!("cannot write {}", cfg.display()))?;
    let env = dir.join("grub/grubenv");
    let mut ed = known::GRUB_EDITENV.command()?;
    ed.arg(&env).arg("create");
    tools::run(&mut ed)?;
    let mut ed = known::GRUB_EDITENV.command()?;
    ed.arg(&env).args(["set", "default=A"]);
    tools::run(&mut ed)?;
    let env_len = std::fs::metadata(&env)
        .with_context(|| format!("cannot stat {}", env.display()))?
        .len();
    if env_len != 1024 {
        bail!("grubenv is {env_len} bytes, GRUB needs exactly 1024");
    }
    let mut made = vec![efi, cfg, env];
    for (src, name) in [(vmlinuz, "A/vmlinuz"), (initramfs, "A/initramfs.img")] {
        let dst = dir.join(name);
        match payloads {
            Payloads::Copy => {
                std::fs::copy(src, &dst).with_context(|| {
                    format!("cannot copy {} to {}", src.display(), dst.display())
                })?;
                made.push(dst);
            }
            Payloads::Link => {
                bootdir::link_or_copy(src, &dst)?;
            }
        }
    }
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for f in &made {
        std::fs::File::options()
            .write(true)
            .open(f)
            .and_then(|h| h.set_modified(when))
            .with_context(|| format!("cannot set the time of {}", f.display()))?;
    }
    Ok(Tree {
        dirs: DIRS.iter().map(|d| d.to_string()).collect(),
        files: [
            "EFI/BOOT/BOOTX64.EFI",
            "grub/grub.cfg",
            "grub/grubenv",
            "A/vmlinuz",
            "A/initramfs.img",
        ]
        .iter()
        .map(|f| f.to_string())
        .collect(),
    })
}

/// Inputs of the ESP.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Kernel for slot A.
    pub vmlinuz: &'a Path,
    /// initramfs for slot A.
    pub initramfs: &'a Path,
    /// FAT volume id (32 bits).
    pub volume_id: u32,
    /// Timestamp for every file.
    pub epoch: u64,
    /// Scratch directory.
    pub work: &'a Path,
}

/// Makes the ESP image at `out` (`size` bytes): FAT32 holding the tree
/// [`stage`] makes (staged under `work/tree`).
pub fn make(out: &Path, size: u64, inp: &Inputs<'_>) -> anyhow::Result<()> {
    let work = inp.work;
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let staged = work.join("tree");
    let tree = stage(
        &staged,
        inp.vmlinuz,
        inp.initramfs,
        inp.epoch,
        Payloads::Copy,
    )?;

    if out.exists() {
        std::fs::remove_file(out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.set_len(size)
        .with_context(|| format!("cannot size {}", out.display()))?;
    drop(f);
    let mut mkfs = known::MKFS_VFAT.command()?;
    mkfs.args(["-F", "32", "-s", "1", "-n", "EFI", "--invariant", "-i"])
        .arg(format!("{:08X}", inp.volume_id))
        .arg(out);
    tools::run(&mut mkfs)?;
    fat_fill(out, &staged, &tree, inp.epoch)
}

/// Fills the FAT image `image` with `tree` (staged under `root`): `mmd`
/// every directory, then `mcopy -m` every file in order, under
/// `SOURCE_DATE_EPOCH=epoch` and `TZ=UTC` (FAT times are local times).
pub fn fat_fill(image: &Path, root: &Path, tree: &Tree, epoch: u64) -> anyhow::Result<()> {
    let epoch = epoch.to_string();
    let image = image.to_string_lossy().into_owned();
    for d in &tree.dirs {
        let mut mmd = known::MMD.command()?;
        mmd.args(["-i", &image, &format!("::/{d}")])
            .env("SOURCE_DATE_EPOCH", &epoch)
            .env("TZ", "UTC");
        tools::run(&mut mmd)?;
    }
    for f in &tree.files {
        let mut mcopy = known::MCOPY.command()?;
        mcopy
            .args(["-m", "-i", &image])
            .arg(root.join(f))
            .arg(format!("::/{f}"))
            .env("SOURCE_DATE_EPOCH", &epoch)
            .env("TZ", "UTC");
        tools::run(&mut mcopy)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn grub_cfg_is_valid_grub_script_with_both_slots() {
        let cfg = grub_cfg();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grub.cfg");
        std::fs::write(&p, &cfg).unwrap();
        let out = std::process::Command::new("grub-script-check")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for slot in ["A", "B"] {
            assert!(cfg.contains(&format!(
                "linux /{slot}/vmlinuz console=ttyS0,115200 keelson.slot={slot} panic=10\n"
            )));
            assert!(cfg.contains(&format!("initrd /{slot}/initramfs.img\n")));
        }
        // The one-shot entry is cleared and saved before the menu boots it.
        let load = cfg.find("load_env").unwrap();
        let save = cfg.find("save_env next_entry").unwrap();
        assert!(load < save && save < cfg.find("menuentry").unwrap());
        // The good slot becomes the fallback only on a trial boot: set
        // inside the `next_entry` branch, from `default` before `default`
        // is switched to the trial, and before the one-shot is saved.
        let branch = cfg.find("if [ -n \"${next_entry}\" ]; then").unwrap();
        let branch_end = branch + cfg[branch..].find("\nfi\n").unwrap();
        let fallback = cfg
            .find("if [ \"${default}\" = B ]; then set fallback=1; else set fallback=0; fi")
            .unwrap();
        let switch = cfg.find("set default=\"${next_entry}\"").unwrap();
        assert!(branch < fallback && fallback < switch && switch < save && save < branch_end);
        assert_eq!(
            cfg.matches("set fallback=").count(),
            2,
            "only the trial branch sets it: {cfg}"
        );
    }

    /// Runs grub.cfg's boot-selection lines (from `set default=A` to the
    /// menu) as sh, every `set X=Y` rewritten to `X=Y` (the `if [ ... ]`
    /// tests mean the same in both), with grubenv holding `saved_default` and
    /// `next_entry`; returns (default, fallback, next_entry) as the menu
    /// sees them.
    fn select(saved_default: &str, next_entry: &str) -> (String, String, String) {
        let cfg = grub_cfg();
        let start = cfg.find("set default=A").unwrap();
        let end = cfg.find("set timeout").unwrap();
        let body: String = cfg[start..end]
            .lines()
            .map(|l| format!("{}\n", l.trim_start().replace("set ", "")))
            .collect();
        let script = format!(
            "fallback=\nload_env() {{ default={saved_default}; next_entry={next_entry}; }}\n\
             save_env() {{ :; }}\n{body}printf '%s|%s|%s' \"$default\" \"$fallback\" \"$next_entry\"\n"
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let parts: Vec<String> = text.split('|').map(str::to_owned).collect();
        (parts[0].clone(), parts[1].clone(), parts[2].clone())
    }

    #[test]
    fn a_trial_boot_falls_back_to_the_good_slot_and_a_normal_boot_has_no_fallback() {
        let s = |x: &str| x.to_owned();
        // Good slot A, trial B: boot B, fall back to A, one-shot cleared.
        // (`fallback` is the entry number: A is 0, B is 1.)
        assert_eq!(select("A", "B"), (s("B"), s("0"), s("")));
        // Good slot B (after an upgrade), trial A.
        assert_eq!(select("B", "A"), (s("A"), s("1"), s("")));
        // No trial: the good slot, no fallback.
        assert_eq!(select("B", ""), (s("B"), s(""), s("")));
    }
}
