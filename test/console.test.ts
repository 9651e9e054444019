// The web console in a real browser (Debian's chromium driven by puppeteer-core): the page is
// served by the broker's HTTP listener, talks MQTT over its WebSocket listener, and verifies every
// packet itself. Expected figures come from the fleet this test publishes, never from the page's code.
// Screenshots go to a temp dir, or to QIS_SCREENSHOTS (docs/console refreshes the README's).
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import t, { type Test } from 'tap';
import { WebSocket, WebSocketServer, createWebSocketStream } from 'ws';
import { REL_BINS, attachEnrolment, compileTemplate, createEnrolment, keyFromSeed, operatorIdOf, signScorePacket, signTemplate, templateTopic, type ScoreFields } from '../src/index.js';
import { SIT, freePort, packetOf, peer, publishAll, seed, startRegion, until } from './helpers/federation.js';
import { bearing, bearingDoc, fixedKey } from './helpers/fixtures.js';
import { startQisBroker, type TestBroker } from './helpers/qis-broker.js';

const CHROMIUM = '/usr/bin/chromium';
const WWW = new URL('../dist/console/www/index.html', import.meta.url);
if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install --no-install-recommends chromium (see .ci/run)`);
if (!existsSync(WWW)) throw new Error('dist/console/www is missing: run npm run build first');

const shots = process.env['QIS_SCREENSHOTS'] ?? mkdtempSync(join(tmpdir(), 'qis-console-shots-'));
mkdirSync(shots, { recursive: true });
const curator = fixedKey(0xc1);
const template = { topic: templateTopic(bearing.tplId), packet: signTemplate(curator, bearing) };
// Same machine and bearing, another load bin: in the cohort only once the load level is dropped.
const LIGHT = { ...SIT, load_kn: 5 };
/** Node i's outcome in packetOf: failure when i % 3 === 0. */
const isFailure = (i: number): boolean => i % 3 === 0;

let browser: Browser;
t.before(async () => {
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // root in CI containers: Chromium's sandbox needs user namespaces it may not have there.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
});
t.teardown(async () => {
  await browser?.close();
  if (!process.env['QIS_SCREENSHOTS']) rmSync(shots, { recursive: true, force: true });
});

async function consoleBroker(t: Test): Promise<{ b: TestBroker; http: number; ws: number }> {
  const b = await startQisBroker({
    listeners: [
      { type: 'tcp', host: '127.0.0.1', port: 0 },
      { type: 'ws', host: '127.0.0.1', port: 0, path: '/mqtt' },
    ],
    http: { host: '127.0.0.1', port: 0 },
  });
  t.teardown(() => b.close());
  const http = b.broker.addresses().find((a) => a.type === 'http')?.port;
  const ws = b.broker.addresses().find((a) => a.type === 'ws')?.port;
  if (!http || !ws) throw new Error('listeners missing');
  return { b, http, ws };
}

/** Opens the console; `errors` collects the page's uncaught script errors (each test asserts none). */
async function open(t: Test, url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  t.teardown(() => page.close());
  await page.setViewport({ width: 1100, height: 900 });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  return { page, errors };
}

/** Publishes a forged packet to the qis broker, which refuses it and drops the connection. */
async function publishRefused(url: string, topic: string, packet: Uint8Array): Promise<void> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, clean: true });
  const closed = new Promise<void>((r) => c.once('close', () => r()));
  c.publish(topic, Buffer.from(packet), { qos: 1, retain: true }, () => undefined);
  await closed;
  await c.endAsync(true);
}

const text = (page: Page, sel: string): Promise<string> => page.$eval(sel, (e) => e.textContent ?? '');
async function waitText(page: Page, sel: string, want: string, what: string): Promise<void> {
  try {
    await until(async () => (await page.$(sel)) !== null && (await text(page, sel)).trim() === want, `${what}: ${sel} = ${want}`, 30_000);
  } catch (e) {
    const shown = (await page.$(sel)) ? await text(page, sel) : '(absent)';
    throw new Error(`${(e as Error).message}; the page shows ${JSON.stringify(shown)}; main: ${JSON.stringify((await text(page, 'main')).slice(0, 600))}`);
  }
}

/** Picks the SIT situation in the form (machine model is free text; the rest are selects). */
async function pickSituation(page: Page): Promise<void> {
  await page.waitForSelector('input[name=machine_model]');
  await page.type('input[name=machine_model]', SIT['machine_model'] as string);
  await page.select('select[name=bearing_type]', 'roller');
  await page.select('select[name=load_kn]', '10'); // the 10 – 50 bin, where 42.5 falls
  await page.select('select[name=sealed]', 'true');
}

t.test('cohort explorer - shares, widening and a live update against what the fleet published', async (t) => {
  const { b, http, ws } = await consoleBroker(t);
  const exact = Array.from({ length: 12 }, (_, i) => packetOf(i, 1, 1));
  const light = Array.from({ length: 3 }, (_, i) => packetOf(100 + i, 1, 1, { situation: LIGHT }));
  await publishAll(b.url, [template, ...exact, ...light]);
  const failures = exact.filter((_, i) => isFailure(i)).length; // 4 of 12

  const { page, errors } = await open(t, `http://127.0.0.1:${http}/?mqtt=${encodeURIComponent(`ws://127.0.0.1:${ws}/mqtt`)}#/cohort`);
  await pickSituation(page);
  await waitText(page, '[data-testid=level-0]', '12', 'exact cohort');
  t.equal((await text(page, '[data-testid=level-2]')).trim(), '15', 'dropping the load level adds the 3 light-load nodes');
  t.equal((await text(page, '[data-testid=level-4]')).trim(), '15', 'the whole template: 15 nodes');
  t.equal((await text(page, '[data-testid=received]')).trim(), '15', 'every packet of the template heard');
  t.equal((await text(page, '[data-testid=refused]')).trim(), '0', 'none refused');
  t.equal(await text(page, 'tr[data-label=failure] [data-testid=count]'), String(failures), 'failure: 4 nodes');
  t.equal(await text(page, 'tr[data-label=no_failure] [data-testid=count]'), String(12 - failures), 'no_failure: 8 nodes');
  t.equal(await text(page, 'tr[data-label=failure] [data-testid=share]'), `${((failures / 12) * 100).toFixed(1)} %`, 'failure share 33.3 %');
  t.ok(await page.$('svg g[data-label=failure] rect.bar'), 'the share is drawn');
  const verified = await page.$$eval('tr.ok [data-testid=verdict]', (rows) => rows.map((r) => r.textContent));
  t.equal(verified.length, 12, 'a row per packet behind the answer');
  t.ok(verified.every((v) => v?.includes('verified')), 'each verified in the page');
  await page.screenshot({ path: join(shots, 'cohort.png'), fullPage: true });

  // Live: one more failing node publishes; the page updates without a reload.
  await page.evaluate(() => Object.assign(globalThis, { stillHere: true }));
  await publishAll(b.url, [packetOf(12, 1, 1)]); // i = 12: a failure
  await waitText(page, '[data-testid=level-0]', '13', 'the live packet');
  t.equal(await text(page, 'tr[data-label=failure] [data-testid=count]'), String(failures + 1), 'failure: 5 nodes after the live packet');
  t.equal(await page.evaluate(() => (globalThis as { stillHere?: boolean }).stillHere), true, 'no reload happened');
  t.same(errors, [], 'no script error in the page');
});

/** A plain Aedes over WebSocket: retains whatever it is given, forged or not — the untrusted broker. */
async function untrustedBroker(t: Test): Promise<{ ws: string }> {
  const aedes = await Aedes.createBroker();
  const server = createServer();
  const wss = new WebSocketServer({ server, path: '/mqtt' });
  wss.on('connection', (sock) => aedes.handle(createWebSocketStream(sock) as never));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  if (!addr || typeof addr !== 'object') throw new Error('no address');
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
    await new Promise<void>((r) => server.close(() => r()));
    await new Promise<void>((r) => aedes.close(() => r()));
  });
  return { ws: `ws://127.0.0.1:${addr.port}/mqtt` };
}

t.test('cohort explorer - a forged packet from an untrusted broker is refused by the page itself', async (t) => {
  const { http } = await consoleBroker(t); // serves the page only
  const evil = await untrustedBroker(t);
  const genuine = Array.from({ length: 6 }, (_, i) => packetOf(200 + i, 1, 1));
  const forged = packetOf(300, 1, 1);
  const bytes = Uint8Array.from(forged.packet);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01; // the signature's last byte
  // Over WebSocket too: a raw MQTT client that is not a qis node, publishing retained.
  await publishAll(evil.ws, [template, ...genuine, { topic: forged.topic, packet: bytes }]);

  const { page, errors } = await open(t, `http://127.0.0.1:${http}/?mqtt=${encodeURIComponent(evil.ws)}#/cohort`);
  await pickSituation(page);
  await waitText(page, '[data-testid=received]', '7', 'all 7 messages heard');
  t.equal((await text(page, '[data-testid=refused]')).trim(), '1', 'one refused');
  t.equal((await text(page, '[data-testid=level-0]')).trim(), '6', 'the forged node is not in the cohort');
  const row = await page.$eval(`tr[data-node="${forged.topic.split('/').pop()}"] [data-testid=verdict]`, (e) => e.textContent ?? '');
  t.match(row, /refused ERR_BAD_SIGNATURE/, 'the forged packet is shown refused with its code');
  t.equal(await text(page, '[data-testid=backend]'), 'WebCrypto Ed25519', "Chromium's WebCrypto checked the signatures");
  await page.screenshot({ path: join(shots, 'cohort-forged.png'), fullPage: true });
  t.same(errors, [], 'no script error in the page');
});

t.test('fleet - templates held, stored packets and refusals by code from the broker', async (t) => {
  const { b, http, ws } = await consoleBroker(t);
  const fleet = Array.from({ length: 9 }, (_, i) => packetOf(400 + i, 1, 1));
  await publishAll(b.url, [template, ...fleet]);

  const { page, errors } = await open(t, `http://127.0.0.1:${http}/?poll=1000&mqtt=${encodeURIComponent(`ws://127.0.0.1:${ws}/mqtt`)}#/fleet`);
  const row = `tr[data-tpl="${bearing.tplId}"]`;
  await waitText(page, `${row} [data-testid=nodes]`, '9', 'nodes of the template');
  t.equal((await text(page, `${row} [data-testid=packets]`)).trim(), '9', '9 packets retained');
  t.match(await text(page, row), /bearing-failure/, 'the template by name');
  t.match(await text(page, row), /verified/, 'its document verified in the page');
  await waitText(page, '[data-testid=stored]', '9', 'the broker reports 9 packets stored');
  await waitText(page, '[data-testid=refused-total]', '0', 'nothing refused yet');
  // A forged publish to the qis broker itself, while the page watches: refused there, counted by code.
  const forged = packetOf(500, 1, 1);
  const bytes = Uint8Array.from(forged.packet);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01;
  await publishRefused(b.url, forged.topic, bytes);
  await waitText(page, '[data-testid=refused-total]', '1', 'the refusal, one poll later');
  t.match(await text(page, '[data-testid=refused-codes]'), /ERR_BAD_SIGNATURE\s*1/, 'the forged publish counted under its code');
  await until(async () => (await page.$$('.uplot')).length === 2, 'both per-minute charts drawn', 30_000);
  t.match(await text(page, '[data-testid=refused-chart]'), /ERR_BAD_SIGNATURE/, 'the refusal rate is charted under its code');
  t.equal((await text(page, '[data-testid=stored]')).trim(), '9', 'the forged packet was not stored');
  await page.screenshot({ path: join(shots, 'fleet.png'), fullPage: true });
  t.same(errors, [], 'no script error in the page');
});

t.test('links - a federation peer up, with the packets forwarded to it', async (t) => {
  const b = await startRegion('b', await freePort(), []);
  t.teardown(() => b.close());
  const a = await startQisBroker({
    listeners: [
      { type: 'tcp', host: '127.0.0.1', port: 0 },
      { type: 'ws', host: '127.0.0.1', port: 0, path: '/mqtt' },
    ],
    http: { host: '127.0.0.1', port: 0 },
    federation: { region: 'a', peers: [peer(b.port, { name: 'region-b' })], reconnect: { baseMs: 100, capMs: 1000 } },
  });
  t.teardown(() => a.close());
  const http = a.broker.addresses().find((x) => x.type === 'http')?.port as number;
  const ws = a.broker.addresses().find((x) => x.type === 'ws')?.port as number;
  const sent = Array.from({ length: 5 }, (_, i) => packetOf(600 + i, 1, 1));
  await publishAll(a.url, [template, ...sent]);
  await until(() => b.broker.store.size === sent.length, 'the 5 packets reach region b');

  const { page, errors } = await open(t, `http://127.0.0.1:${http}/?poll=1000&mqtt=${encodeURIComponent(`ws://127.0.0.1:${ws}/mqtt`)}#/links`);
  // The page shows the broker's own counter: read it here too. The template document travels the
  // link as well, and a catch-up may send an item again, so at least 1 + 5 items went out.
  const metric = async (): Promise<number> => {
    const m = /qis_federation_forwarded_total\{peer="region-b",direction="out"\} (\d+)/.exec(await (await fetch(`http://127.0.0.1:${http}/metrics`)).text());
    return Number(m?.[1] ?? -1);
  };
  await until(async () => (await text(page, 'tr[data-peer=region-b] [data-testid=out]').catch(() => '')).trim() === String(await metric()), 'the page shows the broker counter', 30_000);
  t.ok(Number(await text(page, 'tr[data-peer=region-b] [data-testid=out]')) >= sent.length + 1, 'at least the template and the 5 packets forwarded out');
  t.match(await text(page, 'tr[data-peer=region-b] [data-testid=state]'), /up/, 'the link is up');
  // The last catch-up: the broker's gauge (Unix s at its completion), shown as a time.
  const lastCatchUp = async (): Promise<string> => /qis_federation_last_catchup_seconds\{peer="region-b"\} (\S+)/.exec(await (await fetch(`http://127.0.0.1:${http}/metrics`)).text())?.[1] ?? 'absent';
  await until(async () => (await page.$eval('tr[data-peer=region-b] [data-testid=last-catchup] time', (e) => e.getAttribute('data-unix')).catch(() => null)) === (await lastCatchUp()), 'the page shows the last catch-up the broker reports', 30_000);
  const shown = Number(await page.$eval('tr[data-peer=region-b] [data-testid=last-catchup] time', (e) => e.getAttribute('data-unix')));
  t.ok(shown > 0, 'a catch-up completed when the link came up');
  t.match(await text(page, 'tr[data-peer=region-b] [data-testid=last-catchup]'), /ago|Z$/, 'shown as a time');
  await until(async () => (await page.$$('.uplot')).length === 1, 'the forwarded chart drawn', 30_000);
  await page.screenshot({ path: join(shots, 'links.png'), fullPage: true });
  t.same(errors, [], 'no script error in the page');
});

t.test('http - the console files and nothing else', async (t) => {
  const { http } = await consoleBroker(t);
  const base = `http://127.0.0.1:${http}`;
  const index = await fetch(`${base}/`);
  t.equal(index.status, 200);
  t.match(index.headers.get('content-type') ?? '', /text\/html/);
  t.match(index.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  t.match(await index.text(), /app\.js/);
  const js = await fetch(`${base}/app.js`);
  t.match(js.headers.get('content-type') ?? '', /text\/javascript/);
  await js.arrayBuffer();
  for (const p of ['/../package.json', '/%2e%2e/package.json', '/app.js%00', '/.%2fapp.js', '/nope.js', '/index.html/']) {
    const r = await fetch(`${base}${p}`);
    t.equal(r.status, 404, `${p}: 404`);
    await r.text();
  }
  const post = await fetch(`${base}/`, { method: 'POST', body: 'x' });
  t.equal(post.status, 404, 'POST /: 404');
  await post.text();
});

t.test('fleet - enrolment operators and their node counts (two operators and a node without enrolment)', async (t) => {
  const { b, http, ws } = await consoleBroker(t);
  const opA = fixedKey(0xa1);
  const opB = fixedKey(0xb2);
  // Valid for two years: the page's clock is the browser's, which a faked test clock (faketime ±1 y) may not move.
  const expS = Math.floor(Date.now() / 1000) + 2 * 365 * 86_400;
  const enrolled = (i: number, op: typeof opA): { topic: string; packet: Uint8Array } => {
    const p = packetOf(i, 1, 1);
    return { topic: p.topic, packet: attachEnrolment(p.packet, createEnrolment(op, { node: keyFromSeed(seed(i, 1)).publicKey, exp: expS })) };
  };
  const byA = [700, 701, 702].map((i) => enrolled(i, opA));
  const byB = [710, 711].map((i) => enrolled(i, opB));
  const none = [packetOf(720, 1, 1)];
  await publishAll(b.url, [template, ...byA, ...byB, ...none]);

  const { page, errors } = await open(t, `http://127.0.0.1:${http}/?poll=1000&mqtt=${encodeURIComponent(`ws://127.0.0.1:${ws}/mqtt`)}#/fleet`);
  const a = operatorIdOf(opA.publicKey);
  const bId = operatorIdOf(opB.publicKey);
  await waitText(page, `tr[data-operator="${a}"] [data-testid=operator-nodes]`, String(byA.length), 'operator A');
  t.equal((await text(page, `tr[data-operator="${bId}"] [data-testid=operator-nodes]`)).trim(), String(byB.length), 'operator B: 2 nodes');
  t.equal((await text(page, 'tr[data-operator=none] [data-testid=operator-nodes]')).trim(), String(none.length), 'one node without enrolment');
  t.equal((await page.$$('[data-testid=operators] tbody tr')).length, 3, 'two operators and the not-enrolled row');
  t.equal((await text(page, `tr[data-tpl="${bearing.tplId}"] [data-testid=nodes]`)).trim(), '6', 'all 6 nodes of the template');
  t.same(errors, [], 'no script error in the page');
});

/** Score fields of a node that scored `k` predictions with `hits` hits; rel: [bin, n, yes] triples. */
function scoreOf(k: number, hits: number, brier: number, rel: [number, number, number][]): ScoreFields {
  const r = new Array<number>(2 * REL_BINS).fill(0);
  for (const [bin, n, yes] of rel) {
    r[2 * bin] = n;
    r[2 * bin + 1] = yes;
  }
  return { seq: 1, ts: Date.now(), k, hits, brier, rel: r };
}

t.test('track records - rival templates ranked from the score packets published, a forged one refused by the page', async (t) => {
  const { http } = await consoleBroker(t); // serves the page only
  const evil = await untrustedBroker(t); // retains anything: the page's own verification decides
  const rival = compileTemplate({ ...bearingDoc, version: bearingDoc.version + 1 });
  const rivalDoc = { topic: templateTopic(rival.tplId), packet: signTemplate(curator, rival) };
  // The rival's 4 nodes hit 8 of 10 each; bearing's 3 nodes 4 of 10: the rival ranks first.
  const good = [0, 1, 2, 3].map((i) => signScorePacket(keyFromSeed(seed(800 + i, 1)), rival.tplId, scoreOf(10, 8, 0.12, [[1, 5, 0], [8, 5, 4]])));
  const poor = [0, 1, 2].map((i) => signScorePacket(keyFromSeed(seed(810 + i, 1)), bearing.tplId, scoreOf(10, 4, 0.31, [[1, 5, 3], [8, 5, 2]])));
  // A forged record for bearing: a huge claim whose signature's last byte is flipped.
  const forged = signScorePacket(keyFromSeed(seed(820, 1)), bearing.tplId, scoreOf(1000, 1000, 0, []));
  const bytes = Uint8Array.from(forged.bytes);
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x01;
  await publishAll(evil.ws, [template, rivalDoc, ...[...good, ...poor].map((s) => ({ topic: s.topic, packet: s.bytes })), { topic: forged.topic, packet: bytes }]);

  const { page, errors } = await open(t, `http://127.0.0.1:${http}/?mqtt=${encodeURIComponent(evil.ws)}#/track`);
  await waitText(page, '[data-testid=scores-received]', String(good.length + poor.length + 1), 'every score packet heard');
  t.equal((await text(page, '[data-testid=scores-refused]')).trim(), '1', 'the forged one refused');
  t.match(await text(page, `[data-testid=refused-scores] tr[data-node="${forged.topic.split('/').pop()}"] [data-testid=verdict]`), /refused ERR_BAD_SIGNATURE/, 'with its code');
  await until(async () => (await page.$$('[data-testid=ranking] tbody tr')).length === 2, 'both rivals ranked', 30_000);
  const order = await page.$$eval('[data-testid=ranking] tbody tr', (rows) => rows.map((r) => r.getAttribute('data-tpl')));
  t.same(order, [rival.tplId, bearing.tplId], 'the rival (8 of 10 hits per node) above bearing (4 of 10)');
  const row = (id: string, cell: string): Promise<string> => text(page, `[data-testid=ranking] tr[data-tpl="${id}"] [data-testid=${cell}]`);
  t.equal(await row(rival.tplId, 'nodes'), String(good.length), 'rival: 4 nodes');
  t.equal(await row(rival.tplId, 'k'), String(good.length * 10), 'rival: 40 predictions');
  t.equal(await row(rival.tplId, 'hits'), String(good.length * 8), 'rival: 32 hits');
  t.equal(await row(bearing.tplId, 'nodes'), String(poor.length), 'bearing: 3 nodes (the forged one not counted)');
  t.equal(await row(bearing.tplId, 'k'), String(poor.length * 10), 'bearing: 30 predictions');
  t.equal(await row(bearing.tplId, 'hits'), String(poor.length * 4), 'bearing: 12 hits');
  await until(async () => (await page.$$('[data-testid=calibration] .uplot')).length === 1, 'the calibration chart drawn', 30_000);
  const legend = await text(page, '[data-testid=calibration]');
  t.match(legend, new RegExp(`${bearingDoc.name} v${bearingDoc.version + 1}`), 'the rival in the chart legend');
  t.match(legend, /perfectly calibrated/, 'with the diagonal');

  // Keyboard: from the top of the page, Tab reaches the skip link and then the pages; Enter opens one.
  await page.keyboard.press('Tab');
  t.equal(await page.evaluate('document.activeElement?.textContent'), 'Skip to content', 'Tab first reaches the skip link');
  for (let i = 0; i < 4; i++) await page.keyboard.press('Tab'); // Cohort explorer, Fleet, Links, Track records
  t.equal(await page.evaluate('document.activeElement?.textContent'), 'Track records', 'then the pages, in order');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Space'); // the first rival's checkbox: leave it out of the comparison
  await until(async () => (await page.$$('[data-testid=ranking] tbody tr')).length === 1, 'one rival left after unticking one with the keyboard', 30_000);
  const unlabelled = await page.evaluate(`[...document.querySelectorAll('input, select, button')].filter((e) => (e.labels?.length ?? 0) === 0 && !e.getAttribute('aria-label') && e.textContent.trim() === '').length`);
  t.equal(unlabelled, 0, 'every control has a label');
  await page.keyboard.press('Space');
  await until(async () => (await page.$$('[data-testid=ranking] tbody tr')).length === 2, 'both again', 30_000);
  await page.screenshot({ path: join(shots, 'track.png'), fullPage: true });
  t.same(errors, [], 'no script error in the page');
});

/** An MQTT 3.1.1 packet: fixed header byte, remaining length (variable-length), body. */
function mqttPacket(first: number, body: number[]): Buffer {
  const len: number[] = [];
  let n = body.length;
  do {
    len.push((n % 128) | (n >= 128 ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return Buffer.from([first, ...len, ...body]);
}
const mqttString = (s: string): number[] => [s.length >> 8, s.length & 0xff, ...Buffer.from(s)];

t.test('broker - one WebSocket frame per MQTT packet (what the console pays per frame)', async (t) => {
  const { b, ws } = await consoleBroker(t);
  const fleet = Array.from({ length: 5 }, (_, i) => packetOf(900 + i, 1, 1));
  await publishAll(b.url, [template, ...fleet]);
  const sock = new WebSocket(`ws://127.0.0.1:${ws}/mqtt`, 'mqtt');
  t.teardown(() => sock.terminate());
  const frames: Buffer[] = [];
  sock.on('message', (d: Buffer) => frames.push(d));
  await new Promise<void>((r, j) => sock.once('open', () => r()).once('error', j));
  // CONNECT (clean session, keepalive 60 s), then SUBSCRIBE qis/1/o/# at QoS 0.
  sock.send(mqttPacket(0x10, [...mqttString('MQTT'), 4, 0x02, 0, 60, ...mqttString('frames-probe')]));
  sock.send(mqttPacket(0x82, [0, 1, ...mqttString('qis/1/o/#'), 0]));
  await until(() => frames.filter((f) => f[0] === 0x31).length >= fleet.length, 'the retained packets', 30_000);
  const publishes = frames.filter((f) => (f[0] as number) >> 4 === 3);
  t.equal(publishes.length, fleet.length, 'one frame per retained PUBLISH');
  for (const f of publishes) {
    let len = 0;
    let mul = 1;
    let i = 1;
    for (; ; i++) {
      len += ((f[i] as number) & 0x7f) * mul;
      mul *= 128;
      if (((f[i] as number) & 0x80) === 0) break;
    }
    t.equal(f.length, i + 1 + len, 'each frame holds exactly one whole packet');
  }
  t.same(frames.map((f) => (f[0] as number) >> 4), [2, 9, ...fleet.map(() => 3)], 'CONNACK, SUBACK and the PUBLISHes: no frame split off a packet');
});
