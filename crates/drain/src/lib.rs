//! Cordon, drain and uncordon a Keelson node through the Kubernetes API:
//! step 2 of the ordered shutdown and its undo after the next boot.
//!
//! Init never talks to the API server itself (PID 1 parses no network
//! input): it runs `keelson-drain` as a bounded one-shot and reads the
//! [`protocol`] lines it prints. Without the default `client` feature this
//! crate is only that protocol.

pub mod protocol;

#[cfg(feature = "client")]
pub mod access;
#[cfg(feature = "client")]
pub mod drain;
#[cfg(feature = "client")]
pub mod error;
#[cfg(feature = "client")]
pub mod node;
#[cfg(feature = "client")]
pub mod pods;
