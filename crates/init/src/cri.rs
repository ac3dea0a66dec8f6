//! A minimal CRI client over containerd's unix socket: `Version` (the
//! readiness check that gates kubelet) and what the ordered shutdown needs
//! to stop every pod while the network is still up (`ListContainers`,
//! `StopContainer`, `ListPodSandbox`, `StopPodSandbox`).
//!
//! The messages are written by hand (no protoc) with only the fields init
//! reads or sets; their tag numbers are those of `runtime.v1alpha2` in
//! kubernetes/cri-api `pkg/apis/runtime/v1alpha2/api.proto`, which kubelet
//! 1.20 speaks and containerd 1.6 serves. Fields left out are skipped by the
//! decoder as unknown fields.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

/// containerd's socket on a node.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The CRI service every method belongs to.
const SERVICE: &str = "/runtime.v1alpha2.RuntimeService/";

/// `runtime.v1alpha2.VersionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `runtime.v1alpha2.VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
    /// Name of the container runtime.
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// Version of the container runtime.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// API version of the container runtime.
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `runtime.v1alpha2.ListPodSandboxRequest` with its `filter` (tag 1) left
/// unset: every sandbox, whatever its state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {}

/// `runtime.v1alpha2.PodSandboxMetadata` (`attempt`, tag 4, left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    /// Pod name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Pod UID.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Pod namespace.
    #[prost(string, tag = "3")]
    pub namespace: String,
}

/// `runtime.v1alpha2.PodSandboxState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PodSandboxState {
    /// `SANDBOX_READY`.
    Ready = 0,
    /// `SANDBOX_NOTREADY`.
    NotReady = 1,
}

/// `runtime.v1alpha2.PodSandbox` (created_at, labels, annotations and
/// runtime_handler left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    /// Sandbox id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Which pod it belongs to.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Ready or not ready.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    pub state: i32,
}

impl PodSandbox {
    /// `namespace/name` of the pod, or the sandbox id when unknown.
    pub fn describe(&self) -> String {
        match &self.metadata {
            Some(m) if !m.name.is_empty() => format!("{}/{}", m.namespace, m.name),
            _ => self.id.clone(),
        }
    }
}

/// `runtime.v1alpha2.ListPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxResponse {
    /// The sandboxes.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

/// `runtime.v1alpha2.StopPodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxRequest {
    /// The sandbox to stop.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `runtime.v1alpha2.StopPodSandboxResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxResponse {}

/// `runtime.v1alpha2.ListContainersRequest` with its `filter` (tag 1) left
/// unset: every container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {}

/// `runtime.v1alpha2.ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    /// Container name in the pod spec.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Restart attempt.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `runtime.v1alpha2.ContainerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ContainerState {
    /// `CONTAINER_CREATED`.
    Created = 0,
    /// `CONTAINER_RUNNING`.
    Running = 1,
    /// `CONTAINER_EXITED`.
    Exited = 2,
    /// `CONTAINER_UNKNOWN`.
    Unknown = 3,
}

/// `runtime.v1alpha2.Container` (image, image_ref, created_at, labels and
/// annotations left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    /// Container id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The sandbox it runs in.
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    /// Name and attempt.
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    /// Created, running, exited or unknown.
    #[prost(enumeration = "ContainerState", tag = "6")]
    pub state: i32,
}

impl Container {
    /// Whether the runtime reports it running.
    pub fn running(&self) -> bool {
        self.state == ContainerState::Running as i32
    }
}

/// `runtime.v1alpha2.ListContainersResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersResponse {
    /// The containers.
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

/// `runtime.v1alpha2.StopContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerRequest {
    /// The container to stop.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Seconds between SIGTERM and SIGKILL (0: SIGKILL at once).
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

/// `runtime.v1alpha2.StopContainerResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerResponse {}

/// Why a CRI call failed.
#[derive(Debug, Error)]
pub enum CriError {
    /// No connection to the socket.
    #[error("connecting to {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// The call failed (status from the runtime or transport).
    #[error("CRI {method} on {socket}: {status}")]
    Call {
        /// The method called.
        method: &'static str,
        /// The socket.
        socket: PathBuf,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// No answer in time.
    #[error("CRI {method} on {socket}: no answer within {timeout:?}")]
    Timeout {
        /// The method called (`connect` for the connection itself).
        method: &'static str,
        /// The socket.
        socket: PathBuf,
        /// The bound.
        timeout: Duration,
    },
}

/// Calls `RuntimeService/Version` on the CRI socket, bounded by `timeout`
/// (connection included).
pub async fn version(socket: &Path, timeout: Duration) -> Result<VersionResponse, CriError> {
    let work = async {
        let client = RuntimeClient::connect_unbounded(socket).await?;
        client
            .unary(
                "Version",
                VersionRequest {
                    version: "v1alpha2".to_string(),
                },
            )
            .await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(CriError::Timeout {
            method: "Version",
            socket: socket.to_path_buf(),
            timeout,
        }),
    }
}

/// A connection to a CRI runtime service; calls share it (HTTP/2
/// multiplexing), so they may run in parallel on clones of the client.
#[derive(Clone)]
pub struct RuntimeClient {
    grpc: tonic::client::Grpc<Channel>,
    socket: PathBuf,
}

impl RuntimeClient {
    /// Connects to the unix socket, bounded by `timeout`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<RuntimeClient, CriError> {
        match tokio::time::timeout(timeout, Self::connect_unbounded(socket)).await {
            Ok(r) => r,
            Err(_) => Err(CriError::Timeout {
                method: "connect",
                socket: socket.to_path_buf(),
                timeout,
            }),
        }
    }

    async fn connect_unbounded(socket: &Path) -> Result<RuntimeClient, CriError> {
        let path = socket.to_path_buf();
        // The URI is required by the API but unused: the connector dials the
        // unix socket.
        let channel = Endpoint::from_static("http://cri.local")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| CriError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(RuntimeClient {
            grpc: tonic::client::Grpc::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    /// Every pod sandbox the runtime knows, bounded by `timeout`.
    pub async fn list_pod_sandboxes(&self, timeout: Duration) -> Result<Vec<PodSandbox>, CriError> {
        let r: ListPodSandboxResponse = self
            .bounded("ListPodSandbox", ListPodSandboxRequest {}, timeout)
            .await?;
        Ok(r.items)
    }

    /// Stops a sandbox: its containers are killed and its network (CNI)
    /// torn down. Idempotent. Bounded by `timeout`.
    pub async fn stop_pod_sandbox(&self, id: &str, timeout: Duration) -> Result<(), CriError> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        let _: StopPodSandboxResponse = self.bounded("StopPodSandbox", request, timeout).await?;
        Ok(())
    }

    /// Every container the runtime knows, bounded by `timeout`.
    pub async fn list_containers(&self, timeout: Duration) -> Result<Vec<Container>, CriError> {
        let r: ListContainersResponse = self
            .bounded("ListContainers", ListContainersRequest {}, timeout)
            .await?;
        Ok(r.containers)
    }

    /// Stops a container: SIGTERM, `grace_s` seconds, SIGKILL (done by the
    /// runtime). Idempotent. Bounded by `timeout`.
    pub async fn stop_container(
        &self,
        id: &str,
        grace_s: i64,
        timeout: Duration,
    ) -> Result<(), CriError> {
        let request = StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_s,
        };
        let _: StopContainerResponse = self.bounded("StopContainer", request, timeout).await?;
        Ok(())
    }

    async fn bounded<Req, Resp>(
        &self,
        method: &'static str,
        request: Req,
        timeout: Duration,
    ) -> Result<Resp, CriError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        match tokio::time::timeout(timeout, self.unary(method, request)).await {
            Ok(r) => r,
            Err(_) => Err(CriError::Timeout {
                method,
                socket: self.socket.clone(),
                timeout,
            }),
        }
    }

    async fn unary<Req, Resp>(&self, method: &'static str, request: Req) -> Result<Resp, CriError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let call_err = |status| CriError::Call {
            method,
            socket: self.socket.clone(),
            status: Box::new(status),
        };
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| call_err(tonic::Status::unavailable(e.to_string())))?;
        let path = PathAndQuery::try_from(format!("{SERVICE}{method}"))
            .map_err(|e| call_err(tonic::Status::internal(e.to_string())))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(tonic::Request::new(request), path, codec)
            .await
            .map_err(call_err)?;
        Ok(response.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use prost::Message;

    /// A length-delimited field (wire type 2) with a one-byte length.
    fn ld(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![(tag << 3) | 2, body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    /// A varint field (wire type 0) with a one-byte value.
    fn varint(tag: u8, value: u8) -> Vec<u8> {
        vec![tag << 3, value]
    }

    #[test]
    fn stop_requests_encode_with_the_api_proto_field_numbers() {
        // StopPodSandboxRequest.pod_sandbox_id = 1.
        let bytes = StopPodSandboxRequest {
            pod_sandbox_id: "sb1".into(),
        }
        .encode_to_vec();
        assert_eq!(bytes, ld(1, b"sb1"));
        // StopContainerRequest.container_id = 1, timeout = 2 (int64).
        let bytes = StopContainerRequest {
            container_id: "c9".into(),
            timeout: 20,
        }
        .encode_to_vec();
        let mut want = ld(1, b"c9");
        want.extend(varint(2, 20));
        assert_eq!(bytes, want);
        // No filter: empty list requests.
        assert!(ListPodSandboxRequest {}.encode_to_vec().is_empty());
        assert!(ListContainersRequest {}.encode_to_vec().is_empty());
    }

    #[test]
    fn list_responses_decode_from_the_api_proto_field_numbers() {
        // PodSandbox{id=1, metadata=2{name=1, uid=2, namespace=3}, state=3,
        // created_at=4 (skipped as unknown here)}.
        let mut meta = ld(1, b"web");
        meta.extend(ld(2, b"u-1"));
        meta.extend(ld(3, b"default"));
        let mut sandbox = ld(1, b"sb1");
        sandbox.extend(ld(2, &meta));
        sandbox.extend(varint(3, 1));
        sandbox.extend(varint(4, 99));
        let response = ld(1, &sandbox);
        let decoded = ListPodSandboxResponse::decode(response.as_slice()).unwrap();
        assert_eq!(decoded.items.len(), 1);
        let sb = &decoded.items[0];
        assert_eq!(sb.id, "sb1");
        assert_eq!(sb.state, PodSandboxState::NotReady as i32);
        assert_eq!(sb.describe(), "default/web");

        // Container{id=1, pod_sandbox_id=2, metadata=3{name=1, attempt=2},
        // image_ref=5 (unknown here), state=6}.
        let mut cmeta = ld(1, b"app");
        cmeta.extend(varint(2, 3));
        let mut c = ld(1, b"c1");
        c.extend(ld(2, b"sb1"));
        c.extend(ld(3, &cmeta));
        c.extend(ld(5, b"sha256:x"));
        c.extend(varint(6, 1));
        let mut exited = ld(1, b"c2");
        exited.extend(varint(6, 2));
        let mut response = ld(1, &c);
        response.extend(ld(1, &exited));
        let decoded = ListContainersResponse::decode(response.as_slice()).unwrap();
        assert_eq!(decoded.containers.len(), 2);
        let c = &decoded.containers[0];
        assert_eq!((c.id.as_str(), c.pod_sandbox_id.as_str()), ("c1", "sb1"));
        assert_eq!(c.metadata.as_ref().unwrap().attempt, 3);
        assert!(c.running());
        assert!(!decoded.containers[1].running());
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("containerd.sock");
        let err = version(&sock, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, CriError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("containerd.sock"));
        let err = RuntimeClient::connect(&sock, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, CriError::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_socket_that_never_answers_times_out() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("mute.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        // Accept and hold connections without speaking HTTP/2.
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let err = version(&sock, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, CriError::Timeout { .. }), "{err}");
        // The shutdown's calls are bounded the same way.
        match RuntimeClient::connect(&sock, Duration::from_millis(500)).await {
            Ok(client) => {
                let err = client
                    .list_pod_sandboxes(Duration::from_millis(500))
                    .await
                    .unwrap_err();
                assert!(
                    matches!(
                        err,
                        CriError::Timeout {
                            method: "ListPodSandbox",
                            ..
                        }
                    ),
                    "{err}"
                );
            }
            Err(err) => assert!(matches!(err, CriError::Timeout { .. }), "{err}"),
        }
    }
}
