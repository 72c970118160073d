//! The cluster's services and their endpoints as one node last read them:
//! what the node's service rules and its DNS server are both built from.

use wharf_api::{Endpoints, Service};

/// Every service with its endpoints, as of one read of the control plane.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceView {
    /// Every service of every project.
    pub services: Vec<Service>,
    /// The endpoints the control plane computed for them.
    pub endpoints: Vec<Endpoints>,
}
