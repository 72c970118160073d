//! Translating a Wharf [`Txn`] into an etcd transaction.

use std::collections::HashSet;

use etcd_client::{Compare as EtcdCompare, CompareOp, PutOptions, Txn as EtcdTxn, TxnOp};
use wharf_store::{Compare, LeaseId, Op, StoreError, Txn};

use crate::keys::{Namespace, lease_to_etcd, revision_to_etcd, validate_key};

/// What etcd's request limits allow; see [`crate::EtcdStoreOptions`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxnLimits {
    pub max_ops: usize,
    pub max_request_bytes: usize,
}

/// Protobuf framing per compare or op (tags, lengths, revision, lease): a
/// generous upper bound, so that requests we let through fit etcd's limit.
const OVERHEAD_PER_ITEM: usize = 32;

/// Refuses, before it reaches etcd, a transaction etcd would refuse with an
/// opaque error, or one the `Store` model forbids (empty keys, a key written twice).
pub(crate) fn validate(
    txn: &Txn,
    namespace: &Namespace,
    limits: TxnLimits,
) -> Result<(), StoreError> {
    // etcd checks each list against --max-txn-ops separately.
    for (what, count) in [("compares", txn.compares.len()), ("ops", txn.ops.len())] {
        if count > limits.max_ops {
            return Err(StoreError::Invalid(format!(
                "transaction has {count} {what}; etcd allows at most {} (--max-txn-ops)",
                limits.max_ops
            )));
        }
    }
    let namespace_len = namespace.as_str().len();
    let mut size = 0usize;
    for compare in &txn.compares {
        let (Compare::ModRevision { key, .. } | Compare::Exists { key }) = compare;
        validate_key(key)?;
        size += namespace_len + key.len() + OVERHEAD_PER_ITEM;
    }
    let mut written = HashSet::with_capacity(txn.ops.len());
    for op in &txn.ops {
        let (Op::Put { key, .. } | Op::Delete { key }) = op;
        validate_key(key)?;
        if !written.insert(key) {
            return Err(StoreError::Invalid(format!(
                "key {key:?} is written twice in one transaction"
            )));
        }
        size += namespace_len + key.len() + OVERHEAD_PER_ITEM;
        if let Op::Put { value, .. } = op {
            size += value.len();
        }
    }
    if size > limits.max_request_bytes {
        return Err(StoreError::Invalid(format!(
            "transaction of about {size} bytes exceeds etcd's request limit of {} bytes \
             (--max-request-bytes)",
            limits.max_request_bytes
        )));
    }
    Ok(())
}

/// The etcd transaction applying `txn` when its guards hold (and doing
/// nothing otherwise).
///
/// Guards: `ModRevision { revision: 0 }` becomes `mod_revision == 0`, which
/// etcd evaluates against a zero key-value for an absent key, so it holds
/// exactly when the key is absent (present keys always have a mod revision
/// of at least 2). `Exists` becomes `create_revision > 0`.
pub(crate) fn build(txn: Txn, namespace: &Namespace) -> Result<EtcdTxn, StoreError> {
    let compares = txn
        .compares
        .into_iter()
        .map(|compare| match compare {
            Compare::ModRevision { key, revision } => Ok(EtcdCompare::mod_revision(
                namespace.key(&key),
                CompareOp::Equal,
                revision_to_etcd(revision)?,
            )),
            Compare::Exists { key } => Ok(EtcdCompare::create_revision(
                namespace.key(&key),
                CompareOp::Greater,
                0,
            )),
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let ops = txn
        .ops
        .into_iter()
        .map(|op| match op {
            // A put without a lease unbinds the key, as the model asks.
            Op::Put { key, value, lease } => {
                let options = lease
                    .map(|lease| lease_to_etcd(lease).map(|id| PutOptions::new().with_lease(id)))
                    .transpose()?;
                Ok(TxnOp::put(namespace.key(&key), value, options))
            }
            Op::Delete { key } => Ok(TxnOp::delete(namespace.key(&key), None)),
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(EtcdTxn::new().when(compares).and_then(ops))
}

/// The distinct leases `txn` binds keys to, in first-use order.
pub(crate) fn leases(txn: &Txn) -> Vec<LeaseId> {
    let mut seen = Vec::new();
    for op in &txn.ops {
        if let Op::Put {
            lease: Some(lease), ..
        } = op
            && !seen.contains(lease)
        {
            seen.push(*lease);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TxnLimits = TxnLimits {
        max_ops: 128,
        max_request_bytes: 1024,
    };

    fn invalid(txn: &Txn) -> String {
        match validate(txn, &Namespace::new("/ns"), LIMITS) {
            Err(StoreError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn counts_compares_and_ops_separately() {
        let mut txn = Txn::new();
        for i in 0..128 {
            txn = txn
                .when_revision(format!("k{i}"), 0)
                .put(format!("k{i}"), Vec::new());
        }
        let roomy = TxnLimits {
            max_request_bytes: 1 << 20,
            ..LIMITS
        };
        assert!(validate(&txn, &Namespace::new(""), roomy).is_ok());
        let message = invalid(&txn.clone().delete("k128"));
        assert!(message.contains("129 ops"), "{message}");
        let message = invalid(&txn.when_exists("k0"));
        assert!(message.contains("129 compares"), "{message}");
    }

    #[test]
    fn refuses_oversized_requests_with_a_clear_message() {
        let message = invalid(&Txn::new().put("k", vec![0; 2048]));
        assert!(message.contains("--max-request-bytes"), "{message}");
    }

    #[test]
    fn refuses_empty_and_duplicate_keys() {
        invalid(&Txn::new().when_exists(""));
        invalid(&Txn::new().put("", Vec::new()));
        let message = invalid(&Txn::new().put("k", Vec::new()).delete("k"));
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn lists_each_lease_once() {
        let txn = Txn::new()
            .put_with_lease("a", Vec::new(), 7)
            .put("b", Vec::new())
            .put_with_lease("c", Vec::new(), 9)
            .put_with_lease("d", Vec::new(), 7);
        assert_eq!(leases(&txn), [7, 9]);
    }
}
