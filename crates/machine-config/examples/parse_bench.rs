//! Benchmark: time to parse and validate a config, printed as a markdown
//! fragment (a heading and a table) for `bench/results.md`.
//!
//! Two inputs: the shipped `examples/node.yaml`, and a generated config of
//! about 5,000 lines (interfaces, sysctls, files, labels) that is valid, so
//! every check runs on the happy path. Run in release mode:
//! `cargo run --release -p machine-config --example parse_bench`.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const NODE_YAML: &[u8] = include_bytes!("../../../examples/node.yaml");

/// A valid config of roughly `lines` lines.
fn generated_config(lines: usize) -> String {
    let mut y = String::from(
        "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: big-node\n",
    );
    let budget = lines / 4;
    y.push_str("  sysctls:\n");
    for i in 0..budget {
        y.push_str(&format!("    net.ipv4.conf.vlan{i}.rp_filter: \"1\"\n"));
    }
    y.push_str("  files:\n");
    for i in 0..budget / 4 {
        y.push_str(&format!(
            "    - path: /etc/app/conf.d/{i:04}.conf\n      content: |\n        setting-{i}=on\n      mode: \"0640\"\n"
        ));
    }
    y.push_str("network:\n  interfaces:\n");
    for i in 0..budget / 9 {
        let (a, b) = (i / 250, i % 250);
        y.push_str(&format!(
            "    - name: vlan{i}\n      mtu: 1500\n      addresses:\n        - 10.{a}.{b}.10/24\n        - fd00:{a:x}:{b:x}::10/64\n      routes:\n        - to: 172.{}.{b}.0/24\n          via: 10.{a}.{b}.1\n          metric: {}\n",
            16 + a,
            100 + i
        ));
    }
    y.push_str("kubelet:\n  labels:\n");
    for i in 0..budget {
        y.push_str(&format!("    example.com/label-{i}: value-{i}\n"));
    }
    y
}

/// Median and 90th percentile of `iterations` runs of `f(input)`.
fn measure(input: &[u8], iterations: usize, f: fn(&[u8]) -> bool) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            let ok = f(black_box(input));
            let took = start.elapsed();
            black_box(ok);
            took
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1_000.0)
}

fn main() -> ExitCode {
    let generated = generated_config(5_000);
    let inputs: [(&str, &[u8], usize); 2] = [
        ("`examples/node.yaml`", NODE_YAML, 2_000),
        ("generated worker config", generated.as_bytes(), 100),
    ];
    for (name, input, _) in &inputs {
        if let Err(e) = machine_config::load(input) {
            eprintln!("parse_bench: {name} does not load:\n{e}");
            return ExitCode::FAILURE;
        }
    }
    println!("### Machine config: parse + validate (release build)\n");
    println!(
        "| input | lines | bytes | runs | parse + validate median | p90 | parse only median |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let load: fn(&[u8]) -> bool = |b| machine_config::load(b).is_ok();
    let parse: fn(&[u8]) -> bool = |b| machine_config::parse(b).is_ok();
    for (name, input, runs) in inputs {
        // Warm up caches and the allocator before measuring.
        let _ = measure(input, runs / 10 + 1, load);
        let (median, p90) = measure(input, runs, load);
        let (parse_median, _) = measure(input, runs, parse);
        let lines = input.iter().filter(|b| **b == b'\n').count();
        println!(
            "| {name} | {lines} | {} | {runs} | {} | {} | {} |",
            input.len(),
            ms(median),
            ms(p90),
            ms(parse_median)
        );
    }
    println!(
        "\nMedian and 90th percentile wall time of `machine_config::load` (parse with \
         locations, then every validation check); {} logical CPUs, shared with other work.",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    ExitCode::SUCCESS
}
