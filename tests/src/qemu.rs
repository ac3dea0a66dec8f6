//! Booting a VM: `qemu-system-x86_64 -accel tcg -machine q35` with OVMF
//! (or QEMU's default SeaBIOS, see [`Firmware`]), the disk on virtio-blk, a
//! virtio-net NIC on QEMU's user-mode network with `restrict=on` (the guest
//! can never send traffic off this machine; host ports reach it through
//! `hostfwd` on 127.0.0.1, it reaches host services only through
//! `guestfwd` rules), the serial console captured to `console.log` in the
//! VM's work directory, and a QMP socket `qmp.sock` there for the power
//! button, resets and `quit`.
//!
//! Network boot ([`Tftp`]): QEMU's user-mode network has a TFTP server and
//! a DHCP server that hands out its boot file name; both live inside the
//! user-mode stack, so they work with `restrict=on`. The NIC then comes
//! first in the boot order and its iPXE option ROM (Debian's `ipxe-qemu`)
//! fetches the boot file, e.g. an iPXE script.
//!
//! A reset is a power cycle: QEMU runs with `-action reboot=shutdown`, a
//! second QMP socket (`qmp-events.sock`) reports why it stopped the guest,
//! and when that was a reset (the guest rebooting, a kernel panic's reboot,
//! the watchdog, [`Vm::reset`]) the harness starts a fresh QEMU on the same
//! disk, appending to the same console log. Measured here: after a reset
//! *inside* one QEMU process, the next boot's kernel spent ~95 s unpacking
//! an 8 MB initramfs (soft lockups in `clear_page_erms`) instead of 1.5 s;
//! a fresh process boots as fast as the first time. The guest cannot tell
//! the difference (it keeps no state in RAM across a reboot, and the
//! firmware's variables are not used).
//!
//! `/dev/kvm` hangs on these machines, so acceleration is always TCG. One
//! vCPU by default: with `-smp 2` some boots hit soft lockups (NOTES.md).
//! Dropping a [`Vm`] kills QEMU: no VM outlives its test.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;

use crate::artifacts::{self, MissingArtifact};
use crate::console::{Console, ConsoleLine, Fault};
use crate::process::{ManagedChild, ProcessError};
use crate::qmp::{self, QmpError};

/// Console lines included in timeout and fault errors.
const TAIL_LINES: usize = 40;

/// QMP `SHUTDOWN` reasons that mean a reset, not a power-off: the harness
/// answers them by starting QEMU again (see the module doc).
const RESET_REASONS: &[&str] = &["guest-reset", "host-qmp-system-reset"];

/// How long the event watcher waits for QEMU's event socket to appear.
const EVENT_SOCKET_WAIT: Duration = Duration::from_secs(30);

/// A host service the guest reaches: connections to `guest_ip:guest_port`
/// run `command` (one process per connection, its stdin/stdout being the
/// connection), e.g. `keelson-relay 41234`.
#[derive(Clone, Debug)]
pub struct GuestFwd {
    /// The address the guest connects to (inside 10.0.2.0/24, e.g.
    /// 10.0.2.100).
    pub guest_ip: Ipv4Addr,
    /// The port the guest connects to.
    pub guest_port: u16,
    /// The command QEMU runs for each connection (split on whitespace; no
    /// commas).
    pub command: String,
}

/// The firmware a VM boots with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF (UEFI), Debian's `ovmf`, passed with `-bios`: what a disk image
    /// boots with (GRUB is an EFI program).
    #[default]
    Ovmf,
    /// QEMU's default SeaBIOS (Debian's `seabios`, no `-bios` argument):
    /// it runs the NIC's iPXE option ROM for a network boot.
    SeaBios,
}

/// Network boot from QEMU's built-in TFTP server.
#[derive(Clone, Debug)]
pub struct Tftp {
    /// The directory served over TFTP (no commas).
    pub dir: PathBuf,
    /// The file DHCP names as the boot file, relative to `dir`, e.g.
    /// `keelson.ipxe` (no commas).
    pub bootfile: String,
}

/// A second (third, ...) disk: virtio-blk with a serial number, never
/// booted from unless it is bootable and nothing before it is.
#[derive(Clone, Debug)]
pub struct ExtraDisk {
    /// The image file.
    pub path: PathBuf,
    /// Its format for QEMU (`raw` or `qcow2`).
    pub format: String,
    /// The serial number the guest sees (`/sys/block/vdX/serial`, and
    /// `/dev/disk/by-id/virtio-SERIAL`).
    pub serial: String,
}

/// How to boot a VM.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// The boot disk (see [`crate::disk::TestDisk`]); `None` boots the
    /// firmware alone.
    pub disk: Option<PathBuf>,
    /// The disk's format for QEMU (`qcow2` or `raw`).
    pub disk_format: String,
    /// Directory for `console.log`, `qemu.log` and `qmp.sock`.
    pub work_dir: PathBuf,
    /// Guest memory. Default 2048 MiB.
    pub memory_mib: u32,
    /// vCPUs. Default 1 (see the module doc).
    pub smp: u32,
    /// `(host_port, guest_port)` TCP forwards, host side on 127.0.0.1.
    pub hostfwd: Vec<(u16, u16)>,
    /// Guest-to-host forwards.
    pub guestfwd: Vec<GuestFwd>,
    /// The firmware. Default [`Firmware::Ovmf`].
    pub firmware: Firmware,
    /// Network boot over TFTP: the NIC boots first (`bootindex=0`, the
    /// disk, if any, after it). Default none.
    pub tftp: Option<Tftp>,
    /// A boot ISO in a CD drive (AHCI), booted first. Default none.
    pub cdrom: Option<PathBuf>,
    /// More disks after the boot disk. Default none.
    pub extra_disks: Vec<ExtraDisk>,
    /// More QEMU arguments, appended last (e.g. `-no-reboot`).
    pub extra_args: Vec<String>,
}

impl VmSpec {
    /// A spec with the defaults: 2048 MiB, 1 vCPU, no forwards, OVMF, no
    /// network boot.
    pub fn new(disk: Option<PathBuf>, work_dir: &Path) -> Self {
        VmSpec {
            disk,
            disk_format: "qcow2".into(),
            work_dir: work_dir.to_path_buf(),
            memory_mib: 2048,
            smp: 1,
            hostfwd: Vec::new(),
            guestfwd: Vec::new(),
            firmware: Firmware::Ovmf,
            tftp: None,
            cdrom: None,
            extra_disks: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

/// A VM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// QEMU or the firmware is missing.
    #[error(transparent)]
    Missing(#[from] MissingArtifact),
    /// A forward's command contains a comma (QEMU's option separator).
    #[error("guestfwd command {0:?} contains a comma")]
    BadForward(String),
    /// The TFTP directory or boot file contains a comma (QEMU's option
    /// separator).
    #[error("TFTP {0:?} contains a comma")]
    BadTftp(String),
    /// QEMU could not be started or waited for.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A QMP command failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The expected console line did not appear in time.
    #[error("no console line matching /{pattern}/ within {timeout:?} (console: {console}); last {TAIL_LINES} lines:\n{tail}")]
    Timeout {
        /// The pattern waited for.
        pattern: String,
        /// How long.
        timeout: Duration,
        /// The console log file.
        console: PathBuf,
        /// The last console lines.
        tail: String,
    },
    /// The guest hit a kernel fault (lockup, stall, panic) or init panicked.
    #[error("guest failure: {kind} on the console: {line:?} (while waiting for /{pattern}/; console: {console}); last {TAIL_LINES} lines:\n{tail}")]
    GuestFault {
        /// Kind of fault.
        kind: &'static str,
        /// The console line.
        line: String,
        /// The pattern being waited for.
        pattern: String,
        /// The console log file.
        console: PathBuf,
        /// The last console lines.
        tail: String,
    },
    /// QEMU exited while a console line was awaited.
    #[error("QEMU exited ({status}) while waiting for /{pattern}/; QEMU log: {qemu_log}; last {TAIL_LINES} console lines:\n{tail}")]
    Exited {
        /// QEMU's exit status.
        status: ExitStatus,
        /// The pattern being waited for.
        pattern: String,
        /// QEMU's own log (its stderr).
        qemu_log: String,
        /// The last console lines.
        tail: String,
    },
    /// A pattern given by the caller is not a valid regular expression.
    #[error("invalid console pattern /{pattern}/: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The cause.
        source: regex::Error,
    },
}

/// A running VM. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Vm {
    spec: VmSpec,
    qemu: ManagedChild,
    /// Ends when this QEMU process exits; yields what it reported.
    events: Option<JoinHandle<StopEvents>>,
    /// QEMU processes started for this VM so far (1 + power cycles).
    starts: u32,
    /// Resets the guest's watchdog device caused.
    watchdog_resets: u32,
    console: Console,
    qmp_socket: PathBuf,
    started: Instant,
    /// Console lines already handed to a streaming callback.
    streamed: usize,
}

impl Vm {
    /// Starts QEMU as `spec` says and returns at once (the guest boots in
    /// the background; wait for console lines with [`Vm::wait_for_line`]).
    pub fn boot(spec: &VmSpec) -> Result<Vm, VmError> {
        let console_path = spec.work_dir.join("console.log");
        // A console left by an earlier VM in this directory is not ours.
        let _ = std::fs::remove_file(&console_path);
        let started = Instant::now();
        let (qemu, events) = start_qemu(spec, 1)?;
        Ok(Vm {
            spec: spec.clone(),
            qemu,
            events: Some(events),
            starts: 1,
            watchdog_resets: 0,
            console: Console::new(&console_path, started),
            qmp_socket: spec.work_dir.join("qmp.sock"),
            started,
            streamed: 0,
        })
    }

    /// The spec the next QEMU start (after a reset: a power cycle) uses:
    /// change it to eject the CD, for instance.
    pub fn next_start(&mut self) -> &mut VmSpec {
        &mut self.spec
    }

    /// How many times QEMU was started for this VM: 1, plus one per reset
    /// (each a power cycle, see the module doc).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// How many of those resets the guest's watchdog (`i6300esb`) caused.
    pub fn watchdog_resets(&self) -> u32 {
        self.watchdog_resets
    }

    /// Called when QEMU has exited: if it stopped the guest for a reset,
    /// starts it again on the same disk and returns `None`; otherwise the
    /// exit status (the guest powered off, or QEMU failed).
    fn after_exit(&mut self, status: ExitStatus) -> Result<Option<ExitStatus>, VmError> {
        // The watcher ends at the socket's end of file, which QEMU's exit
        // has caused; it has then read every event QEMU sent.
        let seen = self
            .events
            .take()
            .and_then(|watcher| watcher.join().ok())
            .unwrap_or_default();
        let Some(reason) = seen.reason.filter(|r| RESET_REASONS.contains(&r.as_str())) else {
            return Ok(Some(status));
        };
        self.starts += 1;
        let by = if seen.watchdog {
            self.watchdog_resets += 1;
            ", by the watchdog"
        } else {
            ""
        };
        eprintln!(
            "[{:>6.1}s] harness: the guest was reset ({reason}{by}): power cycle, QEMU start {}",
            self.started.elapsed().as_secs_f64(),
            self.starts
        );
        let (qemu, events) = start_qemu(&self.spec, self.starts)?;
        self.qemu = qemu;
        self.events = Some(events);
        Ok(None)
    }

    /// QEMU's exit status if it has exited for good (a reset starts it
    /// again and reads as running).
    fn try_exit(&mut self) -> Result<Option<ExitStatus>, VmError> {
        match self.qemu.try_exit()? {
            Some(status) => self.after_exit(status),
            None => Ok(None),
        }
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// The console reader (every line seen so far, the fault if any).
    pub fn console(&mut self) -> &mut Console {
        self.console.poll();
        &mut self.console
    }

    /// Waits until a console line not matched before matches `pattern`
    /// (see [`Console::take_match`]) and returns it. Fails at once on a
    /// kernel fault or if QEMU exits; on timeout the error carries the last
    /// console lines.
    pub fn wait_for_line(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<ConsoleLine, VmError> {
        let re = Regex::new(pattern).map_err(|source| VmError::Pattern {
            pattern: pattern.to_string(),
            source,
        })?;
        self.wait_for_regex(&re, timeout)
    }

    /// [`Vm::wait_for_line`] with a compiled pattern.
    pub fn wait_for_regex(
        &mut self,
        re: &Regex,
        timeout: Duration,
    ) -> Result<ConsoleLine, VmError> {
        self.wait_for_regex_streaming(re, timeout, |_| {})
    }

    /// [`Vm::wait_for_regex`], calling `on_line` with every console line
    /// not streamed before (in order, each line once over the VM's life),
    /// as it arrives.
    pub fn wait_for_regex_streaming(
        &mut self,
        re: &Regex,
        timeout: Duration,
        mut on_line: impl FnMut(&ConsoleLine),
    ) -> Result<ConsoleLine, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.console.poll();
            for line in &self.console.lines()[self.streamed..] {
                on_line(line);
            }
            self.streamed = self.console.lines().len();
            if let Some(Fault { kind, line }) = self.console.fault().cloned() {
                return Err(VmError::GuestFault {
                    kind,
                    line,
                    pattern: re.to_string(),
                    console: self.console.path().to_path_buf(),
                    tail: self.console.tail(TAIL_LINES),
                });
            }
            if let Some(line) = self.console.take_match(re) {
                return Ok(line);
            }
            if let Some(status) = self.try_exit()? {
                self.console.poll();
                if let Some(line) = self.console.take_match(re) {
                    return Ok(line);
                }
                return Err(VmError::Exited {
                    status,
                    pattern: re.to_string(),
                    qemu_log: self.qemu.log_tail(10),
                    tail: self.console.tail(TAIL_LINES),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    pattern: re.to_string(),
                    timeout,
                    console: self.console.path().to_path_buf(),
                    tail: self.console.tail(TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` console lines.
    pub fn console_tail(&mut self, n: usize) -> String {
        self.console.poll();
        self.console.tail(n)
    }

    /// Runs a QMP command and returns its result.
    pub fn qmp(&self, command: &str, arguments: Option<Value>) -> Result<Value, VmError> {
        Ok(qmp::execute(&self.qmp_socket, command, arguments)?)
    }

    /// Presses the ACPI power button (`system_powerdown`).
    pub fn power_button(&self) -> Result<(), VmError> {
        self.qmp("system_powerdown", None).map(|_| ())
    }

    /// Hard reset, like the reset button (`system_reset`).
    pub fn reset(&self) -> Result<(), VmError> {
        self.qmp("system_reset", None).map(|_| ())
    }

    /// The VM's run state from `query-status` (`running`, `shutdown`, …).
    pub fn status(&self) -> Result<String, VmError> {
        let v = self.qmp("query-status", None)?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Waits up to `timeout` for QEMU to exit (the guest powered off);
    /// `None` if it is still running. A reset on the way is a power cycle
    /// and the wait goes on.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let exited = match self.qemu.wait_timeout(left)? {
                Some(status) => self.after_exit(status)?,
                None => None,
            };
            self.console.poll();
            if exited.is_some() || Instant::now() >= deadline {
                return Ok(exited);
            }
        }
    }

    /// Stops the VM now: QMP `quit` (QEMU closes its files), then kill.
    /// Like pulling the power cord: the guest gets no warning.
    pub fn quit(&mut self) -> Result<(), VmError> {
        if self.qemu.try_exit()?.is_none() {
            let _ = self.qmp("quit", None);
            if self.qemu.wait_timeout(Duration::from_secs(10))?.is_none() {
                self.qemu.stop(Duration::from_secs(2));
            }
        }
        self.console.poll();
        Ok(())
    }
}

/// Starts QEMU (the `start`-th time for this VM) and the watcher of its
/// event socket.
fn start_qemu(
    spec: &VmSpec,
    start: u32,
) -> Result<(ManagedChild, JoinHandle<StopEvents>), VmError> {
    let qemu_bin = artifacts::host_tool("/usr/bin/qemu-system-x86_64", "qemu-system-x86")?;
    let bios = match spec.firmware {
        Firmware::Ovmf => Some(artifacts::ovmf()?),
        Firmware::SeaBios => {
            // QEMU's default; checked so a missing package is named.
            artifacts::host_tool("/usr/share/seabios/bios-256k.bin", "seabios")?;
            None
        }
    };
    if spec.tftp.is_some() {
        // The virtio-net option ROM that does the network boot.
        artifacts::host_tool("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu")?;
    }
    let netdev = netdev_arg(spec)?;
    let console_path = spec.work_dir.join("console.log");
    let qmp_socket = spec.work_dir.join("qmp.sock");
    let events_socket = spec.work_dir.join("qmp-events.sock");
    let _ = std::fs::remove_file(&qmp_socket);
    let _ = std::fs::remove_file(&events_socket);

    let mut cmd = Command::new(qemu_bin);
    cmd.args(["-accel", "tcg", "-machine", "q35", "-cpu", "max"])
        .args(["-m", &spec.memory_mib.to_string()])
        .args(["-smp", &spec.smp.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-action", "reboot=shutdown"]);
    if let Some(bios) = &bios {
        cmd.arg("-bios").arg(bios);
    }
    cmd.arg("-chardev")
        .arg(format!(
            "file,id=console,path={},append=on",
            console_path.display()
        ))
        .args(["-serial", "chardev:console"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_socket.display()))
        // QEMU waits for the watcher before it runs the guest: no event is
        // missed.
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=on",
            events_socket.display()
        ))
        .args(["-netdev", &netdev])
        .args(["-device", &nic_device(spec)])
        // A hardware watchdog, as on metal; its expiry resets the guest
        // (a power cycle here).
        .args(["-device", "i6300esb", "-action", "watchdog=reset"]);
    if let Some(disk) = &spec.disk {
        cmd.arg("-drive")
            .arg(format!(
                "file={},format={},if=none,id=disk0",
                disk.display(),
                spec.disk_format
            ))
            .args(["-device", &disk_device(spec)]);
    }
    if let Some(iso) = &spec.cdrom {
        cmd.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=cd0,media=cdrom,readonly=on",
                iso.display()
            ))
            .args(["-device", "ide-cd,drive=cd0,bootindex=0"]);
    }
    for (i, d) in spec.extra_disks.iter().enumerate() {
        cmd.arg("-drive")
            .arg(format!(
                "file={},format={},if=none,id=extra{i}",
                d.path.display(),
                d.format
            ))
            .args([
                "-device",
                &format!("virtio-blk-pci,drive=extra{i},serial={}", d.serial),
            ]);
    }
    cmd.args(&spec.extra_args);

    tracing::info!(command = %crate::command::describe(&cmd), start, "starting QEMU");
    let log = match start {
        1 => spec.work_dir.join("qemu.log"),
        n => spec.work_dir.join(format!("qemu-{n}.log")),
    };
    let qemu = ManagedChild::spawn("qemu", cmd, &log)?;
    let events = std::thread::spawn(move || watch_shutdown_events(&events_socket));
    Ok((qemu, events))
}

/// The `-netdev` value: the user-mode network with `restrict=on`, its
/// forwards and, for a network boot, its TFTP directory and boot file.
fn netdev_arg(spec: &VmSpec) -> Result<String, VmError> {
    let mut netdev = String::from("user,id=n0,restrict=on");
    for (host, guest) in &spec.hostfwd {
        let _ = write!(netdev, ",hostfwd=tcp:127.0.0.1:{host}-:{guest}");
    }
    for fwd in &spec.guestfwd {
        if fwd.command.contains(',') {
            return Err(VmError::BadForward(fwd.command.clone()));
        }
        let _ = write!(
            netdev,
            ",guestfwd=tcp:{}:{}-cmd:{}",
            fwd.guest_ip, fwd.guest_port, fwd.command
        );
    }
    if let Some(tftp) = &spec.tftp {
        let dir = tftp.dir.display().to_string();
        for value in [&dir, &tftp.bootfile] {
            if value.contains(',') {
                return Err(VmError::BadTftp(value.clone()));
            }
        }
        let _ = write!(netdev, ",tftp={dir},bootfile={}", tftp.bootfile);
    }
    Ok(netdev)
}

/// The NIC's `-device` value: first in the boot order for a network boot.
fn nic_device(spec: &VmSpec) -> String {
    let mut nic = String::from("virtio-net-pci,netdev=n0");
    if spec.tftp.is_some() {
        nic.push_str(",bootindex=0");
    }
    nic
}

/// The disk's `-device` value. The disk boots first (bootindex=0: the
/// firmware does not try PXE on the NIC, which only times out on a
/// restricted network), or second after the NIC for a network boot.
fn disk_device(spec: &VmSpec) -> String {
    let index = if spec.tftp.is_some() || spec.cdrom.is_some() {
        1
    } else {
        0
    };
    format!("virtio-blk-pci,drive=disk0,bootindex={index}")
}

/// What a QEMU process reported about how it stopped the guest.
#[derive(Debug, Default)]
struct StopEvents {
    /// The last `SHUTDOWN` event's reason.
    reason: Option<String>,
    /// A `WATCHDOG` event came (the guest's watchdog expired).
    watchdog: bool,
}

/// Connects to QEMU's event socket and returns what it reported once QEMU
/// closes it (nothing if the socket never appeared because QEMU failed to
/// start).
fn watch_shutdown_events(socket: &Path) -> StopEvents {
    let mut seen = StopEvents::default();
    let deadline = Instant::now() + EVENT_SOCKET_WAIT;
    let events = loop {
        match qmp::events(socket) {
            Ok(events) => break events,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no QEMU event socket");
                return seen;
            }
        }
    };
    for msg in events {
        match msg.get("event").and_then(Value::as_str) {
            Some("WATCHDOG") => {
                seen.watchdog = true;
                tracing::info!(data = %msg["data"], "the guest's watchdog expired");
            }
            Some("SHUTDOWN") => {
                seen.reason = msg
                    .pointer("/data/reason")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                tracing::info!(
                    reason = seen.reason.as_deref().unwrap_or("?"),
                    "QEMU stopped the guest"
                );
            }
            _ => {}
        }
    }
    seen
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.qemu.stop(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_defaults_boot_the_disk_with_ovmf_and_no_network_boot() {
        let mut spec = VmSpec::new(Some("/d.qcow2".into()), Path::new("/w"));
        assert_eq!(spec.firmware, Firmware::Ovmf);
        assert!(spec.tftp.is_none());
        assert_eq!(netdev_arg(&spec).unwrap(), "user,id=n0,restrict=on");
        assert_eq!(nic_device(&spec), "virtio-net-pci,netdev=n0");
        assert_eq!(disk_device(&spec), "virtio-blk-pci,drive=disk0,bootindex=0");
        spec.hostfwd.push((5000, 50000));
        spec.guestfwd.push(GuestFwd {
            guest_ip: Ipv4Addr::new(10, 0, 2, 100),
            guest_port: 8080,
            command: "/bin/keelson-relay 41234".into(),
        });
        assert_eq!(
            netdev_arg(&spec).unwrap(),
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:5000-:50000,\
             guestfwd=tcp:10.0.2.100:8080-cmd:/bin/keelson-relay 41234"
        );
    }

    #[test]
    fn a_network_boot_serves_tftp_and_puts_the_nic_first() {
        let mut spec = VmSpec::new(Some("/d.qcow2".into()), Path::new("/w"));
        spec.firmware = Firmware::SeaBios;
        spec.tftp = Some(Tftp {
            dir: "/out/netboot".into(),
            bootfile: "keelson.ipxe".into(),
        });
        assert_eq!(
            netdev_arg(&spec).unwrap(),
            "user,id=n0,restrict=on,tftp=/out/netboot,bootfile=keelson.ipxe"
        );
        assert_eq!(nic_device(&spec), "virtio-net-pci,netdev=n0,bootindex=0");
        assert_eq!(disk_device(&spec), "virtio-blk-pci,drive=disk0,bootindex=1");
        for (dir, bootfile) in [("/a,b", "keelson.ipxe"), ("/out", "x,y")] {
            spec.tftp = Some(Tftp {
                dir: dir.into(),
                bootfile: bootfile.into(),
            });
            let err = netdev_arg(&spec).unwrap_err();
            assert!(matches!(err, VmError::BadTftp(_)), "{err}");
            assert!(err.to_string().contains("comma"), "{err}");
        }
    }
}
