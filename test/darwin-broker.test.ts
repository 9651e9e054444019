// Score packets (PROTOCOL §9) against the real qis broker over loopback: admission and refusals,
// durability, node.report() publishing hand-checkable numbers, scores()/consult(), and the CLI.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CborTag,
  address,
  publishTemplate,
  compileTemplate,
  createNode,
  encodeCbor,
  encodeScorePayload,
  scoreTopic,
  sigStructure,
  signEd25519,
  signScorePacket,
  utf8Bytes,
  verifyScorePacket,
  type ErrorCode,
  type NodeKey,
  type QisNode,
  type ScoreFields,
} from '../src/index.js';
import { bearing, bearingDoc, fixedKey, situation } from './helpers/fixtures.js';
import { startQisBroker, type TestBroker } from './helpers/qis-broker.js';
import { publishOnce, readRetained } from './helpers/retained.js';
import { qis } from './helpers/cli.js';
import { prng } from './helpers/prng.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-darwin-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function metric(text: string, name: string, code: string): number {
  const m = new RegExp(`^${name}\\{code="${code}"\\} (\\S+)$`, 'm').exec(text);
  return m?.[1] === undefined ? 0 : Number(m[1]);
}
const refused = async (b: TestBroker, code: ErrorCode): Promise<number> => metric(await b.broker.metricsText(), 'qis_refused_total', code);
const dropped = async (b: TestBroker, code: ErrorCode): Promise<number> => metric(await b.broker.metricsText(), 'qis_dropped_total', code);


/** A score packet signed by `signer` on `topic` (any topic: to forge another node's). */
function signedOn(signer: NodeKey, topic: string, f: ScoreFields): Uint8Array {
  const prot = encodeCbor(new Map([[1, -19]]));
  const pay = encodeScorePayload(f);
  return encodeCbor(new CborTag(18, [prot, new Map([[4, signer.publicKey]]), pay, signEd25519(signer, sigStructure(prot, utf8Bytes(topic), pay))]));
}

t.test('the broker admits a score packet and keeps it retained across a restart; refuses forged, foreign, future and malformed ones; drops stale ones', async (t) => {
  const dataDir = mkdtempSync(join(dir, 'b-'));
  let b = await startQisBroker({}, dataDir);
  t.teardown(() => b.close());
  const a = fixedKey(0x51);
  const good = signScorePacket(a, bearing.tplId, { seq: 10, ts: Date.now(), k: 4, brier: 0.25, hits: 3, since: 1_790_000_000 });
  t.equal(await publishOnce(b.url, good.topic, good.bytes), 'acked', 'a valid score packet is acknowledged');
  t.same(await readRetained(b.url, good.topic, 10_000), good.bytes, 'and served retained, byte for byte');

  // A payload without k (20), with an unknown key 19 instead, correctly signed.
  const prot = encodeCbor(new Map([[1, -19]]));
  const noK = encodeCbor(new Map<number, number>([[1, 1], [3, 13], [4, 1], [19, 4]]));
  const noKPacket = encodeCbor(new CborTag(18, [prot, new Map([[4, a.publicKey]]), noK, signEd25519(a, sigStructure(prot, utf8Bytes(good.topic), noK))]));
  const cases: { what: string; code: ErrorCode; topic: string; payload: Uint8Array }[] = [
    { what: 'a flipped signature bit', code: 'ERR_BAD_SIGNATURE', topic: good.topic, payload: Uint8Array.from(good.bytes, (x, i) => (i === good.bytes.length - 1 ? x ^ 1 : x)) },
    { what: "another node's key on a's topic", code: 'ERR_NODE_MISMATCH', topic: good.topic, payload: signedOn(fixedKey(0x52), good.topic, { seq: 11, ts: Date.now(), k: 9, brier: 0, hits: 9 }) },
    { what: 'a ts an hour ahead', code: 'ERR_TS_FUTURE', topic: good.topic, payload: signedOn(a, good.topic, { seq: 12, ts: Date.now() + 3_600_000, k: 5 }) },
    { what: 'a malformed score topic', code: 'ERR_TOPIC_INVALID', topic: `qis/1/s/${bearing.tplId}/not-a-node`, payload: good.bytes },
    { what: 'a packet over 512 bytes', code: 'ERR_PACKET_TOO_LARGE', topic: good.topic, payload: new Uint8Array(513) },
    { what: 'a payload without k', code: 'ERR_PAYLOAD_INVALID', topic: good.topic, payload: noKPacket },
  ];
  for (const c of cases) {
    const before = await refused(b, c.code);
    t.equal(await publishOnce(b.url, c.topic, c.payload), 'closed', `${c.what}: the client is disconnected`);
    t.equal((await refused(b, c.code)) - before, 1, `${c.what}: counted under ${c.code}`);
  }
  const staleBefore = await dropped(b, 'ERR_SEQ_STALE');
  const stale = signScorePacket(a, bearing.tplId, { seq: 9, ts: Date.now(), k: 100, brier: 0, hits: 100 });
  t.equal(await publishOnce(b.url, stale.topic, stale.bytes), 'acked', 'a stale seq is acknowledged (a resend)…');
  t.equal((await dropped(b, 'ERR_SEQ_STALE')) - staleBefore, 1, '…and dropped as ERR_SEQ_STALE');
  t.same(await readRetained(b.url, good.topic, 10_000), good.bytes, 'the retained score is still seq 10');

  await b.close(true);
  b = await startQisBroker({}, dataDir);
  t.same(await readRetained(b.url, good.topic, 10_000), good.bytes, 'after a restart the score packet is still retained (durable store)');
  const again = signScorePacket(a, bearing.tplId, { seq: 10, ts: Date.now(), k: 5 });
  const before = await dropped(b, 'ERR_SEQ_STALE');
  await publishOnce(b.url, again.topic, again.bytes);
  t.equal((await dropped(b, 'ERR_SEQ_STALE')) - before, 1, 'and its seq still blocks a replay after the restart');
});

t.test('a closed registry refuses score packets of unlisted templates', async (t) => {
  const b = await startQisBroker({ admission: { registry: 'closed', templates: [] } });
  t.teardown(() => b.close());
  const s = signScorePacket(fixedKey(0x53), bearing.tplId, { seq: 1, ts: Date.now(), k: 1 });
  const before = await refused(b, 'ERR_TEMPLATE_UNKNOWN');
  t.equal(await publishOnce(b.url, s.topic, s.bytes), 'closed');
  t.equal((await refused(b, 'ERR_TEMPLATE_UNKNOWN')) - before, 1, 'counted under ERR_TEMPLATE_UNKNOWN');
});

t.test('a registry closed to curator keys admits score packets of the templates a listed curator registered', async (t) => {
  const curator = fixedKey(0x54);
  const b = await startQisBroker({ admission: { registry: 'closed', templates: [], curators: [curator.nodeId] } });
  t.teardown(() => b.close());
  const s = signScorePacket(fixedKey(0x55), bearing.tplId, { seq: 1, ts: Date.now(), k: 1 });
  t.equal(await publishOnce(b.url, s.topic, s.bytes), 'closed', 'refused before the curator registered the template');
  await publishTemplate(curator, bearing, { url: b.url });
  const s2 = signScorePacket(fixedKey(0x55), bearing.tplId, { seq: 2, ts: Date.now(), k: 1 });
  t.equal(await publishOnce(b.url, s2.topic, s2.bytes), 'acked', 'admitted once a listed curator registered it');
  t.same(await readRetained(b.url, s2.topic, 10_000), s2.bytes, 'and served retained');
});

/** Nodes that publish the given outcomes for `situation` (one node each), then close. */
async function seedCohort(url: string, outcomes: readonly string[], seedByte: number): Promise<void> {
  for (const [i, out] of outcomes.entries()) {
    const n = await createNode({ url, dataDir: mkdtempSync(join(dir, 'seed-')), key: fixedKey(seedByte + i) });
    try {
      const r = await n.publish(bearing, situation, out);
      if (!r.acked) throw new Error('seed packet not acknowledged');
    } finally {
      await n.close();
    }
  }
}

t.test('report() scores the latest prediction before the observation and publishes a score packet whose numbers check by hand', async (t) => {
  const b = await startQisBroker();
  t.teardown(() => b.close());
  // A cohort of three: failure, failure, no_failure, equal weights → P(failure) = 2/3.
  await seedCohort(b.url, ['failure', 'failure', 'no_failure'], 0x60);
  const nodeDir = mkdtempSync(join(dir, 'reporter-'));
  const node: QisNode = await createNode({ url: b.url, dataDir: nodeDir, key: fixedKey(0x70) });
  t.teardown(() => node.close());

  await t.rejects(node.report(bearing, situation, 'failure'), { code: 'ERR_NO_PREDICTION' }, 'nothing to score before any query');
  const q1 = await node.query(bearing, situation, { minCohort: 3 });
  t.equal(q1.synthesis.kind, 'category');
  await t.rejects(node.report(bearing, situation, 'failure', { ts: Date.now() - 3_600_000 }), { code: 'ERR_NO_PREDICTION' }, 'an observation made before the query has no prediction to score');

  const r1 = await node.report(bearing, situation, 'failure');
  t.equal(r1.acked, true, 'the score packet is acknowledged');
  // Brier = (2/3 − 1)² + (1/3 − 0)² = 2/9; the top label (failure) came true.
  t.ok(Math.abs((r1.score.brier ?? NaN) - 2 / 9) < 1e-12, `Brier of the first prediction is 2/9 (${r1.score.brier})`);
  t.equal(r1.score.hit, true);
  await t.rejects(node.report(bearing, situation, 'failure'), { code: 'ERR_NO_PREDICTION' }, 'a prediction is scored once');

  await node.query(bearing, situation, { minCohort: 3 });
  const r2 = await node.report(bearing, situation, 'no_failure');
  // Brier = (2/3)² + (1/3 − 1)² = 8/9; a miss. Totals: k 2, mean Brier (2/9 + 8/9)/2 = 5/9, hits 1.
  t.ok(Math.abs((r2.score.brier ?? NaN) - 8 / 9) < 1e-12, 'Brier of the second prediction is 8/9');
  t.equal(r2.score.hit, false);
  t.ok(r2.seq > r1.seq, 'the score seq increases');

  const retained = await readRetained(b.url, scoreTopic(bearing.tplId, node.nodeId), 10_000);
  t.ok(retained, 'the score packet is retained on qis/1/s/<tplId>/<nodeId>');
  const s = verifyScorePacket(scoreTopic(bearing.tplId, node.nodeId), retained as Uint8Array);
  t.equal(s.seq, r2.seq, 'the retained packet is the newest');
  t.equal(s.k, 2, 'k = 2');
  t.equal(s.hits, 1, 'hits = 1');
  t.ok(Math.abs((s.brier ?? NaN) - 5 / 9) < 1e-12, `mean Brier = 5/9 (${s.brier})`);
  t.ok(s.since !== undefined && Math.abs((s.since as number) - Date.now() / 1000) < 600, 'since is the first observation, in Unix s');
  // Reliability: each prediction gave failure 2/3 (bin 6) and no_failure 1/3 (bin 3); each came true once.
  const rel = new Array<number>(20).fill(0);
  rel[6] = 2; // bin 3: n
  rel[7] = 1; // bin 3: y
  rel[12] = 2; // bin 6: n
  rel[13] = 1; // bin 6: y
  t.same(s.rel, rel, 'the reliability histogram holds the four (probability, happened) pairs');

  // The totals survive a restart of the node (durable in the data dir).
  await node.close();
  const again = await createNode({ url: b.url, dataDir: nodeDir, key: fixedKey(0x70) });
  t.teardown(() => again.close());
  await again.query(bearing, situation, { minCohort: 3 });
  const r3 = await again.report(bearing, situation, 'failure');
  t.equal(r3.totals.k, 3, 'after a restart the running total continues (k 3)');
  t.equal(r3.totals.hits, 2);
});

t.test('a score packet reported while the broker is away waits in the outbox, survives a restart of the node, and is delivered', async (t) => {
  const dataDir = mkdtempSync(join(dir, 'b-'));
  let b = await startQisBroker({}, dataDir);
  t.teardown(() => b.close());
  await seedCohort(b.url, ['failure', 'no_failure', 'failure'], 0xa0);
  const nodeDir = mkdtempSync(join(dir, 'offline-'));
  const key = fixedKey(0xa8);
  const n1 = await createNode({ url: b.url, dataDir: nodeDir, key });
  await n1.query(bearing, situation, { minCohort: 3 });
  await n1.close();
  await b.close(true);
  // The broker is down: report() scores, queues the packet durably and says it is not delivered.
  const offline = await createNode({ url: b.url, dataDir: nodeDir, key, reconnect: { baseMs: 20, capMs: 100 } });
  const r = await offline.report(bearing, situation, 'failure', { ackTimeoutMs: 0 });
  t.equal(r.acked, false, 'not acknowledged while the broker is away');
  t.equal(offline.pending, 1, 'the score packet waits in the outbox');
  await offline.close();
  b = await startQisBroker({}, dataDir);
  const back = await createNode({ url: b.url, dataDir: nodeDir, key });
  t.teardown(() => back.close());
  t.equal(back.pending, 1, 'after a restart of the node the queued score packet is still there (verified as a score packet)');
  await back.flush({ timeoutMs: 20_000 });
  const got = await readRetained(b.url, scoreTopic(bearing.tplId, key.nodeId), 10_000);
  t.same(got, r.packet, 'and the broker holds it once delivered');
});

t.test('a report cut short after its totals were saved (prediction not yet forgotten) is not counted twice on retry', async (t) => {
  const b = await startQisBroker();
  t.teardown(() => b.close());
  await seedCohort(b.url, ['failure', 'no_failure', 'failure'], 0xb0);
  const nodeDir = mkdtempSync(join(dir, 'crash-'));
  const key = fixedKey(0xb8);
  const node = await createNode({ url: b.url, dataDir: nodeDir, key });
  t.teardown(() => node.close());
  await node.query(bearing, situation, { minCohort: 3 });
  await node.close();
  // The prediction file as it was before the report: restoring it after the report recreates
  // the state of a crash between saving the totals and forgetting the prediction.
  const predFile = join(nodeDir, 'predictions', bearing.tplId, `${Buffer.from(address(bearing, situation).fp).toString('hex')}.json`);
  const saved = readFileSync(predFile);
  const n1 = await createNode({ url: b.url, dataDir: nodeDir, key });
  const r1 = await n1.report(bearing, situation, 'failure');
  t.equal(r1.totals.k, 1, 'the first report counts one prediction');
  await n1.close();
  writeFileSync(predFile, saved);
  const n2 = await createNode({ url: b.url, dataDir: nodeDir, key });
  t.teardown(() => n2.close());
  const r2 = await n2.report(bearing, situation, 'failure');
  t.equal(r2.totals.k, 1, 'the retried report finds the prediction already counted: k stays 1');
  t.same(r2.score, r1.score, 'and returns the score counted the first time');
  t.equal(r2.seq, r1.seq, 'with the same seq (a duplicate the broker drops)');
  await t.rejects(n2.report(bearing, situation, 'failure'), { code: 'ERR_NO_PREDICTION' }, 'after which the prediction is forgotten');
});

t.test('scores() reads rival track records in one round trip; consult() with Thompson sampling prefers the proven template; CLI rank prints and charts them', async (t) => {
  const b = await startQisBroker();
  t.teardown(() => b.close());
  const rival = compileTemplate({ ...bearingDoc, name: 'bearing-failure-coarse', fields: bearingDoc.fields.slice(0, 2) });
  // Template A: two nodes, 9/10 and 17/20 hits; rival B: one node, 5/10.
  const recs: [NodeKey, string, ScoreFields][] = [
    [fixedKey(0x81), bearing.tplId, { seq: 1, ts: Date.now(), k: 10, hits: 9, brier: 0.1, rel: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 9, 0, 0] }],
    [fixedKey(0x82), bearing.tplId, { seq: 1, ts: Date.now(), k: 20, hits: 17, brier: 0.16 }],
    [fixedKey(0x83), rival.tplId, { seq: 1, ts: Date.now(), k: 10, hits: 5, brier: 0.4, rel: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 5, 0, 0, 0, 0, 0, 0, 0, 0] }],
  ];
  for (const [key, tpl, f] of recs) {
    const s = signScorePacket(key, tpl, f);
    t.equal(await publishOnce(b.url, s.topic, s.bytes), 'acked');
  }
  const node = await createNode({ url: b.url, dataDir: mkdtempSync(join(dir, 'ranker-')), choose: 'thompson', chooseRandom: prng(7) });
  t.teardown(() => node.close());
  const sc = await node.scores([bearing.tplId, rival.tplId]);
  t.equal(sc.completeness, 'sync', 'the qis broker holds the sync marker');
  t.same(
    sc.records.map((r) => [r.tplId, r.scores.length]),
    [
      [bearing.tplId, 2],
      [rival.tplId, 1],
    ],
    'two score packets for A, one for B',
  );
  // With 26/30 against 5/10, nearly every Thompson draw favours A.
  let chosenA = 0;
  for (let i = 0; i < 20; i++) {
    const c = await node.consult([rival, bearing], situation, { minCohort: 1, remember: false });
    if (c.chosen === bearing.tplId) chosenA++;
    t.equal(c.draws?.length, 2);
  }
  t.ok(chosenA >= 17, `A chosen in ${chosenA} of 20 consultations`);
  await t.rejects(node.consult([bearing, compileTemplate({ ...bearingDoc, outcome: { kind: 'number', unit: 'h' } })], situation), { code: 'ERR_INVALID_ARGUMENT' }, 'templates with different outcomes are not rivals');

  const fileA = join(dir, 'a.json');
  const fileB = join(dir, 'b.json');
  writeFileSync(fileA, JSON.stringify(bearingDoc));
  writeFileSync(fileB, JSON.stringify(rival.doc));
  const svg = join(dir, 'calib.svg');
  const r = await qis(['templates', 'rank', '--url', b.url, '--template', fileB, '--template', fileA, '--svg', svg, '--json']);
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { ranking: { tplId: string; name: string; k: number; hits: number; hitRate: number; hitInterval: [number, number]; brier: number }[] };
  t.same(
    out.ranking.map((x) => x.tplId),
    [bearing.tplId, rival.tplId],
    'A ranks first',
  );
  const [ra, rb] = out.ranking as [(typeof out.ranking)[number], (typeof out.ranking)[number]];
  t.equal(ra.k, 30);
  t.equal(ra.hits, 26);
  t.ok(Math.abs(ra.hitRate - 27 / 32) < 1e-12, 'posterior mean (1 + 26) / (2 + 30)');
  t.ok(ra.hitInterval[0] < 27 / 32 && 27 / 32 < ra.hitInterval[1], 'the interval holds the mean');
  t.ok(Math.abs(ra.brier - (10 * 0.1 + 20 * 0.16) / 30) < 1e-12, 'Brier weighted by k: 0.14');
  t.ok(Math.abs(rb.hitRate - 6 / 12) < 1e-12, 'B: (1 + 5) / (2 + 10)');
  const chart = readFileSync(svg, 'utf8');
  t.match(chart, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/, 'an SVG file');
  t.match(chart, /bearing-failure v1/, 'the legend names A');
  t.match(chart, /bearing-failure-coarse v1/, 'and B');
  t.equal((chart.match(/<circle /g) ?? []).length, 2, 'one dot per non-empty reliability bin (one bin each)');
  const human = await qis(['templates', 'rank', '--url', b.url, '--template', fileA, '--template', rival.tplId]);
  t.equal(human.status, 0, human.stderr);
  t.match(human.stdout, /1\s+bearing-failure v1\s+2\s+30\s+26\s+84\.4 %/, 'the table: rank, name, nodes, k, hits, posterior mean');
});

t.test('qis query then qis report on the same data dir publishes the score', async (t) => {
  const b = await startQisBroker();
  t.teardown(() => b.close());
  await seedCohort(b.url, ['failure', 'failure', 'failure', 'failure', 'no_failure'], 0x90);
  const d = mkdtempSync(join(dir, 'cli-'));
  const tpl = join(dir, 'bearing.json');
  writeFileSync(tpl, JSON.stringify(bearingDoc));
  const sit = JSON.stringify(situation);
  const q = await qis(['query', '--url', b.url, '--data-dir', d, '--template', tpl, '--situation', sit, '--json']);
  t.equal(q.status, 0, q.stderr);
  const r = await qis(['report', '--url', b.url, '--data-dir', d, '--template', tpl, '--situation', sit, '--outcome', 'failure', '--json']);
  t.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { acked: boolean; score: { brier: number; hit: boolean }; totals: { k: number; hits: number } };
  t.equal(j.acked, true);
  // P(failure) = 4/5: Brier (1/5)² + (1/5)² = 0.08.
  t.ok(Math.abs(j.score.brier - 0.08) < 1e-12, `Brier 0.08 (${j.score.brier})`);
  t.same(j.totals, { ...j.totals, k: 1, hits: 1 });
  const again = await qis(['report', '--url', b.url, '--data-dir', d, '--template', tpl, '--situation', sit, '--outcome', 'failure', '--json']);
  t.equal(again.status, 1);
  t.match(again.stdout, /ERR_NO_PREDICTION/);
});

t.test('cli - report and templates rank have --help (mentioning --json), are listed, and refuse bad usage', async (t) => {
  const top = await qis(['--help']);
  t.match(top.stdout, /report/);
  t.match(top.stdout, /templates rank/);
  for (const c of [['report'], ['templates', 'rank']]) {
    const h = await qis([...c, '--help']);
    t.equal(h.status, 0, `${c.join(' ')} --help`);
    t.match(h.stdout, /--json/);
  }
  const group = await qis(['templates', '--help']);
  t.equal(group.status, 0);
  t.match(group.stdout, /templates rank/);
  const noTpl = await qis(['templates', 'rank', '--url', 'mqtt://127.0.0.1:1', '--json']);
  t.equal(noTpl.status, 2, 'rank without --template is a usage error');
  t.match(noTpl.stdout, /ERR_CLI_USAGE/);
  const noOutcome = await qis(['report', '--url', 'mqtt://127.0.0.1:1', '--data-dir', join(dir, 'x'), '--template', 'examples/bearing-failure.yaml', '--situation', '{}']);
  t.equal(noOutcome.status, 2, 'report without --outcome is a usage error');
  t.match(noOutcome.stderr, /--outcome is required/);
});
