//! `make bench`: writes `bench/results.md`.
//!
//! `bench --parse-results FILE --out FILE [--boots N]`: includes the
//! machine-config parse benchmark fragment (FILE, made by machine-config's
//! `parse_bench` example), the image's size and its SYSTEM-A squashfs size
//! (from the squashfs superblock inside the image), then boots the image N
//! times (default 3), each next to a fresh control plane, and records per
//! boot: QEMU start → `keelson: node ready` on the console, → node `Ready`
//! in the API server, init's `since_kernel_ms`, each boot phase's `took_ms`
//! and init's RSS; medians over the boots. The Debian 12 + systemd peer is
//! not measured yet and the file says so. Exits non-zero if a boot fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keelson_tests::artifacts;
use keelson_tests::gpt;
use keelson_tests::scenario::{markers, Cluster};
use regex::Regex;

struct Args {
    parse_results: PathBuf,
    out: PathBuf,
    boots: usize,
}

fn parse_args() -> Result<Args> {
    let mut parse_results = None;
    let mut out = None;
    let mut boots = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--parse-results" => parse_results = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--boots" => {
                boots = value()?
                    .parse()
                    .context("--boots takes a positive number")?;
                if boots == 0 {
                    bail!("--boots takes a positive number");
                }
            }
            other => bail!("unknown argument {other:?}; usage: bench --parse-results FILE --out FILE [--boots N]"),
        }
    }
    Ok(Args {
        parse_results: parse_results.context("--parse-results FILE is required")?,
        out: out.context("--out FILE is required")?,
        boots,
    })
}

/// One boot's measurements.
struct Boot {
    node_ready_marker: Duration,
    api_ready: Duration,
    since_kernel_ms: u64,
    phases: Vec<(String, u64)>,
    init_rss_kib: u64,
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
    let image = artifacts::disk_image()?;
    let relay = artifacts::relay_binary()?;
    let sizes = image_sizes(&image)?;

    let mut boots = Vec::new();
    for i in 0..args.boots {
        eprintln!("boot {}/{} ...", i + 1, args.boots);
        let boot = measure_boot(&relay).with_context(|| format!("boot {}", i + 1))?;
        eprintln!(
            "boot {}: node ready marker {:.1}s, API Ready {:.1}s",
            i + 1,
            boot.node_ready_marker.as_secs_f64(),
            boot.api_ready.as_secs_f64()
        );
        boots.push(boot);
    }

    let report = render(&parse_fragment, &sizes, &boots)?;
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

fn measure_boot(relay: &Path) -> Result<Boot> {
    let node = "keelson-bench";
    let mut cluster = Cluster::start(node, relay)?;
    let ready = cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(300))?;
    let ready_caps = Regex::new(markers::NODE_READY)?
        .captures(&ready.text)
        .context("node ready line")?;
    let since_kernel_ms: u64 = ready_caps[3].parse()?;

    // Poll the API server as often as kubectl allows until Ready.
    let deadline = Instant::now() + Duration::from_secs(240);
    let api_ready = loop {
        if cluster.cp.node_ready(node)? {
            break cluster.booted_at.elapsed();
        }
        if Instant::now() > deadline {
            bail!("node not Ready in the API server within 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let rss = cluster
        .vm
        .wait_for_line(markers::INIT_RSS, Duration::from_secs(30))?;
    let init_rss_kib: u64 = Regex::new(markers::INIT_RSS)?
        .captures(&rss.text)
        .context("rss line")?[1]
        .parse()?;
    let phase_re = Regex::new(markers::PHASE)?;
    let phases = cluster
        .vm
        .console()
        .all_matching(&phase_re)
        .iter()
        .filter_map(|l| {
            let c = phase_re.captures(&l.text)?;
            Some((c[1].to_string(), c[2].parse().ok()?))
        })
        .collect();
    let _ = cluster.power_off(Duration::from_secs(30));
    Ok(Boot {
        node_ready_marker: ready.at,
        api_ready,
        since_kernel_ms,
        phases,
        init_rss_kib,
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

fn render(parse_fragment: &str, sizes: &Sizes, boots: &[Boot]) -> Result<String> {
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

    let mut md = String::new();
    writeln!(md, "# Keelson benchmarks\n")?;
    writeln!(md, "Generated by `make bench` on {date}.\n")?;
    writeln!(
        md,
        "- CPU: {cpu}, {cores} cores (shared; other work may run)"
    )?;
    writeln!(md, "- {qemu}; guests run with `-accel tcg -machine q35 -cpu max -smp 1 -m 2048`, OVMF, virtio disk and NIC, user network with `restrict=on`")?;
    writeln!(md, "- Each boot runs next to a fresh control plane on loopback (etcd + kube-apiserver 1.20.2); kubelet posts node status every 2 s\n")?;

    writeln!(md, "## Machine config parsing\n")?;
    writeln!(md, "{}\n", parse_fragment.trim_end())?;

    writeln!(md, "## Image\n")?;
    writeln!(md, "| what | size |\n|---|---|")?;
    writeln!(
        md,
        "| `out/keelson.raw` (apparent) | {} |",
        mib(sizes.image_bytes)
    )?;
    writeln!(
        md,
        "| `out/keelson.raw` (allocated, sparse) | {} |",
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

    writeln!(md, "## Boot (n = {})\n", boots.len())?;
    writeln!(md, "Times from QEMU start, as seen by the harness (console polled every 50 ms, API server every 200 ms plus a kubectl call).\n")?;
    writeln!(md, "| boot | `keelson: node ready` | node `Ready` (API) | init's since_kernel_ms | init RSS |\n|---|---|---|---|---|")?;
    for (i, b) in boots.iter().enumerate() {
        writeln!(
            md,
            "| {} | {:.1} s | {:.1} s | {} ms | {} KiB |",
            i + 1,
            b.node_ready_marker.as_secs_f64(),
            b.api_ready.as_secs_f64(),
            b.since_kernel_ms,
            b.init_rss_kib
        )?;
    }
    writeln!(
        md,
        "| **median** | **{:.1} s** | **{:.1} s** | **{:.0} ms** | **{:.0} KiB** |\n",
        median(
            boots
                .iter()
                .map(|b| b.node_ready_marker.as_secs_f64())
                .collect()
        ),
        median(boots.iter().map(|b| b.api_ready.as_secs_f64()).collect()),
        median(boots.iter().map(|b| b.since_kernel_ms as f64).collect()),
        median(boots.iter().map(|b| b.init_rss_kib as f64).collect()),
    )?;

    writeln!(
        md,
        "### Boot phases (median took_ms, as init reports them)\n"
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

    writeln!(md, "## Debian 12 + systemd peer: not yet measured\n")?;
    writeln!(md, "The side-by-side comparison with a Debian 12 + systemd VM (same kernel, containerd and kubelet, same QEMU settings) is not measured by this run yet; no peer figures are given here.")?;
    Ok(md)
}
