//! Cost reports as the API returns them (`GET /api/v1/cost/report`), and
//! the pure pieces both ends share: the grouping, the window's bounds and
//! money as integer micro-units shown with two decimals.
//!
//! Amounts are kept in micro-units (a millionth of the currency, whatever
//! it is) so that sums are exact; a report rounds them to cents once, with
//! the largest-remainder method, so its rows add up to its total to the cent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Micro-units in one cent.
pub const MICROS_PER_CENT: u64 = 10_000;

/// The group a report's row shows for a pod without a deployment, or a
/// node without the label grouped by.
pub const NO_GROUP: &str = "-";

/// The group of the row holding what no pod held of the nodes' cost.
pub const UNALLOCATED_GROUP: &str = "(unallocated)";

/// What a cost report groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CostGrouping {
    /// The pod's project.
    Project,
    /// The node's `wharf.io/pool` label.
    Pool,
    /// The node's `wharf.io/cluster` label.
    Cluster,
    /// The pod's project and deployment (`project/deployment`).
    Deployment,
    /// The node's `wharf.io/machine-class` label.
    Class,
}

impl CostGrouping {
    /// Whether the group is a node's (pool, cluster, class): each row then
    /// carries its nodes' unallocated cost; otherwise that cost has its own
    /// [`UNALLOCATED_GROUP`] row.
    pub fn is_node_side(self) -> bool {
        matches!(
            self,
            CostGrouping::Pool | CostGrouping::Cluster | CostGrouping::Class
        )
    }
}

impl FromStr for CostGrouping {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "project" => Ok(CostGrouping::Project),
            "pool" => Ok(CostGrouping::Pool),
            "cluster" => Ok(CostGrouping::Cluster),
            "deployment" => Ok(CostGrouping::Deployment),
            "class" => Ok(CostGrouping::Class),
            _ => Err(format!(
                "invalid grouping {text:?}: use project, pool, cluster, deployment or class"
            )),
        }
    }
}

impl fmt::Display for CostGrouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CostGrouping::Project => "project",
            CostGrouping::Pool => "pool",
            CostGrouping::Cluster => "cluster",
            CostGrouping::Deployment => "deployment",
            CostGrouping::Class => "class",
        })
    }
}

/// Exact amounts of one row, in micro-units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostMicros {
    /// What pods used (their measured usage, within their allocation).
    pub used: u64,
    /// What pods requested and did not use.
    pub idle: u64,
    /// Node cost no pod held.
    pub unallocated: u64,
}

impl CostMicros {
    /// Adds `other` to these.
    pub fn add(&mut self, other: &CostMicros) {
        self.used += other.used;
        self.idle += other.idle;
        self.unallocated += other.unallocated;
    }

    /// All three together.
    pub fn total(&self) -> u64 {
        self.used + self.idle + self.unallocated
    }
}

/// One row of a report: amounts rounded to cents (two decimals), and the
/// exact micro-units they come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostRow {
    /// The project, deployment, pool, cluster or class; `-` for none,
    /// `(unallocated)` for the nodes' unheld cost.
    pub group: String,
    /// Used cost.
    pub used: f64,
    /// Requested-but-idle cost.
    pub idle: f64,
    /// Unallocated node cost.
    pub unallocated: f64,
    /// The three together.
    pub total: f64,
    /// The exact amounts.
    pub micros: CostMicros,
}

/// `GET /api/v1/cost/report`: cost over a window, by group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    /// What the rows group by.
    pub by: CostGrouping,
    /// Window start (RFC 3339, inclusive, on a minute).
    #[serde(with = "crate::time::millis")]
    pub since: u64,
    /// Window end (RFC 3339, exclusive, on a minute).
    #[serde(with = "crate::time::millis")]
    pub until: u64,
    /// How many minutes of the window were recorded.
    pub minutes_recorded: u64,
    /// The rows, by group name; an `(unallocated)` row last.
    pub rows: Vec<CostRow>,
    /// The column sums: `total.total` is the nodes' cost over the window
    /// (only the caller's projects' rows for a project member).
    pub total: CostRow,
}

/// Money in micro-units as the two-decimal text reports show.
///
/// ```
/// assert_eq!(wharf_api::cents_text(123_45), "123.45");
/// assert_eq!(wharf_api::cents_text(5), "0.05");
/// ```
pub fn cents_text(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Rounds `cells` (micro-units) to cents so that they add up to their
/// exact total rounded to the nearest cent: each gets its floor, and the
/// cents left go to the largest remainders (ties to the earlier cell).
///
/// ```
/// // Three thirds of 10 cents: 3 + 3 + 4 would be wrong by position; the
/// // sum is what matters.
/// let cents = wharf_api::apportion_cents(&[33_333, 33_333, 33_334]);
/// assert_eq!(cents.iter().sum::<u64>(), 10);
/// ```
pub fn apportion_cents(cells: &[u64]) -> Vec<u64> {
    let exact: u128 = cells.iter().map(|&c| c as u128).sum();
    let wanted = ((exact + MICROS_PER_CENT as u128 / 2) / MICROS_PER_CENT as u128) as u64;
    let mut cents: Vec<u64> = cells.iter().map(|c| c / MICROS_PER_CENT).collect();
    let floor_sum: u64 = cents.iter().sum();
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cells[i] % MICROS_PER_CENT));
    for &i in order.iter().take(wanted.saturating_sub(floor_sum) as usize) {
        cents[i] += 1;
    }
    cents
}

/// Builds a report's rows from exact amounts per group: cents apportioned
/// over all cells, so `total` is the sum of the rows to the cent.
pub fn cost_rows(groups: Vec<(String, CostMicros)>) -> (Vec<CostRow>, CostRow) {
    let cells: Vec<u64> = groups
        .iter()
        .flat_map(|(_, m)| [m.used, m.idle, m.unallocated])
        .collect();
    let cents = apportion_cents(&cells);
    let money = |c: u64| c as f64 / 100.0;
    let mut sum = CostMicros::default();
    let mut sum_cents = [0u64; 3];
    let rows = groups
        .into_iter()
        .zip(cents.chunks(3))
        .map(|((group, micros), c)| {
            sum.add(&micros);
            for (s, c) in sum_cents.iter_mut().zip(c) {
                *s += c;
            }
            CostRow {
                group,
                used: money(c[0]),
                idle: money(c[1]),
                unallocated: money(c[2]),
                total: money(c[0] + c[1] + c[2]),
                micros,
            }
        })
        .collect();
    let total = CostRow {
        group: "TOTAL".into(),
        used: money(sum_cents[0]),
        idle: money(sum_cents[1]),
        unallocated: money(sum_cents[2]),
        total: money(sum_cents.iter().sum()),
        micros: sum,
    };
    (rows, total)
}

/// A report window's bound: an RFC 3339 time, or a duration back from
/// `now_ms` (`90s`, `15m`, `24h`, `30d`); unix milliseconds.
///
/// ```
/// assert_eq!(wharf_api::parse_time_bound("1h", 7_200_000), Ok(3_600_000));
/// assert_eq!(wharf_api::parse_time_bound("1970-01-01T00:01:00Z", 0), Ok(60_000));
/// ```
pub fn parse_time_bound(text: &str, now_ms: u64) -> Result<u64, String> {
    if let Some(at) = crate::time::parse_rfc3339(text) {
        return Ok(at);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if unit_ms > 0 => Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms))),
        _ => Err(format!(
            "invalid time {text:?}: use RFC 3339 (2026-01-02T03:04:05Z) or a duration back from now (90s, 15m, 24h, 30d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_add_up_to_the_total_to_the_cent() {
        // 1/3 cent pieces: rounding each alone would lose a cent.
        let third = CostMicros {
            used: 3_333,
            idle: 3_333,
            unallocated: 3_334,
        };
        let (rows, total) = cost_rows(vec![("a".into(), third), ("b".into(), third)]);
        assert_eq!(total.micros.total(), 20_000);
        assert_eq!(total.total, 0.02);
        let cents: f64 = rows.iter().map(|r| r.total).sum();
        assert_eq!((cents * 100.0).round(), 2.0);
    }

    #[test]
    fn groupings_and_bounds_parse_or_say_what_is_wrong() {
        assert_eq!("class".parse(), Ok(CostGrouping::Class));
        assert!("node".parse::<CostGrouping>().unwrap_err().contains("pool"));
        assert_eq!(parse_time_bound("2d", 3 * 86_400_000), Ok(86_400_000));
        assert!(parse_time_bound("yesterday", 0).is_err());
        assert!(parse_time_bound("5w", 0).is_err());
    }
}
