// A second factor for the test provider, so that gatehouse's step-up can be tested end to
// end (imported by provider.mjs).
//
// - Discovery advertises acr_values_supported: [PWD_ACR, MFA_ACR].
// - A login whose acr_values asks for MFA_ACR shows a one-time-code form after the
//   password form (the code is TEST_OTP); the ID token then carries acr = MFA_ACR,
//   amr = ["pwd", "otp"] and auth_time. A provider session without MFA_ACR is asked to log
//   in again for such a request. A password-only login gets acr = PWD_ACR, amr = ["pwd"].
//   ID tokens always carry acr, amr and auth_time (when the session has them).
// - POST /__test/acr-answer?acr=X: from now on every login answers acr X with the password
//   alone, whatever acr_values asked for (a provider that falls short); acr= (empty) resets.
// - POST /__test/clock?advance_secs=N: moves the provider's clock N seconds forward
//   (Date.now), as a test moves gatehouse's injected clock; every token, session and
//   auth_time follows. For a provider of the test's own: it moves every test's time.

import { interactionPolicy } from 'oidc-provider';

export const PWD_ACR = 'urn:gatehouse:test:pwd';
export const MFA_ACR = 'urn:gatehouse:test:mfa';
export const TEST_OTP = '123456';

const state = { answerAcr: '', clockOffsetMs: 0 };
const pendingSecondFactor = new Map(); // interaction uid -> account id (password given)

const realNow = Date.now.bind(Date);
Date.now = () => realNow() + state.clockOffsetMs;

function asksForMfa(params) {
  return !state.answerAcr && (params.acr_values ?? '').split(' ').includes(MFA_ACR);
}

// The provider configuration's share: acr values, the claims, the interaction policy.
export function configuration(claims) {
  const policy = interactionPolicy.base();
  policy.get('login').checks.add(new interactionPolicy.Check(
    'second_factor_required',
    'the requested acr needs a second factor',
    (ctx) => (asksForMfa(ctx.oidc.params) && ctx.oidc.acr !== MFA_ACR
      ? interactionPolicy.Check.REQUEST_PROMPT
      : interactionPolicy.Check.NO_NEED_TO_PROMPT),
  ));
  return {
    acrValues: [PWD_ACR, MFA_ACR],
    claims: { ...claims, openid: [...claims.openid, 'acr', 'amr', 'auth_time'] },
    interactions: { policy },
  };
}

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function codeForm(ctx, uid, error) {
  ctx.type = 'html';
  ctx.set('cache-control', 'no-store');
  ctx.body = `<!DOCTYPE html><html><head><title>Second factor</title></head><body>
<h1>Enter your one-time code</h1>${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}" autocomplete="off">
<input type="hidden" name="prompt" value="otp">
<input name="otp" inputmode="numeric" autofocus>
<button type="submit">Verify</button></form></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function finishLogin(ctx, provider, login) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, { login }, {
    mergeWithLastSubmission: false,
  });
  ctx.status = 303;
  ctx.set('location', returnTo);
  ctx.body = '';
}

// Takes over the dev interactions' login submit (POST /interaction/:uid with prompt=login)
// and adds the code step: the password's answer redirects to the same page, which then shows
// the code form (GET), posted with prompt=otp. Anything else goes on to them, body and all.
export function middleware(provider) {
  return async (ctx, next) => {
    const uid = /^\/interaction\/([^/]+)$/.exec(ctx.path)?.[1];
    if (ctx.method === 'GET' && uid && pendingSecondFactor.has(uid)) return codeForm(ctx, uid);
    if (ctx.method !== 'POST' || !uid) return next();
    const raw = await readForm(ctx.req);
    ctx.req.body = raw; // oidc-provider's body parser reads an already-read body from here
    const form = new URLSearchParams(raw);
    if (form.get('prompt') === 'login') {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      const accountId = form.get('login');
      if (asksForMfa(details.params)) {
        pendingSecondFactor.set(details.uid, accountId);
        ctx.status = 303;
        ctx.set('location', ctx.path);
        ctx.body = '';
        return undefined;
      }
      return finishLogin(ctx, provider, {
        accountId, acr: state.answerAcr || PWD_ACR, amr: ['pwd'],
      });
    }
    if (form.get('prompt') === 'otp') {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      const accountId = pendingSecondFactor.get(details.uid);
      if (!accountId) return codeForm(ctx, details.uid, 'Sign in with your password first.');
      if (form.get('otp') !== TEST_OTP) return codeForm(ctx, details.uid, 'Wrong code.');
      pendingSecondFactor.delete(details.uid);
      return finishLogin(ctx, provider, { accountId, acr: MFA_ACR, amr: ['pwd', 'otp'] });
    }
    return next();
  };
}

// The /__test/ switches above; false for any other route.
export function handleTest(route, q, reply) {
  switch (route) {
    case 'POST /__test/acr-answer':
      state.answerAcr = q.get('acr') ?? '';
      return reply(200, { acr_answer: state.answerAcr || null });
    case 'POST /__test/clock': {
      const secs = Number(q.get('advance_secs') ?? '0');
      if (!Number.isFinite(secs) || secs < 0) return reply(400, { error: 'bad advance_secs' });
      state.clockOffsetMs += secs * 1000;
      return reply(200, { offset_secs: state.clockOffsetMs / 1000 });
    }
    default:
      return false;
  }
}
