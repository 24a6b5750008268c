//! The session cache: sessions read from Redis stay in process, still sealed, for as long as
//! Redis vouches for them. A tracking connection per node (`CLIENT TRACKING ON BCAST PREFIX
//! <prefix>:s:` over RESP3, see `tracking`) hears of every change to any session key on that
//! node, from any instance or operator command, and drops that entry here.
//!
//! An entry remembers the node it was read from and that node's tracking epoch. It is only
//! ever served while that node still serves the entry's slot and its invalidation channel is
//! known to be whole: tracking is on (in the same epoch), the connection answered a PING
//! within `STALE_AFTER`, and no invalidation is waiting unread in its socket. When a node's
//! channel breaks (connection lost, Redis restarted, a failover), that node's entries are
//! dropped and its slots bypassed until tracking is re-established, because an entry may have
//! missed its invalidation meanwhile; the other nodes' entries keep being served.
//!
//! One server or a Sentinel master is a single node that serves every slot; a cluster has a
//! node per master and a slot map, kept current by `cluster_tracking`.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::node::Node;
use super::resp3::Frame;
use super::tracking::TrackingListener;
use crate::clock::UnixMillis;
use crate::session::store::{CacheStatistics, Memo, SessionRecord};

/// The number of hash slots of a Redis Cluster.
pub(super) const SLOTS: usize = 16384;

/// A session hash as read from Redis: the sealed payload and its metadata, and the session
/// manager's memo of it (the opened session, for the cookie that opened it).
#[derive(Clone)]
pub(super) struct CachedSession {
    pub(super) record: Arc<SessionRecord>,
    pub(super) last_touch: UnixMillis,
    pub(super) memo: Memo,
}

struct Entry {
    session: CachedSession,
    /// The node it was read from, in which tracking epoch, for which slot.
    node: Arc<Node>,
    epoch: u64,
    slot: u16,
}

/// Which node serves which slot.
#[derive(Default)]
struct Placement {
    /// Slot → index in `nodes` (`NONE`: nobody serves it now). Empty: `nodes[0]` serves all.
    owners: Vec<u16>,
    nodes: Vec<Arc<Node>>,
}

const NONE: u16 = u16::MAX;

impl Placement {
    fn owner(&self, slot: u16) -> Option<&Arc<Node>> {
        if self.owners.is_empty() {
            return self.nodes.first();
        }
        let index = *self.owners.get(usize::from(slot))?;
        self.nodes.get(usize::from(index))
    }
}

/// A hint that the cluster's topology changed (a MOVED or ASK met by a read, a node's channel
/// broke): whoever follows the topology looks again now rather than at its next round.
#[derive(Default)]
pub(super) struct TopologyHint {
    suspected: Mutex<bool>,
    wake: Condvar,
}

impl TopologyHint {
    pub(super) fn suspect(&self) {
        *self.suspected.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits up to `timeout` for a suspicion; whether there was one (it is taken).
    pub(super) fn wait(&self, timeout: Duration) -> bool {
        let suspected = self.suspected.lock().unwrap_or_else(|p| p.into_inner());
        let (mut suspected, _) = self
            .wake
            .wait_timeout_while(suspected, timeout, |s| !*s)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *suspected)
    }
}

pub(super) struct SessionCache {
    entries: Mutex<LruCache<String, Entry>>,
    /// Bumped by every invalidation: a read that overlapped one does not fill the cache.
    invalidations: AtomicU64,
    placement: RwLock<Arc<Placement>>,
    /// Whether reads must go to the node that serves the slot by name (a cluster).
    routed: bool,
    clock_zero: Instant,
    hits: AtomicU64,
    misses: AtomicU64,
    topology: Arc<TopologyHint>,
}

/// What a reader noted before asking Redis, so that it fills the cache only if nothing was
/// invalidated meanwhile and the node it read from still vouches for the slot.
pub(super) struct ReadTicket {
    invalidations: u64,
    slot: u16,
    node: Option<(Arc<Node>, u64)>,
}

impl ReadTicket {
    /// The node to read from, when the read must go there by name (a cluster master). A read
    /// elsewhere must not fill the cache.
    pub(super) fn read_at(&self) -> Option<&(String, u16)> {
        self.node.as_ref()?.0.address.as_ref()
    }
}

impl SessionCache {
    /// An empty cache with no node yet: `routed` for a cluster (reads go to a slot's master
    /// by name), else one node serves everything (see `serve_everything_from`).
    pub(super) fn new(capacity: NonZeroUsize, routed: bool) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            invalidations: AtomicU64::new(0),
            placement: RwLock::new(Arc::new(Placement::default())),
            routed,
            clock_zero: Instant::now(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            topology: Arc::new(TopologyHint::default()),
        }
    }

    pub(super) fn routed(&self) -> bool {
        self.routed
    }

    pub(super) fn topology_hint(&self) -> Arc<TopologyHint> {
        self.topology.clone()
    }

    /// A node for this cache's placement (its heartbeats are measured on the cache's clock).
    pub(super) fn new_node(&self, address: Option<(String, u16)>) -> Arc<Node> {
        Arc::new(Node::new(address, self.clock_zero))
    }

    /// One server, or the Sentinel master: one node serves every slot.
    pub(super) fn serve_everything_from(&self, node: Arc<Node>) {
        self.place(Placement {
            owners: Vec::new(),
            nodes: vec![node],
        });
    }

    /// A cluster's slot map: `ranges` of slots and the node that serves them. Entries of
    /// slots that changed hands are dropped.
    pub(super) fn serve_slots(&self, ranges: &[(u16, u16, Arc<Node>)]) {
        let mut placement = Placement {
            owners: vec![NONE; SLOTS],
            nodes: Vec::new(),
        };
        for (first, last, node) in ranges {
            let index = match placement.nodes.iter().position(|n| Arc::ptr_eq(n, node)) {
                Some(index) => index,
                None => {
                    placement.nodes.push(node.clone());
                    placement.nodes.len() - 1
                }
            };
            let (first, last) = (usize::from(*first), usize::from(*last).min(SLOTS - 1));
            for owner in placement.owners.iter_mut().take(last + 1).skip(first) {
                *owner = index as u16;
            }
        }
        self.place(placement);
    }

    fn place(&self, placement: Placement) {
        let placement = Arc::new(placement);
        let mut entries = self.lock();
        let before = self.placement();
        let moved = |slot: u16| match (before.owner(slot), placement.owner(slot)) {
            (Some(old), Some(new)) => !Arc::ptr_eq(old, new),
            _ => true,
        };
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        drop_where(&mut entries, |entry| moved(entry.slot));
        *self.placement.write().unwrap_or_else(|p| p.into_inner()) = placement;
    }

    fn placement(&self) -> Arc<Placement> {
        self.placement
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn owner(&self, slot: u16) -> Option<Arc<Node>> {
        self.placement
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .owner(slot)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written: LruCache's
        // operations complete or do not happen.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session cached under `key` (in hash slot `slot`), if it may be served.
    pub(super) fn get(&self, key: &str, slot: u16) -> Option<CachedSession> {
        // The channel check comes first: an invalidation it finds waiting may be this key's.
        let found = self
            .owner(slot)
            .filter(|node| node.serving() && node.channel.quiet())
            .and_then(|node| {
                let epoch = node.epoch();
                let mut entries = self.lock();
                entries
                    .get(key)
                    .filter(|entry| Arc::ptr_eq(&entry.node, &node) && entry.epoch == epoch)
                    .map(|entry| entry.session.clone())
            });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(super) fn statistics(&self) -> CacheStatistics {
        let placement = self.placement();
        CacheStatistics {
            serving: !placement.nodes.is_empty() && placement.nodes.iter().all(|n| n.serving()),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    /// Notes, before a read of a key in `slot`, what must not change until it fills.
    pub(super) fn ticket(&self, slot: u16) -> ReadTicket {
        let invalidations = self.invalidations.load(Ordering::Acquire);
        let node = self.owner(slot).filter(|node| node.serving()).map(|node| {
            let epoch = node.epoch();
            (node, epoch)
        });
        ReadTicket {
            invalidations,
            slot,
            node,
        }
    }

    /// Keeps what a read found, unless the node's channel is down or in another epoch, the
    /// slot changed hands, or anything was invalidated since the read began (it might have
    /// been this key, changed after Redis answered). Whether it was kept.
    pub(super) fn fill(&self, key: &str, ticket: ReadTicket, session: CachedSession) -> bool {
        let Some((node, epoch)) = ticket.node else {
            return false;
        };
        let still_owner = self
            .owner(ticket.slot)
            .is_some_and(|owner| Arc::ptr_eq(&owner, &node));
        if !still_owner || !node.serving() || node.epoch() != epoch {
            return false;
        }
        let mut entries = self.lock();
        let unchanged = self.invalidations.load(Ordering::Acquire) == ticket.invalidations;
        if unchanged {
            entries.put(
                key.to_owned(),
                Entry {
                    session,
                    node,
                    epoch,
                    slot: ticket.slot,
                },
            );
        }
        unchanged
    }

    /// Drops one entry (this instance changed or deleted the session).
    pub(super) fn invalidate(&self, key: &str) {
        let mut entries = self.lock();
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        entries.pop(key);
    }

    /// Drops every entry read from `node`.
    fn invalidate_node(&self, node: &Node) {
        let mut entries = self.lock();
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        drop_where(&mut entries, |entry| std::ptr::eq(&*entry.node, node));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

fn drop_where(entries: &mut LruCache<String, Entry>, doomed: impl Fn(&Entry) -> bool) {
    let keys: Vec<String> = entries
        .iter()
        .filter(|(_, entry)| doomed(entry))
        .map(|(key, _)| key.clone())
        .collect();
    for key in keys {
        entries.pop(&key);
    }
}

impl TrackingListener for SessionCache {
    /// Tracking on `node` is on (since `since`): whatever was cached from it before may have
    /// missed an invalidation.
    fn go_live(&self, node: &Node, since: Instant) {
        self.invalidate_node(node);
        node.vouch(since);
        node.set_tracking(true);
    }

    fn go_dark(&self, node: &Node) {
        node.set_tracking(false);
        self.invalidate_node(node);
        if self.routed {
            // A master that stopped answering may have failed over.
            self.topology.suspect();
        }
    }

    /// An `invalidate` push's keys (or nil, after FLUSHALL/FLUSHDB: the node's entries).
    fn apply_invalidation(&self, node: &Node, session_prefix: &str, keys: Option<&Frame>) {
        match keys {
            Some(Frame::Array(keys)) => {
                for key in keys {
                    let key = match key {
                        Frame::Bulk(bytes) => String::from_utf8_lossy(bytes),
                        _ => {
                            self.invalidate_node(node);
                            continue;
                        }
                    };
                    match key.strip_prefix(session_prefix) {
                        Some(tagged) => self.invalidate(strip_hash_tag(tagged)),
                        None => self.invalidate_node(node),
                    }
                }
            }
            _ => self.invalidate_node(node),
        }
    }
}

/// `{<key>}` → `<key>`: the cache is keyed like the store's API, the session key itself.
fn strip_hash_tag(tagged: &str) -> &str {
    tagged
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or(tagged)
}

#[cfg(test)]
mod tests;
