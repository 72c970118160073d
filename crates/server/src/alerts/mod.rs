//! Alerting: the evaluator that runs on the leader (rules over this
//! server's metrics store, alerts moved through pending, firing and
//! resolved, silences applied), the cost budgets' alerts (`budgets`), and
//! the webhook deliveries they start.
//! Rules, silences and receivers are objects in the `Store`
//! (`wharf-control`); each rule's alerts and history are its status, so a
//! new leader continues where the old one stopped.

mod budgets;
mod delivery;
mod evaluator;
mod signature;
mod state;

use std::time::Duration;

pub(crate) use budgets::BudgetAlerts;
pub use delivery::{DELIVERY_HEADER, RetryPolicy};
pub(crate) use delivery::{Sender, read_log, remove_log, secret_name};
pub(crate) use evaluator::AlertEvaluator;
pub use signature::{SIGNATURE_HEADER, sign as webhook_signature};

/// How often rules are evaluated unless configured otherwise.
pub const DEFAULT_ALERT_EVAL_INTERVAL: Duration = Duration::from_secs(15);

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
