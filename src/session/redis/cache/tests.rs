use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::*;
use crate::session::redis::node::STALE_AFTER;

fn session(last_touch: UnixMillis) -> CachedSession {
    CachedSession {
        record: Arc::new(SessionRecord {
            sealed: vec![1, 2, 3],
            provider: "main".into(),
            sub: "alice".into(),
            provider_sid: None,
            created_at: 0,
            absolute_expires_at: 10,
            device: "Firefox on Linux".into(),
            revocation: None,
        }),
        last_touch,
        memo: Memo::default(),
    }
}

/// A node whose channel is a socket pair, live; the other end is returned, to play Redis.
fn live_node(cache: &SessionCache, port: u16) -> (Arc<Node>, UnixStream) {
    let node = cache.new_node(cache.routed.then(|| ("127.0.0.1".to_owned(), port)));
    let (ours, redis) = UnixStream::pair().expect("socket pair");
    node.channel.open(ours.as_raw_fd());
    std::mem::forget(ours); // lives as long as the test process
    cache.go_live(&node, Instant::now());
    (node, redis)
}

/// A one-server cache, live; and its node's peer socket.
fn live_cache_with_peer(capacity: usize) -> (SessionCache, Arc<Node>, UnixStream) {
    let cache = SessionCache::new(NonZeroUsize::new(capacity).expect("capacity"), false);
    let (node, redis) = live_node(&cache, 0);
    cache.serve_everything_from(node.clone());
    (cache, node, redis)
}

fn live_cache(capacity: usize) -> (SessionCache, Arc<Node>) {
    let (cache, node, redis) = live_cache_with_peer(capacity);
    std::mem::forget(redis);
    (cache, node)
}

fn fill(cache: &SessionCache, key: &str, slot: u16, last_touch: UnixMillis) -> bool {
    cache.fill(key, cache.ticket(slot), session(last_touch))
}

#[test]
fn an_invalidation_waiting_in_the_socket_stops_serving_at_once() {
    let (cache, _node, mut redis) = live_cache_with_peer(10);
    fill(&cache, "k", 0, 1);
    assert!(cache.get("k", 0).is_some());
    redis.write_all(b">2\r\n").expect("write");
    assert!(
        cache.get("k", 0).is_none(),
        "unread bytes: read Redis instead"
    );
}

#[test]
fn a_read_that_overlapped_an_invalidation_is_not_kept() {
    let (cache, _node) = live_cache(10);
    let ticket = cache.ticket(0);
    cache.invalidate("other");
    cache.fill("k", ticket, session(1));
    assert!(cache.get("k", 0).is_none());
    fill(&cache, "k", 0, 2);
    assert_eq!(cache.get("k", 0).map(|s| s.last_touch), Some(2));
}

#[test]
fn nothing_is_served_while_the_channel_is_down_or_unvouched() {
    let (cache, node) = live_cache(10);
    fill(&cache, "k", 0, 1);
    assert!(cache.get("k", 0).is_some());
    cache.go_dark(&node);
    assert!(cache.get("k", 0).is_none());
    assert_eq!(cache.len(), 0, "emptied, not just hidden");

    let (cache, node) = live_cache(10);
    fill(&cache, "k", 0, 1);
    node.vouch(Instant::now() - STALE_AFTER * 2);
    assert!(cache.get("k", 0).is_none(), "no recent heartbeat, no cache");
}

#[test]
fn a_read_begun_before_tracking_came_back_is_not_kept() {
    let (cache, node) = live_cache(10);
    let ticket = cache.ticket(0);
    cache.go_dark(&node);
    cache.go_live(&node, Instant::now());
    assert!(!cache.fill("k", ticket, session(1)), "another epoch");
    assert!(fill(&cache, "k", 0, 1));
}

#[test]
fn pushes_drop_the_keys_they_name_and_a_flush_drops_all() {
    let (cache, node) = live_cache(10);
    for key in ["a", "b", "c"] {
        fill(&cache, key, 0, 1);
    }
    let pushed = |key: &str| Frame::Bulk(format!("gh:s:{{{key}}}").into_bytes());
    cache.apply_invalidation(&node, "gh:s:", Some(&Frame::Array(vec![pushed("a")])));
    assert!(cache.get("a", 0).is_none());
    assert!(cache.get("b", 0).is_some());
    cache.apply_invalidation(&node, "gh:s:", Some(&Frame::Null));
    assert_eq!(cache.len(), 0);
}

#[test]
fn the_least_recently_used_entry_leaves_first() {
    let (cache, _node) = live_cache(2);
    fill(&cache, "a", 0, 1);
    fill(&cache, "b", 0, 1);
    assert!(cache.get("a", 0).is_some());
    fill(&cache, "c", 0, 1);
    assert!(cache.get("b", 0).is_none());
    assert!(cache.get("a", 0).is_some() && cache.get("c", 0).is_some());
}

/// Three masters with 0–99, 100–199 and 200–16383; an entry cached in slot 0, 100 and 200.
fn cluster() -> (SessionCache, Vec<(Arc<Node>, UnixStream)>) {
    let cache = SessionCache::new(NonZeroUsize::new(10).expect("capacity"), true);
    let nodes: Vec<_> = (1..=3).map(|port| live_node(&cache, port)).collect();
    cache.serve_slots(&[
        (0, 99, nodes[0].0.clone()),
        (100, 199, nodes[1].0.clone()),
        (200, 16383, nodes[2].0.clone()),
    ]);
    for (key, slot) in [("a", 0), ("b", 100), ("c", 200)] {
        let ticket = cache.ticket(slot);
        assert_eq!(
            ticket.read_at().map(|(_, port)| *port),
            Some(1 + slot / 100),
            "read at the slot's master"
        );
        assert!(cache.fill(key, ticket, session(1)));
    }
    (cache, nodes)
}

#[test]
fn a_broken_node_drops_its_own_entries_only() {
    let (cache, nodes) = cluster();
    cache.go_dark(&nodes[1].0);
    assert!(cache.get("b", 100).is_none());
    assert_eq!(cache.len(), 2);
    assert!(cache.get("a", 0).is_some() && cache.get("c", 200).is_some());
    assert!(!cache.statistics().serving, "not every node serves");
    assert!(!fill(&cache, "b", 100, 1), "its slots are bypassed");
    cache.go_live(&nodes[1].0, Instant::now());
    assert!(fill(&cache, "b", 100, 1));
    assert!(cache.get("b", 100).is_some());
}

#[test]
fn unread_bytes_on_one_node_stop_only_its_slots() {
    let (cache, mut nodes) = cluster();
    nodes[0].1.write_all(b">2\r\n").expect("write");
    assert!(cache.get("a", 0).is_none());
    assert!(cache.get("b", 100).is_some() && cache.get("c", 200).is_some());
}

#[test]
fn slots_that_change_hands_drop_their_entries() {
    let (cache, nodes) = cluster();
    let ticket = cache.ticket(150);
    // Slots 100–199 move to the first master.
    cache.serve_slots(&[
        (0, 199, nodes[0].0.clone()),
        (200, 16383, nodes[2].0.clone()),
    ]);
    assert!(cache.get("b", 100).is_none());
    assert_eq!(cache.len(), 2, "only the moved slot's entry left");
    assert!(cache.get("a", 0).is_some() && cache.get("c", 200).is_some());
    assert!(
        !cache.fill("d", ticket, session(1)),
        "read from the old master"
    );
    // An entry is only served by the node it was read from.
    assert!(fill(&cache, "b", 100, 1));
    assert!(cache.get("b", 100).is_some());
}

#[test]
fn a_suspected_topology_wakes_the_follower_once() {
    let hint = TopologyHint::default();
    let started = Instant::now();
    assert!(!hint.wait(Duration::from_millis(20)), "nothing suspected");
    assert!(started.elapsed() >= Duration::from_millis(20));
    hint.suspect();
    let started = Instant::now();
    assert!(hint.wait(Duration::from_secs(5)), "woken");
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    assert!(
        !hint.wait(Duration::from_millis(1)),
        "taken by the first wait"
    );
}
