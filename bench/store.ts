/**
 * Store benchmark (broker/store): put throughput per fsync policy against raw appends of the same
 * number of bytes, restart time and memory with 1M stored packets, on-disk bytes per packet, and
 * match() time for a 10,000-packet cohort among 1M.
 *
 *   npm run build && node dist/bench/store.js            (a report; a few minutes at most)
 *   node dist/bench/store.js --json                      (one JSON object)
 *   node dist/bench/store.js --n=200000 --ms=400         (smaller store, shorter rounds)
 *
 * Data: 1,000 real packets signed with the bearing-failure template (examples/), 1,000 keys and
 * varied situations (~200 bytes each). Signing a million would take a minute, so the 1M store
 * reuses those bytes under synthetic topics: a real tplId, four synthetic 10-character levels
 * (10 × 10 × 10 × 10 buckets of 100 nodes) and synthetic node ids, all in the exact form
 * parseOutcomeTopic accepts. The store does not verify signatures (admission does), so sizes and
 * work are those of real packets. Packets in the throughput rounds are real, with synthetic seqs.
 *
 * Restart is measured twice: after every node was written twice without compaction (the log at
 * 2 × the live bytes, records in arrival order: the slowest log the compaction rule lets build
 * up), and after compact() (the usual state), each in a fresh child process.
 *
 * Throughput: each operation runs for `--ms` per round, rounds interleaved (raw baseline, then the
 * store) so drift on a shared machine cancels; the median round is shown. "c1" awaits each put;
 * "c64" keeps 64 puts in flight (group commit: one fdatasync serves a whole batch). The raw
 * baseline is `fs.appendFile(fh, bytes)` (+ `fh.datasync()`) of buffers as long as the store's
 * records, one at a time. Restart and memory are measured in a fresh child process
 * (`--open=DIR`, run with --expose-gc), from a warm page cache.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { appendFile, open } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { address, b32, createOutcomePacket, keyFromSeed, loadTemplate, type Template } from '../src/index.js';
import { openStore, STORE_FILES, type FsyncPolicy, type StoredPacket } from '../broker/store.js';
import { argv, JSON_OUT, optNum } from './args.js';

const N = Math.round(optNum('n', 1_000_000));
const ROUND_MS = optNum('ms', 700);
const ROUNDS = Math.round(optNum('rounds', 3));
const openArg = argv.find((x) => x.startsWith('--open='));

/** broker/server.ts opens its store with this compactRatio. */
const BROKER_COMPACT_RATIO = 1.5;
const TEMPLATE_FILE = fileURLToPath(new URL('../../examples/bearing-failure.yaml', import.meta.url));
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

// ------------------------------------------------------------------------------ synthetic topics

/** Deterministic 16-byte ids (xorshift), as base32 node ids of the real form. */
function syntheticIds(count: number, seed: number): string[] {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const out: string[] = [];
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < 16; j += 4) dv.setUint32(j, next());
    out.push(b32(b));
  }
  return out;
}
const levelsOf = (ids: readonly string[]): string[] => ids.map((id) => id.slice(0, 10));

interface Layout {
  readonly tplId: string;
  readonly levels: readonly (readonly string[])[]; // 4 lists of 10
  readonly nodes: readonly string[]; // N
}
function layout(tplId: string, n: number): Layout {
  return { tplId, levels: [0, 1, 2, 3].map((i) => levelsOf(syntheticIds(10, 101 + i))), nodes: syntheticIds(n, 7) };
}
/** Node i lives in bucket i mod 10,000: ten values per level, 100 nodes per bucket at 1M. */
function topicOf(l: Layout, i: number): string {
  const b = i % 10_000;
  const lv = l.levels;
  const pick = (k: number, v: number): string => (lv[k] as readonly string[])[v] as string;
  return `qis/1/o/${l.tplId}/${pick(0, Math.floor(b / 1000))}/${pick(1, Math.floor(b / 100) % 10)}/${pick(2, Math.floor(b / 10) % 10)}/${pick(3, b % 10)}/${l.nodes[i] as string}`;
}

// ------------------------------------------------------------------------------ child: open + memory + match

type GcFn = () => void;
const gcOf = (): GcFn => {
  const g = (globalThis as { gc?: GcFn }).gc;
  if (g === undefined) throw new Error('run the --open child with --expose-gc');
  return g;
};

async function childOpen(dir: string): Promise<void> {
  const gc = gcOf();
  const levels = argv.find((x) => x.startsWith('--levels='))?.slice(9).split(',');
  const [tplId, l0, l1, l2, l3] = levels ?? [];
  gc();
  const m0 = process.memoryUsage();
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const store = await openStore({ dir, autoCompact: false });
  const openMs = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  // CPU time of the whole process (the GC's helper thread included): on a shared machine the
  // wall time also counts the time other processes had the CPUs.
  const openCpuMs = (cpu.user + cpu.system) / 1000;
  gc();
  gc();
  const m1 = process.memoryUsage();
  const timeMatch = (filter: string): { count: number; ms: number } => {
    const times: number[] = [];
    let count = 0;
    for (let r = 0; r < 7; r++) {
      const t = performance.now();
      count = 0;
      for (const p of store.match(filter)) count += p.packet.length > 0 ? 1 : 0;
      times.push(performance.now() - t);
    }
    return { count, ms: median(times) };
  };
  const base = `qis/1/o/${tplId}`;
  const matches = levels === undefined ? {} : {
    cohort10k: { filter: `${base}/${l0}/${l1}/#`, ...timeMatch(`${base}/${l0}/${l1}/#`) },
    exact100: { filter: `${base}/${l0}/${l1}/${l2}/${l3}/+`, ...timeMatch(`${base}/${l0}/${l1}/${l2}/${l3}/+`) },
    plus1k: { filter: `${base}/+/${l1}/${l2}/${l3}/+`, ...timeMatch(`${base}/+/${l1}/${l2}/${l3}/+`) },
    all: { filter: '#', ...timeMatch('#') },
  };
  const size = store.size;
  const stats = store.stats();
  await store.close();
  process.stdout.write(
    JSON.stringify({
      openMs,
      openCpuMs,
      size,
      stats,
      recovery: store.recovery,
      heapBytes: m1.heapUsed - m0.heapUsed,
      arrayBufferBytes: m1.arrayBuffers - m0.arrayBuffers,
      rssBytes: m1.rss - m0.rss,
      matches,
    }) + '\n',
  );
}

// ------------------------------------------------------------------------------ main

interface Fixture {
  readonly template: Template;
  readonly packets: readonly StoredPacket[];
}

async function fixture(): Promise<Fixture> {
  const template = await loadTemplate(TEMPLATE_FILE);
  const models = ['KX-200', 'KX-300', 'RT-9', 'M12', 'ZX-1'];
  const types = ['ball', 'roller', 'plain'];
  const packets: StoredPacket[] = [];
  for (let i = 0; i < 1000; i++) {
    const seed = new Uint8Array(32);
    new DataView(seed.buffer).setUint32(0, i + 1);
    const key = keyFromSeed(seed);
    const situation = { machine_model: models[i % 5], bearing_type: types[i % 3], load_kn: (i * 7) % 250, sealed: i % 2 === 0 };
    const seq = 1_795_000_000_000 + i;
    const { topic, packet } = createOutcomePacket({
      key,
      template,
      situation,
      outcome: i % 4 === 0 ? 'failure' : 'no_failure',
      conf: 0.5 + (i % 50) / 100,
      n: 1 + (i % 9),
      ctx: { ambient_c: 18 + (i % 15) + 0.5, rpm: 900 + ((i * 37) % 2200) },
      seq,
      ts: seq,
    });
    packets.push({ tplId: address(template, situation).tplId, nodeId: key.nodeId, topic, seq, packet });
  }
  return { template, packets };
}

/** Runs `op` repeatedly for ROUND_MS; returns ops/s. `op(i)` does `width` operations. */
async function timed(op: (i: number) => Promise<void>, width: number): Promise<number> {
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ROUND_MS) {
    await op(n);
    n += width;
  }
  return (n * 1000) / (performance.now() - t0);
}

interface Opened {
  openMs: number;
  openCpuMs: number;
  size: number;
  recovery: { records: number };
  heapBytes: number;
  arrayBufferBytes: number;
  rssBytes: number;
  matches: Record<string, { filter: string; count: number; ms: number }>;
}

/** Opens the store in a fresh process (see childOpen). */
function openChild(dir: string, extra: readonly string[]): Opened {
  const child = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), `--open=${dir}`, ...extra], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (child.status !== 0) throw new Error(`open child failed: ${child.stderr}`);
  const opened = JSON.parse(child.stdout) as Opened;
  if (opened.size !== N) throw new Error(`reopened store has ${opened.size} packets, expected ${N}`);
  return opened;
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(os.tmpdir(), 'qis-store-bench-'));
  try {
    await run(root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

async function run(root: string): Promise<void> {
  const loadBefore = os.loadavg()[0] ?? 0;
  const tFix = performance.now();
  const { packets } = await fixture();
  const fixtureMs = performance.now() - tFix;
  const avgPacket = packets.reduce((n, p) => n + p.packet.length, 0) / packets.length;
  const avgTopic = packets.reduce((n, p) => n + p.topic.length, 0) / packets.length;
  // A store record is 28 bytes of framing and fields + topic + packet: the raw baseline appends as much.
  const recordBytes = Math.round(28 + avgTopic + avgPacket);
  const rawBuf = Buffer.alloc(recordBytes, 0x5a);

  // ---------------------------------------------------------------- throughput
  interface Op {
    readonly id: string;
    readonly label: string;
    readonly run: () => Promise<number>;
    readonly close?: () => Promise<void>;
  }
  const rawOp = async (id: string, label: string, sync: boolean): Promise<Op> => {
    const fh = await open(join(root, `${id}.raw`), 'a');
    return {
      id,
      label,
      run: () =>
        timed(async () => {
          await appendFile(fh, rawBuf);
          if (sync) await fh.datasync();
        }, 1),
      close: () => fh.close(),
    };
  };
  const storeOp = async (id: string, label: string, fsync: FsyncPolicy, width: number): Promise<Op> => {
    const store = await openStore({ dir: join(root, id), fsync });
    let seq = 1;
    const put = (): Promise<unknown> => {
      const p = packets[seq % packets.length] as StoredPacket;
      return store.put({ ...p, seq: seq++ });
    };
    return {
      id,
      label,
      run: () =>
        timed(async () => {
          if (width === 1) await put();
          else await Promise.all(Array.from({ length: width }, put));
        }, width),
      close: () => store.close(),
    };
  };
  const ops: Op[] = [
    await rawOp('raw.sync', 'raw appendFile + fdatasync, c1', true),
    await storeOp('always.c1', "put, fsync 'always', c1", 'always', 1),
    await storeOp('always.c64', "put, fsync 'always', c64 (group commit)", 'always', 64),
    await rawOp('raw.append', 'raw appendFile, c1', false),
    await storeOp('interval.c1', "put, fsync 'interval' (100 ms), c1", 'interval', 1),
    await storeOp('never.c1', "put, fsync 'never', c1", 'never', 1),
    await storeOp('never.c64', "put, fsync 'never', c64", 'never', 64),
  ];
  for (const op of ops) await op.run(); // warm-up round, discarded
  const samples = new Map<string, number[]>(ops.map((o) => [o.id, []]));
  for (let r = 0; r < ROUNDS; r++) for (const op of ops) samples.get(op.id)?.push(await op.run());
  for (const op of ops) await op.close?.();
  const rate = (id: string): number => median(samples.get(id) ?? [0]);
  const ratioOf = (num: string, den: string): number => {
    const n = samples.get(num) ?? [];
    const d = samples.get(den) ?? [];
    return median(n.map((x, i) => x / (d[i] as number)));
  };
  const throughput = ops.map((o) => ({ id: o.id, label: o.label, putsPerSec: Math.round(rate(o.id)), rounds: (samples.get(o.id) ?? []).map(Math.round) }));
  const ratios = [
    { label: "'always' c1 / raw append+fdatasync", value: ratioOf('always.c1', 'raw.sync') },
    { label: "'always' c64 / raw append+fdatasync", value: ratioOf('always.c64', 'raw.sync') },
    { label: "'interval' c1 / raw append", value: ratioOf('interval.c1', 'raw.append') },
    { label: "'never' c1 / raw append", value: ratioOf('never.c1', 'raw.append') },
    { label: "'never' c64 / raw append", value: ratioOf('never.c64', 'raw.append') },
  ];

  // ---------------------------------------------------------------- 1M store
  const tplId = (packets[0] as StoredPacket).tplId;
  const l = layout(tplId, N);
  const dir = join(root, 'big');
  const tFill = performance.now();
  let store = await openStore({ dir, fsync: 'never', autoCompact: false });
  const WINDOW = 256;
  for (let i = 0; i < N; i += WINDOW) {
    const batch: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(N, i + WINDOW); j++) {
      const p = packets[j % packets.length] as StoredPacket;
      const nodeId = l.nodes[j] as string;
      batch.push(store.put({ tplId, nodeId, topic: topicOf(l, j), seq: p.seq, packet: p.packet }));
    }
    await Promise.all(batch);
  }
  const fillMs = performance.now() - tFill;
  // Half the nodes once more: the log is now 1.5 × the live bytes (the broker's compactRatio), in
  // arrival order (each record in another bucket than the one before): the slowest log to replay
  // the broker's compaction rule lets build up.
  const REWRITE = Math.round(N * (BROKER_COMPACT_RATIO - 1));
  for (let i = 0; i < REWRITE; i += WINDOW) {
    const batch: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(REWRITE, i + WINDOW); j++) {
      const seq = (packets[j % packets.length] as StoredPacket).seq + 1;
      const p = packets[(j + 1) % packets.length] as StoredPacket; // other bytes, same size
      batch.push(store.put({ tplId, nodeId: l.nodes[j] as string, topic: topicOf(l, j), seq, packet: p.packet }));
    }
    await Promise.all(batch);
  }
  await store.close();
  const worst = openChild(dir, []);
  store = await openStore({ dir, fsync: 'never', autoCompact: false });
  const before = store.stats();
  const tCompact = performance.now();
  await store.compact();
  const compactMs = performance.now() - tCompact;
  const after = store.stats();
  await store.close();
  const fileBytes = statSync(join(dir, STORE_FILES.log)).size;
  const opened = openChild(dir, [`--levels=${[tplId, l.levels[0]?.[3], l.levels[1]?.[4], l.levels[2]?.[5], l.levels[3]?.[6]].join(',')}`]);
  // Storage stays bounded: 1M updates from 10,000 nodes (100 each) with automatic compaction.
  const churnNodes = 10_000;
  const churnUpdates = Math.min(N, 1_000_000);
  const churnDir = join(root, 'churn');
  const tChurn = performance.now();
  const churn = await openStore({ dir: churnDir, fsync: 'never', compactRatio: BROKER_COMPACT_RATIO });
  let maxLog = 0;
  for (let i = 0; i < churnUpdates; i += WINDOW) {
    const batch: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(churnUpdates, i + WINDOW); j++) {
      const node = j % churnNodes;
      const p = packets[j % packets.length] as StoredPacket;
      batch.push(churn.put({ tplId, nodeId: l.nodes[node] as string, topic: topicOf(l, node), seq: 1 + Math.floor(j / churnNodes), packet: p.packet }));
    }
    await Promise.all(batch);
    if (i % (WINDOW * 64) === 0) maxLog = Math.max(maxLog, churn.stats().logBytes);
  }
  const churnStats = churn.stats();
  await churn.close();
  const churnMs = performance.now() - tChurn;
  const loadAfter = os.loadavg()[0] ?? 0;

  const env = { node: process.version, platform: `${process.platform} ${process.arch}`, cpu: os.cpus()[0]?.model.trim() ?? 'unknown', cpus: os.cpus().length };
  const per10k = (x: number): number => Math.round((x / N) * 10_000);
  const result = {
    ...env,
    tmpdir: os.tmpdir(),
    fixture: { packets: packets.length, avgPacketBytes: avgPacket, avgTopicChars: avgTopic, recordBytes, signMs: fixtureMs },
    roundMs: ROUND_MS,
    rounds: ROUNDS,
    throughput,
    ratios,
    big: {
      packets: N,
      fillMs,
      fillPutsPerSec: Math.round((N / fillMs) * 1000),
      logBytesBeforeCompaction: before.logBytes,
      compactMs,
      logBytes: after.logBytes,
      fileBytes,
      diskBytesPerPacket: fileBytes / N,
      openMs: opened.openMs,
      openCpuMs: opened.openCpuMs,
      worstCase: { records: worst.recovery.records, openMs: worst.openMs, openCpuMs: worst.openCpuMs },
      memoryPer10k: { heapBytes: per10k(opened.heapBytes), arrayBufferBytes: per10k(opened.arrayBufferBytes), rssBytes: per10k(opened.rssBytes) },
      matches: opened.matches,
    },
    churn: { nodes: churnNodes, updates: churnUpdates, ms: churnMs, live: churnStats.live, logBytes: churnStats.logBytes, maxLogBytes: maxLog, compactions: churnStats.compactions },
    loadavg1m: { before: loadBefore, after: loadAfter },
  };
  if (JSON_OUT) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  const int = (x: number): string => Math.round(x).toLocaleString('en-US');
  const mib = (x: number): string => `${(x / 2 ** 20).toFixed(1)} MiB`;
  const lines: string[] = [];
  lines.push(`qis-mqtt store benchmark — node ${env.node} (${env.platform}), ${env.cpus} × ${env.cpu}, files in ${os.tmpdir()}`);
  lines.push(`packets: ${packets.length} signed (bearing-failure), ${avgPacket.toFixed(0)} B on average, topics ${avgTopic.toFixed(0)} chars; store record ≈ ${recordBytes} B`);
  lines.push(`load average (1 min): ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after`);
  lines.push('');
  lines.push(`put throughput (median of ${ROUNDS} interleaved rounds of ${ROUND_MS} ms)`);
  for (const t of throughput) lines.push(`  ${t.label.padEnd(44)}${int(t.putsPerSec).padStart(10)} /s   rounds ${t.rounds.map(int).join(', ')}`);
  lines.push('ratios (median of per-round ratios)');
  for (const r of ratios) lines.push(`  ${r.label.padEnd(44)}${r.value.toFixed(2).padStart(10)} ×`);
  lines.push('');
  const b = result.big;
  lines.push(`${int(N)} stored packets (1,000 signed packets under synthetic topics: 10,000 buckets × ${int(N / 10_000)} nodes)`);
  lines.push(`  fill, fsync 'never', 256 in flight        ${(b.fillMs / 1000).toFixed(1)} s (${int(b.fillPutsPerSec)} puts/s), then one update of every node`);
  lines.push(`  compaction                                ${(b.compactMs / 1000).toFixed(1)} s: ${mib(b.logBytesBeforeCompaction)} → ${mib(b.logBytes)}`);
  lines.push(`  on disk                                   ${b.diskBytesPerPacket.toFixed(1)} B per packet (${mib(b.fileBytes)})`);
  const secs = (o: { openMs: number; openCpuMs: number }): string => `${(o.openMs / 1000).toFixed(2)} s (CPU ${(o.openCpuMs / 1000).toFixed(2)} s)`;
  lines.push(`  restart, compacted log (warm page cache)  ${secs(b)}, goal ≤ 10 s`);
  lines.push(`  restart, log at ${BROKER_COMPACT_RATIO} × live, arrival order ${secs(b.worstCase)}: ${int(b.worstCase.records)} records, the most the broker's compaction rule lets build up`);
  lines.push(
    `  memory per 10,000 packets                 heap ${mib(b.memoryPer10k.heapBytes)} + packet slabs ${mib(b.memoryPer10k.arrayBufferBytes)}; RSS ${mib(b.memoryPer10k.rssBytes)}`,
  );
  for (const [name, m] of Object.entries(b.matches)) {
    lines.push(`  match ${name.padEnd(10)} ${int(m.count).padStart(9)} packets in ${m.ms.toFixed(2).padStart(8)} ms   ${m.filter}`);
  }
  const c = result.churn;
  lines.push('');
  lines.push(`storage stays bounded: ${int(c.updates)} updates from ${int(c.nodes)} nodes (compactRatio ${BROKER_COMPACT_RATIO}, fsync 'never')`);
  lines.push(`  ${(c.ms / 1000).toFixed(1)} s; ${int(c.live)} packets stored; log ${mib(c.logBytes)} at the end, at most ${mib(c.maxLogBytes)} on the way; ${c.compactions} compactions`);
  process.stdout.write(lines.join('\n') + '\n');
}

if (openArg !== undefined) await childOpen(openArg.slice(7));
else await main();
