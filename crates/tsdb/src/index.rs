//! The series index, `series.jsonl`: one JSON object a line,
//! `{"id":N,"endpoint":..,"metric":..,"tags":..,"counterType":..}`, appended
//! when a series is first seen, so that a restarted server finds the
//! history of series its agents have not pushed again yet. A torn last
//! line is ignored on load and cut before the next append.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use wharf_api::CounterType;

/// Identity of one series: falcon's endpoint, metric and tags (sorted,
/// in falcon's `k=v,k2=v2` form).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    /// The machine or container.
    pub endpoint: String,
    /// The metric name.
    pub metric: String,
    /// Sorted tags.
    pub tags: String,
}

/// One line of the index.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexEntry {
    pub id: u32,
    #[serde(flatten)]
    pub key: SeriesKey,
    pub counter_type: CounterType,
}

/// The index file, open for appending.
pub(crate) struct SeriesIndex {
    file: File,
}

impl SeriesIndex {
    /// Opens (creating) the index and reads its whole entries.
    pub fn open(path: &Path) -> io::Result<(SeriesIndex, Vec<IndexEntry>)> {
        let text = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let whole = text
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        let mut entries = Vec::new();
        for line in text[..whole]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            match serde_json::from_slice::<IndexEntry>(line) {
                Ok(entry) => entries.push(entry),
                Err(err) => {
                    tracing::warn!(error = %err, "skipping an unreadable series index line")
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if whole != text.len() {
            file.set_len(whole as u64)?;
        }
        Ok((SeriesIndex { file }, entries))
    }

    /// Appends entries in one write.
    pub fn append(&mut self, entries: &[IndexEntry]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry).map_err(io::Error::other)?;
            bytes.push(b'\n');
        }
        self.file.write_all(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32) -> IndexEntry {
        IndexEntry {
            id,
            key: SeriesKey {
                endpoint: "n1".into(),
                metric: "cpu.idle".into(),
                tags: format!("core={id}"),
            },
            counter_type: CounterType::Gauge,
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("series.jsonl");
        let (mut index, none) = SeriesIndex::open(&path).unwrap();
        assert!(none.is_empty());
        index.append(&[entry(0), entry(1)]).unwrap();
        drop(index);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"id":2,"endpo"#);
        fs::write(&path, bytes).unwrap();
        let (mut index, entries) = SeriesIndex::open(&path).unwrap();
        assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [0, 1]);
        index.append(&[entry(2)]).unwrap();
        let (_, entries) = SeriesIndex::open(&path).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].key.tags, "core=2");
    }
}
