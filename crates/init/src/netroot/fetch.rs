//! One plain-HTTP GET, hashed while it streams: the network root into a
//! file (the caller learns the byte count only when the SHA-256 matches
//! the kernel command line's), or a small document (the first config of
//! `keelson.config=`) into memory, bounded in size.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may send nothing (headers or body).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Progress is reported every this many bytes.
const PROGRESS_EVERY: u64 = 16 << 20;

/// Why one attempt failed. Each names the URL or what was received.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL could not be turned into an address to connect to.
    #[error("{url}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The TCP connection failed or timed out.
    #[error("connect to {addr}: {why}")]
    Connect {
        /// The server's address.
        addr: SocketAddr,
        /// The cause.
        why: String,
    },
    /// The HTTP exchange failed.
    #[error("{url}: HTTP: {why}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        why: String,
    },
    /// The server answered with a status other than 200.
    #[error("{url}: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status line's code and reason.
        status: String,
    },
    /// The server went quiet.
    #[error("{url}: nothing received for {}s after {received} bytes", IDLE_TIMEOUT.as_secs())]
    Idle {
        /// The URL.
        url: String,
        /// Bytes received so far.
        received: u64,
    },
    /// The body ended before its Content-Length.
    #[error("{url}: the body ended after {received} of {expected} bytes")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes received.
        received: u64,
        /// The Content-Length.
        expected: u64,
    },
    /// Writing the file in RAM failed (out of memory?).
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The document is larger than its bound.
    #[error("{url}: larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The bound.
        limit: u64,
    },
    /// The bytes are not the root the command line names.
    #[error("{url}: SHA-256 mismatch: keelson.root_sha256 is {expected}, the {received} bytes served hash to {actual}; refusing this root")]
    HashMismatch {
        /// The URL.
        url: String,
        /// The hash asked for.
        expected: String,
        /// The hash of what came.
        actual: String,
        /// Bytes received.
        received: u64,
    },
}

/// The server's socket address and the request target of an `http://`
/// URL whose host is an IP address (checked by the command line parser;
/// stage 1 has no resolver).
pub fn target(url: &str) -> Result<(SocketAddr, String), FetchError> {
    let bad = |why: &str| FetchError::Url {
        url: url.to_string(),
        why: why.to_string(),
    };
    let uri: hyper::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad("the host must be an IP address (stage 1 does no DNS)"))?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok((SocketAddr::new(ip, port), path))
}

/// GETs `url` into `dest` (created or truncated), hashing as it goes, and
/// returns the byte count if the SHA-256 is `expected` (lower-case hex).
/// `progress(received, total)` is called as data arrives.
pub async fn fetch(
    url: &str,
    dest: &Path,
    expected: &str,
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<u64, FetchError> {
    let write_err = |source| FetchError::Write {
        path: dest.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(dest).map_err(write_err)?;
    let mut sink = |data: &[u8]| file.write_all(data).map_err(write_err);
    let (received, actual) = get(url, &mut sink, progress).await?;
    if actual != expected {
        return Err(FetchError::HashMismatch {
            url: url.to_string(),
            expected: expected.to_string(),
            actual,
            received,
        });
    }
    Ok(received)
}

/// GETs `url` into memory, refusing more than `limit` bytes.
pub async fn fetch_bytes(url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    let mut sink = |data: &[u8]| {
        if out.len() as u64 + data.len() as u64 > limit {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        out.extend_from_slice(data);
        Ok(())
    };
    get(url, &mut sink, &mut |_, _| {}).await?;
    Ok(out)
}

/// The GET itself: every byte of a 200 response goes to `sink`; returns the
/// count and the SHA-256 (hex) once the body is complete.
async fn get(
    url: &str,
    sink: &mut (dyn FnMut(&[u8]) -> Result<(), FetchError> + Send),
    progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<(u64, String), FetchError> {
    let (addr, path) = target(url)?;
    let http = |why: String| FetchError::Http {
        url: url.to_string(),
        why,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| FetchError::Connect {
            addr,
            why: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        })?
        .map_err(|e| FetchError::Connect {
            addr,
            why: e.to_string(),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    // Aborted when this function returns, however it returns.
    let driver = AbortOnDrop(tokio::spawn(conn));
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "keelson-init")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let idle = |received: u64| FetchError::Idle {
        url: url.to_string(),
        received,
    };
    let response = tokio::time::timeout(IDLE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| idle(0))?
        .map_err(|e| http(e.to_string()))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: response.status().to_string(),
        });
    }
    let total = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = response.into_body();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut reported = 0u64;
    progress(0, total);
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| idle(received))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| http(format!("after {received} bytes: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        hasher.update(&data);
        sink(&data)?;
        received += data.len() as u64;
        if received - reported >= PROGRESS_EVERY {
            reported = received;
            progress(received, total);
        }
    }
    drop(driver);
    progress(received, total);
    if let Some(expected_len) = total.filter(|&t| t != received) {
        return Err(FetchError::Truncated {
            url: url.to_string(),
            received,
            expected: expected_len,
        });
    }
    Ok((received, hex::encode(hasher.finalize())))
}

/// A spawned task aborted when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Read as _;

    /// A one-request HTTP server on loopback that answers `response`.
    fn serve_once(response: Vec<u8>) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&response);
        });
        port
    }

    fn ok_response(body: &[u8], length: usize) -> Vec<u8> {
        let mut r =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
                .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn run(url: &str, dest: &Path, expected: &str) -> Result<u64, FetchError> {
        block_on(fetch(url, dest, expected, &mut |_, _| {}))
    }

    #[test]
    fn the_root_is_kept_only_when_its_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("root");
        let body = b"a squashfs, honestly".repeat(1000);

        let port = serve_once(ok_response(&body, body.len()));
        let url = format!("http://127.0.0.1:{port}/rootfs.squashfs");
        assert_eq!(run(&url, &dest, &sha(&body)).unwrap(), body.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), body);

        let port = serve_once(ok_response(&body, body.len()));
        let url = format!("http://127.0.0.1:{port}/rootfs.squashfs");
        let err = run(&url, &dest, &sha(b"another root")).unwrap_err();
        assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&sha(b"another root")) && text.contains(&sha(&body)),
            "{text}"
        );
    }

    #[test]
    fn short_bodies_and_error_statuses_are_failures_that_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("root");
        let port = serve_once(ok_response(b"half", 8));
        let url = format!("http://127.0.0.1:{port}/r");
        let err = run(&url, &dest, &sha(b"half")).unwrap_err();
        assert!(
            matches!(err, FetchError::Truncated { .. } | FetchError::Http { .. }),
            "{err}"
        );

        let port = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec());
        let url = format!("http://127.0.0.1:{port}/r");
        let err = run(&url, &dest, &sha(b"")).unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");

        // Nobody listens: a connect error naming the address.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = run(&format!("http://127.0.0.1:{port}/r"), &dest, &sha(b"")).unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn only_ip_hosts_are_targets() {
        let (addr, path) = target("http://10.0.2.100:8080/a/rootfs.squashfs").unwrap();
        assert_eq!(addr.to_string(), "10.0.2.100:8080");
        assert_eq!(path, "/a/rootfs.squashfs");
        assert_eq!(target("http://10.0.2.100/r").unwrap().0.port(), 80);
        let err = target("http://boot.example/r").unwrap_err();
        assert!(err.to_string().contains("IP address"), "{err}");
    }
}
