//! Image replication between registries in different data centres.
//!
//! A [`Policy`] copies the artifacts its filters match between this Wharf
//! and an [`Endpoint`] (another Wharf, or any OCI registry), pushing or
//! pulling, on registry events, on a cron schedule, by hand, and in a
//! periodic reconcile pass that repairs what events missed. Each run is a
//! [`Job`] of per-artifact [`Task`]s kept in the `Store`, so a restarted
//! server resumes them; large blobs go in chunks whose progress is saved,
//! so a copy interrupted by a crash continues where the destination
//! stopped.
//!
//! Topologies are configurations of policies: one master with push
//! policies to each slave; a hierarchy where each hop's push policy fires
//! on the arrival from the previous hop; and dual-master, two Wharfs with
//! push policies to each other. Writes between Wharfs carry their origin
//! (`Wharf-Origin: <instance>; at=<ms>`), so an artifact that came from B
//! never goes back to B, and when both sides wrote the same tag the later
//! origin wins on both (ties: the greater instance id); the losing side
//! records a conflict.
//!
//! ```no_run
//! # async fn demo(replication: wharf_replication::Replication) -> Result<(), wharf_replication::ReplicationError> {
//! use wharf_replication::{EndpointSpec, Policy};
//! replication.add_endpoint(serde_json::from_str::<EndpointSpec>(
//!     r#"{"name":"idc-b","url":"http://10.0.2.1:7700","username":"robot$shop+sync","password":"..."}"#,
//! ).unwrap()).await?;
//! let policy: Policy = serde_json::from_str(
//!     r#"{"name":"shop-to-b","endpoint":"idc-b","filters":{"projects":["shop"]},"triggers":{"onEvent":true}}"#,
//! ).unwrap();
//! replication.put_policy(policy, false).await?;
//! let job = replication.run_policy("shop-to-b").await?;
//! println!("job {}", job.id);
//! # Ok(()) }
//! ```

mod access;
mod connections;
mod copy;
mod error;
mod executor;
mod intake;
mod keys;
mod labels;
mod limit;
mod local;
mod model;
mod plan;
mod probe;
pub mod proxy;
mod queue;
mod remote;
mod schedule;
mod service;

pub use access::{ByteStream, Manifest, RegistryAccess, TagDelete, TagState, TagWrite};
pub use error::ReplicationError;
pub use limit::RateLimit;
pub use local::{LocalRegistry, ProjectCreator};
pub use model::{
    Direction, Endpoint, EndpointCheck, EndpointKind, EndpointSpec, Filters, Job, JobDetail,
    JobSummary, Policy, Progress, ResumePoint, State, Task, TaskKind, TriggerKind, Triggers,
};
pub use remote::{RemoteOptions, RemoteRegistry};
pub use schedule::Schedule;
pub use service::{JobWatch, Replication, ReplicationOptions, Report, ReportHook};
/// Name patterns of filters; they live with the API types, whose checks
/// (replication and preheat policies) parse them.
pub use wharf_api::Glob;
/// The credentials a [`RemoteRegistry`] authenticates with.
pub use wharf_distribution::RegistryCredentials;
pub use wharf_seal::SecretBox;
