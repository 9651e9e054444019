/**
 * Bench child processes: stopping them (SIGTERM, then SIGKILL), registering their stop with the
 * cleanups, and their IPC (a reply to a command, the first stdout line). Shared by bench/broker.ts
 * and bench/federation.ts.
 */
import type { ChildProcess } from 'node:child_process';
import { cleanups } from './cleanup.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Stops a child: SIGTERM (or a polite message), SIGKILL after a grace period. */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(graceMs)]);
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(1000)]);
  }
}
/** A child whose stop is registered with the cleanups (removed again when it is stopped early). */
export function tracked(child: ChildProcess): ChildProcess {
  const stop = (): Promise<void> => stopChild(child);
  cleanups.push(stop);
  child.once('exit', () => {
    const i = cleanups.indexOf(stop);
    if (i >= 0) cleanups.splice(i, 1);
  });
  return child;
}

// ------------------------------------------------------------------------------ IPC

export interface Msg {
  readonly [k: string]: unknown;
}
/** The next IPC message from `child` that satisfies `pred`, or an error when it exits first or after `ms`. */
export function nextMessage(child: ChildProcess, pred: (m: Msg) => boolean, ms: number, what: string): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Msg): void => {
      if (typeof m === 'object' && m !== null && 'error' in m) {
        done();
        reject(new Error(`${what}: child ${child.pid} reports ${String(m.error)}`));
      } else if (pred(m)) {
        done();
        resolve(m);
      }
    };
    const onExit = (code: number | null, sig: string | null): void => {
      done();
      reject(new Error(`${what}: child ${child.pid} exited (${code ?? sig})`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: no answer from child ${child.pid} within ${ms} ms`));
    }, ms);
    const done = (): void => {
      clearTimeout(timer);
      child.off('message', onMsg);
      child.off('exit', onExit);
    };
    child.on('message', onMsg);
    child.once('exit', onExit);
  });
}
export function request(child: ChildProcess, cmd: string, ms = 30_000): Promise<Msg> {
  const p = nextMessage(child, (m) => m.reply === cmd, ms, cmd);
  child.send({ cmd });
  return p;
}
/** The first stdout line of `child` parsed as JSON, and the time from `t0` to it. */
export function firstLine(child: ChildProcess, t0: number, ms: number, what: string): Promise<{ line: Msg; ms: number }> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let err = '';
    child.stderr?.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-4000)));
    const onData = (b: Buffer): void => {
      buf += b.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const t = performance.now() - t0;
      done();
      try {
        resolve({ line: JSON.parse(buf.slice(0, nl)) as Msg, ms: t });
      } catch (e) {
        reject(new Error(`${what}: bad first line ${JSON.stringify(buf.slice(0, nl))}: ${(e as Error).message}`));
      }
    };
    const onExit = (code: number | null, sig: string | null): void => {
      done();
      reject(new Error(`${what} exited (${code ?? sig}) before listening: ${err}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: not listening within ${ms} ms: ${err}`));
    }, ms);
    const done = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
  });
}
