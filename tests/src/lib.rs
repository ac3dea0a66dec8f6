//! The QEMU harness and the real test control plane used by Keelson's
//! end-to-end scenarios (under `tests/tests/`).
