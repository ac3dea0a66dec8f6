//! Progress lines for the long steps, on stderr:
//! `[3/9] squashfs: 212 MiB -> 61 MiB in 14.2 s`.

use std::time::Instant;

/// Numbered steps of one command.
#[derive(Debug)]
pub struct Steps {
    total: usize,
    done: usize,
}

/// One running step; [`Step::finish`] prints its result line.
#[derive(Debug)]
pub struct Step {
    label: String,
    started: Instant,
}

impl Steps {
    /// A command with `total` steps.
    pub fn new(total: usize) -> Self {
        Steps { total, done: 0 }
    }

    /// Starts the next step and prints `[n/total] name ...`.
    pub fn start(&mut self, name: &str) -> Step {
        self.done += 1;
        let label = format!("[{}/{}] {}", self.done, self.total, name);
        eprintln!("{label} ...");
        Step {
            label,
            started: Instant::now(),
        }
    }
}

impl Step {
    /// Prints `[n/total] name: DETAIL in S s`.
    pub fn finish(self, detail: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        if detail.is_empty() {
            eprintln!("{} done in {secs:.1} s", self.label);
        } else {
            eprintln!("{}: {detail} in {secs:.1} s", self.label);
        }
    }
}

/// Formats a byte count as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
