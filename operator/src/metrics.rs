//! The operator's Prometheus metrics: reconciles by outcome, their duration,
//! errors by reason, writes made.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub kind: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub kind: String,
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<Outcome, Counter>,
    pub reconcile_errors: Family<Reason, Counter>,
    pub reconcile_duration: Histogram,
    pub writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("foodapp_operator");
        let reconciles = Family::<Outcome, Counter>::default();
        let reconcile_errors = Family::<Reason, Counter>::default();
        let reconcile_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let writes = Counter::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of FoodApp reconciles",
            reconcile_duration.clone(),
        );
        registry.register(
            "writes",
            "Objects created, changed or deleted",
            writes.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            writes,
        }
    }
}

impl Metrics {
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn outcome(&self, kind: &str, result: &str) {
        self.reconciles
            .get_or_create(&Outcome {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn error(&self, kind: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&Reason {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}
