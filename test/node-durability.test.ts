// The edge node's durability against real brokers and real processes: SIGKILL in the middle of
// publishing, a broker that goes away and comes back, the CLI's store-and-forward, and the
// reconnect backoff (driven by a fake clock: the only fake here, for pure timing logic).
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  backoffBound,
  backoffDelay,
  backoffOptions,
  BACKOFF_DEFAULTS,
  createNode,
  createOutcomePacket,
  decodePacket,
  toHex,
  verifyPacket,
  type NodeOptions,
  type NodeStatus,
  type QisNode,
  type Situation,
  type Timers,
} from '../src/index.js';
import { startAedes, type PlainAedes } from './helpers/aedes.js';
import { qis } from './helpers/cli.js';
import { bearing, fixedKey, situation } from './helpers/fixtures.js';
import { freePort } from './helpers/mosquitto.js';
import { prng } from './helpers/prng.js';
import { readRetained } from './helpers/retained.js';
import { startQisBroker } from './helpers/qis-broker.js';

const SIT: Situation = { ...situation };
const TPL = 'examples/bearing-failure.yaml';
const FIXTURE = fileURLToPath(new URL('./fixtures/publish-loop.mjs', import.meta.url));
const FAST = { baseMs: 50, capMs: 500 } as const;

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'qis-durable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function aedesFor(t: Test): Promise<PlainAedes> {
  const a = await startAedes();
  t.teardown(() => a.close());
  return a;
}

async function nodeFor(t: Test, options: NodeOptions): Promise<QisNode> {
  const node = await createNode(options);
  t.teardown(() => node.close());
  return node;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, ready: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** Every status event of a node, from now until it closes. */
function recordStatus(node: QisNode): NodeStatus[] {
  const seen: NodeStatus[] = [];
  void (async () => {
    for await (const s of node.status()) seen.push(s);
  })();
  return seen;
}


const codeOf = (e: unknown): unknown => (e as { code?: unknown } | undefined)?.code;

// ---------------------------------------------------------------------------------- kill -9

// Keep in step with test/fixtures/publish-loop.mjs.
const outcomeOf = (i: number): string => (i % 3 === 0 ? 'failure' : 'no_failure');
const confOf = (i: number): number => (((i * 37) % 100) + 1) / 100;
const ctxOf = (i: number): { rpm: number } => ({ rpm: 1000 + i });

interface Printed {
  readonly i: number;
  readonly seq: number;
  readonly acked: boolean;
}

/** Runs the publish loop, SIGKILLs it `delayMs` after it printed `minLines` lines, returns what it printed. */
function runAndKill(t: Test, url: string, dataDir: string, seedByte: number, t0: number, minLines: number, delayMs: number): Promise<Printed[]> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, [FIXTURE, url, dataDir, String(seedByte), String(t0)], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let out = '';
    let err = '';
    let armed = false;
    const guard = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the publish loop printed ${out.split('\n').length - 1} line(s) in 15 s: ${err}`));
    }, 15_000);
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString('utf8');
      if (!armed && out.split('\n').length - 1 >= minLines) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.stderr!.on('data', (b: Buffer) => (err += b.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      if (signal !== 'SIGKILL') return reject(new Error(`the publish loop exited by itself (${code}): ${err}`));
      // A line is one write(2) to a pipe: only complete lines count.
      const lines = out.split('\n').slice(0, -1);
      resolve(lines.map((l) => JSON.parse(l) as Printed));
    });
  });
}

t.test('node - kill -9 during publish: after a restart the broker holds a packet ≥ the last one queued, exactly as signed', async (t) => {
  const aedes = await aedesFor(t);
  const dataDir = tempDir(t);
  const SEED = 0x2a;
  const key = fixedKey(SEED);
  const topic = createOutcomePacket({ key, template: bearing, situation: SIT, outcome: 'failure', seq: 1, ts: 1 }).topic;
  const rnd = prng(0xdead);
  let prevSeq = 0;
  for (let round = 0; round < 3; round++) {
    const t0 = 1_700_000_000_000 + round * 10_000_000;
    const minLines = 5 + Math.floor(rnd() * 40);
    const delayMs = Math.floor(rnd() * 60);
    const lines = await runAndKill(t, aedes.url, dataDir, SEED, t0, minLines, delayMs);
    t.ok(lines.length >= minLines, `round ${round}: killed after ${lines.length} printed publishes (≥ ${minLines}, +${delayMs} ms)`);
    lines.forEach((l, k) => {
      if (l.i !== k) t.fail(`line ${k} is publish ${l.i}`);
      if (k > 0 && !(l.seq > lines[k - 1]!.seq)) t.fail(`seq went back: ${lines[k - 1]!.seq} then ${l.seq}`);
    });
    const last = lines[lines.length - 1]!;
    const leftovers = ['outbox', 'state'].flatMap((d) => readdirSync(join(dataDir, d)).filter((n) => n.startsWith('.')));
    if (leftovers.length > 0) t.comment(`round ${round}: temp files left by the kill: ${leftovers.join(', ')}`);

    // Restart on the same data dir (the dead child's lock is stale) and deliver what was queued.
    const node = await createNode({ url: aedes.url, dataDir, key, reconnect: FAST });
    const queued = node.pending;
    try {
      await node.flush({ timeoutMs: 5000 });
      t.equal(node.pending, 0, 'outbox empty after flush');
    } finally {
      await node.close();
    }
    const bytes = await readRetained(aedes.url, topic);
    if (!bytes) {
      t.fail('no retained packet on the node topic');
      continue;
    }
    const v = verifyPacket(topic, bytes);
    t.equal(v.nodeId, key.nodeId, 'verifies, signed by the node');
    t.ok(v.seq >= last.seq, `retained seq ${v.seq} ≥ last printed seq ${last.seq}`);
    t.ok(v.seq > prevSeq, 'and above everything of the previous round');
    prevSeq = v.seq;
    const i = v.ts - t0;
    t.comment(`round ${round}: ${lines.length} printed (last seq ${last.seq}, acked ${last.acked}); ${queued} queued at restart; broker holds publish ${i}`);
    t.ok(Number.isInteger(i) && i >= last.i, `it is publish ${i} of this round (last printed ${last.i})`);
    const resigned = createOutcomePacket({ key, template: bearing, situation: SIT, outcome: outcomeOf(i), conf: confOf(i), ctx: ctxOf(i), seq: v.seq, ts: v.ts });
    t.equal(toHex(bytes), toHex(resigned.packet), 'byte-identical to the packet re-signed from (key, seq, ts, outcome, situation)');
  }
});

t.test('node - a publish that fails to queue (disk error) does not record the bucket move: the old bucket still gets its tombstone', async (t) => {
  // publish() writes state/<tplId>.json (seq and the NEW bucket) before it queues the tombstone
  // for the old bucket and the new packet. If queueing fails (ENOSPC, EIO) or the process dies
  // in between, the node believes it already lives in the new bucket, never tombstones the old
  // one, and a plain broker (Mosquitto, Aedes) keeps two live packets for this node.
  const aedes = await aedesFor(t);
  const dataDir = tempDir(t);
  const node = await nodeFor(t, { url: aedes.url, dataDir, key: fixedKey(0x61), reconnect: FAST });
  const A = SIT;
  const B: Situation = { ...SIT, machine_model: 'LP-7' };
  const onA = await node.publish(bearing, A, 'failure');
  t.equal(onA.acked, true, 'A delivered');
  // The outbox directory becomes unwritable: a file where the directory was (ENOTDIR on write).
  const outbox = join(dataDir, 'outbox');
  rmSync(outbox, { recursive: true, force: true });
  writeFileSync(outbox, '');
  await t.rejects(node.publish(bearing, B, 'no_failure'), { code: 'ERR_FILE_IO' }, 'the move to B fails to queue');
  rmSync(outbox, { force: true });
  mkdirSync(outbox, { mode: 0o700 });
  const onB = await node.publish(bearing, B, 'no_failure');
  t.equal(onB.acked, true, 'B delivered');
  t.ok(onB.tombstone, 'the retried move to B queues a tombstone for A');
  const a = await readRetained(aedes.url, onA.topic);
  const b = await readRetained(aedes.url, onB.topic);
  const live = [a, b].filter((x): x is Uint8Array => x !== undefined && decodePacket(x).del !== true);
  t.equal(live.length, 1, 'one live packet for this node and template on the broker');
  t.equal(a && decodePacket(a).del, true, 'A holds a tombstone');
});

// ---------------------------------------------------------------------------------- broker down

t.test('node - broker down while publishing: publishes queue quickly, the latest lands after the broker is back', async (t) => {
  const aedes = await aedesFor(t);
  const dataDir = tempDir(t);
  const node = await nodeFor(t, { url: aedes.url, dataDir, key: fixedKey(0x31), reconnect: FAST });
  const events = recordStatus(node);
  await waitFor('the first connection', () => node.connected);
  const up = await node.publish(bearing, SIT, 'no_failure');
  t.equal(up.acked, true, 'acknowledged while the broker is up');

  await aedes.stop();
  const results = [];
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    const r = await node.publish(bearing, SIT, i === 2 ? 'failure' : 'no_failure', { ts: 1_700_000_000_000 + i });
    const took = Date.now() - started;
    t.equal(r.acked, false, `publish ${i}: not acknowledged`);
    t.ok(took < 3000, `publish ${i} returned in ${took} ms (well before the 10 s ack timeout)`);
    results.push(r);
  }
  t.ok(results[1]!.seq > results[0]!.seq && results[2]!.seq > results[1]!.seq, 'seq increases');
  t.equal(node.pending, 1, 'three packets on one topic coalesce to the newest');
  t.ok(events.some((e) => e.type === 'disconnected'), 'status: disconnected');

  await aedes.start();
  await node.flush({ timeoutMs: 5000 });
  t.equal(node.pending, 0, 'pending 0');
  const last = results[2]!;
  t.same(await readRetained(aedes.url, last.topic), last.packet, 'the broker holds the latest packet, byte for byte');
  await waitFor('outbox-flushed', () => events.some((e, k) => e.type === 'outbox-flushed' && k > events.findIndex((x) => x.type === 'disconnected')), 2000);
  const types = events.map((e) => e.type);
  const down = types.indexOf('disconnected');
  const retry = types.indexOf('reconnecting', down);
  const back = types.indexOf('connected', retry);
  const flushed = types.indexOf('outbox-flushed', back);
  t.ok(down >= 0 && retry > down && back > retry && flushed > back, `disconnected → reconnecting → connected → outbox-flushed (${types.join(', ')})`);
  const f = events[flushed] as Extract<NodeStatus, { type: 'outbox-flushed' }>;
  t.ok(f.delivered >= 1, `delivered ${f.delivered}`);
  for (const e of events) if (e.type === 'reconnecting') t.ok(e.delayMs >= 0 && e.delayMs < FAST.capMs, `reconnect delay ${e.delayMs} ms within the cap`);
});

t.test('node - qis publish against a stopped broker exits 0 and queues; qis flush delivers once it is back', async (t) => {
  const aedes = await aedesFor(t);
  await aedes.stop();
  const dataDir = tempDir(t);
  const SITJ = JSON.stringify(SIT);
  const base = ['--url', aedes.url, '--data-dir', dataDir];
  const human = await qis(['publish', ...base, '--template', TPL, '--situation', SITJ, '--outcome', 'no_failure']);
  t.equal(human.status, 0, `exit 0 (${human.stderr})`);
  t.match(human.stdout, /NOT delivered yet/, 'says it was not delivered');
  t.match(human.stdout, join(dataDir, 'outbox'), 'says where it is queued');
  t.match(human.stdout, /qis flush/, 'says how to deliver it');
  const r = await qis(['publish', ...base, '--template', TPL, '--situation', SITJ, '--outcome', 'failure', '--ts', '1700000000000', '--json']);
  t.equal(r.status, 0, `exit 0 (${r.stderr})`);
  const j = JSON.parse(r.stdout) as { ok: boolean; acked: boolean; queued: number; topic: string; packet: string; seq: number };
  t.same({ ok: j.ok, acked: j.acked, queued: j.queued }, { ok: true, acked: false, queued: 1 }, 'queued, coalesced with the first');
  t.ok(existsSync(join(dataDir, 'outbox')) && readdirSync(join(dataDir, 'outbox')).some((n) => n.endsWith(`-p-${j.seq}.json`)), 'the packet file is in the outbox');

  await aedes.start();
  const f = await qis(['flush', ...base, '--timeout', '10000', '--json']);
  t.equal(f.status, 0, `qis flush exit 0 (${f.stderr})`);
  t.same(JSON.parse(f.stdout), { ok: true, delivered: 1, queued: 0 });
  const bytes = await readRetained(aedes.url, j.topic);
  t.equal(bytes && toHex(bytes), j.packet, 'the broker holds the packet qis publish signed');
  t.equal(verifyPacket(j.topic, bytes!).seq, j.seq);
  const again = await qis(['flush', ...base]);
  t.equal(again.status, 0);
  t.match(again.stdout, /nothing to deliver/);
});

// ---------------------------------------------------------------------------------- backoff

t.test('node - backoffBound/backoffDelay: full jitter in [0, min(cap, base·2^k))', async (t) => {
  const o = backoffOptions({ baseMs: 100, capMs: 5000 });
  t.same(o, { baseMs: 100, capMs: 5000 });
  t.same(backoffOptions(), BACKOFF_DEFAULTS, 'defaults');
  t.same(backoffOptions({}), { baseMs: 500, capMs: 30_000 });
  t.same([0, 1, 2, 3, 4, 5, 6, 7].map((k) => backoffBound(k, o)), [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
  t.equal(backoffBound(1000, o), 5000, 'huge attempts stay at the cap (no Infinity)');
  t.equal(backoffBound(1e9, backoffOptions({ baseMs: 1, capMs: 1e15 })), 1e15, 'a huge cap is reached too');
  t.equal(backoffDelay(3, o, () => 0), 0);
  t.equal(backoffDelay(3, o, () => 0.5), 400);
  t.equal(backoffDelay(3, o, () => 0.999999), 799, 'strictly below the bound');
  const r = prng(1);
  for (let k = 0; k < 200; k++) {
    const d = backoffDelay(k % 20, o, r);
    if (!(Number.isInteger(d) && d >= 0 && d < backoffBound(k % 20, o))) t.fail(`attempt ${k % 20}: delay ${d}`);
  }
  t.equal(backoffOptions({ baseMs: 7, capMs: 7 }).capMs, 7, 'cap = base is allowed');
});

t.test('node - backoff options out of range are ERR_INVALID_ARGUMENT', async (t) => {
  const bad = [{ baseMs: 0 }, { baseMs: -1 }, { baseMs: NaN }, { baseMs: Infinity }, { capMs: 100 }, { baseMs: 100, capMs: 99 }, { capMs: NaN }, { capMs: Infinity }];
  for (const b of bad) t.throws(() => backoffOptions(b), { code: 'ERR_INVALID_ARGUMENT' }, JSON.stringify(b, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)));
  const dir = join(tempDir(t), 'never-created');
  await t.rejects(createNode({ url: 'mqtt://127.0.0.1:1', dataDir: dir, reconnect: { baseMs: 0 } }), { code: 'ERR_INVALID_ARGUMENT' }, 'createNode checks reconnect');
  await t.rejects(createNode({ url: 'mqtt://127.0.0.1:1', dataDir: dir, ackTimeoutMs: -1 }), { code: 'ERR_INVALID_ARGUMENT' });
  await t.rejects(createNode({ url: 'mqtt://127.0.0.1:1', dataDir: dir, keepaliveS: NaN }), { code: 'ERR_INVALID_ARGUMENT' });
  t.notOk(existsSync(dir), 'options are checked before the data dir is touched');
});

/** Timers that record every request and fire only when told to. */
function fakeTimers(): { timers: Timers; due: { fn: () => void; ms: number; cleared: boolean }[]; fire(): Promise<number> } {
  const due: { fn: () => void; ms: number; cleared: boolean }[] = [];
  const timers: Timers = {
    setTimeout(fn, ms) {
      const h = { fn, ms, cleared: false };
      due.push(h);
      return h;
    },
    clearTimeout(h) {
      if (h && typeof h === 'object') (h as { cleared: boolean }).cleared = true;
    },
  };
  return {
    timers,
    due,
    async fire() {
      await waitFor('a reconnect timer', () => due.some((h) => !h.cleared));
      const i = due.findIndex((h) => !h.cleared);
      const [h] = due.splice(i, 1);
      h!.fn();
      return h!.ms;
    },
  };
}

t.test('node - reconnect backoff with a fake clock: exponential bound, full jitter, cap', async (t) => {
  const port = await freePort(); // nothing listens: every attempt fails at once
  const opts = backoffOptions({ baseMs: 100, capMs: 10_000 });
  const SEED = 0x5eed;
  const fake = fakeTimers();
  const node = await nodeFor(t, { url: `mqtt://127.0.0.1:${port}`, dataDir: tempDir(t), key: fixedKey(0x41), timers: fake.timers, random: prng(SEED), reconnect: opts });
  const events = recordStatus(node);
  const delays: number[] = [];
  for (let k = 0; k < 12; k++) delays.push(await fake.fire());
  const bounds = delays.map((_d, k) => Math.min(opts.capMs, opts.baseMs * 2 ** k));
  t.same(bounds, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000, 10_000, 10_000], 'bounds double up to the cap');
  delays.forEach((d, k) => t.ok(Number.isInteger(d) && d >= 0 && d < bounds[k]!, `attempt ${k}: ${d} ms in [0, ${bounds[k]})`));
  const replica = prng(SEED);
  t.same(delays, bounds.map((b) => Math.floor(replica() * b)), 'each delay is floor(random() · bound): the seeded draws, in order');
  const ratios = delays.map((d, k) => d / bounds[k]!);
  t.ok(Math.min(...ratios) < 0.3 && Math.max(...ratios) > 0.7, `jitter spreads over (0,1): ${ratios.map((r) => r.toFixed(2)).join(' ')}`);
  const reported = events.flatMap((e) => (e.type === 'reconnecting' ? [e] : []));
  t.same(reported.slice(0, 12).map((e) => e.delayMs), delays, 'status reports the same delays');
  t.same(reported.slice(0, 12).map((e) => e.attempt), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'attempts counted from 1');
});

t.test('node - reconnect backoff with random()=0.999 grows monotonically to the cap and starts over after a connection', async (t) => {
  const aedes = await aedesFor(t);
  await aedes.stop();
  const opts = backoffOptions({ baseMs: 50, capMs: 2000 });
  const fake = fakeTimers();
  const node = await nodeFor(t, { url: aedes.url, dataDir: tempDir(t), key: fixedKey(0x42), timers: fake.timers, random: () => 0.999, reconnect: opts });
  const delays: number[] = [];
  for (let k = 0; k < 9; k++) delays.push(await fake.fire());
  t.same(delays, [49, 99, 199, 399, 799, 1598, 1998, 1998, 1998], 'floor(0.999 · min(cap, base·2^k))');
  delays.forEach((d, k) => k > 0 && t.ok(d >= delays[k - 1]!, `non-decreasing at ${k}`));
  // The broker comes back: the next attempt connects. A connection that drops before it has
  // proved itself does not reset the backoff (a broker that refuses a packet by disconnecting
  // must not cause a tight reconnect loop)…
  await aedes.start();
  t.equal(await fake.fire(), 1998, 'the attempt that reconnects');
  await waitFor('the connection', () => node.connected);
  await aedes.stop();
  await waitFor('the disconnection', () => !node.connected);
  await aedes.start();
  t.equal(await fake.fire(), 1998, 'a connection lost at once: the backoff stays at the cap');
  // …while one that stays up 10 s starts the next outage from base again.
  await waitFor('the connection', () => node.connected);
  t.equal(await fake.fire(), 10_000, 'the connection proves itself after 10 s');
  await aedes.stop();
  await waitFor('the disconnection', () => !node.connected);
  t.equal(await fake.fire(), 49, 'after a stable connection the backoff restarts at base');
});

// ---------------------------------------------------------------------------------- lifecycle

t.test('node - close() is idempotent; publish, query, flush and withdraw after close are ERR_CLOSED', async (t) => {
  const dataDir = tempDir(t);
  const port = await freePort();
  const node = await createNode({ url: `mqtt://127.0.0.1:${port}`, dataDir, key: fixedKey(0x51), reconnect: FAST });
  await node.publish(bearing, SIT, 'failure', { ackTimeoutMs: 0 });
  // Offline, no time limit: only close ends it (it rejects during close(), so expect it now).
  const waiting = t.rejects(node.flush(), { code: 'ERR_CLOSED' }, 'a pending flush rejects with ERR_CLOSED');
  const a = node.close();
  const b = node.close();
  await Promise.all([a, b]);
  await node.close();
  t.pass('close, close, close');
  await waiting;
  await t.rejects(node.publish(bearing, SIT, 'failure'), { code: 'ERR_CLOSED' });
  await t.rejects(node.query(bearing, SIT), { code: 'ERR_CLOSED' });
  await t.rejects(node.flush(), { code: 'ERR_CLOSED' });
  await t.rejects(node.withdraw(bearing), { code: 'ERR_CLOSED' });
  t.throws(() => node.watch(bearing, SIT), { code: 'ERR_CLOSED' });
  t.same(await node.status().next(), { value: undefined, done: true }, 'status() after close ends at once');
  t.equal(node.connected, false);
  // The lock went with it.
  const again = await nodeFor(t, { url: `mqtt://127.0.0.1:${port}`, dataDir, key: fixedKey(0x51), reconnect: FAST });
  t.equal(again.nodeId, node.nodeId, 'the data dir opens again');
});

t.test('node - brokerKind() after close rejects with ERR_CLOSED rather than throwing synchronously', async (t) => {
  const port = await freePort();
  const node = await createNode({ url: `mqtt://127.0.0.1:${port}`, dataDir: tempDir(t), key: fixedKey(0x52), reconnect: FAST });
  await node.close();
  let p: Promise<unknown> | undefined;
  let thrown: unknown;
  try {
    p = node.brokerKind();
  } catch (e) {
    thrown = e;
  }
  t.equal(codeOf(thrown), undefined, `a Promise-returning method must not throw (threw ${String(codeOf(thrown))})`);
  if (p) await t.rejects(p, { code: 'ERR_CLOSED' });
});

t.test('node - an aborted signal is ERR_ABORTED; an offline flush with a short timeout is ERR_TIMEOUT and keeps the packet', async (t) => {
  const port = await freePort();
  const url = `mqtt://127.0.0.1:${port}`;
  const dataDir = tempDir(t);
  const aborted = AbortSignal.abort(new Error('stop'));
  const otherDir = join(tempDir(t), 'n');
  await t.rejects(createNode({ url, dataDir: otherDir, signal: aborted }), { code: 'ERR_ABORTED' }, 'createNode');
  t.notOk(existsSync(join(otherDir, 'lock')), 'no lock left behind');
  const node = await nodeFor(t, { url, dataDir, key: fixedKey(0x53), reconnect: FAST });
  const r = await node.publish(bearing, SIT, 'failure', { ackTimeoutMs: 0 });
  t.equal(r.acked, false);
  t.equal(node.pending, 1);
  await t.rejects(node.publish(bearing, SIT, 'no_failure', { signal: aborted }), { code: 'ERR_ABORTED' }, 'publish with an aborted signal');
  t.equal(node.pending, 1, 'nothing new queued');
  await t.rejects(node.query(bearing, SIT, { signal: aborted }), { code: 'ERR_ABORTED' }, 'query with an aborted signal');
  await t.rejects(node.flush({ signal: aborted }), { code: 'ERR_ABORTED' }, 'flush with an aborted signal');
  const ac = new AbortController();
  const later = node.flush({ signal: ac.signal });
  setTimeout(() => ac.abort(new Error('enough')), 50);
  await t.rejects(later, { code: 'ERR_ABORTED', message: /enough/ }, 'flush aborted while waiting');
  const started = Date.now();
  await t.rejects(node.flush({ timeoutMs: 200 }), { code: 'ERR_TIMEOUT' }, 'flush offline with a 200 ms limit');
  const took = Date.now() - started;
  t.ok(took >= 150 && took < 2000, `timed out after ${took} ms`);
  t.equal(node.pending, 1, 'the packet stays queued');
  t.ok(readdirSync(join(dataDir, 'outbox')).some((n) => n.endsWith(`-p-${r.seq}.json`)), 'its file too');
  await t.rejects(node.flush({ timeoutMs: 0 }), { code: 'ERR_INVALID_ARGUMENT' }, 'timeoutMs must be positive');
});

// ---------------------------------------------------------------------------------- refusals and detection

t.test('node - a packet the broker keeps refusing is set aside, and the node works on', async (t) => {
  // A closed registry that does not list the template: the broker disconnects at every send.
  const b = await startQisBroker({ admission: { registry: 'closed', templates: [] } });
  t.teardown(() => b.close());
  const dataDir = tempDir(t);
  const node = await nodeFor(t, { url: b.url, dataDir, key: fixedKey(0x61), reconnect: { baseMs: 20, capMs: 100 } });
  const seen = recordStatus(node);
  const r = await node.publish(bearing, SIT, 'failure', { ackTimeoutMs: 0 });
  await waitFor('the refusal', () => seen.some((s) => s.type === 'refused' && s.code === 'ERR_DELIVERY_REFUSED'), 20_000);
  await waitFor('the outbox to empty', () => node.pending === 0);
  // The entry leaves the outbox's index at once; its file is renamed just after.
  const isBad = (): boolean => readdirSync(join(dataDir, 'outbox')).some((n) => n.endsWith('.bad') && n.includes(`-${r.seq}.json`));
  await waitFor('the .bad file', isBad).catch(() => undefined);
  t.ok(isBad(), 'kept as .bad for a person to inspect');
  const q = await node.query(bearing, SIT, { minCohort: 1, timeoutMs: 10_000 });
  t.equal(q.completeness, 'sync', 'queries work again');
});

t.test('node - createNode refuses a clientId that cannot be a topic level', async (t) => {
  for (const clientId of ['plant/7', 'a+b', 'x#', '']) {
    await t.rejects(createNode({ url: 'mqtt://127.0.0.1:1', dataDir: tempDir(t), clientId }), { code: 'ERR_INVALID_ARGUMENT' }, JSON.stringify(clientId));
  }
});

t.test('node - flush() returns when the last queued packet expires instead of being sent', async (t) => {
  const a = await aedesFor(t);
  await a.stop();
  const node = await nodeFor(t, { url: a.url, dataDir: tempDir(t), key: fixedKey(0x62), reconnect: FAST });
  const exp = Math.floor(Date.now() / 1000) + 1;
  await node.publish(bearing, SIT, 'failure', { exp, ackTimeoutMs: 0 });
  await sleep(2100); // past exp
  await a.start();
  await node.flush({ timeoutMs: 5_000 });
  t.equal(node.pending, 0);
});

t.test('node - aborting one query does not abort another one running alongside', async (t) => {
  const b = await startQisBroker();
  t.teardown(() => b.close());
  const node = await nodeFor(t, { url: b.url, dataDir: tempDir(t), key: fixedKey(0x63), reconnect: FAST });
  const ac = new AbortController();
  const first = node.query(bearing, SIT, { signal: ac.signal, minCohort: 1 });
  const second = node.query(bearing, SIT, { minCohort: 1 });
  ac.abort();
  await t.rejects(first, { code: 'ERR_ABORTED' });
  const r = await second;
  t.equal(r.broker, 'qis');
  t.equal(r.completeness, 'sync');
});

t.test('node - a watch whose subscription is denied ends with ERR_SUBSCRIBE_DENIED', async (t) => {
  const b = await startQisBroker({ acl: { subscribe: [{ allow: false, topic: 'qis/1/o/#' }] } });
  t.teardown(() => b.close());
  const node = await nodeFor(t, { url: b.url, dataDir: tempDir(t), key: fixedKey(0x64), reconnect: FAST });
  await waitFor('the connection', () => node.connected);
  const it = node.watch(bearing, SIT);
  await t.rejects(it.next(), { code: 'ERR_SUBSCRIBE_DENIED' });
});
