//! ConfigMaps and Secrets in the store. Secret data is sealed under the
//! server's key ([`SecretBox`]) bound to the Secret's project and name, so
//! the store (a redb file, an etcd cluster, their backups) never holds a
//! value in the clear and a sealed value moved to another Secret does not
//! open there.

use serde::{Deserialize, Serialize};
use wharf_api::{ConfigMap, ConfigRef, LabelSelector, ObjectMeta, Pod, Secret};
use wharf_seal::SecretBox;

use crate::ControlError;
use crate::objects::{Object, Objects};

/// A Secret as stored: metadata in the clear (names and labels select it),
/// its `data` sealed as one JSON map of base64 values.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecret {
    /// Name, project, labels, annotations.
    pub metadata: ObjectMeta,
    /// The Secret's type.
    #[serde(rename = "type", default)]
    pub secret_type: String,
    /// `immutable`, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// The data, sealed by [`SecretBox::seal_bytes`].
    pub sealed_data: String,
}

/// The associated data a Secret's values are sealed with: its identity.
fn seal_name(project: Option<&str>, name: &str) -> String {
    format!("secret/{}/{name}", project.unwrap_or_default())
}

/// Reads and writes ConfigMaps and Secrets, sealing Secret data.
#[derive(Clone)]
pub struct ConfigObjects {
    objects: Objects,
    seal: SecretBox,
}

impl ConfigObjects {
    /// Config objects in `objects`' store, Secrets sealed with `seal`.
    pub fn new(objects: Objects, seal: SecretBox) -> ConfigObjects {
        ConfigObjects { objects, seal }
    }

    /// Creates or replaces a ConfigMap; `true` if it was created. An
    /// immutable ConfigMap's data cannot change.
    pub async fn apply_config_map(
        &self,
        config_map: ConfigMap,
    ) -> Result<(ConfigMap, bool), ControlError> {
        config_map.validate()?;
        let project = config_map.metadata.project.clone();
        let name = config_map.metadata.name.clone();
        if self
            .objects
            .get::<ConfigMap>(project.as_deref(), &name)
            .await?
            .is_none()
        {
            match self.objects.create(config_map.clone()).await {
                Ok(created) => return Ok((created, true)),
                Err(ControlError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let mut refused = None;
        let updated = self
            .objects
            .modify::<ConfigMap>(project.as_deref(), &name, |current| {
                if let Err(err) = current.check_replacement(&config_map) {
                    refused = Some(err);
                    return false;
                }
                let changed = current.data != config_map.data
                    || current.binary_data != config_map.binary_data
                    || current.immutable != config_map.immutable
                    || current.metadata.labels != config_map.metadata.labels
                    || current.metadata.annotations != config_map.metadata.annotations;
                current.data = config_map.data.clone();
                current.binary_data = config_map.binary_data.clone();
                current.immutable = config_map.immutable;
                current.metadata.labels = config_map.metadata.labels.clone();
                current.metadata.annotations = config_map.metadata.annotations.clone();
                changed
            })
            .await?;
        match refused {
            Some(err) => Err(err.into()),
            None => Ok((updated, false)),
        }
    }

    /// Creates or replaces a Secret; `true` if it was created. An immutable
    /// Secret's data cannot change. Returns the Secret with its values.
    pub async fn apply_secret(&self, mut secret: Secret) -> Result<(Secret, bool), ControlError> {
        secret.normalize();
        secret.validate()?;
        let project = secret.metadata.project.clone();
        let name = secret.metadata.name.clone();
        let current = self.secret(project.as_deref(), &name).await?;
        let Some(current) = current else {
            match self.objects.create(self.sealed(&secret)).await {
                Ok(created) => return Ok((self.opened(created)?, true)),
                Err(ControlError::Conflict(_)) => {
                    return Err(ControlError::Conflict(format!(
                        "Secret {name} was created meanwhile; apply again"
                    )));
                }
                Err(err) => return Err(err),
            }
        };
        current.check_replacement(&secret)?;
        let mut next = self.sealed(&secret);
        next.metadata = ObjectMeta {
            labels: secret.metadata.labels.clone(),
            annotations: secret.metadata.annotations.clone(),
            ..current.metadata.clone()
        };
        if current.data == secret.data
            && current.secret_type == secret.secret_type
            && current.immutable == secret.immutable
            && current.metadata.labels == next.metadata.labels
            && current.metadata.annotations == next.metadata.annotations
        {
            return Ok((current, false));
        }
        // The read above named the revision: a concurrent change fails here.
        let updated = self.objects.update(next).await?;
        Ok((self.opened(updated)?, false))
    }

    /// One Secret, opened.
    pub async fn secret(
        &self,
        project: Option<&str>,
        name: &str,
    ) -> Result<Option<Secret>, ControlError> {
        match self.objects.get::<SealedSecret>(project, name).await? {
            Some(sealed) => Ok(Some(self.opened(sealed)?)),
            None => Ok(None),
        }
    }

    /// The Secrets of a project (or all), opened, optionally by label.
    pub async fn secrets(
        &self,
        project: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Secret>, ControlError> {
        let (sealed, _) = self.objects.list::<SealedSecret>(project, selector).await?;
        sealed.into_iter().map(|s| self.opened(s)).collect()
    }

    /// Deletes a Secret, returning it with its values withheld.
    pub async fn delete_secret(&self, project: &str, name: &str) -> Result<Secret, ControlError> {
        let deleted: SealedSecret = self.objects.delete(Some(project), name, None).await?;
        Ok(self.opened(deleted)?.withheld())
    }

    /// Deletes every ConfigMap and Secret of `project` (a project being
    /// deleted: a new project of the same name must not inherit them).
    /// Returns how many were deleted.
    pub async fn delete_project(&self, project: &str) -> Result<usize, ControlError> {
        // One already gone counts for nothing; other failures stop the deletion.
        let gone = |result: Result<(), ControlError>| match result {
            Ok(()) => Ok(1),
            Err(ControlError::NotFound { .. }) => Ok(0),
            Err(err) => Err(err),
        };
        let (config_maps, _) = self.objects.list::<ConfigMap>(Some(project), None).await?;
        let (secrets, _) = self
            .objects
            .list::<SealedSecret>(Some(project), None)
            .await?;
        let mut count = 0;
        for config_map in config_maps {
            let name = &config_map.metadata.name;
            let deleted = self.objects.delete::<ConfigMap>(Some(project), name, None);
            count += gone(deleted.await.map(drop))?;
        }
        for secret in secrets {
            let name = &secret.metadata.name;
            let deleted = self
                .objects
                .delete::<SealedSecret>(Some(project), name, None);
            count += gone(deleted.await.map(drop))?;
        }
        Ok(count)
    }

    fn sealed(&self, secret: &Secret) -> SealedSecret {
        let meta = &secret.metadata;
        let data: std::collections::BTreeMap<&String, String> = secret
            .data
            .iter()
            .map(|(k, v)| (k, base64_text(v)))
            .collect();
        let json = serde_json::to_vec(&data).expect("maps serialize");
        SealedSecret {
            metadata: meta.clone(),
            secret_type: secret.secret_type.clone(),
            immutable: secret.immutable,
            sealed_data: self
                .seal
                .seal_bytes(&seal_name(meta.project.as_deref(), &meta.name), &json),
        }
    }

    fn opened(&self, sealed: SealedSecret) -> Result<Secret, ControlError> {
        let meta = &sealed.metadata;
        let at = seal_name(meta.project.as_deref(), &meta.name);
        let json = self
            .seal
            .open_bytes(&at, &sealed.sealed_data)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let data: std::collections::BTreeMap<String, String> = serde_json::from_slice(&json)
            .map_err(|e| ControlError::Internal(format!("corrupt {at}: {e}")))?;
        let data = data
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    k,
                    base64_bytes(&v)
                        .ok_or_else(|| ControlError::Internal(format!("corrupt {at}")))?,
                ))
            })
            .collect::<Result<_, ControlError>>()?;
        Ok(Secret {
            metadata: sealed.metadata,
            secret_type: sealed.secret_type,
            immutable: sealed.immutable,
            data,
            ..Secret::default()
        })
    }
}

/// Whether a pod bound to `node` in `project` uses `wanted`: what lets a
/// node read a ConfigMap or Secret, and nothing else.
pub async fn used_on_node(
    objects: &Objects,
    node: &str,
    project: &str,
    wanted: &ConfigRef,
) -> Result<bool, ControlError> {
    let (pods, _) = objects.list::<Pod>(Some(project), None).await?;
    Ok(pods.iter().any(|pod| {
        pod.spec.node_name.as_deref() == Some(node) && pod.spec.config_refs().contains(wanted)
    }))
}

fn base64_text(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_bytes(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

impl Object for SealedSecret {
    const KIND: &'static str = "Secret";
    const PREFIX: &'static str = "/cluster/secrets/";
    const NAMESPACED: bool = true;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use wharf_store::{RedbStore, RedbStoreOptions, Store, StoreExt};

    use super::*;

    fn config(dir: &std::path::Path) -> (ConfigObjects, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(
            RedbStore::open(&dir.join("state.redb"), RedbStoreOptions::default()).unwrap(),
        );
        let objects = Objects::new(store.clone());
        (
            ConfigObjects::new(objects, SecretBox::from_key([3; 32])),
            store,
        )
    }

    fn secret(name: &str, value: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: name.into(),
                project: Some("shop".into()),
                ..ObjectMeta::default()
            },
            string_data: BTreeMap::from([("password".into(), value.into())]),
            ..Secret::default()
        }
    }

    #[tokio::test]
    async fn secrets_are_sealed_in_the_store_and_bound_to_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store) = config(dir.path());
        let (created, fresh) = config
            .apply_secret(secret("db", "pl41n-s3cret-v4lue"))
            .await
            .unwrap();
        assert!(fresh);
        assert_eq!(created.data["password"], b"pl41n-s3cret-v4lue");
        let (raw, _) = store.list_all_from("/", 1000).await.unwrap();
        let text: String = raw
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .collect();
        assert!(text.contains("sealedData"), "{text}");
        for leak in ["pl41n-s3cret-v4lue", &base64_text(b"pl41n-s3cret-v4lue")] {
            assert!(!text.contains(leak), "plaintext in the store: {text}");
        }
        drop(raw);
        let read = config.secret(Some("shop"), "db").await.unwrap().unwrap();
        assert_eq!(read.data["password"], b"pl41n-s3cret-v4lue");
        assert_eq!(read.secret_type, "Opaque");
        // Opened from its sealed form, it still says what it is.
        assert_eq!(
            (read.api_version.as_str(), read.kind.as_str()),
            ("v1", "Secret")
        );
        // Sealed data copied onto another Secret does not open there.
        config.apply_secret(secret("other", "x")).await.unwrap();
        let key = crate::key_of::<SealedSecret>(Some("shop"), "db");
        let db = store.get(&key).await.unwrap().unwrap();
        let other_key = crate::key_of::<SealedSecret>(Some("shop"), "other");
        let mut moved: SealedSecret = serde_json::from_slice(&db.value).unwrap();
        moved.metadata.name = "other".into();
        store
            .put(&other_key, serde_json::to_vec(&moved).unwrap())
            .await
            .unwrap();
        assert!(config.secret(Some("shop"), "other").await.is_err());
        let deleted = config.delete_secret("shop", "db").await.unwrap();
        assert!(deleted.data.is_empty());
        assert_eq!(deleted.data_sizes["password"], 18);
        assert!(config.secret(Some("shop"), "db").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn immutable_objects_refuse_changes_of_data() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _store) = config(dir.path());
        let mut frozen = secret("db", "one");
        frozen.immutable = Some(true);
        config.apply_secret(frozen.clone()).await.unwrap();
        let (_, created) = config.apply_secret(frozen.clone()).await.unwrap();
        assert!(!created, "the same data again is accepted");
        let err = config
            .apply_secret(secret("db", "two"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("immutable"), "{err}");
        let mut map = ConfigMap {
            metadata: frozen.metadata.clone(),
            data: BTreeMap::from([("k".into(), "v".into())]),
            immutable: Some(true),
            ..ConfigMap::default()
        };
        config.apply_config_map(map.clone()).await.unwrap();
        map.data.insert("k".into(), "w".into());
        let err = config.apply_config_map(map).await.unwrap_err().to_string();
        assert!(err.contains("immutable"), "{err}");
        let stored: ConfigMap = config.objects.require(Some("shop"), "db").await.unwrap();
        assert_eq!(stored.data["k"], "v");
    }
}
