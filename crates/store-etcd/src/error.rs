//! Mapping etcd client errors to [`StoreError`].

use etcd_client::Error;
use wharf_store::StoreError;

/// gRPC status codes this crate tells apart (the numbers are the gRPC wire
/// standard). Compared via `status.code() as i32` so the crate needs no
/// direct `tonic` dependency of its own.
mod code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// The gRPC status code and message of `error`, when etcd answered with one.
fn status(error: &Error) -> Option<(i32, &str)> {
    match error {
        Error::GRpcStatus(status) => Some((status.code() as i32, status.message())),
        _ => None,
    }
}

/// Maps an etcd error met while doing `context`.
///
/// etcd answers `InvalidArgument` for requests that break its rules or limits
/// (too many operations, request too large, duplicate keys): those are the
/// caller's [`StoreError::Invalid`]. Everything else is a backend failure.
pub(crate) fn rpc_error(context: &str, error: Error) -> StoreError {
    match status(&error) {
        Some((code::INVALID_ARGUMENT, message)) => {
            StoreError::Invalid(format!("{context}: {message}"))
        }
        Some((_, message)) => StoreError::Backend(format!("{context}: {message}")),
        None => StoreError::Backend(format!("{context}: {error}")),
    }
}

/// etcd's "requested lease not found".
pub(crate) fn is_lease_not_found(error: &Error) -> bool {
    matches!(status(error), Some((code::NOT_FOUND, message)) if message.contains("lease not found"))
}

/// etcd's "mvcc: required revision has been compacted".
pub(crate) fn is_compacted(error: &Error) -> bool {
    matches!(status(error), Some((code::OUT_OF_RANGE, message)) if message.contains("compacted"))
}

/// etcd's "mvcc: required revision is a future revision".
pub(crate) fn is_future_revision(error: &Error) -> bool {
    matches!(status(error), Some((code::OUT_OF_RANGE, message)) if message.contains("future revision"))
}

/// Whether retrying may succeed: connection loss, restarts, leader changes,
/// overload. Refusals (bad arguments, permissions, limits) are final.
pub(crate) fn is_transient(error: &Error) -> bool {
    match error {
        Error::GRpcStatus(status) => matches!(
            status.code() as i32,
            code::CANCELLED
                | code::UNKNOWN
                | code::DEADLINE_EXCEEDED
                | code::RESOURCE_EXHAUSTED
                | code::ABORTED
                | code::INTERNAL
                | code::UNAVAILABLE
        ),
        Error::TransportError(_) | Error::IoError(_) | Error::WatchError(_) => true,
        _ => false,
    }
}
