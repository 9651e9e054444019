// Starts a real redis-server (Debian package `redis-server`, installed by .ci/run) on a free
// loopback port with a throwaway directory, and stops it again.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary, freePort } from './mosquitto.js';

export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly log: () => string;
  /** SIGTERM, then removes its directory (unless the caller gave one). */
  stop(): Promise<void>;
  /** SIGKILL (a crash of the Redis host's process), leaving the directory. */
  kill(): Promise<void>;
}

export interface RedisServerOptions {
  /** AOF with `appendfsync always` (every write fsynced before the reply) instead of no persistence. */
  readonly aof?: boolean;
  /** Data directory to use (and keep): a restart on the same directory replays its AOF. Default: a temporary one. */
  readonly dir?: string;
}

/**
 * The environment without libfaketime: redis-server cannot start under it (jemalloc's first
 * clock_gettime recurses into libfaketime and Redis never listens), and Redis's own clock is not
 * what these tests check: the store's clock is injected, and expiry is decided by the store.
 * Running the suite under `faketime` (test/README.md) then moves every clock but Redis's.
 */
function withoutFaketime(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  if (out.LD_PRELOAD?.includes('faketime')) {
    out.LD_PRELOAD = out.LD_PRELOAD.split(/[:\s]+/).filter((l) => l && !l.includes('faketime')).join(':');
    if (out.LD_PRELOAD === '') delete out.LD_PRELOAD;
  }
  delete out.FAKETIME;
  return out;
}

/** The redis-server binary, or an error that says which Debian package provides it. */
export function redisBinary(): string {
  try {
    return findBinary('redis-server');
  } catch {
    throw new Error("redis-server not found: install Debian's redis-server package (apt-get install redis-server; .ci/run does)");
  }
}

/** Sends PING until +PONG comes back (or the deadline passes). */
function waitForPong(port: number, deadline: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const s = connect(port, '127.0.0.1');
      let got = '';
      const retry = (why: string): void => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`redis-server on 127.0.0.1:${port} did not answer PING: ${why}`));
        else setTimeout(attempt, 50);
      };
      s.setTimeout(1000, () => retry('timeout'));
      s.once('connect', () => s.write('PING\r\n'));
      s.on('data', (b: Buffer) => {
        got += b.toString('latin1');
        if (got.includes('\r\n')) {
          if (got.startsWith('+PONG')) {
            s.destroy();
            resolve();
          } else retry(got.trim()); // -LOADING while an AOF is replayed
        }
      });
      s.once('error', (e) => retry(e.message));
    };
    attempt();
  });
}

export async function startRedis(options: RedisServerOptions = {}): Promise<RedisServer> {
  const bin = redisBinary();
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'qis-redis-'));
  const ownDir = options.dir === undefined;
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning'];
  args.push(...(options.aof ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
  let log = '';
  const child: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: withoutFaketime(process.env) });
  child.stdout?.on('data', (b: Buffer) => (log += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (log += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await Promise.race([
      waitForPong(port, Date.now() + 10_000),
      exited.then(() => Promise.reject(new Error(`redis-server exited: ${log}`))),
    ]);
  } catch (e) {
    child.kill('SIGKILL');
    if (ownDir) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}
