//! `make demo`: boots `out/keelson.raw` with no config next to a local
//! control plane; the node waits in maintenance mode and prints its API
//! fingerprint; `nodectl apply-config --insecure --fingerprint` gives it
//! the example config (examples/node.yaml, pointed at the control plane,
//! with certificates from `nodectl gen secrets`); then `nodectl` over mTLS
//! shows it healthy, a pod runs on it, and `nodectl shutdown` ends it with
//! every ext4 partition clean. Exits non-zero on any failure, with the
//! reason (and the console tail when the node is involved).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keelson_tests::console::ConsoleLine;
use keelson_tests::nodectl::{Nodectl, Operator};
use keelson_tests::scenario::{markers, test_pod_yaml, Cluster};
use keelson_tests::{artifacts, node_config};
use regex::Regex;

const NODE: &str = "keelson-demo";

fn main() -> ExitCode {
    keelson_tests::init_logging();
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
    let host = tempfile::tempdir()?;

    heading("Operator secrets (nodectl gen secrets) and the node's API certificate");
    let op = Operator::new(&host.path().join("secrets"))?;
    let certificates = op.node_certificates(NODE)?;
    println!("secrets in {}", op.secrets.display());

    heading("Starting a control plane on loopback (etcd, kube-apiserver, controller manager, scheduler)");
    heading(&format!(
        "Booting {} in QEMU (TCG, OVMF, -smp 1) with no config",
        image.display()
    ));
    let mut cluster = Cluster::start_unconfigured(NODE, &relay, |cfg| {
        cfg.machine.certificates = Some(certificates.clone());
    })?;
    println!("work directory: {}", cluster.work_dir().display());
    println!(
        "API server on 127.0.0.1:{}; the node reaches it as https://10.0.2.100:6443",
        cluster.cp.api_port()
    );
    let endpoint = format!("127.0.0.1:{}", cluster.machine_api_port);
    let nodectl = Nodectl {
        bin: op.bin.clone(),
        endpoint: endpoint.clone(),
    };
    let admin = op.contexts(host.path(), "admin", "admin", &endpoint)?;

    heading("Boot into maintenance mode (console lines from init)");
    let show = |line: &ConsoleLine| {
        if line.text.contains("keelson:") {
            println!("[{:>6.1}s] {}", line.at.as_secs_f64(), line.text.trim());
        }
    };
    let maintenance_re = Regex::new(markers::MAINTENANCE)?;
    let line = cluster
        .vm
        .wait_for_regex_streaming(&maintenance_re, Duration::from_secs(300), show)
        .context("waiting for maintenance mode")?;
    let fingerprint = maintenance_re
        .captures(&line.text)
        .map(|c| c[1].to_string())
        .context("fingerprint")?;

    heading("nodectl apply-config --insecure --fingerprint <from the console> -f node.yaml");
    let config_file = host.path().join("node.yaml");
    std::fs::write(&config_file, node_config::to_yaml(&cluster.config)?)?;
    let file = config_file.display().to_string();
    let applied = nodectl.run(
        None,
        &[
            "--insecure",
            "--fingerprint",
            &fingerprint,
            "apply-config",
            "-f",
            &file,
        ],
    );
    print!("{}", applied.stdout);
    if applied.code != 0 {
        bail!("apply-config failed: {applied:?}");
    }

    heading("The node applies it and starts its services");
    let ready_re = Regex::new(markers::NODE_READY)?;
    cluster
        .vm
        .wait_for_regex_streaming(&ready_re, Duration::from_secs(300), show)
        .context("waiting for the node to report ready")?;

    heading("nodectl over mTLS: version, services, health");
    for args in [
        &["version"][..],
        &["services"][..],
        &["health", "--wait"][..],
    ] {
        println!("$ nodectl {}", args.join(" "));
        print!(
            "{}",
            nodectl.eventually(&admin, args, Duration::from_secs(60))
        );
    }

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

    heading("nodectl shutdown: the ordered shutdown");
    println!("$ nodectl shutdown");
    print!("{}", nodectl.ok(&admin, &["shutdown"]));
    let done_re = Regex::new(r"keelson: shutdown done")?;
    cluster
        .vm
        .wait_for_regex_streaming(&done_re, Duration::from_secs(180), show)
        .context("waiting for the shutdown to finish")?;
    if cluster.vm.wait_exit(Duration::from_secs(30))?.is_none() {
        bail!(
            "the node did not power off: {}",
            cluster.vm.console_tail(20)
        );
    }
    let (_, parts) = cluster.data_partitions_after_exit()?;
    for (part, h) in parts {
        println!(
            "{part}: {}",
            if h.needs_recovery() {
                "needs recovery (NOT clean)"
            } else {
                "clean, no journal to recover"
            }
        );
        if h.needs_recovery() {
            bail!("{part} was left needing recovery");
        }
    }
    drop(cluster);
    Ok(())
}
