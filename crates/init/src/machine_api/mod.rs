//! init's side of the machine API: the `keelson.machine.v1.Machine`
//! service on the root-only unix socket `/run/keelson/init.sock`, served to
//! apid (which has already authenticated the caller and checked the role;
//! it passes the caller's CN and role in request metadata). PID 1 never
//! parses network input: only apid talks to this socket.

mod files;
mod kmsg;
mod service;
mod stats;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use thiserror::Error;

use crate::node::NodeCtl;

/// Why the API socket could not be served.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The socket could not be created.
    #[error("binding {path}: {source}")]
    Bind {
        /// The socket path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Binds the socket (root only) and serves the API in the background.
pub fn serve(node: NodeCtl, socket: &Path) -> Result<(), ServeError> {
    let bind_err = |source| ServeError::Bind {
        path: socket.display().to_string(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).map_err(bind_err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    let svc = api::v1::machine_server::MachineServer::new(service::MachineService::new(node));
    let path = socket.display().to_string();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(socket = %path, error = %e, "machine API stopped");
        }
    });
    tracing::info!(socket = %socket.display(), "machine API serving");
    Ok(())
}
