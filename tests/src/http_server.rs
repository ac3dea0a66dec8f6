//! A plain-HTTP static file server for network-boot tests: it serves the
//! files of one directory (`GET` and `HEAD`, `Content-Length` always set,
//! one request per connection with `Connection: close`) and records every
//! request so a test can assert what the guest fetched. Each request opens
//! the file afresh, so a test can swap a file (rename a new one over it)
//! between requests. Paths cannot leave the directory: a `..` segment (or
//! any segment starting with `.`) is refused with 400.
//!
//! It listens on 127.0.0.1 only; a guest reaches it through a QEMU
//! `guestfwd` running `keelson-relay PORT` (see [`crate::qemu::GuestFwd`]).
//! The HTTPS sibling with faults and ranges is [`crate::bundle_server`].

use std::io::{BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::http_common::{self, Acceptor, Lookup, RequestHead, RequestLog};

/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpServerError {
    /// The directory to serve is not one.
    #[error("cannot serve {dir}: not a directory")]
    NotADirectory {
        /// The path given.
        dir: PathBuf,
    },
    /// The socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The request method (`GET`, `HEAD`, or what the client sent).
    pub method: String,
    /// The request path as sent.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// Body bytes actually sent.
    pub sent: u64,
}

/// A running server; stops accepting when dropped.
pub struct HttpServer {
    acceptor: Acceptor,
    log: RequestLog<Served>,
}

impl HttpServer {
    /// Serves the files under `dir` at `http://127.0.0.1:<port>/<name>`.
    pub fn start(dir: &Path) -> Result<HttpServer, HttpServerError> {
        if !dir.is_dir() {
            return Err(HttpServerError::NotADirectory {
                dir: dir.to_owned(),
            });
        }
        let log = RequestLog::new();
        let dir: Arc<Path> = dir.into();
        let served = log.clone();
        let acceptor = Acceptor::start(move |tcp| {
            if let Err(e) = serve(tcp, &dir, &served) {
                tracing::debug!(error = %e, "HTTP server connection ended");
            }
        })
        .map_err(|source| HttpServerError::Io {
            what: "listening on 127.0.0.1:0".into(),
            source,
        })?;
        Ok(HttpServer { acceptor, log })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.acceptor.port()
    }

    /// Every request answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.log.entries()
    }
}

/// One connection, one request.
fn serve(mut tcp: TcpStream, dir: &Path, log: &RequestLog<Served>) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    let request = RequestHead::read(&mut BufReader::new(&tcp))?;
    let mut record = Served {
        method: request.method.clone(),
        path: request.path.clone(),
        status: 0,
        sent: 0,
    };
    let head_only = request.method == "HEAD";
    if !head_only && request.method != "GET" {
        record.status = 405;
        tcp.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        log.push(record);
        return Ok(());
    }
    let (mut file, len) = match http_common::lookup(dir, &request.path) {
        Lookup::Found(file, meta) => (file, meta.len()),
        Lookup::Missing => {
            record.status = 404;
            tcp.write_all(http_common::NOT_FOUND)?;
            log.push(record);
            return Ok(());
        }
        Lookup::Refused => {
            record.status = 400;
            tcp.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            log.push(record);
            return Ok(());
        }
    };
    record.status = 200;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes())?;
    let copied = if head_only {
        Ok(())
    } else {
        http_common::copy_counted(&mut file, &mut tcp, len, &mut record.sent)
    };
    let flushed = copied.and_then(|()| tcp.flush());
    log.push(record);
    flushed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Read as _;

    /// Sends `request_line` (and a Host header) on a fresh connection;
    /// returns the status line, the headers (lower-case names) and the body.
    fn fetch(port: u16, request_line: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(tcp, "{request_line}\r\nHost: 10.0.2.100:8080\r\n\r\n").unwrap();
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head");
        let head = String::from_utf8(response[..split].to_vec()).unwrap();
        let body = response[split + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_string();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        (status, headers, body)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn served(method: &str, path: &str, status: u16, sent: u64) -> Served {
        Served {
            method: method.into(),
            path: path.into(),
            status,
            sent,
        }
    }

    #[test]
    fn serves_files_fresh_from_disk_and_logs_every_request() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("netboot");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keelson.ipxe"), b"#!ipxe\nboot\n").unwrap();
        std::fs::write(root.path().join("secret"), b"not served").unwrap();
        let server = HttpServer::start(&dir).unwrap();
        let port = server.port();

        let (status, headers, body) = fetch(port, "GET /keelson.ipxe HTTP/1.1");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(header(&headers, "content-length"), Some("12"));
        assert_eq!(body, b"#!ipxe\nboot\n");

        let (status, headers, body) = fetch(port, "HEAD /keelson.ipxe HTTP/1.1");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(header(&headers, "content-length"), Some("12"));
        assert!(body.is_empty());

        // A file swapped between requests is served as it is now.
        std::fs::write(dir.join("new"), b"#!ipxe\nshell\n").unwrap();
        std::fs::rename(dir.join("new"), dir.join("keelson.ipxe")).unwrap();
        let (_, headers, body) = fetch(port, "GET /keelson.ipxe HTTP/1.1");
        assert_eq!(header(&headers, "content-length"), Some("13"));
        assert_eq!(body, b"#!ipxe\nshell\n");

        let (status, headers, body) = fetch(port, "GET /rootfs.squashfs HTTP/1.1");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert_eq!(header(&headers, "content-length"), Some("0"));
        assert!(body.is_empty());

        for path in ["/../secret", "/x/../../secret", "/.."] {
            let (status, _, body) = fetch(port, &format!("GET {path} HTTP/1.1"));
            assert_eq!(status, "HTTP/1.1 400 Bad Request", "{path}");
            assert!(body.is_empty(), "{path}");
        }

        let (status, headers, _) = fetch(port, "PUT /keelson.ipxe HTTP/1.1");
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));

        assert_eq!(
            server.served(),
            [
                served("GET", "/keelson.ipxe", 200, 12),
                served("HEAD", "/keelson.ipxe", 200, 0),
                served("GET", "/keelson.ipxe", 200, 13),
                served("GET", "/rootfs.squashfs", 404, 0),
                served("GET", "/../secret", 400, 0),
                served("GET", "/x/../../secret", 400, 0),
                served("GET", "/..", 400, 0),
                served("PUT", "/keelson.ipxe", 405, 0),
            ]
        );
    }

    #[test]
    fn only_a_directory_is_served() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        for dir in [file, root.path().join("missing")] {
            let err = HttpServer::start(&dir).err().unwrap().to_string();
            assert!(err.contains("not a directory"), "{err}");
        }
    }
}
