/**
 * Bench child processes: stopping them (SIGTERM, then SIGKILL), registering their stop with the
 * cleanups, and their IPC (a reply to a command, the first stdout line). Shared by bench/broker.ts
 * and bench/federation.ts.
 */
import type { ChildProcess } from 'node:child_process';
import type { Worker } from 'node:worker_threads';
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
/**
 * The next message from `child` (a process's IPC, or a worker thread's) that satisfies `pred`, or
 * an error when it fails or exits first or after `ms`.
 */
export function nextMessage(child: ChildProcess | Worker, pred: (m: Msg) => boolean, ms: number, what: string): Promise<Msg> {
  const name = 'threadId' in child ? `thread ${child.threadId}` : `child ${child.pid}`;
  return new Promise((resolve, reject) => {
    const onMsg = (m: Msg): void => {
      if (typeof m === 'object' && m !== null && 'error' in m) {
        done();
        reject(new Error(`${what}: ${name} reports ${String(m.error)}`));
      } else if (pred(m)) {
        done();
        resolve(m);
      }
    };
    const onExit = (code: number | null, sig?: string | null): void => {
      done();
      reject(new Error(`${what}: ${name} exited (${code ?? sig})`));
    };
    const onError = (e: Error): void => {
      done();
      reject(new Error(`${what}: ${name} failed: ${e.message}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: no answer from ${name} within ${ms} ms`));
    }, ms);
    const done = (): void => {
      clearTimeout(timer);
      child.off('message', onMsg);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    child.on('message', onMsg);
    child.once('exit', onExit);
    child.once('error', onError);
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
