//! The session cache on a Redis Cluster: one tracking connection per master, and the
//! cache's slot map kept in step with the cluster's.
//!
//! A thread of its own asks the cluster for its slot map (`CLUSTER SLOTS`) every
//! `CHECK_EVERY`, and at once when something suggests a change: a read of the cache met a
//! MOVED or ASK, or a master's tracking connection broke. A new master gets a tracker
//! thread (`tracking::run`); a master that left the map is retired, and its entries are
//! dropped; entries of slots that changed hands are dropped (`SessionCache::serve_slots`).
//!
//! Between two checks the map may be behind the cluster. That costs nothing in coherence: a
//! session is cached only from a read on the master itself (which answers MOVED or ASK
//! for a slot it gave away), and a key that leaves a master by MIGRATE is deleted there, so
//! that master's tracking connection reports it and the entry goes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::cache::{SessionCache, TopologyHint};
use super::connection::Connector;
use super::node::Node;
use super::slots::parse_cluster_slots;
use super::tracking::{self, TrackingListener};

/// How often the slot map is checked when nothing suggests a change.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Checks never follow each other closer than this (a resharding meets many MOVEDs).
const CHECK_AT_MOST_EVERY: Duration = Duration::from_millis(100);

type Address = (String, u16);

/// Follows the cluster for as long as the cache lives.
pub(super) fn follow(
    cache: Weak<SessionCache>,
    hint: Arc<TopologyHint>,
    connector: Arc<Connector>,
    session_prefix: String,
    connect_timeout: Duration,
    target: String,
) {
    let mut trackers: HashMap<Address, Arc<Node>> = HashMap::new();
    // The map last placed: the same map is not placed again (placing stops the fills of the
    // reads under way).
    let mut placed: Vec<(u16, u16, Address)> = Vec::new();
    let mut reported = false;
    loop {
        let checked_at = Instant::now();
        let Some(live) = cache.upgrade() else { break };
        match slot_map(&connector, &trackers, connect_timeout) {
            Ok(mut ranges) => {
                if reported {
                    tracing::info!(redis = %target, "the cluster's slot map is known again");
                    reported = false;
                }
                ranges.sort();
                if ranges != placed {
                    let complete = place(&live, &ranges, &mut trackers, |node| {
                        start_tracker(
                            &cache,
                            node,
                            &connector,
                            &session_prefix,
                            connect_timeout,
                            &target,
                        )
                    });
                    // A master without a tracker (no thread): try again next round.
                    placed = if complete { ranges } else { Vec::new() };
                }
            }
            Err(reason) => {
                if !reported {
                    tracing::warn!(
                        redis = %target,
                        %reason,
                        "session cache: the cluster's slot map is unknown; serving the map last seen"
                    );
                    reported = true;
                }
            }
        }
        drop(live);
        hint.wait(CHECK_EVERY);
        let since = checked_at.elapsed();
        if since < CHECK_AT_MOST_EVERY {
            std::thread::sleep(CHECK_AT_MOST_EVERY - since);
        }
    }
    for node in trackers.values() {
        node.retire();
    }
}

/// Makes `ranges` the cache's slot map: masters that left are retired (their entries go),
/// new ones get a tracker. Whether every master has one.
fn place(
    cache: &SessionCache,
    ranges: &[(u16, u16, Address)],
    trackers: &mut HashMap<Address, Arc<Node>>,
    start: impl Fn(&Arc<Node>) -> std::io::Result<()>,
) -> bool {
    let masters: HashSet<&Address> = ranges.iter().map(|(_, _, a)| a).collect();
    trackers.retain(|address, node| {
        let stays = masters.contains(address);
        if !stays {
            node.retire();
            cache.go_dark(node);
        }
        stays
    });
    let mut complete = true;
    for address in masters {
        if trackers.contains_key(address) {
            continue;
        }
        let node = cache.new_node(Some(address.clone()));
        match start(&node) {
            Ok(()) => {
                trackers.insert(address.clone(), node);
            }
            Err(e) => {
                complete = false;
                tracing::error!(
                    error = %e,
                    "session cache: no tracker thread for a cluster master"
                );
            }
        }
    }
    let slots: Vec<(u16, u16, Arc<Node>)> = ranges
        .iter()
        .filter_map(|(first, last, address)| Some((*first, *last, trackers.get(address)?.clone())))
        .collect();
    cache.serve_slots(&slots);
    complete
}

/// The slot map, asked of the masters tracked now, then of the seeds.
fn slot_map(
    connector: &Connector,
    trackers: &HashMap<Address, Arc<Node>>,
    connect_timeout: Duration,
) -> Result<Vec<(u16, u16, Address)>, String> {
    let mut candidates: Vec<Address> = trackers.keys().cloned().collect();
    candidates.sort();
    let mut endpoints: Vec<_> = candidates
        .into_iter()
        .map(|(host, port)| connector.node_endpoint(host, port))
        .collect();
    endpoints.extend(connector.cluster_seeds());
    let mut reasons = Vec::new();
    for endpoint in endpoints {
        let answer = tracking::query(&endpoint, connect_timeout, &[b"CLUSTER", b"SLOTS"])
            .and_then(|reply| parse_cluster_slots(&reply, &endpoint.host));
        match answer {
            Ok(ranges) if !ranges.is_empty() => return Ok(ranges),
            Ok(_) => reasons.push(format!("{}:{}: no slots", endpoint.host, endpoint.port)),
            Err(reason) => reasons.push(format!("{}:{}: {reason}", endpoint.host, endpoint.port)),
        }
    }
    Err(reasons.join("; "))
}

fn start_tracker(
    cache: &Weak<SessionCache>,
    node: &Arc<Node>,
    connector: &Arc<Connector>,
    session_prefix: &str,
    connect_timeout: Duration,
    target: &str,
) -> std::io::Result<()> {
    let (cache, node, connector) = (cache.clone(), node.clone(), connector.clone());
    let (session_prefix, target) = (session_prefix.to_owned(), target.to_owned());
    let (host, port) = node.address.clone().unwrap_or_default();
    std::thread::Builder::new()
        .name(format!("session-cache-{port}"))
        .spawn(move || {
            let endpoint = || Ok(connector.node_endpoint(host.clone(), port));
            tracking::run(
                cache,
                node,
                endpoint,
                &session_prefix,
                connect_timeout,
                &target,
            );
        })
        .map(drop)
}
