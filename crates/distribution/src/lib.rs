//! The client end of the OCI Distribution API, one for the agent's image
//! pulls, replication's remote registries and the demo push.
//!
//! ```text
//! Client::manifest / blob / start_upload / ... ─ calls.rs: URL, headers, scope
//!   └─ Client::send ─ client.rs: cached token (or Basic) → on a 401, or a 403
//!                     for insufficient_scope: WWW-Authenticate (auth.rs)
//!                     → token server (Basic credentials) → cache → once again
//! ```
//!
//! Answers come back as `reqwest::Response`s: each caller says what a
//! status means for it and reads the body (`response.rs`: bounded reads,
//! OCI error bodies, distribution headers). No archives, no disk: this crate
//! is what a server needs to talk to another registry.

mod auth;
mod calls;
mod client;
mod response;

pub use auth::{Challenge, RegistryCredentials, TokenCache, TokenFailure, TokenKey};
pub use calls::{MAX_MANIFEST_BYTES, manifest_accept, pull_scope, push_scope};
pub use client::{Client, SendError, TokenScope};
pub use response::{
    content_digest, error_message, header_str, location, media_type, next_link, range_end,
    read_limited,
};
