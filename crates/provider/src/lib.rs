//! Machine providers: how a cluster's machines are made and removed.
//!
//! A [`MachineProvider`] creates machines for a pool (a count, of a machine
//! class, tagged with the pool and cluster), lists a pool's machines and
//! deletes them. Two drivers implement it:
//!
//! - [`StaticMachines`] (`driver: static`) for physical and VM clusters: the
//!   machines are the addresses listed in `ProviderSpec.machines`;
//!   "creating" one hands out a listed address no node uses yet, with the
//!   join command the operator (or a boot script) runs on it, and
//!   "deleting" one only gives it back to the list.
//! - [`Ec2Machines`] (`driver: ec2`) speaks the EC2 Query API
//!   (RunInstances, DescribeInstances, TerminateInstances) signed with AWS
//!   Signature V4, against AWS or any compatible endpoint.
//!
//! Credentials come from a sealed Secret the caller opens and hands over
//! as [`Credentials`]; they are never logged (their `Debug` hides the
//! secret key).
//!
//! **Architecture invariant:** no server types here: this crate is an HTTP
//! client at most, and knows nothing of the Store or of nodes.

mod credentials;
mod ec2;
mod machine;
mod static_driver;

use std::sync::Arc;

pub use credentials::Credentials;
pub use ec2::{Ec2Machines, Ec2Settings, sigv4};
pub use machine::{
    Machine, MachineProvider, MachineRequest, MachineState, ProviderError, TAG_CLUSTER, TAG_POOL,
};
pub use static_driver::StaticMachines;
use wharf_api::ProviderSpec;

/// The driver `spec` names, with `credentials` (which `ec2` needs) and
/// `http` for its calls.
///
/// ```
/// let spec = wharf_api::ProviderSpec {
///     driver: "static".into(),
///     machines: vec!["10.0.0.5".into()],
///     ..Default::default()
/// };
/// let provider = wharf_provider::provider_for(&spec, None, reqwest::Client::new()).unwrap();
/// assert_eq!(provider.driver(), "static");
/// ```
pub fn provider_for(
    spec: &ProviderSpec,
    credentials: Option<Credentials>,
    http: reqwest::Client,
) -> Result<Arc<dyn MachineProvider>, ProviderError> {
    match spec.driver.as_str() {
        "static" => Ok(Arc::new(StaticMachines::new(spec.machines.clone()))),
        "ec2" => {
            let settings = Ec2Settings::from_spec(&spec.settings)?;
            let credentials = credentials.ok_or_else(|| {
                ProviderError::Config("the ec2 driver needs credentialsSecret".into())
            })?;
            Ok(Arc::new(Ec2Machines::new(settings, credentials, http)))
        }
        other => Err(ProviderError::Config(format!(
            "unknown provider driver {other:?} (known: static, ec2)"
        ))),
    }
}
