//! The operator's own metrics and probes, served by the probes crate's HTTP endpoint.

use std::sync::atomic::{AtomicBool, Ordering};

use probes::Endpoint;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct OperatorMetrics {
    registry: Registry,
    /// `result`: `success`, `error`.
    pub reconciliations: IntCounterVec,
    /// `reason`: a [`crate::failure::Failure`].
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    /// `kind`: ConfigMap, Deployment, Service.
    pub applies: IntCounterVec,
    /// Children applied again because someone changed them, by kind.
    pub drift_corrections: IntCounterVec,
    pub status_writes: IntCounter,
    /// Set once the controller runs (or stands by for the lease).
    pub started: AtomicBool,
}

impl OperatorMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, label: &str| {
            let metric = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let reconciliations = counter_vec(
            "socket_connector_operator_reconciliations_total",
            "Reconciliations, by result.",
            "result",
        );
        let reconcile_errors = counter_vec(
            "socket_connector_operator_reconcile_errors_total",
            "Failed reconciliations, by reason.",
            "reason",
        );
        let applies = counter_vec(
            "socket_connector_operator_applies_total",
            "Children server-side applied because they changed, by kind.",
            "kind",
        );
        let drift_corrections = counter_vec(
            "socket_connector_operator_drift_corrections_total",
            "Children applied again because their live object no longer held what the operator applied, by kind.",
            "kind",
        );
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "socket_connector_operator_reconcile_duration_seconds",
                "Time spent in one reconciliation.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(reconcile_duration.clone()))
            .expect("unique metric");
        let status_writes = IntCounter::new(
            "socket_connector_operator_status_writes_total",
            "Status updates written because the status changed.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(status_writes.clone()))
            .expect("unique metric");
        Self {
            registry,
            reconciliations,
            reconcile_errors: {
                for failure in crate::failure::Failure::ALL {
                    reconcile_errors.with_label_values(&[failure.reason()]);
                }
                reconcile_errors
            },
            reconcile_duration,
            applies,
            drift_corrections,
            status_writes,
            started: AtomicBool::new(false),
        }
    }
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Endpoint for OperatorMetrics {
    fn readiness(&self) -> Result<(), &'static str> {
        if self.started.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("starting")
        }
    }

    fn metrics(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
