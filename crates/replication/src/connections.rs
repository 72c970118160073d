//! Connections to endpoints: one client per endpoint definition, built
//! with the endpoint's unsealed credentials, the peer's instance id once
//! learned, and the destination projects known to exist there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use wharf_distribution::RegistryCredentials;
use wharf_oci::RepositoryName;
use wharf_store::Store;

use crate::ReplicationError;
use crate::access::RegistryAccess;
use crate::keys;
use crate::model::{Endpoint, EndpointKind};
use crate::remote::{RemoteOptions, RemoteRegistry};
use wharf_seal::SecretBox;

/// A connected endpoint: the client and, for Wharf peers, its instance id
/// once learned.
pub(crate) struct Connection {
    pub endpoint: Endpoint,
    pub client: Arc<RemoteRegistry>,
    pub instance: tokio::sync::OnceCell<Option<String>>,
}

/// The endpoints' clients and what this process learned about them.
pub(crate) struct Connections {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    remote: RemoteOptions,
    /// Per endpoint name; rebuilt when the stored definition changes.
    open: Mutex<HashMap<String, Arc<Connection>>>,
    /// Destination projects known to exist, per endpoint.
    projects: Mutex<HashSet<(String, String)>>,
}

impl Connections {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        remote: RemoteOptions,
    ) -> Connections {
        Connections {
            store,
            secrets,
            remote,
            open: Mutex::new(HashMap::new()),
            projects: Mutex::new(HashSet::new()),
        }
    }

    /// Seals an endpoint's password for storing.
    pub(crate) fn seal(&self, endpoint: &str, password: &str) -> String {
        self.secrets.seal(endpoint, password)
    }

    /// The stored definition of an endpoint.
    pub(crate) async fn endpoint(&self, name: &str) -> Result<Endpoint, ReplicationError> {
        let key = keys::endpoint(name);
        Ok(keys::read(self.store.as_ref(), &key, "endpoint", name)
            .await?
            .1)
    }

    /// Drops the client of a deleted endpoint.
    pub(crate) fn forget(&self, name: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The client for an endpoint, built once per definition.
    pub(crate) async fn connect(&self, name: &str) -> Result<Arc<Connection>, ReplicationError> {
        let endpoint = self.endpoint(name).await?;
        {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = open.get(name)
                && c.endpoint == endpoint
            {
                return Ok(c.clone());
            }
        }
        let credentials = match (&endpoint.username, &endpoint.sealed_password) {
            (Some(user), Some(sealed)) => Some(RegistryCredentials::new(
                user.clone(),
                self.secrets.open(&endpoint.name, sealed).map_err(|_| {
                    ReplicationError::Internal(format!(
                        "the stored password of endpoint {} cannot be decrypted with this server's replication key",
                        endpoint.name
                    ))
                })?,
            )),
            _ => None,
        };
        let client = Arc::new(RemoteRegistry::new(
            &endpoint.name,
            endpoint.kind,
            &endpoint.url,
            credentials,
            self.remote,
        )?);
        let connection = Arc::new(Connection {
            endpoint,
            client,
            instance: tokio::sync::OnceCell::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), connection.clone());
        Ok(connection)
    }

    /// The endpoint's instance id, asked once per connection.
    pub(crate) async fn instance_of(
        connection: &Connection,
    ) -> Result<Option<String>, ReplicationError> {
        if connection.endpoint.kind != EndpointKind::Wharf {
            return Ok(None);
        }
        connection
            .instance
            .get_or_try_init(|| connection.client.instance())
            .await
            .cloned()
    }

    /// Creates the destination project once per endpoint and process.
    pub(crate) async fn ensure_project(
        &self,
        endpoint: &str,
        destination: &dyn RegistryAccess,
        repo: &RepositoryName,
    ) -> Result<(), ReplicationError> {
        let key = (endpoint.to_string(), repo.project().to_string());
        if self
            .projects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        destination.ensure_project(repo.project()).await?;
        self.projects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        Ok(())
    }
}
