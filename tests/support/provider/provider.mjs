#!/usr/bin/env node
// Test OpenID Provider for gatehouse integration tests.
//
// Runs a real `oidc-provider` (v9) instance on plain HTTP. See README.md.
//
// Environment:
//   PROVIDER_HOST        bind address / issuer host      (default 127.0.0.2)
//   PROVIDER_PORT        port, 0 = pick a free one      (default 0)
//   ACCESS_TOKEN_TTL     seconds (AccessToken and ClientCredentials)  (default 3600)
//   ID_TOKEN_TTL         seconds                        (default 3600)
//   REFRESH_TOKEN_TTL    seconds                        (default 86400)
//   PROVIDER_CLIENTS     optional JSON array of static client metadata objects
//   PROVIDER_PAR         on | required | off: pushed authorization requests (default on)
//   PROVIDER_END_SESSION off: no end-session endpoint (RP-initiated logout) (default on)
//   PROVIDER_CLIENT_AUTH_METHODS  optional comma-separated token endpoint client
//                        authentication methods (default: oidc-provider's)
//   PROVIDER_ENTRA_TENANT  a tenant id: play a multi-tenant Entra ID issuer. The
//                        provider's own issuer becomes <origin>/<tenant>/v2.0 (the `iss`
//                        of its ID tokens and authorization responses), ID tokens carry
//                        `tid` = <tenant>, and <origin>/organizations/v2.0 and
//                        <origin>/common/v2.0 serve the discovery document with the issuer
//                        template <origin>/{tenantid}/v2.0. The ready line's "issuer" stays
//                        <origin> (where /reg and /__test/ live). (default: off)
//   PROVIDER_AUTH_RESPONSE_ISS  off: authorization responses carry no `iss` (RFC 9207)
//                        and discovery does not announce it, so only the ID token says
//                        who issued it (default on)
//   PROVIDER_OMIT_OPENID_CONFIGURATION  comma-separated members left out of the discovery
//                        document (e.g. revocation_endpoint: a provider listing it only in
//                        RFC 8414 metadata); PROVIDER_OMIT_RFC8414 the same for
//                        /.well-known/oauth-authorization-server, "all": 404 there
//   PROVIDER_QUIET=1     no request / event logging on stderr
//   PROVIDER_WATCH_STDIN 1 = exit when stdin closes, 0 = never. Default: watch
//                        only if stdin is a pipe or socket (so `node provider.mjs
//                        </dev/null &` does not exit immediately).
//
// Stdout: exactly one line once listening, then nothing else:
//   {"ready":true,"issuer":"http://127.0.0.2:NNNNN"}
// All logs (including oidc-provider's own notices) go to stderr.
//
// Test-control endpoints (handled before oidc-provider sees the request):
//   GET  /__test/grants?client_id=X
//        -> {"authorization_code":N,"refresh_token":N,"client_credentials":N,
//            "refresh_token_errors":N,"revoked":N}
//        Counts of successful token-endpoint grants for client X by grant_type (and by
//        "<grant_type> <resource>" with RFC 8707's resource) plus failed refresh_token grants
//        (`grant.error` event; failures of other grant types count as
//        "<grant_type>_errors"). Other grant types appear as extra keys if used;
//        "revoked" counts the tokens the client revoked (RFC 7009).
//   POST /__test/token-delay?ms=N
//        Every later request to the token endpoint waits N ms before the
//        provider handles it. ms=0 resets. -> {"token_delay_ms":N}
//   POST /__test/token-down?on=1|0
//        While on, the token endpoint answers 503
//        {"error":"temporarily_unavailable",...} without processing.
//        -> {"token_down":true|false}
//   POST /__test/revoke-grants?client_id=X&sub=Y
//        Revokes every grant issued to client X for account Y (sub optional:
//        omitted = all accounts): destroys their access tokens, refresh tokens,
//        authorization codes and the Grant itself. Afterwards refreshing fails
//        with invalid_grant and the access tokens introspect as inactive.
//        -> {"revoked":N}   (N = number of grants revoked)
//   POST /__test/sign   body: {"header": {...}, "payload": {...}}
//        Signs the payload with the provider's own signing key (RS256, its kid;
//        header members given override the defaults alg/kid/typ=logout+jwt), so
//        tests can hand gatehouse validly signed tokens with hostile claims.
//        -> {"jwt": "..."}
//   POST /__test/rotate-key -> {"kid": "..."}: a new key joins the published JWKS
//        (oidc-provider keeps signing with its own); sign with it via /__test/sign
//        and header {"kid": <that kid>}. Header kid "unpublished" signs with a key
//        that is never published.
//   Token responses that carry a refresh token also carry refresh_expires_in
//   (REFRESH_TOKEN_TTL), as Keycloak does, so clients can bound sessions by it.
//   POST /__test/acr-answer, POST /__test/clock: see second_factor.mjs (a second factor).
//   POST /__test/exchange-failure, resource servers, DPoP: see upstream_tokens.mjs.
//   Unknown /__test/ paths -> 404 {"error":"not_found"}.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { watchLifecycle } from './lifecycle.mjs';
import { countRequest, requestCount } from './request_counts.mjs';
import { sendFramePage } from './test_pages.mjs';

// oidc-provider prints NOTICEs with console.info (stdout). Stdout is reserved
// for the ready line, so route console.log/info to stderr.
console.log = console.info = console.error;

const { default: Provider, errors } = await import('oidc-provider');
const { default: MemoryAdapter } = await import('./memory_adapter.mjs');
const secondFactor = await import('./second_factor.mjs');
const upstreamTokens = await import('./upstream_tokens.mjs'); // RFC 8707, 8693, 9449

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`invalid ${name}=${raw}: expected a non-negative integer`);
    process.exit(2);
  }
  return n;
}

const HOST = process.env.PROVIDER_HOST || '127.0.0.2';
const PORT = intEnv('PROVIDER_PORT', 0);
const ACCESS_TOKEN_TTL = intEnv('ACCESS_TOKEN_TTL', 3600);
const ID_TOKEN_TTL = intEnv('ID_TOKEN_TTL', 3600);
const REFRESH_TOKEN_TTL = intEnv('REFRESH_TOKEN_TTL', 86400);
const QUIET = process.env.PROVIDER_QUIET === '1';
const ENTRA_TENANT = process.env.PROVIDER_ENTRA_TENANT || '';
if (ENTRA_TENANT && !/^[A-Za-z0-9-]+$/.test(ENTRA_TENANT)) {
  console.error(`invalid PROVIDER_ENTRA_TENANT=${ENTRA_TENANT}: expected letters, digits and -`);
  process.exit(2);
}

let staticClients = [];
if (process.env.PROVIDER_CLIENTS) {
  try {
    staticClients = JSON.parse(process.env.PROVIDER_CLIENTS);
    if (!Array.isArray(staticClients)) throw new TypeError('not a JSON array');
  } catch (err) {
    console.error(`invalid PROVIDER_CLIENTS: ${err.message}`);
    process.exit(2);
  }
}

const log = QUIET ? () => {} : (...args) => console.error('[provider]', ...args);

// ---------------------------------------------------------------------------
// Lifecycle: exit on signals and (when watched) when stdin closes (lifecycle.mjs).
watchLifecycle(log);

// ---------------------------------------------------------------------------
// Accounts: any id is a valid account.

function accountClaims(id) {
  return {
    sub: id,
    name: id.charAt(0).toUpperCase() + id.slice(1),
    preferred_username: id,
    email: `${id}@example.test`,
    email_verified: true,
    roles: id === 'alice' ? ['support', 'user'] : ['user'],
    ...(ENTRA_TENANT ? { tid: ENTRA_TENANT } : {}),
  };
}

async function findAccount(ctx, id) {
  if (typeof id !== 'string' || id === '') return undefined;
  return {
    accountId: id,
    async claims() {
      return accountClaims(id);
    },
  };
}

// ---------------------------------------------------------------------------
// Test-control state.

const grantCounts = new Map(); // clientId -> { [grant_type]: n, refresh_token_errors: n }
let tokenDelayMs = 0;
let tokenDown = false;
const grantsByClientAccount = new Map(); // `${clientId}\n${accountId}` -> Set<grantId>

function countsFor(clientId) {
  let c = grantCounts.get(clientId);
  if (!c) {
    c = { authorization_code: 0, refresh_token: 0, client_credentials: 0, refresh_token_errors: 0, revoked: 0 };
    grantCounts.set(clientId, c);
  }
  return c;
}

function trackGrant(clientId, accountId, grantId) {
  if (!clientId || !accountId || !grantId) return;
  const key = `${clientId}\n${accountId}`;
  let set = grantsByClientAccount.get(key);
  if (!set) {
    set = new Set();
    grantsByClientAccount.set(key, set);
  }
  set.add(grantId);
}

// ---------------------------------------------------------------------------
// Keys generated fresh at start.

function signingJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
}

const SIGNING_JWK = signingJwk();
const SIGNING_KEY = crypto.createPrivateKey({ key: SIGNING_JWK, format: 'jwk' });

// Keys added by /__test/rotate-key: published in the JWKS, usable by /__test/sign.
// /__test/sign also accepts {"header": {"kid": "unpublished"}} to sign with a key that is
// never published.
const EXTRA_KEYS = new Map();
const UNPUBLISHED_KEY = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

function publicJwk(privateKey, kid) {
  const jwk = crypto.createPublicKey(privateKey).export({ format: 'jwk' });
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

function signJwt(header, payload) {
  const fullHeader = { alg: 'RS256', kid: SIGNING_JWK.kid, typ: 'logout+jwt', ...header };
  let key = SIGNING_KEY;
  if (EXTRA_KEYS.has(fullHeader.kid)) key = EXTRA_KEYS.get(fullHeader.kid);
  if (fullHeader.kid === 'unpublished') key = UNPUBLISHED_KEY;
  const encode = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const input = `${encode(fullHeader)}.${encode(payload)}`;
  const signature = crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
  return `${input}.${signature}`;
}

async function readJsonBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

const cookieKeys = [crypto.randomBytes(32).toString('base64url'), crypto.randomBytes(32).toString('base64url')];

// ---------------------------------------------------------------------------
// HTTP server: listen first, then build the provider with the real port.

let provider;
let providerCallback;

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(data),
  });
  res.end(data);
}

async function revokeGrants(clientId, sub) {
  const grantIds = new Set();
  for (const [key, set] of grantsByClientAccount) {
    const [c, a] = key.split('\n');
    if (c === clientId && (sub === undefined || a === sub)) {
      for (const g of set) grantIds.add(g);
      grantsByClientAccount.delete(key);
    }
  }
  const tokenModels = [provider.AccessToken, provider.RefreshToken, provider.AuthorizationCode];
  let revoked = 0;
  for (const grantId of grantIds) {
    const exists = await provider.Grant.adapter.find(grantId);
    await Promise.all(tokenModels.map((model) => model.adapter.revokeByGrantId(grantId)));
    await provider.Grant.adapter.destroy(grantId);
    if (exists) revoked += 1;
  }
  log(`revoke-grants client_id=${clientId} sub=${sub ?? '*'} revoked=${revoked}`);
  return revoked;
}

async function handleTest(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  const q = url.searchParams;
  if (route === 'GET /__test/frame') return sendFramePage(res, q.get('src')); // test_pages.mjs
  if (route === 'GET /__test/requests') return sendJson(res, 200, requestCount(q.get('path'))); // request_counts.mjs
  if (route === 'POST /__test/rotate-key') {
    const kid = `rotated-${crypto.randomBytes(4).toString('hex')}`;
    EXTRA_KEYS.set(kid, crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
    req.resume();
    return sendJson(res, 200, { kid });
  }
  if (route === 'POST /__test/sign') {
    const body = await readJsonBody(req);
    return sendJson(res, 200, { jwt: signJwt(body.header ?? {}, body.payload ?? {}) });
  }
  req.resume();
  const reply = (status, body) => sendJson(res, status, body);
  if (secondFactor.handleTest(route, q, reply) !== false || upstreamTokens.handleTest(route, q, reply) !== false) return undefined;
  switch (route) {
    case 'GET /__test/grants': {
      const clientId = q.get('client_id');
      if (!clientId) return sendJson(res, 400, { error: 'client_id required' });
      return sendJson(res, 200, { ...countsFor(clientId) });
    }
    case 'POST /__test/token-delay': {
      const ms = Number(q.get('ms') ?? '0');
      if (!Number.isFinite(ms) || ms < 0) return sendJson(res, 400, { error: 'bad ms' });
      tokenDelayMs = ms;
      log(`token-delay set to ${ms}ms`);
      return sendJson(res, 200, { token_delay_ms: tokenDelayMs });
    }
    case 'POST /__test/token-down': {
      tokenDown = ['1', 'true', 'on', 'yes'].includes(q.get('on') ?? '1');
      log(`token-down ${tokenDown ? 'on' : 'off'}`);
      return sendJson(res, 200, { token_down: tokenDown });
    }
    case 'POST /__test/revoke-grants': {
      const clientId = q.get('client_id');
      if (!clientId) return sendJson(res, 400, { error: 'client_id required' });
      const revoked = await revokeGrants(clientId, q.get('sub') ?? undefined);
      return sendJson(res, 200, { revoked });
    }
    default:
      return sendJson(res, 404, { error: 'not_found' });
  }
}

const TOKEN_PATH = '/token';

const server = http.createServer((req, res) => {
  const started = Date.now();
  if (!QUIET) {
    res.on('finish', () => {
      console.error(`[provider] ${req.method} ${req.url} -> ${res.statusCode} (${Date.now() - started}ms)`);
    });
  }
  let url;
  try {
    url = new URL(req.url, 'http://localhost');
  } catch {
    return sendJson(res, 400, { error: 'invalid_request' });
  }
  countRequest(req, url);

  if (!providerCallback) {
    req.resume();
    return sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
  }

  if (url.pathname.startsWith('/__test/')) {
    handleTest(req, res, url).catch((err) => {
      console.error('[provider] test endpoint error', err);
      if (!res.headersSent) sendJson(res, 500, { error: String(err?.message ?? err) });
    });
    return undefined;
  }

  // PROVIDER_ENTRA_TENANT: the multi-tenant discovery document names the issuer template.
  if (ENTRA_TENANT && req.method === 'GET'
    && ['/organizations/v2.0/.well-known/openid-configuration',
      '/common/v2.0/.well-known/openid-configuration'].includes(url.pathname)) {
    req.resume();
    globalThis.fetch(`${ORIGIN}/.well-known/openid-configuration`)
      .then((answer) => answer.json())
      .then((document) => sendJson(res, 200, { ...document, issuer: `${ORIGIN}/{tenantid}/v2.0` }))
      .catch((err) => sendJson(res, 500, { error: String(err?.message ?? err) }));
    return undefined;
  }

  // The published key set, plus keys "rotated in" by /__test/rotate-key.
  if (url.pathname === '/jwks' && req.method === 'GET' && EXTRA_KEYS.size > 0) {
    req.resume();
    const keys = [publicJwk(SIGNING_KEY, SIGNING_JWK.kid)];
    for (const [kid, key] of EXTRA_KEYS) keys.push(publicJwk(key, kid));
    return sendJson(res, 200, { keys });
  }

  if (url.pathname === TOKEN_PATH) {
    if (tokenDown) {
      req.resume();
      return sendJson(res, 503, {
        error: 'temporarily_unavailable',
        error_description: 'token endpoint is down (test control)',
      });
    }
    if (tokenDelayMs > 0) {
      setTimeout(() => providerCallback(req, res), tokenDelayMs);
      return undefined;
    }
  }
  return providerCallback(req, res);
});

server.on('error', (err) => {
  console.error(`[provider] server error: ${err.message}`);
  process.exit(1);
});

await new Promise((resolve) => server.listen(PORT, HOST, resolve));
const { port } = server.address();
const hostPart = HOST.includes(':') ? `[${HOST}]` : HOST;
const ORIGIN = `http://${hostPart}:${port}`;
const ISSUER = ENTRA_TENANT ? `${ORIGIN}/${ENTRA_TENANT}/v2.0` : ORIGIN;

const configuration = {
  adapter: MemoryAdapter,
  clients: staticClients,
  findAccount,
  jwks: { keys: [SIGNING_JWK] },
  cookies: { keys: cookieKeys },

  claims: {
    openid: ENTRA_TENANT ? ['sub', 'tid'] : ['sub'],
    profile: ['name', 'preferred_username', 'roles'],
    email: ['email', 'email_verified'],
    roles: ['roles'],
  },
  conformIdTokenClaims: false,

  // PROVIDER_CLIENT_AUTH_METHODS (comma-separated) narrows the token endpoint's client
  // authentication methods, to play a provider that lacks one.
  ...(process.env.PROVIDER_CLIENT_AUTH_METHODS
    ? { clientAuthMethods: process.env.PROVIDER_CLIENT_AUTH_METHODS.split(',') }
    : {}),

  // HS256 is enabled so a test can register a client whose ID tokens are HMAC-signed and
  // show that gatehouse refuses them (it accepts asymmetric algorithms only).
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA', 'HS256'],
  },

  features: {
    devInteractions: { enabled: true },
    // PROVIDER_PAR: "on" (oidc-provider's default: offered), "required" (every
    // authorization request must be pushed, RFC 9126), or "off" (not offered).
    pushedAuthorizationRequests: {
      enabled: process.env.PROVIDER_PAR !== 'off',
      requirePushedAuthorizationRequests: process.env.PROVIDER_PAR === 'required',
    },
    claimsParameter: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Same as the default policy, minus the "you SHOULD change" notice.
      allowedPolicy: async (ctx, client, token) => !(
        client.clientAuthMethod === 'none' && token.clientId !== ctx.oidc.client.clientId
      ),
    },
    revocation: {
      enabled: true,
      // The default policy, plus a count of the tokens each client revoked (/__test/grants).
      async allowedPolicy(ctx, client, token) {
        if (token.clientId !== client.clientId) {
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        countsFor(client.clientId).revoked += 1;
        return true;
      },
    },
    // PROVIDER_END_SESSION=off plays a provider without an end-session endpoint (Google).
    rpInitiatedLogout: { enabled: process.env.PROVIDER_END_SESSION !== 'off' },
    backchannelLogout: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
    ...upstreamTokens.configuration(ACCESS_TOKEN_TTL),
  },

  pkce: { required: () => true },

  // Always issue a refresh token to clients allowed the refresh_token grant
  // (no offline_access / prompt=consent dance needed).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Always rotate. (The library default only rotates confidential clients once
  // 70% of the refresh token's TTL has passed.) Reusing a rotated refresh token
  // revokes the whole grant - library behaviour.
  rotateRefreshToken: true,

  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
    IdToken: ID_TOKEN_TTL,
    RefreshToken: REFRESH_TOKEN_TTL,
    AuthorizationCode: 60,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
    PreAuthorizedCode: 600,
  },

  // oidc-provider v9 hands its fetch helper an undici dispatcher that refuses
  // connections to special-use addresses (loopback included), which would block
  // back-channel logout to http://127.0.0.1:PORT. Drop that dispatcher and use
  // the plain global fetch (the 2.5s timeout signal is kept).
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
};

provider = new Provider(ISSUER, { ...configuration, ...secondFactor.configuration(configuration.claims) });
provider.use(secondFactor.middleware(provider));
upstreamTokens.register(provider, errors, ISSUER, signJwt);

// Like Keycloak, say how long the refresh token lives.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === TOKEN_PATH && ctx.body && typeof ctx.body === 'object' && ctx.body.refresh_token) {
    ctx.body.refresh_expires_in = REFRESH_TOKEN_TTL;
  }
});

// PROVIDER_AUTH_RESPONSE_ISS=off: no RFC 9207 `iss` in authorization responses.
if (process.env.PROVIDER_AUTH_RESPONSE_ISS === 'off') {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/.well-known/openid-configuration' && ctx.body && typeof ctx.body === 'object') {
      delete ctx.body.authorization_response_iss_parameter_supported;
    }
    const location = ctx.response.get('location');
    if (location && location.includes('iss=')) {
      try {
        const target = new URL(location);
        if (target.searchParams.has('code') || target.searchParams.has('error')) {
          target.searchParams.delete('iss');
          ctx.set('location', target.href);
        }
      } catch { /* not an absolute URL: not an authorization response */ }
    }
  });
}

// PROVIDER_OMIT_OPENID_CONFIGURATION / PROVIDER_OMIT_RFC8414: members left out of either
// metadata document.
const omitted = (name) => (process.env[name] || '').split(',').filter(Boolean);
const OMIT_FROM = {
  '/.well-known/openid-configuration': omitted('PROVIDER_OMIT_OPENID_CONFIGURATION'),
  '/.well-known/oauth-authorization-server': omitted('PROVIDER_OMIT_RFC8414'),
};
provider.use(async (ctx, next) => {
  const members = OMIT_FROM[ctx.path] ?? [];
  if (members.includes('all')) return void Object.assign(ctx, { status: 404, body: {} });
  await next();
  if (ctx.body && typeof ctx.body === 'object') for (const m of members) delete ctx.body[m];
});

provider.on('grant.success', (ctx) => {
  const clientId = ctx.oidc?.client?.clientId;
  const grantType = ctx.oidc?.params?.grant_type;
  if (!clientId || !grantType) return;
  const c = countsFor(clientId);
  c[grantType] = (c[grantType] ?? 0) + 1;
  const resource = ctx.oidc.params.resource; // counted per resource too: "<grant_type> <resource>"
  if (resource) c[`${grantType} ${resource}`] = (c[`${grantType} ${resource}`] ?? 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  let clientId;
  let grantType;
  try {
    clientId = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id;
    grantType = ctx.oidc?.params?.grant_type ?? ctx.oidc?.body?.grant_type;
  } catch { /* ctx.oidc not assembled */ }
  log(`token error client_id=${clientId} grant_type=${grantType}: ${err?.error ?? err?.message} (${err?.error_detail ?? err?.error_description ?? ''})`);
  if (clientId && grantType) {
    const c = countsFor(clientId);
    c[`${grantType}_errors`] = (c[`${grantType}_errors`] ?? 0) + 1;
  }
});

for (const event of ['access_token.saved', 'refresh_token.saved', 'authorization_code.saved']) {
  provider.on(event, (token) => trackGrant(token.clientId, token.accountId, token.grantId));
}
provider.on('grant.saved', (grant) => trackGrant(grant.clientId, grant.accountId, grant.jti));

provider.on('backchannel.success', (ctx, client, accountId, sid) => {
  log(`backchannel logout delivered client_id=${client.clientId} sub=${accountId} sid=${sid}`);
});
provider.on('backchannel.error', (ctx, err, client, accountId) => {
  console.error(`[provider] backchannel logout FAILED client_id=${client.clientId} sub=${accountId}: ${err?.message}${err?.cause ? ` (${err.cause.message ?? err.cause})` : ''}`);
});
provider.on('server_error', (ctx, err) => {
  console.error('[provider] server_error', err);
});
provider.on('registration_create.error', (ctx, err) => {
  log(`registration error: ${err?.error} ${err?.error_description ?? ''}`);
});
provider.on('authorization.error', (ctx, err) => {
  log(`authorization error: ${err?.error} ${err?.error_description ?? ''}`);
});
provider.on('end_session.error', (ctx, err) => {
  log(`end_session error: ${err?.error} ${err?.error_description ?? ''}`);
});

providerCallback = provider.callback();

process.stdout.write(`${JSON.stringify({ ready: true, issuer: ORIGIN })}\n`);
