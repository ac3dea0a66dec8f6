//! The Keelson machine API contract: `proto/keelson/machine/v1/machine.proto`
//! and the code generated from it (servers and clients). No logic, no state:
//! init implements the server, apid forwards, nodectl calls.
