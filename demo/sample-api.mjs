// The demo's upstream API: plain node:http, no dependencies.
//
// gatehouse forwards the SPA's calls to /api/hello/* here, with the user's access token in
// `Authorization: Bearer …`. This API says hello and whether a token arrived; when it knows
// the issuer (ISSUER), it also asks the provider's userinfo endpoint whom the token belongs
// to, as a stand-in for the token validation a real API does. It never echoes the token.
//
// /live is a WebSocket (gatehouse's `websocket = true` route /api/live): it sends a tick
// every second and echoes what the page sends. The few lines of RFC 6455 framing below
// keep the demo free of npm packages.
//
// Environment: HOST (127.0.0.1), PORT (9500; 0 picks a free one), ISSUER (optional),
// WATCH_STDIN=1 (exit when stdin closes). Prints one line when listening:
// {"ready":true,"url":"http://127.0.0.1:9500"}

import crypto from 'node:crypto';
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

// One unmasked frame from the server (FIN set): opcode 1 text, 8 close, 10 pong.
function frame(opcode, payload) {
  const length = payload.length;
  const head = length < 126 ? Buffer.from([0x80 | opcode, length])
    : length < 65536 ? Buffer.from([0x80 | opcode, 126, length >> 8, length & 255])
    : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (() => {
      const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(length)); return b;
    })()]);
  return Buffer.concat([head, payload]);
}

server.on('upgrade', async (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if (!req.url.startsWith('/live') || !key) {
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const authorization = req.headers.authorization ?? '';
  const user = authorization.startsWith('Bearer ') ? await whoseToken(authorization.slice(7)) : null;
  const accept = crypto.createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
    + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const send = (object) => socket.write(frame(1, Buffer.from(JSON.stringify(object))));
  const who = user && !user.rejected ? (user.name ?? user.sub) : null;
  send({ hello: who ? `Live updates for ${who}` : 'Live updates', bearer_token_received: !!user });
  let tick = 0;
  const timer = setInterval(() => send({ tick: ++tick, at: new Date().toISOString() }), 1000);
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    // Client frames are masked; small ones are all this page sends.
    while (buffered.length >= 6) {
      const opcode = buffered[0] & 15;
      let length = buffered[1] & 127;
      let offset = 2;
      if (length === 126) { length = buffered.readUInt16BE(2); offset = 4; }
      if (length === 127) { length = Number(buffered.readBigUInt64BE(2)); offset = 10; }
      if (buffered.length < offset + 4 + length) return;
      const mask = buffered.subarray(offset, offset + 4);
      const payload = Buffer.from(buffered.subarray(offset + 4, offset + 4 + length));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      buffered = buffered.subarray(offset + 4 + length);
      if (opcode === 1) send({ echo: payload.toString('utf8') });
      else if (opcode === 9) socket.write(frame(10, payload));
      else if (opcode === 8) { socket.end(frame(8, payload.subarray(0, 2))); }
    }
  });
  const stopTicking = () => clearInterval(timer);
  socket.on('close', stopTicking);
  socket.on('error', stopTicking);
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
