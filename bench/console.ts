/**
 * Web console benchmark (issue 17): the first load of the Cohort explorer on a 1,000-node cohort,
 * from navigation to the drawn answer (every packet verified in the page), in Debian's chromium.
 *
 *   node dist/bench/console.js [--nodes=1000] [--runs=3] [--json]
 *
 * A qis broker (ws + http listeners, verification on the main thread) holds the template and
 * `--nodes` packets in one bucket. Each run opens a fresh page at a link carrying the situation
 * (`#/cohort?tpl=…&machine_model=…`) and reads performance.now() (ms since navigation start) at
 * the first animation frame where the exact cohort shows every node and the share chart is drawn.
 * Baseline in the same run: the same page on a template with no packets (page load, script start,
 * MQTT connect, template verified, "insufficient" drawn). Also shown: src/'s foldCohort over the
 * same messages in Node with the same `noble` backend, the page's verification cost outside a browser.
 * Goal: ≤ 2 s to a drawn answer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import puppeteer from 'puppeteer-core';
import { createBroker } from '../broker/server.js';
import { address, compileTemplate, createOutcomePacket, foldCohort, keyFromSeed, loadTemplate, signTemplate, templateTopic } from '../src/index.js';
import mqtt from 'mqtt';
import { JSON_OUT, optNum } from './args.js';

const args = { nodes: optNum('nodes', 1000), runs: optNum('runs', 3), json: JSON_OUT };
const SIT = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };
// The example template, from dist/bench/ or (run from source) bench/.
const yamlPath = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../examples/bearing-failure.yaml' : '../examples/bearing-failure.yaml', import.meta.url));
const full = await loadTemplate(yamlPath);
const empty = compileTemplate({ ...full.doc, version: full.doc.version + 1 });
const curator = keyFromSeed(new Uint8Array(32).fill(0xc1));

function seed(i: number): Uint8Array {
  const s = new Uint8Array(32);
  new DataView(s.buffer).setUint32(0, i + 1);
  return s;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  const now = Date.now();
  const packets = Array.from({ length: args.nodes }, (_, i) =>
    createOutcomePacket({ key: keyFromSeed(seed(i)), template: full, situation: SIT, outcome: i % 3 ? 'no_failure' : 'failure', seq: 1, ts: now }),
  );
  const dir = mkdtempSync(join(tmpdir(), 'qis-bench-console-'));
  const broker = await createBroker(
    {
      listeners: [
        { type: 'tcp', host: '127.0.0.1', port: 0 },
        { type: 'ws', host: '127.0.0.1', port: 0, path: '/mqtt' },
      ],
      http: { host: '127.0.0.1', port: 0 },
      dataDir: dir,
      verifyWorkers: 0,
      admission: { ratePerSecond: 0 }, // the seed publishes from one loopback address
    },
    { logger: pino({ level: 'silent' }) },
  );
  const port = (type: string): number => broker.addresses().find((a) => a.type === type)?.port as number;
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port('tcp')}`, { reconnectPeriod: 0 });
  await Promise.all([
    ...[full, empty].map((t) => c.publishAsync(templateTopic(t.tplId), Buffer.from(signTemplate(curator, t)), { qos: 1, retain: true })),
    ...packets.map((p) => c.publishAsync(p.topic, Buffer.from(p.packet), { qos: 1, retain: true })),
  ]);
  await c.endAsync();

  const t0 = performance.now();
  const fold = foldCohort(
    packets.map((p) => ({ topic: p.topic, payload: p.packet })),
    { address: address(full, SIT), widen: 0, now: Date.now(), backend: 'noble' },
  );
  const nodeMs = performance.now() - t0;
  if (fold.packets.length !== args.nodes) throw new Error(`node fold kept ${fold.packets.length}`);

  const browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const base = `http://127.0.0.1:${port('http')}/?mqtt=${encodeURIComponent(`ws://127.0.0.1:${port('ws')}/mqtt`)}`;
  const situation = Object.entries(SIT).map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`).join('&');
  const drawn = async (tplId: string, until: string): Promise<number> => {
    const page = await browser.newPage();
    try {
      await page.goto(`${base}#/cohort?tpl=${tplId}&${situation}`);
      await page.waitForFunction(until, { polling: 'raf', timeout: 120_000 });
      const at = await page.evaluate(() => performance.now());
      backendShown = (await page.$eval('[data-testid=backend]', (e) => e.textContent).catch(() => null)) ?? backendShown;
      return at;
    } finally {
      await page.close();
    }
  };
  let backendShown = '?';
  const full_: number[] = [];
  const empty_: number[] = [];
  try {
    for (let r = 0; r < args.runs; r++) {
      empty_.push(await drawn(empty.tplId, `document.querySelector('[data-testid=insufficient]') !== null`));
      full_.push(await drawn(full.tplId, `document.querySelector('[data-testid=level-0]')?.textContent === '${args.nodes}' && document.querySelector('svg g[data-label=failure] rect.bar') !== null`));
    }
  } finally {
    await browser.close();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const res = { backend: backendShown, nodes: args.nodes, runs: args.runs, drawnMs: median(full_), emptyMs: median(empty_), nodeFoldMs: nodeMs };
  if (args.json) {
    console.log(JSON.stringify(res));
    return;
  }
  console.log(`console first load, ${res.nodes}-node cohort: drawn answer in ${res.drawnMs.toFixed(0)} ms (median of ${res.runs}; goal ≤ 2000 ms), verified with ${res.backend}`);
  console.log(`  baseline, same page on an empty template: ${res.emptyMs.toFixed(0)} ms → ${(res.drawnMs / res.emptyMs).toFixed(2)}× ; per packet in the page ${((res.drawnMs - res.emptyMs) / res.nodes).toFixed(2)} ms`);
  console.log(`  src/ foldCohort of the same ${res.nodes} packets in Node (noble backend): ${res.nodeFoldMs.toFixed(0)} ms`);
}

await main();
