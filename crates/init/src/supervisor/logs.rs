//! Service output: stdout and stderr read from pipes, split into lines,
//! kept in a bounded in-memory ring, broadcast to followers, and appended to
//! `<log_dir>/<service>.log` with size-based rotation.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

/// Limits of what is kept per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines kept in memory.
    pub ring_lines: usize,
    /// Bytes of line text kept in memory.
    pub ring_bytes: usize,
    /// Longer lines are cut here and end with a `…[truncated N bytes]` marker.
    pub line_max: usize,
    /// The log file is rotated before it would grow past this size.
    pub file_max: u64,
    /// Rotated files kept (`<name>.log.1` … `<name>.log.<file_keep>`).
    pub file_keep: usize,
}

impl Default for LogLimits {
    /// 1000 lines / 256 KiB in memory, 8 KiB lines, 8 MiB files, 2 rotated.
    fn default() -> Self {
        Self {
            ring_lines: 1000,
            ring_bytes: 256 * 1024,
            line_max: 8 * 1024,
            file_max: 8 * 1024 * 1024,
            file_keep: 2,
        }
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        })
    }
}

/// One line of service output (without its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When init read it.
    pub at: SystemTime,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The text, invalid UTF-8 replaced, possibly truncated with a marker.
    pub text: String,
}

/// Splits a byte stream into lines, truncating overlong ones.
struct LineSplitter {
    buf: Vec<u8>,
    dropped: usize,
    max: usize,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            dropped: 0,
            max: max.max(1),
        }
    }

    /// Feeds bytes; returns the lines they completed.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let (chunk, newline) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            let room = self.max.saturating_sub(self.buf.len());
            let kept = chunk.len().min(room);
            self.buf.extend_from_slice(&chunk[..kept]);
            self.dropped += chunk.len() - kept;
            bytes = &bytes[chunk.len() + usize::from(newline)..];
            if newline {
                lines.push(self.take());
            }
        }
        lines
    }

    /// The unterminated rest at end of stream, if any.
    fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty() || self.dropped > 0).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!(" …[truncated {} bytes]", self.dropped));
        }
        self.buf.clear();
        self.dropped = 0;
        text
    }
}

/// The bounded in-memory ring.
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, line: LogLine, limits: &LogLimits) {
        self.bytes += line.text.len();
        self.lines.push_back(line);
        while self.lines.len() > 1
            && (self.lines.len() > limits.ring_lines || self.bytes > limits.ring_bytes)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.text.len();
            }
        }
    }

    fn tail(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

/// `<dir>/<name>.log`, appended to and rotated by size.
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
}

impl LogFile {
    fn open(dir: &Path, name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self { path, file, size })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends whole lines, rotating between lines so no file grows past
    /// `file_max` (unless a single line is larger than that).
    fn write_lines(&mut self, lines: &[Vec<u8>], limits: &LogLimits) -> io::Result<()> {
        let mut pending: Vec<u8> = Vec::new();
        for line in lines {
            let filled = self.size + pending.len() as u64;
            if filled > 0 && filled + line.len() as u64 > limits.file_max {
                self.append(&pending)?;
                pending.clear();
                self.rotate(limits.file_keep)?;
            }
            pending.extend_from_slice(line);
        }
        self.append(&pending)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `<name>.log.(k-1)` → `.k` … `.log` → `.log.1`, then a fresh `.log`.
    fn rotate(&mut self, keep: usize) -> io::Result<()> {
        if keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

struct Sinks {
    ring: Ring,
    file: Option<LogFile>,
    /// A warning about the file was logged and not yet cleared by success.
    file_warned: bool,
}

/// Everything one service has printed, across its restarts.
pub(crate) struct ServiceLog {
    name: String,
    dir: PathBuf,
    limits: LogLimits,
    sinks: Mutex<Sinks>,
    followers: broadcast::Sender<LogLine>,
}

impl ServiceLog {
    pub fn new(name: &str, dir: PathBuf, limits: LogLimits) -> Arc<Self> {
        let (followers, _) = broadcast::channel(1024);
        Arc::new(Self {
            name: name.to_string(),
            dir,
            limits,
            sinks: Mutex::new(Sinks {
                ring: Ring {
                    lines: VecDeque::new(),
                    bytes: 0,
                },
                file: None,
                file_warned: false,
            }),
            followers,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Sinks> {
        // Every mutation leaves the sinks consistent; poisoning is harmless.
        self.sinks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (Re)opens the log file if it is not open; called before each start,
    /// so logs reach the file once the directory becomes writable. Says
    /// once (per failure streak) when it cannot, and keeps the ring only.
    pub fn open_file(&self) {
        let mut sinks = self.lock();
        if sinks.file.is_some() {
            return;
        }
        match LogFile::open(&self.dir, &self.name) {
            Ok(file) => {
                if sinks.file_warned {
                    tracing::info!(service = %self.name, path = %file.path.display(), "log file writable again");
                }
                sinks.file = Some(file);
                sinks.file_warned = false;
            }
            Err(error) => {
                if !sinks.file_warned {
                    tracing::warn!(service = %self.name, dir = %self.dir.display(), %error,
                        "log directory not writable; keeping the in-memory ring only");
                    sinks.file_warned = true;
                }
            }
        }
    }

    /// Adds complete lines to the ring, the followers and the file.
    fn push(&self, stream: LogStream, texts: Vec<String>) {
        if texts.is_empty() {
            return;
        }
        let at = SystemTime::now();
        let mut sinks = self.lock();
        let mut file_lines = Vec::new();
        for text in texts {
            if sinks.file.is_some() {
                file_lines.push(format!("{} {stream} {text}\n", format_rfc3339(at)).into_bytes());
            }
            let line = LogLine { at, stream, text };
            // Sent under the lock so `follow` sees no gap and no duplicate.
            let _ = self.followers.send(line.clone());
            sinks.ring.push(line, &self.limits);
        }
        if let Some(file) = sinks.file.as_mut() {
            if let Err(error) = file.write_lines(&file_lines, &self.limits) {
                tracing::warn!(service = %self.name, path = %file.path.display(), %error,
                    "cannot write the log file; keeping the in-memory ring only");
                sinks.file = None;
                sinks.file_warned = true;
            }
        }
    }

    /// The last `n` lines. Lines of one stream keep their order; stdout and
    /// stderr are read independently, so across streams the order is the
    /// order init read them in.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        self.lock().ring.tail(n)
    }

    /// The last `n` lines and a receiver of every later line, with no gap.
    pub fn follow(&self, n: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let sinks = self.lock();
        (sinks.ring.tail(n), self.followers.subscribe())
    }

    /// Reads a pipe until EOF (every writer closed it, grandchildren
    /// included), logging its lines.
    pub async fn pump(self: Arc<Self>, fd: OwnedFd, stream: LogStream) {
        let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(pipe) => pipe,
            Err(error) => {
                tracing::warn!(service = %self.name, %stream, %error, "cannot read the output pipe");
                return;
            }
        };
        let mut splitter = LineSplitter::new(self.limits.line_max);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => self.push(stream, splitter.feed(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(service = %self.name, %stream, %error, "reading the output pipe failed");
                    break;
                }
            }
        }
        if let Some(rest) = splitter.finish() {
            self.push(stream, vec![rest]);
        }
    }
}

/// `2026-11-26T00:27:51.123Z`, without a date library.
pub(crate) fn format_rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar,
    // 400-year eras of 146097 days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn splitter_joins_chunks_and_truncates_long_lines_with_marker() {
        let mut s = LineSplitter::new(8);
        assert!(s.feed(b"hel").is_empty());
        assert_eq!(s.feed(b"lo\nwor"), vec!["hello".to_string()]);
        assert_eq!(
            s.feed(b"ld and much more\nx\n"),
            vec![
                "world an …[truncated 11 bytes]".to_string(),
                "x".to_string()
            ]
        );
        assert_eq!(s.feed(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish(), Some("tail".to_string()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn ring_keeps_the_last_lines_within_line_and_byte_limits() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            ring_lines: 5,
            ring_bytes: 1000,
            ..LogLimits::default()
        };
        let log = ServiceLog::new("svc", dir.path().to_path_buf(), limits);
        let (_, mut follower) = log.follow(0);
        log.push(
            LogStream::Stdout,
            (0..12).map(|i| format!("line {i}")).collect(),
        );
        let tail: Vec<String> = log.tail(100).into_iter().map(|l| l.text).collect();
        assert_eq!(tail, ["line 7", "line 8", "line 9", "line 10", "line 11"]);
        assert_eq!(log.tail(2).len(), 2);
        assert_eq!(follower.try_recv().unwrap().text, "line 0");

        let small = LogLimits {
            ring_lines: 100,
            ring_bytes: 10,
            ..LogLimits::default()
        };
        let log = ServiceLog::new("svc2", dir.path().to_path_buf(), small);
        log.push(
            LogStream::Stderr,
            vec!["abcd".into(), "efgh".into(), "ijkl".into()],
        );
        let tail: Vec<String> = log.tail(100).into_iter().map(|l| l.text).collect();
        assert_eq!(tail, ["efgh", "ijkl"]);
    }

    #[test]
    fn file_rotates_at_the_size_limit_and_keeps_two() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            file_max: 1000,
            file_keep: 2,
            ..LogLimits::default()
        };
        let log = ServiceLog::new("rot", dir.path().to_path_buf(), limits);
        log.open_file();
        // Each file line is "<24-char time> stdout <50 chars>\n" = 83 bytes.
        for i in 0..40 {
            log.push(LogStream::Stdout, vec![format!("{i:050}")]);
        }
        let read = |suffix: &str| {
            std::fs::read_to_string(dir.path().join(format!("rot.log{suffix}"))).unwrap()
        };
        let (cur, one, two) = (read(""), read(".1"), read(".2"));
        assert!(!dir.path().join("rot.log.3").exists());
        for content in [&cur, &one, &two] {
            assert!(content.len() <= 1000, "{}", content.len());
        }
        // 12 lines fit in 1000 bytes: 40 = 12 + 12 + 12 (rotated twice more,
        // the oldest dropped) + 4 current.
        assert_eq!(one.lines().count(), 12);
        assert_eq!(two.lines().count(), 12);
        assert_eq!(cur.lines().count(), 4);
        assert!(cur
            .lines()
            .last()
            .unwrap()
            .ends_with(&format!(" stdout {:050}", 39)));
        assert!(two
            .lines()
            .next()
            .unwrap()
            .ends_with(&format!(" stdout {:050}", 12)));
    }

    #[test]
    fn unwritable_dir_keeps_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let log = ServiceLog::new("svc", blocker.join("log"), LogLimits::default());
        log.open_file();
        log.push(LogStream::Stdout, vec!["still kept".into()]);
        assert_eq!(log.tail(1)[0].text, "still kept");
    }

    #[test]
    fn formats_utc_timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_652_871_123);
        assert_eq!(format_rfc3339(t), "2026-11-26T00:27:51.123Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
