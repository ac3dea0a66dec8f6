//! A CRI `Version` call over containerd's unix socket: the readiness check
//! that gates kubelet. The two messages are written by hand (no protoc):
//! they are the only part of the CRI API init needs. kubelet 1.20 speaks
//! `runtime.v1alpha2`, which containerd 1.6 serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Uri};

/// containerd's socket on a node.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The CRI method called.
const VERSION_PATH: &str = "/runtime.v1alpha2.RuntimeService/Version";

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

/// Why the CRI call failed.
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
    #[error("CRI Version on {socket}: {status}")]
    Call {
        /// The socket.
        socket: PathBuf,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// No answer in time.
    #[error("CRI Version on {socket}: no answer within {timeout:?}")]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The bound.
        timeout: Duration,
    },
}

/// Calls `RuntimeService/Version` on the CRI socket, bounded by `timeout`.
pub async fn version(socket: &Path, timeout: Duration) -> Result<VersionResponse, CriError> {
    match tokio::time::timeout(timeout, call(socket)).await {
        Ok(r) => r,
        Err(_) => Err(CriError::Timeout {
            socket: socket.to_path_buf(),
            timeout,
        }),
    }
}

async fn call(socket: &Path) -> Result<VersionResponse, CriError> {
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
    let call_err = |status| CriError::Call {
        socket: socket.to_path_buf(),
        status: Box::new(status),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| call_err(tonic::Status::unavailable(e.to_string())))?;
    let codec = tonic_prost::ProstCodec::<VersionRequest, VersionResponse>::default();
    let request = tonic::Request::new(VersionRequest {
        version: "v1alpha2".to_string(),
    });
    let response = grpc
        .unary(request, PathAndQuery::from_static(VERSION_PATH), codec)
        .await
        .map_err(call_err)?;
    Ok(response.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("containerd.sock");
        let err = version(&sock, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, CriError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("containerd.sock"));
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
    }
}
