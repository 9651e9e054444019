/**
 * Finding Debian binaries and free loopback ports, for the benches and the tests (test/helpers
 * re-exports these; test/ itself is not compiled to dist/, so the shared copy lives here).
 */
import { existsSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { delimiter, join } from 'node:path';

/** The path of a program on PATH or in /usr/sbin, /usr/bin (Debian puts mosquitto in /usr/sbin). */
export function findBinary(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin'];
  for (const d of dirs) if (d && existsSync(join(d, name))) return join(d, name);
  throw new Error(`${name} not found: install its Debian package (.ci/run does)`);
}

/** A port the OS just handed out on 127.0.0.1 (closed again, for a child process to bind). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** Resolves once something accepts connections on 127.0.0.1:port, or rejects after `deadline` (Unix ms). */
export function waitForPort(port: number, deadline: number, everyMs = 50): Promise<void> {
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on 127.0.0.1:${port}`));
        else setTimeout(attempt, everyMs);
      });
    };
    attempt();
  });
}
