//! `make bench`: writes `bench/results.md`.
//!
//! `bench --parse-results FILE --out FILE [--boots N] [--image RAW]
//! [--peer DIR]`: includes the machine-config parse benchmark fragment
//! (FILE, made by machine-config's `parse_bench` example), the image's size
//! and its SYSTEM-A squashfs size (from the squashfs superblock inside the
//! image; `--image`, default `out/keelson.raw`), then boots N times (default
//! 3) each of, interleaved, every boot next to a fresh control plane:
//!
//! - Keelson as a user boots it: OVMF, GRUB from the EFI partition;
//! - Keelson with its kernel and initramfs (read from the image's EFI
//!   partition, slot A) handed to QEMU directly, with GRUB's command line;
//! - with `--peer DIR` (the output of `bench/peer/build.sh`), the Debian 12
//!   + systemd peer ([`keelson_tests::peer`]), also booted directly.
//!
//! Per boot: QEMU start → the node-ready console marker (kubelet running
//! for 6 s), → node `Ready` in the API server (polled on its own thread),
//! the guest's own kernel-to-marker time, PID 1's RSS after the marker, and
//! for Keelson init's boot phases; medians, and the peer's ratio to the
//! like-for-like Keelson direct-kernel boot.
//!
//! Every boot then goes on (issue 6): N pods (`--pods 0,3,10`, boot `i`
//! of each variant taking entry `i mod len`) that stop promptly on SIGTERM
//! are created and waited for until `Running`, and the shutdown is timed
//! from the request to QEMU's exit: `nodectl shutdown` for Keelson's GRUB
//! boots, the ACPI power button for its direct boots and for the peer
//! (systemd-logind's `poweroff.target`, the path of `shutdown -h now`).
//! Afterwards every ext4 filesystem of the disk is checked for
//! `needs_recovery`; Keelson's shutdown steps come from init's console
//! lines. Keelson nodes boot with API certificates from a PKI made by the
//! real `nodectl gen secrets`, their API port forwarded. The first Keelson
//! boot also times (issue 5) five live sysctl changes through
//! `nodectl apply-config --mode no-reboot`, to the command's return and to
//! `nodectl read` showing the value. With `--drain-pods N` (default 10; 0
//! for none), one more Keelson direct-kernel boot measures the node's own
//! drain of N evictable pods at shutdown (issue 9, see `drain.rs`). Exits
//! non-zero if a boot fails.
//!
//! `bench upgrade --out FILE`: the A/B upgrade benchmark alone (issue 7,
//! see `upgrade.rs`), its own section written to FILE.
//!
//! `bench install --out FILE [--runs N]`: the boot ISO's sizes and power-on
//! to installed-and-running from it (issue 8, see `install.rs`), its own
//! section written to FILE.

mod drain;
mod install;
mod upgrade;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keelson_tests::control_plane::{free_port, ControlPlane, GUEST_API_SERVER};
use keelson_tests::disk::{dumpe2fs_header, TestDisk, DEFAULT_DISK_SIZE};
use keelson_tests::node_config::{self, ClusterAccess};
use keelson_tests::nodectl::{Nodectl, Operator};
use keelson_tests::peer::{self, PeerCluster, PeerImage};
use keelson_tests::qemu::{GuestFwd, Vm, VmSpec};
use keelson_tests::scenario::{markers, service_pod_yaml, MACHINE_API_PORT};
use keelson_tests::{artifacts, gpt};
use machine_config::schema::Certificates;
use machine_config::MachineConfig;
use regex::Regex;

/// Bound on one boot reaching node-ready and API Ready.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

struct Args {
    parse_results: PathBuf,
    out: PathBuf,
    boots: usize,
    image: Option<PathBuf>,
    peer: Option<PathBuf>,
    /// `--only grub,direct,peer`: boot only these (for development).
    only: Option<Vec<String>>,
    /// `--pods 0,3,10`: the running-pod counts of the shutdown benchmark,
    /// boot `i` of each variant taking entry `i mod len`.
    pods: Vec<usize>,
    /// `--drain-pods N`: evictable pods of the drain boot (0: no drain boot).
    drain_pods: usize,
}

fn parse_args() -> Result<Args> {
    let mut parse_results = None;
    let mut out = None;
    let mut boots = 3;
    let mut image = None;
    let mut peer = None;
    let mut only = None;
    let mut pods = vec![0, 3, 10];
    let mut drain_pods = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--parse-results" => parse_results = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--image" => image = Some(PathBuf::from(value()?)),
            "--peer" => peer = Some(PathBuf::from(value()?)),
            "--only" => {
                only = Some(value()?.split(',').map(str::to_string).collect());
            }
            "--pods" => {
                pods = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--pods takes counts like 0,3,10")?;
                if pods.is_empty() {
                    bail!("--pods takes at least one count");
                }
            }
            "--drain-pods" => {
                drain_pods = value()?
                    .parse()
                    .context("--drain-pods takes a number of pods")?;
            }
            "--boots" => {
                boots = value()?
                    .parse()
                    .context("--boots takes a positive number")?;
                if boots == 0 {
                    bail!("--boots takes a positive number");
                }
            }
            other => bail!("unknown argument {other:?}; usage: bench --parse-results FILE --out FILE [--boots N] [--image RAW] [--peer DIR] [--only grub,direct,peer] [--pods 0,3,10] [--drain-pods 10]"),
        }
    }
    Ok(Args {
        parse_results: parse_results.context("--parse-results FILE is required")?,
        out: out.context("--out FILE is required")?,
        boots,
        image,
        peer,
        only,
        pods,
        drain_pods,
    })
}

/// One boot's measurements.
struct Boot {
    /// QEMU start → the node-ready marker on the console.
    node_ready_marker: Duration,
    /// QEMU start → node `Ready` in the API server.
    api_ready: Duration,
    /// Kernel start → the marker, by the guest's clock.
    since_kernel_ms: u64,
    /// Keelson init's boot phases (empty for the peer).
    phases: Vec<(String, u64)>,
    /// PID 1's RSS after the marker (init, or systemd).
    init_rss_kib: u64,
    /// The peer only: QEMU start → `peer: kubelet started`.
    kubelet_started: Option<Duration>,
    /// The peer only: MemTotal − MemAvailable after the marker.
    mem_used_kib: Option<u64>,
    /// The shutdown that ended this boot, with its pods.
    shutdown: ShutdownRun,
    /// Keelson's live sysctl changes, when this boot measured them.
    sysctl: Vec<SysctlRun>,
    /// The node's own drain, when this boot was the drain boot.
    drain: Option<drain::DrainRun>,
}

/// What is booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// Keelson: OVMF, then GRUB from the EFI partition.
    KeelsonGrub,
    /// Keelson: OVMF loads the kernel QEMU was given.
    KeelsonDirect,
    /// Debian 12 + systemd: OVMF loads the kernel QEMU was given.
    Peer,
}

impl Variant {
    fn key(self) -> &'static str {
        match self {
            Variant::KeelsonGrub => "grub",
            Variant::KeelsonDirect => "direct",
            Variant::Peer => "peer",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::KeelsonGrub => "Keelson (OVMF + GRUB)",
            Variant::KeelsonDirect => "Keelson (direct kernel)",
            Variant::Peer => "Debian 12 + systemd (direct kernel)",
        }
    }
}

/// Keelson's kernel and initramfs from the image's EFI partition, and the
/// command line GRUB gives them.
struct DirectKernel {
    _dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
}

fn main() -> ExitCode {
    keelson_tests::init_logging();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((first, rest)) if first == "upgrade" => upgrade::main(rest),
        Some((first, rest)) if first == "install" => install::main(rest),
        _ => parse_args().and_then(|args| run(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let parse_fragment = std::fs::read_to_string(&args.parse_results)
        .with_context(|| format!("reading {}", args.parse_results.display()))?;
    let image = match &args.image {
        Some(path) => path.clone(),
        None => artifacts::disk_image()?,
    };
    let relay = artifacts::relay_binary()?;
    let sizes = image_sizes(&image)?;
    let direct = direct_kernel(&image)?;
    let peer = match &args.peer {
        Some(dir) => Some(PeerImage::open(dir)?),
        None => None,
    };

    let mut variants = vec![Variant::KeelsonGrub, Variant::KeelsonDirect];
    if peer.is_some() {
        variants.push(Variant::Peer);
    }
    if let Some(only) = &args.only {
        variants.retain(|v| only.iter().any(|o| o == v.key()));
        if variants.is_empty() {
            bail!("--only {only:?} selects nothing (grub, direct, peer with --peer)");
        }
    }
    // The operator's PKI (real `nodectl gen secrets`) and the node's API
    // certificates, for `nodectl shutdown` and `apply-config`.
    let secrets = tempfile::Builder::new()
        .prefix("keelson-bench-secrets-")
        .tempdir()?;
    let operator = Operator::new(secrets.path())?;
    let certificates = operator.node_certificates(KEELSON_NODE)?;
    let keelson = KeelsonSetup {
        image: &image,
        relay: &relay,
        operator: &operator,
        certificates: &certificates,
    };
    // Interleaved, so that load from other work on the host spreads over
    // every variant alike.
    let mut boots: BTreeMap<usize, Vec<Boot>> = BTreeMap::new();
    let mut sysctl_done = false;
    for i in 0..args.boots {
        for (v, variant) in variants.iter().enumerate() {
            let pods = args.pods[i % args.pods.len()];
            eprintln!(
                "boot {}/{}: {} (then {pods} pods and a shutdown) ...",
                i + 1,
                args.boots,
                variant.label()
            );
            let boot = match (variant, &peer) {
                (Variant::Peer, Some(peer)) => measure_peer(peer, &relay, pods),
                (Variant::KeelsonDirect, _) => {
                    let plan = Plan {
                        pods,
                        trigger: Trigger::PowerButton,
                        sysctl: !sysctl_done,
                        drain: false,
                    };
                    sysctl_done = true;
                    measure_keelson(&keelson, Some(&direct), plan)
                }
                _ => {
                    let plan = Plan {
                        pods,
                        trigger: Trigger::Nodectl,
                        sysctl: !sysctl_done,
                        drain: false,
                    };
                    sysctl_done = true;
                    measure_keelson(&keelson, None, plan)
                }
            }
            .with_context(|| format!("boot {} of {}", i + 1, variant.label()))?;
            eprintln!(
                "boot {}: {}: node ready marker {:.1}s, API Ready {:.1}s, PID 1 RSS {} KiB",
                i + 1,
                variant.label(),
                boot.node_ready_marker.as_secs_f64(),
                boot.api_ready.as_secs_f64(),
                boot.init_rss_kib
            );
            let sd = &boot.shutdown;
            eprintln!(
                "boot {}: {}: {} pods Running after {:.1}s; {} → power-off {:.1}s (powered off: {}); needs_recovery on {} of {}",
                i + 1,
                variant.label(),
                sd.pods,
                sd.pods_running.as_secs_f64(),
                sd.trigger.label(),
                sd.took.as_secs_f64(),
                sd.powered_off,
                sd.recovery.iter().filter(|(_, r)| *r).count(),
                sd.recovery.len()
            );
            boots.entry(v).or_default().push(boot);
        }
    }
    // The drain boot: its shutdown includes a drain, so it stays out of the
    // boot and shutdown tables above.
    let drain_run = if args.drain_pods > 0 {
        eprintln!(
            "drain boot: {} with {} evictable pods and a drain identity ...",
            Variant::KeelsonDirect.label(),
            args.drain_pods
        );
        let plan = Plan {
            pods: args.drain_pods,
            trigger: Trigger::PowerButton,
            sysctl: false,
            drain: true,
        };
        let boot = measure_keelson(&keelson, Some(&direct), plan).context("the drain boot")?;
        let run = boot.drain.context("the drain boot measured no drain")?;
        eprintln!(
            "drain boot: outcome {}, {} evicted, drain step {:.1}s, power-off after {:.1}s",
            run.outcome,
            run.evicted,
            run.step_ms as f64 / 1000.0,
            run.shutdown.as_secs_f64()
        );
        Some(run)
    } else {
        None
    };
    let results: Vec<(Variant, Vec<Boot>)> = variants
        .iter()
        .enumerate()
        .map(|(v, variant)| (*variant, boots.remove(&v).unwrap_or_default()))
        .collect();

    let mut report = render(
        &parse_fragment,
        &image,
        &sizes,
        &direct,
        peer.as_ref(),
        &results,
    )?;
    if let Some(run) = &drain_run {
        drain::render(&mut report, run)?;
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, report).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// Image file size, its allocated bytes, SYSTEM-A partition size and the
/// squashfs size inside it.
struct Sizes {
    image_bytes: u64,
    image_allocated: u64,
    system_partition: u64,
    squashfs_bytes: u64,
}

fn image_sizes(image: &Path) -> Result<Sizes> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(image).with_context(|| format!("stat {}", image.display()))?;
    let system = gpt::find_partition(image, "SYSTEM-A")?;
    // squashfs superblock: magic "hsqs" at 0, bytes_used (u64 LE) at 40.
    let mut sb = [0u8; 48];
    let mut f = File::open(image)?;
    f.seek(SeekFrom::Start(system.offset))?;
    f.read_exact(&mut sb)?;
    if &sb[0..4] != b"hsqs" {
        bail!(
            "SYSTEM-A of {} holds no squashfs (no hsqs magic)",
            image.display()
        );
    }
    let mut used = [0u8; 8];
    used.copy_from_slice(&sb[40..48]);
    Ok(Sizes {
        image_bytes: meta.len(),
        image_allocated: meta.blocks() * 512,
        system_partition: system.size,
        squashfs_bytes: u64::from_le_bytes(used),
    })
}

/// Reads slot A's kernel and initramfs from the image's EFI partition
/// (mtools at the partition's offset, no mount).
fn direct_kernel(image: &Path) -> Result<DirectKernel> {
    let esp = gpt::find_partition(image, "EFI")?;
    let dir = tempfile::Builder::new()
        .prefix("keelson-bench-kernel-")
        .tempdir()?;
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initramfs.img");
    for (src, dest) in [("::/A/vmlinuz", &kernel), ("::/A/initramfs.img", &initrd)] {
        let out = Command::new("mcopy")
            .arg("-n")
            .arg("-i")
            .arg(format!("{}@@{}", image.display(), esp.offset))
            .arg(src)
            .arg(dest)
            .output()
            .context("running mcopy (Debian's mtools)")?;
        if !out.status.success() {
            bail!(
                "mcopy {src} from the EFI partition of {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(DirectKernel {
        _dir: dir,
        kernel,
        initrd,
        // What GRUB's menu entry passes (crates/image-build/src/esp.rs).
        cmdline: "console=ttyS0,115200 keelson.slot=A panic=10".into(),
    })
}

/// The Keelson node name of every benchmark boot.
const KEELSON_NODE: &str = "keelson-bench";

/// Bound on N pods reaching `Running` after the node is Ready.
const PODS_TIMEOUT: Duration = Duration::from_secs(420);

/// Bound on a shutdown, request to QEMU's exit; past it QEMU is stopped.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// The live sysctl of the apply-config measurement.
const SYSCTL: &str = "net.core.somaxconn";
const SYSCTL_PATH: &str = "/proc/sys/net/core/somaxconn";
/// Repetitions of the live sysctl change.
const SYSCTL_REPS: usize = 5;

/// What every Keelson boot shares.
struct KeelsonSetup<'a> {
    image: &'a Path,
    relay: &'a Path,
    operator: &'a Operator,
    certificates: &'a Certificates,
}

/// How a shutdown is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// `nodectl shutdown` over mTLS (Keelson).
    Nodectl,
    /// The ACPI power button, QMP `system_powerdown` (Keelson's init, or
    /// the peer's systemd-logind, which starts `poweroff.target`: the same
    /// path as `shutdown -h now`).
    PowerButton,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Nodectl => "`nodectl shutdown`",
            Trigger::PowerButton => "ACPI power button",
        }
    }
}

/// What a Keelson boot does after its boot measurements.
#[derive(Clone, Copy, Debug)]
struct Plan {
    pods: usize,
    trigger: Trigger,
    /// Measure the live sysctl change first.
    sysctl: bool,
    /// Give the node a drain identity before the pods, and read the drain
    /// from the shutdown (the drain boot).
    drain: bool,
}

/// One shutdown with N running pods.
struct ShutdownRun {
    pods: usize,
    trigger: Trigger,
    /// Creating the pods → all of them `Running`.
    pods_running: Duration,
    /// The request (command start, or the QMP call) → QEMU exited.
    took: Duration,
    /// False when QEMU had to be stopped after [`SHUTDOWN_TIMEOUT`].
    powered_off: bool,
    /// Keelson: init's `shutdown done took_ms` and `forced`.
    init_done: Option<(u64, bool)>,
    /// Keelson: init's steps, `(name, outcome, took_ms)`.
    steps: Vec<(String, String, u64)>,
    /// Each ext4 filesystem checked afterwards and whether its journal
    /// still needed recovery.
    recovery: Vec<(&'static str, bool)>,
}

/// One live sysctl change through `nodectl apply-config --mode no-reboot`.
struct SysctlRun {
    value: String,
    /// Command start → the command returned.
    returned: Duration,
    /// Command start → `nodectl read` first showed the value.
    visible: Duration,
}

/// A Keelson node booted for the benchmark. Field order is drop order.
struct KeelsonNode {
    vm: Vm,
    cp: ControlPlane,
    disk: TestDisk,
    work: tempfile::TempDir,
}

fn measure_keelson(
    setup: &KeelsonSetup<'_>,
    direct: Option<&DirectKernel>,
    plan: Plan,
) -> Result<Boot> {
    let node = KEELSON_NODE;
    let work = tempfile::Builder::new()
        .prefix("keelson-bench-")
        .tempdir()?;
    let cp_dir = work.path().join("control-plane");
    let vm_dir = work.path().join("vm");
    std::fs::create_dir_all(&cp_dir)?;
    std::fs::create_dir_all(&vm_dir)?;
    let cp = ControlPlane::start(&cp_dir, &[node])?;
    let access = ClusterAccess {
        node_name: node.to_string(),
        ca_pem: cp.ca_pem().to_string(),
        token: cp
            .node_token(node)
            .context("the control plane made no token for the node")?
            .to_string(),
    };
    let mut config = node_config::test_node_config(&access)?;
    config.machine.certificates = Some(setup.certificates.clone());
    let yaml = node_config::to_yaml(&config)?;
    let disk = TestDisk::prepare(setup.image, &vm_dir, Some(&yaml), DEFAULT_DISK_SIZE)?;
    let api_port = free_port()?;
    let mut spec = match direct {
        Some(k) => peer::direct_kernel_spec(
            &disk.overlay,
            &vm_dir,
            &k.kernel,
            &k.initrd,
            &k.cmdline,
            setup.relay,
            cp.api_port(),
        ),
        None => {
            let mut spec = VmSpec::new(Some(disk.overlay.clone()), &vm_dir);
            spec.guestfwd.push(GuestFwd {
                guest_ip: GUEST_API_SERVER.0,
                guest_port: GUEST_API_SERVER.1,
                command: format!("{} {}", setup.relay.display(), cp.api_port()),
            });
            spec
        }
    };
    spec.hostfwd.push((api_port, MACHINE_API_PORT));
    let vm = Vm::boot(&spec)?;
    let booted_at = vm.started();
    let mut n = KeelsonNode { vm, cp, disk, work };

    let (ready, api_ready) = peer::wait_marker_and_api(
        &mut n.vm,
        &n.cp,
        node,
        booted_at,
        markers::NODE_READY,
        BOOT_TIMEOUT,
    )?;
    let ready_caps = Regex::new(markers::NODE_READY)?
        .captures(&ready.text)
        .context("node ready line")?;
    let since_kernel_ms: u64 = ready_caps[3].parse()?;
    let rss =
        n.vm.wait_for_line(markers::INIT_RSS, Duration::from_secs(30))?;
    let init_rss_kib: u64 = Regex::new(markers::INIT_RSS)?
        .captures(&rss.text)
        .context("rss line")?[1]
        .parse()?;
    // GRUB adds BOOT_IMAGE= to the command line; a direct boot must not
    // have gone through it (nor a GRUB boot around it).
    let cmdline_re = Regex::new(r"Kernel command line: (.*)")?;
    let cmdline =
        n.vm.console()
            .all_matching(&cmdline_re)
            .first()
            .map(|l| l.text.clone())
            .context("no `Kernel command line:` on the console")?;
    if cmdline.contains("BOOT_IMAGE=") == direct.is_some() {
        bail!(
            "booted the wrong way: {cmdline:?} (direct kernel: {})",
            direct.is_some()
        );
    }
    let phase_re = Regex::new(markers::PHASE)?;
    let phases =
        n.vm.console()
            .all_matching(&phase_re)
            .iter()
            .filter_map(|l| {
                let c = phase_re.captures(&l.text)?;
                Some((c[1].to_string(), c[2].parse().ok()?))
            })
            .collect();

    // The machine API: wait for apid to answer over mTLS.
    let endpoint = format!("127.0.0.1:{api_port}");
    let nodectl = Nodectl {
        bin: setup.operator.bin.clone(),
        endpoint: endpoint.clone(),
    };
    let admin = setup
        .operator
        .contexts(n.work.path(), "admin", "admin", &endpoint)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = nodectl.run(Some(&admin), &["version"]);
        if r.code == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the machine API did not answer in 120 s: {r:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let sysctl = if plan.sysctl {
        measure_sysctl(&nodectl, &admin, &config, n.work.path())?
    } else {
        Vec::new()
    };

    if plan.drain {
        drain::give_identity(&nodectl, &admin, &n.cp, &config, node, n.work.path())?;
    }
    // N pods, then the shutdown.
    let pods_running = start_pods(&n.cp, node, plan.pods)?;
    let start = Instant::now();
    match plan.trigger {
        Trigger::Nodectl => {
            let r = nodectl.run(Some(&admin), &["shutdown"]);
            if r.code != 0 {
                bail!("nodectl shutdown failed: {r:?}");
            }
        }
        Trigger::PowerButton => n.vm.power_button()?,
    }
    if plan.drain {
        // Read the console while the drain runs, so that its lines carry
        // the time they appeared (waiting for QEMU's exit reads it once).
        n.vm.wait_for_line(r"keelson: drain done ", SHUTDOWN_TIMEOUT)?;
    }
    let exited = n.vm.wait_exit(SHUTDOWN_TIMEOUT)?.is_some();
    let took = start.elapsed();
    if !exited {
        eprintln!(
            "the node did not power off in {SHUTDOWN_TIMEOUT:?}; stopping QEMU. Console:\n{}",
            n.vm.console_tail(30)
        );
        n.vm.quit()?;
    }
    let step_re = Regex::new(r"keelson: shutdown step=(\S+) outcome=(\S+) took_ms=(\d+)")?;
    let steps =
        n.vm.console()
            .all_matching(&step_re)
            .iter()
            .filter_map(|l| {
                let c = step_re.captures(&l.text)?;
                Some((c[1].to_string(), c[2].to_string(), c[3].parse().ok()?))
            })
            .collect();
    let done_re = Regex::new(r"keelson: shutdown done took_ms=(\d+) forced=(\S+)")?;
    let init_done = n.vm.console().all_matching(&done_re).last().and_then(|l| {
        let c = done_re.captures(&l.text)?;
        Some((c[1].parse().ok()?, &c[2] == "true"))
    });
    let drain = if plan.drain {
        Some(drain::from_console(
            n.vm.console().lines(),
            plan.pods,
            took,
        )?)
    } else {
        None
    };
    let raw = n.disk.export_raw(&n.work.path().join("after.raw"))?;
    let mut recovery = Vec::new();
    for part in ["STATE", "VAR"] {
        recovery.push((part, dumpe2fs_header(&raw, part)?.needs_recovery()));
    }
    let _ = std::fs::remove_file(&raw);

    if std::env::var("KEELSON_KEEP_WORK").is_ok_and(|v| v == "1") {
        let KeelsonNode { work, .. } = n;
        eprintln!("keeping work directory {}", work.keep().display());
    }
    Ok(Boot {
        node_ready_marker: ready.at,
        api_ready,
        since_kernel_ms,
        phases,
        init_rss_kib,
        kubelet_started: None,
        mem_used_kib: None,
        shutdown: ShutdownRun {
            pods: plan.pods,
            trigger: plan.trigger,
            pods_running,
            took,
            powered_off: exited,
            init_done,
            steps,
            recovery,
        },
        sysctl,
        drain,
    })
}

/// `SYSCTL_REPS` live changes of [`SYSCTL`] (alternating 2000 and 3000)
/// in a config otherwise equal to the booted one.
fn measure_sysctl(
    nodectl: &Nodectl,
    admin: &Path,
    config: &MachineConfig,
    dir: &Path,
) -> Result<Vec<SysctlRun>> {
    let mut runs = Vec::new();
    for i in 0..SYSCTL_REPS {
        let value = if i % 2 == 0 { "2000" } else { "3000" };
        let mut c = config.clone();
        c.machine.sysctls.insert(SYSCTL.into(), value.into());
        let file = dir.join(format!("sysctl-{i}.yaml"));
        std::fs::write(&file, node_config::to_yaml(&c)?)
            .with_context(|| format!("writing {}", file.display()))?;
        let file_s = file.display().to_string();
        let start = Instant::now();
        let r = nodectl.run(
            Some(admin),
            &["apply-config", "-f", &file_s, "--mode", "no-reboot"],
        );
        let returned = start.elapsed();
        if r.code != 0 {
            bail!("apply-config {SYSCTL}={value} failed: {r:?}");
        }
        let visible = loop {
            let r = nodectl.run(Some(admin), &["read", SYSCTL_PATH]);
            if r.code == 0 && r.stdout.trim() == value {
                break start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("{SYSCTL_PATH} did not become {value} in 60 s: {r:?}");
            }
        };
        eprintln!(
            "sysctl {SYSCTL}={value}: returned {:.2}s, visible {:.2}s",
            returned.as_secs_f64(),
            visible.as_secs_f64()
        );
        runs.push(SysctlRun {
            value: value.into(),
            returned,
            visible,
        });
    }
    Ok(runs)
}

/// Creates `count` bench pods on `node` and waits until all run; returns
/// how long that took.
fn start_pods(cp: &ControlPlane, node: &str, count: usize) -> Result<Duration> {
    let start = Instant::now();
    if count == 0 {
        return Ok(Duration::ZERO);
    }
    let names: Vec<String> = (0..count).map(|i| format!("bench-{i}")).collect();
    let yaml = names
        .iter()
        .map(|name| service_pod_yaml(name, node))
        .collect::<Vec<_>>()
        .join("---\n");
    cp.create(&yaml)?;
    for name in &names {
        let left = PODS_TIMEOUT.saturating_sub(start.elapsed());
        cp.wait_pod_running(name, left)?;
    }
    Ok(start.elapsed())
}

/// `dumpe2fs -h` of a whole-disk ext4 image: does its journal need
/// recovery?
fn whole_disk_needs_recovery(raw: &Path) -> Result<bool> {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(raw)
        .output()
        .context("running dumpe2fs")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .with_context(|| {
            format!(
                "no `Filesystem features:` from dumpe2fs -h {}",
                raw.display()
            )
        })?;
    Ok(features.split_whitespace().any(|f| f == "needs_recovery"))
}

fn measure_peer(image: &PeerImage, relay: &Path, pods: usize) -> Result<Boot> {
    let mut cluster = PeerCluster::start(image, relay)?;
    let ready = cluster.wait_ready(BOOT_TIMEOUT)?;
    let pods_running = start_pods(&cluster.cp, peer::NODE_NAME, pods)?;
    let start = Instant::now();
    cluster.vm.power_button()?;
    let exited = cluster.vm.wait_exit(SHUTDOWN_TIMEOUT)?.is_some();
    let took = start.elapsed();
    if !exited {
        eprintln!(
            "the peer did not power off in {SHUTDOWN_TIMEOUT:?}; stopping QEMU. Console:\n{}",
            cluster.vm.console_tail(30)
        );
        cluster.vm.quit()?;
    }
    let raw = cluster.work_dir().join("after.raw");
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(&cluster.disk.overlay)
        .arg(&raw)
        .output()
        .context("running qemu-img convert")?;
    if !out.status.success() {
        bail!(
            "qemu-img convert of the peer's disk: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let root_recovery = whole_disk_needs_recovery(&raw)?;
    let _ = std::fs::remove_file(&raw);
    Ok(Boot {
        node_ready_marker: ready.node_ready_marker,
        api_ready: ready.api_ready,
        since_kernel_ms: ready.node_ready_uptime.as_millis() as u64,
        phases: Vec::new(),
        init_rss_kib: ready.pid1_rss_kib,
        kubelet_started: Some(ready.kubelet_started),
        mem_used_kib: Some(ready.mem_used_kib),
        shutdown: ShutdownRun {
            pods,
            trigger: Trigger::PowerButton,
            pods_running,
            took,
            powered_off: exited,
            init_done: None,
            steps: Vec::new(),
            recovery: vec![("root", root_recovery)],
        },
        sysctl: Vec::new(),
        drain: None,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn host_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Median of `f` over `boots`.
fn med(boots: &[Boot], f: impl Fn(&Boot) -> f64) -> f64 {
    median(boots.iter().map(f).collect())
}

/// `peer / keelson` as "1.23×", or "—" when either is missing.
fn ratio(peer: Option<f64>, keelson: Option<f64>) -> String {
    match (peer, keelson) {
        (Some(p), Some(k)) if k > 0.0 && p.is_finite() => format!("{:.2}×", p / k),
        _ => "—".into(),
    }
}

fn render(
    parse_fragment: &str,
    image: &Path,
    sizes: &Sizes,
    direct: &DirectKernel,
    peer: Option<&PeerImage>,
    results: &[(Variant, Vec<Boot>)],
) -> Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = host_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let qemu = host_line("qemu-system-x86_64", &["--version"]);
    let n = results.first().map_or(0, |(_, b)| b.len());
    let of = |v: Variant| results.iter().find(|(x, _)| *x == v).map(|(_, b)| b);

    let mut md = String::new();
    writeln!(md, "# Keelson benchmarks\n")?;
    writeln!(md, "Generated by `make bench` on {date}.\n")?;
    writeln!(
        md,
        "- CPU: {cpu}, {cores} cores (shared; other work may run)"
    )?;
    writeln!(md, "- {qemu}; guests run with `-accel tcg -machine q35 -cpu max -smp 1 -m 2048`, OVMF, virtio disk (qcow2 overlay on a raw copy) and NIC, user network with `restrict=on`")?;
    writeln!(md, "- Each boot runs next to a fresh control plane on loopback (etcd + kube-apiserver 1.20.2), reached from the guest through the same guestfwd relay; kubelet posts node status every 2 s\n")?;

    writeln!(md, "## Machine config parsing\n")?;
    writeln!(md, "{}\n", parse_fragment.trim_end())?;

    let name = image.file_name().map_or_else(
        || image.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    writeln!(md, "## Image\n")?;
    writeln!(md, "| what | size |\n|---|---|")?;
    writeln!(md, "| `{name}` (apparent) | {} |", mib(sizes.image_bytes))?;
    writeln!(
        md,
        "| `{name}` (allocated, sparse) | {} |",
        mib(sizes.image_allocated)
    )?;
    writeln!(
        md,
        "| SYSTEM-A partition | {} |",
        mib(sizes.system_partition)
    )?;
    writeln!(
        md,
        "| SYSTEM-A squashfs (bytes used) | {} |\n",
        mib(sizes.squashfs_bytes)
    )?;

    // Side by side.
    writeln!(
        md,
        "## Boot: Keelson and a Debian 12 + systemd node side by side (n = {n} each)\n"
    )?;
    writeln!(md, "Medians over the boots. Times from QEMU start, as seen by the harness (console read every 50 ms; API server polled on its own thread every 200 ms plus one kubectl call). The node-ready marker means kubelet has kept running for 6 s: `keelson: node ready` (init), `peer: node ready` (a oneshot unit that waits the same 6 s). The ratio is the peer over Keelson booted the same way (direct kernel): above 1 means the peer is slower or bigger.\n")?;
    let cols: Vec<Variant> = results.iter().map(|(v, _)| *v).collect();
    let mut header = String::from("| median |");
    let mut rule = String::from("|---|");
    for v in &cols {
        write!(header, " {} |", v.label())?;
        rule.push_str("---:|");
    }
    let with_ratio = of(Variant::Peer).is_some() && of(Variant::KeelsonDirect).is_some();
    if with_ratio {
        header.push_str(" peer / Keelson direct |");
        rule.push_str("---:|");
    }
    writeln!(md, "{header}\n{rule}")?;
    type Metric = (&'static str, fn(&Boot) -> f64, &'static str);
    let metrics: [Metric; 4] = [
        (
            "QEMU start → node-ready marker",
            |b| secs(b.node_ready_marker),
            "s",
        ),
        (
            "QEMU start → node `Ready` (API server)",
            |b| secs(b.api_ready),
            "s",
        ),
        (
            "kernel start → node-ready marker (guest clock)",
            |b| b.since_kernel_ms as f64 / 1000.0,
            "s",
        ),
        (
            "PID 1 RSS after the marker (init / systemd)",
            |b| b.init_rss_kib as f64 / 1024.0,
            "MiB",
        ),
    ];
    for (label, f, unit) in metrics {
        let mut row = format!("| {label} |");
        for v in &cols {
            let boots = of(*v).map(Vec::as_slice).unwrap_or_default();
            write!(row, " {:.1} {unit} |", med(boots, f))?;
        }
        if with_ratio {
            let p = of(Variant::Peer).map(|b| med(b, f));
            let k = of(Variant::KeelsonDirect).map(|b| med(b, f));
            write!(row, " {} |", ratio(p, k))?;
        }
        writeln!(md, "{row}")?;
    }
    if let Some(peer_boots) = of(Variant::Peer) {
        let mut row =
            String::from("| guest memory in use after the marker (MemTotal − MemAvailable) |");
        for v in &cols {
            if *v == Variant::Peer {
                let m = med(peer_boots, |b| b.mem_used_kib.unwrap_or(0) as f64 / 1024.0);
                write!(row, " {m:.0} MiB |")?;
            } else {
                row.push_str(" not reported |");
            }
        }
        if with_ratio {
            row.push_str(" — |");
        }
        writeln!(md, "{row}")?;
    }
    writeln!(md)?;

    writeln!(md, "What is compared, and what a reader should know:\n")?;
    writeln!(md, "- Same kernel bytes, containerd, runc, CNI plugins, kubelet binary, preloaded images, kubelet settings and QEMU machine for every variant measured. The Keelson kernel and initramfs for the direct boot are read from the image's EFI partition (slot A) and get GRUB's command line `{}`; the peer gets `{}`.", direct.cmdline, peer::CMDLINE)?;
    if let Some(p) = peer {
        writeln!(md, "- The peer is `bench/peer/build.sh`'s Debian 12 (debootstrap minbase + systemd, systemd-networkd DHCP, containerd and kubelet as systemd units, images imported by a oneshot unit before kubelet) with kernel {} and Debian's default initramfs (initramfs-tools, MODULES=most: {} against Keelson's {}). Its root is a writable ext4 filesystem (fsck'd and remounted read-write at boot, as Debian does), Keelson's a squashfs plus STATE and VAR (VAR grown to the 8 GiB overlay at first boot, which every benchmark boot is).", p.kernel_version.as_deref().unwrap_or("(unrecorded)"), file_mib(&p.initrd), file_mib(&direct.initrd))?;
    }
    writeln!(md, "- Direct-kernel boots still start in OVMF (the `-kernel` image is loaded by the firmware): they differ from an OVMF + GRUB boot (`--only grub`, not in every run) only by GRUB and its reading of the EFI partition. A Debian user would normally boot through GRUB as well; compare the peer with Keelson's direct-kernel column.")?;
    writeln!(md, "- `keelson: node ready` is printed by init itself; the peer's by a oneshot unit that sleeps until systemd's own timestamp of kubelet turning active is 6 s old and then re-reads that state with one `systemctl` call, so the peer's marker may come a few hundred ms late under TCG. Node `Ready` in the API server is measured identically for both and is the number to quote.")?;
    writeln!(md, "- Under TCG on a shared 2-core host every guest instruction is emulated, so the absolute times are far above a real machine's, and they vary with other work on the host; the variants were booted interleaved (one of each in turn) so load spreads over them alike. n = {n} is small: read the ratios as rough.")?;
    writeln!(md, "- Memory: PID 1's RSS compares Keelson's init with systemd. The peer's whole-guest memory in use is given for scale; Keelson does not report that figure, so no ratio is given for it.\n")?;

    for (variant, boots) in results {
        writeln!(md, "### {} — per boot\n", variant.label())?;
        if *variant == Variant::Peer {
            writeln!(md, "| boot | `peer: kubelet started` | `peer: node ready` | node `Ready` (API) | kernel → marker (guest uptime) | systemd RSS | memory in use |\n|---|---|---|---|---|---|---|")?;
            for (i, b) in boots.iter().enumerate() {
                writeln!(
                    md,
                    "| {} | {:.1} s | {:.1} s | {:.1} s | {} ms | {} KiB | {} KiB |",
                    i + 1,
                    b.kubelet_started.map_or(f64::NAN, secs),
                    secs(b.node_ready_marker),
                    secs(b.api_ready),
                    b.since_kernel_ms,
                    b.init_rss_kib,
                    b.mem_used_kib.unwrap_or(0)
                )?;
            }
        } else {
            writeln!(md, "| boot | `keelson: node ready` | node `Ready` (API) | init's since_kernel_ms | init RSS |\n|---|---|---|---|---|")?;
            for (i, b) in boots.iter().enumerate() {
                writeln!(
                    md,
                    "| {} | {:.1} s | {:.1} s | {} ms | {} KiB |",
                    i + 1,
                    secs(b.node_ready_marker),
                    secs(b.api_ready),
                    b.since_kernel_ms,
                    b.init_rss_kib
                )?;
            }
        }
        writeln!(md)?;
    }

    for (variant, boots) in results {
        if *variant == Variant::Peer {
            continue;
        }
        render_phases(&mut md, *variant, boots)?;
    }
    render_shutdown(&mut md, results)?;
    render_sysctl(&mut md, results)?;
    Ok(md)
}

/// "12.3 s" for one run, "12.3 s (median; 11.0, 12.3, 14.1)" for more;
/// a run that did not power off by itself shows as "> 300 s".
fn shutdown_cell(runs: &[&ShutdownRun]) -> String {
    if runs.is_empty() {
        return "—".into();
    }
    let one = |r: &ShutdownRun| {
        if r.powered_off {
            format!("{:.1} s", secs(r.took))
        } else {
            format!("> {:.0} s (stopped)", SHUTDOWN_TIMEOUT.as_secs_f64())
        }
    };
    if runs.len() == 1 {
        return one(runs[0]);
    }
    let m = median(runs.iter().map(|r| secs(r.took)).collect());
    format!(
        "{m:.1} s (median of {}: {})",
        runs.len(),
        runs.iter().map(|r| one(r)).collect::<Vec<_>>().join(", ")
    )
}

/// The shutdown benchmark (issue 6): request → power-off with N pods,
/// side by side, clean ext4 afterwards, and Keelson's steps.
fn render_shutdown(md: &mut String, results: &[(Variant, Vec<Boot>)]) -> Result<()> {
    let mut counts: Vec<usize> = results
        .iter()
        .flat_map(|(_, b)| b.iter().map(|b| b.shutdown.pods))
        .collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() {
        return Ok(());
    }
    let runs_of = |v: Variant, n: usize| -> Vec<&ShutdownRun> {
        results
            .iter()
            .filter(|(x, _)| *x == v)
            .flat_map(|(_, b)| b.iter().map(|b| &b.shutdown))
            .filter(|r| r.pods == n)
            .collect()
    };
    let total_runs: usize = results.iter().map(|(_, b)| b.len()).sum();
    writeln!(
        md,
        "## Shutdown: request → power-off with N running pods ({total_runs} runs)\n"
    )?;
    writeln!(md, "Each boot above ended this way: N pods were created on the node and waited for until `Running`, then the shutdown was requested and timed from the request (the `nodectl shutdown` command's start, or the QMP `system_powerdown` call) to QEMU's exit, which the guest's ACPI power-off causes. The pods run `trap 'exit 0' TERM; while true; do sleep 1; done` with the default `terminationGracePeriodSeconds: 30`: a service that stops promptly on SIGTERM. Keelson's direct-kernel boots and the peer were shut down with the ACPI power button; Keelson's GRUB boots, when benchmarked, with `nodectl shutdown` (mTLS, through the forwarded API port), which starts the same sequence in init. The ratio compares like with like: the peer over Keelson, both direct-kernel boots and both by the power button; above 1 means the peer takes longer.\n")?;
    let cols: Vec<(Variant, &str)> = results
        .iter()
        .map(|(v, _)| {
            (
                *v,
                match v {
                    Variant::KeelsonGrub => "Keelson, `nodectl shutdown` (GRUB boots)",
                    Variant::KeelsonDirect => "Keelson, power button (direct boots)",
                    Variant::Peer => {
                        "Debian 12 + systemd, power button (`poweroff.target` via logind)"
                    }
                },
            )
        })
        .collect();
    let with_ratio = cols.iter().any(|(v, _)| *v == Variant::Peer)
        && cols.iter().any(|(v, _)| *v == Variant::KeelsonDirect);
    let mut header = String::from("| running pods |");
    let mut rule = String::from("|---:|");
    for (_, label) in &cols {
        write!(header, " {label} |")?;
        rule.push_str("---:|");
    }
    if with_ratio {
        header.push_str(" peer / Keelson (power button) |");
        rule.push_str("---:|");
    }
    writeln!(md, "{header}\n{rule}")?;
    for n in &counts {
        let mut row = format!("| {n} |");
        for (v, _) in &cols {
            write!(row, " {} |", shutdown_cell(&runs_of(*v, *n)))?;
        }
        if with_ratio {
            let m = |v| {
                let runs = runs_of(v, *n);
                (!runs.is_empty() && runs.iter().all(|r| r.powered_off))
                    .then(|| median(runs.iter().map(|r| secs(r.took)).collect()))
            };
            write!(
                row,
                " {} |",
                ratio(m(Variant::Peer), m(Variant::KeelsonDirect))
            )?;
        }
        writeln!(md, "{row}")?;
    }
    writeln!(md)?;

    writeln!(md, "Clean ext4 afterwards: the disk's overlay flattened to a raw image once QEMU had exited, `dumpe2fs -h` of each ext4 filesystem; `needs_recovery` means the journal was left unreplayed, i.e. the filesystem was not cleanly unmounted.\n")?;
    writeln!(md, "| side | runs | filesystems checked per run | `needs_recovery` found | powered off by itself |\n|---|---:|---|---:|---:|")?;
    for (v, boots) in results {
        if boots.is_empty() {
            continue;
        }
        let fs: Vec<&str> = boots[0].shutdown.recovery.iter().map(|(p, _)| *p).collect();
        let checked: usize = boots.iter().map(|b| b.shutdown.recovery.len()).sum();
        let dirty: usize = boots
            .iter()
            .map(|b| b.shutdown.recovery.iter().filter(|(_, r)| *r).count())
            .sum();
        let off = boots.iter().filter(|b| b.shutdown.powered_off).count();
        writeln!(
            md,
            "| {} | {} | {} | {dirty} of {checked} | {off} of {} |",
            v.label(),
            boots.len(),
            fs.join(", "),
            boots.len()
        )?;
    }
    writeln!(md)?;

    writeln!(
        md,
        "What differs between the two sides, and what a reader should know:\n"
    )?;
    writeln!(md, "- Keelson's init stops things in order (docs/architecture.md): kubelet, then every pod sandbox through the CRI with the pods' own grace, then containerd, the remaining processes, then it unmounts VAR and STATE and powers off; `nodectl shutdown` and the power button start the same sequence.")?;
    writeln!(md, "- The peer is Debian's stock behaviour: the power button makes systemd-logind start `poweroff.target` (`HandlePowerKey=poweroff`, the default), the same transaction `shutdown -h now` starts; its console has only a login prompt and there is no SSH, so the power button is the faithful trigger available. Its kubelet (1.20, no graceful node shutdown configured, as in a default install) is stopped by systemd without stopping pods; Debian's `containerd.service` has `KillMode=process`, so the shims and containers outlive it until systemd-shutdown sends SIGTERM to every remaining process (the bench pods exit on it at once; a pod that ignored it would be killed after systemd's 90 s), then unmounts and remounts the root read-only. Its pods therefore get SIGTERM without the CRI and kubelet knowing; Keelson's are stopped through the CRI.")?;
    writeln!(md, "- The times include ACPI and firmware power-off under TCG, and the harness's 50 ms polling; the pods were created only after the boot measurements, so they do not affect the boot tables above. n per cell is small (one run per trigger and pod count per side): read the ratios as rough.\n")?;
    writeln!(md, "### Shutdown runs\n")?;
    writeln!(md, "| boot | trigger | pods | pods created → all `Running` | request → power-off | init's `shutdown done` took_ms | forced | `needs_recovery` |\n|---|---|---:|---:|---:|---:|---|---|")?;
    for (v, boots) in results {
        for b in boots {
            let r = &b.shutdown;
            let dirty: Vec<&str> = r
                .recovery
                .iter()
                .filter(|(_, d)| *d)
                .map(|(p, _)| *p)
                .collect();
            writeln!(
                md,
                "| {} | {} | {} | {:.1} s | {} | {} | {} | {} |",
                v.label(),
                r.trigger.label(),
                r.pods,
                secs(r.pods_running),
                shutdown_cell(&[r]),
                r.init_done.map_or("—".into(), |(ms, _)| ms.to_string()),
                r.init_done.map_or("—".into(), |(_, f)| f.to_string()),
                if dirty.is_empty() {
                    "none".to_string()
                } else {
                    dirty.join(", ")
                }
            )?;
        }
    }
    writeln!(md)?;

    // Keelson's steps at the largest pod count.
    let Some(&max) = counts.last() else {
        return Ok(());
    };
    let keelson_runs: Vec<(Variant, &ShutdownRun)> = results
        .iter()
        .filter(|(v, _)| *v != Variant::Peer)
        .flat_map(|(v, b)| b.iter().map(move |b| (*v, &b.shutdown)))
        .filter(|(_, r)| r.pods == max && !r.steps.is_empty())
        .collect();
    if keelson_runs.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "### Keelson's shutdown steps with {max} pods (outcome and took_ms, as init reports them)\n"
    )?;
    let mut header = String::from("| step |");
    let mut rule = String::from("|---|");
    for (v, r) in &keelson_runs {
        let how = match v {
            Variant::KeelsonGrub => "GRUB boot",
            _ => "direct boot",
        };
        write!(header, " {} ({how}) |", r.trigger.label())?;
        rule.push_str("---:|");
    }
    writeln!(md, "{header}\n{rule}")?;
    let mut order: Vec<&str> = Vec::new();
    for (_, r) in &keelson_runs {
        for (name, _, _) in &r.steps {
            if !order.contains(&name.as_str()) {
                order.push(name);
            }
        }
    }
    for step in order {
        let mut row = format!("| {step} |");
        for (_, r) in &keelson_runs {
            match r.steps.iter().find(|(n, _, _)| n == step) {
                Some((_, outcome, ms)) => write!(row, " {outcome} {ms} ms |")?,
                None => row.push_str(" — |"),
            }
        }
        writeln!(md, "{row}")?;
    }
    let mut row = String::from("| **total** (`shutdown done`) |");
    for (_, r) in &keelson_runs {
        match r.init_done {
            Some((ms, forced)) => write!(row, " {ms} ms (forced={forced}) |")?,
            None => row.push_str(" — |"),
        }
    }
    writeln!(md, "{row}\n")?;
    Ok(())
}

/// The live sysctl change (issue 5).
fn render_sysctl(md: &mut String, results: &[(Variant, Vec<Boot>)]) -> Result<()> {
    let Some((variant, runs)) = results
        .iter()
        .flat_map(|(v, b)| b.iter().map(move |b| (*v, &b.sysctl)))
        .find(|(_, s)| !s.is_empty())
    else {
        return Ok(());
    };
    writeln!(
        md,
        "## Live sysctl change: `nodectl apply-config --mode no-reboot` (n = {})\n",
        runs.len()
    )?;
    writeln!(md, "On a booted, Ready node ({}, first boot, before its pods and shutdown): `nodectl apply-config -f FILE --mode no-reboot` of a config that differs from the running one only in `{SYSCTL}` (alternately 2000 and 3000), timed from the command's start to its return, and to the first `nodectl read {SYSCTL_PATH}` (each a fresh nodectl process with its own mTLS handshake, back to back) that shows the new value. Both include nodectl's start and connection, as a user would see them.\n", variant.label())?;
    let returned: Vec<f64> = runs.iter().map(|r| secs(r.returned)).collect();
    let visible: Vec<f64> = runs.iter().map(|r| secs(r.visible)).collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    writeln!(md, "| | median | max |\n|---|---:|---:|")?;
    writeln!(
        md,
        "| command start → command returned | {:.2} s | {:.2} s |",
        median(returned.clone()),
        max(&returned)
    )?;
    writeln!(
        md,
        "| command start → new value read back | {:.2} s | {:.2} s |\n",
        median(visible.clone()),
        max(&visible)
    )?;
    writeln!(
        md,
        "| run | value | returned | read back |\n|---:|---:|---:|---:|"
    )?;
    for (i, r) in runs.iter().enumerate() {
        writeln!(
            md,
            "| {} | {} | {:.2} s | {:.2} s |",
            i + 1,
            r.value,
            secs(r.returned),
            secs(r.visible)
        )?;
    }
    writeln!(md)?;
    Ok(())
}

fn file_mib(path: &Path) -> String {
    std::fs::metadata(path).map_or_else(|_| "?".into(), |m| mib(m.len()))
}

/// Init's phases, median `took_ms` over `boots`.
fn render_phases(md: &mut String, variant: Variant, boots: &[Boot]) -> Result<()> {
    writeln!(
        md,
        "### Boot phases of {} (median took_ms, as init reports them)\n",
        variant.label()
    )?;
    writeln!(md, "| phase | median took_ms | per boot |\n|---|---|---|")?;
    // Phase names in first-seen order; a name seen twice (one per stage)
    // keeps both occurrences apart.
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for b in boots {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, ms) in &b.phases {
            let n = seen.entry(name).or_insert(0);
            *n += 1;
            let key = if *n == 1 {
                name.clone()
            } else {
                format!("{name} (#{n})")
            };
            if !order.contains(&key) {
                order.push(key.clone());
            }
            values.entry(key).or_default().push(*ms);
        }
    }
    for key in &order {
        let v = &values[key];
        writeln!(
            md,
            "| {key} | {:.0} | {} |",
            median(v.iter().map(|x| *x as f64).collect()),
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        )?;
    }
    writeln!(md)?;
    Ok(())
}
