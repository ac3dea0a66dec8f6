//! The remote commands of the real `nodectl` binary against the real apid
//! gateway, in-process (`apid::server::serve`, mutual TLS or maintenance
//! mode on loopback) in front of a TEST DOUBLE of init's API server (the
//! generated `Machine` trait on a unix socket): init itself only runs as
//! PID 1 in a VM. The double answers with fixed data and records what it
//! received, so the tests can prove what nodectl sent, and that apid's
//! role check refused a call before it reached the node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::v1::machine_server::{Machine, MachineServer};
use api::v1::*;
use apid::server::{Gateway, Mode};
use tonic::{Request, Response, Status};

const GOOD: &str = "\
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: node1
  sysctls:
    vm.max_map_count: \"262144\"
";

/// Two errors: a malformed sysctl key and a file outside /etc and /var.
const BAD: &str = "\
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: node1
  sysctls:
    net..ipv4: \"1\"
  files:
    - path: /usr/bin/evil
      content: \"x\"
";

/// The bytes the double serves for `Read`: every byte value, twice.
fn file_bytes() -> Vec<u8> {
    (0..=255u8).chain(0..=255u8).collect()
}

/// What the double does differently per node.
#[derive(Clone, Default)]
struct Behaviour {
    hostname: String,
    /// ServiceList fails with FailedPrecondition.
    refuse_services: bool,
    /// Upgrade fails with PermissionDenied right after the options.
    refuse_upgrade: bool,
    /// An init older than upgrades: UpgradeStatus is Unimplemented.
    no_upgrades: bool,
}

/// The public key the double trusts for upgrade bundles (seed 5).
fn trusted_bundle_key() -> bundle::SigningKey {
    bundle::SigningKey::from_seed([5; 32])
}

/// Writes `<dir>/<name>.bundle`: OS 2.0.0, build build-88, upgrades from
/// 1.0, signed with [`trusted_bundle_key`], with a rootfs payload of
/// `rootfs_len` patterned bytes.
fn signed_bundle(dir: &Path, name: &str, rootfs_len: usize) -> PathBuf {
    let part = |file: &str, len: usize| {
        let p = dir.join(format!("{name}-{file}"));
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let (k, i, r) = (
        part("vmlinuz", 1000),
        part("initramfs.img", 3000),
        part("rootfs.squashfs", rootfs_len),
    );
    let meta = bundle::BundleMeta {
        os_version: "2.0.0".into(),
        build_id: "build-88".into(),
        created: None,
        min_upgrade_from: Some("1.0".into()),
    };
    let out = dir.join(format!("{name}.bundle"));
    let mut file = std::fs::File::create(&out).unwrap();
    bundle::write_bundle(&mut file, &trusted_bundle_key(), &meta, &k, &i, &r).unwrap();
    out
}

/// What the double's Upgrade received.
#[derive(Clone, Debug)]
struct Received {
    options: UpgradeOptions,
    /// Length of each chunk message after the options.
    chunks: Vec<usize>,
    bytes: Vec<u8>,
}

/// The test double of init's API (see the module doc).
#[derive(Clone, Default)]
struct Double {
    behaviour: Behaviour,
    calls: Arc<Mutex<Vec<String>>>,
    applied: Arc<Mutex<Vec<ApplyConfigurationRequest>>>,
    upgrades: Arc<Mutex<Vec<Received>>>,
}

impl Double {
    fn called(&self, method: &str) {
        self.calls.lock().unwrap().push(method.to_owned());
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn nope<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the test double"))
}

#[tonic::async_trait]
impl Machine for Double {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        self.called("Version");
        Ok(Response::new(VersionResponse {
            os_version: "1.2.3-test".into(),
            slot: "A".into(),
            kernel: "6.12.0-test".into(),
            build_id: "build-77".into(),
            maintenance: false,
            hostname: self.behaviour.hostname.clone(),
            uptime_s: 42,
        }))
    }
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        self.called("Health");
        Ok(Response::new(HealthResponse::default()))
    }
    async fn upgrade(
        &self,
        req: Request<tonic::Streaming<UpgradeRequest>>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        self.called("Upgrade");
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upgrade stream"))?;
        let options = first
            .options
            .ok_or_else(|| Status::invalid_argument("the first message carries no options"))?;
        if !first.chunk.is_empty() {
            return Err(Status::invalid_argument("bytes in the options message"));
        }
        if self.behaviour.refuse_upgrade {
            return Err(Status::permission_denied(
                "the bundle is signed by key 0123456789abcdef, which is not trusted",
            ));
        }
        let mut got = Received {
            options,
            chunks: Vec::new(),
            bytes: Vec::new(),
        };
        while let Some(m) = stream.message().await? {
            if m.options.is_some() {
                return Err(Status::invalid_argument("options after the first message"));
            }
            got.chunks.push(m.chunk.len());
            got.bytes.extend_from_slice(&m.chunk);
        }
        // The real reader, against the key the double trusts.
        let trusted =
            bundle::TrustedKeys::from_base64(&[trusted_bundle_key().public_base64()]).unwrap();
        let verified = bundle::verify_reader(&got.bytes[..], trusted, bundle::Limits::default());
        let rebooting = !got.options.no_reboot;
        let bytes = got.bytes.len() as u64;
        self.upgrades.lock().unwrap().push(got);
        let manifest = verified.map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(UpgradeResponse {
            message: "bundle verified and written".into(),
            slot: "B".into(),
            os_version: manifest.os_version,
            bytes,
            rebooting,
        }))
    }
    type UpgradeFromUrlStream = Stream<UpgradeFromUrlProgress>;
    async fn upgrade_from_url(
        &self,
        _: Request<UpgradeFromUrlRequest>,
    ) -> Result<Response<Self::UpgradeFromUrlStream>, Status> {
        // apid answers it; init never sees it.
        self.called("UpgradeFromUrl");
        nope()
    }
    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        self.called("Rollback");
        Ok(Response::new(UpgradeResponse {
            message: String::new(),
            slot: "A".into(),
            os_version: "1.2.3-test".into(),
            bytes: 0,
            rebooting: !req.into_inner().no_reboot,
        }))
    }
    async fn upgrade_status(
        &self,
        _: Request<UpgradeStatusRequest>,
    ) -> Result<Response<UpgradeStatusResponse>, Status> {
        self.called("UpgradeStatus");
        if self.behaviour.no_upgrades {
            return nope();
        }
        Ok(Response::new(UpgradeStatusResponse {
            slots: vec![
                SlotStatus {
                    name: "A".into(),
                    state: "good".into(),
                    os_version: "1.2.3-test".into(),
                    booted: true,
                    is_default: true,
                },
                SlotStatus {
                    name: "B".into(),
                    state: "invalid".into(),
                    os_version: "2.0.0".into(),
                    booted: false,
                    is_default: false,
                },
            ],
            state: "rolled-back".into(),
            detail: "kubelet not healthy within 300s".into(),
            unix_ms: 1_700_000_000_000,
        }))
    }
    type EventsStream = Stream<Event>;
    async fn events(
        &self,
        _: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        nope()
    }
    async fn apply_configuration(
        &self,
        req: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        self.called("ApplyConfiguration");
        self.applied.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ApplyConfigurationResponse {
            plan: vec![PlannedChange {
                kind: "sysctl".into(),
                path: "machine.sysctls.vm.max_map_count".into(),
                apply: "live".into(),
                summary: "sysctl vm.max_map_count: 65530 -> 262144".into(),
            }],
            outcome: "applied live".into(),
            generation: 2,
            ..Default::default()
        }))
    }
    async fn confirm_configuration(
        &self,
        _: Request<ConfirmConfigurationRequest>,
    ) -> Result<Response<ConfirmConfigurationResponse>, Status> {
        nope()
    }
    async fn get_configuration(
        &self,
        _: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        nope()
    }
    async fn config_history(
        &self,
        _: Request<ConfigHistoryRequest>,
    ) -> Result<Response<ConfigHistoryResponse>, Status> {
        nope()
    }
    async fn rollback_configuration(
        &self,
        _: Request<RollbackConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        nope()
    }
    async fn service_list(
        &self,
        _: Request<ServiceListRequest>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        self.called("ServiceList");
        if self.behaviour.refuse_services {
            return Err(Status::failed_precondition(
                "services are not supervised yet",
            ));
        }
        Ok(Response::new(ServiceListResponse {
            services: vec![
                ServiceStatus {
                    name: "containerd".into(),
                    state: "running".into(),
                    pid: 100,
                    restarts: 0,
                    last_exit: String::new(),
                    since_unix_ms: 1_700_000_000_000,
                },
                ServiceStatus {
                    name: "kubelet".into(),
                    state: "backing-off".into(),
                    pid: 0,
                    restarts: 3,
                    last_exit: "exit status 1".into(),
                    since_unix_ms: 1_700_000_100_000,
                },
            ],
        }))
    }
    async fn service_start(
        &self,
        _: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        nope()
    }
    async fn service_stop(
        &self,
        _: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        nope()
    }
    async fn service_restart(
        &self,
        _: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        nope()
    }
    async fn service_kill(
        &self,
        _: Request<ServiceKillRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        nope()
    }
    type LogsStream = Stream<LogLine>;
    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        self.called("Logs");
        let req = req.into_inner();
        let lines: Vec<Result<LogLine, Status>> = (0..3)
            .map(|i| {
                Ok(LogLine {
                    unix_ms: 1_700_000_000_000 + i,
                    line: format!("{} line {i}", req.service),
                    stream: "stdout".into(),
                })
            })
            .collect();
        let head = tokio_stream::iter(lines);
        if req.follow {
            // Following: the stream stays open after the lines so far.
            Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
                head,
                tokio_stream::pending(),
            ))))
        } else {
            Ok(Response::new(Box::pin(head)))
        }
    }
    type DmesgStream = Stream<LogLine>;
    async fn dmesg(&self, _: Request<DmesgRequest>) -> Result<Response<Self::DmesgStream>, Status> {
        nope()
    }
    type ReadStream = Stream<Chunk>;
    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        self.called("Read");
        assert_eq!(req.into_inner().path, "/proc/test/binary");
        let bytes = file_bytes();
        let (a, b) = bytes.split_at(300);
        let chunks = vec![
            Ok(Chunk {
                data: a.to_vec(),
                truncated: false,
            }),
            Ok(Chunk {
                data: b.to_vec(),
                truncated: false,
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        nope()
    }
    async fn mounts(&self, _: Request<MountsRequest>) -> Result<Response<MountsResponse>, Status> {
        nope()
    }
    async fn reboot(&self, _: Request<PowerRequest>) -> Result<Response<PowerResponse>, Status> {
        nope()
    }
    async fn shutdown(&self, _: Request<PowerRequest>) -> Result<Response<PowerResponse>, Status> {
        nope()
    }
    async fn last_shutdown(
        &self,
        _: Request<LastShutdownRequest>,
    ) -> Result<Response<LastShutdownResponse>, Status> {
        nope()
    }
}

/// A runtime serving nodes (double + in-process apid) in the background.
struct Lab {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    /// What apid trusts for `UpgradeFromUrl` without a pinned CA.
    system_cas: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let system_cas = dir.path().join("system-cas.pem");
        Lab {
            rt,
            dir,
            system_cas,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a double behind apid with `tls` and `mode`; returns apid's
    /// address.
    fn node(&self, double: &Double, tls: Arc<rustls::ServerConfig>, mode: Mode) -> SocketAddr {
        let name = format!("init-{}.sock", double.behaviour.hostname);
        let socket = self.path(&name);
        let svc = MachineServer::new(double.clone());
        let _guard = self.rt.enter();
        let unix = tokio::net::UnixListener::bind(&socket).unwrap();
        self.rt.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(unix))
                .await
                .unwrap();
        });
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Gateway {
            tls,
            mode,
            upstream: apid::forward::Upstream::new(&socket),
            system_cas: self.system_cas.clone(),
        };
        self.rt.spawn(apid::server::serve(
            listener,
            gateway,
            std::future::pending(),
        ));
        addr
    }

    /// `nodectl gen secrets` into the lab's `secrets/` and a node
    /// certificate (`node-a`) from its CA: the directory, the CA, and a
    /// maker of apid's mutual-TLS configuration serving that certificate.
    fn secrets_and_node_tls(
        &self,
    ) -> (
        PathBuf,
        nodectl::secrets::CertificateAuthority,
        impl Fn() -> Arc<rustls::ServerConfig>,
    ) {
        let secrets = self.path("secrets");
        let o = nodectl(&[
            "gen",
            "secrets",
            "--out",
            secrets.to_str().unwrap(),
            "--endpoint",
            "127.0.0.1:1",
        ]);
        assert!(o.status.success(), "{}", err(&o));
        let read = |f: &str| std::fs::read_to_string(secrets.join(f)).unwrap();
        let ca = nodectl::secrets::CertificateAuthority::from_pem(&read("ca.crt"), &read("ca.key"))
            .unwrap();
        let node_cert = ca
            .issue_node(&nodectl::secrets::NodeTemplate::default(), "node-a", &[])
            .unwrap();
        let ca_pem = ca.cert_pem().to_string();
        let server_tls = move || {
            apid::tls::mutual(
                pem_certs(&ca_pem),
                pem_certs(&node_cert.cert_pem),
                rustls_pki_types::pem::PemObject::from_pem_slice(node_cert.key_pem.as_bytes())
                    .unwrap(),
            )
            .unwrap()
        };
        (secrets, ca, server_tls)
    }

    /// `nodectl gen secrets`, then a double behind a mutual-TLS apid for
    /// each of `doubles` with a certificate from those secrets. Returns the
    /// contexts file (current context: the first node; a `reader` context
    /// for it too) and the nodes' addresses.
    fn mutual_nodes(&self, doubles: &[&Double]) -> (PathBuf, Vec<String>) {
        let (secrets, _, server_tls) = self.secrets_and_node_tls();
        let addrs: Vec<String> = doubles
            .iter()
            .map(|d| self.node(d, server_tls(), Mode::Mutual).to_string())
            .collect();
        let contexts = secrets.join("nodectl.yaml");
        let text = std::fs::read_to_string(&contexts).unwrap();
        std::fs::write(
            &contexts,
            format!(
                "{}\n  reader:\n    endpoints: [\"{}\"]\n    ca: ca.crt\n    cert: reader.crt\n    key: reader.key\n",
                text.replace("127.0.0.1:1", &addrs[0]),
                addrs[0]
            ),
        )
        .unwrap();
        (contexts, addrs)
    }
}

/// The certificates of a PEM text.
fn pem_certs(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn nodectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(args)
        .env_remove("NODECTL_LOG")
        .env_remove("NODECTL_CONTEXTS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn git(repo: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", err(&o));
    out(&o).trim().to_owned()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Everything over mutual TLS with the secrets `nodectl gen secrets` made:
/// output formats, fan-out with a refusing node, an unreachable node, a
/// role refusal, streaming logs, raw reads and apply-config.
#[test]
fn remote_commands_over_mutual_tls() {
    let lab = Lab::new();
    let (secrets, ca, server_tls) = lab.secrets_and_node_tls();
    let a = Double {
        behaviour: Behaviour {
            hostname: "node-a".into(),
            refuse_services: false,
            refuse_upgrade: false,
            no_upgrades: false,
        },
        ..Default::default()
    };
    let b = Double {
        behaviour: Behaviour {
            hostname: "node-b".into(),
            refuse_services: true,
            refuse_upgrade: false,
            no_upgrades: false,
        },
        ..Default::default()
    };
    let addr_a = lab.node(&a, server_tls(), Mode::Mutual).to_string();
    let addr_b = lab.node(&b, server_tls(), Mode::Mutual).to_string();

    // The generated contexts file points at 127.0.0.1:1; point it at A with
    // `context`-level editing the way a user would: a second context.
    let contexts = secrets.join("nodectl.yaml");
    let text = std::fs::read_to_string(&contexts).unwrap();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    std::fs::write(
        &contexts,
        format!(
            "{text}\n  lab:\n    endpoints: [\"{addr_a}\"]\n    ca: ca.crt\n    cert: admin.crt\n    key: admin.key\n  reader:\n    endpoints: [\"{addr_a}\"]\n    ca: ca.crt\n    cert: reader.crt\n    key: reader.key\n"
        ),
    )
    .unwrap();
    let ctx = contexts.to_str().unwrap();
    let o = nodectl(&["--contexts", ctx, "context", "use", "lab"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = nodectl(&["--contexts", ctx, "context", "list"]);
    assert!(
        out(&o)
            .lines()
            .any(|l| l.starts_with('*') && l.contains("lab")),
        "{}",
        out(&o)
    );

    // version: table, JSON and YAML of the same answer.
    let o = nodectl(&["--contexts", ctx, "version"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let table = out(&o);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("hostname") && l.ends_with("node-a")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("os version") && l.ends_with("1.2.3-test")),
        "{table}"
    );
    let o = nodectl(&["--contexts", ctx, "-o", "json", "version"]);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["hostname"], "node-a");
    assert_eq!(v["buildId"], "build-77");
    assert_eq!(v["uptimeS"], 42);
    let o = nodectl(&["--contexts", ctx, "-o", "yaml", "version"]);
    let y: serde_json::Value = serde_saphyr::from_str(&out(&o)).unwrap();
    assert_eq!(y, v);

    // services: a table row per service; JSON with the fields.
    let o = nodectl(&["--contexts", ctx, "services"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let rows: Vec<Vec<String>> = out(&o)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0][..4], ["SERVICE", "STATE", "PID", "RESTARTS"]);
    assert_eq!(rows[1][..4], ["containerd", "running", "100", "0"]);
    assert_eq!(rows[2][..4], ["kubelet", "backing-off", "-", "3"]);
    let o = nodectl(&["--contexts", ctx, "-o", "yaml", "services"]);
    let y: serde_json::Value = serde_saphyr::from_str(&out(&o)).unwrap();
    assert_eq!(y[1]["name"], "kubelet");
    assert_eq!(y[1]["lastExit"], "exit status 1");

    // Fan-out: A answers, B refuses; per-node lines and exit 1.
    let nodes = format!("{addr_a},{addr_b}");
    let o = nodectl(&["--contexts", ctx, "-n", &nodes, "services"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        out(&o)
            .lines()
            .any(|l| l.starts_with(&format!("{addr_a}: containerd"))),
        "{}",
        out(&o)
    );
    assert!(!out(&o).contains(&addr_b), "{}", out(&o));
    assert_eq!(
        err(&o).trim(),
        format!("{addr_b}: FailedPrecondition: services are not supervised yet")
    );
    let o = nodectl(&["--contexts", ctx, "-n", &nodes, "-o", "json", "services"]);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v[0]["node"], addr_a.as_str());
    assert_eq!(v[0]["result"][0]["name"], "containerd");
    assert_eq!(v[1]["error"]["code"], "FailedPrecondition");
    assert_eq!(b.calls(), ["ServiceList", "ServiceList"]);

    // An unreachable node: exit 2, the endpoint named.
    let dead = format!("127.0.0.1:{}", closed_port());
    let o = nodectl(&[
        "--contexts",
        ctx,
        "-n",
        &format!("{addr_a},{dead}"),
        "version",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).starts_with(&format!("{dead}: cannot connect")),
        "{}",
        err(&o)
    );
    assert!(
        out(&o).contains(&format!("{addr_a}: hostname")),
        "{}",
        out(&o)
    );

    // The node's certificate must name the address used to reach it: a
    // certificate from the right CA for the DNS name `node-c` only is
    // refused when the node is reached by IP.
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        ca.cert_pem(),
        rcgen::KeyPair::from_pem(ca.key_pem()).unwrap(),
    )
    .unwrap();
    let c_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut c_params = rcgen::CertificateParams::new(vec!["node-c".to_owned()]).unwrap();
    c_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let c_cert = c_params.signed_by(&c_key, &issuer).unwrap();
    let c = Double {
        behaviour: Behaviour {
            hostname: "node-c".into(),
            refuse_services: false,
            refuse_upgrade: false,
            no_upgrades: false,
        },
        ..Default::default()
    };
    let c_tls = apid::tls::mutual(
        pem_certs(ca.cert_pem()),
        vec![c_cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(c_key.serialize_der().into()),
    )
    .unwrap();
    let addr_c = lab.node(&c, c_tls, Mode::Mutual).to_string();
    let o = nodectl(&["--contexts", ctx, "-n", &addr_c, "version"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).starts_with(&format!("{addr_c}: cannot connect: "))
            && err(&o).contains("TLS handshake failed"),
        "{}",
        err(&o)
    );
    assert!(c.calls().is_empty());

    // A reader may not read files: apid refuses naming the role; the node
    // never sees the call.
    let o = nodectl(&[
        "--contexts",
        ctx,
        "--context",
        "reader",
        "read",
        "/proc/test/binary",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(
        err(&o).trim(),
        format!(
            "{addr_a}: PermissionDenied: Read needs os:operator; client \"reader\" has os:reader"
        )
    );
    assert!(!a.calls().contains(&"Read".to_owned()));

    // read: the raw bytes, unchanged.
    let o = nodectl(&["--contexts", ctx, "read", "/proc/test/binary"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(o.stdout, file_bytes());

    // logs -f: the lines arrive while the stream is still open.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(["--contexts", ctx, "logs", "kubelet", "-f", "--tail", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    for i in 0..3 {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(line, format!("kubelet line {i}"));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "logs -f ended by itself"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Without -f the command ends after the lines.
    let o = nodectl(&["--contexts", ctx, "logs", "kubelet"]);
    assert_eq!(out(&o), "kubelet line 0\nkubelet line 1\nkubelet line 2\n");

    // apply-config of an invalid file: every problem, exit 1, nothing sent.
    let bad = lab.path("bad.yaml");
    std::fs::write(&bad, BAD).unwrap();
    let o = nodectl(&[
        "--contexts",
        ctx,
        "apply-config",
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let problems = err(&o);
    assert!(
        problems.contains("machine.sysctls.net..ipv4: line 6 col 5"),
        "{problems}"
    );
    assert!(
        problems.contains("machine.files[0].path: line 8 col 13"),
        "{problems}"
    );
    assert!(problems.contains("not sent to any node"), "{problems}");
    assert!(err(&o).contains("invalid (2 errors)"), "{}", err(&o));
    assert!(a.applied.lock().unwrap().is_empty());
    assert!(!a.calls().contains(&"ApplyConfiguration".to_owned()));

    // apply-config --git: the node receives the committed bytes and the
    // repository, ref, commit and path.
    let repo = lab.path("repo");
    std::fs::create_dir_all(repo.join("nodes")).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("nodes/node1.yaml"), GOOD).unwrap();
    git(&repo, &["add", "nodes/node1.yaml"]);
    git(&repo, &["commit", "-q", "-m", "node1"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("nodes/node1.yaml"), "work tree: not committed").unwrap();
    let o = nodectl(&[
        "--contexts",
        ctx,
        "apply-config",
        "--git",
        repo.to_str().unwrap(),
        "--ref",
        "main",
        "--path",
        "nodes/node1.yaml",
        "--mode",
        "try",
        "--timeout",
        "5m",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        out(&o),
        "live    sysctl vm.max_map_count: 65530 -> 262144\ngeneration 2: applied live\n"
    );
    let sent = a.applied.lock().unwrap().pop().unwrap();
    assert_eq!(sent.config, GOOD.as_bytes());
    let src = sent.source.clone().unwrap();
    assert_eq!(src.git_repo, repo.to_str().unwrap());
    assert_eq!(src.git_ref, "main");
    assert_eq!(src.git_commit, commit);
    assert_eq!(src.git_path, "nodes/node1.yaml");
    assert!(src.file.is_empty());
    assert_eq!(sent.mode(), ApplyMode::Try);
    assert_eq!(sent.try_timeout_s, 300);
    assert!(!sent.dry_run);

    // apply-config -f with --dry-run: the file's absolute path is recorded.
    let good = lab.path("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let o = nodectl(&[
        "--contexts",
        ctx,
        "-o",
        "json",
        "apply-config",
        "-f",
        good.to_str().unwrap(),
        "--mode",
        "no-reboot",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["generation"], 2);
    assert_eq!(v["plan"][0]["apply"], "live");
    let sent = a.applied.lock().unwrap().pop().unwrap();
    assert_eq!(sent.source.clone().unwrap().file, good.to_str().unwrap());
    assert_eq!(sent.mode(), ApplyMode::NoReboot);
    assert!(sent.dry_run);
    // --timeout belongs to --mode try.
    let o = nodectl(&[
        "--contexts",
        ctx,
        "apply-config",
        "-f",
        good.to_str().unwrap(),
        "--timeout",
        "30s",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

/// Maintenance mode: apid's self-signed certificate, pinned by fingerprint
/// in any common spelling; a wrong pin refuses the connection naming both
/// fingerprints; no pin warns and connects.
#[test]
fn insecure_connections_pin_the_maintenance_fingerprint() {
    let lab = Lab::new();
    let cert = apid::maintenance::MaintenanceCert::load_or_generate(None).unwrap();
    let fingerprint = cert.fingerprint();
    let tls = apid::tls::maintenance(cert.cert, cert.key).unwrap();
    let double = Double {
        behaviour: Behaviour {
            hostname: "fresh".into(),
            refuse_services: false,
            refuse_upgrade: false,
            no_upgrades: false,
        },
        ..Default::default()
    };
    let addr = lab.node(&double, tls, Mode::Maintenance).to_string();

    // Upper case with colons and a prefix, as some tools print it.
    let colons = fingerprint
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let pinned = format!("sha256:{colons}");
    let o = nodectl(&[
        "--insecure",
        "--fingerprint",
        &pinned,
        "-n",
        &addr,
        "-o",
        "json",
        "version",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).is_empty(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["hostname"], "fresh");

    // Only Version and ApplyConfiguration in maintenance mode.
    let o = nodectl(&[
        "--insecure",
        "--fingerprint",
        &fingerprint,
        "-n",
        &addr,
        "services",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).starts_with(&format!(
            "{addr}: PermissionDenied: node is in maintenance mode"
        )),
        "{}",
        err(&o)
    );

    // A wrong pin: no call reaches the node, both fingerprints are named.
    let calls_before = double.calls().len();
    let wrong = "0".repeat(64);
    let o = nodectl(&[
        "--insecure",
        "--fingerprint",
        &wrong,
        "-n",
        &addr,
        "version",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("sha256:{fingerprint}")),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains(&format!("sha256:{wrong}")), "{}", err(&o));
    assert!(err(&o).starts_with(&format!("{addr}: ")), "{}", err(&o));
    assert_eq!(double.calls().len(), calls_before);

    // No pin: a warning, and it connects.
    let o = nodectl(&["--insecure", "-n", &addr, "version"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        err(&o).contains("warning: --insecure without --fingerprint"),
        "{}",
        err(&o)
    );

    // Without --insecure the self-signed certificate is refused (it does
    // not chain to the context's CA).
    let secrets = lab.path("secrets");
    let o = nodectl(&[
        "gen",
        "secrets",
        "--out",
        secrets.to_str().unwrap(),
        "--endpoint",
        &addr,
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let o = nodectl(&[
        "--contexts",
        secrets.join("nodectl.yaml").to_str().unwrap(),
        "version",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("TLS handshake failed"), "{}", err(&o));
}

/// Upgrades, slot rollback and upgrade status through apid over mutual TLS:
/// the exact bundle bytes reach the node in 1 MiB chunks after the options;
/// bad bundles and wrong keys are refused before any call; several nodes
/// are upgraded in turn with a refusing one reported; a reader may look at
/// the slots but not upgrade; version and health show the slot state.
#[test]
fn upgrades_stream_the_bundle_and_show_the_slots() {
    let lab = Lab::new();
    let double = |name: &str, refuse_upgrade: bool, no_upgrades: bool| Double {
        behaviour: Behaviour {
            hostname: name.into(),
            refuse_services: false,
            refuse_upgrade,
            no_upgrades,
        },
        ..Default::default()
    };
    let a = double("node-a", false, false);
    let b = double("node-b", true, false);
    let old = double("node-old", false, true);
    let (contexts, addrs) = lab.mutual_nodes(&[&a, &b, &old]);
    let [addr_a, addr_b, addr_old] = [&addrs[0], &addrs[1], &addrs[2]].map(String::clone);
    let ctx = contexts.to_str().unwrap();

    // A bundle of 2 MiB + 7 bytes of payload signed with the trusted key.
    let dir = lab.path("bundle");
    std::fs::create_dir(&dir).unwrap();
    let good = signed_bundle(&dir, "v2", (2 << 20) + 7);
    let bundle_bytes = std::fs::read(&good).unwrap();
    let size = bundle_bytes.len();
    let good_s = good.to_str().unwrap();

    // upgrade -f: what is sent, the progress, the node's answer.
    let o = nodectl(&["--contexts", ctx, "upgrade", "-f", good_s]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.starts_with(&format!(
            "bundle {good_s}: OS 2.0.0, build build-88, {size} bytes"
        )),
        "{e}"
    );
    assert!(e.contains("upgrades from 1.0 or later"), "{e}");
    assert!(e.contains(&trusted_bundle_key().key_id()), "{e}");
    // Standard error is not a terminal here: plain lines, the last at 100%.
    assert!(
        e.lines()
            .any(|l| l.starts_with("sent ") && l.contains("(100%)") && l.ends_with("MB/s")),
        "{e}"
    );
    assert!(!e.contains('\r'), "{e:?}");
    let so = out(&o);
    assert!(
        so.contains(&format!(
            "slot B: version 2.0.0 written, {size} bytes verified"
        )),
        "{so}"
    );
    assert!(so.contains("rebooting into slot B on trial"), "{so}");
    {
        let got = a.upgrades.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes, bundle_bytes, "the node got the file's bytes");
        assert_eq!(got[0].options.size, size as u64);
        assert!(!got[0].options.no_reboot);
        let mib = 1usize << 20;
        assert_eq!(got[0].chunks, vec![mib, mib, size - 2 * mib]);
    }

    // --stage: no reboot asked; JSON answer.
    let o = nodectl(&[
        "--contexts",
        ctx,
        "-o",
        "json",
        "upgrade",
        "-f",
        good_s,
        "--stage",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["slot"], "B");
    assert_eq!(v["osVersion"], "2.0.0");
    assert_eq!(v["rebooting"], false);
    assert_eq!(v["bytes"], size as u64);
    assert!(a.upgrades.lock().unwrap()[1].options.no_reboot);

    // On a terminal (a pty from util-linux `script`, when installed): the
    // bar redrawn in place, ending at 100%.
    if Path::new("/usr/bin/script").exists() {
        let cmd = format!(
            "'{}' --contexts '{ctx}' upgrade -f '{good_s}' --stage",
            env!("CARGO_BIN_EXE_nodectl")
        );
        let o = Command::new("/usr/bin/script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let tty = out(&o);
        assert!(tty.contains("\r["), "{tty:?}");
        assert!(tty.contains(&format!("[{}] ", "#".repeat(30))), "{tty:?}");
        assert!(tty.contains("(100%)"), "{tty:?}");
        assert!(!tty.contains("sent "), "{tty:?}");
    } else {
        eprintln!("no /usr/bin/script: the terminal progress bar is not checked");
    }

    // Refused locally, no call: a --pubkey that did not sign it, a file
    // that is not a bundle, an empty file, a truncated bundle.
    let calls = a.calls().len();
    let other = bundle::SigningKey::from_seed([6; 32]).public_base64();
    let o = nodectl(&[
        "--contexts",
        ctx,
        "upgrade",
        "-f",
        good_s,
        "--pubkey",
        &other,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("which is not trusted"), "{}", err(&o));
    assert!(err(&o).contains("not sent to any node"), "{}", err(&o));
    let o = nodectl(&[
        "--contexts",
        ctx,
        "upgrade",
        "-f",
        good_s,
        "--pubkey",
        &trusted_bundle_key().public_base64(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).contains("(--pubkey)"), "{}", err(&o));
    let calls = calls + 1;
    let not_bundle = dir.join("disk.raw");
    std::fs::write(&not_bundle, b"\xeb\x3c\x90mkfs.fat and more").unwrap();
    let o = nodectl(&[
        "--contexts",
        ctx,
        "upgrade",
        "-f",
        not_bundle.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("not a Keelson bundle: bytes 0..8 are [eb, 3c, 90"),
        "{}",
        err(&o)
    );
    let empty = dir.join("empty.bundle");
    std::fs::write(&empty, b"").unwrap();
    let o = nodectl(&["--contexts", ctx, "upgrade", "-f", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("is empty (0 bytes)"), "{}", err(&o));
    let cut = dir.join("cut.bundle");
    std::fs::write(&cut, &bundle_bytes[..size - 1]).unwrap();
    let o = nodectl(&["--contexts", ctx, "upgrade", "-f", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("truncated"), "{}", err(&o));
    let o = nodectl(&[
        "--contexts",
        ctx,
        "upgrade",
        "-f",
        dir.join("missing").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert_eq!(a.calls().len(), calls, "{:?}", a.calls());

    // Two nodes, one refusing after the options without reading on: both
    // tried in turn, exit 1, each labelled. (16 MiB: more than the stream
    // buffers, so a sender that kept waiting on the refusing node would
    // hang here.)
    let big = signed_bundle(&dir, "big", 16 << 20);
    let nodes = format!("{addr_a},{addr_b}");
    let o = nodectl(&[
        "--contexts",
        ctx,
        "-n",
        &nodes,
        "upgrade",
        "-f",
        big.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        out(&o).contains(&format!("{addr_a}: slot B: version 2.0.0 written")),
        "{}",
        out(&o)
    );
    assert!(
        err(&o).contains(&format!(
            "{addr_b}: PermissionDenied: the bundle is signed by key"
        )),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains(&format!("{addr_a}: sent ")), "{}", err(&o));
    assert_eq!(b.calls(), ["Upgrade"]);
    assert!(b.upgrades.lock().unwrap().is_empty());

    // upgrade status: the table, and JSON.
    let o = nodectl(&["--contexts", ctx, "upgrade", "status"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let rows: Vec<Vec<String>> = out(&o)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0], ["SLOT", "STATE", "VERSION", "BOOTED", "DEFAULT"]);
    assert_eq!(rows[1], ["A", "good", "1.2.3-test", "yes", "yes"]);
    assert_eq!(rows[2], ["B", "invalid", "2.0.0", "-", "-"]);
    assert_eq!(
        out(&o).lines().nth(3).unwrap(),
        "last upgrade: rolled-back at 2023-11-14T22:13:20Z: kubelet not healthy within 300s"
    );
    let o = nodectl(&["--contexts", ctx, "-o", "yaml", "upgrade", "status"]);
    let y: serde_json::Value = serde_saphyr::from_str(&out(&o)).unwrap();
    assert_eq!(y["slots"][1]["osVersion"], "2.0.0");
    assert_eq!(y["slots"][0]["isDefault"], true);
    assert_eq!(y["state"], "rolled-back");

    // A reader may look at the slots but not upgrade or roll back.
    let o = nodectl(&[
        "--contexts",
        ctx,
        "--context",
        "reader",
        "upgrade",
        "status",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let before = a.calls().len();
    let o = nodectl(&[
        "--contexts",
        ctx,
        "--context",
        "reader",
        "upgrade",
        "-f",
        good_s,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("PermissionDenied: Upgrade needs os:operator"),
        "{}",
        err(&o)
    );
    let o = nodectl(&["--contexts", ctx, "--context", "reader", "rollback"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(a.calls().len(), before);

    // rollback
    let o = nodectl(&["--contexts", ctx, "rollback", "--reboot=false"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        out(&o),
        "slot A: version 1.2.3-test\nnot rebooting: slot A boots at the next reboot\n"
    );
    let o = nodectl(&["--contexts", ctx, "-o", "json", "rollback"]);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["rebooting"], true);

    // version and health carry the slot state.
    let o = nodectl(&["--contexts", ctx, "version"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let table = out(&o);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("default slot") && l.ends_with(" A")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("last upgrade") && l.contains("rolled-back")),
        "{table}"
    );
    let o = nodectl(&["--contexts", ctx, "-o", "json", "version"]);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["defaultSlot"], "A");
    // A node without UpgradeStatus: version and health as before, no error.
    let o = nodectl(&["--contexts", ctx, "-n", &addr_old, "version"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).is_empty(), "{}", err(&o));
    assert!(out(&o).contains("node-old"), "{}", out(&o));
    assert!(!out(&o).contains("default slot"), "{}", out(&o));
    let o = nodectl(&["--contexts", ctx, "-n", &addr_old, "-o", "json", "health"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert!(v.get("upgradeRolledBack").is_none(), "{v}");
    assert_eq!(
        old.calls(),
        ["Version", "UpgradeStatus", "Health", "UpgradeStatus"]
    );
    let o = nodectl(&["--contexts", ctx, "-n", &addr_old, "upgrade", "status"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("Unimplemented"), "{}", err(&o));

    let o = nodectl(&["--contexts", ctx, "health"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        out(&o).contains(
            "upgrade rolled back: kubelet not healthy within 300s (at 2023-11-14T22:13:20Z)"
        ),
        "{}",
        out(&o)
    );
}

#[test]
fn upgrades_from_a_url_resume_a_dropped_download_and_trust_only_what_they_are_told() {
    use keelson_tests::bundle_server::{BundleServer, Fault};
    let lab = Lab::new();
    let a = Double {
        behaviour: Behaviour {
            hostname: "node-a".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let (contexts, _) = lab.mutual_nodes(&[&a]);
    let ctx = contexts.to_str().unwrap();
    let dir = lab.path("mirror");
    std::fs::create_dir(&dir).unwrap();
    let bundle = signed_bundle(&dir, "v2", 3 << 20);
    let bundle_bytes = std::fs::read(&bundle).unwrap();
    let cut_at = 1u64 << 20;
    let mirror = BundleServer::start(&dir, &["127.0.0.1"], Fault::CutFirst(cut_at)).unwrap();
    let url = format!("https://127.0.0.1:{}/v2.bundle", mirror.port());
    let ca = dir.join("mirror-ca.pem");
    std::fs::write(&ca, mirror.ca_pem()).unwrap();
    let ca_s = ca.to_str().unwrap();
    let upgrade_calls = || a.calls().iter().filter(|c| *c == "Upgrade").count();

    // The node's system CAs do not include the mirror's: refused during
    // the TLS handshake, before init is asked to write anything.
    let unrelated = keelson_tests::pki::Ca::new("some public CA").unwrap();
    std::fs::write(&lab.system_cas, unrelated.cert_pem()).unwrap();
    let o = nodectl(&["--contexts", ctx, "upgrade", "--url", &url]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("FailedPrecondition: download: "),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("UnknownIssuer"), "{}", err(&o));
    assert!(err(&o).contains("nothing was written"), "{}", err(&o));
    assert_eq!(upgrade_calls(), 0);
    assert!(mirror.served().is_empty(), "{:?}", mirror.served());

    // Plain http and a missing file: refused, nothing written.
    let plain = url.replacen("https", "http", 1);
    let o = nodectl(&["--contexts", ctx, "upgrade", "--url", &plain]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("InvalidArgument: url"), "{}", err(&o));
    assert!(err(&o).contains("plain http is refused"), "{}", err(&o));
    let missing = url.replace("v2.bundle", "v3.bundle");
    let o = nodectl(&[
        "--contexts",
        ctx,
        "upgrade",
        "--url",
        &missing,
        "--ca",
        ca_s,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("the server answered 404"), "{}", err(&o));
    assert_eq!(upgrade_calls(), 0);

    // Pinned to the mirror's CA: the first download is cut at 1 MiB, the
    // node resumes where it stopped, and init gets exactly the file.
    let o = nodectl(&[
        "--contexts",
        ctx,
        "upgrade",
        "--url",
        &url,
        "--ca",
        ca_s,
        "--stage",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains(&format!("the node downloads {url}")), "{e}");
    assert!(e.contains("; resumed at byte "), "{e}");
    assert!(
        e.lines()
            .any(|l| l.starts_with("the node downloaded ") && l.contains("(100%)")),
        "{e}"
    );
    assert!(
        out(&o).contains("slot B: version 2.0.0 written"),
        "{}",
        out(&o)
    );
    {
        let got = a.upgrades.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].bytes, bundle_bytes,
            "init got the file's bytes, once each"
        );
        assert_eq!(got[0].options.size, bundle_bytes.len() as u64);
        assert!(got[0].options.no_reboot);
    }
    let served: Vec<_> = mirror
        .served()
        .into_iter()
        .filter(|s| s.path == "/v2.bundle")
        .collect();
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!((served[0].status, served[0].range.as_deref()), (200, None));
    assert_eq!(served[0].sent, cut_at);
    let resumed_at: u64 = served[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{served:?}"));
    assert_eq!(served[1].status, 206);
    assert!(resumed_at > 0 && resumed_at <= cut_at, "{served:?}");
    assert_eq!(resumed_at + served[1].sent, bundle_bytes.len() as u64);

    // The file is republished while the download is cut: the resume is
    // tied to the first ETag, the server sends the new whole file, and the
    // node stops instead of joining two files; init's Upgrade is cancelled.
    let changing =
        BundleServer::start(&dir, &["127.0.0.1"], Fault::CutFirstThenChange(cut_at)).unwrap();
    let ca2 = dir.join("changing-ca.pem");
    std::fs::write(&ca2, changing.ca_pem()).unwrap();
    let url2 = format!("https://127.0.0.1:{}/v2.bundle", changing.port());
    let before = upgrade_calls();
    let o = nodectl(&[
        "--contexts",
        ctx,
        "upgrade",
        "--url",
        &url2,
        "--ca",
        ca2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("cannot resume at byte"), "{e}");
    assert!(e.contains("it changed since the download started"), "{e}");
    assert!(e.contains("the upgrade was cancelled"), "{e}");
    assert_eq!(upgrade_calls(), before + 1, "init saw the upgrade start");
    assert_eq!(a.upgrades.lock().unwrap().len(), 1, "and never finish");

    // A reader may not make the node download anything.
    let o = nodectl(&[
        "--contexts",
        ctx,
        "--context",
        "reader",
        "upgrade",
        "--url",
        &url,
        "--ca",
        ca_s,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("PermissionDenied: UpgradeFromUrl needs os:operator"),
        "{}",
        err(&o)
    );
    assert_eq!(mirror.served().len(), 3, "the 404 and the two parts");
}
