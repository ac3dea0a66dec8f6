//! The benchmark peer: the node a user would otherwise pick, Debian 12 with
//! systemd running the same kernel, containerd, runc, CNI plugins and
//! kubelet as a Keelson node, built by `bench/peer/build.sh` and booted
//! here under the same QEMU settings as a Keelson node (TCG, q35, OVMF,
//! virtio, restricted user network) next to a fresh test control plane.
//!
//! The peer boots its kernel directly (`-kernel`/`-initrd`, OVMF loads it;
//! no boot loader) from a whole-disk ext4 root. Per boot,
//! [`PeerDisk::prepare`] copies the built `root.ext4` and writes the
//! kubelet's kubeconfig (API server at [`GUEST_API_SERVER`], reached through
//! the same `keelson-relay` guestfwd as a Keelson node, with the node's
//! bearer token) and the cluster CA into the copy with `debugfs -w`: no
//! mount, no loop device. A qcow2 overlay goes on top, as for a Keelson
//! disk.
//!
//! [`PeerCluster::start`] boots it; [`PeerCluster::wait_ready`] waits for
//! the console markers the build installs (see [`markers`]) and the node
//! `Ready` in the API server, timing both from QEMU's start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::command::{self, CommandError};
use crate::control_plane::{ControlPlane, ControlPlaneError, GUEST_API_SERVER};
use crate::qemu::{GuestFwd, Vm, VmError, VmSpec};

/// The peer's node name (its hostname and kubelet's `--hostname-override`).
pub const NODE_NAME: &str = "peer";

/// The peer's kernel command line: root on the virtio disk, the serial
/// console Keelson's GRUB entry also uses, Debian's usual `ro`.
pub const CMDLINE: &str = "root=/dev/vda ro console=ttyS0,115200 panic=10";

/// Console markers printed by the peer's units (`bench/peer/build.sh`).
pub mod markers {
    /// `peer: kubelet started uptime=<s>`: kubelet was just executed.
    pub const KUBELET_STARTED: &str = r"peer: kubelet started uptime=([0-9.]+)";
    /// `peer: node ready uptime=<s>`: kubelet has been active for 6 s in one
    /// go, the condition of Keelson's `keelson: node ready`.
    pub const NODE_READY: &str = r"peer: node ready uptime=([0-9.]+)";
    /// `peer: pid1 rss_kib=<n> mem_used_kib=<m>`: systemd's RSS and the
    /// guest's MemTotal − MemAvailable, right after `node ready`.
    pub const PID1: &str = r"peer: pid1 rss_kib=(\d+) mem_used_kib=(\d+)";
}

/// Preparing, booting or measuring the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The built peer directory lacks a file.
    #[error("peer build {dir} has no {file}: run bench/peer/build.sh")]
    Missing {
        /// The directory given.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// A file in the work directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A host tool (cp, debugfs, qemu-img) failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// debugfs ran but the file read back differs from what was written.
    #[error("{file} in {image} does not hold what debugfs wrote (read back {got} bytes)")]
    Injected {
        /// The guest path.
        file: String,
        /// The filesystem image.
        image: PathBuf,
        /// Bytes read back.
        got: usize,
    },
    /// The control plane failed.
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    /// The control plane has no token for the peer.
    #[error("the control plane has no token for node {0}")]
    NoToken(String),
    /// The VM failed (or a marker did not come in time).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A console marker did not parse.
    #[error("console line {0:?} does not carry the expected numbers")]
    Marker(String),
    /// The node did not become Ready in the API server in time.
    #[error(
        "node {node} not Ready in the API server within {waited:?}; last console lines:\n{tail}"
    )]
    NotReady {
        /// The node name.
        node: String,
        /// How long was waited.
        waited: Duration,
        /// The last console lines.
        tail: String,
    },
}

/// A built peer: the output directory of `bench/peer/build.sh`.
#[derive(Clone, Debug)]
pub struct PeerImage {
    /// The whole-disk ext4 root filesystem.
    pub root_fs: PathBuf,
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel release (`kernel-version`), when the build recorded it.
    pub kernel_version: Option<String>,
}

impl PeerImage {
    /// Opens the build output `dir` (checks its files are there).
    pub fn open(dir: &Path) -> Result<PeerImage, PeerError> {
        let need = |file: &'static str| {
            let path = dir.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(PeerError::Missing {
                    dir: dir.to_path_buf(),
                    file,
                })
            }
        };
        Ok(PeerImage {
            root_fs: need("root.ext4")?,
            kernel: need("vmlinuz")?,
            initrd: need("initrd.img")?,
            kernel_version: std::fs::read_to_string(dir.join("kernel-version"))
                .ok()
                .map(|s| s.trim().to_string()),
        })
    }
}

/// The kubelet's kubeconfig: the API server at [`GUEST_API_SERVER`], the CA
/// at `/etc/kubernetes/pki/ca.crt`, the node's bearer token.
pub fn kubeconfig(token: &str) -> String {
    let (ip, port) = GUEST_API_SERVER;
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: keelson
  cluster:
    server: https://{ip}:{port}
    certificate-authority: /etc/kubernetes/pki/ca.crt
users:
- name: kubelet
  user:
    token: {token}
contexts:
- name: kubelet
  context:
    cluster: keelson
    user: kubelet
current-context: kubelet
"
    )
}

/// A disk made for one peer boot: a raw copy of `root.ext4` holding this
/// cluster's kubeconfig and CA, and the qcow2 overlay the VM writes to.
#[derive(Clone, Debug)]
pub struct PeerDisk {
    /// The raw copy (the overlay's backing file).
    pub raw: PathBuf,
    /// The overlay to boot.
    pub overlay: PathBuf,
}

impl PeerDisk {
    /// Copies `image`'s root filesystem into `dir` and writes
    /// `/etc/kubernetes/kubelet.kubeconfig` (mode 0600, with `token`) and
    /// `/etc/kubernetes/pki/ca.crt` (`ca_pem`) into the copy with
    /// `debugfs -w`, then reads both back to check them.
    pub fn prepare(
        image: &PeerImage,
        dir: &Path,
        ca_pem: &str,
        token: &str,
    ) -> Result<PeerDisk, PeerError> {
        let raw = dir.join("root.ext4");
        command::run(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(&image.root_fs)
                .arg(&raw),
        )?;
        let files = [
            ("/etc/kubernetes", "kubelet.kubeconfig", kubeconfig(token)),
            ("/etc/kubernetes/pki", "ca.crt", ca_pem.to_string()),
        ];
        let mut script = String::new();
        for (guest_dir, name, text) in &files {
            let host = dir.join(name);
            write_private(&host, text)?;
            // `rm` fails harmlessly when the file is not there yet.
            script.push_str(&format!(
                "cd {guest_dir}\nrm {name}\nwrite {} {name}\n",
                host.display()
            ));
        }
        let script_path = dir.join("inject.debugfs");
        std::fs::write(&script_path, &script).map_err(|source| PeerError::Io {
            path: script_path.clone(),
            source,
        })?;
        command::run(
            Command::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&script_path)
                .arg(&raw),
        )?;
        for (guest_dir, name, text) in &files {
            let file = format!("{guest_dir}/{name}");
            let got = command::run(
                Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("cat {file}"))
                    .arg(&raw),
            )?;
            if got != *text {
                return Err(PeerError::Injected {
                    file,
                    image: raw,
                    got: got.len(),
                });
            }
        }
        let overlay = dir.join("overlay.qcow2");
        command::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&raw)
                .arg(&overlay),
        )?;
        Ok(PeerDisk { raw, overlay })
    }
}

/// Writes `text` to `path` with mode 0600 (debugfs copies the host mode).
fn write_private(path: &Path, text: &str) -> Result<(), PeerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PeerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// The spec of a direct-kernel boot of the qcow2 `disk` with the default
/// VM settings of [`VmSpec::new`] (OVMF stays the firmware and loads the
/// kernel QEMU hands it) and the API server reachable at
/// [`GUEST_API_SERVER`] through `relay`. The disk is the same virtio-blk
/// device as [`Vm::boot`] makes, but attached here without `bootindex`:
/// QEMU gives bootindex 0 to the `-kernel` loader and refuses a second.
pub fn direct_kernel_spec(
    disk: &Path,
    work_dir: &Path,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    relay: &Path,
    api_port: u16,
) -> VmSpec {
    let mut spec = VmSpec::new(None, work_dir);
    spec.guestfwd.push(GuestFwd {
        guest_ip: GUEST_API_SERVER.0,
        guest_port: GUEST_API_SERVER.1,
        command: format!("{} {}", relay.display(), api_port),
    });
    spec.extra_args = vec![
        "-drive".into(),
        format!("file={},format=qcow2,if=none,id=disk0", disk.display()),
        "-device".into(),
        "virtio-blk-pci,drive=disk0".into(),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        cmdline.to_string(),
    ];
    spec
}

/// A peer booted next to its own control plane. Field order is drop order:
/// the VM goes first, then the control plane, then the work directory
/// (kept when `KEELSON_KEEP_WORK=1`).
#[derive(Debug)]
pub struct PeerCluster {
    /// The booted peer.
    pub vm: Vm,
    /// The control plane.
    pub cp: ControlPlane,
    /// The peer's disk.
    pub disk: PeerDisk,
    /// When QEMU was started.
    pub booted_at: Instant,
    work: Option<tempfile::TempDir>,
}

/// What [`PeerCluster::wait_ready`] measured, times from QEMU's start as
/// the harness saw them.
#[derive(Clone, Debug)]
pub struct PeerReady {
    /// `peer: kubelet started` on the console.
    pub kubelet_started: Duration,
    /// `peer: node ready` on the console (kubelet active 6 s).
    pub node_ready_marker: Duration,
    /// The guest's uptime at `node ready` (kernel start to marker).
    pub node_ready_uptime: Duration,
    /// Node `Ready` in the API server (first poll that saw it).
    pub api_ready: Duration,
    /// systemd's (PID 1) resident set size after `node ready`.
    pub pid1_rss_kib: u64,
    /// MemTotal − MemAvailable in the guest after `node ready`.
    pub mem_used_kib: u64,
}

impl PeerCluster {
    /// Starts a control plane with a token for [`NODE_NAME`] in a new work
    /// directory, prepares a disk for it and boots the peer; `relay` is the
    /// `keelson-relay` binary. Returns once QEMU runs.
    pub fn start(image: &PeerImage, relay: &Path) -> Result<PeerCluster, PeerError> {
        let work = tempfile::Builder::new()
            .prefix("keelson-peer-")
            .tempdir()
            .map_err(|source| PeerError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let cp_dir = work.path().join("control-plane");
        let vm_dir = work.path().join("vm");
        for dir in [&cp_dir, &vm_dir] {
            std::fs::create_dir_all(dir).map_err(|source| PeerError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        tracing::info!(work = %work.path().display(), "starting the control plane for the peer");
        let cp = ControlPlane::start(&cp_dir, &[NODE_NAME])?;
        let token = cp
            .node_token(NODE_NAME)
            .ok_or_else(|| PeerError::NoToken(NODE_NAME.into()))?
            .to_string();
        let disk = PeerDisk::prepare(image, &vm_dir, cp.ca_pem(), &token)?;
        let spec = direct_kernel_spec(
            &disk.overlay,
            &vm_dir,
            &image.kernel,
            &image.initrd,
            CMDLINE,
            relay,
            cp.api_port(),
        );
        let vm = Vm::boot(&spec)?;
        let booted_at = vm.started();
        Ok(PeerCluster {
            vm,
            cp,
            disk,
            booted_at,
            work: Some(work),
        })
    }

    /// The work directory (control plane and VM files, logs).
    pub fn work_dir(&self) -> &Path {
        self.work.as_ref().map_or(Path::new(""), |w| w.path())
    }

    /// Waits (up to `timeout` in all) for `peer: kubelet started`, then for
    /// both `peer: node ready` and the node `Ready` in the API server,
    /// whichever comes first, then for the PID 1 memory line.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<PeerReady, PeerError> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let started = self.vm.wait_for_line(markers::KUBELET_STARTED, left())?;
        let (marker, api_ready) = wait_marker_and_api(
            &mut self.vm,
            &self.cp,
            NODE_NAME,
            self.booted_at,
            markers::NODE_READY,
            left(),
        )?;
        let uptime: f64 = Regex::new(markers::NODE_READY)
            .ok()
            .and_then(|re| re.captures(&marker.text)?[1].parse().ok())
            .ok_or_else(|| PeerError::Marker(marker.text.clone()))?;
        let mem = self.vm.wait_for_line(markers::PID1, left())?;
        let caps = Regex::new(markers::PID1)
            .ok()
            .and_then(|re| {
                let c = re.captures(&mem.text)?;
                Some((c[1].parse().ok()?, c[2].parse().ok()?))
            })
            .ok_or_else(|| PeerError::Marker(mem.text.clone()))?;
        Ok(PeerReady {
            kubelet_started: started.at,
            node_ready_marker: marker.at,
            node_ready_uptime: Duration::from_secs_f64(uptime),
            api_ready,
            pid1_rss_kib: caps.0,
            mem_used_kib: caps.1,
        })
    }

    /// Presses the power button and waits up to `grace` for the guest to
    /// power off; if it does not, stops QEMU with QMP `quit`. Returns
    /// whether the guest powered off by itself and how long it took.
    pub fn power_off(&mut self, grace: Duration) -> Result<(bool, Duration), PeerError> {
        let start = Instant::now();
        self.vm.power_button()?;
        let clean = self.vm.wait_exit(grace)?.is_some();
        if !clean {
            self.vm.quit()?;
        }
        Ok((clean, start.elapsed()))
    }
}

impl Drop for PeerCluster {
    fn drop(&mut self) {
        if std::env::var("KEELSON_KEEP_WORK").is_ok_and(|v| v == "1") {
            if let Some(dir) = self.work.take() {
                eprintln!("keeping work directory {}", dir.keep().display());
            }
        }
    }
}

/// Waits until the console shows a line matching `marker` and node `node`
/// is `Ready` in the API server. The API server is polled on its own thread
/// (every 200 ms plus one kubectl call) while this one reads the console
/// (every 50 ms), so neither time waits on the other. Returns the marker
/// line and the time from `booted_at` to the first poll that saw the node
/// Ready. Used for the peer and for Keelson alike, so both are timed the
/// same way.
pub fn wait_marker_and_api(
    vm: &mut Vm,
    cp: &ControlPlane,
    node: &str,
    booted_at: Instant,
    marker: &str,
    timeout: Duration,
) -> Result<(crate::console::ConsoleLine, Duration), PeerError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let deadline = Instant::now() + timeout;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let poller = scope.spawn(|| -> Result<Option<Duration>, ControlPlaneError> {
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if cp.node_ready(node)? {
                    return Ok(Some(booted_at.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(None)
        });
        let line = vm.wait_for_line(marker, deadline.saturating_duration_since(Instant::now()));
        if line.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let api = poller.join();
        let line = line?;
        match api {
            Ok(Ok(Some(at))) => Ok((line, at)),
            Ok(Ok(None)) => Err(PeerError::NotReady {
                node: node.to_string(),
                waited: timeout,
                tail: vm.console_tail(40),
            }),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PeerError::Marker("the API poller panicked".into())),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A small ext4 "root" laid out as build.sh lays out the peer's, with a
    /// stale kubeconfig that the injection must replace.
    fn tiny_peer(dir: &Path) -> PeerImage {
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("etc/kubernetes/pki")).unwrap();
        std::fs::write(tree.join("etc/kubernetes/kubelet.kubeconfig"), "stale").unwrap();
        let root_fs = dir.join("root.ext4");
        command::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-d"])
                .arg(&tree)
                .arg(&root_fs)
                .arg("8M"),
        )
        .unwrap();
        PeerImage {
            root_fs,
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            kernel_version: None,
        }
    }

    #[test]
    fn prepare_writes_this_clusters_access_into_a_copy_only() {
        let t = tempfile::tempdir().unwrap();
        let image = tiny_peer(t.path());
        let work = t.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let disk = PeerDisk::prepare(&image, &work, ca, "tok123").unwrap();

        let cat = |fs: &Path, file: &str| {
            command::run(
                Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("cat {file}"))
                    .arg(fs),
            )
            .unwrap()
        };
        let kubeconfig = cat(&disk.raw, "/etc/kubernetes/kubelet.kubeconfig");
        assert!(kubeconfig.contains("token: tok123"), "{kubeconfig}");
        assert!(
            kubeconfig.contains("server: https://10.0.2.100:6443"),
            "{kubeconfig}"
        );
        assert_eq!(cat(&disk.raw, "/etc/kubernetes/pki/ca.crt"), ca);
        // The kubeconfig holds a credential: readable by root only.
        let stat = command::run(
            Command::new("debugfs")
                .arg("-R")
                .arg("stat /etc/kubernetes/kubelet.kubeconfig")
                .arg(&disk.raw),
        )
        .unwrap();
        assert!(stat.contains("Mode:  0600"), "{stat}");
        // The built image is left as it was, for the next boot.
        assert_eq!(
            cat(&image.root_fs, "/etc/kubernetes/kubelet.kubeconfig"),
            "stale"
        );
        assert!(disk.overlay.is_file());
    }

    #[test]
    fn open_names_the_missing_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("root.ext4"), "").unwrap();
        let err = PeerImage::open(t.path()).unwrap_err().to_string();
        assert!(err.contains("vmlinuz"), "{err}");
    }
}
