//! Guards and small system calls whose effect is machine-wide: every
//! reboot, mount or hostname change in init is behind [`is_pid1`], so that
//! running the binary (or its unit tests) on a host never touches it.

use std::time::Duration;

use nix::sys::reboot::RebootMode;

/// Whether this process is PID 1 (the node's init), the only case in which
/// init may change the machine.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Time since the kernel started (CLOCK_BOOTTIME), in milliseconds.
pub fn since_kernel_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => {
            let ms = ts.tv_sec() as i128 * 1000 + ts.tv_nsec() as i128 / 1_000_000;
            u64::try_from(ms).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// Ends the machine: power off or restart. Only when PID 1; otherwise it
/// logs and exits the process (tests, manual runs). Never returns.
pub fn reboot(mode: RebootMode) -> ! {
    if is_pid1() {
        nix::unistd::sync();
        let err = nix::sys::reboot::reboot(mode);
        tracing::error!(?mode, error = ?err, "reboot(2) failed");
        // reboot(2) does not return on success; if it failed, keep PID 1
        // alive rather than exiting (which would panic the kernel).
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    tracing::warn!(
        ?mode,
        "not PID 1: would reboot the machine; exiting instead"
    );
    std::process::exit(1)
}

/// Makes ctrl-alt-del send SIGINT to PID 1 instead of restarting at once.
pub fn disable_cad() {
    if is_pid1() {
        if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
            tracing::warn!(error = %e, "cannot disable ctrl-alt-del reboot");
        }
    }
}
