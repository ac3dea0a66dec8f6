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
//! like-for-like Keelson direct-kernel boot. Exits non-zero if a boot fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keelson_tests::control_plane::{ControlPlane, GUEST_API_SERVER};
use keelson_tests::disk::{TestDisk, DEFAULT_DISK_SIZE};
use keelson_tests::node_config::{self, ClusterAccess};
use keelson_tests::peer::{self, PeerCluster, PeerImage};
use keelson_tests::qemu::{GuestFwd, Vm, VmSpec};
use keelson_tests::scenario::markers;
use keelson_tests::{artifacts, gpt};
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
}

fn parse_args() -> Result<Args> {
    let mut parse_results = None;
    let mut out = None;
    let mut boots = 3;
    let mut image = None;
    let mut peer = None;
    let mut only = None;
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
            "--boots" => {
                boots = value()?
                    .parse()
                    .context("--boots takes a positive number")?;
                if boots == 0 {
                    bail!("--boots takes a positive number");
                }
            }
            other => bail!("unknown argument {other:?}; usage: bench --parse-results FILE --out FILE [--boots N] [--image RAW] [--peer DIR] [--only grub,direct,peer]"),
        }
    }
    Ok(Args {
        parse_results: parse_results.context("--parse-results FILE is required")?,
        out: out.context("--out FILE is required")?,
        boots,
        image,
        peer,
        only,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match parse_args().and_then(|args| run(&args)) {
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
    // Interleaved, so that load from other work on the host spreads over
    // every variant alike.
    let mut boots: BTreeMap<usize, Vec<Boot>> = BTreeMap::new();
    for i in 0..args.boots {
        for (v, variant) in variants.iter().enumerate() {
            eprintln!("boot {}/{}: {} ...", i + 1, args.boots, variant.label());
            let boot = match (variant, &peer) {
                (Variant::Peer, Some(peer)) => measure_peer(peer, &relay),
                (Variant::KeelsonDirect, _) => measure_keelson(&image, &relay, Some(&direct)),
                _ => measure_keelson(&image, &relay, None),
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
            boots.entry(v).or_default().push(boot);
        }
    }
    let results: Vec<(Variant, Vec<Boot>)> = variants
        .iter()
        .enumerate()
        .map(|(v, variant)| (*variant, boots.remove(&v).unwrap_or_default()))
        .collect();

    let report = render(
        &parse_fragment,
        &image,
        &sizes,
        &direct,
        peer.as_ref(),
        &results,
    )?;
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

/// A Keelson node booted for the benchmark. Field order is drop order.
struct KeelsonNode {
    vm: Vm,
    cp: ControlPlane,
    _disk: TestDisk,
    _work: tempfile::TempDir,
}

fn measure_keelson(image: &Path, relay: &Path, direct: Option<&DirectKernel>) -> Result<Boot> {
    let node = "keelson-bench";
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
    let yaml = node_config::to_yaml(&node_config::test_node_config(&access)?)?;
    let disk = TestDisk::prepare(image, &vm_dir, Some(&yaml), DEFAULT_DISK_SIZE)?;
    let spec = match direct {
        Some(k) => peer::direct_kernel_spec(
            &disk.overlay,
            &vm_dir,
            &k.kernel,
            &k.initrd,
            &k.cmdline,
            relay,
            cp.api_port(),
        ),
        None => {
            let mut spec = VmSpec::new(Some(disk.overlay.clone()), &vm_dir);
            spec.guestfwd.push(GuestFwd {
                guest_ip: GUEST_API_SERVER.0,
                guest_port: GUEST_API_SERVER.1,
                command: format!("{} {}", relay.display(), cp.api_port()),
            });
            spec
        }
    };
    let vm = Vm::boot(&spec)?;
    let booted_at = vm.started();
    let mut n = KeelsonNode {
        vm,
        cp,
        _disk: disk,
        _work: work,
    };

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
    // The disk is thrown away: no need for an orderly shutdown.
    n.vm.quit()?;
    if std::env::var("KEELSON_KEEP_WORK").is_ok_and(|v| v == "1") {
        let KeelsonNode { _work: work, .. } = n;
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
    })
}

fn measure_peer(image: &PeerImage, relay: &Path) -> Result<Boot> {
    let mut cluster = PeerCluster::start(image, relay)?;
    let ready = cluster.wait_ready(BOOT_TIMEOUT)?;
    cluster.vm.quit()?;
    Ok(Boot {
        node_ready_marker: ready.node_ready_marker,
        api_ready: ready.api_ready,
        since_kernel_ms: ready.node_ready_uptime.as_millis() as u64,
        phases: Vec::new(),
        init_rss_kib: ready.pid1_rss_kib,
        kubelet_started: Some(ready.kubelet_started),
        mem_used_kib: Some(ready.mem_used_kib),
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
    writeln!(md, "- Same kernel bytes, containerd, runc, CNI plugins, kubelet binary, preloaded images, kubelet settings and QEMU machine for all three. The Keelson kernel and initramfs for the direct boot are read from the image's EFI partition (slot A) and get GRUB's command line `{}`; the peer gets `{}`.", direct.cmdline, peer::CMDLINE)?;
    if let Some(p) = peer {
        writeln!(md, "- The peer is `bench/peer/build.sh`'s Debian 12 (debootstrap minbase + systemd, systemd-networkd DHCP, containerd and kubelet as systemd units, images imported by a oneshot unit before kubelet) with kernel {} and Debian's default initramfs (initramfs-tools, MODULES=most: {} against Keelson's {}). Its root is a writable ext4 filesystem (fsck'd and remounted read-write at boot, as Debian does), Keelson's a squashfs plus STATE and VAR (VAR grown to the 8 GiB overlay at first boot, which every benchmark boot is).", p.kernel_version.as_deref().unwrap_or("(unrecorded)"), file_mib(&p.initrd), file_mib(&direct.initrd))?;
    }
    writeln!(md, "- Both direct-kernel boots still start in OVMF (the `-kernel` image is loaded by the firmware): they differ from the OVMF + GRUB boot only by GRUB and its reading of the EFI partition. A Debian user would normally boot through GRUB as well; compare the peer with Keelson's direct-kernel column.")?;
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
    Ok(md)
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
