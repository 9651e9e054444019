// Starts a real Mosquitto (Debian package `mosquitto`, installed by .ci/run) on a free loopback
// port with a throwaway config, and stops it again.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary, freePort, waitForPort } from '../../bench/net.js';

export { findBinary, freePort } from '../../bench/net.js';

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
