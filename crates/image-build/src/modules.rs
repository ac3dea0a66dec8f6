//! Kernel modules: the index of Debian's kernel package (modules.dep,
//! modules.softdep, modules.alias, modules.builtin, made by `depmod -b`), the
//! closure of a wanted set (hard dependencies plus soft dependencies resolved
//! through aliases, e.g. `libcrc32c` pulls `crc32c_generic`), and installing
//! that closure into another tree with its own `depmod` output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::tools::{self, known};

/// Storage and filesystem modules stage 1 needs to find and mount the disk.
pub const STORAGE: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "ahci",
    "ata_piix",
    "sd_mod",
    "squashfs",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "nls_iso8859_1",
    "crc32c_generic",
    "crc32c_intel",
    "efivarfs",
];

/// Hardware watchdog drivers, in the initramfs too: stage 1 arms the
/// watchdog as soon as coldplug has loaded the driver of the machine's
/// device (`i6300esb` in QEMU; the Intel TCO timer behind `lpc_ich`, AMD's
/// `sp5100_tco`, ACPI's WDAT table on metal).
pub const WATCHDOG: &[&str] = &["i6300esb", "lpc_ich", "iTCO_wdt", "sp5100_tco", "wdat_wdt"];

/// Network boot: stage 1 fetches the root over HTTP and loop-mounts it, so
/// the initramfs carries the loop driver and the drivers of common NICs
/// (QEMU's virtio-net and e1000/e1000e, Intel, Realtek and Broadcom server
/// and desktop parts). All are modules in Debian's 6.1 kernel; their
/// dependencies (`libphy`, `mdio`, `dca`, ...) come with the closure. NICs
/// that need firmware files (some `bnxt_en`, `i40e` and `r8169` parts)
/// get none: the image ships no firmware packages.
pub const NETBOOT: &[&str] = &[
    "loop",
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "r8169",
    "tg3",
    "bnxt_en",
];

/// Boot media (the ISO): stage 1 reads the root from a CD drive (SATA:
/// `ahci` is in [`STORAGE`]) or a USB stick (xHCI/EHCI, usb-storage or
/// UAS), mounts ISO 9660 and loop-mounts the root it copied into RAM.
pub const MEDIA: &[&str] = &[
    "loop",
    "isofs",
    "sr_mod",
    "cdrom",
    "xhci_pci",
    "ehci_pci",
    "usb_storage",
    "uas",
];

/// Modules the node itself needs (containers, networking, iptables/nft,
/// NICs, watchdog, vsock), on top of [`STORAGE`], [`WATCHDOG`],
/// [`NETBOOT`] and the config's own.
pub const NODE: &[&str] = &[
    "overlay",
    "br_netfilter",
    "bridge",
    "veth",
    "nf_conntrack",
    "nf_nat",
    "ip_tables",
    "ip6_tables",
    "iptable_nat",
    "iptable_filter",
    "iptable_mangle",
    "iptable_raw",
    "ip6table_nat",
    "ip6table_filter",
    "ip6table_mangle",
    "ip6table_raw",
    "xt_MASQUERADE",
    "xt_conntrack",
    "xt_addrtype",
    "xt_mark",
    "xt_comment",
    "xt_multiport",
    "xt_nat",
    "xt_tcpudp",
    "xt_statistic",
    "xt_physdev",
    "xt_set",
    "xt_REDIRECT",
    "ipt_REJECT",
    "ip6t_REJECT",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_masq",
    "nft_nat",
    "nft_reject_inet",
    "nft_fib_inet",
    "ip_set",
    "ip_vs",
    "vxlan",
    "tun",
    "dummy",
    "virtio_net",
    "e1000",
    "vsock",
    "vmw_vsock_virtio_transport",
    "virtio_console",
    "fat",
    // The ACPI power button and the input events init reads it through.
    "button",
    "evdev",
];

/// Module name as the kernel knows it (`-` and `_` are the same).
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Everything known about one kernel's modules.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// Module name → (path relative to the modules dir, hard dependencies).
    pub modules: BTreeMap<String, (String, Vec<String>)>,
    /// Module name → soft dependency names (module names or aliases).
    pub softdeps: BTreeMap<String, Vec<String>>,
    /// Exact aliases → module names.
    pub aliases: BTreeMap<String, BTreeSet<String>>,
    /// Modules built into the kernel.
    pub builtin: BTreeSet<String>,
}

fn module_name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    canonical(file.trim_end_matches(".ko").trim_end_matches(".ko.xz"))
}

impl ModuleIndex {
    /// Parses depmod's text outputs.
    pub fn parse(dep: &str, softdep: &str, alias: &str, builtin: &str) -> Self {
        let mut idx = ModuleIndex::default();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(module_name_of_path).collect();
            idx.modules
                .insert(module_name_of_path(path), (path.to_string(), deps));
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let deps = words
                .filter(|w| !w.ends_with(':'))
                .map(str::to_string)
                .collect::<Vec<_>>();
            idx.softdeps
                .entry(canonical(name))
                .or_default()
                .extend(deps);
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                continue;
            }
            if let (Some(a), Some(m)) = (words.next(), words.next()) {
                if !a.contains(['*', '?', '[']) {
                    idx.aliases
                        .entry(a.to_string())
                        .or_default()
                        .insert(canonical(m));
                }
            }
        }
        idx.builtin = builtin.lines().map(module_name_of_path).collect();
        idx
    }

    /// Modules providing a soft dependency name (a module or an alias).
    fn providers(&self, name: &str) -> Vec<String> {
        let c = canonical(name);
        if self.modules.contains_key(&c) {
            return vec![c];
        }
        self.aliases
            .get(name)
            .map(|s| {
                s.iter()
                    .filter(|m| self.modules.contains_key(*m))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The wanted modules plus their hard and soft dependencies. Names that
    /// are built into the kernel are skipped; unknown names are an error.
    pub fn closure<S: AsRef<str>>(&self, wanted: &[S]) -> anyhow::Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let mut stack = Vec::new();
        let mut unknown = Vec::new();
        for w in wanted {
            let c = canonical(w.as_ref());
            if self.modules.contains_key(&c) {
                stack.push(c);
            } else if !self.builtin.contains(&c) {
                unknown.push(w.as_ref().to_string());
            }
        }
        if !unknown.is_empty() {
            bail!(
                "kernel modules not found (neither a module nor built in): {}",
                unknown.join(", ")
            );
        }
        while let Some(m) = stack.pop() {
            if !out.insert(m.clone()) {
                continue;
            }
            if let Some((_, deps)) = self.modules.get(&m) {
                stack.extend(deps.iter().cloned());
            }
            if let Some(soft) = self.softdeps.get(&m) {
                for s in soft {
                    stack.extend(self.providers(s));
                }
            }
        }
        Ok(out)
    }
}

/// The single kernel version under `tree/lib/modules`.
pub fn kernel_version(tree: &Path) -> anyhow::Result<String> {
    let dir = tree.join("lib/modules");
    let mut versions: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("no kernel modules in {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no kernel version directory in {}", dir.display()),
        many => bail!("several kernels in {}: {}", dir.display(), many.join(", ")),
    }
}

fn modules_dir(tree: &Path, kver: &str) -> PathBuf {
    tree.join("lib/modules").join(kver)
}

fn read(dir: &Path, name: &str) -> anyhow::Result<String> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
}

/// Runs `depmod -b tree kver`.
pub fn depmod(tree: &Path, kver: &str) -> anyhow::Result<()> {
    let mut cmd = known::DEPMOD.command()?;
    cmd.arg("-b").arg(tree).arg(kver);
    tools::run(&mut cmd)?;
    Ok(())
}

/// Indexes the modules of the unpacked kernel package (running depmod on
/// it once: Debian's package ships no modules.dep).
pub fn index(tree: &Path, kver: &str) -> anyhow::Result<ModuleIndex> {
    let dir = modules_dir(tree, kver);
    if !dir.join("modules.dep").is_file() {
        depmod(tree, kver)?;
    }
    Ok(ModuleIndex::parse(
        &read(&dir, "modules.dep")?,
        &read(&dir, "modules.softdep")?,
        &read(&dir, "modules.alias")?,
        &read(&dir, "modules.builtin")?,
    ))
}

/// Copies `names` from the kernel tree into `dest/lib/modules/<kver>` with
/// modules.order/builtin, then runs depmod there. Returns bytes copied.
pub fn install(
    idx: &ModuleIndex,
    tree: &Path,
    kver: &str,
    names: &BTreeSet<String>,
    dest: &Path,
) -> anyhow::Result<u64> {
    let from = modules_dir(tree, kver);
    let to = modules_dir(dest, kver);
    let mut bytes = 0;
    for n in names {
        let (rel, _) = idx
            .modules
            .get(n)
            .with_context(|| format!("module {n} is not in the kernel's modules.dep"))?;
        let target = to.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        bytes += std::fs::copy(from.join(rel), &target)
            .with_context(|| format!("cannot copy module {rel}"))?;
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        std::fs::copy(from.join(f), to.join(f)).with_context(|| format!("cannot copy {f}"))?;
    }
    depmod(dest, kver)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn closure_follows_hard_deps_and_soft_deps_through_aliases() {
        let dep = "kernel/net/netfilter/nf_nat.ko: kernel/net/netfilter/nf_conntrack.ko kernel/lib/libcrc32c.ko\n\
                   kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko\n\
                   kernel/lib/libcrc32c.ko:\n\
                   kernel/crypto/crc32c_generic.ko:\n\
                   kernel/arch/x86/crypto/crc32c-intel.ko:\n\
                   kernel/fs/overlayfs/overlay.ko:\n";
        let softdep = "# Soft dependencies\nsoftdep libcrc32c pre: crc32c\n";
        let alias = "alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\nalias crc32c crc32c_intel\nalias pci:v*d* virtio_pci\n";
        let builtin = "kernel/net/ipv6/ipv6.ko\n";
        let idx = ModuleIndex::parse(dep, softdep, alias, builtin);
        let got = idx.closure(&["nf-nat", "ipv6"]).unwrap();
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            [
                "crc32c_generic",
                "crc32c_intel",
                "libcrc32c",
                "nf_conntrack",
                "nf_nat"
            ]
        );
        let err = idx
            .closure(&["overlay", "no_such_mod"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_mod"), "{err}");
    }
}
