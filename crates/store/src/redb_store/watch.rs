//! Watch streams: history replayed from the log, then live events from the writer.
//!
//! A watch subscribes to the writer's broadcast before it reads anything, so
//! every revision newer than what it reads from the log is still in the
//! broadcast: no gap between replay and live. Revisions are delivered at most
//! once by remembering the next one expected. A watcher too slow for the
//! broadcast buffer is not dropped: it reads the missed revisions back from
//! the log, and fails only if they were compacted meanwhile.

use std::collections::VecDeque;
use std::sync::Weak;

use futures_util::StreamExt;
use futures_util::stream;
use redb::{Database, ReadableDatabase};
use tokio::sync::broadcast;

use super::backend;
use super::schema::{LOG, META, Meta, decode_event};
use super::writer::CommitBatch;
use crate::{Revision, StoreError, WatchEvent, WatchStream};

/// History entries read per log read, so a long replay neither holds one read
/// transaction open for long nor buffers the whole history.
const REPLAY_CHUNK: usize = 1024;

/// The state of one watch stream.
pub(super) struct WatchCursor {
    /// Weak, so an idle watch does not keep the database open after the store is dropped.
    db: Weak<Database>,
    prefix: String,
    /// The first revision not delivered yet.
    next_revision: Revision,
    live: broadcast::Receiver<CommitBatch>,
    /// Events read but not yet yielded.
    pending: VecDeque<WatchEvent>,
    /// The log holds revisions this watch still has to read.
    replaying: bool,
    finished: bool,
}

impl WatchCursor {
    /// A watch from `from` (never 0 here) on a subscription taken before `meta` was read.
    pub fn new(
        db: Weak<Database>,
        prefix: &str,
        from: Revision,
        meta: Meta,
        live: broadcast::Receiver<CommitBatch>,
    ) -> Self {
        Self {
            db,
            prefix: prefix.to_owned(),
            next_revision: from,
            live,
            pending: VecDeque::new(),
            replaying: from <= meta.revision,
            finished: false,
        }
    }

    /// The stream of events; it ends after an error or when the store is dropped.
    pub fn into_stream(self) -> WatchStream {
        stream::unfold(self, |mut cursor| async move {
            let item = cursor.next_event().await?;
            Some((item, cursor))
        })
        .boxed()
    }

    async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            let step = if self.replaying {
                self.replay_chunk()
            } else {
                self.receive_live().await;
                Ok(())
            };
            if let Err(error) = step {
                self.finished = true;
                return Some(Err(error));
            }
        }
    }

    /// Reads up to [`REPLAY_CHUNK`] history entries from `next_revision` on,
    /// always whole revisions; stops replaying when the log is exhausted.
    fn replay_chunk(&mut self) -> Result<(), StoreError> {
        let Some(db) = self.db.upgrade() else {
            self.finished = true;
            return Ok(());
        };
        let txn = db.begin_read().map_err(backend("begin read transaction"))?;
        let open = backend("open history");
        let meta = Meta::read(&txn.open_table(META).map_err(&open)?)?;
        if self.next_revision <= meta.compacted {
            return Err(StoreError::Compacted {
                requested: self.next_revision,
                oldest: meta.oldest_kept(),
            });
        }
        let log = txn.open_table(LOG).map_err(&open)?;
        let read = backend("read history");
        let mut last_revision = None;
        let entries = log.range((self.next_revision, 0u32)..).map_err(&read)?;
        for (read_count, entry) in entries.enumerate() {
            let (position, bytes) = entry.map_err(&read)?;
            let (revision, _) = position.value();
            if read_count >= REPLAY_CHUNK && last_revision != Some(revision) {
                self.next_revision = revision;
                return Ok(());
            }
            last_revision = Some(revision);
            let event = decode_event(revision, bytes.value())?;
            if event.kv.key.starts_with(&self.prefix) {
                self.pending.push_back(event);
            }
        }
        // A watch may start in the future, beyond what the log holds yet.
        self.next_revision = self.next_revision.max(meta.revision + 1);
        self.replaying = false;
        Ok(())
    }

    /// Waits for the next committed batch and keeps its new, matching events.
    async fn receive_live(&mut self) {
        match self.live.recv().await {
            Ok(batch) => {
                for committed in batch.iter() {
                    if committed.revision < self.next_revision {
                        continue;
                    }
                    let matching = committed
                        .events
                        .iter()
                        .filter(|event| event.kv.key.starts_with(&self.prefix));
                    self.pending.extend(matching.cloned());
                    self.next_revision = committed.revision + 1;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "watch fell behind; reading the history instead");
                self.replaying = true;
            }
            Err(broadcast::error::RecvError::Closed) => self.finished = true,
        }
    }
}
