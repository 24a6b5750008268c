//! deploy/systemd/gatehouse.service: `systemd-analyze verify` accepts it, `systemd-analyze
//! security` rates its exposure "OK" or better, and the credentials it loads reach gatehouse
//! through configuration keys gatehouse reads.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::config_dir;
use crate::helpers::processes::repo_root;

const SHIPPED_EXEC_START: &str = "ExecStart=/usr/local/bin/gatehouse";

fn unit_path() -> PathBuf {
    repo_root().join("deploy/systemd/gatehouse.service")
}

fn unit_text() -> String {
    std::fs::read_to_string(unit_path()).expect("deploy/systemd/gatehouse.service")
}

/// `systemd-analyze`, or `None` (with the reason printed) where it is not installed.
fn systemd_analyze() -> Option<Command> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(output) if output.status.success() => Some(Command::new("systemd-analyze")),
        _ => {
            println!("SKIPPED: systemd-analyze is not installed here");
            None
        }
    }
}

/// The `Key=value` settings of the unit, in order (comments and sections left out).
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Some(mut analyze) = systemd_analyze() else {
        return;
    };
    // verify checks that ExecStart's binary exists: the copy names the one cargo built,
    // and differs from the shipped unit in nothing else.
    let text = unit_text();
    assert_eq!(text.matches(SHIPPED_EXEC_START).count(), 1, "one ExecStart");
    let ours = format!("ExecStart={}", env!("CARGO_BIN_EXE_gatehouse"));
    let dir = config_dir("");
    let copy = dir.join("gatehouse.service");
    std::fs::write(&copy, text.replace(SHIPPED_EXEC_START, &ours)).expect("write unit");
    let output = analyze.arg("verify").arg(&copy).output().expect("verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "verify failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "verify has something to say: {stderr}"
    );

    // A copy with a typo in a setting fails, so the check can fail.
    std::fs::write(
        &copy,
        text.replace(SHIPPED_EXEC_START, &ours)
            .replace("ProtectSystem=strict", "ProtectSystem=strictly"),
    )
    .expect("write unit");
    let broken = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("verify");
    assert!(
        !String::from_utf8_lossy(&broken.stderr).trim().is_empty(),
        "a bad ProtectSystem= passes unnoticed"
    );
}

#[test]
fn systemd_analyze_rates_the_units_exposure_ok_or_better() {
    let Some(mut analyze) = systemd_analyze() else {
        return;
    };
    let output = analyze
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path())
        .output()
        .expect("security");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let verdict = stdout
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall rating: {stdout}"));
    // "→ Overall exposure level for gatehouse.service: 1.2 OK 🙂"
    let rating = verdict.rsplit(':').next().expect("rating").trim();
    let mut words = rating.split_whitespace();
    let score: f64 = words
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {verdict}"));
    let level = words.next().unwrap_or_default();
    println!("systemd-analyze security: exposure {score} {level}");
    assert!(
        ["PERFECT", "SAFE", "OK"].contains(&level),
        "exposure {rating}: {stdout}"
    );
    assert!(score < 5.0, "{rating}");
}

#[test]
fn the_unit_is_sandboxed_and_hands_its_credentials_to_keys_gatehouse_reads() {
    let text = unit_text();
    let settings = settings(&text);
    let value = |key: &str| {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(value("DynamicUser"), ["yes"]);
    assert_eq!(value("ProtectSystem"), ["strict"]);
    assert_eq!(value("NoNewPrivileges"), ["yes"]);
    assert_eq!(value("CapabilityBoundingSet"), [""]);
    assert_eq!(value("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(value("KillSignal"), ["SIGTERM"]);

    // Every credential is named to gatehouse by an environment variable ending in _FILE
    // that points into the credentials directory; loading the configuration with exactly
    // those variables (and the files in place) succeeds, so each is a key gatehouse reads.
    let credentials: Vec<(&str, &str)> = value("LoadCredential")
        .into_iter()
        .map(|spec| spec.split_once(':').expect("name:path"))
        .collect();
    assert!(credentials.len() >= 3, "{credentials:?}");
    let dir = config_dir("");
    let token = gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    let contents = |name: &str| match name {
        "redis-url" => "redis://127.0.0.1:6379".to_owned(),
        "operators" => format!("oncall:{token}\n"),
        _ => token.clone(),
    };
    let mut env = Vec::new();
    for (key, value) in settings.iter().filter(|(k, _)| k == "Environment") {
        let (name, target) = value.split_once('=').expect("NAME=value");
        let credential = target
            .strip_prefix("%d/")
            .unwrap_or_else(|| panic!("{name} does not point into the credentials dir"));
        assert!(
            credentials.iter().any(|(c, _)| *c == credential),
            "{key}: {name} names `{credential}`, which no LoadCredential loads"
        );
        assert!(
            name.starts_with("GATEHOUSE_") && name.ends_with("_FILE"),
            "{name}"
        );
        std::fs::write(dir.join(credential), contents(credential)).expect("credential");
        env.push((name.to_owned(), dir.join(credential).display().to_string()));
    }
    for (credential, _) in &credentials {
        assert!(
            env.iter().any(|(_, path)| path.ends_with(credential)),
            "credential `{credential}` is loaded but never named to gatehouse"
        );
    }
    let config = "[server]\npublic_url = \"https://app.example.com\"\n\
                  [admin]\nbind = \"127.0.0.1:9091\"\n\
                  [providers.main]\nissuer = \"https://id.example.com\"\nclient_id = \"spa\"\n";
    let loaded = gatehouse::config::load(Some(config), env.clone())
        .unwrap_or_else(|e| panic!("the unit's variables do not load: {e}"));
    assert!(loaded.session.revocation_key.is_some());
    assert_eq!(loaded.admin.api_tokens.len(), 1);
    assert!(matches!(
        loaded.store,
        gatehouse::config::StoreSettings::Redis(_)
    ));
    // A misspelt variable would be refused, so the check above can fail.
    let mut misspelt = env;
    misspelt[0].0 = misspelt[0].0.replace("_FILE", "_FILES");
    assert!(gatehouse::config::load(Some(config), misspelt).is_err());
}
