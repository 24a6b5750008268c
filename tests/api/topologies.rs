//! gatehouse on the Redis topologies operators run: a 3-master Redis Cluster, a master and
//! replica under 3 sentinels (killed mid-traffic), TLS to Redis, and three instances on one
//! Redis. Every topology is real (`redis-server`, `redis-sentinel`), started by the bed in
//! `helpers::topologies`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::echo::{spawn_echo, EchoUpstream};
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::topologies::{RedisCluster, SentinelBed, TlsRedis};
use crate::helpers::{
    gatehouse_cli, proxied_call, shared_redis, spawn_app_with, wait_until_cache_serves, AppOptions,
    Browser, RateLimits, RedisKeys, RedisTopology, Route, SessionKeys, TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);

/// A route to the echo upstream, and rate limits (still on, so their buckets take part)
/// that a crowd of test users from one IP address stays under.
fn api_options<'a>(echo: &EchoUpstream) -> AppOptions<'a> {
    AppOptions {
        routes: vec![Route::new("/api", &echo.base)],
        rate_limits: RateLimits::new().login(100000, 60).api(100000, 60),
        session: SessionKeys::long(),
        ..AppOptions::default()
    }
}

/// The first instance of a group on `topology`; the others come from `another_instance`.
async fn first_instance(
    topology: &RedisTopology,
    echo: &EchoUpstream,
    redis: &RedisKeys,
) -> TestApp {
    spawn_app_with(AppOptions {
        redis_topology: Some(topology.clone()),
        redis: redis.clone(),
        ..api_options(echo)
    })
    .await
}

/// Another instance behind the same public URL (as behind a load balancer), on the same
/// store, provider client and key prefix.
async fn another_instance(
    first: &TestApp,
    topology: &RedisTopology,
    echo: &EchoUpstream,
    redis: &RedisKeys,
) -> TestApp {
    spawn_app_with(AppOptions {
        share: Some(first),
        public_url: Some(first.base.clone()),
        redis_topology: Some(topology.clone()),
        redis: redis.clone(),
        ..api_options(echo)
    })
    .await
}

/// A login that starts at `start` and whose callback the "load balancer" hands to
/// `finish`; the provider redirects to the public URL, the first instance's.
async fn try_login_across<'a>(
    browser: &mut Browser<'a>,
    public: &'a TestApp,
    start: &'a TestApp,
    finish: &'a TestApp,
    user: &str,
) -> Result<(), String> {
    browser.app = start;
    let started = browser.start_login(None).await;
    if started.status != 302 {
        return Err(format!("login start answered {}", started.status));
    }
    let authorize = started.location().expect("redirect").to_owned();
    browser.app = public;
    let callback = browser.authenticate_at_provider(&authorize, user).await;
    let callback = callback.replacen(&public.base, &finish.base, 1);
    browser.app = finish;
    let done = browser.get(&callback).await;
    if done.status != 302 || browser.session_cookie().is_none() {
        return Err(format!("callback answered {}: {}", done.status, done.body));
    }
    Ok(())
}

async fn login_across<'a>(
    browser: &mut Browser<'a>,
    public: &'a TestApp,
    start: &'a TestApp,
    finish: &'a TestApp,
    user: &str,
) {
    try_login_across(browser, public, start, finish, user)
        .await
        .unwrap_or_else(|e| panic!("login of {user}: {e}"));
}

/// `count` users logging in, 16 at a time, each starting and finishing on instances picked
/// in turn (the first instance's URL is the public one); their session cookies.
async fn log_in_many(instances: &[&TestApp], count: usize, name: &str) -> Vec<String> {
    let n = instances.len();
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            let public = instances[0];
            let (start, finish) = (instances[i % n], instances[(i / n) % n]);
            let mut browser = Browser::new(public);
            login_across(&mut browser, public, start, finish, &format!("{name}{i}")).await;
            browser.session_cookie().expect("cookie")
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// One proxied call with a session cookie: the status and the bearer the upstream saw.
async fn api_call(app: &TestApp, cookie: &str) -> (u16, Option<String>) {
    let (status, bearer, headers) = proxied_call(app, cookie).await;
    if status == 503 {
        assert_eq!(
            headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "a 503 says when to try again"
        );
    }
    (status, bearer)
}

async fn refreshes(app: &TestApp) -> (u64, u64) {
    let counts = app.provider_grants().await;
    (
        counts["refresh_token"].as_u64().unwrap_or(0),
        counts["refresh_token_errors"].as_u64().unwrap_or(0),
    )
}

/// Small deterministic spread over instances ("randomly chosen", reproducibly).
struct Pick(u64);

impl Pick {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------
// What each command touches: MONITOR on every node
// ---------------------------------------------------------------------------------------

/// Everything a Redis server executes, as MONITOR reports it: commands of clients and, in
/// the order they run, the commands scripts issue (source `lua`).
struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
    stream: TcpStream,
    port: u16,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("monitor connects");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR answers");
        assert_eq!(ok.trim_end(), "+OK");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().expect("lines").push(line.trim_end().to_owned());
                line.clear();
            }
        });
        Monitor {
            lines,
            stream,
            port,
        }
    }

    fn stop(self) -> (u16, Vec<String>) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        std::thread::sleep(Duration::from_millis(100));
        let lines = self.lines.lock().expect("lines").clone();
        (self.port, lines)
    }
}

/// `+1700000000.123456 [0 127.0.0.1:5000] "HGET" "k" "f"` → ("127.0.0.1:5000", args).
fn parse_monitor_line(line: &str) -> Option<(String, Vec<Vec<u8>>)> {
    let rest = line.strip_prefix('+')?;
    let open = rest.find('[')?;
    let close = rest[open..].find(']')? + open;
    let source = rest[open + 1..close]
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let bytes = &rest.as_bytes()[close + 1..];
    let mut args = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut arg = Vec::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
                match bytes[i] {
                    b'n' => arg.push(b'\n'),
                    b'r' => arg.push(b'\r'),
                    b't' => arg.push(b'\t'),
                    b'a' => arg.push(7),
                    b'b' => arg.push(8),
                    b'x' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                        arg.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 2;
                    }
                    other => arg.push(other),
                }
            } else {
                arg.push(bytes[i]);
            }
            i += 1;
        }
        i += 1;
        args.push(arg);
    }
    Some((source, args))
}

/// The keys a command names, by the command table's rules for the commands clients send.
fn keys_of(args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let Some(name) = args.first() else {
        return Vec::new();
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    match name.as_str() {
        "PING" | "WAIT" | "SCAN" | "CLUSTER" | "CLIENT" | "HELLO" | "SCRIPT" | "INFO"
        | "SELECT" | "READONLY" | "READWRITE" | "AUTH" | "COMMAND" | "ROLE" | "DBSIZE" | "KEYS"
        | "MONITOR" | "CONFIG" | "ECHO" | "TIME" | "MULTI" | "EXEC" | "DISCARD" | "ASKING" => {
            Vec::new()
        }
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" => {
            let count: usize = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            args.iter().skip(3).take(count).cloned().collect()
        }
        "DEL" | "UNLINK" | "EXISTS" | "MGET" | "TOUCH" | "WATCH" => args[1..].to_vec(),
        "MSET" | "MSETNX" => args[1..].iter().step_by(2).cloned().collect(),
        _ => args.get(1).cloned().into_iter().collect(),
    }
}

fn key_slot(port: u16, key: &[u8]) -> i64 {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let mut conn = client.get_connection().expect("connection");
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut conn)
        .expect("CLUSTER KEYSLOT")
}

/// Checks every command a node ran: its keys lie in one slot, and every command a script
/// ran touches the slot of the key the script was called with. Returns what was checked.
fn assert_single_slot(port: u16, lines: &[String], prefix: &str) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut slots: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    let mut slot_of = |key: &[u8]| {
        *slots
            .entry(key.to_vec())
            .or_insert_with(|| key_slot(port, key))
    };
    let mut script_slot: Option<i64> = None;
    for line in lines {
        let Some((source, args)) = parse_monitor_line(line) else {
            continue;
        };
        let keys = keys_of(&args);
        if !keys.iter().any(|k| k.starts_with(prefix.as_bytes())) {
            continue; // the bed's own commands, other tests' keys
        }
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        for key in &keys {
            if let Some(kind) = key.strip_prefix(prefix.as_bytes()).and_then(|k| k.first()) {
                *seen.entry(format!("key {}", *kind as char)).or_default() += 1;
            }
        }
        let distinct: BTreeSet<i64> = keys.iter().map(|k| slot_of(k)).collect();
        assert_eq!(distinct.len(), 1, "{name} touches several slots: {line}");
        let slot = *distinct.iter().next().expect("one slot");
        if source == "lua" {
            assert_eq!(
                Some(slot),
                script_slot,
                "a script's {name} left the slot of the key it was called with: {line}"
            );
            *seen.entry(format!("lua {name}")).or_default() += 1;
        } else {
            if name.starts_with("EVAL") {
                script_slot = Some(slot);
            }
            *seen.entry(name).or_default() += 1;
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_three_master_cluster_serves_every_instance_and_every_command_stays_in_one_slot() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let monitors: Vec<Monitor> = cluster.ports().into_iter().map(Monitor::start).collect();
    let topology = RedisTopology::cluster(&cluster.seed_urls());
    let echo = spawn_echo().await;
    let a = first_instance(&topology, &echo, &RedisKeys::new()).await;
    let b = another_instance(&a, &topology, &echo, &RedisKeys::new()).await;
    let c = another_instance(&a, &topology, &echo, &RedisKeys::new()).await;
    let instances = [&a, &b, &c];
    let prefix = format!("{}:", a.key_prefix);

    // 200 logins, 16 at a time, started and finished on instances picked in turn.
    let logins = log_in_many(&instances, 200, "user").await;
    assert_eq!(logins.iter().collect::<HashSet<_>>().len(), 200);
    let session_keys = cluster.keys(&format!("{prefix}s:*"));
    assert_eq!(session_keys.len(), 200, "every login left one session");
    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    for key in &session_keys {
        *per_master
            .entry(cluster.master_port_for_key(key))
            .or_default() += 1;
    }
    assert_eq!(
        per_master.len(),
        3,
        "sessions on every master: {per_master:?}"
    );
    assert!(
        per_master.values().all(|&n| n >= 30),
        "sessions spread over the masters: {per_master:?}"
    );
    let (ok, count) = gatehouse_cli(&a, &["sessions", "count"]);
    assert!(
        ok && count.trim() == "200",
        "count across the cluster: {count}"
    );

    // Login on A, API call and refresh on B, logout on C.
    let mut browser = a.browser();
    login_across(&mut browser, &a, &a, &a, "alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let (status, first_bearer) = api_call(&b, &cookie).await;
    assert_eq!(status, 200);
    let before = refreshes(&a).await;
    // Instances share one clock, as machines do.
    let advance_all = |by: Duration| instances.iter().for_each(|app| app.clock.advance(by));
    advance_all(HOUR + Duration::from_secs(1));
    let (status, refreshed_bearer) = api_call(&b, &cookie).await;
    assert_eq!(status, 200);
    assert_ne!(refreshed_bearer, first_bearer, "B refreshed the token");
    assert_eq!(refreshes(&a).await, (before.0 + 1, before.1));
    browser.app = &c;
    let user = browser.api_get("/auth/user").await;
    assert_eq!(user.status, 200);
    let logout_url = user.json()["session"]["logout_url"]
        .as_str()
        .expect("logout_url")
        .to_owned();
    assert_eq!(browser.get(&logout_url).await.status, 302);
    assert_eq!(api_call(&a, &cookie).await.0, 401, "logged out everywhere");
    assert_eq!(cluster.keys(&format!("{prefix}s:*")).len(), 200);

    // 25 + 25 concurrent calls with an expired token on two instances: one refresh.
    let mut browser = a.browser();
    login_across(&mut browser, &a, &a, &a, "bob").await;
    let cookie = browser.session_cookie().expect("cookie");
    let before = refreshes(&a).await;
    advance_all(HOUR + Duration::from_secs(1));
    let calls = (0..50).map(|i| api_call(if i % 2 == 0 { &a } else { &b }, &cookie));
    let results = futures_util::future::join_all(calls).await;
    assert!(
        results.iter().all(|(status, _)| *status == 200),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let bearers: HashSet<_> = results.iter().map(|(_, bearer)| bearer.clone()).collect();
    assert_eq!(bearers.len(), 1, "every call used the one refreshed token");
    assert_eq!(
        refreshes(&a).await,
        (before.0 + 1, before.1),
        "exactly one refresh across both instances"
    );

    // `sessions revoke --sub` finds a user's sessions on every master.
    let mut carol = Vec::new();
    for i in 0..6 {
        let mut browser = Browser::new(&a);
        login_across(&mut browser, &a, instances[i % 3], &a, "carol").await;
        carol.push(browser.session_cookie().expect("cookie"));
    }
    let carol_masters: HashSet<u16> = cluster
        .keys(&format!("{prefix}s:*"))
        .iter()
        .filter(|k| !session_keys.contains(k))
        .map(|k| cluster.master_port_for_key(k))
        .collect();
    assert!(
        carol_masters.len() >= 2,
        "carol's sessions sit on several masters"
    );
    let (ok, revoked) = gatehouse_cli(&a, &["sessions", "revoke", "--sub", "carol"]);
    assert!(ok, "{revoked}");
    assert!(revoked.contains("revoked 6 session(s)"), "{revoked}");
    for cookie in &carol {
        assert_eq!(api_call(&b, cookie).await.0, 401);
    }

    let mut seen = BTreeMap::new();
    for monitor in monitors {
        let (port, lines) = monitor.stop();
        for (name, n) in assert_single_slot(port, &lines, &prefix) {
            *seen.entry(name).or_insert(0) += n;
        }
    }
    // The proof saw the whole flow: sessions, indices, locks, login states, rate limits.
    for expected in [
        "EVALSHA", "HMGET", "GETDEL", "SET", "SMEMBERS", "lua HSET", "lua SADD",
    ] {
        assert!(
            seen.get(expected).is_some_and(|&n| n > 0),
            "{expected} not seen: {seen:?}"
        );
    }
    // Sessions, indices, login states, refresh locks and rate-limit buckets all passed.
    for kind in ["s", "x", "l", "k", "r"] {
        assert!(
            seen.get(&format!("key {kind}")).is_some_and(|&n| n > 0),
            "no command on a `{kind}` key seen: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_resharding_under_traffic_moves_sessions_without_losing_one() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("cluster"),
    );
    let topology = RedisTopology::cluster(&cluster.seed_urls());
    let echo = spawn_echo().await;
    let a = first_instance(&topology, &echo, &RedisKeys::new()).await;
    let b = another_instance(&a, &topology, &echo, &RedisKeys::new()).await;
    let prefix = format!("{}:", a.key_prefix);
    let ports = cluster.ports();

    let cookies = log_in_many(&[&a, &b], 40, "moved").await;
    let on_first = |cluster: &RedisCluster| {
        cluster
            .keys(&format!("{prefix}s:*"))
            .iter()
            .filter(|k| cluster.master_port_for_key(k) == ports[0])
            .count()
    };
    let before = on_first(&cluster);
    assert!(before > 0, "some sessions start on the first master");

    let stop = AtomicBool::new(false);
    let statuses: Mutex<BTreeMap<u16, usize>> = Mutex::new(BTreeMap::new());
    let callers = cookies.iter().enumerate().map(|(i, cookie)| {
        let (a, b, stop, statuses) = (&a, &b, &stop, &statuses);
        async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = api_call(if n % 2 == 0 { a } else { b }, cookie).await;
                n += 1;
                *statuses
                    .lock()
                    .expect("statuses")
                    .entry(status)
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let (from, to) = (ports[0], ports[1]);
    let mover = {
        let (cluster, stop) = (cluster.clone(), &stop);
        async move {
            tokio::task::spawn_blocking(move || cluster.reshard(from, to, 5461))
                .await
                .expect("reshard");
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.store(true, Ordering::Relaxed);
        }
    };
    tokio::join!(futures_util::future::join_all(callers), mover);

    let statuses = statuses.into_inner().expect("statuses");
    eprintln!("resharding: calls {statuses:?}");
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 200 or 503 while slots move: {statuses:?}"
    );
    assert_eq!(
        on_first(&cluster),
        0,
        "the first master gave all its slots away"
    );
    assert_eq!(cluster.keys(&format!("{prefix}s:*")).len(), 40);
    for (i, cookie) in cookies.iter().enumerate() {
        assert_eq!(
            api_call(&b, cookie).await.0,
            200,
            "session {i} after the move"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Sentinel failover
// ---------------------------------------------------------------------------------------

struct Call {
    at: Instant,
    status: u16,
}

/// Two instances under steady traffic from several sessions while the master is killed.
async fn failover_under_traffic(min_replicas_ack: u32) {
    let bed = Arc::new(
        tokio::task::spawn_blocking(|| SentinelBed::start("sessions"))
            .await
            .expect("sentinel bed"),
    );
    let topology = RedisTopology::sentinel(bed.master_name(), &bed.sentinel_urls());
    let redis = RedisKeys::new()
        .connect_timeout_ms(500)
        .response_timeout_ms(1000)
        .min_replicas_ack(min_replicas_ack)
        .min_replicas_timeout_ms(500);
    let echo = spawn_echo().await;
    let a = first_instance(&topology, &echo, &redis).await;
    let b = another_instance(&a, &topology, &echo, &redis).await;

    let mut steady = Vec::new();
    for i in 0..6 {
        let mut browser = Browser::new(&a);
        let finish = if i % 2 == 0 { &a } else { &b };
        login_across(&mut browser, &a, finish, finish, &format!("steady{i}")).await;
        steady.push(browser.session_cookie().expect("cookie"));
    }

    let stop = AtomicBool::new(false);
    let calls: Mutex<Vec<Call>> = Mutex::new(Vec::new());
    let logins: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());
    let login_failures: Mutex<Vec<String>> = Mutex::new(Vec::new());

    let callers = steady.iter().enumerate().map(|(i, cookie)| {
        let (a, b, stop, calls) = (&a, &b, &stop, &calls);
        async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let app = if n % 2 == 0 { a } else { b };
                n += 1;
                let (status, _) = api_call(app, cookie).await;
                calls.lock().expect("calls").push(Call {
                    at: Instant::now(),
                    status,
                });
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    let login_loop = {
        let (a, b, stop, logins, login_failures) = (&a, &b, &stop, &logins, &login_failures);
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut browser = Browser::new(a);
                let finish = if n % 2 == 0 { a } else { b };
                n += 1;
                match try_login_across(&mut browser, a, finish, finish, &format!("new{n}")).await {
                    Ok(()) => logins
                        .lock()
                        .expect("logins")
                        .push((browser.session_cookie().expect("cookie"), Instant::now())),
                    Err(e) => login_failures.lock().expect("failures").push(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let controller = {
        let (bed, stop, calls) = (bed.clone(), &stop, &calls);
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let old_port = bed.master_port();
            let killer = bed.clone();
            let killed_at = tokio::task::spawn_blocking(move || killer.kill_master())
                .await
                .expect("kill");
            let waiter = bed.clone();
            let promoted_at = tokio::task::spawn_blocking(move || {
                waiter.wait_for_promotion(old_port, Duration::from_secs(30))
            })
            .await
            .expect("promotion");
            // Traffic goes on until every call has been 200 for 2 s (or 20 s have passed).
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = Instant::now();
                let calls = calls.lock().expect("calls");
                let last_bad = calls
                    .iter()
                    .filter(|c| c.status != 200)
                    .map(|c| c.at)
                    .max()
                    .unwrap_or(killed_at);
                let calm = now.duration_since(last_bad.max(promoted_at));
                if calm > Duration::from_secs(2)
                    || now.duration_since(promoted_at) > Duration::from_secs(20)
                {
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
            (killed_at, promoted_at)
        }
    };
    let (_, _, (killed_at, promoted_at)) = tokio::join!(
        futures_util::future::join_all(callers),
        login_loop,
        controller
    );

    let calls = calls.into_inner().expect("calls");
    let statuses: BTreeMap<u16, usize> = calls.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.status).or_default() += 1;
        m
    });
    eprintln!(
        "failover (min_replicas_ack = {min_replicas_ack}): promotion {:?} after the kill; calls {statuses:?}",
        promoted_at.duration_since(killed_at)
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 200 or 503 during the failover, never a logout or an error: {statuses:?}"
    );
    assert!(
        statuses.get(&503).is_some_and(|&n| n > 0),
        "the outage was seen (else this test proves nothing): {statuses:?}"
    );
    let last_bad = calls
        .iter()
        .filter(|c| c.status != 200)
        .map(|c| c.at)
        .max()
        .expect("a 503");
    assert!(
        last_bad <= promoted_at + Duration::from_secs(15),
        "calls were 200 again {:?} after the promotion",
        last_bad.saturating_duration_since(promoted_at)
    );
    eprintln!(
        "failover (min_replicas_ack = {min_replicas_ack}): last 503 {:?} after the promotion",
        last_bad.saturating_duration_since(promoted_at)
    );
    assert!(
        calls.iter().any(|c| c.at > last_bad && c.status == 200),
        "served again after the failover"
    );
    let login_failures = login_failures.into_inner().expect("failures");
    eprintln!(
        "failover (min_replicas_ack = {min_replicas_ack}): {} login(s) failed meanwhile: {:?}",
        login_failures.len(),
        login_failures
            .iter()
            .map(|f| &f[..f.len().min(40)])
            .collect::<BTreeSet<_>>()
    );
    for failure in login_failures {
        assert!(
            !failure.contains(" 500"),
            "a login during the failover failed with 500: {failure}"
        );
    }

    // Sessions: every steady one, and every login that completed early enough (or, with
    // min_replicas_ack, every login that completed at all).
    for (i, cookie) in steady.iter().enumerate() {
        assert_eq!(api_call(&a, cookie).await.0, 200, "steady session {i}");
    }
    let logins = logins.into_inner().expect("logins");
    let mut kept = 0;
    for (cookie, completed_at) in &logins {
        let must_survive =
            min_replicas_ack > 0 || *completed_at + Duration::from_secs(1) < killed_at;
        let status = api_call(&b, cookie).await.0;
        if must_survive {
            assert_eq!(status, 200, "a session whose login completed was lost");
            kept += 1;
        }
    }
    assert!(kept > 0, "logins completed before the kill");
}

#[tokio::test]
async fn a_sentinel_failover_costs_503s_for_a_while_and_no_session() {
    failover_under_traffic(0).await;
}

#[tokio::test]
async fn with_min_replicas_ack_no_completed_login_is_lost_in_a_failover() {
    failover_under_traffic(1).await;
}

// ---------------------------------------------------------------------------------------
// TLS to Redis
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_to_redis_with_the_right_ca_works_and_a_wrong_ca_says_why() {
    let redis = tokio::task::spawn_blocking(TlsRedis::start)
        .await
        .expect("tls redis");
    let echo = spawn_echo().await;
    let topology = RedisTopology::url(&redis.url());
    let app = first_instance(
        &topology,
        &echo,
        &RedisKeys::new().ca_file(&redis.ca_file()),
    )
    .await;
    // The session cache's tracking connection speaks TLS too.
    wait_until_cache_serves(app.store.as_ref()).await;
    let mut browser = app.browser();
    browser.login("alice").await;
    assert_eq!(browser.api_get("/auth/user").await.status, 200);
    let cookie = browser.session_cookie().expect("cookie");
    assert_eq!(api_call(&app, &cookie).await.0, 200);

    let wrong = spawn_app_with(AppOptions {
        redis_topology: Some(topology),
        redis: RedisKeys::new().ca_file(&redis.wrong_ca_file()),
        not_ready: true,
        ..AppOptions::default()
    })
    .await;
    let mut reason = String::new();
    for _ in 0..50 {
        let readyz = wrong
            .http
            .get(format!("{}/readyz", wrong.base))
            .send()
            .await
            .expect("readyz");
        assert_eq!(
            readyz.status(),
            503,
            "never ready with a CA that did not sign Redis"
        );
        let body: Value = readyz.json().await.expect("json");
        assert_eq!(body["ready"], false);
        assert_eq!(body["store"]["ready"], false);
        reason = body["store"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if reason.contains("certificate") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"),
        "readyz names the reason: {reason}"
    );
    let target = format!("rediss://127.0.0.1:{}", redis.port());
    let logs = crate::helpers::captured_logs();
    assert!(
        logs.lines().any(|line| line.contains("redis unreachable")
            && line.contains(&target)
            && line.contains("UnknownIssuer")),
        "the log says which Redis and why"
    );
}

// ---------------------------------------------------------------------------------------
// Many instances on one Redis
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hundred_users_on_three_instances_see_no_error() {
    // A provider of its own: a hundred token exchanges at once must not wait behind the
    // other tests' logins.
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let topology = RedisTopology::url(&shared_redis().url());
    let a = spawn_app_with(AppOptions {
        provider: Some(&provider),
        redis_topology: Some(topology.clone()),
        ..api_options(&echo)
    })
    .await;
    let b = another_instance(&a, &topology, &echo, &RedisKeys::new()).await;
    let c = another_instance(&a, &topology, &echo, &RedisKeys::new()).await;
    let instances = [&a, &b, &c];

    let users = (0..100u64).map(|i| {
        let a = &a;
        async move {
            let mut pick = Pick(i + 1);
            let mut errors = Vec::new();
            let mut browser = Browser::new(a);
            let (start, finish) = (instances[pick.next(3)], instances[pick.next(3)]);
            if let Err(e) = try_login_across(&mut browser, a, start, finish, &format!("u{i}")).await
            {
                return vec![e];
            }
            let cookie = browser.session_cookie().expect("cookie");
            for _ in 0..3 {
                let (status, _) = api_call(instances[pick.next(3)], &cookie).await;
                if status != 200 {
                    errors.push(format!("call answered {status}"));
                }
            }
            browser.app = instances[pick.next(3)];
            let user = browser.api_get("/auth/user").await;
            if user.status != 200 {
                errors.push(format!("/auth/user answered {}", user.status));
                return errors;
            }
            let logout_url = user.json()["session"]["logout_url"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            browser.app = instances[pick.next(3)];
            let logout = browser.get(&logout_url).await;
            if logout.status != 302 {
                errors.push(format!("logout answered {}", logout.status));
            }
            let after = api_call(instances[pick.next(3)], &cookie).await.0;
            if after != 401 {
                errors.push(format!("a call after logout answered {after}"));
            }
            errors
        }
    });
    let errors: Vec<String> = futures_util::future::join_all(users)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(errors.is_empty(), "{} error(s): {errors:?}", errors.len());
    assert_eq!(a.session_key_count().await, 0, "every session ended");
}
