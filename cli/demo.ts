/**
 * `qis demo` (`npm start`): a qis broker on localhost with its durable store, a simulated fleet
 * of real nodes (each its own key and data directory, publishing through the node runtime), then
 * a few cohort queries printed next to the ground truth the simulation hid, and how to ask the
 * broker yourself from another terminal.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { existsSync } from 'node:fs';
import { join, relative, resolve, isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QisError, createNode, prng, loadTemplate, type QueryResult, type Situation, type Template } from '../src/index.js';
import { renderQuery } from './node-commands.js';
import { numberFlag, usage, type Command, type Io, str, type Flags } from './run.js';


const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

// ------------------------------------------------------------------ the simulation


function pick<T extends string>(r: () => number, weights: Readonly<Record<T, number>>): T {
  const entries = Object.entries(weights) as [T, number][];
  let x = r() * entries.reduce((s, [, w]) => s + w, 0);
  for (const [k, w] of entries) if ((x -= w) < 0) return k;
  return entries[entries.length - 1]![0];
}

const between = (r: () => number, lo: number, hi: number, digits = 1): number => Number((lo + r() * (hi - lo)).toFixed(digits));
/** Standard normal (Box–Muller). */
const gauss = (r: () => number): number => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());

interface Machine {
  readonly situation: Situation;
  readonly outcome: string | number;
  readonly conf: number;
  readonly n: number;
  readonly ctx: Record<string, number>;
  /** The hidden truth for this machine: failure probability, or expected yield. */
  readonly truth: number;
}

interface Model {
  readonly file: string;
  /** What one member of the fleet is. */
  readonly noun: string;
  draw(r: () => number): Machine;
  /** The hidden rule for one exact situation, in words. */
  rule(s: Situation): string;
  /** The truth as a phrase, e.g. "failure 8.1 %". */
  truthText(x: number): string;
}

// Bearing failure: a base rate per machine model times factors for bearing type, load band and seal.
const BEARING = {
  model: { 'KX-200': 0.5, 'KX-300': 0.3, 'LM-50': 0.2 },
  base: { 'KX-200': 0.12, 'KX-300': 0.08, 'LM-50': 0.2 } as Record<string, number>,
  bearing: { roller: 0.5, ball: 0.35, plain: 0.15 },
  bearingX: { ball: 1, roller: 1.5, plain: 2.2 } as Record<string, number>,
  load: { '0–10': 0.25, '10–50': 0.55, '50–200': 0.2 },
  loadRange: { '0–10': [0.5, 10], '10–50': [10, 50], '50–200': [50, 199] } as Record<string, [number, number]>,
  loadX: { '0–10': 0.5, '10–50': 1, '50–200': 2 } as Record<string, number>,
  sealedX: { true: 0.35, false: 1 } as Record<string, number>,
};
const loadBand = (kn: number): string => (kn < 10 ? '0–10' : kn < 50 ? '10–50' : '50–200');
const pct1 = (x: number): string => `${(100 * x).toFixed(1)} %`;

const bearingModel: Model = {
  file: 'bearing-failure.yaml',
  noun: 'machines',
  draw(r) {
    const model = pick(r, BEARING.model);
    const bearing = pick(r, BEARING.bearing);
    const band = pick(r, BEARING.load);
    const [lo, hi] = BEARING.loadRange[band]!;
    const situation = { machine_model: model, bearing_type: bearing, load_kn: between(r, lo, hi), sealed: r() < 0.6 };
    const p = failureProbability(situation);
    return {
      situation,
      outcome: r() < p ? 'failure' : 'no_failure',
      conf: between(r, 0.8, 1, 2), // the vibration model's confidence in its own diagnosis
      n: 1,
      ctx: { rpm: Math.round(between(r, 900, 1800, 0)), ambient_c: between(r, 10, 40) },
      truth: p,
    };
  },
  rule(s) {
    const band = loadBand(s['load_kn'] as number);
    return `${pct1(BEARING.base[s['machine_model'] as string]!)} for ${String(s['machine_model'])} × ${BEARING.bearingX[s['bearing_type'] as string]} ${String(s['bearing_type'])} × ${BEARING.loadX[band]} at ${band} kN × ${BEARING.sealedX[String(s['sealed'])]} ${s['sealed'] ? 'sealed' : 'unsealed'}`;
  },
  truthText: (x) => `failure ${pct1(x)}`,
};

function failureProbability(s: Situation): number {
  const band = loadBand(s['load_kn'] as number);
  const p = BEARING.base[s['machine_model'] as string]! * BEARING.bearingX[s['bearing_type'] as string]! * BEARING.loadX[band]! * BEARING.sealedX[String(s['sealed'])]!;
  return Math.min(0.95, p);
}

// Maize yield: a base per soil, shifted by climate zone and pH band; rain-fed fields lose yield
// below 450 mm of growing-season rain. Each field reports the mean of its last n seasons.
const MAIZE = {
  soil: { loam: 0.45, clay: 0.22, silt: 0.18, sand: 0.15 },
  soilBase: { loam: 9.5, silt: 9, clay: 8, sand: 6.5 } as Record<string, number>,
  zone: { Cfb: 0.5, Dfa: 0.3, BSk: 0.2 },
  zoneX: { Cfb: 0.5, Dfa: 1, BSk: -1.5 } as Record<string, number>,
  rain: { Cfb: [350, 560], Dfa: [300, 520], BSk: [120, 320] } as Record<string, [number, number]>,
  ph: { '4.5–5.5': 0.15, '5.5–6.5': 0.35, '6.5–7.5': 0.4, '7.5–8.5': 0.1 },
  phX: { '4.5–5.5': -2, '5.5–6.5': -0.3, '6.5–7.5': 0, '7.5–8.5': -1 } as Record<string, number>,
  seasonSd: 1,
};
const phBand = (ph: number): string => (ph < 5.5 ? '4.5–5.5' : ph < 6.5 ? '5.5–6.5' : ph < 7.5 ? '6.5–7.5' : '7.5–8.5');
const waterLoss = (irrigated: boolean, rain: number): number => (irrigated ? 0 : 1.2 * Math.max(0, (450 - rain) / 100));

const maizeModel: Model = {
  file: 'maize-yield.yaml',
  noun: 'fields',
  draw(r) {
    const soil = pick(r, MAIZE.soil);
    const zone = pick(r, MAIZE.zone);
    const band = pick(r, MAIZE.ph);
    const [lo, hi] = band.split('–').map(Number) as [number, number];
    const irrigated = r() < (zone === 'BSk' ? 0.7 : 0.35);
    const [rlo, rhi] = MAIZE.rain[zone]!;
    const rain = Math.round(between(r, rlo, rhi, 0));
    const mu = MAIZE.soilBase[soil]! + MAIZE.zoneX[zone]! + MAIZE.phX[band]! - waterLoss(irrigated, rain);
    const n = 1 + Math.floor(r() * 5);
    const y = mu + (MAIZE.seasonSd / Math.sqrt(n)) * gauss(r);
    return {
      situation: { soil, climate_zone: zone, ph: between(r, lo, hi - 0.01, 2), irrigated },
      outcome: Number(Math.max(0, y).toFixed(2)),
      conf: between(r, 0.9, 1, 2), // yield monitor calibration
      n,
      ctx: { rain_mm: rain },
      truth: mu,
    };
  },
  rule(s) {
    const band = phBand(s['ph'] as number);
    const parts = [`${MAIZE.soilBase[s['soil'] as string]} t/ha on ${String(s['soil'])}`, `${signed(MAIZE.zoneX[s['climate_zone'] as string]!)} in ${String(s['climate_zone'])}`, `${signed(MAIZE.phX[band]!)} at pH ${band}`];
    parts.push(s['irrigated'] ? 'irrigated: no water stress' : '− 1.2 t/ha per 100 mm of rain below 450 mm (rain-fed)');
    return `${parts.join(' ')}; each report is the mean of n seasons, ± ${MAIZE.seasonSd} t/ha / √n`;
  },
  truthText: (x) => `expected yield ${x.toFixed(2)} t/ha`,
};
const signed = (x: number): string => (x < 0 ? `− ${-x}` : `+ ${x}`);

const MODELS: readonly Model[] = [bearingModel, maizeModel];

/** Machine i of the fleet: 3 of 5 are bearing machines, 2 of 5 maize fields. */
function machineAt(i: number): { model: Model; machine: Machine } {
  const model = i % 5 < 3 ? bearingModel : maizeModel;
  return { model, machine: model.draw(prng(0x51f15e ^ Math.imul(i + 1, 0x9e3779b1))) };
}

interface Cohort {
  readonly model: Model;
  readonly question: string;
  readonly situation: Situation;
  readonly widen: number;
}

const COHORTS: readonly Cohort[] = [
  { model: bearingModel, question: 'KX-200 roller bearings, 10–50 kN, sealed: what happened?', situation: { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true }, widen: 0 },
  { model: bearingModel, question: 'KX-200 roller bearings, 10–50 kN, not sealed: what happened?', situation: { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: false }, widen: 0 },
  { model: bearingModel, question: 'KX-200 roller bearings, any load, sealed or not (widened by 2 levels): what happened?', situation: { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true }, widen: 2 },
  { model: maizeModel, question: 'Maize on loam, climate Cfb, pH 6.5–7.5, rain-fed: what yield?', situation: { soil: 'loam', climate_zone: 'Cfb', ph: 6.8, irrigated: false }, widen: 0 },
];

// ------------------------------------------------------------------ progress and helpers

/** `[#####.....] 312/600  1.2 s`, redrawn with \r on a terminal; a line every 10 % otherwise. */
function progress(io: Io, total: number, label: string): { tick(done: number): void; end(done: number): void } {
  const tty = (io.stderr as { isTTY?: boolean }).isTTY === true;
  const t0 = performance.now();
  let lastDraw = 0;
  let lastStep = -1;
  const line = (done: number): string => {
    const w = 30;
    const full = total === 0 ? w : Math.round((w * done) / total);
    return `${label} [${'#'.repeat(full)}${'.'.repeat(w - full)}] ${done}/${total}  ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  };
  return {
    tick(done) {
      if (tty) {
        const now = performance.now();
        if (now - lastDraw < 80 && done < total) return;
        lastDraw = now;
        io.stderr.write(`\r${line(done)}`);
      } else {
        const step = total === 0 ? 10 : Math.floor((10 * done) / total);
        if (step === lastStep) return;
        lastStep = step;
        io.stderr.write(`${line(done)}\n`);
      }
    },
    end(done) {
      if (tty) io.stderr.write(`\r${line(done)}\n`);
      else if (lastStep !== 10) io.stderr.write(`${line(done)}\n`);
    },
  };
}

/** Runs `fn(i)` for i in [0, n) with at most `limit` at a time; stops starting new ones after a failure or abort. */
async function pool(n: number, limit: number, signal: AbortSignal, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined && !signal.aborted && next < n) {
      const i = next++;
      try {
        await fn(i);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  if (failed !== undefined) throw failed;
  if (signal.aborted) throw new QisError('ERR_ABORTED', 'interrupted');
}

/** A path as a person would type it from the working directory. */
function shown(p: string): string {
  const rel = relative(process.cwd(), p);
  return rel === '' ? '.' : rel.startsWith('..') || isAbsolute(rel) ? p : rel;
}
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The demo's second region: a broker on an OS-chosen port whose one link goes to the first. */
async function startWest(dir: string, eastUrl: string): Promise<{ broker: import('../broker/server.js').QisBroker; port: number }> {
  const [{ createBroker }, { pino }] = await Promise.all([import('../broker/server.js'), import('pino')]);
  const logger = pino({ level: 'warn', base: { broker: 'demo-west' } }, pino.destination({ fd: 2, sync: true }));
  const broker = await createBroker(
    {
      listeners: [{ type: 'tcp', host: '127.0.0.1', port: 0 }],
      dataDir: join(dir, 'broker-west'),
      federation: { region: 'west', peers: [{ url: eastUrl, name: 'east', share: ['*'], accept: ['*'], rateLimit: 0 }], reconnect: { baseMs: 100, capMs: 2000 } },
    },
    { logger },
  );
  return { broker, port: broker.addresses().find((x) => x.type === 'tcp')!.port };
}

async function startBroker(dir: string, port: number, io: Io, json: boolean): Promise<{ broker: import('../broker/server.js').QisBroker; mqttPort: number; httpPort: number | undefined; fellBack: boolean }> {
  // Loaded only here: `qis --help` needs neither Aedes, the store nor pino.
  const [{ createBroker }, { pino }] = await Promise.all([import('../broker/server.js'), import('pino')]);
  const logger = pino({ level: 'warn', base: { broker: 'demo' } }, pino.destination({ fd: 2, sync: true }));
  const start = (mqtt: number, http: number) =>
    createBroker(
        {
          listeners: [{ type: 'tcp', host: '127.0.0.1', port: mqtt }],
          dataDir: join(dir, 'broker'),
          log: { level: 'warn' },
          http: { host: '127.0.0.1', port: http },
          // East has no link of its own: west's link comes to it from this machine (federation is
          // only for configured peers, docs/security.md).
          federation: { region: 'east', peers: [], linksFrom: ['127.0.0.1', '::1'] },
        },
        { logger },
      );
  const busy = (e: unknown): boolean => {
    const c = (e as { cause?: { code?: string } }).cause?.code;
    return c === 'EADDRINUSE' || c === 'EACCES';
  };
  // The HTTP endpoint (/metrics) goes on an OS-chosen port: a fixed one (9100) is often taken.
  let fellBack = false;
  let broker;
  try {
    broker = await start(port, 0);
  } catch (e) {
    if (port === 0 || !busy(e)) throw e;
    if (!json) io.stderr.write(`qis demo: port ${port} on 127.0.0.1 is busy (${(e as { cause?: { code?: string } }).cause?.code}); using a port the OS chooses instead\n`);
    fellBack = true;
    broker = await start(0, 0);
  }
  const a = broker.addresses();
  return { broker, mqttPort: a.find((x) => x.type === 'tcp')!.port, httpPort: a.find((x) => x.type === 'http')?.port, fellBack };
}

// ------------------------------------------------------------------ the command

export const demoCommand: Command = {
  path: ['demo'],
  summary: 'start a local broker, simulate a fleet of nodes publishing, and show what their cohorts say (npm start)',
  flags: {
    machines: { type: 'string', value: 'N', help: 'simulated machines and fields, each a real node with its own key (default 600)' },
    port: { type: 'string', value: 'P', help: 'MQTT port on 127.0.0.1 (default 1883; if busy, one the OS chooses; 0: always that)' },
    'data-dir': { type: 'string', value: 'DIR', help: 'broker store and node keys (default ./qis-demo-data; reused on the next run)' },
    concurrency: { type: 'string', value: 'N', help: 'nodes running at once (default 50)' },
    'keep-running': { type: 'boolean', help: 'keep the broker running until Ctrl-C so you can query it (the default)' },
    exit: { type: 'boolean', help: 'close the broker and exit after printing' },
  },
  details: `What it does:
  1. starts a qis broker on 127.0.0.1 with its durable store in DIR/broker (and /metrics over HTTP);
  2. runs the simulated fleet: 3 of 5 members are machines with bearings (examples/bearing-failure.yaml),
     2 of 5 are maize fields (examples/maize-yield.yaml). Each is a real node (createNode) with its
     own key in DIR/fleet/<i>, publishing one signed outcome with conf, n and context through the
     runtime's outbox, at most --concurrency at a time. Outcomes follow a hidden ground truth;
  3. asks a few cohorts with one querying node and prints each synthesis next to that truth;
  4. prints how to ask the broker yourself (qis query, mosquitto_sub, curl /metrics), and keeps it
     running until Ctrl-C (--exit: closes it at once).
Run it again on the same DIR: the broker reloads its store, the nodes reuse their keys and their
seq increases, so the broker still holds one packet per node. Delete DIR to start afresh.
With --json: one JSON object (fleet, broker, cohorts with synthesis and truth, hints) on stdout.
Examples:
  npm start                              (builds, then: qis demo)
  qis demo --exit --machines 2000 --port 0 --data-dir /tmp/qis-demo`,
  async run(flags: Flags, io: Io) {
    if (flags.exit === true && flags['keep-running'] === true) throw usage('--exit and --keep-running exclude each other');
    const machines = flags.machines === undefined ? 600 : numberFlag('machines', str(flags.machines), true);
    const port = flags.port === undefined ? 1883 : numberFlag('port', str(flags.port), true);
    if (port > 65535) throw usage(`--port must be at most 65535, not ${port}`);
    const concurrency = flags.concurrency === undefined ? 50 : numberFlag('concurrency', str(flags.concurrency), true);
    if (concurrency < 1) throw usage('--concurrency must be at least 1');
    const dir = resolve(flags['data-dir'] === undefined ? 'qis-demo-data' : str(flags['data-dir']));
    const json = flags.json === true;
    const out = (s = ''): void => {
      if (!json) io.stdout.write(`${s}\n`);
    };

    // Ctrl-C at any point stops what runs and closes the broker.
    const ac = new AbortController();
    // Every running node and publish listens on it.
    setMaxListeners(4 * concurrency + 20, ac.signal);
    const onSignal = (s: NodeJS.Signals): void => ac.abort(new Error(s === 'SIGINT' ? 'interrupted (Ctrl-C)' : `interrupted (${s})`));
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const t0 = performance.now();
    try {
      const templates = new Map<Model, Template>();
      for (const m of MODELS) templates.set(m, await loadTemplate(join(EXAMPLES, m.file)));
      const tplOf = (m: Model): Template => templates.get(m)!;

      const { broker, mqttPort, httpPort, fellBack } = await startBroker(dir, port, io, json);
      // A second region, "west", federated with this one ("east") by one link (issue 5).
      const west = await startWest(dir, `mqtt://127.0.0.1:${mqttPort}`).catch(async (e: unknown) => {
        await broker.close();
        throw e;
      });
      try {
        const url = `mqtt://127.0.0.1:${mqttPort}`;
        const westUrl = `mqtt://127.0.0.1:${west.port}`;
        const atStart = broker.store.size;
        const tStarted = performance.now();
        out(`qis demo: a qis broker, a simulated fleet of ${machines} nodes, and what their cohorts say`);
        out();
        out(`broker    ${url}   (store ${shown(join(dir, 'broker'))}: ${atStart} packet(s) from earlier runs; started in ${((tStarted - t0) / 1000).toFixed(1)} s)`);
        if (httpPort !== undefined) out(`          http://127.0.0.1:${httpPort}/metrics and /healthz`);
        out(`regions   east ${url} and west ${westUrl} (store ${shown(join(dir, 'broker-west'))}), federated: odd machines publish in west, even in east; the queries ask east`);
        const counts = new Map<Model, number>();
        for (let i = 0; i < machines; i++) {
          const m = machineAt(i).model;
          counts.set(m, (counts.get(m) ?? 0) + 1);
        }
        out(`fleet     ${MODELS.map((m) => `${counts.get(m) ?? 0} ${m.noun} (${tplOf(m).doc.name})`).join(' and ')}, each a node with its own key in ${shown(join(dir, 'fleet'))}/<i>`);

        // ---- the fleet
        const nodeIds: string[] = new Array<string>(machines);
        const truthOf = new Map<string, number>();
        let acked = 0;
        let queued = 0;
        let newKeys = 0;
        let seqMin = Infinity;
        let seqMax = 0;
        let done = 0;
        const bar = progress(io, machines, 'publishing');
        bar.tick(0);
        const fleet = pool(machines, concurrency, ac.signal, async (i) => {
          const { model, machine } = machineAt(i);
          const nodeDir = join(dir, 'fleet', String(i));
          if (!existsSync(join(nodeDir, 'key.json'))) newKeys++;
          const node = await createNode({ url: i % 2 === 1 ? westUrl : url, dataDir: nodeDir, brokerKind: 'qis', clientId: `demo-${i}-${process.pid}`, signal: ac.signal });
          try {
            const r = await node.publish(tplOf(model), machine.situation, machine.outcome, { conf: machine.conf, n: machine.n, ctx: machine.ctx, signal: ac.signal });
            if (r.acked) acked++;
            else queued++;
            seqMin = Math.min(seqMin, r.seq);
            seqMax = Math.max(seqMax, r.seq);
            nodeIds[i] = node.nodeId;
            truthOf.set(node.nodeId, machine.truth);
          } finally {
            await node.close();
          }
          bar.tick(++done);
        });
        try {
          await fleet;
        } finally {
          bar.end(done);
        }
        // Until east holds west's packets too (the link forwards them as they are admitted).
        const { storeDigest } = await import('../broker/federation.js');
        const tSync = Date.now();
        while (storeDigest(broker.store) !== storeDigest(west.broker.store) && Date.now() - tSync < 60_000 && !ac.signal.aborted) await new Promise((r) => setTimeout(r, 50));
        out(`regions   east holds ${broker.store.size} packet(s), west ${west.broker.store.size}: ${storeDigest(broker.store) === storeDigest(west.broker.store) ? 'in sync' : 'NOT in sync yet'}`);
        const tFleet = performance.now();
        const fleetS = (tFleet - tStarted) / 1000;
        const inBroker = nodeIds.filter((id, i) => broker.store.get(tplOf(machineAt(i).model).tplId, id) !== undefined).length;
        const digest = createHash('sha256').update(nodeIds.join('\n')).digest('hex').slice(0, 16);
        out(`published ${machines} packets in ${fleetS.toFixed(1)} s (${(machines / Math.max(fleetS, 1e-3)).toFixed(0)}/s): ${acked} acknowledged, ${queued} queued`);
        out(`keys      ${newKeys} new, ${machines - newKeys} reused from an earlier run${machines > 0 ? `; seq ${seqMin} … ${seqMax}` : ''}`);
        out(`broker    now holds ${broker.store.size} packet(s), one per node and template; ${inBroker} of them from this fleet`);

        // ---- the cohorts
        const cohorts: Record<string, unknown>[] = [];
        let shownCohort: { cohort: Cohort; result: QueryResult } | undefined;
        const querier = await createNode({ url, dataDir: join(dir, 'querier'), signal: ac.signal });
        try {
          for (const [k, c] of COHORTS.entries()) {
            const tpl = tplOf(c.model);
            const r = await querier.query(tpl, c.situation, { widen: c.widen, signal: ac.signal });
            shownCohort ??= { cohort: c, result: r };
            const truths = r.packets.map((p) => truthOf.get(p.nodeId)).filter((x): x is number => x !== undefined);
            const unknown = r.packets.length - truths.length;
            const mean = truths.length > 0 ? truths.reduce((s, x) => s + x, 0) / truths.length : undefined;
            const lo = Math.min(...truths);
            const hi = Math.max(...truths);
            out();
            out(`── ${k + 1}. ${c.question}`);
            out(renderQuery(tpl.doc.name, tpl.doc.version, r, false));
            if (mean === undefined) out(`truth     no ${c.model.noun} of this run in the cohort`);
            else {
              const same = hi - lo < 1e-12;
              out(
                same
                  ? `truth     ${c.model.truthText(mean)} for each of these ${truths.length} ${c.model.noun}`
                  : `truth     ${c.model.truthText(mean)}: the mean over these ${truths.length} ${c.model.noun} (from ${c.model.truthText(lo).replace(/^\D+/, '')} to ${c.model.truthText(hi).replace(/^\D+/, '')})`,
              );
              if (c.widen === 0) out(`          hidden rule: ${c.model.rule(c.situation)}`);
              if (unknown > 0) out(`          (${unknown} node(s) from earlier runs with more machines are in the cohort but not in this truth)`);
            }
            cohorts.push({ question: c.question, template: tpl.doc.name, tplId: tpl.tplId, situation: c.situation, widen: c.widen, filter: r.filter, broker: r.broker, completeness: r.completeness, cohort: r.packets.length, dropped: r.dropped, synthesis: r.synthesis, truth: mean === undefined ? null : { mean, min: lo, max: hi, machines: truths.length } });
          }
        } finally {
          await querier.close();
        }
        const tQueries = performance.now();

        // ---- how to ask it yourself
        const c = shownCohort!.cohort;
        const tpl = tplOf(c.model);
        const tplPath = shown(join(EXAMPLES, c.model.file));
        const topic = shownCohort!.result.packets[0]?.topic ?? `qis/1/o/${tpl.tplId}/…`;
        const hints = {
          query: `npx qis query --url ${url} --template ${tplPath} --situation ${q(JSON.stringify(c.situation))}`,
          list: `mosquitto_sub -h 127.0.0.1 -p ${mqttPort} -t ${q(`qis/1/o/${tpl.tplId}/#`)} -C 10 -F '%t  %l bytes'`,
          decode: `mosquitto_sub -h 127.0.0.1 -p ${mqttPort} -t ${q(topic)} -C 1 -N | npx qis decode --topic ${q(topic)}`,
          ...(httpPort !== undefined ? { metrics: `curl http://127.0.0.1:${httpPort}/metrics` } : {}),
        };
        const keep = flags.exit !== true;
        out();
        out(keep ? 'Ask it yourself from another terminal (in this directory) while this runs:' : 'Ask it yourself from another terminal while the demo runs (without --exit):');
        out();
        out(`  ${hints.query}`);
        out(`      the first cohort above; add --widen 2 to drop load and seal, --json for machine-readable output`);
        out(`  ${hints.list}`);
        out(`      the first 10 retained packets of ${tpl.doc.name}: topic and size (-v prints the payloads: binary COSE_Sign1)`);
        out(`  ${hints.decode}`);
        out(`      one packet, checked and printed for a person`);
        if (hints.metrics) out(`  ${hints.metrics}`);
        out();
        const timings = { brokerStartMs: Math.round(tStarted - t0), fleetMs: Math.round(tFleet - tStarted), queriesMs: Math.round(tQueries - tFleet), totalMs: Math.round(tQueries - t0) };
        out(`timings   broker ${(timings.brokerStartMs / 1000).toFixed(1)} s, fleet ${(timings.fleetMs / 1000).toFixed(1)} s, queries ${(timings.queriesMs / 1000).toFixed(1)} s: ${(timings.totalMs / 1000).toFixed(1)} s in all`);
        if (json) {
          const summary = {
            ok: true,
            broker: { url, port: mqttPort, portFellBack: fellBack, httpPort: httpPort ?? null, dataDir: join(dir, 'broker'), packetsAtStart: atStart, packets: broker.store.size },
            regions: { east: { url, packets: broker.store.size }, west: { url: westUrl, packets: west.broker.store.size, dataDir: join(dir, 'broker-west') } },
            fleet: { machines, byTemplate: Object.fromEntries(MODELS.map((m) => [tplOf(m).doc.name, counts.get(m) ?? 0])), acked, queued, newKeys, reusedKeys: machines - newKeys, inBroker, nodeIdsDigest: digest, seqMin: machines > 0 ? seqMin : null, seqMax: machines > 0 ? seqMax : null },
            cohorts,
            hints,
            timings,
            running: keep,
          };
          io.stdout.write(`${JSON.stringify(summary)}\n`);
        }
        if (keep) {
          out(`The broker runs on ${url} until Ctrl-C.`);
          if (!ac.signal.aborted) await new Promise<void>((r) => ac.signal.addEventListener('abort', () => r(), { once: true }));
          if (!json) io.stderr.write('\nqis demo: closing the broker\n');
        }
      } finally {
        await west.broker.close();
        await broker.close();
      }
      if (flags.exit !== true && !json) io.stderr.write('qis demo: closed\n');
      return { json: null, human: '', quiet: true };
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};
