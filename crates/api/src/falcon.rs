//! open-falcon's data model: one sample of one metric, as falcon's agent
//! and its plugins push it (`/v1/push`) and as Wharf's agents report their
//! node and container metrics. Counters travel raw; the store turns them
//! into rates at query time.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a value is read as is or differentiated into a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CounterType {
    /// A level: memory used, load average.
    Gauge,
    /// A monotonically growing total: bytes sent, CPU nanoseconds.
    Counter,
}

/// One sample in falcon's push format
/// (`{endpoint, metric, tags, value, timestamp, counterType, step}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FalconSample {
    /// The machine (or container) the sample is about; falcon's host name.
    pub endpoint: String,
    /// Dotted metric name, e.g. `cpu.idle`, `net.if.in.bytes`.
    pub metric: String,
    /// falcon's tags as written on the wire: `k=v` pairs joined by commas,
    /// empty when there are none.
    #[serde(default)]
    pub tags: String,
    /// The value.
    pub value: f64,
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
    /// GAUGE or COUNTER.
    pub counter_type: CounterType,
    /// The reporting interval in seconds.
    pub step: u32,
}

impl FalconSample {
    /// The tags as a sorted map; a pair without `=` is an error naming it.
    pub fn tag_map(&self) -> Result<BTreeMap<String, String>, String> {
        parse_tags(&self.tags)
    }
}

/// Parses falcon's `k=v,k2=v2` tag string into a sorted map.
pub fn parse_tags(tags: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in tags.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("tag {pair:?} is not key=value"))?;
        map.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(map)
}

/// Writes a tag map back in falcon's wire form (sorted, so equal tag sets
/// give equal strings).
pub fn format_tags(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_falcon_push_body_parses_with_its_wire_names() {
        let body = r#"[{"endpoint":"host1","metric":"net.if.in.bytes","tags":"iface=eth0",
            "value":12.5,"timestamp":1700000000,"counterType":"COUNTER","step":60}]"#;
        let samples: Vec<FalconSample> = serde_json::from_str(body).unwrap();
        assert_eq!(samples[0].counter_type, CounterType::Counter);
        assert_eq!(samples[0].tag_map().unwrap()["iface"], "eth0");
    }

    #[test]
    fn tags_round_trip_sorted_and_bad_pairs_are_named() {
        let map = parse_tags(" mount=/ , fstype=ext4").unwrap();
        assert_eq!(format_tags(&map), "fstype=ext4,mount=/");
        assert!(parse_tags("").unwrap().is_empty());
        assert!(parse_tags("a=1,oops").unwrap_err().contains("oops"));
    }
}
