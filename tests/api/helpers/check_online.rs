//! `gatehouse check-config --online` run as an operator would, against a provider.

use std::process::Command;

/// `check-config --online` against real providers: it reads their discovery documents and
/// keys (and redeems nothing), checks what the configuration needs, and says what to
/// register there.
pub fn check_online(issuer: &str, extra: &str) -> std::process::Output {
    let config = format!(
        "[server]\npublic_url = \"https://app.example.com\"\n\
         [providers.main]\nissuer = \"{issuer}\"\nclient_id = \"spa\"\n{extra}\n"
    );
    let dir = super::config_dir(&config);
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config", "--online", "--config", "gatehouse.toml"])
        .current_dir(&dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET",
            "not-sent-anywhere",
        )
        .output()
        .expect("run")
}
