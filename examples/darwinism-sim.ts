/**
 * Darwinism, simulated (issue 7 §3, PROTOCOL §9): two rival templates over the same outcome; only
 * one routes on the field that truly drives it. Nodes consult a template chosen by Thompson
 * sampling over the track records, act, observe the hidden truth, publish the outcome under both
 * templates and report their score. The better template should win the traffic.
 *
 *   npm run build && node dist/examples/darwinism-sim.js [--nodes 20] [--rounds 300] [--seed 1]
 *   node dist/examples/darwinism-sim.js --real --nodes 8 --rounds 40   # real qis broker + real nodes over loopback
 *
 * `simulate()` runs in memory with the library's own functions (synthesize, predictionOf,
 * scorePrediction, addScore, scoreFieldsOf, thompsonChoose, rankTemplates); `--real` runs the same loop
 * through createNode() against an in-process qis broker.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  addScore,
  address,
  compileTemplate,
  createNode,
  EMPTY_TOTALS,
  keyFromSeed,
  predictionOf,
  rankTemplates,
  scoreFieldsOf,
  scorePrediction,
  synthesize,
  thompsonChoose,
  type NodeKey,
  type Prediction,
  type QisNode,
  type RankRow,
  type ScoreFields,
  type ScoreTotals,
  type SynthPacket,
  type Template,
  prng,
} from '../src/index.js';

const OUTCOME = { kind: 'category', labels: ['good', 'poor'] } as const;
/** Routes on the field that drives the outcome. */
export const BY_SOIL: Template = compileTemplate({ name: 'harvest-by-soil', version: 1, fields: [{ name: 'soil', kind: 'category', values: ['clay', 'loam', 'sand'] }], outcome: OUTCOME });
/** Routes on a field that has nothing to do with it. */
export const BY_REGION: Template = compileTemplate({ name: 'harvest-by-region', version: 1, fields: [{ name: 'region', kind: 'category', values: ['north', 'south', 'east'] }], outcome: OUTCOME });
/** The hidden truth: P(good) by soil; the region does not matter. */
export const P_GOOD: Readonly<Record<string, number>> = { clay: 0.9, loam: 0.7, sand: 0.1 };
const SOILS = ['clay', 'loam', 'sand'];
const REGIONS = ['north', 'south', 'east'];

export interface SimOptions {
  readonly nodes?: number;
  readonly rounds?: number;
  readonly seed?: number;
  /** Rounds per line of the learning curve. */
  readonly window?: number;
}

export interface CurvePoint {
  /** Last round of the window (1-based). */
  readonly round: number;
  /** Share of consultations that went to BY_SOIL in the window. */
  readonly shareSoil: number;
  /** Mean Brier of the predictions each template made in the window (undefined: not consulted). */
  readonly brierSoil?: number;
  readonly brierRegion?: number;
}

export interface SimResult {
  readonly nodes: number;
  readonly rounds: number;
  readonly curve: readonly CurvePoint[];
  /** Share of BY_SOIL per round. */
  readonly perRound: readonly number[];
  /** First round (1-based) from which the 10-round moving share of BY_SOIL stays ≥ 90 % to the end; undefined if never. */
  readonly convergenceRound?: number;
  /** Share of BY_SOIL over the last fifth of the rounds. */
  readonly finalShareSoil: number;
  /** The track records as ranked from the score packets. */
  readonly ranking: readonly RankRow[];
}


/** What the loop needs from a network of nodes: the in-memory one or real nodes on a broker. */
interface Net {
  /** Consults one template (Thompson) and returns which, and the prediction it gave. */
  consult(i: number, situation: Record<string, string>): Promise<{ chosen: Template; prediction: Prediction | undefined }>;
  /** Publishes the node's observation under both templates. */
  publish(i: number, situation: Record<string, string>, outcome: string): Promise<void>;
  /** Scores the prediction and publishes the node's score packet. */
  report(i: number, chosen: Template, situation: Record<string, string>, outcome: string): Promise<number | undefined>;
  ranking(): Promise<RankRow[]>;
  close(): Promise<void>;
}

const RIVALS = [BY_SOIL, BY_REGION];
const bucketOf = (t: Template, s: Record<string, string>): string => address(t, s).levels.join('/');

/** The in-memory network: retained outcome and score packets kept in maps, as a broker would. */
function memoryNet(n: number, rng: () => number): Net {
  const keys: NodeKey[] = Array.from({ length: n }, (_, i) => keyFromSeed(Uint8Array.from({ length: 32 }, (_, j) => (i * 31 + j * 7 + 1) & 0xff)));
  const outcomes = new Map<string, Map<string, Map<string, SynthPacket>>>(RIVALS.map((t) => [t.tplId, new Map()]));
  const scores = new Map<string, Map<string, ScoreFields>>(RIVALS.map((t) => [t.tplId, new Map()]));
  const totals = new Map<string, ScoreTotals>();
  const last = new Map<number, Prediction | undefined>();
  let clock = 1_800_000_000_000;
  const records = (): { tplId: string; name: string; scores: ScoreFields[] }[] =>
    RIVALS.map((t) => ({ tplId: t.tplId, name: `${t.doc.name} v${t.doc.version}`, scores: [...(scores.get(t.tplId) as Map<string, ScoreFields>).values()] }));
  return {
    async consult(i, situation) {
      const best = thompsonChoose(records(), rng)[0]?.tplId;
      const chosen = RIVALS.find((t) => t.tplId === best) as Template;
      const cohort = [...(outcomes.get(chosen.tplId)?.get(bucketOf(chosen, situation))?.values() ?? [])];
      const prediction = predictionOf(chosen, synthesize(chosen, cohort, { minCohort: 1 }));
      last.set(i, prediction);
      return { chosen, prediction };
    },
    async publish(i, situation, outcome) {
      clock += 1000;
      const nodeId = (keys[i] as NodeKey).nodeId;
      for (const t of RIVALS) {
        const buckets = outcomes.get(t.tplId) as Map<string, Map<string, SynthPacket>>;
        const b = bucketOf(t, situation);
        for (const [other, m] of buckets) if (other !== b) m.delete(nodeId); // one packet per node per template
        if (!buckets.has(b)) buckets.set(b, new Map());
        buckets.get(b)?.set(nodeId, { nodeId, out: outcome, conf: 1, n: 1, ts: clock });
      }
    },
    async report(i, chosen, _situation, outcome) {
      const prediction = last.get(i);
      if (!prediction) return undefined;
      const key = keys[i] as NodeKey;
      const id = `${key.nodeId}/${chosen.tplId}`;
      const s = scorePrediction(prediction, outcome, OUTCOME.labels);
      const before = totals.get(id) ?? EMPTY_TOTALS;
      const t = { ...addScore(before, prediction, s, outcome, clock), seq: before.seq + 1 };
      totals.set(id, t);
      // What the node's score packet carries (the wire format itself is exercised by --real).
      scores.get(chosen.tplId)?.set(key.nodeId, scoreFieldsOf(t, t.seq, clock));
      return s.brier;
    },
    async ranking() {
      return rankTemplates(records());
    },
    async close() {},
  };
}

/** Real nodes on an in-process qis broker over loopback (createNode, consult, publish, report). */
async function realNet(n: number, rng: () => number): Promise<Net> {
  const { createBroker } = await import('../broker/server.js');
  const { pino } = await import('pino');
  const dir = mkdtempSync(join(tmpdir(), 'qis-darwin-sim-'));
  const broker = await createBroker({ dataDir: join(dir, 'broker'), fsync: 'never', verifyWorkers: 0, admission: { ratePerSecond: 0 }, listeners: [{ type: 'tcp', host: '127.0.0.1', port: 0 }] } as Parameters<typeof createBroker>[0], {
    logger: pino({ level: 'silent' }),
  });
  const port = broker.addresses().find((a) => a.type === 'tcp')?.port;
  const url = `mqtt://127.0.0.1:${port}`;
  const nodes: QisNode[] = [];
  for (let i = 0; i < n; i++) nodes.push(await createNode({ url, dataDir: join(dir, `node${i}`), choose: 'thompson', chooseRandom: rng }));
  const node = (i: number): QisNode => nodes[i] as QisNode;
  return {
    async consult(i, situation) {
      const r = await node(i).consult(RIVALS, situation, { minCohort: 1 });
      const chosen = RIVALS.find((t) => t.tplId === r.chosen) as Template;
      return { chosen, prediction: predictionOf(chosen, r.synthesis) };
    },
    async publish(i, situation, outcome) {
      for (const t of RIVALS) await node(i).publish(t, situation, outcome);
    },
    async report(i, chosen, situation, outcome) {
      return (await node(i).report(chosen, situation, outcome)).score.brier;
    },
    async ranking() {
      const sc = await node(0).scores(RIVALS.map((t) => t.tplId));
      return rankTemplates(sc.records.map((r) => ({ ...r, name: RIVALS.find((t) => t.tplId === r.tplId)?.doc.name ?? r.tplId })));
    },
    async close() {
      for (const x of nodes) await x.close();
      await broker.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs the loop on a network; within a round the nodes act one after another (memory) or together (real). */
async function run(net: Net, o: Required<SimOptions>, world: () => number, parallel: boolean): Promise<SimResult> {
  const situations = Array.from({ length: o.nodes }, () => ({ soil: SOILS[Math.floor(world() * 3)] as string, region: REGIONS[Math.floor(world() * 3)] as string }));
  const perRound: number[] = [];
  const curve: CurvePoint[] = [];
  let win = { soil: 0, all: 0, bs: 0, ns: 0, br: 0, nr: 0 };
  for (let r = 0; r < o.rounds; r++) {
    let soil = 0;
    // The world's draws are taken in node order before anyone acts, so both modes see the same truth.
    const truth = situations.map((s) => (world() < (P_GOOD[s.soil] as number) ? 'good' : 'poor'));
    const step = async (i: number): Promise<void> => {
      const s = situations[i] as Record<string, string>;
      const { chosen } = await net.consult(i, s);
      const outcome = truth[i] as string;
      const brier = await net.report(i, chosen, s, outcome);
      await net.publish(i, s, outcome);
      const isSoil = chosen === BY_SOIL;
      if (isSoil) soil++;
      win.all++;
      if (isSoil) win.soil++;
      if (brier !== undefined) {
        if (isSoil) (win.bs += brier), win.ns++;
        else (win.br += brier), win.nr++;
      }
    };
    if (parallel) await Promise.all(situations.map((_, i) => step(i)));
    else for (let i = 0; i < o.nodes; i++) await step(i);
    perRound.push(soil / o.nodes);
    // The curve: each of the first 10 rounds (where the learning happens), then one line per window.
    if (r < 10 || (r + 1) % o.window === 0 || r === o.rounds - 1) {
      curve.push({
        round: r + 1,
        shareSoil: win.soil / win.all,
        ...(win.ns > 0 ? { brierSoil: win.bs / win.ns } : {}),
        ...(win.nr > 0 ? { brierRegion: win.br / win.nr } : {}),
      });
      win = { soil: 0, all: 0, bs: 0, ns: 0, br: 0, nr: 0 };
    }
  }
  const moving = perRound.map((_, i) => (i < 9 ? undefined : perRound.slice(i - 9, i + 1).reduce((a, b) => a + b, 0) / 10));
  let convergenceRound: number | undefined;
  for (let i = moving.length - 1; i >= 9; i--) {
    if ((moving[i] as number) < 0.9) break;
    convergenceRound = i + 1;
  }
  const tail = perRound.slice(Math.floor(perRound.length * 0.8));
  const finalShareSoil = tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length);
  const ranking = await net.ranking();
  return { nodes: o.nodes, rounds: o.rounds, curve, perRound, ...(convergenceRound !== undefined ? { convergenceRound } : {}), finalShareSoil, ranking };
}

function resolved(o: SimOptions): Required<SimOptions> {
  return { nodes: o.nodes ?? 20, rounds: o.rounds ?? 300, seed: o.seed ?? 1, window: o.window ?? 25 };
}

/** The simulation in memory (the library's functions, no network). */
export async function simulate(options: SimOptions = {}): Promise<SimResult> {
  const o = resolved(options);
  const net = memoryNet(o.nodes, prng(o.seed * 7919 + 1));
  try {
    return await run(net, o, prng(o.seed), false);
  } finally {
    await net.close();
  }
}

/** The same simulation with real nodes on an in-process qis broker over loopback. */
export async function simulateReal(options: SimOptions = {}): Promise<SimResult> {
  const o = resolved(options);
  const net = await realNet(o.nodes, prng(o.seed * 7919 + 1));
  try {
    return await run(net, o, prng(o.seed), true);
  } finally {
    await net.close();
  }
}

/** The learning curve and the final ranking as text. */
export function renderSim(r: SimResult): string {
  const f = (x: number | undefined): string => (x === undefined ? '    –' : x.toFixed(3));
  const lines = [
    `${r.nodes} nodes × ${r.rounds} rounds; truth: P(good) = ${JSON.stringify(P_GOOD)} by soil, region irrelevant`,
    '',
    'rounds      share by-soil   Brier by-soil   Brier by-region',
    ...r.curve.map((c, i) => {
      const from = i === 0 ? 1 : (r.curve[i - 1] as CurvePoint).round + 1;
      const bar = '#'.repeat(Math.round(c.shareSoil * 20)).padEnd(20, '.');
      return `${(from === c.round ? `${c.round}` : `${from}–${c.round}`).padEnd(12)}${`${(100 * c.shareSoil).toFixed(1)} %`.padStart(8)} ${bar}  ${f(c.brierSoil)}   ${f(c.brierRegion)}`;
    }),
    '',
    `convergence round (10-round share of by-soil stays ≥ 90 %): ${r.convergenceRound ?? 'not reached'}`,
    `final share of by-soil (last fifth of the rounds): ${(100 * r.finalShareSoil).toFixed(1)} %`,
    '',
    'track records (score packets):',
    ...r.ranking.map(
      (x, i) =>
        `  ${i + 1}. ${(x.name ?? x.tplId).padEnd(20)} k ${String(x.k).padStart(5)}  hit rate ${(100 * x.hitRate).toFixed(1)} % (${(100 * x.hitInterval[0]).toFixed(1)}–${(100 * x.hitInterval[1]).toFixed(1)})  Brier ${f(x.brier)}`,
    ),
  ];
  return lines.join('\n') + '\n';
}

// Run directly: node dist/examples/darwinism-sim.js [--nodes N] [--rounds R] [--seed S] [--real]
if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const arg = (name: string): number | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    const v = i >= 0 ? Number(process.argv[i + 1]) : undefined;
    if (v !== undefined && !(Number.isSafeInteger(v) && v > 0)) {
      process.stderr.write(`--${name} needs a positive integer\n`);
      process.exit(2);
    }
    return v;
  };
  const real = process.argv.includes('--real');
  const o: SimOptions = { ...(arg('nodes') !== undefined ? { nodes: arg('nodes') as number } : {}), ...(arg('rounds') !== undefined ? { rounds: arg('rounds') as number } : {}), ...(arg('seed') !== undefined ? { seed: arg('seed') as number } : {}), ...(real ? { window: 5 } : {}) };
  const started = Date.now();
  (real ? simulateReal(o) : simulate(o)).then(
    (r) => process.stdout.write(renderSim(r) + `(${real ? 'real qis broker over loopback' : 'in memory'}, ${Date.now() - started} ms)\n`),
    (e: unknown) => {
      process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
