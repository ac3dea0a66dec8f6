//! A small HTTPS file server for upgrade-from-URL tests: it serves the
//! files of one directory over rustls with a strong `ETag`, honours `Range: bytes=N-` tied by
//! `If-Range`, and can cut the first full download after a number of body
//! bytes (a dropped connection, the thing a resumable download must
//! survive). It records every request so a test can assert what the
//! downloader asked for. Blocking threads, one request per connection
//! (`Connection: close`), as a bundle mirror behind a load balancer looks
//! to a client.

use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    port: u16,
    ca_pem: String,
    log: Arc<Mutex<Vec<Served>>>,
    stop: Arc<AtomicBool>,
}

struct Shared {
    dir: PathBuf,
    /// Bumped when a file is "republished": part of every ETag.
    generation: AtomicU64,
    /// Body bytes after which the first full (200) response is cut; 0: never.
    cut_after: AtomicU64,
    /// Whether the ETag changes once the cut has happened.
    change_after_cut: bool,
    log: Arc<Mutex<Vec<Served>>>,
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
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(io("binding 127.0.0.1:0".into()))?;
        let port = listener
            .local_addr()
            .map_err(io("local address".into()))?
            .port();
        let log = Arc::new(Mutex::new(Vec::new()));
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
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let shared = shared.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(tcp, tls, &shared) {
                        tracing::debug!(error = %e, "bundle server connection ended");
                    }
                });
            }
        });
        Ok(BundleServer {
            port,
            ca_pem: ca.cert_pem(),
            log,
            stop,
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every request answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
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
    let (path, headers) = {
        let mut reader = BufReader::new(&mut stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        (path, headers)
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let range = header("range");
    let mut record = Served {
        path: path.clone(),
        range: range.clone(),
        status: 404,
        sent: 0,
    };
    let file = path
        .strip_prefix('/')
        .filter(|name| !name.is_empty() && !name.contains('/') && !name.starts_with('.'))
        .map(|name| shared.dir.join(name));
    let Some((file, meta)) = file.and_then(|f| std::fs::metadata(&f).ok().map(|m| (f, m))) else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        stream.flush()?;
        log(shared, record);
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
    let start = match (&range, header("if-range")) {
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
    let mut file = std::fs::File::open(&file)?;
    file.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut want = buf.len();
        if cut > 0 {
            want = want.min((cut - record.sent) as usize);
            if want == 0 {
                stream.flush()?;
                // An abrupt end: no TLS close_notify, the TCP connection reset.
                let _ = raw.shutdown(Shutdown::Both);
                tracing::info!(at = record.sent, "bundle server: cutting the download");
                if shared.change_after_cut {
                    shared.generation.fetch_add(1, Ordering::SeqCst);
                }
                log(shared, record);
                return Ok(());
            }
        }
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if let Err(e) = stream.write_all(&buf[..n]) {
            log(shared, record);
            return Err(e);
        }
        record.sent += n as u64;
    }
    stream.flush()?;
    stream.conn.send_close_notify();
    let _ = stream.flush();
    log(shared, record);
    Ok(())
}

fn log(shared: &Shared, served: Served) {
    if let Ok(mut l) = shared.log.lock() {
        l.push(served);
    }
}
