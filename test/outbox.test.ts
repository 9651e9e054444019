// The node's durable outbox (src/node/outbox.ts) and per-template seq state, and the data directory
// lock (src/node/durable.ts): pure coalescing rules, then real nodes on temp dirs pointed at a closed
// port (nothing listens there, so everything stays queued) or at a plain Aedes on loopback.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  address,
  compileTemplate,
  createNode,
  createOutcomePacket,
  decodePacket,
  outcomeTopic,
  toHex,
  type NodeOptions,
  type NodeStatus,
  type QisNode,
  type Situation,
  type Template,
} from '../src/index.js';
import { coalesce, supersededBy, type OutboxEntry, type OutboxKind } from '../src/node/outbox.js';
import { startAedes } from './helpers/aedes.js';
import { bearing, bearingDoc, fixedKey, situation } from './helpers/fixtures.js';
import { freePort } from './helpers/mosquitto.js';
import { prng } from './helpers/prng.js';
import { readRetained } from './helpers/retained.js';

const KEY = fixedKey(7);
const SIT: Situation = { ...situation };

function tempDir(t: Test, base = tmpdir()): string {
  const dir = mkdtempSync(join(base, 'qis-outbox-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A node that can never connect: its URL is a loopback port nobody listens on. */
async function offlineNode(t: Test, dataDir: string, extra: Partial<NodeOptions> = {}): Promise<QisNode> {
  const port = await freePort();
  const node = await createNode({ url: `mqtt://127.0.0.1:${port}`, dataDir, key: KEY, reconnect: { baseMs: 50, capMs: 200 }, ...extra });
  t.teardown(() => node.close());
  return node;
}

const outboxFiles = (dataDir: string): string[] => readdirSync(join(dataDir, 'outbox')).filter((n) => !n.startsWith('.') && !n.endsWith('.bad')).sort();


// ---------------------------------------------------------------------------------- pure rules

function entry(order: number, tplId: string, kind: OutboxKind, topic: string, seq = order): OutboxEntry {
  return { name: `${order}-${tplId}-${kind}`, order, kind, tplId, topic, seq, packet: new Uint8Array() };
}

t.test('outbox - supersededBy: a packet drops older packets of its template and an older tombstone on its own topic', async (t) => {
  const p1 = entry(1, 'A', 'packet', 'A/x');
  const t2 = entry(2, 'A', 'tombstone', 'A/y');
  const t3 = entry(3, 'A', 'tombstone', 'A/z');
  const b4 = entry(4, 'B', 'packet', 'B/w');
  const b5 = entry(5, 'B', 'tombstone', 'A/y'); // same topic string, other template: untouched
  const queued = [p1, t2, t3, b4, b5];
  const p6 = entry(6, 'A', 'packet', 'A/y');
  t.same(supersededBy(queued, p6).map((e) => e.name).sort(), [p1.name, t2.name].sort(), 'older packet and the tombstone on A/y; not the tombstone on A/z, not template B');
  // An older entry never supersedes newer ones, and an entry never supersedes itself.
  t.same(supersededBy([...queued, p6], p1), [], 'order matters: the oldest packet drops nothing');
  t.same(supersededBy([p6], p6), [], 'not itself');
  // A packet on another topic of the same template drops the older packet wherever it was.
  t.same(supersededBy([p1], entry(7, 'A', 'packet', 'A/q')).map((e) => e.name), [p1.name]);
});

t.test('outbox - supersededBy: a tombstone drops older entries on its topic only', async (t) => {
  const p1 = entry(1, 'A', 'packet', 'A/x');
  const t2 = entry(2, 'A', 'tombstone', 'A/x');
  const p3 = entry(3, 'A', 'packet', 'A/y');
  const t4 = entry(4, 'A', 'tombstone', 'A/z');
  const b5 = entry(5, 'B', 'packet', 'B/x');
  const tomb = entry(9, 'A', 'tombstone', 'A/x');
  t.same(supersededBy([p1, t2, p3, t4, b5], tomb).map((e) => e.name).sort(), [p1.name, t2.name].sort(), 'packet and tombstone on A/x only');
  t.same(supersededBy([p3, t4, b5], entry(9, 'A', 'tombstone', 'A/y')).map((e) => e.name), [p3.name]);
  t.same(supersededBy([entry(10, 'A', 'packet', 'A/x')], tomb), [], 'a newer packet on the topic stays');
});

t.test('outbox - coalesce keeps the newest packet per template plus the tombstones still owed', async (t) => {
  // A moves x → y → x → z (a tombstone for the bucket left, then the packet), B stays on w.
  const list = [
    entry(1, 'A', 'packet', 'A/x'),
    entry(2, 'B', 'packet', 'B/w'),
    entry(3, 'A', 'tombstone', 'A/x'),
    entry(4, 'A', 'packet', 'A/y'),
    entry(5, 'B', 'packet', 'B/w'),
    entry(6, 'A', 'tombstone', 'A/y'),
    entry(7, 'A', 'packet', 'A/x'),
    entry(8, 'A', 'tombstone', 'A/x'),
    entry(9, 'A', 'packet', 'A/z'),
  ];
  const drop = coalesce(list);
  const kept = list.filter((e) => !drop.has(e.name)).map((e) => `${e.order}:${e.kind}:${e.topic}`);
  t.same(kept, ['5:packet:B/w', '6:tombstone:A/y', '8:tombstone:A/x', '9:packet:A/z']);
  t.same(coalesce([]), new Set(), 'empty');
  t.same(coalesce(list.filter((e) => !drop.has(e.name))), new Set(), 'a coalesced outbox is a fixed point');
});

// ---------------------------------------------------------------------------------- bounded

t.test('outbox - Outbox.open: 1,000 offline publishes over 5 templates with bucket moves stay bounded', async (t) => {
  // tmpfs when there is one: this test counts entries, and 1,000 publishes × ~4 fsyncs on a
  // slow disk would take most of the time budget. Durability itself is tested elsewhere.
  const dataDir = tempDir(t, existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const node = await offlineNode(t, dataDir);
  const templates: Template[] = [0, 1, 2, 3, 4].map((i) => compileTemplate({ ...bearingDoc, name: `bearing-failure-${i}` }));
  t.equal(new Set(templates.map((tp) => tp.tplId)).size, 5, 'five distinct templates');
  const rnd = prng(0x0b0c);
  const models = ['KX-200', 'KX-300', 'LP-7'];
  const loads = [5, 42.5, 120];
  const visited = new Map<string, Set<string>>(); // tplId → distinct topics
  const lastSit = new Map<string, Situation>();
  const lastSeq = new Map<string, number>();
  let moves = 0;
  let acked = 0;
  const started = Date.now();
  for (let i = 0; i < 1000; i++) {
    const tpl = templates[Math.floor(rnd() * templates.length)]!;
    // Mostly the same bucket, sometimes a move: about one publish in four changes model or load.
    const sit: Situation = rnd() < 0.25 ? { ...SIT, machine_model: models[Math.floor(rnd() * 3)]!, load_kn: loads[Math.floor(rnd() * 3)]! } : lastSit.get(tpl.tplId) ?? SIT;
    lastSit.set(tpl.tplId, sit);
    const topic = outcomeTopic(address(tpl, sit), KEY.nodeId);
    const seen = visited.get(tpl.tplId) ?? new Set<string>();
    const r = await node.publish(tpl, sit, i % 2 ? 'failure' : 'no_failure', { ackTimeoutMs: 0 });
    if (seen.size > 0 && r.tombstone) moves++;
    if (r.acked) acked++;
    seen.add(topic);
    visited.set(tpl.tplId, seen);
    const prev = lastSeq.get(tpl.tplId) ?? 0;
    if (r.seq <= prev || (r.tombstone && r.tombstone.seq <= prev)) t.fail(`seq went back for ${tpl.tplId}: ${prev} then ${r.seq}`);
    lastSeq.set(tpl.tplId, r.seq);
  }
  // Per template: its newest packet, plus one tombstone for every distinct bucket it left
  // (each bucket visited except the one it is in now). Nothing was ever delivered.
  let expected = 0;
  for (const topics of visited.values()) expected += 1 + (topics.size - 1);
  t.equal(acked, 0, 'offline: nothing acknowledged');
  t.ok(moves > 50, `the sequence moved buckets (${moves} moves)`);
  t.equal(node.pending, expected, `pending = Σ distinct buckets = ${expected}`);
  t.equal(outboxFiles(dataDir).length, expected, 'as many files as entries');
  t.comment(`1,000 publishes in ${Date.now() - started} ms; outbox holds ${expected} entries`);
  // And what is on disk loads back to the same set.
  const before = outboxFiles(dataDir);
  await node.close();
  const again = await offlineNode(t, dataDir);
  t.equal(again.pending, expected, 'reloaded outbox: same size');
  t.same(outboxFiles(dataDir), before, 'reloaded outbox: same files, none dropped or set aside');
  // Exactly: the packet on each template's current bucket, a tombstone on every other bucket it visited.
  const want = new Set<string>();
  for (const [tplId, topics] of visited) {
    const sit = lastSit.get(tplId)!;
    const now = outcomeTopic(address(templates.find((tp) => tp.tplId === tplId)!, sit), KEY.nodeId);
    for (const tp of topics) want.add(`${tp === now ? 'packet' : 'tombstone'} ${tp}`);
  }
  const got = new Set(before.map((n) => JSON.parse(readFileSync(join(dataDir, 'outbox', n), 'utf8')) as { kind: string; topic: string }).map((j) => `${j.kind} ${j.topic}`));
  t.same(got, want, 'the packet on each current bucket, a tombstone on every bucket left');
});

// ---------------------------------------------------------------------------------- corrupt files

interface Files {
  readonly dir: string;
  readonly valid: { topic: string; packet: Uint8Array; file: string };
  readonly bad: string[];
}

/** A data dir with one valid queued packet (from a real offline node) plus the given bad files. */
async function dirWithBadFiles(t: Test, bad: (dir: string, seqBase: number) => string[]): Promise<Files> {
  const dir = tempDir(t);
  const n = await offlineNode(t, dir);
  const r = await n.publish(bearing, SIT, 'failure', { ackTimeoutMs: 0 });
  await n.close();
  const files = outboxFiles(dir);
  t.equal(files.length, 1);
  return { dir, valid: { topic: r.topic, packet: r.packet, file: files[0]! }, bad: bad(join(dir, 'outbox'), r.seq) };
}

const writeEntry = (outbox: string, name: string, body: unknown): string => {
  writeFileSync(join(outbox, name), typeof body === 'string' ? body : JSON.stringify(body) + '\n');
  return name;
};
const order = (n: number): string => String(n).padStart(12, '0');

async function collectStatus(node: QisNode, ms: number): Promise<NodeStatus[]> {
  const ac = new AbortController();
  const it = node.status({ signal: ac.signal });
  const seen: NodeStatus[] = [];
  const timer = setTimeout(() => ac.abort(), ms);
  for await (const s of it) seen.push(s);
  clearTimeout(timer);
  return seen;
}

t.test('outbox - Outbox.open: corrupt entries are moved aside as <name>.bad; the rest still delivers', async (t) => {
  const tplId = bearing.tplId;
  const other = fixedKey(8);
  const { dir, valid, bad } = await dirWithBadFiles(t, (outbox, seq) => {
    const foreign = createOutcomePacket({ key: other, template: bearing, situation: SIT, outcome: 'failure', seq: seq + 10, ts: 1_700_000_000_000 });
    const mine = createOutcomePacket({ key: KEY, template: bearing, situation: SIT, outcome: 'failure', seq: seq + 20, ts: 1_700_000_000_000 });
    return [
      writeEntry(outbox, `${order(100)}-${tplId}-p-${seq + 5}.json`, '{"v":1,"kind":"packet", garbage'),
      writeEntry(outbox, `${order(101)}-${tplId}-p-${seq + 10}.json`, { v: 1, kind: 'packet', tplId, topic: foreign.topic, seq: seq + 10, packet: toHex(foreign.packet) }),
      // name says seq+21, the packet (and the JSON) say seq+20
      writeEntry(outbox, `${order(102)}-${tplId}-p-${seq + 21}.json`, { v: 1, kind: 'packet', tplId, topic: mine.topic, seq: seq + 20, packet: toHex(mine.packet) }),
      writeEntry(outbox, 'not-an-outbox-name.json', '{}'),
    ];
  });
  const aedes = await startAedes();
  t.teardown(() => aedes.close());
  const node = await createNode({ url: aedes.url, dataDir: dir, key: KEY, reconnect: { baseMs: 50, capMs: 200 } });
  t.teardown(() => node.close());
  const events = collectStatus(node, 800); // subscribed right after createNode
  const files = readdirSync(join(dir, 'outbox'));
  for (const b of bad) {
    t.ok(files.includes(`${b}.bad`), `${b} set aside as .bad`);
    t.notOk(files.includes(b), `${b} no longer queued`);
  }
  t.equal(node.pending, 1, 'only the valid entry is queued: the bad seq+20 packet did not supersede it');
  await node.flush({ timeoutMs: 5000 });
  t.same(await readRetained(aedes.url, valid.topic), valid.packet, 'the valid entry was delivered byte for byte');
  const refused = (await events).filter((s): s is Extract<NodeStatus, { type: 'refused' }> => s.type === 'refused');
  // Emitted while createNode ran, before any status() iterator could exist: every iterator starts with them.
  t.equal(refused.length, bad.length, 'one refused status event per bad file, seen by an iterator opened after createNode');
  t.same(new Set(refused.map((r) => r.code)), new Set(['ERR_OUTBOX_ENTRY_INVALID']), 'code ERR_OUTBOX_ENTRY_INVALID');
  for (const b of bad) t.ok(refused.some((r) => r.message.includes(b)), `a refusal names ${b}`);
  // Set-aside files stay set aside: a second open neither reports nor re-reads them.
  await node.close();
  const again = await offlineNode(t, dir);
  t.equal(again.pending, 0);
  t.equal(readdirSync(join(dir, 'outbox')).filter((n) => n.endsWith('.bad')).length, bad.length);
  // (An offline node also says why it cannot connect, ERR_CONNECTION_REFUSED: not an outbox refusal.)
  t.same((await collectStatus(again, 100)).filter((s) => s.type === 'refused' && s.code === 'ERR_OUTBOX_ENTRY_INVALID'), [], 'no entry refused the second time');
});

t.test('outbox - Outbox.open: an entry whose packet does not verify on its topic is moved aside', async (t) => {
  // A bit flipped in the signature, or a topic field pointing into another bucket: the file
  // decodes and names this node, but sending it can only be refused by a conforming broker.
  const tplId = bearing.tplId;
  const { dir, valid, bad } = await dirWithBadFiles(t, (outbox, seq) => {
    const a = createOutcomePacket({ key: KEY, template: bearing, situation: SIT, outcome: 'failure', seq: seq + 30, ts: 1_700_000_000_000 });
    const flipped = new Uint8Array(a.packet);
    flipped[flipped.length - 1] = flipped[flipped.length - 1]! ^ 0x01;
    const elsewhere = outcomeTopic(address(bearing, { ...SIT, machine_model: 'LP-7' }), KEY.nodeId);
    return [
      writeEntry(outbox, `${order(201)}-${tplId}-p-${seq + 30}.json`, { v: 1, kind: 'packet', tplId, topic: a.topic, seq: seq + 30, packet: toHex(flipped) }),
      writeEntry(outbox, `${order(202)}-${tplId}-p-${seq + 31}.json`, {
        v: 1,
        kind: 'packet',
        tplId,
        topic: elsewhere,
        seq: seq + 31,
        packet: toHex(createOutcomePacket({ key: KEY, template: bearing, situation: SIT, outcome: 'failure', seq: seq + 31, ts: 1_700_000_000_000 }).packet),
      }),
    ];
  });
  const node = await offlineNode(t, dir);
  const files = readdirSync(join(dir, 'outbox'));
  for (const b of bad) t.ok(files.includes(`${b}.bad`), `${b} set aside as .bad`);
  t.same(outboxFiles(dir), [valid.file], 'the valid entry is still queued (a newer invalid one must not supersede it)');
  t.equal(node.pending, 1);
});

t.test('outbox - Outbox.open removes the temp files an interrupted durable write left behind', async (t) => {
  // writeFileDurable writes `.<name>.<pid>.<hex>.tmp` then renames it; a kill -9 or power cut
  // before the rename leaves the temp file (test/node-durability.test.ts sees them after its
  // kills). They are skipped on load but never removed, so they pile up one per crash.
  const dir = tempDir(t);
  const first = await offlineNode(t, dir);
  await first.publish(bearing, SIT, 'failure', { ackTimeoutMs: 0 });
  await first.close();
  const tmpOutbox = `.${order(9)}-${bearing.tplId}-p-9.json.99999.0badf00d.tmp`;
  const tmpState = `.${bearing.tplId}.json.99999.0badf00d.tmp`;
  writeFileSync(join(dir, 'outbox', tmpOutbox), '{"v":1,"kind":"pa');
  writeFileSync(join(dir, 'state', tmpState), '{"seq":');
  const node = await offlineNode(t, dir);
  t.equal(node.pending, 1, 'the real entry is still queued');
  t.notOk(existsSync(join(dir, 'outbox', tmpOutbox)), 'outbox temp file removed');
  t.notOk(existsSync(join(dir, 'state', tmpState)), 'state temp file removed');
});

// ---------------------------------------------------------------------------------- seq

t.test('outbox - seq strictly increases across close/reopen, as a counter when the clock is behind, Unix ms when lost', async (t) => {
  const dir = tempDir(t);
  const seqs: number[] = [];
  const publishOn = async (extra: Partial<NodeOptions>, n: number, sit: Situation = SIT): Promise<void> => {
    const node = await offlineNode(t, dir, extra);
    for (let i = 0; i < n; i++) seqs.push((await node.publish(bearing, sit, 'failure', { ackTimeoutMs: 0 })).seq);
    await node.close();
  };
  const increasing = (from: number): void => {
    for (let i = Math.max(1, from); i < seqs.length; i++) if (!(seqs[i]! > seqs[i - 1]!)) t.fail(`seq ${seqs[i]} after ${seqs[i - 1]}`);
  };
  await publishOn({}, 3);
  await publishOn({}, 2);
  increasing(0);
  t.ok(seqs[0]! >= Date.now() - 60_000, 'with a real clock, seq is Unix ms');
  const PAST = 1_000_000;
  const mark = seqs.length;
  await publishOn({ now: () => PAST }, 2);
  await publishOn({ now: () => PAST }, 1);
  // A move costs two seqs (tombstone, then packet).
  await publishOn({ now: () => PAST }, 1, { ...SIT, machine_model: 'LP-7' });
  increasing(0);
  t.same(
    seqs.slice(mark - 1).map((s) => s - seqs[mark - 1]!),
    [0, 1, 2, 3, 5],
    'with the clock in the past the seq is a counter: +1 per packet, across reopen, +2 on a move',
  );
  // Only state/ lost: the queued entries still hold the highest seq.
  const top = seqs[seqs.length - 1]!;
  rmSync(join(dir, 'state'), { recursive: true, force: true });
  await publishOn({ now: () => PAST }, 1);
  t.equal(seqs[seqs.length - 1], top + 1, 'state/ lost but outbox/ kept: the counter continues from the outbox');
  // Both lost: nothing remembers the counter, so seq falls back to Unix ms (PROTOCOL §5).
  rmSync(join(dir, 'state'), { recursive: true, force: true });
  rmSync(join(dir, 'outbox'), { recursive: true, force: true });
  const LATER = 4_102_444_800_000; // 2100-01-01
  await publishOn({ now: () => LATER }, 1);
  t.equal(seqs[seqs.length - 1], LATER, 'state/ and outbox/ lost: seq = now()');
  await publishOn({ now: () => LATER }, 1);
  t.equal(seqs[seqs.length - 1], LATER + 1, 'then counts on from there');
  t.ok(existsSync(join(dir, 'state', `${bearing.tplId}.json`)), 'state recreated');
  t.equal(JSON.parse(readFileSync(join(dir, 'state', `${bearing.tplId}.json`), 'utf8')).seq, LATER + 1);
});

// ---------------------------------------------------------------------------------- lock

function deadPid(): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    c.on('error', reject);
    c.on('exit', () => resolve(c.pid!));
  });
}

const codeOf = (e: unknown): unknown => (e as { code?: unknown } | undefined)?.code;

t.test('outbox - data dir lock: a second node on an open dir is refused; released on close', async (t) => {
  const dir = tempDir(t);
  const first = await offlineNode(t, dir);
  await t.rejects(offlineNode(t, dir), { code: 'ERR_DATA_DIR_LOCKED' }, 'same process');
  t.equal(readFileSync(join(dir, 'lock'), 'utf8').split(' ')[0], String(process.pid), 'the refused attempt left the lock alone');
  // A live other process holding the lock.
  await first.close();
  t.notOk(existsSync(join(dir, 'lock')), 'close releases the lock');
  const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  t.teardown(() => {
    sleeper.kill('SIGKILL');
  });
  writeFileSync(join(dir, 'lock'), `${sleeper.pid}\n`);
  const e = await offlineNode(t, dir).then(
    () => undefined,
    (err: unknown) => err,
  );
  t.equal(codeOf(e), 'ERR_DATA_DIR_LOCKED', 'a live process holds it');
  t.match(String((e as Error).message), String(sleeper.pid), 'the message names the holder');
  t.equal(readFileSync(join(dir, 'lock'), 'utf8').trim(), String(sleeper.pid), 'and its lock is left alone');
});

t.test('outbox - data dir lock: a stale lock of a dead pid is taken over', async (t) => {
  const dir = tempDir(t);
  const pid = await deadPid();
  writeFileSync(join(dir, 'lock'), `${pid}\n`);
  const node = await offlineNode(t, dir);
  t.equal(readFileSync(join(dir, 'lock'), 'utf8').split(' ')[0], String(process.pid), 'the lock is ours now');
  await node.close();
  t.notOk(existsSync(join(dir, 'lock')));
  // An empty or garbled lock file (a crash between create and write) is stale too.
  writeFileSync(join(dir, 'lock'), '');
  const again = await offlineNode(t, dir);
  await again.close();
  t.notOk(existsSync(join(dir, 'lock')));
});

t.test('outbox - data dir lock: a stale lock holding our own pid, with no node open here, is taken over', async (t) => {
  // A container restarts its node as pid 1 every time; after a kill -9 or a power cut the lock
  // file says "1" and the new process is pid 1 again. No node of this process holds the dir.
  const dir = tempDir(t);
  writeFileSync(join(dir, 'lock'), `${process.pid}\n`);
  const e = await offlineNode(t, dir).then(
    (n) => n.close().then(() => undefined),
    (err: unknown) => err,
  );
  t.equal(e, undefined, `createNode must take over a lock no open node holds (got ${String(codeOf(e))})`);
});

t.test('outbox - decodePacket of queued files matches the node key', async (t) => {
  // Every file a node writes is a packet of its own key with the seq its name says.
  const dir = tempDir(t);
  const node = await offlineNode(t, dir);
  await node.publish(bearing, SIT, 'failure', { ackTimeoutMs: 0 });
  await node.publish(bearing, { ...SIT, sealed: false }, 'no_failure', { ackTimeoutMs: 0 });
  const names = outboxFiles(dir);
  t.equal(names.length, 2, 'tombstone + packet');
  for (const name of names) {
    const j = JSON.parse(readFileSync(join(dir, 'outbox', name), 'utf8')) as { seq: number; packet: string; kind: string };
    const p = decodePacket(new Uint8Array(Buffer.from(j.packet, 'hex')));
    t.equal(p.nodeId, KEY.nodeId);
    t.equal(name.endsWith(`-${p.seq}.json`), true);
    t.equal(p.del === true, j.kind === 'tombstone');
  }
});
