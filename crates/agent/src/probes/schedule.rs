//! When a container's probes run and what their results mean, as pure
//! state over the time since the container started (tests drive it with
//! made-up times).

use std::time::Duration;

use wharf_api::{Container, ProbeKind};

/// One probe's timing and its run of results.
#[derive(Clone, Debug)]
struct ProbeState {
    kind: ProbeKind,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    /// When it is next due (from the container's start).
    next_at: Duration,
    successes: u32,
    failures: u32,
    passing: bool,
}

/// What the probes of one container say now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeVerdict {
    /// The startup probe has passed (or there is none).
    pub started: bool,
    /// Started, and the readiness probe passes (or there is none).
    pub ready: bool,
    /// The probe whose failure asks for the container to be stopped.
    pub kill: Option<ProbeKind>,
}

/// The probes of one run of a container.
#[derive(Clone, Debug)]
pub struct ProbeSchedule {
    probes: Vec<ProbeState>,
    started: bool,
    kill: Option<ProbeKind>,
}

impl ProbeSchedule {
    /// The schedule of `container`'s probes, none run yet.
    pub fn new(container: &Container) -> ProbeSchedule {
        let probes: Vec<ProbeState> = container
            .probes()
            .map(|(kind, probe)| ProbeState {
                kind,
                period: probe.period(),
                success_threshold: probe.success_threshold(),
                failure_threshold: probe.failure_threshold(),
                next_at: probe.initial_delay(),
                successes: 0,
                failures: 0,
                // Kubernetes' initial results: a container is live until a
                // liveness probe fails, and neither started nor ready
                // until those probes pass.
                passing: kind == ProbeKind::Liveness,
            })
            .collect();
        let started = !probes.iter().any(|p| p.kind == ProbeKind::Startup);
        ProbeSchedule {
            probes,
            started,
            kill: None,
        }
    }

    /// Whether a probe of `kind` runs at this stage: the startup probe
    /// until it passes, the others only after; none once a kill is asked.
    fn active(&self, kind: ProbeKind) -> bool {
        self.kill.is_none() && (kind == ProbeKind::Startup) != self.started
    }

    /// The probes due at `now`.
    pub fn due(&self, now: Duration) -> Vec<ProbeKind> {
        self.probes
            .iter()
            .filter(|p| self.active(p.kind) && p.next_at <= now)
            .map(|p| p.kind)
            .collect()
    }

    /// When the next probe is due; `None` when none will run again.
    pub fn next_due(&self) -> Option<Duration> {
        self.probes
            .iter()
            .filter(|p| self.active(p.kind))
            .map(|p| p.next_at)
            .min()
    }

    /// Records the result of the `kind` probe that began at `began`.
    pub fn record(&mut self, kind: ProbeKind, passed: bool, began: Duration) {
        let Some(probe) = self.probes.iter_mut().find(|p| p.kind == kind) else {
            return;
        };
        probe.next_at = began + probe.period;
        if passed {
            probe.failures = 0;
            probe.successes = probe.successes.saturating_add(1);
            if probe.successes >= probe.success_threshold {
                probe.passing = true;
            }
        } else {
            probe.successes = 0;
            probe.failures = probe.failures.saturating_add(1);
            if probe.failures >= probe.failure_threshold {
                probe.passing = false;
            }
        }
        match (kind, probe.passing) {
            (ProbeKind::Startup, true) => self.started = true,
            (ProbeKind::Startup | ProbeKind::Liveness, false)
                if probe.failures >= probe.failure_threshold =>
            {
                self.kill = Some(kind)
            }
            _ => {}
        }
    }

    /// What the results so far say.
    pub fn verdict(&self) -> ProbeVerdict {
        let readiness = self
            .probes
            .iter()
            .find(|p| p.kind == ProbeKind::Readiness)
            .is_none_or(|p| p.passing);
        ProbeVerdict {
            started: self.started,
            ready: self.started && readiness && self.kill.is_none(),
            kill: self.kill,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::Probe;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn probe(period: u32, failures: u32, successes: u32, delay: u32) -> Option<Probe> {
        Some(Probe {
            exec: Some(wharf_api::ExecAction {
                command: vec!["true".into()],
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            success_threshold: Some(successes),
            initial_delay_seconds: Some(delay),
            ..Probe::default()
        })
    }

    #[test]
    fn no_probes_mean_started_and_ready() {
        let schedule = ProbeSchedule::new(&Container::default());
        assert_eq!(schedule.next_due(), None);
        assert_eq!(
            schedule.verdict(),
            ProbeVerdict {
                started: true,
                ready: true,
                kill: None
            }
        );
    }

    #[test]
    fn initial_delay_then_every_period() {
        let container = Container {
            liveness_probe: probe(2, 3, 1, 5),
            ..Container::default()
        };
        let mut schedule = ProbeSchedule::new(&container);
        assert!(schedule.due(secs(4)).is_empty());
        assert_eq!(schedule.next_due(), Some(secs(5)));
        assert_eq!(schedule.due(secs(5)), vec![ProbeKind::Liveness]);
        schedule.record(ProbeKind::Liveness, true, secs(5));
        assert!(schedule.due(secs(6)).is_empty());
        assert_eq!(schedule.next_due(), Some(secs(7)));
    }

    #[test]
    fn liveness_kills_after_consecutive_failures_only() {
        let container = Container {
            liveness_probe: probe(1, 3, 1, 0),
            ..Container::default()
        };
        let mut schedule = ProbeSchedule::new(&container);
        assert!(
            schedule.verdict().ready,
            "no readiness probe: ready once running"
        );
        for (t, passed) in [(0, false), (1, false), (2, true), (3, false), (4, false)] {
            schedule.record(ProbeKind::Liveness, passed, secs(t));
            assert_eq!(schedule.verdict().kill, None, "at {t}s");
        }
        schedule.record(ProbeKind::Liveness, false, secs(5));
        assert_eq!(schedule.verdict().kill, Some(ProbeKind::Liveness));
        assert!(!schedule.verdict().ready);
        assert_eq!(
            schedule.next_due(),
            None,
            "nothing runs once a kill is asked"
        );
    }

    #[test]
    fn readiness_needs_its_thresholds_both_ways() {
        let container = Container {
            readiness_probe: probe(1, 2, 2, 0),
            ..Container::default()
        };
        let mut schedule = ProbeSchedule::new(&container);
        assert!(!schedule.verdict().ready, "not ready before a pass");
        schedule.record(ProbeKind::Readiness, true, secs(0));
        assert!(!schedule.verdict().ready, "successThreshold 2");
        schedule.record(ProbeKind::Readiness, true, secs(1));
        assert!(schedule.verdict().ready);
        schedule.record(ProbeKind::Readiness, false, secs(2));
        assert!(schedule.verdict().ready, "failureThreshold 2");
        schedule.record(ProbeKind::Readiness, false, secs(3));
        assert!(!schedule.verdict().ready);
        assert_eq!(schedule.verdict().kill, None, "readiness never kills");
    }

    #[test]
    fn startup_gates_the_other_probes() {
        let container = Container {
            startup_probe: probe(1, 10, 1, 0),
            liveness_probe: probe(1, 1, 1, 0),
            readiness_probe: probe(1, 1, 1, 0),
            ..Container::default()
        };
        let mut schedule = ProbeSchedule::new(&container);
        assert_eq!(schedule.due(secs(0)), vec![ProbeKind::Startup]);
        schedule.record(ProbeKind::Startup, false, secs(0));
        assert_eq!(schedule.due(secs(1)), vec![ProbeKind::Startup]);
        assert!(!schedule.verdict().started);
        schedule.record(ProbeKind::Startup, true, secs(1));
        assert!(schedule.verdict().started);
        let mut due = schedule.due(secs(2));
        due.sort_by_key(|k| k.name());
        assert_eq!(due, vec![ProbeKind::Liveness, ProbeKind::Readiness]);
        assert!(!schedule.verdict().ready, "readiness has yet to pass");
    }

    #[test]
    fn a_startup_probe_that_never_passes_kills() {
        let container = Container {
            startup_probe: probe(1, 2, 1, 0),
            ..Container::default()
        };
        let mut schedule = ProbeSchedule::new(&container);
        schedule.record(ProbeKind::Startup, false, secs(0));
        schedule.record(ProbeKind::Startup, false, secs(1));
        assert_eq!(schedule.verdict().kill, Some(ProbeKind::Startup));
    }
}
