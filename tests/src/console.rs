//! The guest's serial console, captured by QEMU into a file and read here
//! line by line: every line is timestamped (time since the VM started) when
//! the harness first sees it, searched with regular expressions, and checked
//! for kernel faults (panics, oopses, hard lockups, init panics) that make
//! waiting pointless. Faults are reported with their line, never retried
//! away. Soft lockups and RCU stalls are printed as warnings, not faults:
//! under TCG on a busy host they mean the vCPU thread was not scheduled
//! for 20 s (seen with two VMs and a compiler on 2 cores), and a guest that
//! really hangs still fails the scenario at its timeout.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;

/// One console line and when the harness saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleLine {
    /// The text, without the line ending.
    pub text: String,
    /// Time from the VM's start until the harness read the line (polling
    /// every 50 ms: add up to that much).
    pub at: Duration,
}

/// A kernel or init failure recognised on the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What kind of failure (`soft lockup`, `RCU stall`, …).
    pub kind: &'static str,
    /// The console line that showed it.
    pub line: String,
}

/// Console lines that mean the guest is broken, with a name for each.
const FAULTS: &[(&str, &str)] = &[
    ("hard lockup", r"Watchdog detected hard LOCKUP"),
    ("kernel panic", r"Kernel panic - not syncing"),
    ("kernel oops", r"(BUG: unable to handle|Oops: [0-9a-f]{4})"),
    ("init panic", r"panicked at "),
];

/// Console lines worth a warning on stderr (host starvation under TCG).
const WARNINGS: &[&str] = &[
    r"BUG: soft lockup",
    r"rcu: INFO: rcu_\w+ (self-)?detected stall",
];

/// A reader of the console log file.
#[derive(Debug)]
pub struct Console {
    path: PathBuf,
    started: Instant,
    offset: u64,
    partial: Vec<u8>,
    lines: Vec<ConsoleLine>,
    cursor: usize,
    fault: Option<Fault>,
    fault_patterns: Vec<(&'static str, Regex)>,
}

impl Console {
    /// A reader of `path` (which may not exist yet), timing lines from
    /// `started`.
    pub fn new(path: &Path, started: Instant) -> Self {
        let fault_patterns = FAULTS
            .iter()
            // The patterns are constants checked by this module's tests.
            .filter_map(|(kind, re)| Regex::new(re).ok().map(|re| (*kind, re)))
            .collect();
        Console {
            path: path.to_path_buf(),
            started,
            offset: 0,
            partial: Vec::new(),
            lines: Vec::new(),
            cursor: 0,
            fault: None,
            fault_patterns,
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call. An unreadable or
    /// missing file reads as nothing new.
    pub fn poll(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        let at = self.started.elapsed();
        self.partial.extend_from_slice(&buf);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&raw[..raw.len() - 1])
                .replace('\r', "")
                .to_string();
            self.push(text, at);
        }
    }

    /// The incomplete last line, if the guest has not ended it yet.
    pub fn partial_line(&self) -> String {
        String::from_utf8_lossy(&self.partial).replace('\r', "")
    }

    fn push(&mut self, text: String, at: Duration) {
        if WARNINGS
            .iter()
            .any(|w| Regex::new(w).is_ok_and(|re| re.is_match(&text)))
        {
            eprintln!(
                "warning: guest starved of CPU at {:.1}s (not a failure by itself): {text}",
                at.as_secs_f64()
            );
        }
        if self.fault.is_none() {
            if let Some((kind, _)) = self
                .fault_patterns
                .iter()
                .find(|(_, re)| re.is_match(&text))
            {
                self.fault = Some(Fault {
                    kind,
                    line: text.clone(),
                });
            }
        }
        self.lines.push(ConsoleLine { text, at });
    }

    /// Every line read so far.
    pub fn lines(&self) -> &[ConsoleLine] {
        &self.lines
    }

    /// The first fault seen on the console, if any.
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_ref()
    }

    /// The first line at or after the cursor matching `re`; moves the
    /// cursor past it. Lines before the cursor (already consumed by an
    /// earlier match) are never matched again, so successive calls assert
    /// order.
    pub fn take_match(&mut self, re: &Regex) -> Option<ConsoleLine> {
        let idx = self.lines[self.cursor..]
            .iter()
            .position(|l| re.is_match(&l.text))?
            + self.cursor;
        self.cursor = idx + 1;
        Some(self.lines[idx].clone())
    }

    /// Every line read so far (from the very start) matching `re`.
    pub fn all_matching(&self, re: &Regex) -> Vec<ConsoleLine> {
        self.lines
            .iter()
            .filter(|l| re.is_match(&l.text))
            .cloned()
            .collect()
    }

    /// The last `n` lines (plus an unterminated last line), for messages.
    pub fn tail(&self, n: usize) -> String {
        let mut text = self.lines[self.lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let partial = self.partial_line();
        if !partial.is_empty() {
            text.push('\n');
            text.push_str(&partial);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_split_matched_in_order_and_faults_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut console = Console::new(&path, Instant::now());
        console.poll(); // missing file: nothing, no error
        assert!(console.lines().is_empty());

        let mut f = File::create(&path).unwrap();
        f.write_all(b"keelson: phase=a took_ms=1\r\nkeelson: phase=b took_")
            .unwrap();
        f.flush().unwrap();
        console.poll();
        assert_eq!(console.lines().len(), 1);
        assert_eq!(console.partial_line(), "keelson: phase=b took_");
        f.write_all(
            b"ms=2\r\n[   20.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kubelet:412]\n[   21.0] BUG: unable to handle page fault for address: 0000000000001234\n",
        )
        .unwrap();
        f.flush().unwrap();
        console.poll();
        assert_eq!(console.lines()[1].text, "keelson: phase=b took_ms=2");

        let phase = Regex::new(r"phase=(\w+)").unwrap();
        assert_eq!(
            console.take_match(&phase).unwrap().text,
            "keelson: phase=a took_ms=1"
        );
        assert_eq!(
            console.take_match(&phase).unwrap().text,
            "keelson: phase=b took_ms=2"
        );
        assert!(
            console.take_match(&phase).is_none(),
            "consumed lines must not match again"
        );
        assert_eq!(console.all_matching(&phase).len(), 2);

        // A soft lockup is host starvation, not a fault; the oops is.
        let fault = console.fault().unwrap();
        assert_eq!(fault.kind, "kernel oops");
        assert!(fault.line.contains("0000000000001234"));
        assert!(console.tail(2).contains("soft lockup"));
    }

    #[test]
    fn every_fault_pattern_compiles_and_matches_a_real_kernel_line() {
        let samples = [
            "[   40.0] NMI watchdog: Watchdog detected hard LOCKUP on cpu 0",
            "[    2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
            "[    9.9] BUG: unable to handle page fault for address: 0000000000001234",
            "thread 'main' panicked at crates/init/src/main.rs:10:5:",
        ];
        assert_eq!(samples.len(), FAULTS.len());
        for ((kind, re), sample) in FAULTS.iter().zip(samples) {
            let re = Regex::new(re).unwrap();
            assert!(re.is_match(sample), "{kind} does not match {sample:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let console = Console::new(&dir.path().join("x"), Instant::now());
        assert_eq!(console.fault_patterns.len(), FAULTS.len());
    }
}
