//! Segment files: the downsampled history of one series for one UTC day at
//! one resolution, `<dir>/<1m|1h>/<day>/<series id>.seg`, where `<day>` is
//! the number of days since the epoch. A file is a run of fixed-size
//! records, appended and never rewritten:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0..8   | start, i64 little-endian, seconds since the epoch |
//! | 8..16  | min, f64 little-endian |
//! | 16..24 | max |
//! | 24..32 | sum |
//! | 32..40 | last |
//! | 40..44 | count, u32 little-endian |
//! | 44..48 | FNV-1a 32 of bytes 0..44 |
//!
//! A crash can leave a torn last record: a short or mis-summed record ends
//! the file for readers, and the next append first cuts the file back to
//! its last whole record, so nothing written before is ever lost or
//! misread.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::bucket::{Bucket, Resolution, merge_sorted};

/// Size of one record.
pub const RECORD_BYTES: usize = 48;

/// Seconds in a UTC day, the span of one segment file.
pub const DAY: i64 = 86_400;

/// The directory holding one resolution's day directories.
pub(crate) fn resolution_dir(root: &Path, resolution: Resolution) -> PathBuf {
    root.join(resolution.name())
}

/// The segment file of `series` for the day holding `time`.
pub(crate) fn path(root: &Path, resolution: Resolution, time: i64, series: u32) -> PathBuf {
    resolution_dir(root, resolution)
        .join(time.div_euclid(DAY).to_string())
        .join(format!("{series}.seg"))
}

fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn encode(bucket: &Bucket) -> [u8; RECORD_BYTES] {
    let mut record = [0u8; RECORD_BYTES];
    record[0..8].copy_from_slice(&bucket.start.to_le_bytes());
    record[8..16].copy_from_slice(&bucket.min.to_le_bytes());
    record[16..24].copy_from_slice(&bucket.max.to_le_bytes());
    record[24..32].copy_from_slice(&bucket.sum.to_le_bytes());
    record[32..40].copy_from_slice(&bucket.last.to_le_bytes());
    record[40..44].copy_from_slice(&bucket.count.to_le_bytes());
    let sum = checksum(&record[..44]);
    record[44..48].copy_from_slice(&sum.to_le_bytes());
    record
}

fn decode(record: &[u8]) -> Option<Bucket> {
    let word = |at: usize| -> [u8; 8] { record[at..at + 8].try_into().expect("8 bytes") };
    let stored = u32::from_le_bytes(record[44..48].try_into().ok()?);
    if stored != checksum(&record[..44]) {
        return None;
    }
    Some(Bucket {
        start: i64::from_le_bytes(word(0)),
        min: f64::from_le_bytes(word(8)),
        max: f64::from_le_bytes(word(16)),
        sum: f64::from_le_bytes(word(24)),
        last: f64::from_le_bytes(word(32)),
        count: u32::from_le_bytes(record[40..44].try_into().ok()?),
    })
}

/// Appends buckets to a segment file in one write, creating it (and its
/// day directory) when needed and first cutting off a torn tail.
pub(crate) fn append(path: &Path, buckets: &[Bucket]) -> io::Result<()> {
    let open = || OpenOptions::new().create(true).append(true).open(path);
    // The day directory exists for all but the first file of a day: try
    // the open first, a syscall saved per file on every flush.
    let mut file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            open()?
        }
        other => other?,
    };
    let len = file.metadata()?.len();
    let whole = len - len % RECORD_BYTES as u64;
    if whole != len {
        file.set_len(whole)?;
    }
    let mut bytes = Vec::with_capacity(buckets.len() * RECORD_BYTES);
    for bucket in buckets {
        bytes.extend_from_slice(&encode(bucket));
    }
    file.write_all(&bytes)
}

/// The buckets of a segment file, sorted and merged; a missing file has
/// none, and reading stops at the first torn or mis-summed record.
pub(crate) fn read(path: &Path) -> io::Result<Vec<Bucket>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let buckets = bytes.chunks_exact(RECORD_BYTES).map_while(decode).collect();
    Ok(merge_sorted(buckets))
}

/// Removes the day directories of `resolution` that end before `cutoff`.
pub(crate) fn remove_days_before(
    root: &Path,
    resolution: Resolution,
    cutoff: i64,
) -> io::Result<()> {
    let dir = resolution_dir(root, resolution);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let day: Option<i64> = entry.file_name().to_str().and_then(|n| n.parse().ok());
        if day.is_some_and(|day| (day + 1) * DAY <= cutoff) {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored_then_cut() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), Resolution::Minute, 120, 7);
        append(&file, &[Bucket::new(60, 1.0), Bucket::new(120, 2.0)]).unwrap();
        // A crash in the middle of the next record.
        let mut torn = fs::read(&file).unwrap();
        torn.extend_from_slice(&encode(&Bucket::new(180, 3.0))[..20]);
        fs::write(&file, &torn).unwrap();
        let read_back = read(&file).unwrap();
        assert_eq!(read_back, vec![Bucket::new(60, 1.0), Bucket::new(120, 2.0)]);
        // The next append starts on a record boundary.
        append(&file, &[Bucket::new(240, 4.0)]).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().len(), 3 * RECORD_BYTES as u64);
        assert_eq!(read(&file).unwrap().last().unwrap().start, 240);
    }

    #[test]
    fn a_corrupt_record_ends_the_file_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), Resolution::Hour, 0, 1);
        append(&file, &[Bucket::new(0, 1.0), Bucket::new(3600, 2.0)]).unwrap();
        let mut bytes = fs::read(&file).unwrap();
        bytes[RECORD_BYTES + 9] ^= 0xff;
        fs::write(&file, &bytes).unwrap();
        assert_eq!(read(&file).unwrap(), vec![Bucket::new(0, 1.0)]);
    }

    #[test]
    fn whole_days_before_the_cutoff_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for day in 0..3 {
            append(
                &path(dir.path(), Resolution::Minute, day * DAY, 1),
                &[Bucket::new(day * DAY, 1.0)],
            )
            .unwrap();
        }
        remove_days_before(dir.path(), Resolution::Minute, 2 * DAY + 10).unwrap();
        let left = |day: i64| path(dir.path(), Resolution::Minute, day * DAY, 1).exists();
        assert!(!left(0) && !left(1) && left(2));
    }
}
