//! The Redis topology test bed itself works: a 3-master cluster that routes keys, a sentinel
//! set that fails over, a TLS-only server that only its own CA vouches for.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::helpers::topologies::{tls_ping_with_cli, RedisCluster, SentinelBed, TlsRedis};

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

#[tokio::test]
async fn cluster_bed_routes_keys_to_three_masters() {
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster start");
    println!("cluster of 3 masters up in {:?}", started.elapsed());
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(cluster.seed_urls().len(), 3);

    // Three keys that land on three different masters.
    let mut chosen: Vec<(String, u16)> = Vec::new();
    for n in 0..1000 {
        let key = format!("topo:key:{n}");
        let port = cluster.master_port_for_key(&key);
        assert!(ports.contains(&port), "{key} maps to {port}, not a node");
        if chosen.iter().all(|(_, p)| *p != port) {
            chosen.push((key, port));
        }
        if chosen.len() == 3 {
            break;
        }
    }
    assert_eq!(chosen.len(), 3, "keys did not spread over 3 masters");

    for (key, port) in &chosen {
        let mut owner = connection(&format!("redis://127.0.0.1:{port}/")).await;
        let () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query_async(&mut owner)
            .await
            .expect("SET on the owning node");
        // Any other node redirects: the slot map is what the bed says it is.
        let other = ports.iter().find(|p| *p != port).expect("another node");
        let mut other = connection(&format!("redis://127.0.0.1:{other}/")).await;
        let refused = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query_async::<()>(&mut other)
            .await
            .expect_err("a non-owning node refuses the key");
        assert!(
            refused.to_string().to_lowercase().contains("moved"),
            "expected MOVED, got {refused}"
        );
    }

    let found: BTreeSet<String> = cluster.keys("topo:*").into_iter().collect();
    let expected: BTreeSet<String> = chosen.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn sentinel_bed_fails_over_to_the_replica() {
    let started = Instant::now();
    let bed = tokio::task::spawn_blocking(|| SentinelBed::start("topomaster"))
        .await
        .expect("sentinel bed start");
    println!("sentinel bed up in {:?}", started.elapsed());
    assert_eq!(bed.master_name(), "topomaster");
    assert_eq!(bed.sentinel_urls().len(), 3);

    let old_port = bed.master_port();
    let mut master = connection(&bed.master_url()).await;
    let () = redis::cmd("SET")
        .arg("topo:before-failover")
        .arg("kept")
        .query_async(&mut master)
        .await
        .expect("SET");
    // The write reached the replica before the master dies.
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query_async(&mut master)
        .await
        .expect("WAIT");
    assert_eq!(acked, 1, "replica did not acknowledge the write");

    let (bed, killed, promoted, new_port) = tokio::task::spawn_blocking(move || {
        let killed = bed.kill_master();
        let promoted = bed.wait_for_promotion(old_port, Duration::from_secs(30));
        let new_port = bed.master_port();
        (bed, killed, promoted, new_port)
    })
    .await
    .expect("failover");
    println!(
        "sentinel failover: master killed -> replica promoted and reported in {:?}",
        promoted - killed
    );
    assert_ne!(new_port, old_port);

    let mut master = connection(&bed.master_url()).await;
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut master)
        .await
        .expect("ROLE");
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
    let kept: Option<String> = redis::cmd("GET")
        .arg("topo:before-failover")
        .query_async(&mut master)
        .await
        .expect("GET on the new master");
    assert_eq!(kept.as_deref(), Some("kept"));
    let () = redis::cmd("SET")
        .arg("topo:after-failover")
        .arg("1")
        .query_async(&mut master)
        .await
        .expect("the new master takes writes");
}

#[tokio::test]
async fn tls_bed_answers_only_to_its_own_ca() {
    let tls = tokio::task::spawn_blocking(TlsRedis::start)
        .await
        .expect("TLS redis start");
    assert_eq!(tls.url(), format!("rediss://127.0.0.1:{}/", tls.port()));

    let (port, ca, wrong) = (tls.port(), tls.ca_file(), tls.wrong_ca_file());
    let (good, bad) = tokio::task::spawn_blocking(move || {
        (
            tls_ping_with_cli(port, &ca),
            tls_ping_with_cli(port, &wrong),
        )
    })
    .await
    .expect("redis-cli");
    assert!(good.0 && good.1.trim() == "PONG", "right CA: {good:?}");
    assert!(
        !bad.0 && bad.1.contains("certificate verify failed"),
        "a CA that did not sign the server's certificate must not be trusted: {bad:?}"
    );
    println!("wrong CA: {}", bad.1.trim());

    // Plain text gets no answer on the TLS port.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}/", tls.port()))
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(1))
        .and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(1)))?;
            redis::cmd("PING").query::<String>(&mut c)
        });
    assert!(plain.is_err(), "plain text answered on the TLS port");
}
