//! The command line: `gatehouse [--config FILE] [serve | check-config | sessions … | keys jwks]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Settings};
use crate::observability::audit::AuditLog;
use crate::observability::telemetry;
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Backend-for-Frontend session server"
)]
pub struct Cli {
    /// TOML config file; environment variables GATEHOUSE_… override it.
    #[arg(long, short, env = "GATEHOUSE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration, print every problem, exit non-zero if there is one.
    CheckConfig {
        /// Also ask each provider (discovery and keys only; nothing is redeemed) whether it
        /// supports what the configuration needs, and print what to register there.
        #[arg(long)]
        online: bool,
    },
    /// Operator commands on the sessions in the configured Redis; they take effect on the
    /// next request at every instance.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// The client's own keys (private_key_jwt).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the public JWKS of every provider that uses private_key_jwt, to register there.
    Jwks,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a user's sessions.
    List {
        #[arg(long)]
        sub: String,
        /// Provider name (default: the default provider).
        #[arg(long)]
        provider: Option<String>,
    },
    /// End every session of a user (--sub, e.g. a compromised account) or of one provider
    /// session (--sid).
    Revoke {
        #[arg(long, required_unless_present = "sid", conflicts_with = "sid")]
        sub: Option<String>,
        #[arg(long)]
        sid: Option<String>,
        #[arg(long)]
        provider: Option<String>,
    },
    /// How many sessions the store holds.
    Count,
}

fn load(cli: &Cli) -> Result<Settings, config::ConfigErrors> {
    config::load_from_path(cli.config.as_deref(), std::env::vars())
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::CheckConfig { online } => match load(&cli) {
            Ok(settings) => {
                if let Some(policies) = &settings.policies {
                    match crate::policy::load_set(policies, &settings.routes) {
                        Ok(set) => println!(
                            "policy set is valid: {} polic(ies), digest {}",
                            set.sources.len(),
                            set.digest
                        ),
                        Err(problems) => {
                            eprintln!("{problems}");
                            return ExitCode::from(2);
                        }
                    }
                }
                println!(
                    "configuration is valid: {} provider(s), {} session store",
                    settings.providers.len(),
                    match settings.store {
                        config::StoreSettings::Memory => "in-memory",
                        config::StoreSettings::Redis(_) => "redis",
                    }
                );
                if *online {
                    check_online(&settings)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Sessions(command) => match load(&cli) {
            Ok(settings) => sessions(settings, command),
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Keys(KeysCommand::Jwks) => match load(&cli) {
            Ok(settings) => {
                let mut keys: Vec<serde_json::Value> = Vec::new();
                for key in settings
                    .providers
                    .values()
                    .filter_map(|p| p.client_key.as_ref())
                {
                    let jwk = key.public_jwk();
                    // Providers may share one key; list it once.
                    if !keys.contains(&jwk) {
                        keys.push(jwk);
                    }
                }
                if keys.is_empty() {
                    eprintln!("no provider uses client_auth_method = \"private_key_jwt\"");
                }
                println!("{}", serde_json::json!({ "keys": keys }));
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Serve => {
            let settings = match load(&cli) {
                Ok(settings) => settings,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let audit = match telemetry::init(&settings.log) {
                Ok(audit) => audit,
                Err(error) => {
                    eprintln!("gatehouse: cannot open log.audit_file: {error}");
                    return ExitCode::FAILURE;
                }
            };
            serve(settings, audit)
        }
    }
}

/// Every provider's report on stdout, every problem on stderr; exit 2 when there is one.
fn check_online(settings: &Settings) -> ExitCode {
    let reports = actix_web::rt::System::new().block_on(async {
        let mut reports = Vec::new();
        for (name, provider_settings) in &settings.providers {
            let check = match crate::oidc::Provider::new(provider_settings.clone()) {
                Ok(provider) => {
                    provider
                        .check_online(&crate::oidc::online_check::Expectations {
                            public_url: &settings.server.public_url,
                            routes: &settings.routes,
                            revocation_key: settings.session.revocation_key.is_some(),
                        })
                        .await
                }
                Err(error) => crate::oidc::online_check::ProviderCheck {
                    problems: vec![error.to_string()],
                    ..Default::default()
                },
            };
            reports.push((name.clone(), provider_settings.issuer.clone(), check));
        }
        reports
    });
    let mut failed = false;
    for (name, issuer, check) in reports {
        let verdict = if check.problems.is_empty() {
            "ok".to_owned()
        } else {
            format!("{} problem(s)", check.problems.len())
        };
        println!("\nprovider `{name}` ({issuer}): {verdict}");
        for line in &check.supports {
            println!("  {line}");
        }
        println!("  register at the provider:");
        for (what, value) in &check.register {
            println!("    {what:<26}{value}");
        }
        for warning in &check.warnings {
            eprintln!("provider `{name}`: warning: {warning}");
        }
        for problem in &check.problems {
            eprintln!("provider `{name}`: {problem}");
            failed = true;
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(settings: Settings, audit: Option<AuditLog>) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(async move {
        if let Some(audit) = &audit {
            audit
                .reopen_on_sighup()
                .map_err(|e| format!("cannot watch for SIGHUP: {e}"))?;
        }
        raise_descriptor_limit();
        let bind = settings.server.bind;
        let public_url = settings.server.public_url.clone();
        let app = Application::build(settings)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%bind, port = app.port(), %public_url, "gatehouse listening");
        app.run_until_stopped().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gatehouse stopped");
            eprintln!("gatehouse: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Every connection is a descriptor, and the usual soft limit (1024) is far below what a
/// server meets; the hard limit is what the operator allows. Raised as nginx's
/// `worker_rlimit_nofile` does, and logged either way.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the descriptor limit");
        return;
    }
    let soft = limit.rlim_cur;
    if soft < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(
                soft,
                hard = limit.rlim_max,
                error = %std::io::Error::last_os_error(),
                "cannot raise the descriptor limit"
            );
            return;
        }
    }
    tracing::info!(
        was = soft,
        soft = limit.rlim_max,
        hard = limit.rlim_max,
        "open descriptor limit"
    );
}

fn sessions(settings: Settings, command: &SessionsCommand) -> ExitCode {
    if matches!(settings.store, config::StoreSettings::Memory) {
        eprintln!("gatehouse sessions: no redis.url configured; in-memory sessions live inside the server process");
        return ExitCode::from(2);
    }
    let result: Result<String, String> = actix_web::rt::System::new().block_on(async move {
        let store = crate::startup::build_store(&settings, false).map_err(|e| e.to_string())?;
        let sessions = crate::startup::session_manager(&settings, store);
        let now = crate::clock::Clock::now_millis(&crate::clock::SystemClock);
        let provider_name = |provider: &Option<String>| -> Result<String, String> {
            let name = provider
                .clone()
                .unwrap_or_else(|| settings.default_provider.clone());
            if settings.providers.contains_key(&name) {
                Ok(name)
            } else {
                Err(format!("unknown provider `{name}`"))
            }
        };
        match command {
            SessionsCommand::Count => Ok(sessions
                .records()
                .count()
                .await
                .map_err(|e| e.to_string())?
                .to_string()),
            SessionsCommand::List { sub, provider } => {
                let provider = provider_name(provider)?;
                let keys = sessions
                    .records()
                    .keys_by_sub(&provider, sub, now)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut lines = vec![format!(
                    "{:<14} {:<10} {:<24} {:<25} {:<25} {:<25} {}",
                    "session", "provider", "sub", "created", "last seen", "ends by", "device"
                )];
                for key in keys {
                    if let Some(s) = sessions
                        .records()
                        .summary(&key)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        lines.push(format!(
                            "{:<14} {:<10} {:<24} {:<25} {:<25} {:<25} {}",
                            &s.key[..s.key.len().min(12)],
                            s.provider,
                            s.sub,
                            timestamp(s.created_at),
                            timestamp(s.last_seen_at),
                            timestamp(s.absolute_expires_at),
                            if s.device.is_empty() {
                                crate::session::device::UNKNOWN_DEVICE
                            } else {
                                &s.device
                            }
                        ));
                    }
                }
                Ok(lines.join("\n"))
            }
            SessionsCommand::Revoke { sub, sid, provider } => {
                let provider = provider_name(provider)?;
                let ended = match (sub, sid) {
                    (Some(sub), _) => sessions.delete_by_sub(&provider, sub, now).await,
                    (None, Some(sid)) => sessions.delete_by_provider_sid(&provider, sid, now).await,
                    (None, None) => Ok(0),
                }
                .map_err(|e| e.to_string())?;
                Ok(format!("revoked {ended} session(s)"))
            }
        }
    });
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gatehouse sessions: {error}");
            ExitCode::FAILURE
        }
    }
}

fn timestamp(millis: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
