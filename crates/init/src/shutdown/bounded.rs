//! Running a blocking system call (umount, remount, sync, fsync) that can
//! hang in the kernel (D state) without hanging the shutdown: it runs on
//! its own thread and the caller stops waiting at the bound. A hung thread
//! is left behind; reboot(2) ends it with everything else.

use std::time::Duration;

/// Runs `f` on a new thread and waits at most `bound` for its result.
/// `None` when the bound passed first (or no thread could be started).
pub(crate) fn blocking<T, F>(what: &str, bound: Duration, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("shutdown-op".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(error) = spawned {
        tracing::error!(op = what, %error, "cannot start a thread for a bounded operation");
        return None;
    }
    match rx.recv_timeout(bound) {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(
                op = what,
                bound_ms = bound.as_millis() as u64,
                "no end within the bound; going on without it"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_quick_operation_returns_its_value() {
        assert_eq!(blocking("add", Duration::from_secs(5), || 2 + 2), Some(4));
    }

    #[test]
    fn a_hung_operation_is_abandoned_at_the_bound() {
        let t = Instant::now();
        let r = blocking("hang", Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(30));
            1
        });
        assert_eq!(r, None);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
