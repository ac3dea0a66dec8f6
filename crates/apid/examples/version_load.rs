//! Load helper for `make bench`: N concurrent mTLS clients (default 64), each
//! on its own connection with an admin certificate, call `Version` in a loop
//! for D seconds (default 10) through the real `apid` binary (a child
//! process, so its RSS can be read) to the minimal in-process upstream of
//! the tests (a test double of init: it answers Version from memory, so the
//! numbers measure the gateway: TLS, HTTP/2, role check, audit, forwarding).
//! Everything runs on loopback on this machine; clients and upstream share
//! the CPUs with apid.
//!
//! Usage: `cargo build --release -p apid --bins --examples &&
//! target/release/examples/version_load [N] [D]` (`APID_BIN` overrides the
//! apid binary, default: `../apid` next to this example's directory).
//! Prints a markdown fragment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::v1::VersionRequest;
use common::{Apid, Pki, Upstream};
use nodectl::secrets::Role;

fn vm_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() {
    // Audit lines at info level for every call are part of the cost measured.
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(64);
    let seconds: u64 = args.next().map(|a| a.parse().unwrap()).unwrap_or(10);
    let bin = std::env::var_os("APID_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("apid")
        });
    assert!(
        bin.exists(),
        "{} missing: build apid first (see the module doc)",
        bin.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("bench-ca");
    pki.write_server_files(dir.path());
    let socket = dir.path().join("init.sock");
    Upstream::default().spawn(&socket);
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let apid = Apid::start_binary(
        &bin,
        &[
            "--ca",
            &p("ca.crt"),
            "--cert",
            &p("server.crt"),
            "--key",
            &p("server.key"),
            "--upstream",
            &p("init.sock"),
        ],
        &dir.path().join("apid.log"),
    );
    let pid = apid.child.id();
    let rss_idle = vm_status(pid, "VmRSS");

    let admin = pki.client(Role::Admin, "bench");
    let mut tasks = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    for _ in 0..clients {
        let config = common::mtls_config(pki.ca.cert_pem(), Some(&admin));
        let addr = apid.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = common::client(addr, config).await;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match c.version(VersionRequest::default()).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_loaded = vm_status(pid, "VmRSS");
    let rss_peak = vm_status(pid, "VmHWM");
    lat.sort_unstable();
    assert!(
        !lat.is_empty(),
        "no call succeeded; apid log:\n{}",
        apid.log_text()
    );

    println!("### apid: `Version` over mTLS, {clients} concurrent clients, {seconds} s, loopback");
    println!();
    println!("| metric | value |");
    println!("|---|---|");
    println!("| requests/s | {:.0} |", lat.len() as f64 / elapsed);
    println!("| calls ok / failed | {} / {errors} |", lat.len());
    println!("| latency p50 | {:.2} ms |", percentile(&lat, 0.50));
    println!("| latency p99 | {:.2} ms |", percentile(&lat, 0.99));
    println!("| apid RSS idle / under load / peak | {rss_idle} / {rss_loaded} / {rss_peak} |");
}
