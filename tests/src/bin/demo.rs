//! `make demo`: boots `out/keelson.raw` next to a local control plane and
//! shows it working: the boot phases as init reports them, the node Ready
//! in the API server, a pod Running on it, then a power-off. Exits non-zero
//! on any failure, with the reason (and the console tail when the node is
//! involved).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use keelson_tests::artifacts;
use keelson_tests::console::ConsoleLine;
use keelson_tests::scenario::{markers, test_pod_yaml, Cluster};
use regex::Regex;

const NODE: &str = "keelson-demo";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => {
            heading("Done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn heading(text: &str) {
    println!("\n=== {text} ===");
}

fn run() -> Result<()> {
    let relay = artifacts::relay_binary()?;
    let image = artifacts::disk_image()?;

    heading("Starting a control plane on loopback (etcd, kube-apiserver, controller manager, scheduler)");
    heading(&format!(
        "Booting {} in QEMU (TCG, OVMF, -smp 1)",
        image.display()
    ));
    let mut cluster = Cluster::start(NODE, &relay)?;
    println!("work directory: {}", cluster.work_dir().display());
    println!(
        "API server on 127.0.0.1:{}; the node reaches it as https://10.0.2.100:6443",
        cluster.cp.api_port()
    );

    heading("Boot (console lines from init)");
    let show = |line: &ConsoleLine| {
        if line.text.contains("keelson:") {
            println!("[{:>6.1}s] {}", line.at.as_secs_f64(), line.text.trim());
        }
    };
    let ready_re = Regex::new(markers::NODE_READY)?;
    cluster
        .vm
        .wait_for_regex_streaming(&ready_re, Duration::from_secs(300), show)
        .context("waiting for the node to report ready")?;
    let rss_re = Regex::new(markers::INIT_RSS)?;
    cluster
        .vm
        .wait_for_regex_streaming(&rss_re, Duration::from_secs(30), show)
        .context("waiting for init's RSS report")?;

    heading("Node in the API server");
    if let Err(e) = cluster.cp.wait_node_ready(NODE, Duration::from_secs(240)) {
        let tail = cluster.vm.console_tail(30);
        return Err(e).context(format!("console:\n{tail}"));
    }
    println!(
        "Ready at {:.1}s after QEMU start",
        cluster.booted_at.elapsed().as_secs_f64()
    );
    print!("{}", cluster.cp.kubectl(&["get", "nodes", "-o", "wide"])?);

    heading("A pod on the preloaded busybox image");
    cluster.cp.create(&test_pod_yaml("hello", NODE))?;
    let pod = cluster
        .cp
        .wait_pod_running("hello", Duration::from_secs(180))?;
    print!("{}", cluster.cp.kubectl(&["get", "pods", "-o", "wide"])?);
    println!("pod IP {}", pod.pod_ip.unwrap_or_default());

    heading("Power button (ACPI), then the control plane stops");
    let before = cluster.vm.console().lines().len();
    let (clean, took) = cluster.power_off(Duration::from_secs(60))?;
    for line in &cluster.vm.console().lines()[before..] {
        show(line);
    }
    if clean {
        println!("the node powered off in {:.1}s", took.as_secs_f64());
    } else {
        println!("the node did not power off within 60 s (ordered shutdown comes with issue 6); QEMU stopped");
    }
    drop(cluster);
    Ok(())
}
