// Least privilege per upstream for the test provider (imported by provider.mjs):
//
// - Resource indicators (RFC 8707): any http(s) URL is a resource server. Its access
//   tokens are JWTs (RS256, the provider's key) with `aud` = the resource, living
//   RESOURCE_TOKEN_TTL seconds (default: ACCESS_TOKEN_TTL), and its scopes are
//   RESOURCE_SCOPES (space separated; default "orders:read invoices:read"). Tokens for a
//   resource come from the refresh grant with `resource=` (the resource must have been in
//   the authorization request, as RFC 8707 says).
// - DPoP (RFC 9449): oidc-provider's own. PROVIDER_DPOP_NONCE=on makes the token endpoint
//   require a server nonce (`use_dpop_nonce`, then `DPoP-Nonce`).
// - Token exchange (RFC 8693, grant type urn:ietf:params:oauth:grant-type:token-exchange):
//   the subject token is one of this provider's access tokens for the same client; the
//   answer is a JWT with `aud` = the `audience` parameter, `sub` = the subject's account,
//   `act` = {"sub": <client id>}, `scope` = the `scope` parameter, living
//   EXCHANGE_TOKEN_TTL seconds (default 300). Bearer only.
//   POST /__test/exchange-failure?mode=invalid_grant|down|off: from now on every exchange
//   is refused with invalid_grant, or answered 503 temporarily_unavailable, or served.

import * as crypto from 'node:crypto';

const EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const state = { exchangeFailure: 'off' };

function intEnv(name, fallback) {
  const n = Number(process.env[name] ?? '');
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

// The provider configuration's share: resource indicators and DPoP.
export function configuration(accessTokenTtl) {
  const ttl = intEnv('RESOURCE_TOKEN_TTL', accessTokenTtl);
  const scope = process.env.RESOURCE_SCOPES ?? 'orders:read invoices:read';
  const nonce = process.env.PROVIDER_DPOP_NONCE === 'on';
  return {
    resourceIndicators: {
      enabled: true,
      // Several resources at login; a token request names its own or gets the userinfo one.
      defaultResource: async () => undefined,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resource) => {
        if (!/^https?:\/\//.test(resource)) throw new Error('not a resource server');
        return {
          scope,
          audience: resource,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
    dPoP: {
      enabled: true,
      ...(nonce ? { nonceSecret: crypto.randomBytes(32), requireNonce: () => true } : {}),
    },
  };
}

// Registers the token-exchange grant; `sign(header, payload)` signs with the provider's key.
export function register(provider, errors, issuer, sign) {
  const ttl = intEnv('EXCHANGE_TOKEN_TTL', 300);
  provider.registerGrantType(EXCHANGE_GRANT, async (ctx) => {
    const { params, client } = ctx.oidc;
    if (state.exchangeFailure === 'invalid_grant') {
      throw new errors.InvalidGrant('token exchange refused (test control)');
    }
    if (state.exchangeFailure === 'down') {
      ctx.status = 503;
      ctx.body = { error: 'temporarily_unavailable', error_description: 'exchange down (test control)' };
      return;
    }
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('subject_token_type must be an access token');
    }
    const subject = await provider.AccessToken.find(params.subject_token);
    if (!subject || subject.clientId !== client.clientId) {
      throw new errors.InvalidGrant('subject token not valid for this client');
    }
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      sub: subject.accountId,
      aud: params.audience ?? client.clientId,
      act: { sub: client.clientId },
      client_id: client.clientId,
      iat: now,
      exp: now + ttl,
      jti: crypto.randomBytes(12).toString('base64url'),
      ...(params.scope ? { scope: params.scope } : {}),
    };
    ctx.body = {
      access_token: sign({ typ: 'at+jwt' }, claims),
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: ttl,
      ...(params.scope ? { scope: params.scope } : {}),
    };
  }, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'scope', 'resource']);
}

// The /__test/ switch above; false for any other route.
export function handleTest(route, q, reply) {
  if (route !== 'POST /__test/exchange-failure') return false;
  const mode = q.get('mode') ?? 'off';
  if (!['invalid_grant', 'down', 'off'].includes(mode)) return reply(400, { error: 'bad mode' });
  state.exchangeFailure = mode;
  return reply(200, { exchange_failure: mode });
}
