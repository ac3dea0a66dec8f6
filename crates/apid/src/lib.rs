//! `apid`: the network-facing gateway of the machine API. It terminates
//! mutual TLS (rustls), takes the caller's role from the client
//! certificate's Organization, checks it against `api::roles`, writes one
//! audit line per call and forwards the call to init's unix socket. In
//! maintenance mode (no config yet) it serves a self-signed certificate and
//! only Version and ApplyConfiguration. One call it answers itself:
//! `UpgradeFromUrl` downloads a bundle over HTTPS and streams it into
//! init's `Upgrade`. A supervised service: it may crash
//! and be restarted; PID 1 never parses network input.

pub mod audit;
pub mod authorize;
pub mod cli;
pub mod download;
pub mod forward;
pub mod identity;
pub mod maintenance;
pub mod server;
pub mod tls;
pub mod upgrade_url;
