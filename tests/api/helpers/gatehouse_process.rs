//! gatehouse's own binary, serving a test app's configuration (same Redis, provider and
//! client) on ports of its own: for what only a process has (its log subscriber, trace
//! export, signals).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::processes::{free_port, serve_command, spawn_in_nursery};
use super::{config_dir, TestApp};

pub struct GatehouseProcess {
    pub port: u16,
    pub base: String,
    /// The admin listener's URL, when the configuration has one.
    pub admin_base: Option<String>,
    pub dir: PathBuf,
    stderr: PathBuf,
    child: Child,
    /// The configuration as written, ports filled in.
    pub config_toml: String,
}

/// `config` with the public listener (and the admin one, when there is one) on the given
/// ports instead of the in-process app's.
fn with_ports(config: &str, port: u16, admin_port: u16) -> String {
    config
        .replacen(
            "[server]\n",
            &format!("[server]\nbind = \"127.0.0.1:{port}\"\n"),
            1,
        )
        .replacen(
            "[admin]\nbind = \"127.0.0.1:0\"",
            &format!("[admin]\nbind = \"127.0.0.1:{admin_port}\""),
            1,
        )
}

impl GatehouseProcess {
    /// The binary on `app`'s configuration; returns once it answers `/healthz`.
    pub async fn start(app: &TestApp) -> Self {
        Self::start_with(&app.config_toml, &app.client_secret, &[]).await
    }

    /// The binary on `config` (a test app's, its ports replaced), with `env` besides the
    /// main provider's secret.
    pub async fn start_with(config: &str, client_secret: &str, env: &[(String, String)]) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let config_toml = with_ports(config, port, admin_port);
        let dir = config_dir(&config_toml);
        let (mut command, stderr) = serve_command(&dir, client_secret);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = spawn_in_nursery(command);
        let admin_base = config_toml
            .contains(&format!("127.0.0.1:{admin_port}"))
            .then(|| format!("http://127.0.0.1:{admin_port}"));
        let process = Self {
            port,
            base: format!("http://127.0.0.1:{port}"),
            admin_base,
            dir,
            stderr,
            child,
            config_toml,
        };
        process.wait_until_healthy().await;
        process
    }

    async fn wait_until_healthy(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("{}/healthz", self.base)).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse did not start: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("gatehouse.toml")
    }

    /// Replaces its configuration file (the ports it listens on kept as they are).
    pub fn write_config(&self, config: &str) {
        let admin_port = self
            .admin_base
            .as_deref()
            .and_then(|base| base.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or(0);
        std::fs::write(
            self.config_path(),
            with_ports(config, self.port, admin_port),
        )
        .expect("write config");
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits (up to 10 s) until its log has one more line containing `text` than `before`
    /// lines did; returns the log.
    pub async fn wait_for_log(&self, text: &str, before: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.lines().filter(|line| line.contains(text)).count() > before {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no new log line with {text:?}: {logs}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_count(&self, text: &str) -> usize {
        self.logs()
            .lines()
            .filter(|line| line.contains(text))
            .count()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for GatehouseProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
