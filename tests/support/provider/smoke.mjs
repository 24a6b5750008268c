#!/usr/bin/env node
// Smoke test for provider.mjs: `node smoke.mjs` (exit code 0 = all good).
// Walks the same browser flow the Rust tests replicate with reqwest.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const VERBOSE = process.env.SMOKE_VERBOSE === '1';
let failures = 0;
function check(cond, msg, extra) {
  if (cond) {
    console.log(`ok   - ${msg}`);
  } else {
    failures += 1;
    console.log(`FAIL - ${msg}`, extra === undefined ? '' : JSON.stringify(extra));
  }
}
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const decodeJwt = (jwt) => {
  const [h, p] = jwt.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), payload: JSON.parse(Buffer.from(p, 'base64url')) };
};

// --- start provider ---------------------------------------------------------
const child = spawn(process.execPath, [fileURLToPath(new URL('./provider.mjs', import.meta.url))], {
  stdio: ['pipe', 'pipe', VERBOSE ? 'inherit' : 'ignore'],
  env: { ...process.env, PROVIDER_QUIET: VERBOSE ? '0' : '1' },
});
const lines = createInterface({ input: child.stdout });
const extraStdout = [];
const issuer = await new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('provider did not become ready')), 10000);
  let first = true;
  lines.on('line', (line) => {
    if (first) {
      first = false;
      clearTimeout(t);
      const msg = JSON.parse(line);
      check(msg.ready === true && /^http:\/\/127\.0\.0\.2:\d+$/.test(msg.issuer), `ready line ${line}`);
      resolve(msg.issuer);
    } else {
      extraStdout.push(line);
    }
  });
  child.on('exit', (code) => reject(new Error(`provider exited early: ${code}`)));
});

// --- back-channel logout listener on 127.0.0.1 --------------------------------
const logoutTokens = [];
const rp = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/auth/backchannel-logout') {
      logoutTokens.push({ contentType: req.headers['content-type'], body });
      res.writeHead(200).end();
    } else {
      res.writeHead(404).end();
    }
  });
});
await new Promise((r) => rp.listen(0, '127.0.0.1', r));
const rpBase = `http://127.0.0.1:${rp.address().port}`;

// --- tiny cookie jar + manual redirects ----------------------------------------
const jar = new Map(); // name -> { value, path }
function storeCookies(res) {
  for (const sc of res.headers.getSetCookie()) {
    const [pair, ...attrs] = sc.split(';').map((s) => s.trim());
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    let path = '/';
    let expired = value === '';
    for (const a of attrs) {
      const [k, v] = a.split('=');
      if (k.toLowerCase() === 'path') path = v;
      if (k.toLowerCase() === 'expires' && new Date(v) < new Date()) expired = true;
      if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
    }
    if (expired) jar.delete(`${name}|${path}`);
    else jar.set(`${name}|${path}`, { name, value, path });
  }
}
function cookieHeader(url) {
  const { pathname } = new URL(url);
  return [...jar.values()]
    .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
    .map((c) => `${c.name}=${c.value}`).join('; ');
}
const trace = [];
async function browser(method, url, form) {
  const headers = { cookie: cookieHeader(url), accept: 'text/html' };
  let body;
  if (form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(form).toString();
  }
  const res = await fetch(url, { method, headers, body, redirect: 'manual' });
  storeCookies(res);
  const text = await res.text();
  const location = res.headers.get('location');
  trace.push(`${method} ${new URL(url).pathname}${form ? ` [${Object.keys(form).join(',')}]` : ''} -> ${res.status}${location ? ` ${location.replace(/\?.*/, '?...')}` : ''}`);
  return { status: res.status, location: location && new URL(location, url).href, text };
}
function parseForm(html) {
  const action = html.match(/<form[^>]*action="([^"]+)"/)?.[1];
  const inputs = [...html.matchAll(/<input([^>]*)>/g)].map((m) => ({
    type: m[1].match(/type="([^"]+)"/)?.[1],
    name: m[1].match(/name="([^"]+)"/)?.[1],
    value: m[1].match(/value="([^"]*)"/)?.[1],
  }));
  const buttons = [...html.matchAll(/<button([^>]*)>/g)].map((m) => ({
    name: m[1].match(/name="([^"]+)"/)?.[1], value: m[1].match(/value="([^"]*)"/)?.[1],
  }));
  return { action, inputs, buttons };
}

// --- discovery ---------------------------------------------------------------
const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
check(disco.issuer === issuer, 'discovery issuer matches');
check(disco.authorization_response_iss_parameter_supported === true, 'RFC 9207 iss parameter advertised');
check(disco.backchannel_logout_supported === true, 'backchannel logout advertised');

// --- dynamic registration ----------------------------------------------------
const regRes = await fetch(disco.registration_endpoint, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    redirect_uris: [`${rpBase}/auth/callback`],
    post_logout_redirect_uris: [`${rpBase}/`],
    backchannel_logout_uri: `${rpBase}/auth/backchannel-logout`,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
  }),
});
const client = await regRes.json();
check(regRes.status === 201 && client.client_id && client.client_secret, 'dynamic registration 201', client);
const basic = `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64')}`;

// also check client_secret_post registration is accepted
const reg2 = await fetch(disco.registration_endpoint, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    redirect_uris: [`${rpBase}/auth/callback`],
    post_logout_redirect_uris: [`${rpBase}/`],
    backchannel_logout_uri: `${rpBase}/auth/backchannel-logout`,
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
  }),
});
check(reg2.status === 201, 'client_secret_post registration 201');

// auth: a Basic header value (client_secret_basic) or a client object (client_secret_post)
async function token(params, auth = basic) {
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  const body = new URLSearchParams(params);
  if (typeof auth === 'string') {
    headers.authorization = auth;
  } else {
    body.set('client_id', auth.client_id);
    body.set('client_secret', auth.client_secret);
  }
  const res = await fetch(disco.token_endpoint, { method: 'POST', headers, body });
  return { status: res.status, body: await res.json() };
}
async function introspect(tok) {
  const res = await fetch(disco.introspection_endpoint, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: tok }),
  });
  return res.json();
}
const grants = async () => (await fetch(`${issuer}/__test/grants?client_id=${encodeURIComponent(client.client_id)}`)).json();

// --- code + PKCE login -------------------------------------------------------
let formsReported = false;
async function login(user, c = client, auth = basic) {
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = crypto.hash('sha256', verifier, 'base64url');
  const state = b64url(crypto.randomBytes(8));
  const nonce = b64url(crypto.randomBytes(8));
  const authz = new URL(disco.authorization_endpoint);
  authz.search = new URLSearchParams({
    client_id: c.client_id,
    redirect_uri: `${rpBase}/auth/callback`,
    response_type: 'code',
    scope: 'openid profile email',
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  let r = await browser('GET', authz.href);
  for (let i = 0; i < 10; i += 1) {
    if (r.location?.startsWith(`${rpBase}/auth/callback`)) break;
    if (r.location) {
      r = await browser('GET', r.location);
      continue;
    }
    check(r.status === 200, `interaction page 200 (got ${r.status})`, r.text.slice(0, 300));
    const form = parseForm(r.text);
    if (!formsReported) console.log('form:', JSON.stringify(form));
    const prompt = form.inputs.find((x) => x.name === 'prompt')?.value;
    const action = new URL(form.action, issuer).href;
    if (prompt === 'login') r = await browser('POST', action, { prompt: 'login', login: user, password: 'x' });
    else if (prompt === 'consent') r = await browser('POST', action, { prompt: 'consent' });
    else throw new Error(`unexpected page: ${r.text.slice(0, 500)}`);
  }
  formsReported = true;
  const cb = new URL(r.location);
  check(cb.searchParams.get('state') === state, 'callback state matches');
  check(cb.searchParams.get('iss') === issuer, 'callback has RFC 9207 iss');
  const code = cb.searchParams.get('code');
  check(!!code, 'callback has code');
  const t = await token({
    grant_type: 'authorization_code', code, redirect_uri: `${rpBase}/auth/callback`, code_verifier: verifier,
  }, auth);
  check(t.status === 200, 'code exchange 200', t.body);
  return { ...t.body, nonce };
}

trace.length = 0;
const t1 = await login('alice');
console.log('interaction trace (fresh browser):\n  ' + trace.join('\n  '));
const { header: idh, payload: idp } = decodeJwt(t1.id_token);
console.log('id_token header', JSON.stringify(idh), 'payload', JSON.stringify(idp));
check(idp.sub === 'alice' && idp.name === 'Alice' && idp.preferred_username === 'alice', 'id_token name/preferred_username');
check(JSON.stringify(idp.roles) === '["support","user"]', 'id_token roles');
check(idp.email === 'alice@example.test' && idp.email_verified === true, 'id_token email');
check(idp.nonce === t1.nonce && idp.iss === issuer, 'id_token nonce/iss');
check(idp.sid === undefined, 'no sid in id_token unless backchannel_logout_session_required');
check(typeof t1.refresh_token === 'string', 'refresh_token issued without offline_access');
check(t1.expires_in === 3600 && t1.token_type === 'Bearer', `access token expires_in ${t1.expires_in} ${t1.token_type}`);
console.log('token response keys', Object.keys(t1).join(','), 'scope', t1.scope);

const ui = await (await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${t1.access_token}` } })).json();
check(ui.sub === 'alice' && ui.name === 'Alice' && Array.isArray(ui.roles), 'userinfo works', ui);

// refresh + rotation
const r1 = await token({ grant_type: 'refresh_token', refresh_token: t1.refresh_token });
check(r1.status === 200 && r1.body.refresh_token && r1.body.refresh_token !== t1.refresh_token, 'refresh rotates refresh token', r1.body);
check(typeof r1.body.id_token === 'string', 'refresh returns a new id_token');
const reuse = await token({ grant_type: 'refresh_token', refresh_token: t1.refresh_token });
check(reuse.status === 400 && reuse.body.error === 'invalid_grant', 'reuse of rotated refresh token -> invalid_grant', reuse.body);
const afterReuse = await token({ grant_type: 'refresh_token', refresh_token: r1.body.refresh_token });
check(afterReuse.status === 400 && afterReuse.body.error === 'invalid_grant', 'reuse detection revoked the whole grant (new RT dead too)', afterReuse.body);
const g1 = await grants();
console.log('grants', JSON.stringify(g1));
check(g1.authorization_code === 1 && g1.refresh_token === 1 && g1.refresh_token_errors === 2, 'grant counters');

// second login reuses the OP session (consent only)
trace.length = 0;
const t2 = await login('alice');
console.log('interaction trace (existing OP session, grant gone):\n  ' + trace.join('\n  '));
const intro = await introspect(t2.access_token);
check(intro.active === true && intro.sub === 'alice' && intro.client_id === client.client_id, 'introspection active sub=alice', intro);
console.log('introspection', JSON.stringify(intro));

// client credentials
const cc = await token({ grant_type: 'client_credentials' });
check(cc.status === 200 && cc.body.access_token, 'client_credentials 200', cc.body);
check((await introspect(cc.body.access_token)).active === true, 'client_credentials token introspects active');

// revoke-grants
const rev = await (await fetch(`${issuer}/__test/revoke-grants?client_id=${encodeURIComponent(client.client_id)}&sub=alice`, { method: 'POST' })).json();
check(rev.revoked >= 1, `revoke-grants ${JSON.stringify(rev)}`);
check((await introspect(t2.access_token)).active === false, 'revoked access token introspects inactive');
const afterRevoke = await token({ grant_type: 'refresh_token', refresh_token: t2.refresh_token });
check(afterRevoke.status === 400 && afterRevoke.body.error === 'invalid_grant', 'refresh after revoke-grants -> invalid_grant', afterRevoke.body);

// token-down / token-delay
await fetch(`${issuer}/__test/token-down?on=1`, { method: 'POST' });
const down = await token({ grant_type: 'client_credentials' });
check(down.status === 503, 'token-down -> 503', down);
await fetch(`${issuer}/__test/token-down?on=0`, { method: 'POST' });
await fetch(`${issuer}/__test/token-delay?ms=400`, { method: 'POST' });
let t0 = Date.now();
const delayed = await token({ grant_type: 'client_credentials' });
check(delayed.status === 200 && Date.now() - t0 >= 400, `token-delay (${Date.now() - t0}ms)`);
await fetch(`${issuer}/__test/token-delay?ms=0`, { method: 'POST' });
t0 = Date.now();
await token({ grant_type: 'client_credentials' });
check(Date.now() - t0 < 300, 'token-delay reset');

// rp-initiated logout with back-channel logout
trace.length = 0;
const t3 = await login('alice');
const t3sid = decodeJwt(t3.id_token).payload.sid;
trace.length = 0;
await login('alice');
console.log('interaction trace (existing OP session and live grant):\n  ' + trace.join('\n  '));
check(trace.length === 1, 'silent re-login when session and grant exist');
console.log('cookies in jar:', [...jar.values()].map((c) => `${c.name} (path ${c.path})`).join(', '));
trace.length = 0;
const end = new URL(disco.end_session_endpoint);
end.search = new URLSearchParams({ id_token_hint: t3.id_token, post_logout_redirect_uri: `${rpBase}/`, state: 'bye' });
const page = await browser('GET', end.href);
const lform = parseForm(page.text);
console.log('logout form:', JSON.stringify(lform));
const xsrf = lform.inputs.find((x) => x.name === 'xsrf')?.value;
const done = await browser('POST', new URL(lform.action, issuer).href, { xsrf, logout: 'yes' });
console.log('logout trace:\n  ' + trace.join('\n  '));
check(done.status === 303 && done.location === `${rpBase}/?state=bye`, `logout redirects to post_logout_redirect_uri (${done.location})`);
check(logoutTokens.length === 1, `back-channel logout POST arrived on 127.0.0.1 (${logoutTokens.length})`);
if (logoutTokens[0]) {
  const lt = new URLSearchParams(logoutTokens[0].body).get('logout_token');
  const { header, payload } = decodeJwt(lt);
  console.log('logout_token header', JSON.stringify(header), 'payload', JSON.stringify(payload));
  check(header.typ === 'logout+jwt', 'logout token typ logout+jwt');
  check(payload.sub === 'alice' && payload.aud === client.client_id && payload.iss === issuer
    && payload.events?.['http://schemas.openid.net/event/backchannel-logout'], 'logout token claims');
  console.log(`logout token sid=${payload.sid} (id_token sid=${t3sid})`);
}
const afterLogout = await token({ grant_type: 'refresh_token', refresh_token: t3.refresh_token });
console.log('refresh after logout:', afterLogout.status, JSON.stringify(afterLogout.body));

// client with backchannel_logout_session_required: sid in id_token and logout token
const regSid = await fetch(disco.registration_endpoint, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    redirect_uris: [`${rpBase}/auth/callback`],
    post_logout_redirect_uris: [`${rpBase}/`],
    backchannel_logout_uri: `${rpBase}/auth/backchannel-logout`,
    backchannel_logout_session_required: true,
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
  }),
});
const sidClient = await regSid.json();
check(regSid.status === 201, 'registration with backchannel_logout_session_required');
trace.length = 0;
const t4 = await login('bob', sidClient, sidClient);
console.log('interaction trace (OP session ended by logout, new client, user bob):\n  ' + trace.join('\n  '));
const id4 = decodeJwt(t4.id_token).payload;
check(typeof id4.sid === 'string' && JSON.stringify(id4.roles) === '["user"]' && id4.name === 'Bob', 'sid + bob claims in id_token', id4);
logoutTokens.length = 0;
const end2 = new URL(disco.end_session_endpoint);
end2.search = new URLSearchParams({ id_token_hint: t4.id_token, post_logout_redirect_uri: `${rpBase}/` });
const page2 = await browser('GET', end2.href);
const xsrf2 = parseForm(page2.text).inputs.find((x) => x.name === 'xsrf')?.value;
const done2 = await browser('POST', `${issuer}/session/end/confirm`, { xsrf: xsrf2, logout: 'yes' });
check(done2.location === `${rpBase}/`, `logout without state -> ${done2.location}`);
const lt2 = logoutTokens[0] && decodeJwt(new URLSearchParams(logoutTokens[0].body).get('logout_token')).payload;
check(lt2?.sid === id4.sid && lt2?.sub === 'bob', 'logout token carries the id_token sid', lt2);

const g2 = await grants();
console.log('grants', JSON.stringify(g2));
check(extraStdout.length === 0, 'nothing else printed on stdout', extraStdout);

// stdin close -> provider exits
const exited = new Promise((r) => child.on('exit', (code, sig) => r({ code, sig })));
child.stdin.end();
const ex = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 3000))]);
check(ex !== 'timeout' && ex.code === 0, `provider exits when stdin closes ${JSON.stringify(ex)}`);
if (ex === 'timeout') child.kill();
rp.close();
console.log(failures ? `${failures} FAILURE(S)` : 'ALL OK');
process.exit(failures ? 1 : 0);
