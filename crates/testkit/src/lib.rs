//! Test support for the workspace's tests; a dev-dependency only, never
//! linked into the `wharf` binary.
//!
//! - [`prereq`]: what a test needs from the machine (root, programs). A
//!   missing prerequisite fails the test under `CI=true`, where everything
//!   must be installed, and skips it elsewhere so that `cargo test` works
//!   on any machine.
//! - [`moto`]: moto's AWS emulator on a loopback port (the EC2 driver).
//! - [`listen`]: waiting for a child process to listen on a port.
//! - [`http`]: driving an in-process router and reading its [`http::Reply`].

pub mod http;
pub mod listen;
pub mod moto;
pub mod prereq;
