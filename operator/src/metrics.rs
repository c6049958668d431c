//! The operator's Prometheus metrics: reconciles by outcome, their duration,
//! errors by reason, writes made.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub namespace: String,
    pub foodapp: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub namespace: String,
    pub foodapp: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreLabels {
    pub namespace: String,
    pub foodapp: String,
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    pub backup_last_success: Family<AppLabels, Gauge>,
    pub backup_duration: Family<AppLabels, Gauge<f64, AtomicU64>>,
    pub backup_size: Family<AppLabels, Gauge>,
    pub backup_failures: Family<FailureLabels, Counter>,
    /// CloudNativePG: 1 while the Cluster in use archives WAL, 0 when its
    /// `ContinuousArchiving` condition is False.
    pub wal_archiving: Family<AppLabels, Gauge>,
    /// CloudNativePG: the first point a recovery can reach.
    pub recovery_window_start: Family<AppLabels, Gauge>,
    pub restores: Family<RestoreLabels, Counter>,
    /// Write pause of the newest Beside restore's switch, per FoodApp.
    pub restore_write_pause: Family<AppLabels, Gauge<f64, AtomicU64>>,
    /// Orders the newest restore discarded (exported), per FoodApp.
    pub restore_discarded_orders: Family<AppLabels, Gauge>,
    pub reconciles: Family<Outcome, Counter>,
    pub reconcile_errors: Family<Reason, Counter>,
    pub reconcile_duration: Histogram,
    pub writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("foodapp");
        let backup_last_success = Family::<AppLabels, Gauge>::default();
        let backup_duration = Family::<AppLabels, Gauge<f64, AtomicU64>>::default();
        let backup_size = Family::<AppLabels, Gauge>::default();
        let backup_failures = Family::<FailureLabels, Counter>::default();
        let restores = Family::<RestoreLabels, Counter>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Completion time of the newest successful backup",
            backup_last_success.clone(),
        );
        registry.register(
            "backup_duration_seconds",
            "Duration of the newest successful backup",
            backup_duration.clone(),
        );
        registry.register(
            "backup_size_bytes",
            "Size of the newest successful backup",
            backup_size.clone(),
        );
        registry.register(
            "backup_failures",
            "Failed backups by reason",
            backup_failures.clone(),
        );
        let wal_archiving = Family::<AppLabels, Gauge>::default();
        let recovery_window_start = Family::<AppLabels, Gauge>::default();
        registry.register(
            "wal_archiving",
            "CloudNativePG: 1 while the Cluster in use archives WAL, 0 while archiving fails",
            wal_archiving.clone(),
        );
        registry.register(
            "recovery_window_start_timestamp_seconds",
            "CloudNativePG: the first recoverability point of the Cluster in use",
            recovery_window_start.clone(),
        );
        registry.register("restores", "Finished restores by outcome", restores.clone());
        let restore_write_pause = Family::<AppLabels, Gauge<f64, AtomicU64>>::default();
        let restore_discarded_orders = Family::<AppLabels, Gauge>::default();
        registry.register(
            "restore_write_pause_seconds",
            "How long writes paused in the switch of the newest Beside restore",
            restore_write_pause.clone(),
        );
        registry.register(
            "restore_discarded_orders",
            "Orders the newest restore discarded (exported next to the dump)",
            restore_discarded_orders.clone(),
        );
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
            backup_last_success,
            backup_duration,
            backup_size,
            backup_failures,
            wal_archiving,
            recovery_window_start,
            restores,
            restore_write_pause,
            restore_discarded_orders,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            writes,
        }
    }
}

impl Metrics {
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
