//! Real Redis and the real OpenID Provider, started once per test binary (or per test when a
//! test needs its own settings) and killed with it.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Children get SIGKILL when the thread that forked them exits; this thread never exits
/// before the test process does, so no server outlives a test run.
pub fn spawn_in_nursery(mut command: Command) -> Child {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static NURSERY: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = NURSERY.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("process-nursery".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("nursery thread");
        Mutex::new(tx)
    });
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .expect("nursery")
        .send((command, reply_tx))
        .expect("nursery alive");
    reply_rx
        .recv()
        .expect("nursery reply")
        .expect("spawn child process")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn artifacts_dir() -> PathBuf {
    let dir = repo_root().join("target").join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

pub struct RedisServer {
    pub port: u16,
    child: Mutex<Child>,
}

impl RedisServer {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn_in_nursery(redis_command(port));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another (the child has exited)
                }
                if redis_ping(port) {
                    return RedisServer {
                        port,
                        child: Mutex::new(child),
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start (is it installed? run the README's test command)");
    }

    fn signal(&self, signal: i32) {
        let child = self.child.lock().expect("redis child");
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
    }

    /// Freezes the server: connections stay open but nothing answers (an outage that keeps
    /// the data, so a test can show that nothing was lost).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Stops the server (a Redis outage) — the port stays reserved for `restart`.
    pub fn stop(&self) {
        let mut child = self.child.lock().expect("redis child");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn restart(&self) {
        self.stop();
        *self.child.lock().expect("redis child") = spawn_in_nursery(redis_command(self.port));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !redis_ping(self.port) {
            assert!(Instant::now() < deadline, "redis did not restart");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A throw-away Redis: loopback only, no persistence.
fn redis_command(port: u16) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The Redis server shared by every test in this binary; tests isolate by key prefix.
pub fn shared_redis() -> &'static RedisServer {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    REDIS.get_or_init(RedisServer::start)
}

pub struct ProviderProcess {
    pub issuer: String,
    _child: Child,
    /// The provider exits when its stdin closes: one more guarantee it dies with us.
    _stdin: ChildStdin,
}

#[derive(Clone, Debug)]
pub struct ProviderOptions {
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Long by default, so tests can move gatehouse's clock past access-token expiry and
    /// still get ID tokens it accepts from a refresh.
    pub id_token_ttl_secs: u64,
    /// A fixed port (for a gatehouse configured before the provider starts).
    pub port: Option<u16>,
    /// JSON array of static clients.
    pub static_clients: Option<String>,
    /// Where it listens (and so its issuer's host); another loopback address than the
    /// default 127.0.0.2 for a second provider.
    pub host: &'static str,
    /// Narrows the token endpoint's client authentication methods (comma-separated).
    pub client_auth_methods: Option<&'static str>,
    /// Pushed authorization requests: "on" (the default), "required" or "off".
    pub pushed_authorization: &'static str,
    /// Whether it offers an end-session endpoint (RP-initiated logout).
    pub end_session: bool,
    /// A tenant id: play a multi-tenant Entra ID issuer (`PROVIDER_ENTRA_TENANT`).
    pub entra_tenant: Option<&'static str>,
    /// Whether authorization responses carry `iss` (RFC 9207).
    pub auth_response_iss: bool,
    /// Members left out of `/.well-known/openid-configuration` (e.g. `revocation_endpoint`:
    /// a provider that lists it only in its RFC 8414 metadata).
    pub omit_from_openid_configuration: &'static [&'static str],
    /// Members left out of `/.well-known/oauth-authorization-server`; `["all"]`: none there.
    pub omit_from_rfc8414: &'static [&'static str],
    /// The token endpoint requires a DPoP server nonce (`PROVIDER_DPOP_NONCE`).
    pub dpop_nonce: bool,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 86400,
            id_token_ttl_secs: 86400,
            port: None,
            static_clients: None,
            host: "127.0.0.2",
            client_auth_methods: None,
            pushed_authorization: "on",
            end_session: true,
            entra_tenant: None,
            auth_response_iss: true,
            omit_from_openid_configuration: &[],
            omit_from_rfc8414: &[],
            dpop_nonce: false,
        }
    }
}

impl ProviderProcess {
    pub fn start(options: &ProviderOptions) -> ProviderProcess {
        let dir = repo_root().join("tests/support/provider");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the test provider's npm packages are missing: run the README's test command (scripts/test)"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(artifacts_dir().join("provider.log"))
            .expect("provider log");
        let mut command = Command::new("node");
        command
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .env("PROVIDER_HOST", options.host)
            .env("PROVIDER_PORT", options.port.unwrap_or(0).to_string())
            .env(
                "PROVIDER_CLIENTS",
                options.static_clients.clone().unwrap_or_default(),
            )
            .env(
                "ACCESS_TOKEN_TTL",
                options.access_token_ttl_secs.to_string(),
            )
            .env("ID_TOKEN_TTL", options.id_token_ttl_secs.to_string())
            .env(
                "REFRESH_TOKEN_TTL",
                options.refresh_token_ttl_secs.to_string(),
            )
            .env(
                "PROVIDER_CLIENT_AUTH_METHODS",
                options.client_auth_methods.unwrap_or_default(),
            )
            .env("PROVIDER_PAR", options.pushed_authorization)
            .env(
                "PROVIDER_END_SESSION",
                if options.end_session { "on" } else { "off" },
            )
            .env(
                "PROVIDER_ENTRA_TENANT",
                options.entra_tenant.unwrap_or_default(),
            )
            .env(
                "PROVIDER_AUTH_RESPONSE_ISS",
                if options.auth_response_iss {
                    "on"
                } else {
                    "off"
                },
            )
            .env(
                "PROVIDER_OMIT_OPENID_CONFIGURATION",
                options.omit_from_openid_configuration.join(","),
            )
            .env("PROVIDER_OMIT_RFC8414", options.omit_from_rfc8414.join(","))
            .env(
                "PROVIDER_DPOP_NONCE",
                if options.dpop_nonce { "on" } else { "off" },
            )
            .env("PROVIDER_WATCH_STDIN", "1")
            .env("PROVIDER_QUIET", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = spawn_in_nursery(command);
        let stdin = child.stdin.take().expect("provider stdin");
        let stdout = child.stdout.take().expect("provider stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("provider ready line");
        let ready: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            panic!("provider did not start; see target/test-artifacts/provider.log ({line:?})")
        });
        let issuer = ready["issuer"].as_str().expect("issuer").to_owned();
        ProviderProcess {
            issuer,
            _child: child,
            _stdin: stdin,
        }
    }
}

pub fn shared_provider() -> &'static ProviderProcess {
    static PROVIDER: OnceLock<ProviderProcess> = OnceLock::new();
    PROVIDER.get_or_init(|| ProviderProcess::start(&ProviderOptions::default()))
}

/// The demo's sample API (`demo/sample-api.mjs`), the upstream the demo SPA calls.
pub struct SampleApi {
    pub url: String,
    _child: Child,
    _stdin: ChildStdin,
}

impl SampleApi {
    /// `issuer`: the provider the API asks whose token it got (userinfo).
    pub fn start(issuer: &str) -> SampleApi {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(artifacts_dir().join("sample-api.log"))
            .expect("sample API log");
        let mut command = Command::new("node");
        command
            .arg(repo_root().join("demo/sample-api.mjs"))
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("ISSUER", issuer)
            .env("WATCH_STDIN", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = spawn_in_nursery(command);
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("sample API ready line");
        let ready: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            panic!(
                "the sample API did not start; see target/test-artifacts/sample-api.log ({line:?})"
            )
        });
        SampleApi {
            url: ready["url"].as_str().expect("url").to_owned(),
            _child: child,
            _stdin: stdin,
        }
    }
}

/// The TCP ports process `pid` listens on, sorted, each once: the listening sockets in its
/// network namespace's `/proc/<pid>/net/tcp` and `tcp6` whose inodes are among its open
/// files (so other processes', and other tests' in this one, do not count).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's open files")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        // No tcp6 table on a host without IPv6.
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st … inode: state 0A is LISTEN.
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&"0A") || !fields.get(9).is_some_and(|i| inodes.contains(*i)) {
                continue;
            }
            let port = fields[1].rsplit(':').next().expect("address:port");
            ports.push(u16::from_str_radix(port, 16).expect("hex port"));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `gatehouse serve` from the binary, on the `gatehouse.toml` in `dir`, as an operator runs
/// it (the client secret in the environment); its log goes to `dir/gatehouse.stderr`
/// (returned), which the whole-run log check reads.
pub fn serve_command(dir: &std::path::Path, client_secret: &str) -> (Command, std::path::PathBuf) {
    let stderr = dir.join("gatehouse.stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .args(["serve", "--config", "gatehouse.toml"])
        .current_dir(dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_LOG")
        .env("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", client_secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    (command, stderr)
}
