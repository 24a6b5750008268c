// The test provider's lifecycle (imported by provider.mjs): exit on SIGTERM and SIGINT,
// and when stdin closes if it is watched (PROVIDER_WATCH_STDIN, see README.md).

import { fstatSync } from 'node:fs';

export function watchLifecycle(log) {
  let shuttingDown = false;
  function shutdown(reason) {
    if (shuttingDown) return;
    shuttingDown = true;
    log(`shutting down (${reason})`);
    process.exit(0);
  }
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => shutdown(signal));

  function shouldWatchStdin() {
    const flag = process.env.PROVIDER_WATCH_STDIN;
    if (flag === '1') return true;
    if (flag === '0') return false;
    try {
      const st = fstatSync(0);
      return st.isFIFO() || st.isSocket();
    } catch {
      return false;
    }
  }
  if (shouldWatchStdin()) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => shutdown('stdin closed'));
    process.stdin.on('close', () => shutdown('stdin closed'));
    process.stdin.on('error', () => shutdown('stdin error'));
    process.stdin.resume();
  }
}
