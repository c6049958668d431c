//! JSON logs and Prometheus metrics: request count and latency by route and
//! status, orders created, stock conflicts and the database pool.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::orders::model::OrderStatus;

/// How often the business gauges are read from the database.
pub const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing::subscriber::set_global_default(json_logs(filter, std::io::stderr))
        .expect("logging is set up once");
}

/// One JSON object per line; an event inside a request carries the
/// request's span (`method`, `path`, `request_id`) under `span`.
pub fn json_logs<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// The span every request runs in. Its level is ERROR so that it exists
/// whenever anything is logged at all (RUST_LOG=warn included): every log
/// line of a request carries its method, path and request id.
pub fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::error_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub transitions: Family<TransitionLabels, Counter>,
    pub auto_rejections: Counter,
    pub open_orders: Family<StatusLabels, Gauge>,
    pub refunds_pending: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub orders_created: Counter,
    pub stock_conflicts: Counter,
    pub pool_size: Gauge,
    pub pool_idle: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("foodapp");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        let orders_created = Counter::default();
        let stock_conflicts = Counter::default();
        let pool_size = Gauge::default();
        let pool_idle = Gauge::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let auto_rejections = Counter::default();
        let open_orders = Family::<StatusLabels, Gauge>::default();
        let refunds_pending = Gauge::default();
        registry.register(
            "order_transitions",
            "Order status changes by from and to",
            transitions.clone(),
        );
        registry.register(
            "order_auto_rejections",
            "Orders rejected for not being accepted in time",
            auto_rejections.clone(),
        );
        registry.register(
            "open_orders",
            "Orders not in a final state, by status",
            open_orders.clone(),
        );
        registry.register(
            "refunds_pending",
            "Refunds not completed yet",
            refunds_pending.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "orders_created",
            "Orders placed (retries not counted)",
            orders_created.clone(),
        );
        registry.register(
            "stock_conflicts",
            "Orders refused with insufficient_stock",
            stock_conflicts.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open database connections",
            pool_size.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections",
            pool_idle.clone(),
        );
        Arc::new(Metrics {
            registry,
            transitions,
            auto_rejections,
            open_orders,
            refunds_pending,
            requests,
            latency,
            orders_created,
            stock_conflicts,
            pool_size,
            pool_idle,
        })
    }

    pub fn transition(&self, from: &str, to: &str, n: u64) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.to_owned(),
                to: to.to_owned(),
            })
            .inc_by(n);
    }

    /// Reads the order and refund gauges from the database (shared by all
    /// replicas, so each reports the same figures). Runs in the background
    /// every `GAUGE_REFRESH`, never per scrape; the counts read partial
    /// indexes of open orders and pending refunds, not the whole tables.
    pub async fn refresh_gauges(&self, pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
        let open_states: Vec<String> = OrderStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .map(|s| s.as_str().to_owned())
            .collect();
        let open = sqlx::query!(
            r#"SELECT s AS "status!", (SELECT count(*) FROM orders WHERE status = s) AS "n!"
               FROM unnest($1::text[]) AS s"#,
            &open_states
        )
        .fetch_all(pool)
        .await?;
        for row in open {
            self.open_orders
                .get_or_create(&StatusLabels { status: row.status })
                .set(row.n);
        }
        let pending: i64 =
            sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM refunds WHERE status = 'pending'"#)
                .fetch_one(pool)
                .await?;
        self.refunds_pending.set(pending);
        Ok(())
    }

    /// Refreshes the gauges forever; a failed refresh keeps the last figures.
    pub async fn refresh_forever(self: Arc<Self>, pool: sqlx::PgPool) {
        let mut every = tokio::time::interval(GAUGE_REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.refresh_gauges(&pool).await {
                tracing::warn!(error = %e, "order gauges not refreshed");
            }
        }
    }

    pub fn encode(&self, pool: &sqlx::PgPool) -> String {
        self.pool_size.set(i64::from(pool.size()));
        self.pool_idle.set(pool.num_idle() as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records every routed request; runs after routing so the route template
/// (not the raw path with its ids) is the label.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    response
}
