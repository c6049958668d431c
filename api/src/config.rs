//! Runtime configuration: every setting comes from a flag or its environment
//! variable, and `foodapp-api --help` documents each one.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, e.g. postgres://user:pass@host:5432/foodapp
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Maximum connections in the pool of this process.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Secret for signing access tokens (HS256). At least 32 bytes.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Lifetime of access tokens, e.g. 15m.
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens, e.g. 30d.
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,
    /// Email of the first administrator, created at start when no user has it.
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of that administrator (used only when creating it).
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Orders still `placed` after this long are rejected automatically, e.g. 5m.
    #[arg(long, env = "ORDER_AUTO_REJECT_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub order_auto_reject_after: Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// How long menu listings are served from memory; 0 turns the cache off.
    /// Catalog writes clear this replica's cache at once.
    #[arg(long, env = "MENU_CACHE_TTL", default_value = "1s", value_parser = parse_duration_or_zero)]
    pub menu_cache_ttl: Duration,
    /// Open (not yet delivered, rejected or cancelled) cash orders a customer
    /// may hold: they hold stock without any payment. 0: no limit.
    #[arg(long, env = "MAX_UNPAID_ORDERS", default_value_t = 3)]
    pub max_unpaid_orders: u32,
    /// Live order streams (`GET /orders/{id}/events`) one user may hold open
    /// on this replica; more get 429.
    #[arg(long, env = "LIVE_STREAMS_PER_USER", default_value_t = 10)]
    pub live_streams_per_user: usize,
    /// Live order streams this replica holds open in all; more get 429.
    #[arg(long, env = "LIVE_STREAMS_MAX", default_value_t = 2000)]
    pub live_streams_total: usize,
    /// Password hashes (argon2id, ~19 MiB each) computed at once; a login
    /// waits up to 2 s for a turn, then gets 503 with Retry-After. Default:
    /// the CPUs, at most 4.
    #[arg(long, env = "HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,
    /// Time allowed for in-flight requests to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}: expected a duration such as 30s, 5m, 1h or 7d"))?;
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(d)
}

pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        Ok(Duration::ZERO)
    } else {
        parse_duration(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_human_units() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("five minutes").is_err());
    }
}
