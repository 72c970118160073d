//! Reading the registry as people browse it: a project's repositories, a
//! repository's artifacts with their tags, sizes and platforms, one
//! artifact in detail; and deleting a whole repository.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wharf_api::repository::{
    ArtifactDetail, ArtifactSummary, BlobSummary, ChildManifest, ReferrerSummary,
    RepositorySummary, platform_name,
};
use wharf_oci::manifest::{DOCKER_IMAGE_CONFIG, OCI_IMAGE_CONFIG};
use wharf_oci::{Digest, ManifestKind, ParsedManifest, Reference, RepositoryName};
use wharf_store::StoreExt;

use crate::keys::{self, LinkRecord, ManifestRecord, RepoRecord};
use crate::{Origin, Registry, RegistryError};

/// Largest image config read to learn an image's platform.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
const PAGE: usize = 1000;

/// A repository's manifests, tags and blob sizes, read once.
struct Contents {
    manifests: BTreeMap<Digest, ManifestRecord>,
    tags: HashMap<Digest, Vec<String>>,
    blob_sizes: HashMap<Digest, u64>,
}

impl Contents {
    /// Digests of the manifests an index lists and of referrers: they are
    /// shown under their index or subject, not as artifacts of their own.
    fn nested(&self) -> BTreeSet<&Digest> {
        let mut nested: BTreeSet<&Digest> = self
            .manifests
            .values()
            .flat_map(|record| record.children.iter())
            .collect();
        nested.extend(
            self.manifests
                .iter()
                .filter(|(_, record)| record.subject.is_some())
                .map(|(digest, _)| digest),
        );
        nested
    }

    /// The manifest `digest`, the manifests it lists, and their blobs.
    fn closure(&self, digest: &Digest, manifests: &mut BTreeSet<Digest>) {
        if !manifests.insert(digest.clone()) {
            return;
        }
        if let Some(record) = self.manifests.get(digest) {
            for child in &record.children {
                self.closure(child, manifests);
            }
        }
    }

    /// Bytes of `roots`, their children and their blobs, each counted once.
    fn size_of<'d>(&self, roots: impl IntoIterator<Item = &'d Digest>) -> u64 {
        let mut manifests = BTreeSet::new();
        for root in roots {
            self.closure(root, &mut manifests);
        }
        let blobs: BTreeSet<&Digest> = manifests
            .iter()
            .filter_map(|digest| self.manifests.get(digest))
            .flat_map(|record| record.blobs.iter())
            .collect();
        let manifest_bytes: u64 = manifests
            .iter()
            .filter_map(|digest| self.manifests.get(digest))
            .map(|record| record.size)
            .sum();
        let blob_bytes: u64 = blobs
            .iter()
            .map(|digest| self.blob_sizes.get(*digest).copied().unwrap_or(0))
            .sum();
        manifest_bytes + blob_bytes
    }

    fn referrers_of(&self, subject: &Digest) -> usize {
        self.manifests
            .values()
            .filter(|record| record.subject.as_ref() == Some(subject))
            .count()
    }
}

impl Registry {
    /// The repositories of `project`, in lexical order.
    pub async fn repositories_of(
        &self,
        project: &str,
    ) -> Result<Vec<RepositorySummary>, RegistryError> {
        let mut out = Vec::new();
        for (repo, record) in self.repository_records(project).await? {
            let contents = self.contents(&repo).await?;
            let nested = contents.nested();
            let artifacts: Vec<&Digest> = contents
                .manifests
                .keys()
                .filter(|digest| !nested.contains(digest))
                .collect();
            out.push(RepositorySummary {
                name: repo.to_string(),
                artifact_count: artifacts.len(),
                tag_count: contents.tags.values().map(Vec::len).sum(),
                size_bytes: contents.size_of(contents.manifests.keys()),
                updated_at: record.updated_at,
            });
        }
        Ok(out)
    }

    /// The names of the repositories of `project`, in lexical order,
    /// without reading what they hold.
    pub async fn repository_names_of(
        &self,
        project: &str,
    ) -> Result<Vec<RepositoryName>, RegistryError> {
        let records = self.repository_records(project).await?;
        Ok(records.into_iter().map(|(repo, _)| repo).collect())
    }

    async fn repository_records(
        &self,
        project: &str,
    ) -> Result<Vec<(RepositoryName, RepoRecord)>, RegistryError> {
        let mut records = Vec::new();
        if let Some(kv) = self.store.get(&format!("{}{project}", keys::REPOS)).await? {
            records.push(kv);
        }
        records.extend(
            self.store
                .list_all(&format!("{}{project}/", keys::REPOS), PAGE)
                .await?,
        );
        let mut out = Vec::new();
        for kv in records {
            let Some(repo) = kv
                .key
                .strip_prefix(keys::REPOS)
                .and_then(|r| r.parse().ok())
            else {
                continue;
            };
            out.push((repo, keys::decode(&kv.key, &kv.value)?));
        }
        Ok(out)
    }

    /// The artifacts of `repo`, newest push first.
    pub async fn artifacts(
        &self,
        repo: &RepositoryName,
    ) -> Result<Vec<ArtifactSummary>, RegistryError> {
        self.require_repository(repo).await?;
        let contents = self.contents(repo).await?;
        let nested = contents.nested();
        let mut out = Vec::new();
        for digest in contents.manifests.keys() {
            if !nested.contains(digest) {
                out.push(self.summary(&contents, digest).await?.0);
            }
        }
        out.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(a.digest.cmp(&b.digest)));
        Ok(out)
    }

    /// One artifact of `repo` by tag or digest, in detail.
    pub async fn inspect(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ArtifactDetail, RegistryError> {
        self.require_repository(repo).await?;
        let (digest, _) = self.resolve(repo, reference).await?;
        let contents = self.contents(repo).await?;
        if !contents.manifests.contains_key(&digest) {
            return Err(RegistryError::ManifestUnknown(reference.to_string()));
        }
        let (summary, parsed) = self.summary(&contents, &digest).await?;
        let blob = |d: &wharf_oci::Descriptor| BlobSummary {
            digest: d.digest.to_string(),
            media_type: d.media_type.clone(),
            size: d.size,
        };
        let image = self.image_config(&parsed).await;
        let referrers = self
            .referrers(repo, &digest, None)
            .await?
            .into_iter()
            .map(|d| ReferrerSummary {
                digest: d.digest.to_string(),
                artifact_type: d.artifact_type,
                size: d.size,
            })
            .collect();
        Ok(ArtifactDetail {
            repository: repo.to_string(),
            summary,
            config: parsed.config.as_ref().map(blob),
            layers: parsed.layers.iter().map(blob).collect(),
            manifests: parsed
                .manifests
                .iter()
                .map(|child| ChildManifest {
                    digest: child.digest.to_string(),
                    media_type: child.media_type.clone(),
                    size: child.size,
                    platform: child.platform.as_ref().and_then(platform_name),
                })
                .collect(),
            annotations: parsed.annotations.clone().unwrap_or_default(),
            created: image
                .as_ref()
                .and_then(|c| c["created"].as_str().map(str::to_string)),
            image_config: image.and_then(|c| c.get("config").cloned()),
            referrers,
        })
    }

    /// Deletes every artifact of `repo` (and so every tag); returns the
    /// manifests deleted with the origin of each delete, for the events
    /// replication and the audit log follow. Blobs go at the next garbage
    /// collection.
    pub async fn delete_repository(
        &self,
        repo: &RepositoryName,
    ) -> Result<Vec<(Digest, Origin)>, RegistryError> {
        self.require_repository(repo).await?;
        let contents = self.contents(repo).await?;
        // Referrers and indexes before what they refer to or list.
        let mut order: Vec<&Digest> = contents.manifests.keys().collect();
        order.sort_by_key(|digest| {
            let record = &contents.manifests[*digest];
            match (record.subject.is_some(), record.children.is_empty()) {
                (true, _) => 0,
                (false, false) => 1,
                (false, true) => 2,
            }
        });
        let mut deleted = Vec::new();
        for digest in order {
            match self
                .delete_with_origin(repo, &Reference::Digest(digest.clone()), None)
                .await
            {
                Ok((_, origin)) => deleted.push((digest.clone(), origin)),
                // Deleted meanwhile, by someone else or with its referrer.
                Err(RegistryError::ManifestUnknown(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(deleted)
    }

    async fn require_repository(&self, repo: &RepositoryName) -> Result<(), RegistryError> {
        match self.store.get(&keys::repo(repo)).await? {
            Some(_) => Ok(()),
            None => Err(RegistryError::NameUnknown(repo.to_string())),
        }
    }

    async fn contents(&self, repo: &RepositoryName) -> Result<Contents, RegistryError> {
        let mut manifests = BTreeMap::new();
        for kv in self.store.list_all(&keys::manifests_of(repo), PAGE).await? {
            let Some((_, digest)) = keys::parse_manifest_key(&kv.key) else {
                continue;
            };
            manifests.insert(digest, keys::decode::<ManifestRecord>(&kv.key, &kv.value)?);
        }
        let mut tags: HashMap<Digest, Vec<String>> = HashMap::new();
        for (tag, digest, _) in self.tags_with_origin(repo).await? {
            tags.entry(digest).or_default().push(tag.to_string());
        }
        let mut blob_sizes = HashMap::new();
        let blobs: BTreeSet<&Digest> = manifests.values().flat_map(|r| r.blobs.iter()).collect();
        for digest in blobs {
            let key = keys::link(digest, repo);
            if let Some(kv) = self.store.get(&key).await? {
                let link: LinkRecord = keys::decode(&key, &kv.value)?;
                blob_sizes.insert(digest.clone(), link.size);
            }
        }
        Ok(Contents {
            manifests,
            tags,
            blob_sizes,
        })
    }

    async fn parsed(
        &self,
        digest: &Digest,
        record: &ManifestRecord,
    ) -> Result<ParsedManifest, RegistryError> {
        let bytes = self.manifest_bytes(digest).await?;
        ParsedManifest::parse(Some(&record.media_type), &bytes)
            .map_err(|e| RegistryError::Internal(format!("stored manifest {digest}: {e}")))
    }

    async fn summary(
        &self,
        contents: &Contents,
        digest: &Digest,
    ) -> Result<(ArtifactSummary, ParsedManifest), RegistryError> {
        let record = &contents.manifests[digest];
        let parsed = self.parsed(digest, record).await?;
        let platforms = match parsed.kind {
            ManifestKind::Index => parsed
                .manifests
                .iter()
                .filter_map(|child| child.platform.as_ref().and_then(platform_name))
                .collect(),
            ManifestKind::Image => self
                .image_config(&parsed)
                .await
                .as_ref()
                .and_then(platform_name)
                .into_iter()
                .collect(),
        };
        let mut tags = contents.tags.get(digest).cloned().unwrap_or_default();
        tags.sort();
        let summary = ArtifactSummary {
            digest: digest.to_string(),
            media_type: record.media_type.clone(),
            artifact_type: parsed
                .effective_artifact_type()
                .filter(|t| !is_image_config(t))
                .map(str::to_string),
            size_bytes: contents.size_of([digest]),
            pushed_at: record.pushed_at,
            tags,
            platforms,
            referrer_count: contents.referrers_of(digest),
        };
        Ok((summary, parsed))
    }

    /// The image config blob of a container image, if it is one and reads.
    async fn image_config(&self, parsed: &ParsedManifest) -> Option<serde_json::Value> {
        let config = parsed
            .config
            .as_ref()
            .filter(|c| is_image_config(&c.media_type))?;
        let bytes = self
            .blobs
            .read_to_vec(&config.digest, MAX_CONFIG_BYTES)
            .await
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Whether a config media type says "container image" (not an artifact).
fn is_image_config(media_type: &str) -> bool {
    media_type == OCI_IMAGE_CONFIG || media_type == DOCKER_IMAGE_CONFIG
}
