//! Why `keelson-drain` could not reach or use the Kubernetes API.

/// An access or API failure, named so the shutdown report can say why the
/// drain was skipped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The request file is unreadable or malformed.
    #[error("drain request {path}: {reason}")]
    Request {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The access in the request cannot make a client.
    #[error("Kubernetes access for {what}: {reason}")]
    Access {
        /// Which part of the access (kubeconfig, endpoint, caCert, token).
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The API server answered with an error status.
    #[error("{action}: API server said {code} {reason}: {message}")]
    Api {
        /// What was being done.
        action: String,
        /// HTTP status code.
        code: u16,
        /// The status reason (`Forbidden`, `NotFound`, ...).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The API server could not be reached or did not answer in time.
    #[error("{action}: API server unreachable: {detail}")]
    Unreachable {
        /// What was being done.
        action: String,
        /// The transport error.
        detail: String,
    },
}

impl DrainError {
    /// Wraps a client error for `action`.
    pub fn from_kube(action: impl Into<String>, e: kube::Error) -> DrainError {
        let action = action.into();
        match e {
            kube::Error::Api(s) => DrainError::Api {
                action,
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => DrainError::Unreachable {
                action,
                detail: error_chain(&other),
            },
        }
    }

    /// The HTTP status, for API errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            DrainError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for errors a retry may cure (transport, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            DrainError::Unreachable { .. } => true,
            DrainError::Api { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

/// `e` and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}
