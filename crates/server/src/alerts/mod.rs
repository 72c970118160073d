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

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use wharf_api::{AlertNotification, AlertReceiver};
use wharf_control::ControlError;

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

/// A notification and the receiver it goes to.
pub(crate) type Notification = (AlertReceiver, AlertNotification);

/// Runs `evaluate` every `interval` until dropped, delivering what each
/// run produces through `sender`; deliveries under way stop with it.
/// `what` names the evaluation in the warning logged when one fails.
pub(crate) async fn notify_every<F, Fut>(
    interval: Duration,
    sender: &delivery::Sender,
    what: &str,
    mut evaluate: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<Notification>, ControlError>>,
{
    let mut deliveries = JoinSet::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while deliveries.try_join_next().is_some() {}
        match evaluate().await {
            Ok(sends) => {
                for (receiver, body) in sends {
                    let sender = sender.clone();
                    deliveries.spawn(async move { sender.deliver(receiver, body).await });
                }
            }
            Err(err) => tracing::warn!(error = %err, "{what} failed"),
        }
    }
}
