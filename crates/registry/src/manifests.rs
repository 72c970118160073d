//! Manifests, tags, listings and referrers.

use std::collections::HashSet;

use bytes::Bytes;
use wharf_oci::manifest::Descriptor;
use wharf_oci::{Digest, DigestAlgorithm, ParsedManifest, Reference, RepositoryName};
use wharf_store::{KeyValue, ListOptions, StoreExt, Txn};

use crate::blobs::{MAX_ATTEMPTS, backoff};
use crate::keys::{self, LinkRecord, ManifestRecord, RepoRecord, TagRecord, now_millis};
use crate::{Registry, RegistryError};

/// A manifest as served.
#[derive(Clone, Debug)]
pub struct ManifestContent {
    /// Its digest.
    pub digest: Digest,
    /// The media type it was pushed with.
    pub media_type: String,
    /// Length in bytes.
    pub size: u64,
    /// The bytes, exactly as pushed (absent for HEAD).
    pub bytes: Option<Bytes>,
}

/// The outcome of a manifest push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its subject, echoed in the `OCI-Subject` header.
    pub subject: Option<Digest>,
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Names in lexical order.
    pub items: Vec<String>,
    /// Whether more follow the last item.
    pub more: bool,
}

impl Registry {
    async fn manifest_record(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<(KeyValue, ManifestRecord)>, RegistryError> {
        let key = keys::manifest(repo, digest);
        match self.store.get(&key).await? {
            Some(kv) => {
                let record = keys::decode(&key, &kv.value)?;
                Ok(Some((kv, record)))
            }
            None => Ok(None),
        }
    }

    async fn resolve(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Digest, RegistryError> {
        match reference {
            Reference::Digest(digest) => Ok(digest.clone()),
            Reference::Tag(tag) => {
                let key = keys::tag(repo, tag);
                let kv = self
                    .store
                    .get(&key)
                    .await?
                    .ok_or_else(|| RegistryError::ManifestUnknown(reference.to_string()))?;
                Ok(keys::decode::<TagRecord>(&key, &kv.value)?.digest)
            }
        }
    }

    /// Looks a manifest up by tag or digest; with `with_bytes` also loads its content.
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        with_bytes: bool,
    ) -> Result<ManifestContent, RegistryError> {
        let digest = self.resolve(repo, reference).await?;
        let (_, record) = self
            .manifest_record(repo, &digest)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(reference.to_string()))?;
        let bytes = match with_bytes {
            false => None,
            true => Some(self.manifest_bytes(&digest).await?),
        };
        Ok(ManifestContent {
            digest,
            media_type: record.media_type,
            size: record.size,
            bytes,
        })
    }

    async fn manifest_bytes(&self, digest: &Digest) -> Result<Bytes, RegistryError> {
        if let Some(bytes) = self.manifest_cache.get(digest) {
            return Ok(bytes);
        }
        let bytes = Bytes::from(
            self.blobs
                .read_to_vec(digest, self.config.max_manifest_bytes)
                .await?,
        );
        self.manifest_cache.insert(digest.clone(), bytes.clone());
        Ok(bytes)
    }

    /// Stores a manifest under `reference` after checking that it is well
    /// formed, that a digest reference matches the content, and that every
    /// blob and child manifest it needs is already in `repo`.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PushedManifest, RegistryError> {
        if body.len() as u64 > self.config.max_manifest_bytes {
            return Err(RegistryError::TooLarge {
                limit: self.config.max_manifest_bytes,
            });
        }
        let manifest = ParsedManifest::parse(content_type, &body)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if actual != *expected {
                    return Err(RegistryError::DigestInvalid(format!(
                        "manifest pushed as {expected} has digest {actual}"
                    )));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(DigestAlgorithm::Sha256, &body),
        };
        let size = body.len() as u64;
        // Check references before writing anything, so a refused manifest
        // leaves nothing behind.
        let mut txn = self
            .manifest_txn(repo, reference, &digest, &manifest, size)
            .await?;
        // The content goes next; it stays invisible until the metadata commit.
        self.mark_blob_for_write(&digest, size).await?;
        self.blobs.put_bytes(&digest, body.to_vec()).await?;
        for attempt in 0..MAX_ATTEMPTS {
            if self.store.txn(txn).await?.succeeded {
                self.manifest_cache.insert(digest.clone(), body);
                return Ok(PushedManifest {
                    digest,
                    subject: manifest.subject.map(|s| s.digest),
                });
            }
            // Something it depends on changed meanwhile: check again.
            backoff(attempt).await;
            txn = self
                .manifest_txn(repo, reference, &digest, &manifest, size)
                .await?;
        }
        Err(RegistryError::Contention(keys::manifest(repo, &digest)))
    }

    /// Builds the transaction that stores a manifest, guarded by the
    /// revisions of everything it depends on. Rewriting the blob links moves
    /// their revisions, which fences off a garbage collection that decided to
    /// drop one of them before it saw this manifest.
    async fn manifest_txn(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        digest: &Digest,
        manifest: &ParsedManifest,
        size: u64,
    ) -> Result<Txn, RegistryError> {
        let now = now_millis();
        let mut txn = Txn::new();
        let mut seen = HashSet::new();
        for blob in manifest.required_blobs().filter(|b| seen.insert(&b.digest)) {
            let key = keys::link(&blob.digest, repo);
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| RegistryError::ManifestBlobUnknown(blob.digest.clone()))?;
            let link: LinkRecord = keys::decode(&key, &kv.value)?;
            if link.size != blob.size {
                return Err(RegistryError::ManifestInvalid(format!(
                    "descriptor of {} says {} bytes, the blob has {}",
                    blob.digest, blob.size, link.size
                )));
            }
            let fresh = LinkRecord {
                size: link.size,
                marked_at: now,
            };
            txn = txn
                .when_revision(&key, kv.mod_revision)
                .put(key, keys::encode(&fresh));
        }
        for child in manifest
            .child_manifests()
            .iter()
            .filter(|c| seen.insert(&c.digest))
        {
            let (kv, _) = self
                .manifest_record(repo, &child.digest)
                .await?
                .ok_or_else(|| RegistryError::ManifestBlobUnknown(child.digest.clone()))?;
            txn = txn.when_revision(kv.key, kv.mod_revision);
        }

        // A new manifest in the repository costs its bytes once per project.
        let manifest_key = keys::manifest(repo, digest);
        txn = match self.store.get(&manifest_key).await? {
            Some(kv) => txn.when_revision(&manifest_key, kv.mod_revision),
            None => {
                let txn = txn.when_revision(&manifest_key, 0);
                self.account(txn, repo.project(), digest, size, 1).await?
            }
        };
        let repo_key = keys::repo(repo);
        let created_at = match self.store.get(&repo_key).await? {
            Some(kv) => keys::decode::<RepoRecord>(&repo_key, &kv.value)?.created_at,
            None => now,
        };
        let record = ManifestRecord {
            media_type: manifest.media_type.clone(),
            size,
            blobs: manifest
                .required_blobs()
                .map(|b| b.digest.clone())
                .collect(),
            children: manifest
                .child_manifests()
                .iter()
                .map(|c| c.digest.clone())
                .collect(),
            subject: manifest.subject.as_ref().map(|s| s.digest.clone()),
            pushed_at: now,
        };
        txn = txn
            .put(keys::manifest(repo, digest), keys::encode(&record))
            .put(
                repo_key,
                keys::encode(&RepoRecord {
                    created_at,
                    updated_at: now,
                }),
            );
        if let Reference::Tag(tag) = reference {
            let tag_record = TagRecord {
                digest: digest.clone(),
                updated_at: now,
            };
            txn = txn.put(keys::tag(repo, tag), keys::encode(&tag_record));
        }
        if let Some(subject) = &manifest.subject {
            let descriptor = Descriptor {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size,
                urls: Vec::new(),
                annotations: manifest.annotations.clone(),
                artifact_type: manifest.effective_artifact_type().map(str::to_string),
                platform: None,
            };
            let key = keys::referrer(repo, &subject.digest, digest);
            txn = txn.put(
                key,
                serde_json::to_vec(&descriptor).expect("descriptor serializes"),
            );
        }
        Ok(txn)
    }

    /// Deletes a tag, or a manifest with every tag pointing at it.
    pub async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let txn = match reference {
                Reference::Tag(tag) => {
                    let key = keys::tag(repo, tag);
                    let kv = self
                        .store
                        .get(&key)
                        .await?
                        .ok_or_else(|| RegistryError::ManifestUnknown(reference.to_string()))?;
                    Txn::new().when_revision(&key, kv.mod_revision).delete(key)
                }
                Reference::Digest(digest) => self.manifest_delete_txn(repo, digest).await?,
            };
            if self.store.txn(txn).await?.succeeded {
                return Ok(());
            }
        }
        Err(RegistryError::Contention(format!("{repo}@{reference}")))
    }

    async fn manifest_delete_txn(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Txn, RegistryError> {
        let (kv, record) = self
            .manifest_record(repo, digest)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(digest.to_string()))?;
        let mut txn = Txn::new()
            .when_revision(&kv.key, kv.mod_revision)
            .delete(kv.key);
        txn = self
            .account(txn, repo.project(), digest, record.size, -1)
            .await?;
        for tag in self.store.list_all(&keys::tags_of(repo), 1000).await? {
            if keys::decode::<TagRecord>(&tag.key, &tag.value)?.digest == *digest {
                txn = txn
                    .when_revision(&tag.key, tag.mod_revision)
                    .delete(tag.key);
            }
        }
        if let Some(subject) = &record.subject {
            txn = txn.delete(keys::referrers_of(repo, subject) + digest.as_str());
        }
        // The repository leaves the catalog with its last manifest. Deletes
        // always rewrite or remove the repository record so that two of them
        // racing conflict on it instead of both believing the other remains.
        let repo_key = keys::repo(repo);
        let repo_kv = self.store.get(&repo_key).await?;
        let repo_revision = repo_kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let others = self
            .store
            .list(
                &keys::manifests_of(repo),
                ListOptions {
                    start_after: None,
                    limit: Some(2),
                },
            )
            .await?;
        txn = txn.when_revision(&repo_key, repo_revision);
        if others.items.len() > 1 {
            if let Some(repo_kv) = repo_kv {
                let mut repo_record: RepoRecord = keys::decode(&repo_key, &repo_kv.value)?;
                repo_record.updated_at = now_millis();
                txn = txn.put(repo_key, keys::encode(&repo_record));
            }
        } else {
            txn = txn.delete(repo_key);
        }
        Ok(txn)
    }

    /// Tags of `repo` in lexical order, `n` at a time after `last`.
    pub async fn list_tags(
        &self,
        repo: &RepositoryName,
        n: usize,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        if self.store.get(&keys::repo(repo)).await?.is_none() {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        self.page(&keys::tags_of(repo), n, last).await
    }

    /// Whether any repository of `project` holds a manifest.
    pub async fn project_has_repositories(&self, project: &str) -> Result<bool, RegistryError> {
        let one = ListOptions {
            start_after: None,
            limit: Some(1),
        };
        let exact = self.store.get(&format!("{}{project}", keys::REPOS)).await?;
        let nested = self
            .store
            .list(&format!("{}{project}/", keys::REPOS), one)
            .await?;
        Ok(exact.is_some() || !nested.items.is_empty())
    }

    /// Repositories in lexical order, `n` at a time after `last`.
    pub async fn catalog(&self, n: usize, last: Option<&str>) -> Result<Page, RegistryError> {
        self.page(keys::REPOS, n, last).await
    }

    async fn page(
        &self,
        prefix: &str,
        n: usize,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        if n == 0 {
            return Ok(Page::default());
        }
        let options = ListOptions {
            start_after: last.map(|last| format!("{prefix}{last}")),
            limit: Some(n),
        };
        let page = self.store.list(prefix, options).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|kv| kv.key[prefix.len()..].to_string())
                .collect(),
            more: page.more,
        })
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those
    /// of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let mut out = Vec::new();
        for kv in self
            .store
            .list_all(&keys::referrers_of(repo, subject), 1000)
            .await?
        {
            let descriptor: Descriptor = keys::decode(&kv.key, &kv.value)?;
            if artifact_type.is_none_or(|t| descriptor.artifact_type.as_deref() == Some(t)) {
                out.push(descriptor);
            }
        }
        Ok(out)
    }
}
