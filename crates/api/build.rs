//! Compiles `proto/keelson/machine/v1/machine.proto` with protox (pure Rust,
//! no system `protoc`) into a FileDescriptorSet, writes it to
//! `$OUT_DIR/machine_descriptor.bin` (the role-table test reads the method
//! list from it), and generates messages, the server trait and the client
//! with tonic-prost-build.

use std::path::PathBuf;

use prost::Message as _;

const PROTO: &str = "proto/keelson/machine/v1/machine.proto";

fn main() {
    if let Err(e) = generate() {
        // A build script reports failure by panicking; the message is what
        // cargo shows.
        #[allow(clippy::panic)]
        {
            panic!("api build: {e}");
        }
    }
}

fn generate() -> Result<(), String> {
    println!("cargo:rerun-if-changed={PROTO}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let fds = protox::compile([PROTO], ["proto"]).map_err(|e| format!("{PROTO}: {e}"))?;
    let descriptor = out_dir.join("machine_descriptor.bin");
    std::fs::write(&descriptor, fds.encode_to_vec())
        .map_err(|e| format!("writing {}: {e}", descriptor.display()))?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .map_err(|e| format!("generating code from {PROTO}: {e}"))
}
