//! `init`: Keelson's PID 1. Stage 1 runs from the initramfs (storage
//! modules, partitions by GPT label, fsck, mount the slot's squashfs, switch
//! root); stage 2 runs from the read-only root (early mounts, apply the
//! machine config, supervise services, ordered shutdown). It never panics
//! out and never exits: every path ends in reboot(2).

mod apid_service;
mod apply;
mod bootstate;
mod cgroup;
mod cmdline;
#[allow(dead_code)] // a few accessors serve tests and later issues
mod config_store;
mod console;
mod cri;
mod etc;
mod events;
mod ext4;
mod fsck;
mod grow;
mod install;
mod kmod;
mod loopdev;
mod machine_api;
mod media;
mod mounts;
mod netroot;
#[allow(dead_code)]
mod network;
mod node;
mod panic;
mod partitions;
mod power_button;
mod services;
mod shutdown;
mod stage1;
mod stage2;
#[allow(dead_code)]
mod supervisor;
mod sys;
mod sysctl;
mod upgrade;
mod watchdog;

use std::path::Path;
use std::time::Duration;

use shutdown::Ending;

fn main() {
    panic::install();
    if !sys::is_pid1() {
        eprintln!(
            "init: Keelson's PID 1; it only runs as process 1 on a node (this is pid {})",
            std::process::id()
        );
        std::process::exit(2);
    }
    let outcome = std::panic::catch_unwind(|| {
        if Path::new(stage1::MARKER).exists() {
            let err = stage1::run();
            Err(format!("stage 1: {err}"))
        } else {
            stage2::run().map_err(|e| format!("stage 2: {e}"))
        }
    });
    let ending = match outcome {
        Ok(Ok(ending)) => ending,
        Ok(Err(fatal)) => {
            console::marker(&format!("fatal: {fatal}"));
            emergency_end()
        }
        Err(_) => {
            // The hook has printed the panic and its location.
            emergency_end()
        }
    };
    sys::reboot(ending.mode())
}

/// After a fatal error or a panic: leave time to read the console, end
/// every process, unmount the data partitions, then restart.
fn emergency_end() -> Ending {
    let _ = std::panic::catch_unwind(|| {
        std::thread::sleep(Duration::from_secs(5));
        shutdown::emergency();
    });
    Ending::Reboot
}
