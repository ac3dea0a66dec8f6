//! The listener: accepts TCP connections, runs the TLS handshake (mutual in
//! normal mode), learns the caller from the client certificate once per
//! connection, then serves HTTP/2 where each request is authorized,
//! forwarded to init and audited. Stops accepting on shutdown and lets
//! open calls finish for a bounded time.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::audit::{AuditBody, AuditRecord};
use crate::authorize::authorize;
use crate::forward::Upstream;
use crate::identity::Caller;
use crate::upgrade_url::{self, UrlUpgrader};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 PING interval on idle connections.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent calls one connection may have open.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Largest request header block accepted (metadata is small).
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// How long open calls (e.g. `logs -f`) may run on after a stop request.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether clients authenticate with certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Mutual TLS; roles from the client certificate.
    Mutual,
    /// Maintenance mode: no client certificate, Version and
    /// ApplyConfiguration only.
    Maintenance,
}

/// Everything a connection needs.
#[derive(Clone)]
pub struct Gateway {
    /// The TLS server configuration (see [`crate::tls`]).
    pub tls: Arc<ServerConfig>,
    /// Normal or maintenance mode.
    pub mode: Mode,
    /// init's API socket.
    pub upstream: Upstream,
    /// The node's CA bundle, for `UpgradeFromUrl` without a pinned CA.
    pub system_cas: PathBuf,
}

/// Serves `listener` until `shutdown` completes, then drains open calls for
/// at most [`DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
    let acceptor = TlsAcceptor::from(gateway.tls.clone());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let watcher = graceful.watcher();
                    let acceptor = acceptor.clone();
                    let gateway = gateway.clone();
                    tokio::spawn(async move {
                        connection(tcp, peer, acceptor, gateway, watcher).await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    tracing::info!("stopping: no new connections; draining open calls");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            after_s = DRAIN_TIMEOUT.as_secs(),
            "open calls cut at the drain deadline"
        );
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    gateway: Gateway,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(peer = %peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    let caller = match gateway.mode {
        Mode::Maintenance => Caller::Maintenance,
        Mode::Mutual => match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => Caller::from_certificate(leaf),
            None => {
                // The verifier requires a certificate, so this cannot happen;
                // refuse the connection rather than trust it.
                tracing::warn!(peer = %peer, "mutual TLS connection without a client certificate");
                return;
            }
        },
    };
    let caller = Arc::new(caller);
    let upgrader = UrlUpgrader {
        upstream: gateway.upstream.clone(),
        system_cas: gateway.system_cas.clone(),
    };
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let caller = caller.clone();
        let upgrader = upgrader.clone();
        async move { Ok::<_, Infallible>(call(request, &caller, peer, &upgrader).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // Find clients that vanished without closing (a laptop lid shut
        // during `logs -f`) and free their connection.
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .serve_connection(TokioIo::new(tls), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// One call: authorize, forward (or answer `UpgradeFromUrl` here), audit.
async fn call(
    request: http::Request<Incoming>,
    caller: &Caller,
    peer: SocketAddr,
    upgrader: &UrlUpgrader,
) -> http::Response<AuditBody> {
    let path = request.uri().path().to_owned();
    let method = api::roles::method_name(&path).unwrap_or(&path);
    let mut record = AuditRecord::start(method, caller, peer);
    if let Err(status) = authorize(&path, caller) {
        record.mark_denied();
        return AuditBody::wrap(status.into_http(), record);
    }
    if path == upgrade_url::PATH {
        let response = upgrade_url::serve(upgrader.clone(), caller.clone(), request).await;
        return AuditBody::wrap(response, record);
    }
    match upgrader.upstream.forward(request, caller).await {
        Ok(response) => AuditBody::wrap(response, record),
        Err(status) => AuditBody::wrap(status.into_http(), record),
    }
}
