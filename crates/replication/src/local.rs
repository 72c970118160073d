//! This Wharf's own registry, called in-process: no HTTP, no tokens, and
//! blob reads straight from the blob store.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use wharf_oci::{Digest, Reference, RepositoryName, Tag};
use wharf_registry::{DeleteOutcome, Origin, Registry, RegistryError, TagOutcome, Tombstone};

use crate::ReplicationError;
use crate::access::{ByteStream, Manifest, RegistryAccess, TagDelete, TagState, TagWrite};
use crate::proxy::ProxyProjects;

/// Creates a project in this server (the server knows identities; this
/// crate does not).
pub type ProjectCreator =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The local registry as one side of a copy.
pub struct LocalRegistry {
    registry: Arc<Registry>,
    projects: Option<ProjectCreator>,
    /// Proxy cache projects, which take no replicated writes.
    pub(crate) proxies: Option<Arc<dyn ProxyProjects>>,
}

impl LocalRegistry {
    /// Wraps the server's registry; `projects` creates missing projects
    /// that pulled artifacts go to.
    pub fn new(registry: Arc<Registry>, projects: Option<ProjectCreator>) -> LocalRegistry {
        LocalRegistry {
            registry,
            projects,
            proxies: None,
        }
    }

    /// Refuses to write into a proxy cache project: its content is what
    /// its upstream serves, fetched by the cache alone.
    async fn check_write(&self, repo: &RepositoryName) -> Result<(), ReplicationError> {
        let Some(proxies) = &self.proxies else {
            return Ok(());
        };
        match proxies.settings(repo.project()).await? {
            None => Ok(()),
            Some(settings) => Err(ReplicationError::Registry(RegistryError::Denied(format!(
                "project {} is a proxy cache of endpoint {}: replication does not write into it",
                repo.project(),
                settings.endpoint
            )))),
        }
    }
}

/// `Ok(None)` for "not there", errors otherwise.
fn absent_as_none<T>(result: Result<T, RegistryError>) -> Result<Option<T>, ReplicationError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(
            RegistryError::ManifestUnknown(_)
            | RegistryError::BlobUnknown(_)
            | RegistryError::NameUnknown(_)
            | RegistryError::BlobUploadUnknown(_),
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn parse_reference(reference: &str) -> Result<Reference, ReplicationError> {
    reference
        .parse()
        .map_err(|_| ReplicationError::Invalid(format!("reference {reference:?}")))
}

#[async_trait]
impl RegistryAccess for LocalRegistry {
    fn name(&self) -> &str {
        "local"
    }

    async fn instance(&self) -> Result<Option<String>, ReplicationError> {
        Ok(Some(self.registry.config().instance.clone()))
    }

    async fn repositories(&self) -> Result<Vec<RepositoryName>, ReplicationError> {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.registry.catalog(1000, last.as_deref()).await?;
            last = page.items.last().cloned();
            out.extend(page.items.iter().filter_map(|r| r.parse().ok()));
            if !page.more {
                return Ok(out);
            }
        }
    }

    async fn tag_names(&self, repo: &RepositoryName) -> Result<Vec<Tag>, ReplicationError> {
        let tags = self.registry.tags_with_origin(repo).await?;
        Ok(tags.into_iter().map(|(tag, _, _)| tag).collect())
    }

    async fn tags(&self, repo: &RepositoryName) -> Result<Vec<(Tag, TagState)>, ReplicationError> {
        Ok(self
            .registry
            .tags_with_origin(repo)
            .await?
            .into_iter()
            .map(|(tag, digest, origin)| {
                (
                    tag,
                    TagState {
                        digest,
                        origin: Some(origin),
                    },
                )
            })
            .collect())
    }

    async fn tombstones(&self) -> Result<Vec<Tombstone>, ReplicationError> {
        let mut out = Vec::new();
        loop {
            let last = out.last().map(Tombstone::cursor);
            let page = self.registry.tombstones(1000, last.as_deref()).await?;
            out.extend(page.items);
            if !page.more {
                return Ok(out);
            }
        }
    }

    async fn tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<TagState>, ReplicationError> {
        Ok(self
            .registry
            .tag_origin(repo, tag)
            .await?
            .map(|(digest, origin)| TagState {
                digest,
                origin: Some(origin),
            }))
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<Option<Manifest>, ReplicationError> {
        let reference = parse_reference(reference)?;
        let found = absent_as_none(self.registry.get_manifest(repo, &reference, true).await)?;
        Ok(found.map(|content| Manifest {
            digest: content.digest,
            media_type: content.media_type,
            bytes: content.bytes.unwrap_or_default(),
        }))
    }

    async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, ReplicationError> {
        let reference = Reference::Digest(digest.clone());
        Ok(absent_as_none(self.registry.get_manifest(repo, &reference, false).await)?.is_some())
    }

    async fn blob_size(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, ReplicationError> {
        Ok(absent_as_none(self.registry.stat_blob(repo, digest).await)?.map(|info| info.size))
    }

    async fn read_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        offset: u64,
    ) -> Result<ByteStream, ReplicationError> {
        let (_, _, body) = self
            .registry
            .get_blob(
                repo,
                digest,
                |size| Ok((offset > 0).then_some(offset..size)),
            )
            .await?;
        let what = format!("reading blob {digest}");
        Ok(body
            .map_err(move |e| ReplicationError::Internal(format!("{what}: {e}")))
            .boxed())
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, ReplicationError> {
        self.check_write(repo).await?;
        Ok(self
            .registry
            .mount_blob(repo, digest, from)
            .await?
            .is_some())
    }

    async fn start_upload(&self, repo: &RepositoryName) -> Result<String, ReplicationError> {
        self.check_write(repo).await?;
        Ok(self.registry.start_upload(repo).await?.id)
    }

    async fn upload_offset(
        &self,
        repo: &RepositoryName,
        session: &str,
    ) -> Result<Option<u64>, ReplicationError> {
        Ok(absent_as_none(self.registry.upload_status(repo, session).await)?.map(|s| s.size))
    }

    async fn append_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        offset: u64,
        _len: u64,
        body: ByteStream,
    ) -> Result<String, ReplicationError> {
        let status = self
            .registry
            .append_upload(repo, session, body, Some(offset))
            .await?;
        Ok(status.id)
    }

    async fn finish_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        digest: &Digest,
    ) -> Result<(), ReplicationError> {
        let nothing = futures_util::stream::empty::<Result<bytes::Bytes, ReplicationError>>();
        self.registry
            .complete_upload(repo, session, digest, nothing, None)
            .await?;
        Ok(())
    }

    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
        manifest: &Manifest,
        origin: Option<&Origin>,
    ) -> Result<TagWrite, ReplicationError> {
        self.check_write(repo).await?;
        let reference = parse_reference(reference)?;
        let pushed = self
            .registry
            .put_manifest_from(
                repo,
                &reference,
                Some(&manifest.media_type),
                manifest.bytes.clone(),
                origin,
            )
            .await?;
        Ok(match pushed.tag {
            TagOutcome::Kept {
                current,
                current_origin,
            } => TagWrite::Kept(format!(
                "local kept {repo}:{reference} at {current} (origin {current_origin})"
            )),
            TagOutcome::KeptDeleted { deleted_origin } => TagWrite::Kept(format!(
                "local keeps {repo}:{reference} deleted (delete from {deleted_origin})"
            )),
            _ => TagWrite::Moved,
        })
    }

    async fn ensure_project(&self, project: &str) -> Result<(), ReplicationError> {
        match &self.projects {
            Some(create) => create(project.to_string()).await.map_err(|e| {
                ReplicationError::Internal(format!("creating project {project}: {e}"))
            }),
            None => Ok(()),
        }
    }

    async fn delete(
        &self,
        repo: &RepositoryName,
        reference: &str,
        origin: Option<&Origin>,
    ) -> Result<TagDelete, ReplicationError> {
        self.check_write(repo).await?;
        let reference = parse_reference(reference)?;
        match absent_as_none(
            self.registry
                .delete_manifest_from(repo, &reference, origin)
                .await,
        )? {
            None | Some(DeleteOutcome::Absent) => Ok(TagDelete::Absent),
            Some(DeleteOutcome::Kept {
                current,
                current_origin,
            }) => Ok(TagDelete::Kept(format!(
                "local kept {repo}:{reference} at {current} (origin {current_origin})"
            ))),
            Some(_) => Ok(TagDelete::Deleted),
        }
    }
}
