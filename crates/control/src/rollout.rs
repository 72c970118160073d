//! The rollout arithmetic, without IO: from a deployment's pods (sorted
//! into the current template's and older ones) which pods to make and
//! which to delete next, as Kubernetes' deployment controller decides it.

use wharf_api::{Pod, RolloutStrategy};

/// A deployment's live pods, sorted for one decision.
pub(crate) struct Census<'a> {
    /// Pods of the current template, not Terminating.
    pub new: Vec<&'a Pod>,
    /// Pods of older templates, not Terminating.
    pub old: Vec<&'a Pod>,
    /// Pods of older templates still Terminating (stopping on their node).
    pub old_terminating: usize,
}

/// What to do next.
#[derive(Debug, Default)]
pub(crate) struct Step<'a> {
    /// New pods to create from the current template.
    pub create: usize,
    /// Pods to delete (gracefully).
    pub delete: Vec<&'a Pod>,
}

/// The next step towards `replicas` pods of the current template.
/// `available` says whether a pod has been ready for `minReadySeconds`.
/// A paused deployment only scales while no older pods remain.
pub(crate) fn next_step<'a>(
    census: &Census<'a>,
    replicas: usize,
    strategy: RolloutStrategy,
    paused: bool,
    available: impl Fn(&Pod) -> bool,
) -> Step<'a> {
    let rolling_out = !census.old.is_empty() || census.old_terminating > 0;
    if paused && rolling_out {
        return Step::default();
    }
    match strategy {
        RolloutStrategy::Recreate => recreate(census, replicas),
        RolloutStrategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => rolling(
            census,
            replicas,
            max_surge as usize,
            max_unavailable as usize,
            available,
        ),
    }
}

/// All old pods stopped, Terminating finished, before any new one.
fn recreate<'a>(census: &Census<'a>, replicas: usize) -> Step<'a> {
    if !census.old.is_empty() {
        return Step {
            create: 0,
            delete: census.old.clone(),
        };
    }
    if census.old_terminating > 0 {
        return Step::default();
    }
    scale_new(census, replicas, replicas)
}

/// New pods up to `replicas + max_surge` in all; old pods down while at
/// least `replicas - max_unavailable` stay available.
fn rolling<'a>(
    census: &Census<'a>,
    replicas: usize,
    max_surge: usize,
    max_unavailable: usize,
    available: impl Fn(&Pod) -> bool,
) -> Step<'a> {
    let (new, old) = (census.new.len(), census.old.len());
    let room = (replicas + max_surge).saturating_sub(new + old);
    let mut step = scale_new(census, replicas, new + room);

    let min_available = replicas.saturating_sub(max_unavailable);
    let new_available = census.new.iter().filter(|p| available(p)).count();
    let old_available = census.old.iter().filter(|p| available(p)).count();
    // Old pods may go as long as what remains, less the new pods not yet
    // available, still covers the minimum.
    let mut budget = (new + old).saturating_sub(min_available + (new - new_available));
    // Unavailable old pods first: they serve nobody.
    let (mut unhealthy, healthy): (Vec<&Pod>, Vec<&Pod>) =
        census.old.iter().partition(|p| !available(p));
    unhealthy.sort_by_key(|p| deletion_rank(p));
    let unhealthy_gone = unhealthy.len().min(budget);
    step.delete
        .extend(unhealthy.into_iter().take(unhealthy_gone));
    budget -= unhealthy_gone;
    let spare = (new_available + old_available).saturating_sub(min_available);
    step.delete
        .extend(healthy.into_iter().take(budget.min(spare)));
    step
}

/// Creates new pods up to `min(target, replicas)`, or deletes the surplus
/// beyond `replicas` (unscheduled, unready and newest first).
fn scale_new<'a>(census: &Census<'a>, replicas: usize, target: usize) -> Step<'a> {
    let new = census.new.len();
    let target = target.min(replicas);
    if new <= replicas {
        return Step {
            create: target.saturating_sub(new),
            delete: Vec::new(),
        };
    }
    let mut surplus = census.new.clone();
    surplus.sort_by_key(|p| deletion_rank(p));
    surplus.truncate(new - replicas);
    Step {
        create: 0,
        delete: surplus,
    }
}

/// Which pod goes first: unscheduled before scheduled, unready before
/// ready, newer before older.
fn deletion_rank(pod: &Pod) -> (bool, bool, std::cmp::Reverse<u64>) {
    (
        pod.spec.node_name.is_some(),
        crate::deployments::is_ready(pod),
        std::cmp::Reverse(pod.metadata.created_at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::ObjectMeta;

    fn pods(count: usize, prefix: &str) -> Vec<Pod> {
        (0..count)
            .map(|i| Pod {
                metadata: ObjectMeta {
                    name: format!("{prefix}{i}"),
                    created_at: i as u64,
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect()
    }

    /// Pods whose names are listed in `up` are available.
    fn step<'a>(
        new: &'a [Pod],
        old: &'a [Pod],
        replicas: usize,
        strategy: RolloutStrategy,
        up: &[&str],
    ) -> (usize, Vec<String>) {
        let census = Census {
            new: new.iter().collect(),
            old: old.iter().collect(),
            old_terminating: 0,
        };
        let step = next_step(&census, replicas, strategy, false, |p| {
            up.contains(&p.metadata.name.as_str())
        });
        let deleted = step
            .delete
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect();
        (step.create, deleted)
    }

    const ROLLING_1_0: RolloutStrategy = RolloutStrategy::RollingUpdate {
        max_surge: 1,
        max_unavailable: 0,
    };

    #[test]
    fn surge_first_then_old_go_as_new_become_available() {
        let old = pods(3, "old");
        // The rollout starts: one surge pod, no old pod may go yet.
        let (create, deleted) = step(&[], &old, 3, ROLLING_1_0, &["old0", "old1", "old2"]);
        assert_eq!((create, deleted.len()), (1, 0));
        // The new pod is not yet available: nothing more.
        let new = pods(1, "new");
        let (create, deleted) = step(&new, &old, 3, ROLLING_1_0, &["old0", "old1", "old2"]);
        assert_eq!((create, deleted.len()), (0, 0));
        // Available: one old pod goes; room for the next new one comes after.
        let (create, deleted) = step(
            &new,
            &old,
            3,
            ROLLING_1_0,
            &["old0", "old1", "old2", "new0"],
        );
        assert_eq!((create, deleted.len()), (0, 1));
    }

    #[test]
    fn unavailable_budget_deletes_old_pods_at_once() {
        let old = pods(4, "old");
        let strategy = RolloutStrategy::RollingUpdate {
            max_surge: 1,
            max_unavailable: 1,
        };
        let (create, deleted) = step(&[], &old, 4, strategy, &["old0", "old1", "old2", "old3"]);
        assert_eq!((create, deleted.len()), (1, 1));
    }

    #[test]
    fn unavailable_old_pods_go_before_available_ones() {
        let old = pods(3, "old");
        let new = pods(1, "new");
        let strategy = RolloutStrategy::RollingUpdate {
            max_surge: 1,
            max_unavailable: 1,
        };
        // old1 is down: it goes first, and takes the whole budget.
        let (_, deleted) = step(&new, &old, 3, strategy, &["old0", "old2"]);
        assert_eq!(deleted, ["old1"]);
    }

    #[test]
    fn a_stuck_rollout_stops_at_max_unavailable() {
        let old = pods(3, "old");
        let new = pods(1, "new");
        let strategy = RolloutStrategy::RollingUpdate {
            max_surge: 1,
            max_unavailable: 1,
        };
        // Two old pods remain available, one went, the new ones never come up.
        let (create, deleted) = step(&new, &old[..2], 3, strategy, &["old0", "old1"]);
        let new2 = pods(2, "new");
        assert_eq!((create, deleted.len()), (1, 0));
        let (create, deleted) = step(&new2, &old[..2], 3, strategy, &["old0", "old1"]);
        assert_eq!((create, deleted.len()), (0, 0));
    }

    #[test]
    fn scale_down_mid_rollout_removes_old_and_unready_first() {
        let old = pods(3, "old");
        let mut new = pods(3, "new");
        new[2].spec.node_name = Some("n1".into());
        // Scaled from 3 to 2 with 3 new pods (two unscheduled, not ready).
        let (create, deleted) = step(&new, &[], 2, ROLLING_1_0, &["new2"]);
        assert_eq!(create, 0);
        assert_eq!(deleted, ["new1"], "the newest unscheduled pod goes");
        // With old pods left, they go down to the minimum first.
        let (_, deleted) = step(
            &new[..1],
            &old,
            2,
            ROLLING_1_0,
            &["old0", "old1", "old2", "new0"],
        );
        assert_eq!(deleted, ["old0", "old1"]);
    }

    #[test]
    fn recreate_deletes_everything_old_before_creating() {
        let old = pods(2, "old");
        let (create, deleted) = step(&[], &old, 2, RolloutStrategy::Recreate, &["old0"]);
        assert_eq!((create, deleted.len()), (0, 2));
        let census = Census {
            new: Vec::new(),
            old: Vec::new(),
            old_terminating: 1,
        };
        let waiting = next_step(&census, 2, RolloutStrategy::Recreate, false, |_| true);
        assert_eq!((waiting.create, waiting.delete.len()), (0, 0));
        let (create, _) = step(&[], &[], 2, RolloutStrategy::Recreate, &[]);
        assert_eq!(create, 2);
    }

    #[test]
    fn paused_holds_a_rollout_but_not_scaling() {
        let old = pods(2, "old");
        let census = Census {
            new: Vec::new(),
            old: old.iter().collect(),
            old_terminating: 0,
        };
        let held = next_step(&census, 2, ROLLING_1_0, true, |_| true);
        assert_eq!((held.create, held.delete.len()), (0, 0));
        let census = Census {
            new: Vec::new(),
            old: Vec::new(),
            old_terminating: 0,
        };
        assert_eq!(next_step(&census, 2, ROLLING_1_0, true, |_| true).create, 2);
    }
}
