//! A small HTTPS file server for upgrade-from-URL tests: it serves the
//! files of one directory over rustls with a strong `ETag`, honours `Range: bytes=N-` tied by
//! `If-Range`, and can cut the first full download after a number of body
//! bytes (a dropped connection, the thing a resumable download must
//! survive). It records every request so a test can assert what the
//! downloader asked for. Blocking threads, one request per connection
//! (`Connection: close`), as a bundle mirror behind a load balancer looks
//! to a client. The plain-HTTP sibling is [`crate::http_server`]; what
//! they share is in `http_common`.

use std::io::{BufReader, Seek as _, SeekFrom, Write as _};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::http_common::{self, Acceptor, Lookup, RequestHead, RequestLog};
use crate::pki::{Ca, PkiError};

/// The bundle server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BundleServerError {
    /// Certificates could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The file or the socket failed.
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
    /// The request path.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The status sent.
    pub status: u16,
    /// Body bytes actually sent.
    pub sent: u64,
}

/// What goes wrong on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: every request is answered in full.
    None,
    /// The first full (200) download is cut after this many body bytes.
    CutFirst(u64),
    /// As `CutFirst`, and then a new file is published: the ETag changes,
    /// so a resume tied to the old one gets the whole new file (200).
    CutFirstThenChange(u64),
}

/// A running server; stops when dropped.
pub struct BundleServer {
    acceptor: Acceptor,
    ca_pem: String,
    log: RequestLog<Served>,
}

struct Shared {
    dir: PathBuf,
    /// Bumped when a file is "republished": part of every ETag.
    generation: AtomicU64,
    /// Body bytes after which the first full (200) response is cut; 0: never.
    cut_after: AtomicU64,
    /// Whether the ETag changes once the cut has happened.
    change_after_cut: bool,
    log: RequestLog<Served>,
}

impl BundleServer {
    /// Serves the files in `dir` at `https://<one of sans>:<port>/<name>`
    /// with a certificate for `sans` (IPs or DNS names) from a fresh CA,
    /// going wrong as `fault` says.
    pub fn start(
        dir: &Path,
        sans: &[&str],
        fault: Fault,
    ) -> Result<BundleServer, BundleServerError> {
        let io = |what: String| move |source| BundleServerError::Io { what, source };
        let ca = Ca::new("keelson bundle mirror test CA")?;
        let pair = ca.issue("bundle-mirror", None, sans, false)?;
        let tls = server_config(&pair.cert_pem, &pair.key_pem)?;
        let log = RequestLog::new();
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            generation: AtomicU64::new(0),
            cut_after: AtomicU64::new(match fault {
                Fault::None => 0,
                Fault::CutFirst(n) | Fault::CutFirstThenChange(n) => n,
            }),
            change_after_cut: matches!(fault, Fault::CutFirstThenChange(_)),
            log: log.clone(),
        });
        let acceptor = Acceptor::start(move |tcp| {
            if let Err(e) = serve(tcp, tls.clone(), &shared) {
                tracing::debug!(error = %e, "bundle server connection ended");
            }
        })
        .map_err(io("listening on 127.0.0.1:0".into()))?;
        Ok(BundleServer {
            acceptor,
            ca_pem: ca.cert_pem(),
            log,
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.acceptor.port()
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every request answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.log.entries()
    }
}

fn server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, BundleServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display| BundleServerError::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    Ok(Arc::new(config))
}

/// One connection, one request.
fn serve(tcp: TcpStream, tls: Arc<rustls::ServerConfig>, shared: &Shared) -> std::io::Result<()> {
    let conn = rustls::ServerConnection::new(tls).map_err(std::io::Error::other)?;
    let raw = tcp.try_clone()?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let request = RequestHead::read(&mut BufReader::new(&mut stream))?;
    let range = request.header("range").map(str::to_owned);
    let mut record = Served {
        path: request.path.clone(),
        range: range.clone(),
        status: 404,
        sent: 0,
    };
    let Lookup::Found(mut file, meta) = http_common::lookup(&shared.dir, &request.path) else {
        stream.write_all(http_common::NOT_FOUND)?;
        stream.flush()?;
        shared.log.push(record);
        return Ok(());
    };
    let len = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!(
        "\"{len:x}-{mtime:x}-{}\"",
        shared.generation.load(Ordering::SeqCst)
    );
    // A Range counts only when If-Range names the current ETag.
    let start = match (&range, request.header("if-range")) {
        (Some(r), Some(tag)) if tag == etag => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n < len),
        _ => None,
    };
    let (status, from) = match start {
        Some(n) => (206, n),
        None => (200, 0),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nETag: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        status,
        if status == 206 { "Partial Content" } else { "OK" },
        len - from,
        etag
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {from}-{}/{len}\r\n",
            len - 1
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    record.status = status;
    // Only the first full download is cut.
    let cut = if status == 200 {
        shared.cut_after.swap(0, Ordering::SeqCst)
    } else {
        0
    };
    file.seek(SeekFrom::Start(from))?;
    let limit = if cut > 0 { cut } else { u64::MAX };
    if let Err(e) = http_common::copy_counted(&mut file, &mut stream, limit, &mut record.sent) {
        shared.log.push(record);
        return Err(e);
    }
    if cut > 0 && record.sent == cut {
        stream.flush()?;
        // An abrupt end: no TLS close_notify, the TCP connection reset.
        let _ = raw.shutdown(Shutdown::Both);
        tracing::info!(at = record.sent, "bundle server: cutting the download");
        if shared.change_after_cut {
            shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        shared.log.push(record);
        return Ok(());
    }
    stream.flush()?;
    stream.conn.send_close_notify();
    let _ = stream.flush();
    shared.log.push(record);
    Ok(())
}
