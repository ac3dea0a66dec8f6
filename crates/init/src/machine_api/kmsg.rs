//! `Dmesg`: the kernel log from `/dev/kmsg` (one record per read:
//! `priority,sequence,microseconds,flags;message`), read on a thread of its
//! own so PID 1's runtime never blocks on it.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;

use tokio::sync::mpsc;

/// One kernel log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Syslog priority (0 emergency … 7 debug).
    pub priority: u8,
    /// Microseconds since boot.
    pub usec: u64,
    /// The message (continuation lines dropped).
    pub message: String,
}

/// Parses one `/dev/kmsg` record.
pub fn parse(raw: &[u8]) -> Option<Record> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once(';')?;
    let mut fields = head.split(',');
    let prio: u32 = fields.next()?.trim().parse().ok()?;
    let _seq = fields.next()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    let message = body.lines().next().unwrap_or("").to_string();
    Some(Record {
        priority: u8::try_from(prio & 7).ok()?,
        usec,
        message,
    })
}

/// Streams the kernel log: every record kept, then (with `follow`) new ones
/// until the receiver is dropped.
pub fn stream(follow: bool) -> std::io::Result<mpsc::Receiver<Record>> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    if !follow {
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let mut f = opts.open("/dev/kmsg")?;
    let (tx, rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("dmesg".into())
        .spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if let Some(r) = parse(&buf[..n]) {
                            if tx.blocking_send(r).is_err() {
                                return;
                            }
                        }
                    }
                    // EPIPE: records were overwritten while reading; go on.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    // EAGAIN without follow: the end of the log.
                    Err(_) => return,
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn records_are_parsed_with_priority_and_time() {
        let r =
            parse(b"6,339,5140900,-;NET: Registered protocol family 10\n SUBSYSTEM=net\n").unwrap();
        assert_eq!(r.priority, 6);
        assert_eq!(r.usec, 5_140_900);
        assert_eq!(r.message, "NET: Registered protocol family 10");
        // Facility bits above the priority are masked off.
        assert_eq!(parse(b"14,1,2,-;x").unwrap().priority, 6);
        assert!(parse(b"garbage").is_none());
    }
}
