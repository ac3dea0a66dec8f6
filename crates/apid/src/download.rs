//! Downloading an upgrade bundle over HTTPS, resumably.
//!
//! One [`Download`] is one file fetched with HTTP/1.1 over rustls: the
//! first GET follows a few redirects (https only) and must answer 200; its
//! `ETag` (strong) or `Last-Modified` becomes the validator that every
//! resume is tied to. When the connection drops, stalls for
//! [`IDLE_TIMEOUT`] or ends before `Content-Length`, the download reconnects
//! and asks for the rest with `Range: bytes=N-` and `If-Range: <validator>`;
//! only a `206` whose `Content-Range` starts exactly at N (and names the
//! same total) continues it. Anything else (the file changed, the server
//! ignores ranges) stops the download with an error saying so: bytes of two
//! different files are never joined. A run of [`MAX_ATTEMPTS`] failed
//! reconnections without a byte of progress gives up.
//!
//! Trust: the server certificate is checked against either the node's
//! system CA bundle or, when the caller pins one, only the given CAs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONTENT_LENGTH, CONTENT_RANGE, ETAG, HOST, IF_RANGE, LAST_MODIFIED, LOCATION, RANGE, USER_AGENT,
};
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::forward::error_chain;

/// How long connecting (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may take to send the response headers.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the body may go without a byte before the connection is
/// treated as dropped and resumed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive failed reconnections (no byte received in between) before
/// the download gives up.
pub const MAX_ATTEMPTS: u32 = 5;
/// Redirects followed on the first request.
pub const MAX_REDIRECTS: usize = 5;
/// The delay before the first reconnection; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Why a download could not start or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The URL is not one this downloader fetches.
    #[error("url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificates to trust are unusable.
    #[error("{what}: {reason}")]
    Trust {
        /// Which CAs (the pinned PEM or the system bundle's path).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Reaching the server failed (DNS, TCP, TLS, HTTP framing, timeouts).
    #[error("{url}: {reason}")]
    Transport {
        /// The URL being fetched.
        url: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The server answered, but not with the file.
    #[error("{url}: the server answered {status}{detail}")]
    Status {
        /// The URL being fetched.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// More about it (empty or starting with a separator).
        detail: String,
    },
    /// A resume could not continue the same file.
    #[error("{url}: cannot resume at byte {at}: {reason}")]
    Resume {
        /// The URL being fetched.
        url: String,
        /// The byte offset the resume asked for.
        at: u64,
        /// Why the answer does not continue the download.
        reason: String,
    },
    /// The server sent more bytes than it announced.
    #[error("{url}: the server sent more than the {total} bytes it announced")]
    Oversized {
        /// The URL being fetched.
        url: String,
        /// The announced size.
        total: u64,
    },
    /// Reconnecting kept failing.
    #[error(
        "{url}: gave up at byte {at} after {attempts} reconnections without progress; last: {last}"
    )]
    GaveUp {
        /// The URL being fetched.
        url: String,
        /// Bytes received when it gave up.
        at: u64,
        /// Reconnections tried in a row.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// What [`Download::next`] produced.
#[derive(Debug)]
pub enum Step {
    /// The next bytes of the file.
    Data(Bytes),
    /// The connection broke (`why`) and the download continues at byte `at`
    /// on a new one.
    Resumed {
        /// Where the new response starts.
        at: u64,
        /// What ended the previous connection.
        why: String,
    },
    /// Every byte has been received.
    End,
}

/// The TLS client configuration for a download: only the PEM CAs in
/// `pinned` when it is not empty, otherwise the PEM bundle `system` (the
/// node's `/etc/ssl/certs/ca-certificates.crt`).
pub fn tls_config(
    pinned: &[u8],
    system: &std::path::Path,
) -> Result<Arc<ClientConfig>, DownloadError> {
    let (what, pem) = if pinned.is_empty() {
        let what = format!("system CAs {}", system.display());
        let pem = std::fs::read(system).map_err(|e| DownloadError::Trust {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        (what, pem)
    } else {
        ("ca_pem (the pinned CA)".to_string(), pinned.to_vec())
    };
    let mut roots = RootCertStore::empty();
    let mut rejected = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| DownloadError::Trust {
            what: what.clone(),
            reason: format!("certificate {}: {e}", i + 1),
        })?;
        if let Err(e) = roots.add(cert) {
            rejected.push(format!("certificate {}: {e}", i + 1));
        }
    }
    if roots.is_empty() {
        let reason = if rejected.is_empty() {
            "no PEM CERTIFICATE block".to_string()
        } else {
            format!("no usable CA certificate ({})", rejected.join("; "))
        };
        return Err(DownloadError::Trust { what, reason });
    }
    if !pinned.is_empty() && !rejected.is_empty() {
        // A pin the operator wrote: every certificate must be usable.
        return Err(DownloadError::Trust {
            what,
            reason: rejected.join("; "),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DownloadError::Trust {
            what: what.clone(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks that `url` is an absolute `https://` URL with a host.
pub fn parse_url(url: &str) -> Result<Uri, DownloadError> {
    let bad = |reason: &str| DownloadError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            return Err(bad(
                "plain http is refused: use https (a pinned CA works for a private server)",
            ))
        }
        Some(other) => return Err(bad(&format!("scheme {other}: only https is fetched"))),
        None => return Err(bad("not an absolute URL (https://host/path)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("credentials in the URL are refused"));
    }
    Ok(uri)
}

/// One file being downloaded; see the module comment.
pub struct Download {
    tls: Arc<ClientConfig>,
    /// The URL after redirects.
    url: Uri,
    /// `If-Range` value tying resumes to the first response.
    validator: Option<HeaderValue>,
    total: Option<u64>,
    received: u64,
    body: Option<Incoming>,
    resumes: u32,
    idle_timeout: Duration,
}

impl Download {
    /// Sends the first GET (following redirects) and returns once the server
    /// has answered 200: nothing of the body has been read yet.
    pub async fn start(url: Uri, tls: Arc<ClientConfig>) -> Result<Download, DownloadError> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let response = get(&tls, &url, &[]).await?;
            let status = response.status();
            if status.is_redirection() {
                url = redirect_target(&url, &response)?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(DownloadError::Status {
                    url: url.to_string(),
                    status,
                    detail: String::new(),
                });
            }
            let validator = validator(response.headers());
            let total = content_length(response.headers());
            tracing::info!(
                url = %url,
                total = total.unwrap_or(0),
                resumable = validator.is_some(),
                "download started"
            );
            return Ok(Download {
                tls,
                url,
                validator,
                total,
                received: 0,
                body: Some(response.into_body()),
                resumes: 0,
                idle_timeout: IDLE_TIMEOUT,
            });
        }
        Err(DownloadError::Status {
            url: url.to_string(),
            status: StatusCode::TEMPORARY_REDIRECT,
            detail: format!(": more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// How long the body may stall before the connection is resumed
    /// (default [`IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Download {
        self.idle_timeout = idle;
        self
    }

    /// The URL being fetched (after redirects).
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The size the server announced, if it did.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Resumptions so far.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// The next bytes, a resumption, or the end; an error ends the download.
    pub async fn next(&mut self) -> Result<Step, DownloadError> {
        let why = match self.body.as_mut() {
            None => "no connection".to_string(),
            Some(body) => match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers: nothing to hand on.
                        return Ok(Step::Data(Bytes::new()));
                    };
                    self.received += data.len() as u64;
                    if let Some(total) = self.total {
                        if self.received > total {
                            return Err(DownloadError::Oversized {
                                url: self.url.to_string(),
                                total,
                            });
                        }
                    }
                    return Ok(Step::Data(data));
                }
                Ok(None) => match self.total {
                    Some(total) if self.received < total => {
                        format!("the connection closed at byte {} of {total}", self.received)
                    }
                    _ => {
                        self.body = None;
                        return Ok(Step::End);
                    }
                },
                Ok(Some(Err(e))) => format!("reading the body: {}", error_chain(&e)),
                Err(_) => format!("no byte for {} s", self.idle_timeout.as_secs()),
            },
        };
        self.body = None;
        tracing::warn!(url = %self.url, at = self.received, why = %why, "download interrupted");
        self.resume(why).await
    }

    /// Reconnects with a Range request until one continues the file or
    /// [`MAX_ATTEMPTS`] have failed.
    async fn resume(&mut self, why: String) -> Result<Step, DownloadError> {
        let Some(validator) = self.validator.clone() else {
            return Err(DownloadError::Resume {
                url: self.url.to_string(),
                at: self.received,
                reason: format!(
                    "{why}, and the server sent neither a strong ETag nor Last-Modified \
                     to tie a resumed download to the first one"
                ),
            });
        };
        let range = HeaderValue::from_str(&format!("bytes={}-", self.received))
            .map_err(|e| self.transport(e.to_string()))?;
        let mut backoff = FIRST_BACKOFF;
        let mut last = why.clone();
        for _ in 0..MAX_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            let response = match get(
                &self.tls,
                &self.url,
                &[(RANGE, &range), (IF_RANGE, &validator)],
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(url = %self.url, error = %e, "resume attempt failed");
                    last = e.to_string();
                    continue;
                }
            };
            match response.status() {
                StatusCode::PARTIAL_CONTENT => {
                    self.check_range(response.headers())?;
                    self.body = Some(response.into_body());
                    self.resumes += 1;
                    tracing::info!(url = %self.url, at = self.received, resumes = self.resumes, "download resumed");
                    return Ok(Step::Resumed {
                        at: self.received,
                        why,
                    });
                }
                StatusCode::OK => {
                    return Err(DownloadError::Resume {
                        url: self.url.to_string(),
                        at: self.received,
                        reason: "the server answered 200 with the whole file: it changed since \
                                 the download started, or the server does not serve ranges"
                            .into(),
                    })
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    last = format!("the server answered {s}");
                    continue;
                }
                s => {
                    return Err(DownloadError::Resume {
                        url: self.url.to_string(),
                        at: self.received,
                        reason: format!("the server answered {s}"),
                    })
                }
            }
        }
        Err(DownloadError::GaveUp {
            url: self.url.to_string(),
            at: self.received,
            attempts: MAX_ATTEMPTS,
            last,
        })
    }

    /// A 206 must continue exactly where the download stopped.
    fn check_range(&self, headers: &http::HeaderMap) -> Result<(), DownloadError> {
        let refuse = |reason: String| DownloadError::Resume {
            url: self.url.to_string(),
            at: self.received,
            reason,
        };
        let text = headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refuse("206 without a Content-Range".into()))?;
        let (start, total) =
            parse_content_range(text).ok_or_else(|| refuse(format!("Content-Range {text:?}")))?;
        if start != self.received {
            return Err(refuse(format!("the server resumed at byte {start}")));
        }
        match (self.total, total) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(refuse(format!(
                "the file is now {theirs} bytes, it was {ours}"
            ))),
            _ => Ok(()),
        }
    }

    fn transport(&self, reason: String) -> DownloadError {
        DownloadError::Transport {
            url: self.url.to_string(),
            reason,
        }
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) → (START, TOTAL).
pub fn parse_content_range(text: &str) -> Option<(u64, Option<u64>)> {
    let rest = text.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, total))
}

/// The `If-Range` value: a strong ETag, else `Last-Modified`.
fn validator(headers: &http::HeaderMap) -> Option<HeaderValue> {
    if let Some(etag) = headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            return Some(etag.clone());
        }
    }
    headers.get(LAST_MODIFIED).cloned()
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Where a redirect points, resolved against `from`; https only.
fn redirect_target(from: &Uri, response: &http::Response<Incoming>) -> Result<Uri, DownloadError> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| DownloadError::Status {
            url: from.to_string(),
            status: response.status(),
            detail: " without a Location".into(),
        })?;
    let target = if location.starts_with('/') {
        let authority = from.authority().map(|a| a.as_str()).unwrap_or_default();
        format!("https://{authority}{location}")
    } else {
        location.to_string()
    };
    tracing::info!(from = %from, to = %target, "download redirected");
    parse_url(&target)
}

/// One GET on a fresh connection; returns once the headers have arrived.
async fn get(
    tls: &Arc<ClientConfig>,
    url: &Uri,
    extra: &[(http::header::HeaderName, &HeaderValue)],
) -> Result<http::Response<Incoming>, DownloadError> {
    let fail = |reason: String| DownloadError::Transport {
        url: url.to_string(),
        reason,
    };
    let host = url.host().unwrap_or_default();
    // `[::1]` in a URL is `::1` to DNS and TLS.
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_u16().unwrap_or(443);
    let server_name =
        ServerName::try_from(bare_host.clone()).map_err(|e| fail(format!("host {host}: {e}")))?;
    let connect = async {
        let tcp = TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|e| fail(format!("connecting to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| fail(format!("TLS with {host}:{port}: {}", error_chain(&e))))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            fail(format!(
                "connecting took over {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })??;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(format!("HTTP handshake: {}", error_chain(&e))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "download connection ended");
        }
    });
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map(|a| a.as_str()).unwrap_or_default();
    let mut request = http::Request::get(path).header(HOST, authority).header(
        USER_AGENT,
        concat!("keelson-apid/", env!("CARGO_PKG_VERSION")),
    );
    for (name, value) in extra {
        request = request.header(name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(format!("building the request: {e}")))?;
    tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| fail(format!("no answer within {} s", RESPONSE_TIMEOUT.as_secs())))?
        .map_err(|e| fail(format!("GET: {}", error_chain(&e))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_fetched() {
        assert!(parse_url("https://10.0.2.100:8443/v2.bundle").is_ok());
        assert!(parse_url("https://bundles.example/keelson/v2.bundle?x=1").is_ok());
        for (url, says) in [
            ("http://bundles.example/v2.bundle", "plain http is refused"),
            ("ftp://bundles.example/v2.bundle", "scheme ftp"),
            ("/v2.bundle", "not an absolute URL"),
            ("https://user:pw@bundles.example/v2", "credentials"),
            ("not a url at all", "url \"not a url at all\""),
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn content_ranges_must_be_well_formed() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 100-199/150"), None);
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
    }

    #[test]
    fn weak_etags_do_not_tie_a_resume_and_last_modified_does() {
        let mut h = http::HeaderMap::new();
        h.insert(ETAG, HeaderValue::from_static("W/\"abc\""));
        assert_eq!(validator(&h), None);
        h.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Tue, 24 Nov 2026 10:00:00 GMT"),
        );
        assert_eq!(validator(&h).unwrap(), "Tue, 24 Nov 2026 10:00:00 GMT");
        h.insert(ETAG, HeaderValue::from_static("\"abc\""));
        assert_eq!(validator(&h).unwrap(), "\"abc\"");
    }

    #[test]
    fn a_pin_without_certificates_is_refused_and_says_so() {
        let e = tls_config(b"not pem", std::path::Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca_pem") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );
        let e = tls_config(b"", std::path::Path::new("/nonexistent/ca.crt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("system CAs /nonexistent/ca.crt"), "{e}");
    }
}
