//! Real Redis topologies on loopback, from the distribution's `redis-server`,
//! `redis-sentinel` and `redis-cli`: a 3-master cluster, a master + replica watched by 3
//! sentinels, and a TLS-only server with a test CA.
//!
//! **Everything here is blocking** (plain std: threads sleep while polling, queries use the
//! redis crate's synchronous connection). Start-up takes a few seconds; from a
//! `#[tokio::test]` call it through `tokio::task::spawn_blocking`, e.g.
//! `tokio::task::spawn_blocking(RedisCluster::start).await.unwrap()`; the queries
//! (`master_port`, `keys`, ...) are quick and fine to call directly, but `wait_for_promotion`
//! polls for seconds and belongs in `spawn_blocking` too.
//!
//! Every server runs in a fresh directory under `target/test-artifacts/topologies/` (its
//! `--dir`, where cluster nodes and sentinels write their config files, and where its log
//! goes). Processes are started with `spawn_in_nursery`, so they die with the test process;
//! dropping a bed kills them at once and, unless the thread is panicking, removes the
//! directory (the TLS bed's private keys live only there). A failed test keeps its
//! directory for the logs.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value;

use super::certs::{new_ca, server_leaf};
use super::processes::{artifacts_dir, free_port, spawn_in_nursery};
use super::random_name;

/// How long one server may take to answer after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a topology may take to settle (cluster join, sentinel discovery).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Moving a third of the slots key by key takes about 10 s on a quiet machine and over 30 s
/// on a busy one; this only bounds a move that hangs.
const RESHARD_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// One server process
// ---------------------------------------------------------------------------------------

/// One `redis-server` or `redis-sentinel`: its port, its directory and its log (stdout and
/// stderr, so start-up errors before logging begins are there too).
struct ServerProcess {
    what: String,
    port: u16,
    dir: PathBuf,
    child: Mutex<Child>,
}

impl ServerProcess {
    /// Spawns `command(port, dir)` on a free port and waits until `ready(port)`; retries on
    /// another port when the server exits early (the port was taken meanwhile). Panics with
    /// the log's tail when the server does not come up.
    fn start(
        what: &str,
        dir: &Path,
        mut command: impl FnMut(u16, &Path) -> Command,
        ready: impl Fn(u16) -> bool,
    ) -> ServerProcess {
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).expect("server dir");
            let port = free_port();
            let log = std::fs::File::create(dir.join("server.log")).expect("server log");
            let mut cmd = command(port, dir);
            cmd.current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("log handle")))
                .stderr(Stdio::from(log));
            let child = spawn_in_nursery(cmd);
            let server = ServerProcess {
                what: what.to_owned(),
                port,
                dir: dir.to_owned(),
                child: Mutex::new(child),
            };
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(status) = server.exit_status() {
                    last_failure = format!("exited ({status})");
                    break; // a port taken meanwhile, most likely: try another
                }
                if ready(port) {
                    return server;
                }
                if Instant::now() > deadline {
                    last_failure = format!("not ready after {START_TIMEOUT:?}");
                    server.kill();
                    break;
                }
                std::thread::sleep(POLL);
            }
            if !server.log_tail().contains("Address already in use") {
                break;
            }
        }
        panic!(
            "{what} did not start: {last_failure}\n--- log tail ({}) ---\n{}",
            dir.join("server.log").display(),
            log_tail(dir)
        );
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_wait()
            .ok()
            .flatten()
    }

    fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }

    fn log_tail(&self) -> String {
        format!(
            "--- {} on port {} ---\n{}",
            self.what,
            self.port,
            log_tail(&self.dir)
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last 40 lines of a server's log.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A fresh directory for one bed (its servers get subdirectories).
fn bed_dir(kind: &str) -> PathBuf {
    let dir = artifacts_dir()
        .join("topologies")
        .join(random_name(&format!("{kind}-")));
    std::fs::create_dir_all(&dir).expect("bed dir");
    dir
}

/// Removes a bed's directory unless a test is failing (then its logs stay for a look).
fn remove_bed_dir(dir: &Path) {
    if !std::thread::panicking() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A throw-away server: loopback only, no persistence, its own directory.
fn server_command(port: u16, dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(dir);
    command
}

// ---------------------------------------------------------------------------------------
// Queries (blocking, short timeouts)
// ---------------------------------------------------------------------------------------

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    connection.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(connection)
}

/// One command on a fresh connection to `127.0.0.1:port`.
fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    cmd.query(&mut connect(port)?)
}

fn ping(port: u16) -> bool {
    query::<String>(port, &redis::cmd("PING")).is_ok_and(|answer| answer == "PONG")
}

/// `INFO <section>` as fields.
fn info(port: u16, section: &str) -> Option<HashMap<String, String>> {
    let text: String = query(port, redis::cmd("INFO").arg(section)).ok()?;
    Some(info_fields(&text))
}

fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Okay => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => text(other).parse().unwrap_or(-1),
    }
}

/// A flat `[k1, v1, k2, v2, ...]` reply (sentinel's RESP2 answers) or a map, as fields.
fn fields(value: &Value) -> HashMap<String, String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (text(&pair[0]), text(&pair[1])))
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        _ => HashMap::new(),
    }
}

/// `ROLE`'s first element ("master", "slave", "sentinel").
fn role(port: u16) -> Option<String> {
    let reply: Vec<Value> = query(port, &redis::cmd("ROLE")).ok()?;
    reply.first().map(text)
}

/// Polls `check` until it returns `Some`; panics with `diagnose()` after `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    diagnose: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what}: not reached within {timeout:?}\n{}", diagnose());
        }
        std::thread::sleep(POLL);
    }
}

/// Runs a short-lived tool (redis-cli) with a deadline; its output goes to `output`.
fn run_tool(
    mut command: Command,
    output: &Path,
    timeout: Duration,
) -> (Option<ExitStatus>, String) {
    let file = std::fs::File::create(output).expect("tool output");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("output handle")))
        .stderr(Stdio::from(file));
    let mut child = spawn_in_nursery(command);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(output) {
        let _ = file.read_to_string(&mut text);
    }
    (status, text)
}

// ---------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------

/// Three cluster-enabled masters, no replicas, all 16384 slots assigned.
pub struct RedisCluster {
    nodes: Vec<ServerProcess>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Three `redis-server --cluster-enabled yes --cluster-config-file <dir>/nodes.conf
    /// --cluster-node-timeout 2000` on free ports (each with its cluster bus on another free
    /// port, `--cluster-port`, rather than port + 10000, which may be taken or above 65535),
    /// joined with `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`;
    /// returns once every node reports `cluster_state:ok`, 16384 assigned slots and 3 known
    /// nodes. Blocking.
    pub fn start() -> RedisCluster {
        let dir = bed_dir("cluster");
        let nodes: Vec<ServerProcess> = (1..=3)
            .map(|n| {
                ServerProcess::start(
                    &format!("cluster node {n}"),
                    &dir.join(format!("node{n}")),
                    |port, dir| {
                        let mut command = server_command(port, dir);
                        command
                            .args(["--cluster-enabled", "yes"])
                            .arg("--cluster-config-file")
                            .arg(dir.join("nodes.conf"))
                            .args(["--cluster-node-timeout", "2000"])
                            .args(["--cluster-port", &free_port().to_string()]);
                        command
                    },
                    ping,
                )
            })
            .collect();
        let cluster = RedisCluster { nodes, dir };

        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in cluster.ports() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let (status, output) = run_tool(
            create,
            &cluster.dir.join("cluster-create.log"),
            SETTLE_TIMEOUT,
        );
        if !status.is_some_and(|s| s.success()) {
            panic!(
                "redis-cli --cluster create failed ({status:?}):\n{output}\n{}",
                cluster.log_tails()
            );
        }

        wait_for(
            "cluster state ok on every node",
            SETTLE_TIMEOUT,
            || {
                cluster
                    .ports()
                    .into_iter()
                    .all(|port| {
                        let Ok(text) = query::<String>(port, redis::cmd("CLUSTER").arg("INFO"))
                        else {
                            return false;
                        };
                        let info = info_fields(&text);
                        let field = |k: &str| info.get(k).map(String::as_str);
                        field("cluster_state") == Some("ok")
                            && field("cluster_slots_assigned") == Some("16384")
                            && field("cluster_known_nodes") == Some("3")
                    })
                    .then_some(())
            },
            || {
                let infos: Vec<String> = cluster
                    .ports()
                    .into_iter()
                    .map(|port| {
                        let info = query::<String>(port, redis::cmd("CLUSTER").arg("INFO"))
                            .unwrap_or_else(|e| format!("error: {e}"));
                        format!("--- CLUSTER INFO on {port} ---\n{info}")
                    })
                    .collect();
                format!("{}\n{output}\n{}", infos.join("\n"), cluster.log_tails())
            },
        );
        cluster
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// `redis://127.0.0.1:port/` for each node (seed URLs).
    pub fn seed_urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// The port of the master serving this key's hash slot (CLUSTER KEYSLOT, then CLUSTER
    /// SLOTS, asked of the first node that answers).
    pub fn master_port_for_key(&self, key: &str) -> u16 {
        let mut errors = Vec::new();
        for port in self.ports() {
            let slot = match query::<i64>(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)) {
                Ok(slot) => slot,
                Err(e) => {
                    errors.push(format!("{port}: {e}"));
                    continue;
                }
            };
            let ranges: Vec<Value> = match query(port, redis::cmd("CLUSTER").arg("SLOTS")) {
                Ok(ranges) => ranges,
                Err(e) => {
                    errors.push(format!("{port}: {e}"));
                    continue;
                }
            };
            for range in &ranges {
                let Value::Array(range) = range else { continue };
                if range.len() < 3 || !(int(&range[0])..=int(&range[1])).contains(&slot) {
                    continue;
                }
                if let Value::Array(master) = &range[2] {
                    if let Some(master_port) = master.get(1).map(int) {
                        return u16::try_from(master_port).expect("port");
                    }
                }
            }
            errors.push(format!(
                "{port}: slot {slot} not in CLUSTER SLOTS {ranges:?}"
            ));
        }
        panic!("no master for key {key:?}: {}", errors.join("; "));
    }

    /// All keys matching `pattern` across all nodes (KEYS on each node, merged and sorted).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .ports()
            .into_iter()
            .flat_map(|port| {
                query::<Vec<String>>(port, redis::cmd("KEYS").arg(pattern))
                    .unwrap_or_else(|e| panic!("KEYS on cluster node {port}: {e}"))
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Moves `slots` hash slots, with their keys, from the master on `from` to the master on
    /// `to` (`redis-cli --cluster reshard`: MIGRATING/IMPORTING, then MIGRATE key by key).
    /// Blocking; returns when the move is done.
    pub fn reshard(&self, from: u16, to: u16, slots: u32) {
        let id = |port: u16| -> String {
            query(port, redis::cmd("CLUSTER").arg("MYID"))
                .unwrap_or_else(|e| panic!("CLUSTER MYID on {port}: {e}"))
        };
        let mut reshard = Command::new("redis-cli");
        reshard
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            // Few keys per batch: the move takes a while, so calls meet it half-done.
            .args(["--cluster-pipeline", "1"]);
        let (status, output) = run_tool(
            reshard,
            &self.dir.join(format!("reshard-{from}-{to}.log")),
            RESHARD_TIMEOUT,
        );
        if !status.is_some_and(|s| s.success()) {
            panic!(
                "redis-cli --cluster reshard failed ({status:?}):\n{output}\n{}",
                self.log_tails()
            );
        }
    }

    /// The node id of the node on `port` (CLUSTER MYID).
    pub fn node_id(&self, port: u16) -> String {
        query(port, redis::cmd("CLUSTER").arg("MYID"))
            .unwrap_or_else(|e| panic!("CLUSTER MYID on {port}: {e}"))
    }

    /// The hash slot of `key` (CLUSTER KEYSLOT).
    pub fn key_slot(&self, key: &str) -> u16 {
        let slot: i64 = query(
            self.ports()[0],
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
        .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT: {e}"));
        u16::try_from(slot).expect("slot")
    }

    /// The first step of moving one slot by hand, as `redis-cli --cluster reshard` does:
    /// the target IMPORTING it, the source MIGRATING it (keys still on the source are served
    /// there; others get ASK to the target).
    pub fn begin_slot_move(&self, slot: u16, from: u16, to: u16) {
        let setslot = |port: u16, state: &str, node: &str| {
            let () = query(
                port,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(state)
                    .arg(node),
            )
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state} on {port}: {e}"));
        };
        setslot(to, "IMPORTING", &self.node_id(from));
        setslot(from, "MIGRATING", &self.node_id(to));
    }

    /// MIGRATEs every key of `slot` from `from` to `to`; how many moved.
    pub fn migrate_slot_keys(&self, slot: u16, from: u16, to: u16) -> usize {
        let keys: Vec<String> = query(
            from,
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1000),
        )
        .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot} on {from}: {e}"));
        if !keys.is_empty() {
            let () = query(
                from,
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(to)
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("KEYS")
                    .arg(&keys),
            )
            .unwrap_or_else(|e| panic!("MIGRATE of slot {slot} from {from} to {to}: {e}"));
        }
        keys.len()
    }

    /// Ends a slot's move: `CLUSTER SETSLOT <slot> NODE <to>` on the target, then the other
    /// nodes (the order the cluster specification gives).
    pub fn finish_slot_move(&self, slot: u16, to: u16) {
        let id = self.node_id(to);
        let mut ports = self.ports();
        ports.sort_by_key(|port| *port != to);
        for port in ports {
            let () = query(
                port,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&id),
            )
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} NODE on {port}: {e}"));
        }
    }

    /// The ids of the clients connected to the node on `port` under `name` (CLIENT LIST).
    pub fn client_ids_named(&self, port: u16, name: &str) -> Vec<String> {
        let list: String = query(port, redis::cmd("CLIENT").arg("LIST"))
            .unwrap_or_else(|e| panic!("CLIENT LIST on {port}: {e}"));
        list.lines()
            .filter(|line| line.split_whitespace().any(|f| f == format!("name={name}")))
            .filter_map(|line| line.split_whitespace().next()?.strip_prefix("id="))
            .map(str::to_owned)
            .collect()
    }

    /// `CLIENT KILL ID <id>` on the node on `port`.
    pub fn kill_client(&self, port: u16, id: &str) {
        let () = query(port, redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id))
            .unwrap_or_else(|e| panic!("CLIENT KILL on {port}: {e}"));
    }

    /// Deletes a key on the node on `port` (which must serve its slot).
    pub fn delete_key(&self, port: u16, key: &str) -> i64 {
        query(port, redis::cmd("DEL").arg(key)).unwrap_or_else(|e| panic!("DEL on {port}: {e}"))
    }

    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(ServerProcess::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear(); // kills them
        remove_bed_dir(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------

/// A master, one replica and 3 sentinels (quorum 2) watching them.
pub struct SentinelBed {
    name: String,
    /// Master and replica as started (which one is master changes with a failover).
    servers: Vec<ServerProcess>,
    sentinels: Vec<ServerProcess>,
    dir: PathBuf,
}

impl SentinelBed {
    /// A master on a free port, a replica (`--replicaof 127.0.0.1 <master>`) and 3
    /// `redis-sentinel <conf>`, each conf in its own directory (`sentinel monitor <name>
    /// 127.0.0.1 <master> 2`, down-after 1000 ms, failover-timeout 5000 ms, parallel-syncs
    /// 1). Returns once the replica's link is up and every sentinel knows the replica and the
    /// 2 other sentinels, so a failover can happen right away. Blocking.
    pub fn start(master_name: &str) -> SentinelBed {
        let dir = bed_dir("sentinel");
        let master = ServerProcess::start("master", &dir.join("master"), server_command, ping);
        let master_port = master.port;
        let replica = ServerProcess::start(
            "replica",
            &dir.join("replica"),
            |port, dir| {
                let mut command = server_command(port, dir);
                command.args(["--replicaof", "127.0.0.1", &master_port.to_string()]);
                command
            },
            ping,
        );
        let replica_port = replica.port;
        wait_for(
            "replica linked to its master",
            SETTLE_TIMEOUT,
            || {
                info(replica_port, "replication")
                    .filter(|i| i.get("master_link_status").map(String::as_str) == Some("up"))
            },
            || format!("{}\n{}", master.log_tail(), replica.log_tail()),
        );

        let sentinels: Vec<ServerProcess> = (1..=3)
            .map(|n| {
                ServerProcess::start(
                    &format!("sentinel {n}"),
                    &dir.join(format!("sentinel{n}")),
                    |port, dir| {
                        let conf = dir.join("sentinel.conf");
                        let name = master_name;
                        std::fs::write(
                            &conf,
                            format!(
                                "port {port}\n\
                                 bind 127.0.0.1\n\
                                 daemonize no\n\
                                 loglevel warning\n\
                                 dir \"{}\"\n\
                                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                                 sentinel down-after-milliseconds {name} 1000\n\
                                 sentinel failover-timeout {name} 5000\n\
                                 sentinel parallel-syncs {name} 1\n",
                                dir.display()
                            ),
                        )
                        .expect("sentinel config");
                        let mut command = Command::new("redis-sentinel");
                        command.arg(&conf);
                        command
                    },
                    ping,
                )
            })
            .collect();
        let bed = SentinelBed {
            name: master_name.to_owned(),
            servers: vec![master, replica],
            sentinels,
            dir,
        };

        wait_for(
            "every sentinel knows the replica and the other sentinels",
            SETTLE_TIMEOUT,
            || {
                bed.sentinels
                    .iter()
                    .all(|sentinel| bed.sentinel_ready(sentinel.port, replica_port))
                    .then_some(())
            },
            || bed.diagnose(),
        );
        bed
    }

    /// Whether one sentinel sees the replica (connected, not down) and 2 other sentinels.
    fn sentinel_ready(&self, sentinel: u16, replica_port: u16) -> bool {
        let replicas: Vec<Value> = match query(
            sentinel,
            redis::cmd("SENTINEL").arg("REPLICAS").arg(&self.name),
        ) {
            Ok(replicas) => replicas,
            Err(_) => return false,
        };
        let replica_ok = replicas.iter().map(fields).any(|r| {
            r.get("port") == Some(&replica_port.to_string())
                && r.get("flags").is_some_and(|f| {
                    f.split(',')
                        .all(|flag| !matches!(flag, "s_down" | "o_down" | "disconnected"))
                })
        });
        let others: Vec<Value> = match query(
            sentinel,
            redis::cmd("SENTINEL").arg("SENTINELS").arg(&self.name),
        ) {
            Ok(others) => others,
            Err(_) => return false,
        };
        replica_ok && others.len() == 2
    }

    pub fn master_name(&self) -> &str {
        &self.name
    }

    /// `redis://127.0.0.1:port/` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}/", s.port))
            .collect()
    }

    /// The master's port each sentinel reports (None: no answer).
    fn reported_master_ports(&self) -> Vec<Option<u16>> {
        self.sentinels
            .iter()
            .map(|sentinel| {
                let reply: Vec<Value> = query(
                    sentinel.port,
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(&self.name),
                )
                .ok()?;
                reply.get(1).and_then(|port| u16::try_from(int(port)).ok())
            })
            .collect()
    }

    /// The port a majority of the sentinels reports, if any.
    fn majority_master_port(&self) -> Option<u16> {
        let reports = self.reported_master_ports();
        let majority = self.sentinels.len() / 2 + 1;
        reports
            .iter()
            .flatten()
            .copied()
            .find(|port| reports.iter().filter(|r| **r == Some(*port)).count() >= majority)
    }

    /// The port the sentinels currently report for the master (SENTINEL
    /// GET-MASTER-ADDR-BY-NAME, majority of sentinels; waits up to 5 s for a majority).
    pub fn master_port(&self) -> u16 {
        wait_for(
            "a majority of sentinels agreeing on the master",
            Duration::from_secs(5),
            || self.majority_master_port(),
            || format!("reports: {:?}", self.reported_master_ports()),
        )
    }

    /// A plain `redis://` URL of the current master (for the test to inspect data).
    pub fn master_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.master_port())
    }

    /// SIGKILLs the process currently serving as master (as the sentinels report it);
    /// returns the instant of the kill.
    pub fn kill_master(&self) -> Instant {
        let port = self.master_port();
        let server = self
            .servers
            .iter()
            .find(|server| server.port == port)
            .unwrap_or_else(|| panic!("the sentinels report master port {port}, not one of ours"));
        server.kill();
        Instant::now()
    }

    /// Waits (up to `timeout`) until a majority of sentinels report a master on another port
    /// than `old_port` and that server answers `ROLE` with "master"; returns the instant
    /// that was first observed. Panics on timeout (with the sentinels' logs). Blocking.
    pub fn wait_for_promotion(&self, old_port: u16, timeout: Duration) -> Instant {
        wait_for(
            &format!("promotion of a new master instead of port {old_port}"),
            timeout,
            || {
                let port = self.majority_master_port().filter(|p| *p != old_port)?;
                (role(port).as_deref() == Some("master")).then(Instant::now)
            },
            || self.diagnose(),
        )
    }

    fn diagnose(&self) -> String {
        let mut text = format!(
            "sentinels report master ports {:?}\n",
            self.reported_master_ports()
        );
        for server in &self.servers {
            text.push_str(&format!(
                "port {} ROLE {:?}\n",
                server.port,
                role(server.port)
            ));
        }
        for process in self.servers.iter().chain(&self.sentinels) {
            text.push_str(&process.log_tail());
            text.push('\n');
        }
        text
    }
}

impl Drop for SentinelBed {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.servers.clear();
        remove_bed_dir(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

/// A redis-server with only a TLS port, its certificate signed by a test CA made here.
pub struct TlsRedis {
    server: Option<ServerProcess>,
    dir: PathBuf,
}

/// `redis-cli --tls --cacert <ca> -p <port> PING`: the output (PONG when all is well) and
/// whether it exited successfully.
pub fn tls_ping_with_cli(port: u16, ca_file: &Path) -> (bool, String) {
    let mut command = Command::new("redis-cli");
    command.args(["--tls", "--cacert"]).arg(ca_file).args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "PING",
    ]);
    let output = ca_file.with_file_name(format!("{}.out", random_name("cli-")));
    let (status, text) = run_tool(command, &output, Duration::from_secs(5));
    let _ = std::fs::remove_file(&output);
    (status.is_some_and(|s| s.success()), text)
}

impl TlsRedis {
    /// Makes a test CA and a server certificate (SANs "localhost" and IP 127.0.0.1), writes
    /// `ca.pem`, `server.pem`, `server.key` and `other-ca.pem` (a CA that did not sign the
    /// server certificate) into a fresh directory, and starts `redis-server --port 0
    /// --tls-port <p> ... --tls-auth-clients no`; returns once `redis-cli --tls --cacert
    /// ca.pem PING` answers PONG. Blocking.
    pub fn start() -> TlsRedis {
        let dir = bed_dir("tls");
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");

        let ca = new_ca("gatehouse topology test CA");
        let other_ca = new_ca("gatehouse topology other CA");
        let server = server_leaf(&ca, "localhost");
        std::fs::write(certs.join("ca.pem"), ca.cert.pem()).expect("write ca.pem");
        std::fs::write(certs.join("other-ca.pem"), other_ca.cert.pem())
            .expect("write other-ca.pem");
        std::fs::write(certs.join("server.pem"), server.cert_pem).expect("write server.pem");
        std::fs::write(certs.join("server.key"), server.key_pem).expect("write server.key");

        let ca_file = certs.join("ca.pem");
        let server = ServerProcess::start(
            "TLS redis-server",
            &dir.join("server"),
            |port, dir| {
                let mut command = Command::new("redis-server");
                command
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(certs.join("server.pem"))
                    .arg("--tls-key-file")
                    .arg(certs.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(certs.join("ca.pem"))
                    .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .args(["--daemonize", "no", "--loglevel", "warning"])
                    .arg("--dir")
                    .arg(dir);
                command
            },
            |port| {
                // Not before the port listens: saves spawning redis-cli in a loop.
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && tls_ping_with_cli(port, &ca_file).1.trim() == "PONG"
            },
        );
        TlsRedis {
            server: Some(server),
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.as_ref().expect("running").port
    }

    /// `rediss://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port())
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("certs").join("ca.pem")
    }

    /// A CA certificate that did not sign the server's certificate.
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.join("certs").join("other-ca.pem")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.server.take();
        remove_bed_dir(&self.dir);
    }
}
