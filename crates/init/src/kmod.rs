//! Kernel modules without kmod's C library: read `modules.dep`,
//! `modules.softdep`, `modules.alias` and `modules.builtin` of a module tree,
//! resolve a module into an ordered load plan (soft "pre" dependencies, then
//! hard dependencies, then the module, then soft "post" dependencies), and
//! insert each `.ko` with `finit_module(2)`.
//!
//! Names are normalised like the kernel does (`-` and `_` are the same).
//! A soft dependency may name an alias (`crc32c`), resolved to every module
//! carrying it; soft dependencies that cannot be loaded are reported but do
//! not fail the module that asked for them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors from reading a module tree or loading a module.
#[derive(Debug, Error)]
pub enum KmodError {
    /// An index file of the module tree could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The module is neither in `modules.dep`, built in, nor an alias.
    #[error("module {name:?} is not in {dir}/modules.dep, modules.builtin or modules.alias")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The module tree.
        dir: PathBuf,
    },
    /// `finit_module(2)` refused the module.
    #[error("loading module {name} from {path}: {source}")]
    Insert {
        /// Module name.
        name: String,
        /// The `.ko` file.
        path: PathBuf,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// Module parameters cannot contain NUL bytes.
    #[error("parameters of module {name} contain a NUL byte")]
    BadParameters {
        /// Module name.
        name: String,
    },
}

/// Normalises a module name: `-` becomes `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a `.ko` path (`kernel/fs/ext4/ext4.ko` → `ext4`).
fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    deps: Vec<String>,
}

/// One step of a load plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Module name (normalised).
    pub name: String,
    /// The `.ko` to insert; `None` for a module built into the kernel.
    pub path: Option<PathBuf>,
    /// True for soft dependencies: failing them does not fail the plan.
    pub optional: bool,
}

/// The parsed index of one module tree (`/lib/modules/<release>`).
#[derive(Clone, Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    modules: HashMap<String, Entry>,
    pre: HashMap<String, Vec<String>>,
    post: HashMap<String, Vec<String>>,
    aliases: HashMap<String, Vec<String>>,
    /// Wildcard aliases (device modaliases), pattern → module.
    patterns: Vec<(String, String)>,
    builtin: HashSet<String>,
}

/// How a module ended up in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// finit_module succeeded.
    Loaded,
    /// It was already loaded (or built in).
    AlreadyThere,
}

/// The outcome of loading a module and its dependencies.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules inserted by this call, in order.
    pub loaded: Vec<String>,
    /// Optional (soft) dependencies that failed, with why.
    pub soft_failures: Vec<String>,
}

impl ModuleIndex {
    /// The module tree of the running kernel: `/lib/modules/$(uname -r)`.
    pub fn running_kernel() -> Result<ModuleIndex, KmodError> {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .map_err(|e| KmodError::Read {
                path: PathBuf::from("uname(2)"),
                source: e.into(),
            })?;
        ModuleIndex::open(&Path::new("/lib/modules").join(release))
    }

    /// Reads the index files of a module tree. `modules.dep` is required;
    /// `modules.softdep`, `modules.alias` and `modules.builtin` are read when
    /// present.
    pub fn open(dir: &Path) -> Result<ModuleIndex, KmodError> {
        let read = |name: &str, required: bool| -> Result<String, KmodError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(s),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(String::new())
                }
                Err(source) => Err(KmodError::Read { path, source }),
            }
        };
        let mut idx = ModuleIndex {
            dir: dir.to_path_buf(),
            ..ModuleIndex::default()
        };
        for line in read("modules.dep", true)?.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let module = module.trim();
            if module.is_empty() {
                continue;
            }
            let path = if module.starts_with('/') {
                PathBuf::from(module)
            } else {
                dir.join(module)
            };
            idx.modules.insert(
                name_of(module),
                Entry {
                    path,
                    deps: deps.split_whitespace().map(name_of).collect(),
                },
            );
        }
        for line in read("modules.softdep", false)?.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next().map(normalize) else {
                continue;
            };
            // Words before any `pre:`/`post:` are ignored, as kmod does.
            let mut into: Option<bool> = None;
            for w in words {
                match w {
                    "pre:" => into = Some(true),
                    "post:" => into = Some(false),
                    dep => {
                        let list = match into {
                            Some(true) => &mut idx.pre,
                            Some(false) => &mut idx.post,
                            None => continue,
                        };
                        list.entry(module.clone()).or_default().push(normalize(dep));
                    }
                }
            }
        }
        for line in read("modules.alias", false)?.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                continue;
            }
            let (Some(alias), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            if alias.contains(['*', '?', '[']) {
                idx.patterns.push((alias.to_string(), normalize(module)));
                continue;
            }
            idx.aliases
                .entry(normalize(alias))
                .or_default()
                .push(normalize(module));
        }
        for line in read("modules.builtin", false)?.lines() {
            let line = line.trim();
            if !line.is_empty() {
                idx.builtin.insert(name_of(line));
            }
        }
        Ok(idx)
    }

    /// Whether the name is a module, a built-in or an alias of this tree.
    pub fn knows(&self, name: &str) -> bool {
        let n = normalize(name);
        self.modules.contains_key(&n) || self.builtin.contains(&n) || self.aliases.contains_key(&n)
    }

    /// The ordered load plan for `name`: every step appears once, each
    /// module after everything it depends on.
    pub fn plan(&self, name: &str) -> Result<Vec<Step>, KmodError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&normalize(name), false, &mut seen, &mut out)?;
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        optional: bool,
        seen: &mut HashSet<String>,
        out: &mut Vec<Step>,
    ) -> Result<(), KmodError> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        if self.builtin.contains(name) {
            out.push(Step {
                name: name.to_string(),
                path: None,
                optional,
            });
            return Ok(());
        }
        let Some(entry) = self.modules.get(name) else {
            if let Some(targets) = self.aliases.get(name) {
                for t in targets {
                    // An alias is satisfied by any module carrying it.
                    let _ = self.visit(t, true, seen, out);
                }
                return Ok(());
            }
            return Err(KmodError::Unknown {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        };
        for soft in self.pre.get(name).into_iter().flatten() {
            if let Err(e) = self.visit(soft, true, seen, out) {
                tracing::debug!(module = name, soft, error = %e, "soft dependency unknown");
            }
        }
        for dep in entry.deps.iter().rev() {
            self.visit(dep, optional, seen, out)?;
        }
        out.push(Step {
            name: name.to_string(),
            path: Some(entry.path.clone()),
            optional,
        });
        for soft in self.post.get(name).into_iter().flatten() {
            if let Err(e) = self.visit(soft, true, seen, out) {
                tracing::debug!(module = name, soft, error = %e, "soft dependency unknown");
            }
        }
        Ok(())
    }

    /// Loads `name` with its dependencies; `params` apply to `name` only.
    /// Only PID 1 inserts modules; elsewhere every step is refused with
    /// `EPERM` so that tests can never change the host's kernel.
    pub fn load(
        &self,
        name: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<LoadReport, KmodError> {
        let target = normalize(name);
        let plan = self.plan(&target)?;
        let mut report = LoadReport::default();
        for step in plan {
            let Some(path) = &step.path else { continue };
            let p = if step.name == target {
                param_string(params)
            } else {
                String::new()
            };
            match insert(&step.name, path, &p) {
                Ok(Inserted::Loaded) => report.loaded.push(step.name.clone()),
                Ok(Inserted::AlreadyThere) => {}
                Err(e) if step.optional => report.soft_failures.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

/// Module directories coldplug may load from: the hardware a node needs
/// (network, virtio, block and storage controllers, the watchdog). Everything else a
/// device alias matches (sound, input, sensors, floppy…) is left alone.
pub const COLDPLUG_DIRS: &[&str] = &[
    "kernel/drivers/net/",
    "kernel/drivers/virtio/",
    "kernel/drivers/block/",
    "kernel/drivers/nvme/",
    "kernel/drivers/scsi/",
    "kernel/drivers/ata/",
    // The hardware watchdog (stage 1 arms it) and the chipset function
    // (lpc_ich) the Intel TCO timer hangs off.
    "kernel/drivers/watchdog/",
    "kernel/drivers/mfd/",
];

impl ModuleIndex {
    /// Modules whose alias patterns match a device's modalias.
    pub fn modules_for(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .patterns
            .iter()
            .filter(|(pattern, _)| glob_match(pattern.as_bytes(), modalias.as_bytes()))
            .map(|(_, m)| m.clone())
            .collect();
        out.extend(self.aliases.get(modalias).into_iter().flatten().cloned());
        out.sort();
        out.dedup();
        out
    }

    /// Whether a module lives in one of `dirs` of the tree.
    fn under(&self, name: &str, dirs: &[&str]) -> bool {
        self.modules.get(name).is_some_and(|e| {
            let rel = e.path.strip_prefix(&self.dir).unwrap_or(&e.path);
            let rel = rel.to_string_lossy();
            dirs.iter().any(|d| rel.starts_with(d))
        })
    }

    /// The modules (within [`COLDPLUG_DIRS`]) that drive the devices whose
    /// modaliases are given, sorted and without duplicates.
    pub fn coldplug_plan(&self, modaliases: &[String]) -> Vec<String> {
        let mut out: Vec<String> = modaliases
            .iter()
            .flat_map(|a| self.modules_for(a))
            .filter(|m| self.under(m, COLDPLUG_DIRS))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Loads the drivers of the devices present (what udev's coldplug
    /// does): reads every `modalias` under `<sys>/bus/*/devices/*`, loads
    /// the matching modules within [`COLDPLUG_DIRS`], and repeats while new
    /// devices appear (a bus driver reveals its children), at most 3 times.
    /// Returns the modules loaded and the failures.
    pub fn coldplug(&self, sys: &Path) -> (Vec<String>, Vec<String>) {
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        let mut tried = HashSet::new();
        for _ in 0..3 {
            let plan: Vec<String> = self
                .coldplug_plan(&read_modaliases(sys))
                .into_iter()
                .filter(|m| tried.insert(m.clone()))
                .collect();
            if plan.is_empty() {
                break;
            }
            for m in plan {
                match self.load(&m, &BTreeMap::new()) {
                    Ok(r) => loaded.extend(r.loaded),
                    Err(e) => failed.push(e.to_string()),
                }
            }
        }
        (loaded, failed)
    }
}

/// Every device modalias under `<sys>/bus/*/devices/*/modalias`.
pub fn read_modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(a) = std::fs::read_to_string(dev.path().join("modalias")) {
                let a = a.trim();
                if !a.is_empty() {
                    out.push(a.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// fnmatch(3)-style matching of kernel alias patterns: `*`, `?` and
/// bracket classes (`[38]`, `[a-z]`, `[!x]`).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => match class_match(&pattern[p..], text[t]) {
                    Some((true, len)) => {
                        p += len;
                        t += 1;
                        continue;
                    }
                    Some((false, _)) => {}
                    None if text[t] == b'[' => {
                        p += 1;
                        t += 1;
                        continue;
                    }
                    None => {}
                },
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the bracket class at the start of `pattern`;
/// returns (matched, length of the class), or `None` if it is not closed.
fn class_match(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let lo = pattern[i];
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

/// Formats module parameters as the kernel reads them (`a=1 b="x y"`).
pub fn param_string(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| {
            if v.contains(char::is_whitespace) {
                format!("{k}=\"{v}\"")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a module is in the running kernel (`/sys/module/<name>`).
pub fn is_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(normalize(name)).exists()
}

/// Inserts one `.ko` file with `finit_module(2)`.
fn insert(name: &str, path: &Path, params: &str) -> Result<Inserted, KmodError> {
    let err = |source: std::io::Error| KmodError::Insert {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    if !crate::sys::is_pid1() {
        return Err(err(std::io::Error::from_raw_os_error(libc::EPERM)));
    }
    if params.is_empty() && is_loaded(name) {
        return Ok(Inserted::AlreadyThere);
    }
    let file = File::open(path).map_err(err)?;
    let cparams = CString::new(params).map_err(|_| KmodError::BadParameters {
        name: name.to_string(),
    })?;
    match nix::kmod::finit_module(&file, &cparams, nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) => Ok(Inserted::Loaded),
        Err(nix::errno::Errno::EEXIST) => Ok(Inserted::AlreadyThere),
        Err(e) => Err(err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/lib/crc16.ko:\n\
             kernel/fs/mbcache.ko:\n\
             kernel/fs/jbd2/jbd2.ko:\n\
             kernel/lib/libcrc32c.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n\
             kernel/arch/x86/crypto/crc32c-intel.ko:\n\
             kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko kernel/net/ipv6/nf_defrag_ipv6.ko\n\
             kernel/net/ipv6/nf_defrag_ipv6.ko:\n\
             kernel/drivers/block/virtio_blk.ko:\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.softdep"),
            "# Soft dependencies extracted from modules themselves.\n\
             softdep libcrc32c pre: crc32c\n\
             softdep ext4 pre: crc32c post: nosuchthing\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.alias"),
            "alias crc32c crc32c_generic\nalias crc32c crc32c_intel\n\
             alias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\n",
        )
        .unwrap();
        d
    }

    fn names(plan: &[Step]) -> Vec<&str> {
        plan.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn plan_loads_soft_then_hard_dependencies_before_the_module() {
        let d = fixture();
        let idx = ModuleIndex::open(d.path()).unwrap();

        // nf_conntrack: libcrc32c needs crc32c (an alias of two modules)
        // loaded first, which modules.dep alone does not say.
        let plan = idx.plan("nf-conntrack").unwrap();
        assert_eq!(
            names(&plan),
            [
                "nf_defrag_ipv6",
                "crc32c_generic",
                "crc32c_intel",
                "libcrc32c",
                "nf_conntrack"
            ]
        );
        let libcrc = plan.iter().find(|s| s.name == "libcrc32c").unwrap();
        assert!(!libcrc.optional);
        assert_eq!(
            libcrc.path.as_deref(),
            Some(d.path().join("kernel/lib/libcrc32c.ko").as_path())
        );
        assert!(
            plan.iter()
                .find(|s| s.name == "crc32c_intel")
                .unwrap()
                .optional
        );

        // ext4: modules.dep order reversed (jbd2 first), soft pre first,
        // unknown soft post ignored, module itself last.
        let plan = idx.plan("ext4").unwrap();
        assert_eq!(
            names(&plan),
            [
                "crc32c_generic",
                "crc32c_intel",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );

        // Built-ins need no file; unknown names are a clear error.
        let plan = idx.plan("virtio").unwrap();
        assert_eq!(plan[0].path, None);
        let err = idx.plan("no_such_module").unwrap_err().to_string();
        assert!(
            err.contains("no_such_module") && err.contains("modules.dep"),
            "{err}"
        );
        assert!(idx.knows("crc32c") && idx.knows("virtio") && !idx.knows("zzz"));
    }

    #[test]
    fn device_aliases_pick_the_drivers_to_coldplug() {
        assert!(glob_match(
            b"virtio:d00000001v*",
            b"virtio:d00000001v00001AF4"
        ));
        assert!(!glob_match(
            b"virtio:d00000001v*",
            b"virtio:d00000002v00001AF4"
        ));
        assert!(glob_match(b"acpi*:PNP0A0[38]:*", b"acpi:PNP0A03:"));
        assert!(!glob_match(b"acpi*:PNP0A0[38]:*", b"acpi:PNP0A05:"));
        assert!(glob_match(
            b"pci:v*d*sv*sd*bc02sc00i*",
            b"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
        ));
        assert!(glob_match(b"a?c[!x]e", b"abcde") && !glob_match(b"a?c[!d]e", b"abcde"));
        assert!(glob_match(b"[a-c]*", b"beta") && !glob_match(b"[a-c]*", b"delta"));

        let d = fixture();
        std::fs::write(
            d.path().join("modules.alias"),
            "alias virtio:d00000001v* virtio_net\nalias virtio:d00000002v* virtio_blk\n\
             alias pci:v00008086d00007020sv*sd*bc*sc*i* uhci_hcd\nalias crc32c crc32c_generic\n",
        )
        .unwrap();
        let mut dep = std::fs::read_to_string(d.path().join("modules.dep")).unwrap();
        dep.push_str(
            "kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\nkernel/drivers/usb/host/uhci-hcd.ko:\n",
        );
        std::fs::write(d.path().join("modules.dep"), dep).unwrap();
        let idx = ModuleIndex::open(d.path()).unwrap();
        let devices = vec![
            "virtio:d00000001v00001AF4".to_string(),
            "virtio:d00000002v00001AF4".to_string(),
            "pci:v00008086d00007020sv00001AF4sd00001100bc0Csc03i00".to_string(),
            "cpu:type:x86,ven0000fam0006mod003F:feature:,0000".to_string(),
        ];
        // USB host controllers are not in the node's coldplug directories.
        assert_eq!(idx.coldplug_plan(&devices), ["virtio_blk", "virtio_net"]);
        let plan = idx.plan("virtio_net").unwrap();
        assert_eq!(names(&plan), ["failover", "virtio_net"]);

        // A fake sysfs with two of those devices.
        let sys = tempfile::tempdir().unwrap();
        for (bus, dev, alias) in [
            ("virtio", "virtio0", &devices[0]),
            ("pci", "0000:00:01.2", &devices[2]),
        ] {
            let p = sys.path().join("bus").join(bus).join("devices").join(dev);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("modalias"), format!("{alias}\n")).unwrap();
        }
        assert_eq!(
            read_modaliases(sys.path()),
            vec![devices[2].clone(), devices[0].clone()]
        );
        // Outside PID 1 nothing is inserted: the failure is reported.
        let (loaded, failed) = idx.coldplug(sys.path());
        assert!(loaded.is_empty());
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("failover"), "{failed:?}");
    }

    #[test]
    fn missing_modules_dep_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let err = ModuleIndex::open(d.path()).unwrap_err().to_string();
        assert!(err.contains("modules.dep"), "{err}");
    }

    #[test]
    fn loading_outside_pid1_never_touches_the_kernel() {
        let d = fixture();
        let idx = ModuleIndex::open(d.path()).unwrap();
        let err = idx
            .load("virtio_blk", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("virtio_blk"), "{err}");
    }

    #[test]
    fn parameters_are_quoted_when_they_hold_spaces() {
        let mut p = BTreeMap::new();
        p.insert("max_loop".to_string(), "8".to_string());
        p.insert("name".to_string(), "a b".to_string());
        assert_eq!(param_string(&p), "max_loop=8 name=\"a b\"");
    }
}
