// Starts a real Mosquitto (Debian package `mosquitto`, installed by .ci/run) on a free loopback
// port with a throwaway config, and stops it again.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, delimiter } from 'node:path';

export function findBinary(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin'];
  for (const d of dirs) if (d && existsSync(join(d, name))) return join(d, name);
  throw new Error(`${name} not found: install Debian's mosquitto and mosquitto-clients (.ci/run does)`);
}

/** A port the OS just handed out on 127.0.0.1 (closed again, for a child process to bind). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function waitForPort(port: number, deadline: number): Promise<void> {
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
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

export interface Mosquitto { readonly port: number; readonly log: () => string; stop(): Promise<void> }

export async function startMosquitto(): Promise<Mosquitto> {
  const bin = findBinary('mosquitto');
  const dir = mkdtempSync(join(tmpdir(), 'qis-mosq-'));
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  // As root, mosquitto drops to user "mosquitto" unless told otherwise; logging to stderr needs no log dir.
  writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'log_dest stderr', 'user root', ''].join('\n'));
  let log = '';
  const child: ChildProcess = spawn(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (b: Buffer) => (log += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (log += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await Promise.race([
      waitForPort(port, Date.now() + 10_000),
      exited.then(() => Promise.reject(new Error(`mosquitto exited: ${log}`))),
    ]);
  } catch (e) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    port,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
