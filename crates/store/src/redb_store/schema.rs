//! On-disk layout of the redb backend: table definitions and record encodings.
//!
//! Records use a small fixed little-endian layout rather than a serialization
//! crate: they are read on every compare and replayed by every watch, and the
//! layout is simple enough to check by eye.

use redb::{ReadableTable, Table, TableDefinition};

use super::backend;
use crate::{EventKind, KeyValue, LeaseId, Revision, StoreError, WatchEvent};

/// Live keys: key -> `[create_revision u64][mod_revision u64][lease u64, 0 = none][value]`.
pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Watch history, one entry per changed key, keyed by (revision, position in its txn):
/// `[kind u8][create_revision u64][lease u64][key length u32][key][value]`.
pub(super) const LOG: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("log");

/// The counters of [`Meta`], by name.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Granted leases: id -> TTL in milliseconds.
pub(super) const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");

/// Keys bound to each lease, so revoking a lease does not scan [`KV`].
pub(super) const LEASE_KEYS: TableDefinition<(u64, &str), ()> = TableDefinition::new("lease_keys");

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

/// The store-wide counters, committed in the same write transaction as the data they describe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Meta {
    /// Revision of the last commit that changed something.
    pub revision: Revision,
    /// Every revision up to and including this one is gone from [`LOG`].
    pub compacted: Revision,
    /// The last lease id handed out; ids are never reused.
    pub last_lease: LeaseId,
}

impl Meta {
    const REVISION: &'static str = "revision";
    const COMPACTED: &'static str = "compacted";
    const LAST_LEASE: &'static str = "last_lease";

    /// Reads the counters; absent ones (a new database) are zero.
    pub fn read(table: &impl ReadableTable<&'static str, u64>) -> Result<Self, StoreError> {
        let counter = |name: &str| -> Result<u64, StoreError> {
            let value = table.get(name).map_err(backend("read store metadata"))?;
            Ok(value.map_or(0, |guard| guard.value()))
        };
        Ok(Self {
            revision: counter(Self::REVISION)?,
            compacted: counter(Self::COMPACTED)?,
            last_lease: counter(Self::LAST_LEASE)?,
        })
    }

    /// Writes the counters.
    pub fn write(&self, table: &mut Table<'_, &'static str, u64>) -> Result<(), StoreError> {
        for (name, value) in [
            (Self::REVISION, self.revision),
            (Self::COMPACTED, self.compacted),
            (Self::LAST_LEASE, self.last_lease),
        ] {
            table
                .insert(name, value)
                .map_err(backend("write store metadata"))?;
        }
        Ok(())
    }

    /// The oldest revision a watch can still replay.
    pub fn oldest_kept(&self) -> Revision {
        self.compacted + 1
    }
}

/// Encodes a live key's record for [`KV`]; the key itself is the table key.
pub(super) fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes a [`KV`] record of `key`.
pub(super) fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let corrupt = || StoreError::Backend(format!("corrupt record for key {key:?}"));
    let mut reader = Reader(bytes);
    let create_revision = reader.u64().ok_or_else(corrupt)?;
    let mod_revision = reader.u64().ok_or_else(corrupt)?;
    let lease = reader.u64().ok_or_else(corrupt)?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: reader.rest().to_vec(),
        create_revision,
        mod_revision,
        lease: lease_from_raw(lease),
    })
}

/// Encodes a watch event for [`LOG`]; its revision is part of the table key.
pub(super) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let kv = &event.kv;
    let kind = match event.kind {
        EventKind::Put => KIND_PUT,
        EventKind::Delete => KIND_DELETE,
    };
    // Keys are validated to be far shorter than 4 GiB before they reach the writer.
    let key_len = u32::try_from(kv.key.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(21 + kv.key.len() + kv.value.len());
    out.push(kind);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(kv.key.as_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes a [`LOG`] entry committed at `revision`.
pub(super) fn decode_event(revision: Revision, bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let corrupt = || StoreError::Backend(format!("corrupt history entry at revision {revision}"));
    let mut reader = Reader(bytes);
    let kind = match reader.u8().ok_or_else(corrupt)? {
        KIND_PUT => EventKind::Put,
        KIND_DELETE => EventKind::Delete,
        _ => return Err(corrupt()),
    };
    let create_revision = reader.u64().ok_or_else(corrupt)?;
    let lease = reader.u64().ok_or_else(corrupt)?;
    let key_len = reader.u32().ok_or_else(corrupt)?;
    let key = reader
        .take(usize::try_from(key_len).map_err(|_| corrupt())?)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .ok_or_else(corrupt)?;
    Ok(WatchEvent {
        kind,
        kv: KeyValue {
            key: key.to_owned(),
            value: reader.rest().to_vec(),
            create_revision,
            mod_revision: revision,
            lease: lease_from_raw(lease),
        },
    })
}

/// Lease ids start at 1, so 0 stands for "no lease" on disk.
fn lease_from_raw(raw: u64) -> Option<LeaseId> {
    (raw != 0).then_some(raw)
}

/// Consumes a byte slice front to back; `None` when it is too short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(len)?;
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk::<N>()?;
        self.0 = tail;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: EventKind) -> WatchEvent {
        WatchEvent {
            kind,
            kv: KeyValue {
                key: "/nodes/a".into(),
                value: b"payload".to_vec(),
                create_revision: 3,
                mod_revision: 9,
                lease: Some(7),
            },
        }
    }

    #[test]
    fn records_round_trip() {
        let kv = sample(EventKind::Put).kv;
        assert_eq!(decode_record(&kv.key, &encode_record(&kv)).unwrap(), kv);
        let unleased = KeyValue { lease: None, ..kv };
        let bytes = encode_record(&unleased);
        assert_eq!(decode_record(&unleased.key, &bytes).unwrap(), unleased);
    }

    #[test]
    fn events_round_trip() {
        for kind in [EventKind::Put, EventKind::Delete] {
            let event = sample(kind);
            assert_eq!(decode_event(9, &encode_event(&event)).unwrap(), event);
        }
    }

    #[test]
    fn truncated_bytes_are_reported_not_panicked_on() {
        let event = encode_event(&sample(EventKind::Put));
        for len in 0..22 {
            assert!(matches!(
                decode_event(1, &event[..len]),
                Err(StoreError::Backend(_))
            ));
        }
        assert!(decode_record("k", &[0; 23]).is_err());
        let mut bad_kind = event.clone();
        bad_kind[0] = 9;
        assert!(decode_event(1, &bad_kind).is_err());
    }
}
