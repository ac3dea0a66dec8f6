//! Console logging: every log line and every boot marker goes to the kernel
//! console (`/dev/console`, the serial port on a node), or to stderr when
//! init is not PID 1.
//!
//! Log events go through `tracing` (compact, no ANSI colours, no timestamps:
//! the serial log has its own clock). Markers that tests and benchmarks grep
//! (`keelson: phase=… took_ms=…`, `keelson: node ready …`) are written as
//! raw lines through [`marker`], so their format is exact.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// The shared console sink: `/dev/console` when it could be opened, else
/// stderr.
static SINK: OnceLock<Arc<Mutex<Sink>>> = OnceLock::new();

enum Sink {
    Console(File),
    Stderr,
}

impl Sink {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Console(f) => f.write_all(buf),
            Sink::Stderr => std::io::stderr().write_all(buf),
        }
    }
}

/// A `tracing` writer that appends to the shared console sink.
#[derive(Clone)]
struct ConsoleWriter(Arc<Mutex<Sink>>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut sink = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sink.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Opens the console (when `use_dev_console`, i.e. PID 1 with /dev mounted)
/// and installs the global `tracing` subscriber: INFO and above, DEBUG with
/// `keelson.debug` on the kernel command line. When PID 1, the console also
/// becomes stdin/stdout/stderr so that children (e2fsck, …) print there.
/// Calling it twice keeps the first sink.
pub fn init(use_dev_console: bool) {
    let sink = SINK.get_or_init(|| {
        let sink = if use_dev_console {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/console")
            {
                Ok(f) => {
                    redirect_stdio(&f);
                    Sink::Console(f)
                }
                Err(_) => Sink::Stderr,
            }
        } else {
            Sink::Stderr
        };
        Arc::new(Mutex::new(sink))
    });
    let writer = ConsoleWriter(Arc::clone(sink));
    // A second global subscriber cannot be installed; that is fine (tests).
    let debug = std::fs::read_to_string("/proc/cmdline")
        .map(|c| c.split_whitespace().any(|w| w == "keelson.debug"))
        .unwrap_or(false);
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(writer)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .compact()
        .try_init();
}

/// Points fds 0, 1 and 2 at the console file.
fn redirect_stdio(console: &File) {
    let fd = console.as_raw_fd();
    for target in 0..=2 {
        // SAFETY: dup2 on a valid open fd onto the standard descriptors; no
        // Rust object owns fds 0-2 exclusively.
        unsafe {
            libc::dup2(fd, target);
        }
    }
}

/// Writes one exact marker line (`keelson: …`) to the console. Falls back to
/// stderr before [`init`] has run.
pub fn marker(line: &str) {
    let text = format!("keelson: {line}\n");
    match SINK.get() {
        Some(sink) => {
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            let _ = s.write_all(text.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}
