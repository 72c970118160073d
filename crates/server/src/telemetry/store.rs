//! The server's `Store`, counted: every operation by kind and outcome, with
//! its latency, for `wharf_store_*` in `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wharf_store::{
    KeyValue, LeaseId, ListOptions, ListPage, Revision, Store, StoreError, Txn, TxnResult,
    WatchStream,
};

use super::ServerMetrics;

/// A `Store` that reports each call to [`ServerMetrics`] and passes it on.
pub(crate) struct CountedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<ServerMetrics>,
}

impl CountedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<ServerMetrics>) -> CountedStore {
        CountedStore { inner, metrics }
    }

    async fn counted<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .store_operation(op, result.is_ok(), started.elapsed());
        result
    }
}

#[async_trait]
impl Store for CountedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.counted("get", self.inner.get(key)).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError> {
        self.counted("list", self.inner.list(prefix, options)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.counted("txn", self.inner.txn(txn)).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.counted("watch", self.inner.watch(prefix, from)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.counted("grant_lease", self.inner.grant_lease(ttl))
            .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.counted("keep_alive", self.inner.keep_alive(lease))
            .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.counted("revoke_lease", self.inner.revoke_lease(lease))
            .await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.counted("current_revision", self.inner.current_revision())
            .await
    }
}
