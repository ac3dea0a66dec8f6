//! `apid`: the network-facing gateway of the machine API. It terminates
//! mutual TLS (rustls), takes the caller's role from the client
//! certificate's Organization, checks it against `api::roles`, writes one
//! audit line per call and forwards the call to init's unix socket. In
//! maintenance mode (no config yet) it serves a self-signed certificate and
//! only Version and ApplyConfiguration. A supervised service: it may crash
//! and be restarted; PID 1 never parses network input.

pub mod audit;
pub mod authorize;
pub mod cli;
pub mod forward;
pub mod identity;
pub mod maintenance;
pub mod server;
pub mod tls;
