// The demo's upstream API: plain node:http, no dependencies.
//
// gatehouse forwards the SPA's calls to /api/hello/* here, with the user's access token in
// `Authorization: Bearer …`. This API says hello and whether a token arrived; when it knows
// the issuer (ISSUER), it also asks the provider's userinfo endpoint whom the token belongs
// to, as a stand-in for the token validation a real API does. It never echoes the token.
//
// Environment: HOST (127.0.0.1), PORT (9500; 0 picks a free one), ISSUER (optional),
// WATCH_STDIN=1 (exit when stdin closes). Prints one line when listening:
// {"ready":true,"url":"http://127.0.0.1:9500"}

import http from 'node:http';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 9500);
const issuer = process.env.ISSUER?.replace(/\/$/, '');

let userinfoEndpoint; // discovered once, lazily
async function whoseToken(token) {
  if (!issuer) return null;
  try {
    userinfoEndpoint ??= (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json())
      .userinfo_endpoint;
    const response = await fetch(userinfoEndpoint, { headers: { authorization: `Bearer ${token}` } });
    return response.ok ? await response.json() : { rejected: response.status };
  } catch {
    return null;
  }
}

const server = http.createServer(async (req, res) => {
  const authorization = req.headers.authorization ?? '';
  const token = authorization.startsWith('Bearer ') ? authorization.slice(7) : null;
  const user = token ? await whoseToken(token) : null;
  const name = user && !user.rejected ? (user.name ?? user.sub) : null;
  const body = {
    message: name ? `Hello, ${name}!` : 'Hello from the sample API!',
    bearer_token_received: token !== null,
    ...(user ? { token_accepted_by_provider: !user.rejected } : {}),
    method: req.method,
    path: req.url,
    at: new Date().toISOString(),
  };
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
});

server.listen(port, host, () => {
  const { port: bound } = server.address();
  console.log(JSON.stringify({ ready: true, url: `http://${host}:${bound}` }));
});

const stop = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (process.env.WATCH_STDIN === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
