//! Tests against the real kernel, inside network namespaces created for the
//! test (see [`netns`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dhcp;
mod netns;
mod slirp;
mod static_config;
