//! `nodectl`, the operator's CLI for Keelson nodes, as a library: the
//! binary (`src/main.rs`) only parses the command line and calls
//! [`commands::run`]. The modules other code reuses:
//!
//! - [`secrets`]: the machine API's CA, client and node certificates, the
//!   upgrade-signing key (pure generation, no I/O);
//! - [`secrets_dir`]: the directory `nodectl gen secrets` writes;
//! - [`drain_role`]: the Kubernetes RBAC of a node's drain identity;
//! - [`contexts`]: the contexts file (endpoints and credentials, like a
//!   kubeconfig) that API commands connect with;
//! - [`output`]: `-o table|json|yaml` printing;
//! - [`files`]: writing secret files (modes, no overwrite, atomic);
//! - [`upgrade`]: reading an upgrade bundle locally, chunks and progress;
//! - [`remote`]: connecting to nodes' APIs (mTLS or a pinned maintenance
//!   certificate) and calling them in parallel.

pub mod cli;
pub mod commands;
pub mod contexts;
pub mod drain_role;
pub mod files;
pub mod output;
pub mod remote;
pub mod secrets;
pub mod secrets_dir;
pub mod starting_config;
pub mod upgrade;
