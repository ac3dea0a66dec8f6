//! What the test file servers share ([`crate::bundle_server`] over HTTPS,
//! [`crate::http_server`] over plain HTTP): the accept loop on 127.0.0.1
//! that ends when the server is dropped, reading a request's head, finding
//! the file a request path names inside the served directory (and nowhere
//! else), copying a body while counting what was sent, and the request log.

use std::fs::{File, Metadata};
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The response to a path that names no file.
pub(crate) const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Most header lines read from one request (a client sending more is not
/// one of ours).
const MAX_HEADERS: usize = 100;

/// A listener on `127.0.0.1:<free port>` handing each connection to a
/// handler on its own thread; stops accepting when dropped.
pub(crate) struct Acceptor {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    /// Binds `127.0.0.1:0` and starts accepting.
    pub(crate) fn start(
        handler: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> std::io::Result<Acceptor> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let handler = handler.clone();
                std::thread::spawn(move || handler(tcp));
            }
        });
        Ok(Acceptor { port, stop })
    }

    /// The port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The request line and headers of one request.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// The method, e.g. `GET`.
    pub(crate) method: String,
    /// The request target as sent, e.g. `/rootfs.squashfs`.
    pub(crate) path: String,
    /// Header names (lower case) and values.
    headers: Vec<(String, String)>,
}

impl RequestHead {
    /// Reads a request head up to its empty line (or the end of input).
    /// A connection closed before the request line is an error.
    pub(crate) fn read(reader: &mut impl BufRead) -> std::io::Result<RequestHead> {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a request",
            ));
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let path = words.next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        for _ in 0..MAX_HEADERS {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Ok(RequestHead {
            method,
            path,
            headers,
        })
    }

    /// The value of header `name` (lower case), if sent.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a request path names in the served directory.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A regular file, opened, with its metadata taken from the open file
    /// (so a file replaced meanwhile is consistently the old or the new).
    Found(File, Metadata),
    /// Nothing, or not a regular file.
    Missing,
    /// The path could lead out of the directory (`..`), or is not a plain
    /// relative path at all: never looked up.
    Refused,
}

/// Finds the file `path` (a request target: `/NAME` or `/DIR/NAME`, the
/// query ignored, not percent-decoded) names under `dir`. Every segment
/// must be a plain name: not empty, not starting with `.` (so neither `.`
/// nor `..`, nor hidden files), no backslash or NUL. The file is opened
/// now, so each request reads what is on disk at that moment.
pub(crate) fn lookup(dir: &Path, path: &str) -> Lookup {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let Some(relative) = path.strip_prefix('/') else {
        return Lookup::Refused;
    };
    let plain = |segment: &str| {
        !segment.is_empty() && !segment.starts_with('.') && !segment.contains(['\\', '\0'])
    };
    if !relative.split('/').all(plain) {
        return Lookup::Refused;
    }
    let Ok(file) = File::open(dir.join(relative)) else {
        return Lookup::Missing;
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() => Lookup::Found(file, meta),
        _ => Lookup::Missing,
    }
}

/// Copies at most `max` bytes of `from` to `to`, adding each chunk written
/// to `sent` as it goes (so a failed copy still tells how far it got).
/// Stops early at the end of `from`.
pub(crate) fn copy_counted(
    from: &mut impl Read,
    to: &mut impl Write,
    max: u64,
    sent: &mut u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = max;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = from.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n])?;
        *sent += n as u64;
        left -= n as u64;
    }
    Ok(())
}

/// The requests a server answered, in order; shared with its threads.
#[derive(Debug)]
pub(crate) struct RequestLog<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for RequestLog<T> {
    fn clone(&self) -> Self {
        RequestLog(self.0.clone())
    }
}

impl<T: Clone> RequestLog<T> {
    /// An empty log.
    pub(crate) fn new() -> Self {
        RequestLog(Arc::new(Mutex::new(Vec::new())))
    }

    /// Records one answered request.
    pub(crate) fn push(&self, entry: T) {
        if let Ok(mut l) = self.0.lock() {
            l.push(entry);
        }
    }

    /// Every request recorded so far.
    pub(crate) fn entries(&self) -> Vec<T> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn lookup_stays_inside_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("served");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), b"a").unwrap();
        std::fs::write(dir.join("sub/b"), b"b").unwrap();
        std::fs::write(root.path().join("secret"), b"s").unwrap();
        assert!(matches!(lookup(&dir, "/a"), Lookup::Found(..)));
        assert!(matches!(lookup(&dir, "/a?x=1"), Lookup::Found(..)));
        assert!(matches!(lookup(&dir, "/sub/b"), Lookup::Found(..)));
        assert!(matches!(lookup(&dir, "/nope"), Lookup::Missing));
        assert!(matches!(lookup(&dir, "/sub"), Lookup::Missing));
        assert!(matches!(lookup(&dir, "/%2e%2e/secret"), Lookup::Missing));
        for bad in [
            "/../secret",
            "/sub/../a",
            "/sub/../../secret",
            "/./a",
            "/",
            "//a",
            "/sub/",
            "a",
            "http://h/a",
            "/..\\secret",
            "/.hidden",
        ] {
            assert!(matches!(lookup(&dir, bad), Lookup::Refused), "{bad}");
        }
    }

    #[test]
    fn copy_counted_stops_at_the_limit_or_the_end() {
        let mut out = Vec::new();
        let mut sent = 0;
        copy_counted(&mut &b"hello world"[..], &mut out, 5, &mut sent).unwrap();
        assert_eq!((out.as_slice(), sent), (&b"hello"[..], 5));
        let mut out = Vec::new();
        let mut sent = 0;
        copy_counted(&mut &b"hello"[..], &mut out, u64::MAX, &mut sent).unwrap();
        assert_eq!((out.as_slice(), sent), (&b"hello"[..], 5));
    }
}
