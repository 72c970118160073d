//! Watches: one etcd watch per [`wharf_store::WatchStream`], kept alive across connection
//! loss and slow consumers by re-creating it from the next revision.
//!
//! A pump task reads the etcd watch and forwards events into a bounded
//! channel the caller's stream reads. Two things make it re-create the etcd
//! watch from `next` (the revision after the last one fully forwarded):
//!
//! - the watch breaks (etcd restarted, connection lost, leader lost): it
//!   retries with backoff until etcd answers again;
//! - the caller falls `watch_buffer` events behind: the pump cancels the etcd
//!   watch at once, so that unread events do not sit in HTTP/2 flow-control
//!   windows shared with every other request on the connection, finishes
//!   handing over the response it holds, and re-creates the watch once there
//!   is room. etcd replays the missed revisions from its history.
//!
//! An etcd watch that replays history is created at `next - 1`, and events
//! below `next` are dropped. That one revision of slack makes etcd refuse
//! exactly the starts the model calls compacted: etcd accepts a watch from
//! its compaction revision `c` itself although a deletion at `c` is already
//! gone, while the model promises complete history from the `oldest` it
//! reports, `c + 1`.

use std::time::Duration;

use etcd_client::{EventType, WatchClient, WatchOptions, WatchResponse};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use wharf_store::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

use crate::error::{is_transient, rpc_error};
use crate::keys::{Namespace, revision_from_etcd, revision_to_etcd};

/// First and longest wait between attempts to re-create a broken watch.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What a watch covers, in etcd keys.
#[derive(Clone, Debug)]
pub(crate) struct WatchTarget {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub namespace: Namespace,
}

/// How a watch pump talks to etcd.
#[derive(Clone)]
pub(crate) struct WatchConfig {
    pub client: WatchClient,
    pub request_timeout: Duration,
    pub buffer: usize,
}

/// Why creating or following an etcd watch stopped.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying: etcd unreachable, restarting or without leader.
    Transient(String),
    /// Final; handed to the caller, which ends the stream.
    Fatal(StoreError),
}

/// A created etcd watch, or etcd's refusal because history is compacted.
pub(crate) enum Opened {
    /// Boxed: a stream is large, and moves between tasks and states.
    Watching(Box<etcd_client::WatchStream>),
    /// etcd's compaction revision: history up to it is (partly) gone.
    Compacted(Revision),
}

/// Where a new etcd watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Replay etcd's history from this revision on, started one revision
    /// early (see the module docs).
    History(Revision),
    /// Follow commits from this revision, which is past etcd's current one:
    /// nothing to replay, so no compaction to detect, and etcd counts the
    /// watch as caught up at once instead of syncing it within 100 ms.
    Live(Revision),
}

impl WatchStart {
    /// The `start_revision` to ask etcd for.
    pub fn etcd_revision(self) -> Result<i64, StoreError> {
        match self {
            // etcd's first revision (1) holds no events, so starting there loses nothing.
            Self::History(next) => revision_to_etcd(next.saturating_sub(1).max(1)),
            Self::Live(next) => revision_to_etcd(next),
        }
    }
}

/// Creates an etcd watch serving revisions from `start` and waits until etcd confirms it.
pub(crate) async fn open(
    config: &WatchConfig,
    target: &WatchTarget,
    start: WatchStart,
) -> Result<Opened, Failure> {
    let options = WatchOptions::new()
        .with_range(target.range_end.clone())
        .with_start_revision(start.etcd_revision().map_err(Failure::Fatal)?);
    let mut client = config.client.clone();
    let handshake = async {
        let mut stream = client
            .watch(target.key.clone(), Some(options))
            .await
            .map_err(|error| classify("create watch", error))?;
        let first = stream
            .message()
            .await
            .map_err(|error| classify("create watch", error))?
            .ok_or_else(|| Failure::Transient("watch stream closed before creation".into()))?;
        if let Some(compact) = compacted(&first)? {
            return Ok(Opened::Compacted(compact));
        }
        if first.canceled() {
            return Err(canceled(&first));
        }
        if !first.created() {
            return Err(Failure::Fatal(StoreError::Backend(
                "etcd answered a watch creation with something else".into(),
            )));
        }
        Ok(Opened::Watching(Box::new(stream)))
    };
    tokio::time::timeout(config.request_timeout, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Transient(format!(
                "watch creation timed out after {:?}",
                config.request_timeout
            )))
        })
}

/// Reads a just-created watch until etcd cancels it for compaction, and
/// returns the compaction revision; for a watch whose start is known compacted.
pub(crate) async fn await_compaction(
    mut stream: Box<etcd_client::WatchStream>,
    timeout: Duration,
) -> Option<Revision> {
    let wait = async {
        // etcd checks unsynced watchers against the compaction revision every
        // 100 ms, so the cancellation follows the creation closely.
        while let Ok(Some(response)) = stream.message().await {
            if let Ok(Some(compact)) = compacted(&response) {
                return Some(compact);
            }
            if response.canceled() {
                return None;
            }
        }
        None
    };
    tokio::time::timeout(timeout, wait).await.ok().flatten()
}

/// Starts the pump following `stream` from `next` and returns the caller's stream.
pub(crate) fn spawn(
    config: WatchConfig,
    target: WatchTarget,
    next: Revision,
    stream: Box<etcd_client::WatchStream>,
) -> wharf_store::WatchStream {
    let (events, receiver) = mpsc::channel(config.buffer.max(1));
    let pump = Pump {
        config,
        target,
        next,
        events,
    };
    tokio::spawn(pump.run(stream));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

type Item = Result<WatchEvent, StoreError>;

/// How following one etcd watch ended.
enum Outcome {
    /// The caller dropped its stream.
    ConsumerGone,
    /// The caller fell behind and the etcd watch was cancelled.
    Lagged,
    /// The etcd watch broke and may be re-created.
    Broken(String),
    /// The stream must end with this error.
    Failed(StoreError),
}

struct Pump {
    config: WatchConfig,
    target: WatchTarget,
    /// The first revision not yet forwarded in full.
    next: Revision,
    events: mpsc::Sender<Item>,
}

impl Pump {
    async fn run(mut self, mut stream: Box<etcd_client::WatchStream>) {
        loop {
            match self.forward(stream).await {
                Outcome::ConsumerGone => return,
                Outcome::Lagged => {
                    // Re-create only once the caller has read half the buffer,
                    // or the new watch would lag again at its first events.
                    let room = self.events.max_capacity().div_ceil(2);
                    if self.events.reserve_many(room).await.is_err() {
                        return;
                    }
                }
                Outcome::Broken(reason) => {
                    tracing::warn!(next = self.next, %reason, "etcd watch broke, re-creating it");
                }
                Outcome::Failed(error) => return self.fail(error).await,
            }
            stream = match self.reopen().await {
                Some(stream) => stream,
                None => return,
            };
        }
    }

    /// Hands `error` to the caller, whose stream then ends.
    async fn fail(self, error: StoreError) {
        // Nothing to do if the caller is gone already.
        let _ = self.events.send(Err(error)).await;
    }

    /// Re-creates the etcd watch from `next`, retrying transient failures
    /// until it succeeds; `None` when the stream is over.
    async fn reopen(&mut self) -> Option<Box<etcd_client::WatchStream>> {
        let (mut delay, longest) = RETRY_BACKOFF;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = self.events.closed() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(longest);
            }
            first = false;
            let attempt = tokio::select! {
                () = self.events.closed() => return None,
                attempt = open(&self.config, &self.target, WatchStart::History(self.next)) => attempt,
            };
            match attempt {
                Ok(Opened::Watching(stream)) => return Some(stream),
                Ok(Opened::Compacted(compact)) => {
                    let error = self.compacted_error(compact);
                    self.events.send(Err(error)).await.ok()?;
                    return None;
                }
                Err(Failure::Transient(reason)) => {
                    tracing::debug!(next = self.next, %reason, ?delay, "etcd watch not re-created yet");
                }
                Err(Failure::Fatal(error)) => {
                    self.events.send(Err(error)).await.ok()?;
                    return None;
                }
            }
        }
    }

    fn compacted_error(&self, compact: Revision) -> StoreError {
        StoreError::Compacted {
            requested: self.next,
            oldest: compact + 1,
        }
    }

    /// Forwards the events of one etcd watch until it ends or the caller lags.
    async fn forward(&mut self, stream: Box<etcd_client::WatchStream>) -> Outcome {
        let mut stream = Some(stream);
        while let Some(active) = stream.as_mut() {
            let message = tokio::select! {
                biased;
                () = self.events.closed() => return Outcome::ConsumerGone,
                message = active.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Outcome::Broken("etcd closed the watch stream".into()),
                Err(error) => {
                    return match classify("watch", error) {
                        Failure::Transient(reason) => Outcome::Broken(reason),
                        Failure::Fatal(error) => Outcome::Failed(error),
                    };
                }
            };
            match compacted(&response) {
                Ok(Some(compact)) => return Outcome::Failed(self.compacted_error(compact)),
                Ok(None) => {}
                Err(Failure::Transient(reason)) => return Outcome::Broken(reason),
                Err(Failure::Fatal(error)) => return Outcome::Failed(error),
            }
            if response.canceled() {
                return match canceled(&response) {
                    Failure::Transient(reason) => Outcome::Broken(reason),
                    Failure::Fatal(error) => Outcome::Failed(error),
                };
            }
            let mut last = None;
            for event in response.events() {
                let event = match self.convert(event) {
                    Ok(Some(event)) => event,
                    Ok(None) => continue,
                    Err(error) => return Outcome::Failed(error),
                };
                last = Some(event.kv.mod_revision);
                if stream.is_some() {
                    match self.events.try_send(Ok(event)) {
                        Ok(()) => continue,
                        Err(TrySendError::Closed(_)) => return Outcome::ConsumerGone,
                        Err(TrySendError::Full(item)) => {
                            // Cancel the etcd watch now (see the module docs);
                            // this response is still handed over in full, so
                            // `next` stays on a revision boundary.
                            stream = None;
                            if self.events.send(item).await.is_err() {
                                return Outcome::ConsumerGone;
                            }
                        }
                    }
                } else if self.events.send(Ok(event)).await.is_err() {
                    return Outcome::ConsumerGone;
                }
            }
            // etcd never splits one revision's events over two responses.
            if let Some(last) = last {
                self.next = last + 1;
            }
        }
        Outcome::Lagged
    }

    /// The Wharf event of an etcd event; `None` for revisions already forwarded.
    fn convert(&self, event: &etcd_client::Event) -> Result<Option<WatchEvent>, StoreError> {
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::Backend("etcd sent a watch event without key".into()))?;
        let mod_revision = revision_from_etcd(kv.mod_revision())?;
        if mod_revision < self.next {
            return Ok(None);
        }
        let namespace = &self.target.namespace;
        let event = match event.event_type() {
            EventType::Put => WatchEvent {
                kind: EventKind::Put,
                kv: namespace.key_value(kv.clone())?,
            },
            EventType::Delete => WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: namespace.strip(kv.key())?,
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision,
                    lease: None,
                },
            },
        };
        Ok(Some(event))
    }
}

/// etcd's compaction revision when `response` reports that the watch start was compacted.
fn compacted(response: &WatchResponse) -> Result<Option<Revision>, Failure> {
    match response.compact_revision() {
        0 => Ok(None),
        compact => revision_from_etcd(compact)
            .map(Some)
            .map_err(Failure::Fatal),
    }
}

/// Why etcd cancelled a watch other than for compaction.
fn canceled(response: &WatchResponse) -> Failure {
    let reason = response.cancel_reason();
    // With `require_leader`, a member that loses its leader cancels watches
    // with "no leader"; another member (or this one, later) can serve again.
    if reason.contains("leader") {
        Failure::Transient(format!("etcd cancelled the watch: {reason}"))
    } else {
        Failure::Fatal(StoreError::Backend(format!(
            "etcd cancelled the watch: {reason}"
        )))
    }
}

fn classify(context: &str, error: etcd_client::Error) -> Failure {
    if is_transient(&error) {
        Failure::Transient(format!("{context}: {error}"))
    } else {
        Failure::Fatal(rpc_error(context, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_watches_start_one_revision_early() {
        let etcd = |start: WatchStart| start.etcd_revision().expect("start");
        assert_eq!(etcd(WatchStart::History(10)), 9);
        assert_eq!(etcd(WatchStart::History(2)), 1);
        assert_eq!(etcd(WatchStart::History(1)), 1);
        assert_eq!(etcd(WatchStart::Live(10)), 10);
        assert!(WatchStart::History(u64::MAX).etcd_revision().is_err());
    }
}
