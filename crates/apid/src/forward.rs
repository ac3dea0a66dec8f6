//! Forwarding to init's unix socket: a generic gRPC proxy.
//!
//! Why generic and not the typed `Machine` trait: apid passes the HTTP/2
//! request through unchanged (path, metadata minus hop-by-hop and reserved
//! headers, the body stream) to a tonic `Channel` over a `UnixStream`, and
//! streams the response (messages and trailers) back. So unary calls,
//! server streams (Logs, Events, Dmesg, Read) and client uploads all work
//! the same, messages are never decoded or re-encoded, and a new RPC needs
//! only a row in `api::roles` — never an apid change. The typed alternative
//! would need one hand-written forwarding method per RPC.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use tower::ServiceExt as _;

use crate::identity::Caller;

/// How long connecting to init's socket may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Hop-by-hop headers that must not travel through a proxy.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

/// The upstream: init's API socket, reached through one lazily connected,
/// self-reconnecting HTTP/2 channel (apid starts fine before init listens,
/// and recovers when init comes back).
#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
    socket: PathBuf,
}

impl Upstream {
    /// An upstream on the unix socket `socket`; nothing is connected yet.
    pub fn new(socket: &Path) -> Upstream {
        let path = socket.to_owned();
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        });
        // The URI only names the origin written into forwarded requests; the
        // connector ignores it.
        let channel = Endpoint::from_static("http://init.keelson.invalid")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector_lazy(connector);
        Upstream {
            channel,
            socket: socket.to_owned(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The channel to init, for the calls apid makes itself (typed
    /// clients); clones share the connection.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Forwards one call with the caller's identity in its metadata and
    /// returns init's response (headers, message stream, trailers). A
    /// failure to reach init is `Unavailable`.
    pub async fn forward(
        &self,
        request: http::Request<Incoming>,
        caller: &Caller,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let (mut parts, body) = request.into_parts();
        sanitize(&mut parts.headers);
        stamp_headers(&mut parts.headers, caller);
        let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
        self.channel.clone().oneshot(request).await.map_err(|e| {
            Status::unavailable(format!(
                "init's API socket {} is not answering: {}",
                self.socket.display(),
                error_chain(&e)
            ))
        })
    }
}

/// Writes the caller's identity (common name, role) into `headers`, as
/// init reads it.
fn stamp_headers(headers: &mut HeaderMap, caller: &Caller) {
    headers.insert(
        HeaderName::from_static(api::CLIENT_CN_HEADER),
        header_value(caller.cn()),
    );
    headers.insert(
        HeaderName::from_static(api::CLIENT_ROLE_HEADER),
        header_value(caller.role_label()),
    );
}

/// The caller's identity in the metadata of a call apid makes itself.
pub fn stamp(metadata: &mut tonic::metadata::MetadataMap, caller: &Caller) {
    let mut headers = std::mem::take(metadata).into_headers();
    stamp_headers(&mut headers, caller);
    *metadata = tonic::metadata::MetadataMap::from_headers(headers);
}

/// Removes hop-by-hop headers and every `x-keelson-*` header the client sent
/// (only apid may set those).
pub fn sanitize(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(http::header::HOST);
    let reserved: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(api::RESERVED_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in reserved {
        headers.remove(name);
    }
}

/// A header value for `s`; characters a header cannot carry are escaped
/// (`\u{..}`), so the value is always valid.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| {
        let escaped: String = s
            .chars()
            .flat_map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    vec![c]
                } else {
                    c.escape_unicode().collect()
                }
            })
            .collect();
        // Printable ASCII only now, which HeaderValue always accepts.
        HeaderValue::from_str(&escaped).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    })
}

/// `e` and its sources, joined by `: ` (a source already in the text is
/// not repeated).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn client_supplied_identity_and_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-keelson-client-cn", HeaderValue::from_static("admin"));
        h.insert(
            "X-Keelson-Client-Role",
            HeaderValue::from_static("os:admin"),
        );
        h.insert("x-keelson-anything", HeaderValue::from_static("1"));
        h.insert("connection", HeaderValue::from_static("close"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-request-id", HeaderValue::from_static("42"));
        sanitize(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["te", "x-request-id"]);
    }

    #[test]
    fn odd_common_names_still_make_a_header() {
        assert_eq!(header_value("node-1"), "node-1");
        assert_eq!(header_value("é\n"), "\\u{e9}\\u{a}");
    }
}
