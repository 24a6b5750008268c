// Unbounded in-memory storage adapter for oidc-provider.
//
// oidc-provider ships a memory adapter, but it is backed by a 1000-entry LRU,
// so a long test run against one provider process could silently evict
// registered clients, sessions or grants. This adapter keeps everything in a
// plain Map until it expires (expired entries are swept periodically).
//
// It implements the adapter interface documented by oidc-provider:
// upsert, find, findByUid, findByUserCode, consume, destroy, revokeByGrantId.

const store = new Map(); // key -> { payload, expiresAt }
const grantIndex = new Map(); // grantId -> Set<key>
const uidIndex = new Map(); // session uid -> id
const userCodeIndex = new Map(); // user code -> id

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry;
}

function unindex(key, payload) {
  if (!payload) return;
  if (payload.grantId) {
    const members = grantIndex.get(payload.grantId);
    if (members) {
      members.delete(key);
      if (members.size === 0) grantIndex.delete(payload.grantId);
    }
  }
}

const sweeper = setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) {
      store.delete(key);
      unindex(key, entry.payload);
    }
  }
}, 30_000);
sweeper.unref();

export default class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const previous = live(key);
    if (previous) {
      unindex(key, previous.payload);
      const { uid, userCode } = previous.payload;
      if (uid && uid !== payload.uid && uidIndex.get(uid) === id) uidIndex.delete(uid);
      if (userCode && userCode !== payload.userCode && userCodeIndex.get(userCode) === id) {
        userCodeIndex.delete(userCode);
      }
    }

    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload: structuredClone(payload), expiresAt });

    if (this.model === 'Session' && payload.uid) {
      uidIndex.set(payload.uid, id);
    }
    if (payload.userCode) {
      userCodeIndex.set(payload.userCode, id);
    }
    if (GRANTABLE.has(this.model) && payload.grantId) {
      let members = grantIndex.get(payload.grantId);
      if (!members) {
        members = new Set();
        grantIndex.set(payload.grantId, members);
      }
      members.add(key);
    }
  }

  async find(id) {
    if (id === undefined || id === null) return undefined;
    const entry = live(this.key(id));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    const id = uidIndex.get(uid);
    if (id === undefined) return undefined;
    const found = await this.find(id);
    if (!found) uidIndex.delete(uid);
    return found;
  }

  async findByUserCode(userCode) {
    const id = userCodeIndex.get(userCode);
    if (id === undefined) return undefined;
    const found = await this.find(id);
    if (!found) userCodeIndex.delete(userCode);
    return found;
  }

  async consume(id) {
    const entry = live(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = this.key(id);
    const entry = store.get(key);
    store.delete(key);
    if (entry) {
      unindex(key, entry.payload);
      if (entry.payload.uid && uidIndex.get(entry.payload.uid) === id) uidIndex.delete(entry.payload.uid);
      if (entry.payload.userCode && userCodeIndex.get(entry.payload.userCode) === id) {
        userCodeIndex.delete(entry.payload.userCode);
      }
    }
  }

  // Removes every artifact of this model tied to grantId.
  async revokeByGrantId(grantId) {
    const members = grantIndex.get(grantId);
    if (!members) return;
    const prefix = `${this.model}:`;
    for (const key of [...members]) {
      if (key.startsWith(prefix)) {
        store.delete(key);
        members.delete(key);
      }
    }
    if (members.size === 0) grantIndex.delete(grantId);
  }
}
