//! Planning a run: which artifacts of a policy's source to copy (or
//! delete) at its destination. Manual and cron runs take everything the
//! filters match; reconcile passes only what differs, weighing both sides'
//! origins and deletes by the same rule copies follow.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_oci::{RepositoryName, Tag};
use wharf_registry::Origin;

use crate::ReplicationError;
use crate::access::{RegistryAccess, TagState};
use crate::connections::{Connection, Connections};
use crate::model::{Direction, Filters, Job, Policy, TaskKind, TriggerKind};
use crate::queue::TaskSpec;
use crate::service::Replication;
use wharf_api::Glob;

impl Replication {
    /// The two sides of a policy's copies: (source, destination).
    pub(crate) fn sides(
        &self,
        policy: &Policy,
        connection: &Connection,
    ) -> (Arc<dyn RegistryAccess>, Arc<dyn RegistryAccess>) {
        let local: Arc<dyn RegistryAccess> = self.inner.local.clone();
        let remote: Arc<dyn RegistryAccess> = connection.client.clone();
        match policy.direction {
            Direction::Push => (local, remote),
            Direction::Pull => (remote, local),
        }
    }

    /// Plans a run (everything for manual and cron runs, only differences
    /// for reconcile passes) and creates its job; `None` when a reconcile
    /// pass finds nothing to do. A reconcile pass also weighs deletes: it
    /// copies no tag the destination deleted later than the tag was
    /// written, and (if the policy replicates deletions) deletes at the
    /// destination every tag the source deleted later than the
    /// destination's copy was written.
    pub(crate) async fn plan_and_create(
        &self,
        policy: &Policy,
        trigger: TriggerKind,
    ) -> Result<Option<Job>, ReplicationError> {
        let connection = self.inner.connections.connect(&policy.endpoint).await?;
        let (source, destination) = self.sides(policy, &connection);
        let destination_instance = match policy.direction {
            Direction::Push => Connections::instance_of(&connection).await?,
            Direction::Pull => Some(self.instance().to_string()),
        };
        let only_differences = trigger == TriggerKind::Reconcile;
        let deletes = if only_differences {
            Deletes::read(policy, source.as_ref(), destination.as_ref()).await?
        } else {
            Deletes::default()
        };
        let matcher = Matcher::new(&policy.filters);
        let mut repositories = source.repositories().await?;
        // A repository whose last manifest went leaves the catalog; its deleted tags count.
        for repo in deletes.at_source.keys() {
            if !repositories.contains(repo) {
                repositories.push(repo.clone());
            }
        }
        let mut specs = Vec::new();
        for repo in repositories {
            if !matcher.repository(&repo) {
                continue;
            }
            let destination_repo = policy.destination_of(&repo);
            let existing: HashMap<String, TagState> = if only_differences {
                // Before the lookup: a registry denies reads of a missing project.
                self.inner
                    .connections
                    .ensure_project(&policy.endpoint, destination.as_ref(), &destination_repo)
                    .await?;
                destination
                    .tags(&destination_repo)
                    .await?
                    .into_iter()
                    .map(|(t, s)| (t.to_string(), s))
                    .collect()
            } else {
                HashMap::new()
            };
            // What each tag points at (a HEAD per tag at a remote) only when
            // a difference or a label must be judged: tasks read their tag
            // again when they run.
            let tags: Vec<(Tag, Option<TagState>)> =
                if only_differences || policy.filters.label.is_some() {
                    let tags = source.tags(&repo).await?;
                    tags.into_iter().map(|(t, s)| (t, Some(s))).collect()
                } else {
                    let names = source.tag_names(&repo).await?;
                    names.into_iter().map(|t| (t, None)).collect()
                };
            for (tag, state) in tags {
                if !matcher.tag(&tag) {
                    continue;
                }
                if let Some(state) = &state {
                    if only_differences
                        && !differs(
                            state,
                            existing.get(tag.as_str()),
                            deletes.at_destination(&destination_repo, &tag),
                            destination_instance.as_deref(),
                            policy.override_existing,
                        )
                    {
                        continue;
                    }
                    if let Some(label) = &policy.filters.label
                        && !crate::labels::has_label(source.as_ref(), &repo, &state.digest, label)
                            .await?
                    {
                        continue;
                    }
                }
                specs.push(TaskSpec {
                    kind: TaskKind::Copy,
                    repository: repo.clone(),
                    reference: tag.to_string(),
                    destination: destination_repo.clone(),
                    origin: state.and_then(|s| s.origin).map(|o| o.to_header()),
                });
            }
            for (tag, deleted_by) in deletes.at_source.get(&repo).into_iter().flatten() {
                if matcher.tag(tag)
                    && existing
                        .get(tag.as_str())
                        .is_some_and(|current| delete_wins(deleted_by, current))
                {
                    specs.push(TaskSpec {
                        kind: TaskKind::Delete,
                        repository: repo.clone(),
                        reference: tag.to_string(),
                        destination: destination_repo.clone(),
                        origin: Some(deleted_by.to_header()),
                    });
                }
            }
        }
        if specs.is_empty() && only_differences {
            return Ok(None);
        }
        Ok(Some(self.inner.queue.create(policy, trigger, specs).await?))
    }
}

/// A policy's filters with their patterns parsed once, for matching many
/// names. Patterns were checked with the policy; one that no longer parses
/// matches nothing.
pub(crate) struct Matcher<'a> {
    filters: &'a Filters,
    repository: Option<Result<Glob, String>>,
    tag: Option<Result<Glob, String>>,
}

impl<'a> Matcher<'a> {
    pub(crate) fn new(filters: &'a Filters) -> Matcher<'a> {
        Matcher {
            filters,
            repository: filters.repository.as_deref().map(Glob::parse),
            tag: filters.tag.as_deref().map(Glob::parse),
        }
    }

    pub(crate) fn repository(&self, repo: &RepositoryName) -> bool {
        let projects = &self.filters.projects;
        (projects.is_empty() || projects.iter().any(|p| p == repo.project()))
            && matches_glob(&self.repository, repo.as_str())
    }

    pub(crate) fn tag(&self, tag: &Tag) -> bool {
        matches_glob(&self.tag, tag.as_str())
    }
}

fn matches_glob(glob: &Option<Result<Glob, String>>, text: &str) -> bool {
    glob.as_ref()
        .is_none_or(|g| g.as_ref().is_ok_and(|g| g.matches(text)))
}

/// The deleted tags a reconcile pass weighs: the source's (to repeat at
/// the destination, when the policy replicates deletions) and the
/// destination's (which older copies must not undo).
#[derive(Default)]
pub(crate) struct Deletes {
    /// Per source repository: deleted tags and the origins of the deletes.
    pub at_source: HashMap<RepositoryName, Vec<(Tag, Origin)>>,
    /// Per destination `<repository>:<tag>`: the origin of its delete.
    pub at_destination: HashMap<String, Origin>,
}

impl Deletes {
    /// Reads both sides' tombstones (registries without origins keep none).
    async fn read(
        policy: &Policy,
        source: &dyn RegistryAccess,
        destination: &dyn RegistryAccess,
    ) -> Result<Deletes, ReplicationError> {
        let mut deletes = Deletes::default();
        if policy.replicate_deletion {
            for tombstone in source.tombstones().await? {
                deletes
                    .at_source
                    .entry(tombstone.repository)
                    .or_default()
                    .push((tombstone.tag, tombstone.origin));
            }
        }
        for tombstone in destination.tombstones().await? {
            let key = tombstone.cursor();
            deletes.at_destination.insert(key, tombstone.origin);
        }
        Ok(deletes)
    }

    /// The origin of the delete of `repo:tag` at the destination, if kept.
    fn at_destination(&self, repo: &RepositoryName, tag: &Tag) -> Option<&Origin> {
        self.at_destination.get(&format!("{repo}:{tag}"))
    }
}

/// Whether a reconcile pass should repeat a delete at a destination that
/// still holds the tag: the delete wins the origin rule over the write that
/// set the tag there. A registry without origins is never sent deletes by
/// reconcile passes (only by delete events), as before tombstones existed.
pub(crate) fn delete_wins(deleted_by: &Origin, destination: &TagState) -> bool {
    destination
        .origin
        .as_ref()
        .is_some_and(|current| deleted_by.wins_over(current))
}

/// Whether a reconcile pass should copy a tag: the destination lacks it or
/// holds another digest, unless the tag came from the destination, the
/// destination's write or delete wins the origin rule (then the copy would
/// lose, and the destination's own reconcile brings its version, or its
/// delete, here), or the policy does not override.
pub(crate) fn differs(
    source: &TagState,
    destination: Option<&TagState>,
    deleted_at_destination: Option<&Origin>,
    destination_instance: Option<&str>,
    override_existing: bool,
) -> bool {
    if let (Some(origin), Some(instance)) = (&source.origin, destination_instance)
        && origin.instance == instance
    {
        return false;
    }
    match destination {
        None => match (&source.origin, deleted_at_destination) {
            (Some(mine), Some(deleted_by)) => mine.wins_over(deleted_by),
            // Without origins (a plain registry as the source), digests decide.
            _ => true,
        },
        Some(d) if d.digest == source.digest || !override_existing => false,
        Some(d) => match (&source.origin, &d.origin) {
            (Some(mine), Some(theirs)) => mine.wins_over(theirs),
            _ => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(digest: &str, origin: Option<(&str, u64)>) -> TagState {
        TagState {
            digest: wharf_oci::Digest::of(wharf_oci::DigestAlgorithm::Sha256, digest.as_bytes()),
            origin: origin.map(|(i, at)| Origin::new(i, at).unwrap()),
        }
    }

    #[test]
    fn reconcile_copies_only_what_would_win() {
        let mine = state("x", Some(("a", 10)));
        assert!(differs(&mine, None, None, Some("b"), true));
        assert!(!differs(
            &mine,
            Some(&state("x", Some(("b", 99)))),
            None,
            Some("b"),
            true
        ));
        assert!(
            !differs(&state("x", Some(("b", 5))), None, None, Some("b"), true),
            "came from b"
        );
        assert!(differs(
            &mine,
            Some(&state("y", Some(("b", 9)))),
            None,
            Some("b"),
            true
        ));
        assert!(!differs(
            &mine,
            Some(&state("y", Some(("b", 11)))),
            None,
            Some("b"),
            true
        ));
        assert!(
            !differs(
                &mine,
                Some(&state("y", Some(("b", 9)))),
                None,
                Some("b"),
                false
            ),
            "no override"
        );
        // A registry without origins: digests decide, override permitting.
        assert!(differs(&mine, Some(&state("y", None)), None, None, true));
        assert!(!differs(&mine, Some(&state("y", None)), None, None, false));
    }

    #[test]
    fn reconcile_weighs_deletes_by_the_same_rule() {
        let write = state("x", Some(("b", 10)));
        // The destination deleted the tag after this write: no copy.
        let later = Origin::new("a", 11).unwrap();
        assert!(!differs(&write, None, Some(&later), Some("a"), true));
        // It deleted an older write: the newer one goes.
        let earlier = Origin::new("a", 9).unwrap();
        assert!(differs(&write, None, Some(&earlier), Some("a"), true));
        // Equal times: the greater instance id decides, both ways.
        let tie = Origin::new("a", 10).unwrap();
        assert!(differs(&write, None, Some(&tie), Some("a"), true));
        assert!(!differs(
            &state("x", Some(("a", 10))),
            None,
            Some(&Origin::new("b", 10).unwrap()),
            Some("c"),
            true
        ));
        // A source without origins (a plain registry): digests decide, as before.
        assert!(differs(
            &state("x", None),
            None,
            Some(&later),
            Some("a"),
            true
        ));

        // A source's delete goes where it beats the destination's write...
        assert!(delete_wins(&later, &write));
        assert!(!delete_wins(&earlier, &write), "a newer write stays");
        // ...and never to a registry without origins.
        assert!(!delete_wins(&later, &state("x", None)));
    }
}
