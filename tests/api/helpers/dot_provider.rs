//! django-oauth-toolkit (DOT) as an OpenID Provider that nobody here wrote
//! (`tests/support/dot/`): started on loopback like the others, clients and users
//! registered through its own management command, its login form filled in like a person
//! would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::processes::{artifacts_dir, free_port, repo_root, spawn_in_nursery};
use super::{random_name, record_secret, RegisteredClient};

/// Where it listens: a loopback address of its own, so its cookies never mix with another
/// provider's in a test browser.
pub const DOT_HOST: &str = "127.0.0.4";

/// The users every client registration makes sure of.
pub const DOT_USERS: [&str; 2] = ["alice", "bob"];

#[derive(Clone, Debug, Default)]
pub struct DotOptions {
    /// RFC 9207 `iss` in authorization responses (`COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS`,
    /// off by default in DOT 3.x).
    pub authz_response_iss: bool,
}

pub struct DotProvider {
    /// `http://127.0.0.4:PORT/o` (DOT mounted under `/o/`, as its documentation does).
    pub issuer: String,
    /// `http://127.0.0.4:PORT`
    pub origin: String,
    state_dir: PathBuf,
    password: String,
    _child: Child,
    /// serve.py exits when its stdin closes: one more guarantee it dies with us.
    _stdin: ChildStdin,
}

/// Passwords of the running DOT instances by origin, for `login_form`.
fn passwords() -> &'static Mutex<HashMap<String, String>> {
    static PASSWORDS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    PASSWORDS.get_or_init(Default::default)
}

fn dot_dir() -> PathBuf {
    repo_root().join("tests/support/dot")
}

fn python() -> PathBuf {
    dot_dir().join(".venv/bin/python")
}

impl DotProvider {
    pub fn start(options: &DotOptions) -> DotProvider {
        assert!(
            python().exists(),
            "the DOT test provider's Python packages are missing: run the README's test \
             command (scripts/test) or scripts/ensure-deps"
        );
        // The signing key and the database: in the test run's temp directory (under
        // target/, never committed), private to this instance.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        remove_stale_state(&tmp);
        let state_dir = tmp.join(random_name("dot-"));
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&state_dir)
            .expect("DOT state dir");
        let password = random_name("pw");
        record_secret(&password);
        std::fs::write(state_dir.join("user-password"), &password).expect("password file");

        // The port is free when chosen, not necessarily when serve.py binds it: retry.
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(artifacts_dir().join("dot-provider.log"))
                .expect("DOT log");
            let mut command = Command::new(python());
            command
                .arg(dot_dir().join("serve.py"))
                .args(["--host", DOT_HOST, "--port", &port.to_string()])
                .arg("--state-dir")
                .arg(&state_dir)
                .arg("--watch-stdin")
                .args(options.authz_response_iss.then_some("--authz-response-iss"))
                .current_dir(dot_dir())
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log));
            let mut child = spawn_in_nursery(command);
            let stdin = child.stdin.take().expect("DOT stdin");
            let origin = format!("http://{DOT_HOST}:{port}");
            let issuer = format!("{origin}/o");
            if wait_for_discovery(&issuer, &mut child) {
                passwords()
                    .lock()
                    .expect("passwords")
                    .insert(origin.clone(), password.clone());
                return DotProvider {
                    issuer,
                    origin,
                    state_dir,
                    password,
                    _child: child,
                    _stdin: stdin,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the DOT provider did not start; see target/test-artifacts/dot-provider.log");
    }

    /// Registers a confidential client for a gatehouse at `gatehouse_base` (redirect URI
    /// `/auth/callback`, post-logout redirect URI `/`), and makes sure `DOT_USERS` exist.
    pub fn register_client(&self, gatehouse_base: &str) -> RegisteredClient {
        let env = std::fs::read_to_string(self.state_dir.join("env")).expect("DOT env");
        let mut command = Command::new(python());
        command
            .arg(dot_dir().join("manage.py"))
            .arg("register_client")
            .args(["--redirect-uri", &format!("{gatehouse_base}/auth/callback")])
            .args(["--post-logout-redirect-uri", &format!("{gatehouse_base}/")])
            .arg("--password-file")
            .arg(self.state_dir.join("user-password"))
            .current_dir(dot_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for user in DOT_USERS {
            command.args(["--user", user]);
        }
        for line in env.lines() {
            if let Some((key, value)) = line.split_once('=') {
                command.env(key, value);
            }
        }
        let output = command.output().expect("run DOT's register_client");
        assert!(
            output.status.success(),
            "DOT's register_client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("register_client prints JSON");
        let client = RegisteredClient {
            client_id: answer["client_id"].as_str().expect("client_id").to_owned(),
            client_secret: answer["client_secret"]
                .as_str()
                .expect("client_secret")
                .to_owned(),
        };
        record_secret(&client.client_secret);
        client
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// A document DOT serves (discovery, RFC 8414 metadata), as JSON.
    pub async fn json_at(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("{}{path}", self.origin))
            .await
            .expect("DOT answers")
            .error_for_status()
            .expect("DOT document")
            .json()
            .await
            .expect("JSON")
    }

    /// RFC 7662 introspection at DOT, authenticated as `client` (DOT lets a confidential
    /// client introspect; it knows access tokens only).
    pub async fn introspect(&self, client: (&str, &str), token: &str) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}/introspect/", self.issuer))
            .basic_auth(client.0, Some(client.1))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspection")
            .error_for_status()
            .expect("introspection allowed")
            .json()
            .await
            .expect("introspection JSON")
    }

    /// A refresh at DOT's token endpoint with `refresh_token`, as `client`: the status and
    /// the answer's `error` (never the answer itself: it would hold new tokens).
    pub async fn try_refresh(&self, client: (&str, &str), refresh_token: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!("{}/token/", self.issuer))
            .basic_auth(client.0, Some(client.1))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .expect("token endpoint");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        for key in ["access_token", "refresh_token", "id_token"] {
            if let Some(token) = body[key].as_str() {
                record_secret(token);
            }
        }
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// State directories of earlier runs (their providers died with them): removed once they
/// are a day old, so a concurrent run's live ones stay.
fn remove_stale_state(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(86400));
        if stale && entry.file_name().to_string_lossy().starts_with("dot-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn wait_for_discovery(issuer: &str, child: &mut Child) -> bool {
    // Generous: migrations on a loaded 2-core machine; usually about 2 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // exited (the port was taken meanwhile, or a startup error)
        }
        if discovery_answers(issuer) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A plain blocking GET of the discovery document (callers may be inside a runtime).
fn discovery_answers(issuer: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect((
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or(80),
    )) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET {}/.well-known/openid-configuration HTTP/1.0\r\nHost: {}\r\n\r\n",
        url.path(),
        url.authority()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// One DOT for the whole test binary; each gatehouse gets its own client there.
pub fn shared_dot() -> &'static DotProvider {
    static DOT: OnceLock<DotProvider> = OnceLock::new();
    DOT.get_or_init(|| DotProvider::start(&DotOptions::default()))
}

/// The fields to post when `page` (at `url`) is a DOT instance's login form, signing in
/// as `user`; None for any other page.
pub fn login_form(url: &str, page: &str, user: &str) -> Option<Vec<(String, String)>> {
    let origin = url::Url::parse(url).ok()?.origin().ascii_serialization();
    let password = passwords().lock().expect("passwords").get(&origin)?.clone();
    if !page.contains("name=\"username\"") || !page.contains("name=\"password\"") {
        return None;
    }
    let csrf = hidden_value(page, "csrfmiddlewaretoken")?;
    let next = hidden_value(page, "next").unwrap_or_default();
    Some(vec![
        ("csrfmiddlewaretoken".to_owned(), csrf),
        ("username".to_owned(), user.to_owned()),
        ("password".to_owned(), password),
        ("next".to_owned(), next),
    ])
}

/// The value of a hidden input, HTML entities of Django's escaping undone.
fn hidden_value(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = start + page[start..].find('"')?;
    Some(
        page[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}
