//! Minute-level cost history in files, one per hour, and a summary per
//! finished hour so that a month's report reads 720 summaries rather than
//! 43,200 minutes.
//!
//! Layout, in the history directory (`<data-dir>/cost/`):
//! - `<hour>.min` (hour = unix seconds / 3600): the hour's minutes, one
//!   block each, appended as they are recorded;
//! - `<hour>.sum`: one block with the hour's rows summed, written (to a
//!   temporary file, then renamed) once a later hour has begun.
//!
//! A block is `len: u32 LE` then `len` bytes: the unix minute and the
//! number of minutes it sums (1 in `.min` files), a string table
//! (count, then length-prefixed UTF-8), and rows: the indices of pool,
//! cluster, class, project and deployment in the table, then used, idle
//! and unallocated micro-units. Every integer is an unsigned LEB128
//! varint. A block cut short by a crash is dropped when read and cut off
//! before the next append.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wharf_api::CostMicros;

use super::allocation::{NodeGroups, RowKey};

/// Rows summed by key.
pub type CostRows = HashMap<RowKey, CostMicros>;

/// The history directory.
#[derive(Clone, Debug)]
pub struct CostHistory {
    dir: PathBuf,
    /// The newest hour file as the last append left it, so that appends
    /// do not re-read it; read from disk at the first append.
    tail: Arc<Mutex<Option<Tail>>>,
}

/// Where the next append goes.
#[derive(Clone, Copy, Debug)]
struct Tail {
    hour: u64,
    /// The length of its complete blocks.
    len: u64,
    last_minute: Option<u64>,
}

/// What a read of a window found.
#[derive(Debug, Default)]
pub struct WindowCost {
    /// Rows summed over the window.
    pub rows: CostRows,
    /// How many minutes of the window had been recorded.
    pub minutes: u64,
}

/// A decoded block.
struct Block {
    minute: u64,
    minutes: u64,
    rows: Vec<(RowKey, CostMicros)>,
}

impl CostHistory {
    /// The history kept in `dir` (created, owner-only).
    pub fn open(dir: &Path) -> io::Result<CostHistory> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(CostHistory {
            dir: dir.to_path_buf(),
            tail: Arc::default(),
        })
    }

    fn path(&self, hour: u64, extension: &str) -> PathBuf {
        self.dir.join(format!("{hour}.{extension}"))
    }

    /// The hours that have a `.min` file, oldest first.
    fn hours(&self) -> io::Result<Vec<u64>> {
        let mut hours: Vec<u64> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".min")?.parse().ok()
            })
            .collect();
        hours.sort_unstable();
        Ok(hours)
    }

    /// The last minute recorded, if any.
    pub fn last_minute(&self) -> io::Result<Option<u64>> {
        Ok(self.read_tail()?.last_minute)
    }

    /// The newest hour file's state, from disk.
    fn read_tail(&self) -> io::Result<Tail> {
        let Some(&hour) = self.hours()?.last() else {
            return Ok(Tail {
                hour: 0,
                len: 0,
                last_minute: None,
            });
        };
        let (blocks, len) = read_blocks(&self.path(hour, "min"))?;
        Ok(Tail {
            hour,
            len,
            last_minute: blocks.last().map(|b| b.minute),
        })
    }

    /// Appends minute `minute`'s rows; `false` (and nothing written) if
    /// that minute or a later one is already recorded: a minute is
    /// recorded once. Summarises finished hours first.
    pub fn append(&self, minute: u64, rows: &[(RowKey, CostMicros)]) -> io::Result<bool> {
        let mut held = self.tail.lock().expect("cost history lock");
        let mut tail = match *held {
            Some(tail) => tail,
            None => self.read_tail()?,
        };
        if tail.last_minute.is_some_and(|last| last >= minute) {
            return Ok(false);
        }
        let hour = minute / 60;
        if tail.hour != hour || tail.last_minute.is_none() {
            for earlier in self.hours()?.into_iter().filter(|&h| h < hour) {
                if !self.path(earlier, "sum").exists() {
                    self.summarise(earlier)?;
                }
            }
            tail.hour = hour;
            tail.len = 0;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(hour, "min"))?;
        // Drops a block a crash cut short.
        file.set_len(tail.len)?;
        let block = encode_block(minute, 1, rows.iter().map(|(k, m)| (k, m)));
        file.write_all(&block)?;
        file.sync_data()?;
        tail.len += block.len() as u64;
        tail.last_minute = Some(minute);
        *held = Some(tail);
        Ok(true)
    }

    /// Writes `hour`'s summary from its minutes.
    fn summarise(&self, hour: u64) -> io::Result<()> {
        let (blocks, _) = read_blocks(&self.path(hour, "min"))?;
        let mut rows = CostRows::new();
        for block in &blocks {
            add_rows(&mut rows, &block.rows);
        }
        let temporary = self.path(hour, "sum.tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(&encode_block(hour * 60, blocks.len() as u64, rows.iter()))?;
        file.sync_data()?;
        fs::rename(&temporary, self.path(hour, "sum"))
    }

    /// The rows of the minutes in `[since, until)` (unix minutes): whole
    /// hours from their summaries, the window's ragged ends from minutes.
    pub fn read(&self, since: u64, until: u64) -> io::Result<WindowCost> {
        let mut window = WindowCost::default();
        let first = since / 60;
        let last = until.div_ceil(60);
        for hour in self
            .hours()?
            .into_iter()
            .filter(|&h| h >= first && h < last)
        {
            let whole = hour * 60 >= since && hour * 60 + 60 <= until;
            let summary = self.path(hour, "sum");
            let (blocks, _) = if whole && summary.exists() {
                read_blocks(&summary)?
            } else {
                read_blocks(&self.path(hour, "min"))?
            };
            for block in blocks
                .iter()
                .filter(|b| b.minute >= since && b.minute < until)
            {
                window.minutes += block.minutes;
                add_rows(&mut window.rows, &block.rows);
            }
        }
        Ok(window)
    }

    /// Bytes the history takes on disk.
    pub fn bytes_used(&self) -> io::Result<u64> {
        let mut bytes = 0;
        for entry in fs::read_dir(&self.dir)? {
            bytes += entry?.metadata()?.len();
        }
        Ok(bytes)
    }
}

fn add_rows(into: &mut CostRows, rows: &[(RowKey, CostMicros)]) {
    for (key, amounts) in rows {
        match into.get_mut(key) {
            Some(sum) => sum.add(amounts),
            None => {
                into.insert(key.clone(), *amounts);
            }
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn encode_block<'a>(
    minute: u64,
    minutes: u64,
    rows: impl Iterator<Item = (&'a RowKey, &'a CostMicros)>,
) -> Vec<u8> {
    let mut strings: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, u64> = HashMap::new();
    let mut body = Vec::new();
    let mut count = 0u64;
    for (key, amounts) in rows {
        for text in [
            key.node.pool.as_str(),
            &key.node.cluster,
            &key.node.class,
            &key.project,
            &key.deployment,
        ] {
            let next = strings.len() as u64;
            let i = *index.entry(text).or_insert_with(|| {
                strings.push(text);
                next
            });
            put_varint(&mut body, i);
        }
        for amount in [amounts.used, amounts.idle, amounts.unallocated] {
            put_varint(&mut body, amount);
        }
        count += 1;
    }
    let mut payload = Vec::with_capacity(body.len() + 64);
    put_varint(&mut payload, minute);
    put_varint(&mut payload, minutes);
    put_varint(&mut payload, strings.len() as u64);
    for text in &strings {
        put_varint(&mut payload, text.len() as u64);
        payload.extend_from_slice(text.as_bytes());
    }
    put_varint(&mut payload, count);
    payload.extend_from_slice(&body);
    let mut block = (payload.len() as u32).to_le_bytes().to_vec();
    block.extend_from_slice(&payload);
    block
}

/// Reads varints off a block's bytes.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    fn text(&mut self) -> Option<String> {
        let len = usize::try_from(self.varint()?).ok()?;
        let (text, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(text.to_vec()).ok()
    }
}

fn decode_block(payload: &[u8]) -> Option<Block> {
    let mut cursor = Cursor(payload);
    let minute = cursor.varint()?;
    let minutes = cursor.varint()?;
    let strings = (0..cursor.varint()?)
        .map(|_| cursor.text())
        .collect::<Option<Vec<String>>>()?;
    let count = cursor.varint()?;
    let mut rows = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let mut text = || {
            let i = usize::try_from(cursor.varint()?).ok()?;
            strings.get(i).cloned()
        };
        let key = RowKey {
            node: NodeGroups {
                pool: text()?,
                cluster: text()?,
                class: text()?,
            },
            project: text()?,
            deployment: text()?,
        };
        let amounts = CostMicros {
            used: cursor.varint()?,
            idle: cursor.varint()?,
            unallocated: cursor.varint()?,
        };
        rows.push((key, amounts));
    }
    Some(Block {
        minute,
        minutes,
        rows,
    })
}

/// A file's complete blocks and the length they take; a torn or
/// undecodable tail ends the read.
fn read_blocks(path: &Path) -> io::Result<(Vec<Block>, u64)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut blocks = Vec::new();
    let mut at = 0usize;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let Some(block) = bytes.get(at + 4..at + 4 + len).and_then(decode_block) else {
            break;
        };
        blocks.push(block);
        at += 4 + len;
    }
    Ok((blocks, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(project: &str, used: u64) -> (RowKey, CostMicros) {
        let key = RowKey {
            node: NodeGroups {
                pool: "old".into(),
                cluster: "-".into(),
                class: "legacy-12c16g".into(),
            },
            project: project.into(),
            deployment: "web".into(),
        };
        let amounts = CostMicros {
            used,
            idle: 1,
            unallocated: 0,
        };
        (key, amounts)
    }

    #[test]
    fn minutes_are_recorded_once_summed_by_hour_and_read_by_window() {
        let dir = tempfile::tempdir().unwrap();
        let history = CostHistory::open(dir.path()).unwrap();
        for minute in 50..130 {
            assert!(
                history
                    .append(minute, &[row("shop", 10), row("bank", minute)])
                    .unwrap()
            );
        }
        assert!(!history.append(129, &[row("shop", 10)]).unwrap(), "once");
        assert!(!history.append(7, &[row("shop", 10)]).unwrap(), "in order");
        assert_eq!(history.last_minute().unwrap(), Some(129));
        assert!(dir.path().join("1.sum").exists(), "hour 1 is finished");
        let whole = history.read(60, 120).unwrap();
        assert_eq!(whole.minutes, 60);
        assert_eq!(whole.rows[&row("shop", 0).0].used, 600);
        assert_eq!(whole.rows[&row("bank", 0).0].used, (60..120).sum::<u64>());
        let ragged = history.read(55, 125).unwrap();
        assert_eq!(ragged.minutes, 70);
        assert_eq!(ragged.rows[&row("shop", 0).0].idle, 70);
    }

    #[test]
    fn a_torn_block_is_dropped_and_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let history = CostHistory::open(dir.path()).unwrap();
        history.append(0, &[row("shop", 5)]).unwrap();
        let path = dir.path().join("0.min");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        assert_eq!(history.last_minute().unwrap(), Some(0));
        history.append(1, &[row("shop", 7)]).unwrap();
        let window = history.read(0, 60).unwrap();
        assert_eq!(window.minutes, 2);
        assert_eq!(window.rows[&row("shop", 0).0].used, 12);
    }
}
