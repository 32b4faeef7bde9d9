//! The operator's own metrics, registered in the process's one registry and
//! served on its admin port (`/metrics`). No object names as labels.

use prometheus::{Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    runs: IntCounter,
    errors: IntCounterVec,
    duration: Histogram,
    leader: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let runs = IntCounter::new("confab_operator_reconcile_runs_total", "Reconciliations of ChatClusters started")?;
        let errors = IntCounterVec::new(
            Opts::new("confab_operator_reconcile_errors_total", "Reconciliations that failed, by reason"),
            &["reason"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new("confab_operator_reconcile_duration_seconds", "Time one reconciliation takes")
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )?;
        let leader = IntGauge::new(
            "confab_operator_leader",
            "1 while this replica holds the leader Lease and reconciles, 0 while it waits",
        )?;
        // Every reason exported from the start, so rates and alerts see a 0.
        for reason in crate::Error::REASONS {
            errors.with_label_values(&[*reason]);
        }
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self { runs, errors, duration, leader })
    }

    /// Counts a run; the returned timer records its duration when dropped.
    pub fn reconcile_started(&self) -> HistogramTimer {
        self.runs.inc();
        self.duration.start_timer()
    }

    pub fn reconcile_failed(&self, reason: &str) {
        self.errors.with_label_values(&[reason]).inc();
    }

    /// Whether this replica leads (see [`crate::leader`]).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_errors_and_durations_are_exported_under_their_names() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        drop(m.reconcile_started());
        m.reconcile_failed("api");
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        for n in [
            "confab_operator_reconcile_runs_total",
            "confab_operator_reconcile_errors_total",
            "confab_operator_reconcile_duration_seconds",
            "confab_operator_leader",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert_eq!(m.runs.get(), 1);
        assert_eq!(m.duration.get_sample_count(), 1);
        assert_eq!(m.errors.with_label_values(&["api"]).get(), 1);
        let text = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(text.contains("confab_operator_reconcile_errors_total{reason=\"client\"} 0"), "{text}");
    }
}
