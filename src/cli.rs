//! The command line: `gatehouse [--config FILE] [serve | check-config | sessions … | keys jwks]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Settings};
use crate::live::Reloader;
use crate::observability::telemetry::{self, Telemetry};
use crate::observability::trace_export::TraceExport;
use crate::startup::{Application, ConfigSource};

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
    /// Make the running server re-read its configuration (SIGHUP to the process in
    /// `server.pid_file`). The configuration is checked here first.
    Reload,
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
        // A subject or provider session id may begin with `-` (base64url).
        #[arg(long, allow_hyphen_values = true)]
        sub: String,
        /// Provider name (default: the default provider).
        #[arg(long)]
        provider: Option<String>,
    },
    /// End every session of a user (--sub, e.g. a compromised account) or of one provider
    /// session (--sid).
    Revoke {
        #[arg(
            long,
            required_unless_present = "sid",
            conflicts_with = "sid",
            allow_hyphen_values = true
        )]
        sub: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
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

/// The settings with what they came from (for later reloads).
fn load_source(cli: &Cli) -> Result<(Settings, ConfigSource), config::ConfigErrors> {
    let file_text = cli
        .config
        .as_deref()
        .map(|path| {
            std::fs::read_to_string(path).map_err(|e| {
                config::ConfigErrors(vec![format!(
                    "cannot read config file {}: {e}",
                    path.display()
                )])
            })
        })
        .transpose()?;
    let (settings, tree) = config::load_with_tree(file_text.as_deref(), std::env::vars())?;
    Ok((settings, ConfigSource { tree, file_text }))
}

/// On every SIGHUP, the configuration file is read again and put in force when it can be
/// (`live::Reloader`). Must be called inside the runtime.
fn reload_on_sighup(reloader: Reloader, config_path: Option<PathBuf>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            reloader.reload_file(config_path.as_deref()).await;
        }
    });
    Ok(())
}

/// `server.pid_file`, removed when the server stops.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> Result<Self, String> {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write server.pid_file {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `gatehouse reload`: SIGHUP to the process named in `server.pid_file`.
fn signal_reload(settings: &Settings) -> ExitCode {
    let Some(path) = &settings.server.pid_file else {
        eprintln!(
            "gatehouse reload: no server.pid_file is configured, so the server cannot be found; \
             send it SIGHUP yourself (kill -HUP <pid>, systemctl reload gatehouse)"
        );
        return ExitCode::from(2);
    };
    let pid = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| text.trim().parse::<i32>().map_err(|e| e.to_string()))
    {
        Ok(pid) if pid > 1 => pid,
        Ok(pid) => {
            eprintln!(
                "gatehouse reload: {} holds no usable pid ({pid})",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!(
                "gatehouse reload: cannot read the pid in {}: {error} (is the server running?)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: kill only sends a signal to the process with that id.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        eprintln!(
            "gatehouse reload: cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "gatehouse reload: SIGHUP sent to process {pid}; its log says whether the \
         configuration was put in force"
    );
    ExitCode::SUCCESS
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
        Command::Reload => match load(&cli) {
            Ok(settings) => signal_reload(&settings),
            Err(errors) => {
                eprint!("{errors}");
                eprintln!("gatehouse reload: not signalled; the server keeps its configuration");
                ExitCode::from(2)
            }
        },
        Command::Serve => {
            let (settings, source) = match load_source(&cli) {
                Ok(loaded) => loaded,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let telemetry = match telemetry::init(&settings.log, &settings.telemetry) {
                Ok(telemetry) => telemetry,
                Err(error) => {
                    eprintln!("gatehouse: {error}");
                    return ExitCode::FAILURE;
                }
            };
            serve(settings, source, cli.config.clone(), telemetry)
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

fn serve(
    settings: Settings,
    source: ConfigSource,
    config_path: Option<PathBuf>,
    telemetry: Telemetry,
) -> ExitCode {
    let Telemetry {
        audit,
        trace_export,
    } = telemetry;
    let spans_dropped = trace_export.as_ref().map(TraceExport::dropped_spans);
    let result = actix_web::rt::System::new().block_on(async move {
        if let Some(audit) = &audit {
            audit
                .reopen_on_sighup()
                .map_err(|e| format!("cannot watch for SIGHUP: {e}"))?;
        }
        raise_descriptor_limit();
        let bind = settings.server.bind;
        let public_url = settings.server.public_url.clone();
        let pid_file = settings.server.pid_file.clone();
        let app = Application::build(settings, source, spans_dropped)
            .await
            .map_err(|e| e.to_string())?;
        reload_on_sighup(app.reloader(), config_path)
            .map_err(|e| format!("cannot watch for SIGHUP: {e}"))?;
        let _pid_file = pid_file
            .map(PidFile::write)
            .transpose()
            .map_err(|e| e.to_string())?;
        tracing::info!(%bind, port = app.port(), %public_url, "gatehouse listening");
        app.run_until_stopped().await.map_err(|e| e.to_string())
    });
    if let Some(export) = &trace_export {
        export.shutdown();
    }
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
