//! `image-build iso`: a boot ISO of the image, `OUT/keelson-VERSION.iso`,
//! that boots the node live (maintenance mode) from a CD or a USB stick,
//! under BIOS or UEFI, and carries what an installer needs to write a disk.
//! Made without root, loop devices or mounts: `grub-mkimage`, `mkfs.vfat`
//! and mtools for the boot images, `xorriso` for the ISO.
//!
//! Layout (ISO 9660 with Rock Ridge, volume id [`volume_id`]):
//!
//! | path | what |
//! |---|---|
//! | `/boot/vmlinuz`, `/boot/initramfs.img` | the live kernel and initramfs (the boot directory's) |
//! | `/boot/grub/grub.cfg` | the menu ([`grub_cfg`]) |
//! | `/boot/grub/i386-pc/eltorito.img` | GRUB for BIOS (El Torito, and the USB MBR's core) |
//! | `/boot/grub/boot.cat` | the El Torito boot catalog |
//! | `/keelson/rootfs.squashfs` | the root (the boot directory's) |
//! | `/keelson/esp/` | the installed disk's ESP tree ([`esp::stage`]) |
//! | `/keelson/media.json` | sizes and SHA-256s of the above ([`media`]) |
//! | `/keelson/id-HASH` | marker GRUB finds the medium by ([`marker_path`]) |
//!
//! plus a FAT image with GRUB for UEFI (`EFI/BOOT/BOOTX64.EFI`), appended
//! after the ISO as MBR partition 2 (type 0xEF) and named by the El Torito
//! UEFI entry, so the same bytes boot as a CD (El Torito) and as a disk
//! (MBR: `boot_hybrid.img` for BIOS, the 0xEF partition for UEFI).
//!
//! Both GRUBs embed an early config that finds the medium by the marker
//! file (named from the hash of `media.json`, so unique to this build) and
//! runs `/boot/grub/grub.cfg` from it. The kernel command line names the
//! medium (`keelson.media=VOLUME_ID`) and the SHA-256 of `media.json`
//! (`keelson.media_sha256=`), from which stage 1 can check everything else.
//!
//! Reproducible: every file and volume time is `--source-date-epoch`, FAT
//! volume ids derive from `media.json`'s hash, inputs are staged in a fixed
//! order; the kernel, initramfs and ESP copies of them are hard links in
//! the staging tree, so the ISO stores their bytes once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::bootdir::{self, link_or_copy};
use crate::bundle::PAYLOAD_FILES;
use crate::digest;
use crate::esp;
use crate::media::{self, Media, MediaFile};
use crate::tools::{self, known};

/// Where the root squashfs is on the ISO.
pub const ROOT_PATH: &str = "keelson/rootfs.squashfs";

/// Where the ESP tree is on the ISO.
pub const ESP_DIR: &str = "keelson/esp";

/// The kernel console on the screen (the first virtual terminal).
pub const SCREEN_CONSOLE: &str = "console=tty0";

/// GRUB's BIOS modules (`i386-pc`), embedded in the El Torito core image.
pub const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "iso9660",
    "part_msdos",
    "part_gpt",
    "normal",
    "linux",
    "search",
    "search_fs_file",
    "search_label",
    "configfile",
    "serial",
    "terminal",
    "echo",
    "test",
    "gzio",
    "boot",
    "minicmd",
    "reboot",
    "halt",
    "sleep",
    "ls",
    "cat",
];

/// Modules the UEFI GRUB needs on top of the disk's ([`esp::GRUB_MODULES`]):
/// the ISO's file system and the stick's MBR.
pub const EFI_EXTRA_MODULES: &[&str] = &["iso9660", "part_msdos", "search_fs_file"];

/// GRUB's `boot_hybrid.img`: the MBR that loads the El Torito core image
/// when the ISO is a disk (USB stick) booted by a BIOS.
const BOOT_HYBRID: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// The BIOS El Torito image on the ISO.
const ELTORITO: &str = "boot/grub/i386-pc/eltorito.img";

/// The El Torito boot catalog on the ISO.
const BOOT_CATALOG: &str = "boot/grub/boot.cat";

/// What `image-build iso` is asked to do.
#[derive(Debug)]
pub struct Request {
    /// Directory holding vmlinuz, initramfs.img and rootfs.squashfs; its
    /// `../version.json` gives the version.
    pub boot: PathBuf,
    /// Where `keelson-VERSION.iso` is written.
    pub out_dir: PathBuf,
    /// Time of every file and of the volume (seconds since 1970).
    pub epoch: u64,
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    /// The ISO file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The image version.
    pub version: String,
    /// The ISO 9660 volume id.
    pub volume_id: String,
    /// SHA-256 of `media.json` (hex), as on the kernel command line.
    pub media_sha256: String,
}

/// The ISO 9660 volume id of `version`: `KEELSON_` and the version
/// upper-cased, every character but `A-Z` and `0-9` made `_`, at most 32
/// characters (the field's size).
pub fn volume_id(version: &str) -> String {
    let mut id = String::from("KEELSON_");
    id.extend(version.chars().map(|c| {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        }
    }));
    id.truncate(32);
    id
}

/// The file name of the ISO of `version`.
pub fn file_name(version: &str) -> String {
    format!("keelson-{version}.iso")
}

/// The marker file (path on the ISO, no leading `/`) GRUB finds this
/// medium by: named from the first 16 hex digits of `media.json`'s
/// SHA-256, so it belongs to this build only.
pub fn marker_path(media_sha256: &str) -> String {
    let short = media_sha256.get(..16).unwrap_or(media_sha256);
    format!("keelson/id-{short}")
}

/// Kernel command line of the live boot: both consoles (`last` is
/// `/dev/console`, where init writes), the medium and the hash of its
/// manifest, the panic setting of a disk boot.
pub fn cmdline(first: &str, last: &str, volume_id: &str, media_sha256: &str) -> String {
    format!(
        "{first} {last} keelson.media={volume_id} keelson.media_sha256={media_sha256} {}",
        esp::PANIC
    )
}

/// The ISO's `/boot/grub/grub.cfg`: the serial terminal (like the disk's),
/// a 2 s menu of the live boot with the serial port as `/dev/console`
/// (entry 0, the default) and the same with the screen as `/dev/console`
/// (entry 1).
pub fn grub_cfg(version: &str, volume_id: &str, media_sha256: &str) -> String {
    let title = format!("Keelson {version} live (maintenance mode; install from here)");
    let mut s = format!(
        "# Keelson {version} live medium ({volume_id}). Stage 1 finds the medium by\n\
         # keelson.media= and checks keelson/media.json against keelson.media_sha256=.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=2\n\
         set default=0\n"
    );
    for (title, first, last) in [
        (title.clone(), SCREEN_CONSOLE, esp::CONSOLE),
        (
            format!("{title} (screen console)"),
            esp::CONSOLE,
            SCREEN_CONSOLE,
        ),
    ] {
        s.push_str(&format!(
            "menuentry \"{title}\" {{\n  linux /boot/vmlinuz {}\n  initrd /boot/initramfs.img\n}}\n",
            cmdline(first, last, volume_id, media_sha256)
        ));
    }
    s
}

/// The config embedded in both GRUB images: find the medium by its marker
/// (whatever device the firmware booted: CD, the stick's whole disk or a
/// partition of it), then run its `grub.cfg`.
pub fn early_cfg(marker: &str) -> String {
    format!(
        "search --no-floppy --set=root --file /{marker}\n\
         set prefix=($root)/boot/grub\n\
         configfile $prefix/grub.cfg\n"
    )
}

/// `--modification-date=` for xorriso: `YYYYMMDDhhmmsscc` (UTC) of `epoch`.
pub fn iso_date(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn grub_mkimage(format: &str, early: &Path, out: &Path, modules: &[&str]) -> anyhow::Result<()> {
    let platform = format.trim_end_matches("-eltorito");
    let dir = Path::new("/usr/lib/grub").join(platform);
    if !dir.is_dir() {
        let package = if platform == "i386-pc" {
            "grub-pc-bin"
        } else {
            "grub-efi-amd64-bin"
        };
        bail!(
            "GRUB's {platform} modules are missing ({}): install {package} (make deps)",
            dir.display()
        );
    }
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut mk = known::GRUB_MKIMAGE.command()?;
    mk.args(["-O", format, "-p", "/boot/grub", "-c"])
        .arg(early)
        .arg("-o")
        .arg(out)
        .args(modules);
    tools::run(&mut mk)?;
    Ok(())
}

/// The UEFI El Torito image: a FAT (12 or 16, sized to fit) holding
/// `efi` as `EFI/BOOT/BOOTX64.EFI`, volume id `volume_id`.
fn efi_boot_image(
    out: &Path,
    efi: &Path,
    volume_id: u32,
    epoch: u64,
    work: &Path,
) -> anyhow::Result<()> {
    const MIB: u64 = 1 << 20;
    let efi_len = std::fs::metadata(efi)
        .with_context(|| format!("cannot stat {}", efi.display()))?
        .len();
    // Room for the FATs, root directory and the two directories.
    let size = (efi_len + MIB / 2).div_ceil(MIB) * MIB;
    let tree_dir = work.join("efiboot");
    let dst = tree_dir.join("EFI/BOOT/BOOTX64.EFI");
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    std::fs::copy(efi, &dst)
        .with_context(|| format!("cannot copy {} to {}", efi.display(), dst.display()))?;
    std::fs::File::options()
        .write(true)
        .open(&dst)
        .and_then(|h| h.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch)))
        .with_context(|| format!("cannot set the time of {}", dst.display()))?;
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.set_len(size)
        .with_context(|| format!("cannot size {}", out.display()))?;
    drop(f);
    let mut mkfs = known::MKFS_VFAT.command()?;
    mkfs.args(["-n", "KEELSON_EFI", "--invariant", "-i"])
        .arg(format!("{volume_id:08X}"))
        .arg(out);
    tools::run(&mut mkfs)?;
    let tree = esp::Tree {
        dirs: vec!["EFI".into(), "EFI/BOOT".into()],
        files: vec!["EFI/BOOT/BOOTX64.EFI".into()],
    };
    esp::fat_fill(out, &tree_dir, &tree, epoch)
}

/// Builds the ISO; see the module documentation for what is on it.
pub fn build(req: &Request) -> anyhow::Result<Built> {
    let sources = bootdir::payload_paths(&req.boot)?;
    let hashes = sources
        .iter()
        .map(|p| digest::file_sha256(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let info = bootdir::version_of(&req.boot, &hashes)?;
    let version = bootdir::required_version(
        &req.boot,
        info.version,
        "the ISO's name and volume id need the image version",
    )?;
    let volume_id = volume_id(&version);

    // Staging tree and scratch files, next to the output.
    std::fs::create_dir_all(&req.out_dir)
        .with_context(|| format!("cannot create {}", req.out_dir.display()))?;
    let work = req.out_dir.join(".image-build-iso");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    let tree = work.join("tree");
    for d in ["boot/grub", "keelson"] {
        let p = tree.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let [vmlinuz_src, initramfs_src, root_src] = &sources;
    let vmlinuz = tree.join("boot").join(PAYLOAD_FILES[0]);
    let initramfs = tree.join("boot").join(PAYLOAD_FILES[1]);
    link_or_copy(vmlinuz_src, &vmlinuz)?;
    link_or_copy(initramfs_src, &initramfs)?;
    link_or_copy(root_src, &tree.join(ROOT_PATH))?;
    // The ESP's kernel and initramfs: links to the ones just staged (same
    // directory tree, so always linkable), stored once in the ISO.
    let esp_dir = tree.join(ESP_DIR);
    let esp_tree = esp::stage(
        &esp_dir,
        &vmlinuz,
        &initramfs,
        req.epoch,
        esp::Payloads::Link,
    )?;

    let root = MediaFile {
        path: ROOT_PATH.to_string(),
        size: std::fs::metadata(root_src)
            .with_context(|| format!("cannot stat {}", root_src.display()))?
            .len(),
        sha256: hashes[2].clone(),
    };
    let manifest = Media::describe(&version, root, &esp_dir, &esp_tree)?;
    let media_bytes = manifest.to_bytes()?;
    let media_sha256 = digest::bytes_sha256(&media_bytes);
    write(&tree.join(media::PATH), &media_bytes)?;
    let marker = marker_path(&media_sha256);
    write(&tree.join(&marker), format!("{media_sha256}\n").as_bytes())?;
    write(
        &tree.join("boot/grub/grub.cfg"),
        grub_cfg(&version, &volume_id, &media_sha256).as_bytes(),
    )?;

    // GRUB for BIOS (El Torito core image, also loaded by the stick's MBR)
    // and for UEFI, both with the early config.
    let early = work.join("early.cfg");
    write(&early, early_cfg(&marker).as_bytes())?;
    grub_mkimage(
        "i386-pc-eltorito",
        &early,
        &tree.join(ELTORITO),
        BIOS_MODULES,
    )?;
    let efi = work.join("BOOTX64.EFI");
    let efi_modules: Vec<&str> = esp::GRUB_MODULES
        .iter()
        .chain(EFI_EXTRA_MODULES)
        .copied()
        .collect();
    grub_mkimage("x86_64-efi", &early, &efi, &efi_modules)?;
    let efiboot = work.join("efiboot.img");
    let fat_id = u32::from_str_radix(media_sha256.get(..8).unwrap_or("4b45454c"), 16)
        .context("media.json's hash is not hex")?;
    efi_boot_image(&efiboot, &efi, fat_id, req.epoch, &work)?;
    if !Path::new(BOOT_HYBRID).is_file() {
        bail!("{BOOT_HYBRID} is missing: install grub-pc-bin (make deps)");
    }

    let out = req.out_dir.join(file_name(&version));
    let partial = req.out_dir.join(format!("{}.partial", file_name(&version)));
    if partial.exists() {
        std::fs::remove_file(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    let date = iso_date(req.epoch);
    let mut x = known::XORRISO.command()?;
    x.env("SOURCE_DATE_EPOCH", req.epoch.to_string())
        .env("TZ", "UTC")
        .args(["-as", "mkisofs", "-o"])
        .arg(&partial)
        .args(["-r", "-V", &volume_id])
        .arg(format!("--modification-date={date}"))
        .args(["--set_all_file_dates", &format!("={}", req.epoch)])
        // BIOS, as a disk: GRUB's MBR, which loads the El Torito core.
        .args(["--grub2-mbr", BOOT_HYBRID, "-partition_offset", "16"])
        .arg("--mbr-force-bootable")
        // UEFI, as a disk: the FAT as MBR partition 2, type 0xEF.
        .args(["-append_partition", "2", "0xef"])
        .arg(&efiboot)
        // El Torito: BIOS, then UEFI naming the same appended partition.
        .args(["-c", BOOT_CATALOG, "-b", ELTORITO, "-no-emul-boot"])
        .args([
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
        ])
        .args([
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:all::",
        ])
        .arg("-no-emul-boot")
        .arg(&tree);
    tools::run(&mut x)?;
    std::fs::rename(&partial, &out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    let size = std::fs::metadata(&out)
        .with_context(|| format!("cannot stat {}", out.display()))?
        .len();
    std::fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    Ok(Built {
        path: out,
        size,
        version,
        volume_id,
        media_sha256,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_volume_id_is_the_upper_cased_version_in_iso_9660_characters() {
        assert_eq!(volume_id("0.1.0"), "KEELSON_0_1_0");
        assert_eq!(volume_id("1.2.0-rc1"), "KEELSON_1_2_0_RC1");
        let long = volume_id("1.2.3-a-very-long-suffix-indeed-yes");
        assert_eq!(long, "KEELSON_1_2_3_A_VERY_LONG_SUFFIX");
        assert_eq!(long.len(), 32);
    }

    #[test]
    fn iso_dates_are_utc_calendar_dates() {
        assert_eq!(iso_date(0), "1970010100000000");
        assert_eq!(iso_date(1_704_067_200), "2024010100000000");
        assert_eq!(iso_date(951_868_799), "2000022923595900");
        assert_eq!(iso_date(4_107_542_400), "2100030100000000");
    }

    fn script_check(text: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grub.cfg");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new("grub-script-check")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_menu_boots_the_live_system_on_serial_then_on_the_screen() {
        let hash = "ab".repeat(32);
        let cfg = grub_cfg("0.1.0", "KEELSON_0_1_0", &hash);
        script_check(&cfg);
        script_check(&early_cfg(&marker_path(&hash)));
        assert!(cfg.contains("serial --unit=0 --speed=115200\n"));
        assert!(cfg.contains("terminal_output serial console\n"));
        assert!(cfg.contains("set timeout=2\n"));
        let media = format!("keelson.media=KEELSON_0_1_0 keelson.media_sha256={hash}");
        let entries: Vec<&str> = cfg.split("menuentry ").skip(1).collect();
        assert_eq!(entries.len(), 2);
        assert!(entries[0]
            .starts_with("\"Keelson 0.1.0 live (maintenance mode; install from here)\" {\n"));
        assert!(entries[0].contains(&format!(
            "linux /boot/vmlinuz console=tty0 console=ttyS0,115200 {media} panic=10\n"
        )));
        assert!(entries[1].starts_with(
            "\"Keelson 0.1.0 live (maintenance mode; install from here) (screen console)\" {\n"
        ));
        assert!(entries[1].contains(&format!(
            "linux /boot/vmlinuz console=ttyS0,115200 console=tty0 {media} panic=10\n"
        )));
        for e in entries {
            assert!(e.contains("initrd /boot/initramfs.img\n"));
        }
        assert_eq!(
            early_cfg(&marker_path(&hash)),
            "search --no-floppy --set=root --file /keelson/id-abababababababab\n\
             set prefix=($root)/boot/grub\n\
             configfile $prefix/grub.cfg\n"
        );
    }

    /// `out/boot` with three small payloads and `out/version.json`.
    fn fixture(version: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("out/boot");
        std::fs::create_dir_all(&boot).unwrap();
        for (i, name) in PAYLOAD_FILES.iter().enumerate() {
            let data: Vec<u8> = (0..(3000 * (i + 1))).map(|j| (j * (i + 7)) as u8).collect();
            std::fs::write(boot.join(name), data).unwrap();
        }
        if let Some(v) = version {
            std::fs::write(
                dir.path().join("out/version.json"),
                serde_json::json!({"version": v, "build_id": "b"}).to_string(),
            )
            .unwrap();
        }
        dir
    }

    fn xorriso(args: &[&str]) -> String {
        let out = std::process::Command::new("xorriso")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xorriso {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn extract(iso: &Path, path: &str, dir: &Path) -> Vec<u8> {
        let dst = dir.join(path.trim_start_matches('/').replace('/', "_"));
        xorriso(&[
            "-indev",
            iso.to_str().unwrap(),
            "-osirrox",
            "on",
            "-extract",
            path,
            dst.to_str().unwrap(),
        ]);
        std::fs::read(dst).unwrap()
    }

    #[test]
    fn the_iso_boots_bios_and_uefi_and_carries_what_media_json_says() {
        let f = fixture(Some("0.1.0"));
        let boot = f.path().join("out/boot");
        let req = |out: &str| Request {
            boot: boot.clone(),
            out_dir: f.path().join(out),
            epoch: 1_704_067_200,
        };
        let built = build(&req("out")).unwrap();
        assert_eq!(built.path, f.path().join("out/keelson-0.1.0.iso"));
        assert_eq!(built.volume_id, "KEELSON_0_1_0");
        assert!(!f.path().join("out/.image-build-iso").exists());
        let iso = built.path.to_str().unwrap();

        // Both El Torito boot images, the BIOS one at its path, and the
        // MBR with GRUB's hybrid boot code.
        let report = xorriso(&["-indev", iso, "-report_el_torito", "plain"]);
        assert!(
            report.contains("El Torito boot img :   1  BIOS  y   none"),
            "{report}"
        );
        assert!(
            report.contains("El Torito boot img :   2  UEFI  y   none"),
            "{report}"
        );
        assert!(
            report.contains("El Torito img path :   1  /boot/grub/i386-pc/eltorito.img"),
            "{report}"
        );
        let mkisofs = xorriso(&["-indev", iso, "-report_el_torito", "as_mkisofs"]);
        assert!(mkisofs.contains("-append_partition 2 0xef"), "{mkisofs}");
        assert!(mkisofs.contains("--grub2-mbr"), "{mkisofs}");
        assert!(mkisofs.contains("-V 'KEELSON_0_1_0'"), "{mkisofs}");

        // media.json round-trips and is what grub.cfg names.
        let x = tempfile::tempdir().unwrap();
        let iso = built.path.as_path();
        let media_bytes = extract(iso, "/keelson/media.json", x.path());
        let media_sha = digest::bytes_sha256(&media_bytes);
        assert_eq!(media_sha, built.media_sha256);
        let cfg = String::from_utf8(extract(iso, "/boot/grub/grub.cfg", x.path())).unwrap();
        assert_eq!(cfg, grub_cfg("0.1.0", "KEELSON_0_1_0", &media_sha));
        assert!(cfg.contains(&format!("keelson.media_sha256={media_sha} ")));
        let media: Media = serde_json::from_slice(&media_bytes).unwrap();
        assert_eq!(media.to_bytes().unwrap(), media_bytes);
        assert_eq!(media.version, "0.1.0");
        assert_eq!(media.volume_id, "KEELSON_0_1_0");
        let marker = extract(iso, &format!("/{}", marker_path(&media_sha)), x.path());
        assert_eq!(marker, format!("{media_sha}\n").as_bytes());

        // Every file it lists is on the ISO with that size and hash; the
        // payloads are the boot directory's bytes.
        let paths: Vec<&str> = media.esp.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "A/initramfs.img",
                "A/vmlinuz",
                "EFI/BOOT/BOOTX64.EFI",
                "grub/grub.cfg",
                "grub/grubenv"
            ]
        );
        assert_eq!(media.root.path, "keelson/rootfs.squashfs");
        let listed = media
            .esp
            .iter()
            .map(|e| (format!("{ESP_DIR}/{}", e.path), e));
        for (path, entry) in std::iter::once((media.root.path.clone(), &media.root)).chain(listed) {
            let bytes = extract(iso, &format!("/{path}"), x.path());
            assert_eq!(bytes.len() as u64, entry.size, "{path}");
            assert_eq!(digest::bytes_sha256(&bytes), entry.sha256, "{path}");
        }
        for (on_iso, name) in [
            ("/boot/vmlinuz", PAYLOAD_FILES[0]),
            ("/boot/initramfs.img", PAYLOAD_FILES[1]),
            ("/keelson/esp/A/vmlinuz", PAYLOAD_FILES[0]),
            ("/keelson/esp/A/initramfs.img", PAYLOAD_FILES[1]),
            ("/keelson/rootfs.squashfs", PAYLOAD_FILES[2]),
        ] {
            assert_eq!(
                extract(iso, on_iso, x.path()),
                std::fs::read(boot.join(name)).unwrap(),
                "{on_iso}"
            );
        }
        assert_eq!(
            extract(iso, "/keelson/esp/grub/grub.cfg", x.path()),
            esp::grub_cfg().as_bytes()
        );
        let dirs = xorriso(&[
            "-indev",
            iso.to_str().unwrap(),
            "-find",
            "/keelson/esp",
            "-type",
            "d",
        ]);
        assert!(dirs.contains("'/keelson/esp/B'"), "{dirs}");

        // Same inputs, same bytes (another output directory, and again in
        // the same one over the first ISO).
        let again = build(&req("elsewhere")).unwrap();
        assert_eq!(
            std::fs::read(&built.path).unwrap(),
            std::fs::read(&again.path).unwrap()
        );
        let third = build(&req("out")).unwrap();
        assert_eq!(
            std::fs::read(&third.path).unwrap(),
            std::fs::read(&again.path).unwrap()
        );
    }

    #[test]
    fn an_iso_needs_a_version_json_naming_a_sound_version() {
        let f = fixture(None);
        let req = Request {
            boot: f.path().join("out/boot"),
            out_dir: f.path().join("out"),
            epoch: 0,
        };
        let err = format!("{:#}", build(&req).unwrap_err());
        assert!(err.contains("version.json"), "{err}");
        let f = fixture(Some("1.0/../../x"));
        let req = Request {
            boot: f.path().join("out/boot"),
            out_dir: f.path().join("out"),
            epoch: 0,
        };
        let err = format!("{:#}", build(&req).unwrap_err());
        assert!(err.contains("version.json field version"), "{err}");
        assert!(!f.path().join("out/.image-build-iso").exists());
    }
}
