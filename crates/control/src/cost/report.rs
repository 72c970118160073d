//! A window's history rows grouped into a report.

use std::collections::{BTreeMap, HashSet};

use wharf_api::{CostGrouping, CostMicros, CostReport, NO_GROUP, UNALLOCATED_GROUP, cost_rows};

use super::allocation::RowKey;
use super::history::WindowCost;

/// The group `key` falls in; `None` for unallocated cost under a pod-side
/// grouping (it has its own row).
fn group_of(key: &RowKey, by: CostGrouping) -> Option<String> {
    let unallocated = key.project.is_empty();
    match by {
        CostGrouping::Pool => Some(key.node.pool.clone()),
        CostGrouping::Cluster => Some(key.node.cluster.clone()),
        CostGrouping::Class => Some(key.node.class.clone()),
        _ if unallocated => None,
        CostGrouping::Project => Some(key.project.clone()),
        CostGrouping::Deployment => Some(format!("{}/{}", key.project, key.deployment)),
    }
}

/// The report of `window` (`[since_ms, until_ms)`) grouped `by`. With
/// `projects`, only those projects' rows are counted (what a project
/// member may see) and unallocated cost is left out.
pub fn build_report(
    window: &WindowCost,
    by: CostGrouping,
    since_ms: u64,
    until_ms: u64,
    projects: Option<&HashSet<String>>,
) -> CostReport {
    let mut groups: BTreeMap<String, CostMicros> = BTreeMap::new();
    let mut unallocated = CostMicros::default();
    for (key, amounts) in &window.rows {
        let own = projects.is_none_or(|p| p.contains(&key.project));
        if !own {
            continue;
        }
        match group_of(key, by) {
            Some(group) => groups.entry(group).or_default().add(amounts),
            None => unallocated.add(amounts),
        }
    }
    let mut rows: Vec<(String, CostMicros)> = groups
        .into_iter()
        .map(|(g, m)| (if g.is_empty() { NO_GROUP.into() } else { g }, m))
        .collect();
    if !by.is_node_side() && projects.is_none() {
        rows.push((UNALLOCATED_GROUP.into(), unallocated));
    }
    let (rows, total) = cost_rows(rows);
    CostReport {
        by,
        since: since_ms,
        until: until_ms,
        minutes_recorded: window.minutes,
        rows,
        total,
    }
}
