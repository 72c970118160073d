//! Helpers shared by the end-to-end tests: the `wharf server` process, its
//! API and token-authenticated registry clients, image fixtures generated in
//! code, checks for external tools, and a private `dockerd`.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod cli;
pub mod command;
pub mod docker;
pub mod docker_registry;
pub mod etcd;
pub mod image;
pub mod podman;
pub mod prereq;
pub mod registry;
pub mod server;
pub mod skopeo;
pub mod webhook;

#[allow(unused_imports)]
pub use image::{Blob, Image, ImageIndex, Layer, OciLayout};
#[allow(unused_imports)]
pub use prereq::{require, require_root, require_tool};
#[allow(unused_imports)]
pub use registry::Credentials;
pub use server::TestServer;
