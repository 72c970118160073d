//! Mapping between Wharf keys and etcd keys under a namespace.

use wharf_store::{KeyValue, LeaseId, Revision, StoreError};

/// The byte prefix this store prepends to every key it sends to etcd.
///
/// The prefix is prepended verbatim, as etcd's own `--namespace` (gRPC proxy)
/// and clientv3 `namespace` package do; keys read back are stripped of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Namespace {
    prefix: String,
}

impl Namespace {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.prefix
    }

    /// The etcd key of `key`.
    pub fn key(&self, key: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + key.len());
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(key.as_bytes());
        out
    }

    /// The etcd range `[start, end)` of every key starting with `prefix`.
    pub fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        if start.is_empty() {
            // etcd refuses an empty key; "\0".."\0" is its spelling of "every key".
            (vec![0], vec![0])
        } else {
            let end = prefix_end(&start);
            (start, end)
        }
    }

    /// A key any read may name to learn the store's revision.
    pub fn probe_key(&self) -> Vec<u8> {
        if self.prefix.is_empty() {
            vec![0]
        } else {
            self.prefix.as_bytes().to_vec()
        }
    }

    /// The Wharf key of an etcd key read under this namespace.
    pub fn strip(&self, key: &[u8]) -> Result<String, StoreError> {
        let rest = key.strip_prefix(self.prefix.as_bytes()).ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd returned key {:?} outside namespace {:?}",
                String::from_utf8_lossy(key),
                self.as_str()
            ))
        })?;
        String::from_utf8(rest.to_vec()).map_err(|_| {
            StoreError::Backend(format!(
                "etcd key {:?} is not UTF-8",
                String::from_utf8_lossy(key)
            ))
        })
    }

    /// Converts a stored etcd key-value.
    pub fn key_value(&self, kv: etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        let create_revision = revision_from_etcd(kv.create_revision())?;
        let mod_revision = revision_from_etcd(kv.mod_revision())?;
        let lease = lease_from_etcd(kv.lease())?;
        let (key, value) = kv.into_key_value();
        Ok(KeyValue {
            key: self.strip(&key)?,
            value,
            create_revision,
            mod_revision,
            lease,
        })
    }
}

/// The smallest key greater than every key starting with `prefix`, or etcd's
/// "no end" (`"\0"`) when there is none (a prefix of only 0xff bytes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// An etcd revision as a Wharf one; etcd never sends negative revisions.
pub(crate) fn revision_from_etcd(revision: i64) -> Result<Revision, StoreError> {
    Revision::try_from(revision)
        .map_err(|_| StoreError::Backend(format!("etcd sent negative revision {revision}")))
}

/// A Wharf revision as an etcd one.
pub(crate) fn revision_to_etcd(revision: Revision) -> Result<i64, StoreError> {
    i64::try_from(revision).map_err(|_| {
        StoreError::Invalid(format!(
            "revision {revision} is beyond etcd's range (at most {})",
            i64::MAX
        ))
    })
}

/// etcd's lease field (0: none) as an optional Wharf lease.
pub(crate) fn lease_from_etcd(lease: i64) -> Result<Option<LeaseId>, StoreError> {
    match lease {
        0 => Ok(None),
        id => LeaseId::try_from(id)
            .map(Some)
            .map_err(|_| StoreError::Backend(format!("etcd sent negative lease id {id}"))),
    }
}

/// A Wharf lease id as an etcd one; ids etcd cannot have are unknown leases.
pub(crate) fn lease_to_etcd(lease: LeaseId) -> Result<i64, StoreError> {
    i64::try_from(lease).map_err(|_| StoreError::LeaseNotFound(lease))
}

/// Refuses keys etcd or the `Store` model cannot hold.
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid("empty key".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn ranges_stay_inside_the_namespace() {
        let ns = Namespace::new("/wharf");
        assert_eq!(ns.key("/a"), b"/wharf/a");
        assert_eq!(
            ns.prefix_range("/a/"),
            (b"/wharf/a/".to_vec(), b"/wharf/a0".to_vec())
        );
        assert_eq!(
            ns.prefix_range(""),
            (b"/wharf".to_vec(), b"/wharg".to_vec())
        );
        assert_eq!(ns.strip(b"/wharf/a").expect("strip"), "/a");
        assert!(ns.strip(b"/other/a").is_err());
        assert_eq!(ns.probe_key(), b"/wharf");
    }

    #[test]
    fn the_empty_namespace_ranges_over_all_keys() {
        let ns = Namespace::new("");
        assert_eq!(ns.prefix_range(""), (vec![0], vec![0]));
        assert_eq!(ns.prefix_range("a"), (b"a".to_vec(), b"b".to_vec()));
        assert_eq!(ns.probe_key(), vec![0]);
    }

    #[test]
    fn ids_beyond_etcd_range_are_refused() {
        assert!(matches!(
            revision_to_etcd(u64::MAX),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            lease_to_etcd(u64::MAX),
            Err(StoreError::LeaseNotFound(u64::MAX))
        ));
        assert_eq!(lease_from_etcd(0).expect("lease"), None);
        assert_eq!(lease_from_etcd(7).expect("lease"), Some(7));
        assert!(revision_from_etcd(-1).is_err());
    }
}
