//! The Keelson machine API contract: `proto/keelson/machine/v1/machine.proto`
//! and the code generated from it (messages, the `Machine` server trait and
//! client), plus the role table apid enforces. No logic, no state: init
//! implements the server, apid forwards, nodectl calls.

pub mod roles;

/// Version 1 of the machine API (`package keelson.machine.v1`): messages at
/// `api::v1::*`, the server at `api::v1::machine_server::{Machine,
/// MachineServer}`, the client at `api::v1::machine_client::MachineClient`.
pub mod v1 {
    tonic::include_proto!("keelson.machine.v1");
}

/// The encoded `FileDescriptorSet` of the v1 proto (for reflection and for
/// tests that walk every method).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/machine_descriptor.bin"));

/// The gRPC service name of the machine API.
pub const SERVICE_NAME: &str = "keelson.machine.v1.Machine";

/// init's API socket on a node (plaintext gRPC, root only). apid forwards to it.
pub const INIT_SOCKET: &str = "/run/keelson/init.sock";

/// The TCP port apid listens on unless the machine config's `api.port` says
/// otherwise.
pub const DEFAULT_PORT: u16 = 50000;

/// Request metadata apid sets on every forwarded call: the common name of the
/// client certificate (`maintenance` in maintenance mode). Any value the
/// client sent itself is removed first.
pub const CLIENT_CN_HEADER: &str = "x-keelson-client-cn";

/// Request metadata apid sets on every forwarded call: the caller's role
/// (`os:admin`, `os:operator`, `os:reader`, or `maintenance`).
pub const CLIENT_ROLE_HEADER: &str = "x-keelson-client-role";

/// Prefix of the metadata keys reserved for apid; stripped from client requests.
pub const RESERVED_HEADER_PREFIX: &str = "x-keelson-";
