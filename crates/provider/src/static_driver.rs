//! The static driver: machines that exist already (racks, VMs), listed by
//! address in the cluster's provider spec.
//!
//! "Create" hands out listed addresses that no node uses, each with the
//! join command to run on it; nothing is powered on. "List" is the whole
//! list (the machines are always there). "Delete" does nothing: the
//! machine stays in the rack and its address is free again once its node
//! is gone. An autoscaler over a static pool can therefore only grow to
//! the listed machines, and growing needs someone (or a boot script) to
//! run the join command.

use async_trait::async_trait;

use crate::{Machine, MachineProvider, MachineRequest, MachineState, ProviderError};

/// Machines listed by address.
#[derive(Clone, Debug)]
pub struct StaticMachines {
    addresses: Vec<String>,
}

impl StaticMachines {
    /// A driver over these addresses.
    pub fn new(addresses: Vec<String>) -> StaticMachines {
        StaticMachines { addresses }
    }

    fn listed(&self, address: &str, join_command: Option<String>) -> Machine {
        Machine {
            id: address.to_string(),
            address: Some(address.to_string()),
            state: MachineState::Running,
            join_command,
        }
    }
}

#[async_trait]
impl MachineProvider for StaticMachines {
    fn driver(&self) -> &'static str {
        "static"
    }

    async fn create(&self, request: &MachineRequest) -> Result<Vec<Machine>, ProviderError> {
        let free: Vec<&String> = self
            .addresses
            .iter()
            .filter(|a| !request.in_use.contains(a))
            .collect();
        if free.len() < request.count as usize {
            return Err(ProviderError::Exhausted(self.addresses.len()));
        }
        Ok(free
            .into_iter()
            .take(request.count as usize)
            .map(|a| self.listed(a, request.join_command.clone()))
            .collect())
    }

    async fn list(&self, _cluster: &str, _pool: &str) -> Result<Vec<Machine>, ProviderError> {
        Ok(self
            .addresses
            .iter()
            .map(|a| self.listed(a, None))
            .collect())
    }

    async fn delete(&self, _ids: &[String]) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_hands_out_free_addresses_with_the_join_command() {
        let machines = StaticMachines::new(vec!["10.0.0.1".into(), "10.0.0.2".into()]);
        let request = MachineRequest {
            pool: "old".into(),
            count: 1,
            join_command: Some("curl -fsS https://wharf/join | sh".into()),
            in_use: vec!["10.0.0.1".into()],
            ..Default::default()
        };
        let made = machines.create(&request).await.unwrap();
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].id, "10.0.0.2");
        assert_eq!(made[0].join_command, request.join_command);
        let more = MachineRequest {
            count: 2,
            ..request
        };
        assert!(matches!(
            machines.create(&more).await,
            Err(ProviderError::Exhausted(2))
        ));
        assert_eq!(machines.list("c", "old").await.unwrap().len(), 2);
        machines.delete(&["10.0.0.2".into()]).await.unwrap();
    }
}
