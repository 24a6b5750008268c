//! Benchmark helper (used by `bench/run`, not by the tests): fills Redis with sessions
//! through gatehouse's own store code — `SessionManager` over `RedisStore`, so the keys,
//! indices, TTLs and sealed payloads are exactly what a login writes.
//!
//! Every session is a copy of a real one (the session a real login created, read with its
//! cookie like gatehouse reads it), with its own `sub` and provider `sid`, so token and
//! claim sizes are realistic and every copy gets its own index entries, as distinct users do.
//!
//! ```text
//! BENCH_TEMPLATE_COOKIE=<id>.<secret> \
//!   cargo run --release --example bench_sessions -- \
//!   --redis-url redis://127.0.0.1:6399/ --key-prefix gatehouse --count 10000
//! ```
//!
//! Prints one JSON line: how many sessions were created, how long it took, and the byte
//! sizes of the template's tokens (all of them, its routes' included, and those alone) and
//! plaintext payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use gatehouse::clock::{Clock, SystemClock};
use gatehouse::config::RedisSettings;
use gatehouse::session::redis::RedisStore;
use gatehouse::session::{IdlePolicy, SessionManager};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    redis_url: String,
    #[arg(long, default_value = "gatehouse")]
    key_prefix: String,
    /// How many sessions to add.
    #[arg(long)]
    count: usize,
    /// Inserts in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Labels the generated users, so several runs against one Redis never collide.
    #[arg(long, default_value = "bench")]
    label: String,
    /// Must match gatehouse's `session.idle_timeout_secs` (the key's TTL).
    #[arg(long, default_value_t = 1800)]
    idle_timeout_secs: u64,
    #[arg(long, default_value_t = 60)]
    touch_interval_secs: u64,
    /// Write each new session's cookie value here, one a line (for load spread over many
    /// sessions). The file holds live session secrets: keep it in a scratch directory.
    #[arg(long)]
    cookies_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let template_cookie = std::env::var("BENCH_TEMPLATE_COOKIE")
        .map_err(|_| "BENCH_TEMPLATE_COOKIE must hold a live session cookie value")?;

    let store = RedisStore::new(&RedisSettings {
        response_timeout: Duration::from_secs(5),
        ..RedisSettings::standalone(SecretString::from(args.redis_url.clone()), &args.key_prefix)
    })?;
    let manager = SessionManager::new(
        Arc::new(store),
        IdlePolicy {
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            touch_interval: Duration::from_secs(args.touch_interval_secs),
        },
    );

    let now = SystemClock.now_millis();
    let template = manager
        .load(&template_cookie, now)
        .await?
        .ok_or("the template cookie names no live session")?
        .data;
    let template = gatehouse::session::SessionData::clone(&template);
    // Every token the sealed session carries: its own and its routes' (resource and
    // exchanged tokens), so that "beyond the tokens" leaves out all of them.
    let token_bytes = template.token_bytes();
    let route_token_bytes = template.route_tokens.token_bytes();
    let plaintext_bytes = serde_json::to_vec(&template)?.len();

    let started = Instant::now();
    let manager = &manager;
    let template = &template;
    let label = args.label.as_str();
    let mut created = 0usize;
    let mut inserts = futures_util::stream::iter(0..args.count)
        .map(|i| async move {
            let mut data = template.clone();
            data.sub = format!("{label}-user-{i}");
            data.provider_sid = Some(format!("{label}-sid-{i}"));
            data.created_at = now;
            manager.create(&data, now).await
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut cookies = String::new();
    while let Some(result) = inserts.next().await {
        let handle = result?;
        if args.cookies_file.is_some() {
            cookies.push_str(handle.cookie_value().expose_secret());
            cookies.push('\n');
        }
        created += 1;
    }
    if let Some(path) = &args.cookies_file {
        std::fs::write(path, cookies)?;
    }
    let secs = started.elapsed().as_secs_f64();

    println!(
        "{}",
        serde_json::json!({
            "created": created,
            "secs": (secs * 1000.0).round() / 1000.0,
            "per_sec": (created as f64 / secs).round(),
            "token_bytes": token_bytes,
            "route_token_bytes": route_token_bytes,
            "plaintext_bytes": plaintext_bytes,
        })
    );
    Ok(())
}
