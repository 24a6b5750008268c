// How often the provider was asked for something, for tests that must show how often a
// client fetched it (the published key set, say).
//   GET /__test/requests?path=/jwks -> {"path":"/jwks","count":N}: the GET requests for
//       that path so far (any query string).

const counts = new Map(); // `${method} ${pathname}` -> N

export function countRequest(req, url) {
  const key = `${req.method} ${url.pathname}`;
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

export function requestCount(path) {
  return { path, count: counts.get(`GET ${path}`) ?? 0 };
}
