// Pages the tests show from the provider's own origin (where a real provider's pages live).
//   GET /__test/frame?src=URL -> an HTML page framing URL, as a provider's logout page
//       frames each relying party's front-channel logout URI (OIDC Front-Channel Logout 1.0).

function escapeAttribute(text) {
  return String(text)
    .replaceAll('&', '&amp;')
    .replaceAll('"', '&quot;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;');
}

export function sendFramePage(res, src) {
  if (!src || !/^https?:\/\//.test(src)) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end('src must be an http(s) URL');
    return;
  }
  const page = '<!doctype html><html><head><title>signed out</title></head><body>'
    + `<p id="status">signing out of the relying parties</p>`
    + `<iframe id="rp" src="${escapeAttribute(src)}" onload="document.getElementById('status').textContent='done'"></iframe>`
    + '</body></html>';
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(page);
}
