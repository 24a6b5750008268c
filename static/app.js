// The gatehouse demo SPA: everything a single-page app needs to work behind gatehouse.
// Plain JavaScript, no build step, no library. Copy what you need.
//
// The rules:
//  1. Log in by navigating (not fetching) to /auth/login?returnTo=<where to come back to>.
//  2. Ask who is logged in with GET /auth/user; 401 means nobody.
//  3. Call APIs on this origin (gatehouse forwards them with the access token attached).
//     Every call sends the anti-forgery header X-CSRF: 1 and the cookie (same-origin).
//  4. A 401 from an API call means the session is gone: offer to log in again.
//  5. Log out by navigating to session.logout_url from /auth/user.
//  6. A login the provider refused or the user cancelled comes back to returnTo with
//     ?login_error=<code> (access_denied, login_required, …): say so, and drop it from the
//     address bar.
//  7. "Your sessions": GET /auth/sessions lists where the user is signed in;
//     DELETE /auth/sessions/<id> signs one out, POST /auth/sessions/end-others all others.
//  8. Step-up: an API route may need a stronger or more recent sign-in. It answers 401 with
//     the problem type urn:gatehouse:problem:step-up-required and a login_url: navigate there
//     (a button), and the browser comes back to the page named in the call's X-Return-To
//     header. A step-up that falls short comes back with login_error=insufficient_authentication
//     and the session as it was.
//  9. Live updates: new WebSocket('/api/live') on a route with websocket = true. The browser
//     sends the cookie and its Origin (which replaces X-CSRF here); a close with code 1008
//     means the session ended: the same as a 401.
// The page never sees a token: there is nothing to store, refresh or hide.
'use strict';

// fetch() for gatehouse: same-origin credentials plus the anti-forgery header.
function gatehouseFetch(path, options = {}) {
  return fetch(path, {
    ...options,
    credentials: 'same-origin',
    headers: { 'X-CSRF': '1', ...options.headers },
  });
}

// Where /auth/login sends the browser back to after the provider: this very page.
function loginUrl(provider) {
  const here = location.pathname + location.search;
  const at = provider ? 'provider=' + encodeURIComponent(provider) + '&' : '';
  return '/auth/login?' + at + 'returnTo=' + encodeURIComponent(here);
}

// With several identity providers, one login button each: the default one is #login.
async function offerOtherProviders() {
  const response = await fetch('/auth/providers', { credentials: 'same-origin' });
  if (!response.ok) return;
  const { default: preferred, providers } = await response.json();
  const buttons = providers
    .filter((provider) => provider.name !== preferred)
    .map((provider) => {
      const link = document.createElement('a');
      link.className = 'button secondary';
      link.href = loginUrl(provider.name);
      link.textContent = `Log in at ${provider.name}`;
      return link;
    });
  $('other-logins').replaceChildren(...buttons);
}

// The provider's error code for a login that did not happen, taken out of the address.
function takeLoginError() {
  const url = new URL(location.href);
  const code = url.searchParams.get('login_error');
  if (code === null) return null;
  url.searchParams.delete('login_error');
  history.replaceState(null, '', url.pathname + url.search + url.hash);
  return code;
}

const LOGIN_ERRORS = {
  access_denied: 'The login was cancelled or denied at the identity provider.',
  login_required: 'You are not signed in at the identity provider.',
  interaction_required: 'The identity provider needs you to sign in interactively.',
  consent_required: 'The identity provider needs your consent first.',
  insufficient_authentication: 'The sign-in was not strong or recent enough for that call.',
};

const $ = (id) => document.getElementById(id);

// Show exactly one of the page's states.
function show(state) {
  for (const id of ['anonymous', 'user', 'expired']) $(id).hidden = id !== state;
  $('status').hidden = true;
}

function showError(text) {
  $('error').textContent = text;
  $('error').hidden = false;
}

// gatehouse answers errors as application/problem+json: { type, title, status, request_id }.
async function problemText(response) {
  try {
    const problem = await response.json();
    return `${problem.title} (HTTP ${response.status}, request ${problem.request_id})`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function loadUser() {
  const response = await gatehouseFetch('/auth/user');
  if (response.status === 401) {
    $('login').href = loginUrl();
    show('anonymous');
    await offerOtherProviders();
    return;
  }
  if (!response.ok) {
    showError('Could not load your session: ' + (await problemText(response)));
    return;
  }
  // { sub, claims: {...}, session: { expires_in, idle_expires_in, logout_url, provider } }
  const user = await response.json();
  currentSub = user.sub;
  $('name').textContent = user.claims.name || user.claims.preferred_username || user.sub;
  $('session-info').textContent =
    `Signed in at "${user.session.provider}" as ${user.sub}. The session ends after ` +
    `${Math.round(user.session.idle_expires_in / 60)} idle minutes, at the latest in ` +
    `${Math.round(user.session.expires_in / 60)} minutes.`;
  const table = $('claims');
  table.replaceChildren();
  for (const [claim, value] of Object.entries(user.claims)) {
    const row = table.insertRow();
    row.insertCell().textContent = claim;
    row.insertCell().textContent = typeof value === 'string' ? value : JSON.stringify(value);
  }
  // A plain link: GET /auth/logout?sid=… ends the session and redirects to the provider.
  // (Alternative: POST /auth/logout with X-CSRF: 1 answers { redirect_to }; navigate there.)
  $('logout').href = user.session.logout_url;
  show('user');
  await loadSessions();
}

// Unix seconds → a local date and time.
function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

// { sessions: [{ id, provider, device, created_at, last_used_at, current }] }
async function loadSessions() {
  const response = await gatehouseFetch('/auth/sessions');
  if (response.status === 401) {
    sessionEnded();
    return;
  }
  if (!response.ok) {
    showSessionsResult('Could not list your sessions: ' + (await problemText(response)));
    return;
  }
  const { sessions } = await response.json();
  const items = sessions.map((session) => {
    const item = document.createElement('li');
    item.dataset.id = session.id;
    item.dataset.current = String(session.current);
    const text = document.createElement('div');
    const device = document.createElement('div');
    device.className = 'device';
    device.textContent = session.device;
    const times = document.createElement('div');
    times.className = 'times';
    times.textContent =
      `Signed in ${when(session.created_at)} at "${session.provider}", ` +
      `last used ${when(session.last_used_at)}`;
    text.append(device, times);
    item.append(text);
    if (session.current) {
      const marker = document.createElement('span');
      marker.className = 'current';
      marker.textContent = 'This device';
      item.append(marker);
    } else {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'secondary small sign-out';
      button.textContent = 'Sign out';
      button.addEventListener('click', () => {
        signOutSession(session.id).catch((e) => showSessionsResult('Sign-out failed: ' + e.message));
      });
      item.append(button);
    }
    return item;
  });
  $('sessions').replaceChildren(...items);
  $('end-others').hidden = !sessions.some((session) => !session.current);
}

function showSessionsResult(text) {
  $('sessions-result').textContent = text;
  $('sessions-result').hidden = false;
}

// Signs out one other session; 404 means it had already ended.
async function signOutSession(id) {
  const response = await gatehouseFetch('/auth/sessions/' + encodeURIComponent(id), {
    method: 'DELETE',
  });
  if (response.status === 401) {
    sessionEnded();
    return;
  }
  if (response.ok || response.status === 404) {
    showSessionsResult(response.ok ? 'Signed out.' : 'That session had already ended.');
  } else {
    showSessionsResult('Sign-out failed: ' + (await problemText(response)));
  }
  await loadSessions();
}

async function endOtherSessions() {
  const response = await gatehouseFetch('/auth/sessions/end-others', { method: 'POST' });
  if (response.status === 401) {
    sessionEnded();
    return;
  }
  if (!response.ok) {
    showSessionsResult('Sign-out failed: ' + (await problemText(response)));
    return;
  }
  const { ended } = await response.json();
  showSessionsResult(`Signed out ${ended} other session${ended === 1 ? '' : 's'}.`);
  await loadSessions();
}

// The session ended (logged out elsewhere, expired, revoked): offer a fresh login.
function sessionEnded() {
  $('api-result').hidden = true;
  $('login-again').href = loginUrl();
  show('expired');
}

async function callApi() {
  const output = $('api-result');
  output.hidden = false;
  output.textContent = 'Calling /api/hello…';
  const response = await gatehouseFetch('/api/hello');
  if (response.status === 401) {
    sessionEnded();
    return;
  }
  if (!response.ok) {
    output.textContent = 'The API call failed: ' + (await problemText(response));
    return;
  }
  output.textContent = JSON.stringify(await response.json(), null, 2);
}

// A call to a route that needs the second factor. The X-Return-To header names this page:
// a step-up login comes back here.
async function callPayments() {
  const output = $('payments-result');
  output.hidden = false;
  $('step-up').hidden = true;
  output.textContent = 'Calling /api/payments…';
  const response = await gatehouseFetch('/api/payments', {
    headers: { 'X-Return-To': location.pathname + location.search },
  });
  if (response.status === 401) {
    const problem = await response.json().catch(() => ({}));
    if (problem.type === 'urn:gatehouse:problem:step-up-required') {
      output.textContent = `Not yet: ${problem.title}.`;
      $('step-up-login').href = problem.login_url;
      $('step-up').hidden = false;
      return;
    }
    sessionEnded();
    return;
  }
  if (!response.ok) {
    output.textContent = 'The API call failed: ' + (await problemText(response));
    return;
  }
  output.textContent = JSON.stringify(await response.json(), null, 2);
}

// Calls that gatehouse's Cedar policies decide: 403 `forbidden-by-policy` when refused.
let currentSub = null;
async function callByPolicy(path) {
  const output = $('policy-result');
  output.hidden = false;
  output.textContent = `Calling ${path}…`;
  const response = await gatehouseFetch(path);
  if (response.status === 401) {
    sessionEnded();
    return;
  }
  if (!response.ok) {
    output.textContent = `${path}: ` + (await problemText(response));
    return;
  }
  output.textContent = JSON.stringify(await response.json(), null, 2);
}

// A WebSocket through gatehouse: same origin, so ws: or wss: to this very host.
let live = null;
function connectLive() {
  if (live !== null) return;
  const url = new URL('/api/live', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  live = new WebSocket(url);
  const status = $('live-status');
  status.textContent = 'Connecting…';
  status.hidden = false;
  $('live-connect').hidden = true;
  live.addEventListener('message', (event) => {
    // { hello } first, then { tick, at } every second.
    const message = JSON.parse(event.data);
    if (message.hello) status.textContent = message.hello;
    if (message.tick) {
      $('live-last').textContent =
        `Tick ${message.tick} at ${new Date(message.at).toLocaleTimeString()}`;
      $('live-last').hidden = false;
    }
  });
  live.addEventListener('close', (event) => {
    live = null;
    $('live-connect').hidden = false;
    if (event.code === 1008) {
      status.textContent = 'Closed: your session ended.';
      sessionEnded();
    } else {
      status.textContent = `Disconnected (code ${event.code}).`;
    }
  });
}

// Event handlers are attached here: the CSP forbids onclick="…" attributes.
$('live-connect').addEventListener('click', connectLive);
$('call-api').addEventListener('click', () => {
  callApi().catch((e) => showError('The API call failed: ' + e.message));
});
$('call-payments').addEventListener('click', () => {
  callPayments().catch((e) => showError('The API call failed: ' + e.message));
});
for (const [button, path] of [
  ['call-own-profile', () => `/api/users/${encodeURIComponent(currentSub ?? '')}`],
  ['call-other-profile', () => '/api/users/bob'],
  ['call-support', () => '/api/support'],
]) {
  $(button).addEventListener('click', () => {
    callByPolicy(path()).catch((e) => showError('The API call failed: ' + e.message));
  });
}
$('end-others').addEventListener('click', () => {
  endOtherSessions().catch((e) => showSessionsResult('Sign-out failed: ' + e.message));
});
const loginError = takeLoginError();
if (loginError !== null) {
  showError(
    (LOGIN_ERRORS[loginError] || 'The identity provider reported an error.') +
      ` (${loginError})`,
  );
}
loadUser().catch((e) => showError('Could not reach gatehouse: ' + e.message));
