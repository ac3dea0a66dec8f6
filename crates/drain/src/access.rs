//! Turns a [`Request`] into a Kubernetes client: a kubeconfig as given, or
//! an endpoint + CA + bearer token. Only inline credentials are accepted
//! (a node has no files or plugins a kubeconfig could point at), and the
//! client's own retries are off: the drain loop owns every retry and its
//! deadline.

use std::time::Duration;

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::DrainError;
use crate::protocol::Request;

/// Bound on a TCP + TLS connect to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one API answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The kubeconfig `request` stands for, checked.
pub fn kubeconfig(request: &Request) -> Result<Kubeconfig, DrainError> {
    let kc = match &request.kubeconfig {
        Some(text) => Kubeconfig::from_yaml(text).map_err(|e| DrainError::Access {
            what: "kubeconfig",
            reason: e.to_string(),
        })?,
        None => from_endpoint(request)?,
    };
    for user in &kc.auth_infos {
        if let Some(a) = &user.auth_info {
            let external = if a.exec.is_some() {
                Some("exec")
            } else if a.auth_provider.is_some() {
                Some("auth-provider")
            } else if a.token_file.is_some()
                || a.client_certificate.is_some()
                || a.client_key.is_some()
            {
                Some("a file path (tokenFile, client-certificate or client-key)")
            } else {
                None
            };
            if let Some(what) = external {
                return Err(DrainError::Access {
                    what: "kubeconfig",
                    reason: format!(
                        "user {:?} uses {what}; a node has no plugins or files: use inline data (token, client-certificate-data)",
                        user.name
                    ),
                });
            }
        }
    }
    Ok(kc)
}

fn from_endpoint(request: &Request) -> Result<Kubeconfig, DrainError> {
    let endpoint = request.endpoint.as_deref().ok_or(DrainError::Access {
        what: "endpoint",
        reason: "no API server endpoint (kubernetes.endpoint or kubelet.apiServer)".into(),
    })?;
    let token = request.token.as_deref().ok_or(DrainError::Access {
        what: "token",
        reason: "no token (kubernetes.token) and no kubeconfig".into(),
    })?;
    let mut cluster = serde_json::json!({ "server": endpoint });
    if let Some(ca) = &request.ca_cert {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cluster", "cluster": cluster }],
        "users": [{ "name": "keelson-drain", "user": { "token": token } }],
        "contexts": [{ "name": "drain", "context": { "cluster": "cluster", "user": "keelson-drain" } }],
        "current-context": "drain",
    });
    serde_json::from_value(doc).map_err(|e| DrainError::Access {
        what: "endpoint",
        reason: e.to_string(),
    })
}

/// A client for `request`, with bounded connects and reads and no
/// automatic retries.
pub async fn client(request: &Request) -> Result<kube::Client, DrainError> {
    let kc = kubeconfig(request)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| DrainError::Access {
            what: "kubeconfig",
            reason: e.to_string(),
        })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(READ_TIMEOUT);
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| DrainError::Access {
        what: "kubeconfig",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn req() -> Request {
        Request {
            node: "n1".into(),
            kubeconfig: None,
            endpoint: Some("https://10.0.2.2:6443".into()),
            ca_cert: Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()),
            token: Some("tok".into()),
        }
    }

    #[test]
    fn endpoint_and_token_become_a_one_user_kubeconfig() {
        let kc = kubeconfig(&req()).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("drain"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.2.2:6443"));
        assert!(cluster.certificate_authority_data.is_some());
    }

    #[test]
    fn missing_token_or_endpoint_is_named() {
        let mut r = req();
        r.token = None;
        let e = kubeconfig(&r).unwrap_err().to_string();
        assert!(e.contains("no token"), "{e}");
        let mut r = req();
        r.endpoint = None;
        let e = kubeconfig(&r).unwrap_err().to_string();
        assert!(e.contains("no API server endpoint"), "{e}");
    }

    #[test]
    fn kubeconfigs_pointing_at_plugins_or_files_are_refused() {
        let mut r = req();
        r.kubeconfig = Some(
            "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n".into(),
        );
        let e = kubeconfig(&r).unwrap_err().to_string();
        assert!(e.contains("uses exec"), "{e}");
        r.kubeconfig = Some(
            "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    tokenFile: /x\n".into(),
        );
        let e = kubeconfig(&r).unwrap_err().to_string();
        assert!(e.contains("file path"), "{e}");
    }
}
