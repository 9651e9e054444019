/**
 * Template registry benchmark (issue 7 section 1), against floors measured in the same run.
 *
 *   npm run build && node dist/bench/registry.js            (a table)
 *   node dist/bench/registry.js --json                      (one JSON object)
 *   node dist/bench/registry.js --templates=20 --nodes=5000 --reps=7
 *
 * One qis broker in-process (createBroker, fsync 'never', verification on the main thread), on a
 * free loopback port. A curator publishes `--templates` templates (`publishTemplate`); `--nodes`
 * distinct keys each publish one signed packet, spread round-robin over the templates, through
 * one raw mqtt.js client (QoS 1, retained, pipelined). Then, `--reps` times, interleaved:
 *   list        listTemplates(): broker-kind check, qis/1/t/+ in one round trip, every document
 *               verified, then the packets of every template in one round trip, every packet
 *               verified, publishers counted
 *   raw list    a raw, already connected mqtt.js client doing the same two round trips (sync
 *               marker + subscriptions at QoS 0) with no verification: the transfer floor
 *   raw verify  node:crypto Ed25519 verification of every packet's signature over its
 *               Sig_structure (built beforehand, KeyObjects made beforehand): the verification
 *               floor. floor = raw list + raw verify; ratio = list / floor
 *   show        fetchTemplate(id) of one template (a fresh connection, its document and packets)
 *   fetch       node.template(id) on a connected node with an empty cache (one round trip + verify
 *               + durable write of the cache file), and cached: the same call on a second node
 *               whose cache file exists (read + verify, no broker)
 *   superseded  node.query(v2, situation, {includeSuperseded: true}) where v2 supersedes v1 and
 *               the cohort's packets are split evenly between them, against node.query(v1) of a
 *               cohort of the same total size under one template (ratio: the cost of a second
 *               version — one more round trip and one template fetch, cached after the first rep)
 * Medians; ratios are medians of per-repetition ratios.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import {
  compileTemplate,
  createNode,
  decodeSign1,
  sigStructure,
  createOutcomePacket,
  fetchTemplate,
  keyFromSeed,
  listTemplates,
  publishTemplate,
  topicMatches,
  type Template,
  type TemplateDoc,
} from '../src/index.js';
import { JSON_OUT, optNum } from './args.js';
import { cleanup, cleanups, tempDir } from './cleanup.js';

const TEMPLATES = optNum('templates', 20);
const NODES = optNum('nodes', 5000);
const REPS = optNum('reps', 7);
const COHORT = optNum('cohort', 2000);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const key = (i: number) => {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, i + 1);
  seed[31] = 7;
  return keyFromSeed(seed);
};

function template(i: number, extra: Record<string, unknown> = {}): Template {
  return compileTemplate({
    name: `bench-${String(i).padStart(3, '0')}`,
    version: 1,
    fields: [
      { name: 'model', kind: 'category' },
      { name: 'load', kind: 'number', bins: [0, 10, 50] },
    ],
    outcome: { kind: 'category', labels: ['ok', 'fail'] },
    ...extra,
  } as TemplateDoc);
}

async function publishAll(url: string, items: { topic: string; packet: Uint8Array }[]): Promise<void> {
  const c = await mqtt.connectAsync(url, { clientId: `seed-${randomBytes(4).toString('hex')}`, reconnectPeriod: 0 });
  try {
    const inflight = new Set<Promise<unknown>>();
    for (const it of items) {
      const p = c.publishAsync(it.topic, Buffer.from(it.packet), { qos: 1, retain: true });
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
      if (inflight.size >= 256) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  } finally {
    await c.endAsync();
  }
}

/** The floor: the two round trips of listTemplates with a raw client, no verification. */
async function rawList(client: mqtt.MqttClient, ids: () => string[]): Promise<number> {
  const round = async (filters: string[]): Promise<number> => {
    const sync = `qis/1/sync/${client.options.clientId}/${randomBytes(6).toString('hex')}`;
    let n = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const on = (topic: string): void => {
      if (topic === sync) done();
      else if (filters.some((f) => topicMatches(f, topic))) n++;
    };
    client.on('message', on);
    await client.subscribeAsync(Object.fromEntries([sync, ...filters].map((f) => [f, { qos: 0 as const }])));
    await client.publishAsync(sync, Buffer.from('sync'), { qos: 1 });
    await finished;
    client.off('message', on);
    await client.unsubscribeAsync([sync, ...filters]);
    return n;
  };
  await round(['qis/1/t/+']);
  return round(ids().map((id) => `qis/1/o/${id}/#`));
}

async function main(): Promise<void> {
  const { createBroker } = await import('../broker/server.js');
  const { pino } = await import('pino');
  const dir = tempDir('qis-bench-registry-');
  const broker = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port: 0 }], dataDir: join(dir, 'broker'), fsync: 'never', verifyWorkers: 0, admission: { ratePerSecond: 0 } },
    { logger: pino({ level: 'silent' }) },
  );
  cleanups.push(() => broker.close());
  const port = broker.addresses().find((a) => a.type === 'tcp')!.port;
  const url = `mqtt://127.0.0.1:${port}`;
  const curator = key(1_000_000);

  // Seed: templates, NODES packets over them, and a superseded pair with a split cohort.
  const tpls = Array.from({ length: TEMPLATES }, (_, i) => template(i));
  const v1 = template(900);
  const v2 = template(900, { version: 2, supersedes: v1.tplId });
  const single = template(901);
  for (const t of [...tpls, v1, v2, single]) await publishTemplate(curator, t, { url });
  const now = Date.now();
  const situation = { model: 'KX', load: 20 };
  const items: { topic: string; packet: Uint8Array }[] = [];
  for (let i = 0; i < NODES; i++) {
    const t = tpls[i % TEMPLATES]!;
    items.push(createOutcomePacket({ key: key(i), template: t, situation: { model: `m${i % 37}`, load: i % 70 }, outcome: i % 3 ? 'ok' : 'fail', seq: 1, ts: now }));
  }
  for (let i = 0; i < COHORT; i++) {
    const k = key(NODES + i);
    items.push(createOutcomePacket({ key: k, template: i % 2 ? v2 : v1, situation, outcome: i % 4 ? 'ok' : 'fail', seq: 1, ts: now }));
    items.push(createOutcomePacket({ key: k, template: single, situation, outcome: i % 4 ? 'ok' : 'fail', seq: 1, ts: now }));
  }
  const seedStart = performance.now();
  await publishAll(url, items);
  const seedMs = performance.now() - seedStart;

  const raw = await mqtt.connectAsync(url, { clientId: `raw-${randomBytes(4).toString('hex')}`, reconnectPeriod: 0 });
  cleanups.push(() => raw.endAsync(true));
  const allIds = [...tpls, v1, v2, single].map((t) => t.tplId);
  const n1 = await createNode({ url, dataDir: join(dir, 'n1'), brokerKind: 'qis' });
  cleanups.push(() => n1.close());
  await n1.brokerKind();

  // The verification floor's inputs: every packet's Sig_structure, signature and key object.
  const toVerify = items.map((it) => {
    const msg = decodeSign1(it.packet);
    const kid = msg.unprotected.get(4) as Uint8Array;
    const keyObject = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(kid).toString('base64url') }, format: 'jwk' });
    return { data: sigStructure(msg.protectedBytes, it.topic, msg.payload), sig: msg.signature, keyObject };
  });
  const rawVerify = (): number => {
    const t0 = performance.now();
    for (const v of toVerify) if (!crypto.verify(null, v.data, v.keyObject, v.sig)) throw new Error('bad signature in the floor');
    return performance.now() - t0;
  };

  const m: Record<string, number[]> = { list: [], raw: [], verify: [], show: [], fetch: [], cached: [], sup: [], one: [], ratioList: [], ratioSup: [] };
  let listed = 0;
  let publishers = 0;
  let versions = '';
  for (let r = 0; r < REPS; r++) {
    let t0 = performance.now();
    const l = await listTemplates({ url });
    const list = performance.now() - t0;
    listed = l.templates.length;
    publishers = l.templates.reduce((a, e) => a + e.publishers, 0);
    t0 = performance.now();
    await rawList(raw, () => allIds);
    const rawMs = performance.now() - t0;
    const verifyMs = rawVerify();
    m.verify!.push(verifyMs);
    t0 = performance.now();
    await fetchTemplate(tpls[0]!.tplId, { url });
    m.show!.push(performance.now() - t0);

    // A fresh node each rep for the uncached fetch; the second node reads the first one's cache.
    const fresh = await createNode({ url, dataDir: join(dir, `f${r}`), brokerKind: 'qis' });
    await fresh.brokerKind();
    t0 = performance.now();
    await fresh.template(tpls[1]!.tplId);
    m.fetch!.push(performance.now() - t0);
    await fresh.close();
    const again = await createNode({ url: 'mqtt://127.0.0.1:1', dataDir: join(dir, `f${r}`) });
    t0 = performance.now();
    await again.template(tpls[1]!.tplId);
    m.cached!.push(performance.now() - t0);
    await again.close();

    t0 = performance.now();
    const one = await n1.query(single, situation, { minCohort: 1 });
    const oneMs = performance.now() - t0;
    t0 = performance.now();
    const sup = await n1.query(v2, situation, { minCohort: 1, includeSuperseded: true });
    const supMs = performance.now() - t0;
    if (one.packets.length !== COHORT || sup.packets.length !== COHORT) throw new Error(`cohort sizes ${one.packets.length} / ${sup.packets.length}, expected ${COHORT}`);
    versions = (sup.versions ?? []).map((v) => `v${v.version}: ${v.packets}`).join(', ');
    m.list!.push(list);
    m.raw!.push(rawMs);
    m.one!.push(oneMs);
    m.sup!.push(supMs);
    m.ratioList!.push(list / (rawMs + verifyMs));
    m.ratioSup!.push(supMs / oneMs);
  }

  const result = {
    machine: { cpus: os.cpus().length, load1: os.loadavg()[0] },
    templates: TEMPLATES + 3,
    packets: items.length,
    seedMs: Math.round(seedMs),
    listed,
    publishers,
    listMs: median(m.list!),
    rawListMs: median(m.raw!),
    rawVerifyMs: median(m.verify!),
    listRatio: median(m.ratioList!),
    showMs: median(m.show!),
    fetchMs: median(m.fetch!),
    cachedMs: median(m.cached!),
    cohort: COHORT,
    versions,
    queryOneMs: median(m.one!),
    querySupersededMs: median(m.sup!),
    supersededRatio: median(m.ratioSup!),
    reps: REPS,
  };
  if (JSON_OUT) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  const f = (x: number): string => x.toFixed(1).padStart(9);
  process.stdout.write(
    [
      `template registry: ${result.templates} templates, ${result.packets} packets (seeded in ${result.seedMs} ms), ${os.cpus().length} cores, load ${result.machine.load1?.toFixed(2)}; medians of ${REPS} reps`,
      `  ${`list (verify ${listed} documents + ${publishers} publishers' packets)`.padEnd(62)}${f(result.listMs)} ms`,
      `  raw list (same two round trips, no verification)              ${f(result.rawListMs)} ms`,
      `  ${`raw node:crypto verify of the ${result.packets} signatures`.padEnd(62)}${f(result.rawVerifyMs)} ms   list / (raw list + raw verify) ${result.listRatio.toFixed(2)} ×`,
      `  show one template (fresh connection, its packets)             ${f(result.showMs)} ms`,
      `  node.template(id): fetch + verify + cache                     ${f(result.fetchMs)} ms`,
      `  node.template(id): from the cache, no broker                  ${f(result.cachedMs)} ms`,
      `  query, ${COHORT}-node cohort under one template                  ${f(result.queryOneMs)} ms`,
      `  query, same size split over v2 + superseded v1 (${versions})`,
      `                                                                ${f(result.querySupersededMs)} ms   ratio ${result.supersededRatio.toFixed(2)} ×`,
    ].join('\n') + '\n',
  );
}

try {
  await main();
} finally {
  await cleanup();
}
