//! Shared test fixtures: certificates minted with `nodectl::secrets`, the
//! real `apid` binary started as a child process on loopback, mTLS and
//! fingerprint-capturing gRPC clients, and a minimal upstream.
//!
//! The upstream is a TEST DOUBLE of init's API server (the generated
//! `Machine` trait on a unix socket in a temp dir): the gateway is what is
//! under test, so the double only answers with default messages, streams a
//! few log lines, and records the identity metadata apid passed on.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::v1::machine_client::MachineClient;
use api::v1::machine_server::{Machine, MachineServer};
use api::v1::*;
use hyper_util::rt::TokioIo;
use nodectl::secrets::{CertificateAuthority, CertifiedKey, NodeTemplate, Role, Validity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Lines the double streams for `Logs`.
pub const LOG_LINES: usize = 5;

/// One call as the upstream saw it: method, client CN and role metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: &'static str,
    pub cn: Option<String>,
    pub role: Option<String>,
}

/// The minimal upstream (see the module doc).
#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn record<T>(&self, method: &'static str, req: &Request<T>) {
        let get = |k: &str| {
            req.metadata()
                .get(k)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        self.seen.lock().unwrap().push(Seen {
            method,
            cn: get(api::CLIENT_CN_HEADER),
            role: get(api::CLIENT_ROLE_HEADER),
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Serves on a new unix socket at `path` in the background.
    pub fn spawn(&self, path: &Path) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let svc = MachineServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        })
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Machine for Upstream {
    async fn version(
        &self,
        req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        self.record("Version", &req);
        Ok(Response::new(VersionResponse {
            os_version: "test-upstream".into(),
            ..Default::default()
        }))
    }
    async fn health(
        &self,
        req: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        self.record("Health", &req);
        Ok(Response::new(HealthResponse::default()))
    }
    type EventsStream = Stream<Event>;
    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        self.record("Events", &req);
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }
    async fn apply_configuration(
        &self,
        req: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        self.record("ApplyConfiguration", &req);
        Ok(Response::new(ApplyConfigurationResponse::default()))
    }
    async fn confirm_configuration(
        &self,
        req: Request<ConfirmConfigurationRequest>,
    ) -> Result<Response<ConfirmConfigurationResponse>, Status> {
        self.record("ConfirmConfiguration", &req);
        Ok(Response::new(ConfirmConfigurationResponse::default()))
    }
    async fn get_configuration(
        &self,
        req: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        self.record("GetConfiguration", &req);
        Ok(Response::new(GetConfigurationResponse::default()))
    }
    async fn config_history(
        &self,
        req: Request<ConfigHistoryRequest>,
    ) -> Result<Response<ConfigHistoryResponse>, Status> {
        self.record("ConfigHistory", &req);
        Ok(Response::new(ConfigHistoryResponse::default()))
    }
    async fn rollback_configuration(
        &self,
        req: Request<RollbackConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        self.record("RollbackConfiguration", &req);
        Ok(Response::new(ApplyConfigurationResponse::default()))
    }
    async fn service_list(
        &self,
        req: Request<ServiceListRequest>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        self.record("ServiceList", &req);
        Ok(Response::new(ServiceListResponse::default()))
    }
    async fn service_start(
        &self,
        req: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        self.record("ServiceStart", &req);
        Ok(Response::new(ServiceResponse::default()))
    }
    async fn service_stop(
        &self,
        req: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        self.record("ServiceStop", &req);
        Ok(Response::new(ServiceResponse::default()))
    }
    async fn service_restart(
        &self,
        req: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        self.record("ServiceRestart", &req);
        Ok(Response::new(ServiceResponse::default()))
    }
    type LogsStream = Stream<LogLine>;
    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        self.record("Logs", &req);
        let service = req.into_inner().service;
        let lines: Vec<Result<LogLine, Status>> = (0..LOG_LINES)
            .map(|i| {
                Ok(LogLine {
                    unix_ms: i as u64,
                    line: format!("{service} line {i}"),
                    stream: "stdout".into(),
                })
            })
            .collect();
        // Spaced out, so the messages really travel as a stream.
        let stream =
            tokio_stream::StreamExt::throttle(tokio_stream::iter(lines), Duration::from_millis(20));
        Ok(Response::new(Box::pin(stream)))
    }
    type DmesgStream = Stream<LogLine>;
    async fn dmesg(
        &self,
        req: Request<DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        self.record("Dmesg", &req);
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }
    type ReadStream = Stream<Chunk>;
    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        self.record("Read", &req);
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }
    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        self.record("Stats", &req);
        Ok(Response::new(StatsResponse::default()))
    }
    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        self.record("Mounts", &req);
        Ok(Response::new(MountsResponse::default()))
    }
    async fn reboot(&self, req: Request<PowerRequest>) -> Result<Response<PowerResponse>, Status> {
        self.record("Reboot", &req);
        Ok(Response::new(PowerResponse::default()))
    }
    async fn shutdown(
        &self,
        req: Request<PowerRequest>,
    ) -> Result<Response<PowerResponse>, Status> {
        self.record("Shutdown", &req);
        Ok(Response::new(PowerResponse::default()))
    }
    async fn service_kill(
        &self,
        req: Request<ServiceKillRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        self.record("ServiceKill", &req);
        Ok(Response::new(ServiceResponse::default()))
    }
    async fn last_shutdown(
        &self,
        req: Request<LastShutdownRequest>,
    ) -> Result<Response<LastShutdownResponse>, Status> {
        self.record("LastShutdown", &req);
        Ok(Response::new(LastShutdownResponse::default()))
    }
    /// Counts the uploaded bytes (the first message carries options only),
    /// so a test sees a client stream pass through apid whole.
    type UpgradeFromUrlStream = Stream<UpgradeFromUrlProgress>;
    async fn upgrade_from_url(
        &self,
        req: Request<UpgradeFromUrlRequest>,
    ) -> Result<Response<Self::UpgradeFromUrlStream>, Status> {
        // apid answers this call itself; reaching init is a bug.
        self.record("UpgradeFromUrl", &req);
        Err(Status::internal("UpgradeFromUrl reached init"))
    }
    async fn upgrade(
        &self,
        req: Request<tonic::Streaming<UpgradeRequest>>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        self.record("Upgrade", &req);
        let mut stream = req.into_inner();
        let mut bytes = 0u64;
        while let Some(msg) = stream.message().await? {
            bytes += msg.chunk.len() as u64;
        }
        Ok(Response::new(UpgradeResponse {
            bytes,
            ..Default::default()
        }))
    }
    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        self.record("Rollback", &req);
        Ok(Response::new(UpgradeResponse::default()))
    }
    async fn upgrade_status(
        &self,
        req: Request<UpgradeStatusRequest>,
    ) -> Result<Response<UpgradeStatusResponse>, Status> {
        self.record("UpgradeStatus", &req);
        Ok(Response::new(UpgradeStatusResponse::default()))
    }
}

/// A CA with a node certificate and one client certificate per role.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub node: CertifiedKey,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca = CertificateAuthority::generate(name, Validity::days_from_now(30)).unwrap();
        let node = ca
            .issue_node(&NodeTemplate::default(), "node-1", &[])
            .unwrap();
        Pki { ca, node }
    }

    pub fn client(&self, role: Role, cn: &str) -> CertifiedKey {
        self.ca
            .issue_client(role, cn, Validity::days_from_now(1))
            .unwrap()
    }

    /// Writes ca.crt, server.crt, server.key into `dir`.
    pub fn write_server_files(&self, dir: &Path) {
        std::fs::write(dir.join("ca.crt"), self.ca.cert_pem()).unwrap();
        std::fs::write(dir.join("server.crt"), &self.node.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &self.node.key_pem).unwrap();
    }
}

/// A running `apid` child process; killed on drop.
pub struct Apid {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub banner: String,
    pub log: PathBuf,
}

impl Apid {
    /// Starts the real binary with `args` (plus `--listen 127.0.0.1:0`) and
    /// waits for its startup line on stdout. stderr (tracing, audit) goes
    /// to `log`.
    pub fn start(args: &[&str], log: &Path) -> Apid {
        let Some(bin) = option_env!("CARGO_BIN_EXE_apid") else {
            panic!("CARGO_BIN_EXE_apid is set by cargo for integration tests only");
        };
        Apid::start_binary(Path::new(bin), args, log)
    }

    /// Like [`Apid::start`] with an explicit binary (examples have no
    /// `CARGO_BIN_EXE_apid`).
    pub fn start_binary(bin: &Path, args: &[&str], log: &Path) -> Apid {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let banner = line.trim().to_owned();
        assert!(
            banner.starts_with("keelson: "),
            "apid printed {banner:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        let port: u16 = banner
            .rsplit_once("port=")
            .map(|(_, p)| p.to_owned())
            .or_else(|| {
                banner
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(|a| a.rsplit_once(':').unwrap().1.to_owned())
            })
            .unwrap()
            .parse()
            .unwrap();
        Apid {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            banner,
            log: log.to_owned(),
        }
    }

    /// The contents of apid's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGTERM and waits for the exit (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "apid did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Apid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client TLS configuration that trusts `ca_pem` and presents `client`
/// (if any).
pub fn mtls_config(ca_pem: &str, client: Option<&CertifiedKey>) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(ck) => {
            let chain = CertificateDer::pem_slice_iter(ck.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(ck.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Accepts any server certificate and remembers the one presented: the
/// client side of fingerprint pinning.
#[derive(Debug)]
pub struct CapturingVerifier {
    pub seen: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration for maintenance mode: no client certificate, the
/// server certificate captured by the returned verifier.
pub fn capturing_config() -> (ClientConfig, Arc<CapturingVerifier>) {
    let verifier = Arc::new(CapturingVerifier {
        seen: Mutex::new(None),
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    (config, verifier)
}

/// A gRPC client of the machine API over TLS with `config` to `addr`.
pub async fn client(addr: std::net::SocketAddr, config: ClientConfig) -> MachineClient<Channel> {
    let connector = TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    MachineClient::new(channel)
}

/// Runs a raw TLS handshake with `config` and one read: the server's
/// verdict on our certificate arrives as an alert (in TLS 1.3 only after
/// the client finished its side). Returns the error, if any.
pub async fn handshake_error(addr: std::net::SocketAddr, config: ClientConfig) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = match connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return Some(e.to_string()),
    };
    // An HTTP/2 preface; a served connection answers with a SETTINGS frame.
    if let Err(e) = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await {
        return Some(e.to_string());
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Some("connection closed".into()),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 5 s".into()),
    }
}

/// Waits until `path` exists (a unix socket being bound).
pub async fn wait_for(path: &Path) {
    for _ in 0..100 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} did not appear", path.display());
}

/// Like [`client`] but connects on the first call (for connections that
/// are expected to fail).
pub fn client_lazy(addr: std::net::SocketAddr, config: ClientConfig) -> MachineClient<Channel> {
    let connector = TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }));
    MachineClient::new(channel)
}
