//! Container probes: a [`Prober`] per running container that has probes,
//! a task of its own on a timer (the pod's sync step only reads its
//! latest [`ProbeVerdict`], so a slow check never holds the sync loop).
//!
//! ```text
//! start -> initialDelay -> startup probe every period until it passes (or kills)
//!       -> liveness + readiness every period: verdict {started, ready, kill}
//! ```

mod check;
mod schedule;

pub use check::Check;
pub use schedule::{ProbeSchedule, ProbeVerdict};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::watch;
use wharf_api::{Container, ProbeKind};

/// Told of each failed check: the probe and why (an `Unhealthy` event).
pub type FailureSink = Arc<dyn Fn(ProbeKind, String) + Send + Sync>;

/// A check ready to run with its timeout, or why it cannot be made (it
/// then fails every time, with that reason).
pub type PreparedCheck = (Result<Check, String>, Duration);

/// The probes of one run of a container, checked by a task that ends when
/// this is dropped.
pub struct Prober {
    verdict: watch::Receiver<ProbeVerdict>,
    task: tokio::task::JoinHandle<()>,
    run: u64,
}

impl Prober {
    /// Starts probing `container`'s run `run` (its start time, unix ms),
    /// which began at `since`, with `checks` for each of its probes.
    pub fn start(
        container: &Container,
        checks: HashMap<ProbeKind, PreparedCheck>,
        run: u64,
        since: Instant,
        failures: FailureSink,
    ) -> Prober {
        let schedule = ProbeSchedule::new(container);
        let (sender, verdict) = watch::channel(schedule.verdict());
        let task = tokio::spawn(probe_loop(schedule, checks, since, sender, failures));
        Prober { verdict, task, run }
    }

    /// What the probes say now.
    pub fn verdict(&self) -> ProbeVerdict {
        *self.verdict.borrow()
    }

    /// The run of the container it probes (its start time, unix ms).
    pub fn run(&self) -> u64 {
        self.run
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn probe_loop(
    mut schedule: ProbeSchedule,
    checks: HashMap<ProbeKind, PreparedCheck>,
    since: Instant,
    verdict: watch::Sender<ProbeVerdict>,
    failures: FailureSink,
) {
    while let Some(next) = schedule.next_due() {
        tokio::time::sleep_until((since + next).into()).await;
        let now = since.elapsed();
        let runs = schedule.due(now).into_iter().map(|kind| {
            let check = checks.get(&kind);
            async move {
                let result = match check {
                    Some((Ok(check), timeout)) => check.run(*timeout).await,
                    Some((Err(why), _)) => Err(why.clone()),
                    None => Err("no check".into()),
                };
                (kind, result)
            }
        });
        for (kind, result) in join_all(runs).await {
            if let Err(message) = &result {
                failures(kind, message.clone());
            }
            schedule.record(kind, result.is_ok(), now);
        }
        verdict.send_replace(schedule.verdict());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use wharf_api::Probe;

    #[tokio::test(start_paused = true)]
    async fn a_failing_liveness_check_asks_for_a_kill_and_reports_each_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let container = Container {
            liveness_probe: Some(Probe {
                tcp_socket: Some(wharf_api::TcpSocketAction {
                    port: wharf_api::ProbePort::Number(addr.port().into()),
                    host: None,
                }),
                period_seconds: Some(1),
                failure_threshold: Some(2),
                ..Probe::default()
            }),
            ..Container::default()
        };
        let check = Check::of(
            container.liveness_probe.as_ref().unwrap(),
            &container,
            addr.ip(),
            None,
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let prober = Prober::start(
            &container,
            [(ProbeKind::Liveness, (check, Duration::from_secs(1)))].into(),
            7,
            Instant::now(),
            Arc::new(move |kind, message| sink.lock().unwrap().push((kind, message))),
        );
        assert!(prober.verdict().ready && prober.verdict().kill.is_none());
        for _ in 0..50 {
            if prober.verdict().kill.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(prober.verdict().kill, Some(ProbeKind::Liveness));
        assert_eq!(prober.run(), 7);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].1.contains("dial tcp"), "{seen:?}");
    }
}
