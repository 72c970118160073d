//! Manifests, tags, listings and referrers.

use std::collections::HashSet;

use bytes::Bytes;
use wharf_oci::manifest::Descriptor;
use wharf_oci::wire::{delete_outcome, tag_outcome};
use wharf_oci::{Digest, DigestAlgorithm, ParsedManifest, Reference, RepositoryName, Tag};
use wharf_store::{KeyValue, ListOptions, ListPage, StoreExt, Txn};

use crate::blobs::{MAX_ATTEMPTS, backoff};
use crate::keys::{
    self, LinkRecord, ManifestRecord, RepoRecord, TagRecord, TombstoneRecord, now_millis,
};
use crate::{Origin, Registry, RegistryError};

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
    /// Looked up by tag: the origin of the write that set the tag.
    pub origin: Option<Origin>,
}

/// The outcome of a manifest push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its subject, echoed in the `OCI-Subject` header.
    pub subject: Option<Digest>,
    /// What became of the tag it was pushed under.
    pub tag: TagOutcome,
    /// The origin of this write: the one given, or this instance at the
    /// time it assigned (for a tag it moved: the origin now recorded).
    pub origin: Origin,
}

/// What a manifest push did to the tag it named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagOutcome {
    /// Pushed by digest: no tag involved.
    NoTag,
    /// The tag is new.
    Stored,
    /// The tag already pointed at this digest; it keeps its recorded origin.
    Unchanged,
    /// The tag moved from another manifest. A local push always moves it; a
    /// push with an origin moved it because it won the conflict with the
    /// write that set it ([`Origin::wins_over`]).
    Replaced {
        /// The manifest the tag pointed at before.
        previous: Digest,
        /// The origin of the write that had set it there.
        previous_origin: Origin,
    },
    /// A replicated push lost the conflict: the manifest is stored by digest
    /// but the tag still points where it did.
    Kept {
        /// The manifest the tag still points at.
        current: Digest,
        /// The origin of the write that set it there, which won.
        current_origin: Origin,
    },
    /// A replicated push lost to a newer delete of the tag: the manifest is
    /// stored by digest and the tag stays deleted.
    KeptDeleted {
        /// The origin of the delete, which won.
        deleted_origin: Origin,
    },
}

impl TagOutcome {
    /// Whether the tag now points at the pushed manifest (stored, replaced
    /// or unchanged); false for pushes by digest and lost conflicts.
    pub fn moved(&self) -> bool {
        matches!(
            self,
            TagOutcome::Stored | TagOutcome::Unchanged | TagOutcome::Replaced { .. }
        )
    }

    /// The value of the `Wharf-Tag` response header:
    /// `none`, `stored`, `unchanged`, `replaced`, `kept` or `kept-deleted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TagOutcome::NoTag => tag_outcome::NONE,
            TagOutcome::Stored => tag_outcome::STORED,
            TagOutcome::Unchanged => tag_outcome::UNCHANGED,
            TagOutcome::Replaced { .. } => tag_outcome::REPLACED,
            TagOutcome::Kept { .. } => tag_outcome::KEPT,
            TagOutcome::KeptDeleted { .. } => tag_outcome::KEPT_DELETED,
        }
    }
}

/// What a delete did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The tag, or the manifest and its tags, were deleted.
    Deleted,
    /// A replicated tag delete lost the conflict with the write that set the
    /// tag; the tag stays.
    Kept {
        /// The manifest the tag still points at.
        current: Digest,
        /// The origin of the write that set it there, which won.
        current_origin: Origin,
    },
    /// A replicated tag delete found no tag: nothing was deleted, and the
    /// delete is remembered (unless a newer one already was), so that an
    /// older write of the tag arriving later stays out.
    Absent,
}

impl DeleteOutcome {
    /// The value of the `Wharf-Tag` response header to a tag delete:
    /// `deleted`, `kept` or `absent`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeleteOutcome::Deleted => delete_outcome::DELETED,
            DeleteOutcome::Kept { .. } => delete_outcome::KEPT,
            DeleteOutcome::Absent => delete_outcome::ABSENT,
        }
    }
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

    /// The digest a reference names and, for a tag, the origin that set it.
    pub(crate) async fn resolve(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(Digest, Option<Origin>), RegistryError> {
        match reference {
            Reference::Digest(digest) => Ok((digest.clone(), None)),
            Reference::Tag(tag) => {
                let (digest, origin) = self
                    .tag_origin(repo, tag)
                    .await?
                    .ok_or_else(|| RegistryError::ManifestUnknown(reference.to_string()))?;
                Ok((digest, Some(origin)))
            }
        }
    }

    /// This instance as the origin of a write accepted at `at`.
    fn local_origin(&self, at: u64) -> Origin {
        Origin {
            instance: self.config.instance.clone(),
            at,
        }
    }

    /// The manifest `tag` points at and the origin of the write that set it
    /// (this instance at the tag's last update for tags written before
    /// origins were kept); `None` if there is no such tag.
    pub async fn tag_origin(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<(Digest, Origin)>, RegistryError> {
        let key = keys::tag(repo, tag);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let record: TagRecord = keys::decode(&key, &kv.value)?;
        let origin = record.effective_origin(&self.config.instance);
        Ok(Some((record.digest, origin)))
    }

    /// Every tag of `repo` in lexical order with its manifest and origin, read
    /// in one listing; empty for an unknown repository.
    pub async fn tags_with_origin(
        &self,
        repo: &RepositoryName,
    ) -> Result<Vec<(Tag, Digest, Origin)>, RegistryError> {
        let prefix = keys::tags_of(repo);
        let mut out = Vec::new();
        for kv in self.store.list_all(&prefix, 1000).await? {
            let tag: Tag = kv.key[prefix.len()..]
                .parse()
                .map_err(|e| RegistryError::Internal(format!("corrupt tag key {}: {e}", kv.key)))?;
            let record: TagRecord = keys::decode(&kv.key, &kv.value)?;
            let origin = record.effective_origin(&self.config.instance);
            out.push((tag, record.digest, origin));
        }
        Ok(out)
    }

    /// Looks a manifest up by tag or digest; with `with_bytes` also loads its content.
    pub async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        with_bytes: bool,
    ) -> Result<ManifestContent, RegistryError> {
        let (digest, origin) = self.resolve(repo, reference).await?;
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
            origin,
        })
    }

    pub(crate) async fn manifest_bytes(&self, digest: &Digest) -> Result<Bytes, RegistryError> {
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
    /// blob and child manifest it needs is already in `repo`. A local push:
    /// see [`Registry::put_manifest_from`] with no origin.
    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PushedManifest, RegistryError> {
        self.put_manifest_from(repo, reference, content_type, body, None)
            .await
    }

    /// Stores a manifest as [`Registry::put_manifest`] does, on behalf of the
    /// write's `origin`: `None` for a push accepted here, the peer's
    /// `Wharf-Origin` for a replicated one.
    ///
    /// A local push records this instance as the tag's origin, at the later
    /// of now and one millisecond after the origin it replaces, so it beats
    /// what it replaced even on a clock that lags, and always moves the tag.
    /// A push with an origin moves an existing tag only if it wins over the
    /// tag's origin ([`Origin::wins_over`]); otherwise the manifest is still
    /// stored by digest and the tag is [`TagOutcome::Kept`]. The decision
    /// commits in the same transaction as the manifest, guarded by the
    /// revision of the tag it read.
    pub async fn put_manifest_from(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        origin: Option<&Origin>,
    ) -> Result<PushedManifest, RegistryError> {
        if let Some(origin) = origin {
            origin.check_incoming(now_millis())?;
        }
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
        let (mut txn, mut tag, mut write_origin) = self
            .manifest_txn(repo, reference, &digest, &manifest, size, origin)
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
                    tag,
                    origin: write_origin,
                });
            }
            // Something it depends on changed meanwhile: check again.
            backoff(attempt).await;
            (txn, tag, write_origin) = self
                .manifest_txn(repo, reference, &digest, &manifest, size, origin)
                .await?;
        }
        Err(RegistryError::Contention(keys::manifest(repo, &digest)))
    }

    /// Builds the transaction that stores a manifest, guarded by the
    /// revisions of everything it depends on. Rewriting the blob links moves
    /// their revisions, which fences off a garbage collection that decided to
    /// drop one of them before it saw this manifest. Also decides what
    /// becomes of the tag, guarded by the tag's revision, and returns that
    /// with the origin of the write.
    async fn manifest_txn(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        digest: &Digest,
        manifest: &ParsedManifest,
        size: u64,
        origin: Option<&Origin>,
    ) -> Result<(Txn, TagOutcome, Origin), RegistryError> {
        let now = now_millis();
        let mut txn = Txn::new();
        let mut seen = HashSet::new();
        // References this push adds to the project's accounting.
        let mut charges = Vec::new();
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
            // A link whose charge a delete released is used again: charge it.
            if link.uncharged {
                charges.push((blob.digest.clone(), link.size, 1));
            }
            let fresh = LinkRecord {
                size: link.size,
                marked_at: now,
                uncharged: false,
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
            // Rewritten unchanged, so that its revision moves: a collection
            // of untagged manifests that decided to delete the child before
            // it saw this index then fails its compare-and-swap.
            txn = txn
                .when_revision(&kv.key, kv.mod_revision)
                .put(kv.key, kv.value);
        }

        // A new manifest in the repository costs its bytes once per project.
        let manifest_key = keys::manifest(repo, digest);
        match self.store.get(&manifest_key).await? {
            Some(kv) => txn = txn.when_revision(&manifest_key, kv.mod_revision),
            None => {
                txn = txn.when_revision(&manifest_key, 0);
                charges.push((digest.clone(), size, 1));
            }
        }
        txn = self.account_all(txn, repo.project(), &charges).await?;
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
        let local = origin.is_none();
        let mut write_origin = origin.cloned().unwrap_or_else(|| self.local_origin(now));
        let outcome = match reference {
            Reference::Digest(_) => TagOutcome::NoTag,
            Reference::Tag(tag) => {
                let key = keys::tag(repo, tag);
                match self.store.get(&key).await? {
                    None => {
                        let (tombstone_revision, deleted) = self.tombstone(repo, tag).await?;
                        txn = txn
                            .when_revision(&key, 0)
                            .when_revision(keys::tombstone(repo, tag), tombstone_revision);
                        match deleted {
                            Some(deleted) if !local && !write_origin.wins_over(&deleted.origin) => {
                                TagOutcome::KeptDeleted {
                                    deleted_origin: deleted.origin,
                                }
                            }
                            deleted => {
                                if let Some(deleted) = deleted {
                                    if local {
                                        write_origin = write_origin.after(&deleted.origin);
                                    }
                                    txn = txn.delete(keys::tombstone(repo, tag));
                                }
                                let record = TagRecord::new(digest.clone(), &write_origin, now);
                                txn = txn.put(key, keys::encode(&record));
                                TagOutcome::Stored
                            }
                        }
                    }
                    Some(kv) => {
                        let current: TagRecord = keys::decode(&key, &kv.value)?;
                        let current_origin = current.effective_origin(&self.config.instance);
                        txn = txn.when_revision(&key, kv.mod_revision);
                        if current.digest == *digest {
                            TagOutcome::Unchanged
                        } else {
                            if local {
                                write_origin = write_origin.after(&current_origin);
                            }
                            if local || write_origin.wins_over(&current_origin) {
                                let record = TagRecord::new(digest.clone(), &write_origin, now);
                                txn = txn.put(key, keys::encode(&record));
                                TagOutcome::Replaced {
                                    previous: current.digest,
                                    previous_origin: current_origin,
                                }
                            } else {
                                TagOutcome::Kept {
                                    current: current.digest,
                                    current_origin,
                                }
                            }
                        }
                    }
                }
            }
        };
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
        Ok((txn, outcome, write_origin))
    }

    /// Deletes a tag, or a manifest with every tag pointing at it. A local
    /// delete: see [`Registry::delete_manifest_from`] with no origin.
    pub async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        self.delete_manifest_from(repo, reference, None)
            .await
            .map(|_| ())
    }

    /// Deletes as [`Registry::delete_manifest`] does, on behalf of the
    /// write's `origin` (`None`: accepted here). A tag delete with an origin
    /// happens only if that origin wins over or equals the origin of the
    /// write that set the tag; otherwise the tag is [`DeleteOutcome::Kept`].
    /// With an origin, a tag that is not there is [`DeleteOutcome::Absent`]
    /// (without one: [`RegistryError::ManifestUnknown`]). Deletes by digest
    /// ignore the origin: content is not in conflict. Every deleted tag
    /// leaves a tombstone with the delete's origin (see
    /// [`Registry::tombstones`]).
    pub async fn delete_manifest_from(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        origin: Option<&Origin>,
    ) -> Result<DeleteOutcome, RegistryError> {
        Ok(self.delete_with_origin(repo, reference, origin).await?.0)
    }

    /// [`Registry::delete_manifest_from`], also returning the origin of the
    /// delete: the given one, or this instance at the later of now and one
    /// millisecond after the origins of the tags it deletes.
    pub async fn delete_with_origin(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        origin: Option<&Origin>,
    ) -> Result<(DeleteOutcome, Origin), RegistryError> {
        if let Some(origin) = origin {
            origin.check_incoming(now_millis())?;
        }
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let (txn, outcome, delete_origin, deleted) = match reference {
                Reference::Tag(tag) => {
                    let (txn, outcome, origin) = self.tag_delete_txn(repo, tag, origin).await?;
                    (txn, outcome, origin, None)
                }
                Reference::Digest(digest) => {
                    let (kv, record) = self
                        .manifest_record(repo, digest)
                        .await?
                        .ok_or_else(|| RegistryError::ManifestUnknown(digest.to_string()))?;
                    let (txn, delete_origin) = self
                        .manifest_delete_txn(repo, digest, &kv, &record, origin)
                        .await?;
                    (
                        Some(txn),
                        DeleteOutcome::Deleted,
                        delete_origin,
                        Some(record),
                    )
                }
            };
            // Decided on what was read: nothing to write.
            let Some(txn) = txn else {
                return Ok((outcome, delete_origin));
            };
            if self.store.txn(txn).await?.succeeded {
                if let Some(record) = deleted {
                    self.release_after_delete(repo, &record).await;
                }
                return Ok((outcome, delete_origin));
            }
        }
        Err(RegistryError::Contention(format!("{repo}@{reference}")))
    }

    /// Releases the charges of the links only the deleted manifest `record`
    /// used. The delete has happened; a failure here only delays the
    /// release until garbage collection removes the links.
    pub(crate) async fn release_after_delete(
        &self,
        repo: &RepositoryName,
        record: &ManifestRecord,
    ) {
        if let Err(err) = self.release_unused_links(repo, &record.blobs).await {
            tracing::warn!(%repo, error = %err, "quota of a deleted manifest is released only by the next garbage collection");
        }
    }

    /// Decides a tag delete on what it reads: the transaction to commit (if
    /// any), guarded by the revisions of the tag and its tombstone, the
    /// outcome, and the delete's origin.
    async fn tag_delete_txn(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        origin: Option<&Origin>,
    ) -> Result<(Option<Txn>, DeleteOutcome, Origin), RegistryError> {
        let now = now_millis();
        let key = keys::tag(repo, tag);
        let tombstone_key = keys::tombstone(repo, tag);
        let current = self.store.get(&key).await?;
        let (tombstone_revision, deleted) = self.tombstone(repo, tag).await?;
        let guarded = |tag_revision| {
            Txn::new()
                .when_revision(&key, tag_revision)
                .when_revision(&tombstone_key, tombstone_revision)
        };
        let record = |origin: &Origin, digest| {
            keys::encode(&TombstoneRecord {
                origin: origin.clone(),
                digest,
                recorded_at: now,
            })
        };
        let Some(kv) = current else {
            let Some(incoming) = origin else {
                return Err(RegistryError::ManifestUnknown(format!("{repo}:{tag}")));
            };
            if deleted.is_some_and(|d| !incoming.wins_over(&d.origin)) {
                return Ok((None, DeleteOutcome::Absent, incoming.clone()));
            }
            // Remembered, so that an older write arriving later stays out.
            let txn = guarded(0).put(&tombstone_key, record(incoming, None));
            return Ok((Some(txn), DeleteOutcome::Absent, incoming.clone()));
        };
        let current: TagRecord = keys::decode(&key, &kv.value)?;
        let current_origin = current.effective_origin(&self.config.instance);
        let delete_origin = match origin {
            None => self.local_origin(now).after(&current_origin),
            Some(incoming)
                if *incoming == current_origin || incoming.wins_over(&current_origin) =>
            {
                incoming.clone()
            }
            Some(incoming) => {
                let kept = DeleteOutcome::Kept {
                    current: current.digest,
                    current_origin,
                };
                return Ok((None, kept, incoming.clone()));
            }
        };
        let txn = guarded(kv.mod_revision)
            .delete(&key)
            .put(&tombstone_key, record(&delete_origin, Some(current.digest)));
        Ok((Some(txn), DeleteOutcome::Deleted, delete_origin))
    }

    /// The transaction deleting the manifest record `kv` (holding `record`)
    /// of `repo` with its own charge, its referrer entry and every tag
    /// pointing at it, each tag leaving a tombstone, guarded by the
    /// revisions read; and the delete's origin: `origin`, or this instance
    /// stamped after every deleted tag's origin.
    pub(crate) async fn manifest_delete_txn(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        kv: &KeyValue,
        record: &ManifestRecord,
        origin: Option<&Origin>,
    ) -> Result<(Txn, Origin), RegistryError> {
        let now = now_millis();
        let mut txn = Txn::new()
            .when_revision(&kv.key, kv.mod_revision)
            .delete(&kv.key);
        txn = self
            .account(txn, repo.project(), digest, record.size, -1)
            .await?;
        let mut delete_origin = origin.cloned().unwrap_or_else(|| self.local_origin(now));
        let mut deleted_tags = Vec::new();
        for tag in self.store.list_all(&keys::tags_of(repo), 1000).await? {
            let tag_record = keys::decode::<TagRecord>(&tag.key, &tag.value)?;
            if tag_record.digest == *digest {
                if origin.is_none() {
                    delete_origin =
                        delete_origin.after(&tag_record.effective_origin(&self.config.instance));
                }
                txn = txn.when_revision(&tag.key, tag.mod_revision);
                deleted_tags.push(tag.key);
            }
        }
        let tombstones = self.tombstone_revisions(repo).await?;
        let prefix = keys::tags_of(repo);
        for tag_key in deleted_tags {
            let tombstone_key =
                format!("{}{}", keys::tombstones_of(repo), &tag_key[prefix.len()..]);
            let tombstone = TombstoneRecord {
                origin: delete_origin.clone(),
                digest: Some(digest.clone()),
                recorded_at: now,
            };
            txn = txn
                .when_revision(
                    &tombstone_key,
                    tombstones.get(&tombstone_key).copied().unwrap_or(0),
                )
                .delete(tag_key)
                .put(tombstone_key, keys::encode(&tombstone));
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
                repo_record.updated_at = now;
                txn = txn.put(repo_key, keys::encode(&repo_record));
            }
        } else {
            txn = txn.delete(repo_key);
        }
        Ok((txn, delete_origin))
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
        let page = self.list_after(prefix, n, last).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|kv| kv.key[prefix.len()..].to_string())
                .collect(),
            more: page.more,
        })
    }

    /// Up to `n` keys under `prefix` after `prefix` + `last`.
    pub(crate) async fn list_after(
        &self,
        prefix: &str,
        n: usize,
        last: Option<&str>,
    ) -> Result<ListPage, RegistryError> {
        if n == 0 {
            return Ok(ListPage::default());
        }
        let options = ListOptions {
            start_after: last.map(|last| format!("{prefix}{last}")),
            limit: Some(n),
        };
        Ok(self.store.list(prefix, options).await?)
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
