/**
 * Timing a whole process from outside, for the edge benches (bench/node.ts part 2, bench/edge.ts):
 * spawn → first stdout line, spawn → exit, and the kernel's peak RSS of the process; plus the
 * small statistics they report with, and the bare mqtt.js script they compare against.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
export const min = (xs: readonly number[]): number => Math.min(...xs);
/** Half the (max - min) / median: "± x %". */
export const halfSpread = (xs: readonly number[]): number => (Math.max(...xs) - Math.min(...xs)) / median(xs) / 2;
export const r1 = (x: number): number => Number(x.toFixed(1));
export const r3 = (x: number): number => Number(x.toFixed(3));

export interface Stat {
  readonly medianMs: number;
  readonly minMs: number;
  readonly runsMs: readonly number[];
  readonly spread: number;
}
export const stat = (xs: readonly number[]): Stat => ({ medianMs: r1(median(xs)), minMs: r1(min(xs)), runsMs: xs.map(r1), spread: r3(halfSpread(xs)) });

export interface ProcRun {
  readonly rssKb: number;
  /** spawn → first stdout data (the acknowledged publish). */
  readonly ackMs: number;
  /** spawn → exit. */
  readonly exitMs: number;
}

export const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
export const RSS_METHOD = GNU_TIME ? 'GNU time -f %M (kernel peak RSS of the process, KiB)' : 'process.resourceUsage().maxRSS at exit, via an --import hook (KiB)';
/** Fallback when GNU time is missing: the child prints its own peak RSS at exit. */
const RSS_HOOK =
  'data:text/javascript,' +
  encodeURIComponent(
    "import { writeFileSync } from 'node:fs'; process.on('exit', () => writeFileSync(process.env.QIS_BENCH_RSS_FILE, String(process.resourceUsage().maxRSS)));",
  );

/**
 * Runs `node ...args` to its exit (status 0 required) and returns its peak RSS and times.
 * `refused`: output that means the publish was not acknowledged (a failed run, not a figure).
 */
export async function runProc(args: readonly string[], rssFile: string, refused?: RegExp): Promise<ProcRun> {
  rmSync(rssFile, { force: true });
  const argvFull = GNU_TIME ? [GNU_TIME, '-f', '%M', '-o', rssFile, process.execPath, ...args] : [process.execPath, `--import=${RSS_HOOK}`, ...args];
  const t0 = performance.now();
  const child = spawn(argvFull[0] as string, argvFull.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, QIS_BENCH_RSS_FILE: rssFile },
  });
  let ackMs = NaN;
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => {
    if (Number.isNaN(ackMs)) ackMs = performance.now() - t0;
    stdout += b.toString();
  });
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exitMs = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', () => resolve(performance.now() - t0));
  });
  await new Promise<void>((r) => (child.stdout.readableEnded && child.stderr.readableEnded ? r() : child.once('close', () => r())));
  const what = args.join(' ');
  if (child.exitCode !== 0) throw new Error(`${what} exited with ${String(child.exitCode ?? child.signalCode)}: ${stderr}${stdout}`);
  const rssKb = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop());
  if (!(Number.isFinite(rssKb) && rssKb > 0)) throw new Error(`bench check failed: peak RSS read for ${what}`);
  if (Number.isNaN(ackMs)) throw new Error(`bench check failed: ${what} printed a line`);
  if (refused?.test(stdout)) throw new Error(`bench check failed: ${what} had its publish acknowledged: ${stdout}`);
  return { rssKb, ackMs, exitMs };
}

/**
 * Writes the baseline of the edge benches to `file`: the project's own mqtt.js, connect, one
 * retained QoS 1 publish of the packet given in hex, PUBACK, a line on stdout, end. Run as
 * `node file URL TOPIC HEX`.
 */
export function writeBareScript(file: string, mqttUrl: string): void {
  writeFileSync(
    file,
    [
      `import mqtt from ${JSON.stringify(mqttUrl)};`,
      'const [url, topic, hex] = process.argv.slice(2);',
      'const client = await mqtt.connectAsync(url, { protocolVersion: 4, clean: true, reconnectPeriod: 0 });',
      "await client.publishAsync(topic, Buffer.from(hex, 'hex'), { qos: 1, retain: true });",
      'process.stdout.write(`published ${topic}\\n`);',
      'await client.endAsync();',
      '',
    ].join('\n'),
  );
}

/** CPU time (user + system) so far, ms, of a process (all threads) or, with `tid`, of one of its threads; Linux /proc. */
export function procCpuMs(pid: number, tid?: number): number {
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // clock ticks of 10 ms (USER_HZ 100)
  } catch {
    return NaN;
  }
}

/**
 * CPU time so far, ms, of each thread group of a process (Linux /proc/<pid>/task): 'main' (the
 * thread whose id is the pid), else the thread's name (`comm`: V8's compiler and GC helpers,
 * libuv's pool, worker threads). Threads that ended are not counted: sample over a window in
 * which none ends (a verify pool that stays up).
 */
export function threadCpuMs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    const tid = Number(t);
    let name = 'main';
    if (tid !== pid) {
      try {
        name = readFileSync(`/proc/${pid}/task/${t}/comm`, 'latin1').trim();
      } catch {
        continue;
      }
    }
    const ms = procCpuMs(pid, tid);
    if (Number.isFinite(ms)) out.set(name, (out.get(name) ?? 0) + ms);
  }
  return out;
}
