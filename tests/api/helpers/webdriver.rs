//! A real browser for end-to-end tests: Debian's headless Chromium driven through
//! chromedriver (WebDriver) with fantoccini, on a fresh profile.
//!
//! Every page the browser opens gets a recorder (injected through the DevTools protocol, so
//! the page's Content-Security-Policy does not stop it) that keeps each `fetch`/XHR
//! response the page received — URL, status, headers, body — in `window.__gatehouseTestSeen`,
//! for tests that must show what a page could see. A failing test saves a screenshot, the
//! page source and the browser's console log under `target/test-artifacts/`.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{json, Value};

use super::processes::{artifacts_dir, free_port, spawn_in_nursery};
use super::random_name;

/// The browsers that can drive the tests, by the names their packages install, first found
/// first used; and their driver.
const BROWSERS: &[&str] = &["chromium", "chromium-browser", "google-chrome"];
const DRIVERS: &[&str] = &["chromedriver"];

/// The first of `names` found as an executable file on `PATH`.
fn on_path(what: &str, names: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {what} on PATH (looked for {}): run the README's test command \
                 (scripts/test installs chromium and chromium-driver)",
                names.join(", ")
            )
        })
}

/// Runs before any script of every document: wraps `fetch` and `XMLHttpRequest`.
const RECORDER: &str = r#"
(() => {
  const seen = [];
  Object.defineProperty(window, '__gatehouseTestSeen', { value: seen });
  const headerText = (headers) => [...headers].map(([k, v]) => k + ': ' + v).join('\n');
  const originalFetch = window.fetch;
  window.fetch = async function (...args) {
    const response = await originalFetch.apply(this, args);
    const entry = { kind: 'fetch', url: response.url, status: response.status,
                    headers: headerText(response.headers), body: null };
    seen.push(entry);
    try { entry.body = await response.clone().text(); } catch (e) { entry.body = 'UNREADABLE ' + e; }
    return response;
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (...args) {
    this.addEventListener('loadend', () => {
      let body;
      try { body = this.responseType === '' || this.responseType === 'text' ? this.responseText : 'NON-TEXT XHR'; }
      catch (e) { body = 'UNREADABLE ' + e; }
      seen.push({ kind: 'xhr', url: this.responseURL, status: this.status,
                  headers: this.getAllResponseHeaders(), body });
    });
    return open.apply(this, args);
  };
})();
"#;

pub struct Chrome {
    pub client: Client,
    driver_url: String,
    session_id: String,
    driver: Child,
    profile: PathBuf,
    /// The browser console so far (chromedriver hands each entry out once).
    console: Mutex<Vec<Value>>,
}

impl Chrome {
    pub async fn start() -> Chrome {
        let browser = on_path("browser", BROWSERS);
        let driver_binary = on_path("WebDriver driver", DRIVERS);
        let port = free_port();
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(driver_binary);
        command
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                artifacts_dir().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = spawn_in_nursery(command);
        let status = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = status
                .get(format!("{driver_url}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let profile = std::env::temp_dir().join(random_name("gatehouse-chromium-"));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1200,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a chromium session (see target/test-artifacts/chromedriver.log)");
        let session_id = client
            .session_id()
            .await
            .expect("session id")
            .expect("session id");
        let chrome = Chrome {
            client,
            driver_url,
            session_id,
            driver,
            profile,
            console: Mutex::new(Vec::new()),
        };
        chrome
            .cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": RECORDER }),
            )
            .await;
        chrome
    }

    /// A DevTools protocol command through chromedriver.
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        let response: Value = reqwest::Client::new()
            .post(format!(
                "{}/session/{}/goog/cdp/execute",
                self.driver_url, self.session_id
            ))
            .json(&json!({ "cmd": command, "params": params }))
            .send()
            .await
            .expect("cdp")
            .json()
            .await
            .expect("cdp JSON");
        assert!(
            response["value"].get("error").is_none(),
            "cdp {command}: {response}"
        );
        response["value"].clone()
    }

    /// Every console entry since the session started.
    pub async fn console(&self) -> Vec<Value> {
        let fresh: Value = match reqwest::Client::new()
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session_id
            ))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let mut console = self.console.lock().expect("console");
        if let Some(entries) = fresh["value"].as_array() {
            console.extend(entries.iter().cloned());
        }
        console.clone()
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigation");
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `condition` (a JavaScript expression body that returns a truthy value when
    /// satisfied) until it holds; returns its value.
    pub async fn wait_for(&self, what: &str, condition: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // Navigation in progress or a page without the elements yet: try again.
            if let Ok(value) = self.client.execute(condition, vec![]).await {
                if !value.is_null() && value != Value::Bool(false) {
                    return value;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (at {})",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the element with this id is shown; returns its text.
    pub async fn wait_for_visible(&self, id: &str) -> String {
        let script = format!(
            "const e = document.getElementById('{id}'); \
             return e && e.checkVisibility() ? e.innerText : null;"
        );
        self.wait_for(&format!("#{id} to be visible"), &script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn is_visible(&self, id: &str) -> bool {
        self.eval(
            "const e = document.getElementById(arguments[0]); return !!e && e.checkVisibility();",
            vec![json!(id)],
        )
        .await
            == Value::Bool(true)
    }

    /// Waits for the element the CSS selector names.
    pub async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    pub async fn click(&self, css: &str) {
        self.element(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click on {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        self.element(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Saves what a person would need to see why a test failed.
    pub async fn save_artifacts(&self, name: &str) {
        let dir = artifacts_dir();
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        }
        if let Ok(source) = self.client.source().await {
            let _ = std::fs::write(dir.join(format!("{name}.html")), source);
        }
        let console: Vec<String> = self
            .console()
            .await
            .iter()
            .map(|entry| {
                format!(
                    "{} {} {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["source"].as_str().unwrap_or("?"),
                    entry["message"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let _ = std::fs::write(
            dir.join(format!("{name}-console.log")),
            format!("page: {}\n{}\n", self.url().await, console.join("\n")),
        );
        eprintln!(
            "browser test {name} failed: screenshot, page source and console log in {}",
            dir.display()
        );
    }

    /// Runs a scenario against this browser; when it panics, the artifacts are saved and the
    /// panic is returned, for the caller to resume after closing the browser.
    pub async fn run_scenario<F>(&self, name: &str, scenario: F) -> std::thread::Result<()>
    where
        F: std::future::Future<Output = ()>,
    {
        let outcome = AssertUnwindSafe(scenario).catch_unwind().await;
        if outcome.is_err() {
            self.save_artifacts(name).await;
        }
        outcome
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
