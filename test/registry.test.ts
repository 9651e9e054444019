// The template registry (issue 7 section 1) against a real qis broker (and plain Aedes, which
// keeps whatever it is sent) over loopback: publish/list/show by API and CLI, hash and curator
// checks, closed registries, nodes given a template id, and superseded cohorts.
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import {
  CborTag,
  QisError,
  compileTemplate,
  encodeCbor,
  sigStructure,
  signEd25519,
  utf8Bytes,
  createNode,
  createOutcomePacket,
  fetchTemplate,
  listTemplates,
  publishTemplate,
  b32,
  sameRouting,
  saveKeyFile,
  sha256,
  signTemplate,
  supersedesOf,
  verifyTemplateDoc,
  templateTopic,
  toHex,
  type NodeKey,
  type QisNode,
  type Template,
  type TemplateDoc,
} from '../src/index.js';
import { qis } from './helpers/cli.js';
import { freePort } from './helpers/mosquitto.js';
import { bearing, bearingDoc, fixedKey, situation } from './helpers/fixtures.js';
import { startAedes } from './helpers/aedes.js';
import { startQisBroker, type TestBroker } from './helpers/qis-broker.js';
import { checkTemplateDoc, precheckOutcome } from '../broker/admission.js';
import { configFromFlags, parseBrokerConfig, resolveBrokerOptions } from '../broker/config.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-registry-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const curatorA = fixedKey(41);
const curatorB = fixedKey(42);
/** A second, unrelated template. */
const pump = compileTemplate({ name: 'pump-seal', version: 1, fields: [{ name: 'pump', kind: 'category' }], outcome: { kind: 'category', labels: ['ok', 'leak'] } });

async function broker(t: Test, config: Parameters<typeof startQisBroker>[0] = {}, dataDir?: string): Promise<TestBroker> {
  const b = await startQisBroker(config, dataDir);
  t.teardown(() => b.close());
  return b;
}

let nodes = 0;
async function node(t: Test, url: string, dataDir = join(dir, `node-${++nodes}`)): Promise<QisNode> {
  const n = await createNode({ url, dataDir, reconnect: { baseMs: 50, capMs: 500 } });
  t.teardown(() => n.close());
  return n;
}

/** Publishes a signed packet on a fresh connection: 'acked' (PUBACK) or 'refused' (the broker closed the connection). */
async function offer(url: string, key: NodeKey, template: Template, s: Record<string, unknown>, outcome: string): Promise<'acked' | 'refused'> {
  const p = createOutcomePacket({ key, template, situation: s, outcome, seq: Date.now(), ts: Date.now() });
  return offerRaw(url, p.topic, p.packet);
}

async function offerRaw(url: string, topic: string, payload: Uint8Array): Promise<'acked' | 'refused'> {
  const c = await mqtt.connectAsync(url, { clientId: `t-${randomBytes(4).toString('hex')}`, reconnectPeriod: 0, connectTimeout: 10_000 });
  try {
    return await new Promise<'acked' | 'refused'>((resolve) => {
      c.once('close', () => resolve('refused'));
      c.publishAsync(topic, Buffer.from(payload), { qos: 1, retain: true }).then(
        () => resolve('acked'),
        () => resolve('refused'),
      );
    });
  } finally {
    await c.endAsync(true).catch(() => undefined);
  }
}

async function refused(b: TestBroker, code: string): Promise<number> {
  const m = new RegExp(`^qis_refused_total\\{code="${code}"\\} (\\S+)$`, 'm').exec(await b.broker.metricsText());
  return m?.[1] === undefined ? 0 : Number(m[1]);
}

async function rejects(t: Test, p: Promise<unknown>, code: string, what: string): Promise<QisError> {
  try {
    await p;
  } catch (e) {
    t.equal((e as QisError).code, code, `${what}: ${(e as Error).message}`);
    return e as QisError;
  }
  t.fail(`${what}: expected ${code}, it succeeded`);
  return new QisError('ERR_INTERNAL', 'no error');
}

t.test('registry API - publish, list and show with curator, fields and publisher counts', async (t) => {
  const b = await broker(t);
  const published = await publishTemplate(curatorA, bearing, { url: b.url });
  t.equal(published.tplId, bearing.tplId);
  t.equal(published.topic, `qis/1/t/${bearing.tplId}`);
  await publishTemplate(curatorB, pump, { url: b.url });

  // Three nodes under bearing (one of them moves bucket: still one node), one under pump.
  const [n1, n2, n3, n4] = await Promise.all([node(t, b.url), node(t, b.url), node(t, b.url), node(t, b.url)]);
  t.ok((await n1.publish(bearing, situation, 'failure')).acked);
  t.ok((await n2.publish(bearing, situation, 'no_failure')).acked);
  t.ok((await n3.publish(bearing, { ...situation, load_kn: 5 }, 'failure')).acked);
  t.ok((await n3.publish(bearing, situation, 'failure')).acked, 'n3 moved bucket');
  t.ok((await n4.publish(pump, { pump: 'P-7' }, 'ok')).acked);
  // A node that withdrew no longer counts.
  const n5 = await node(t, b.url);
  t.ok((await n5.publish(bearing, situation, 'failure')).acked);
  t.ok((await n5.withdraw(bearing))?.acked, 'n5 withdrew');

  const list = await listTemplates({ url: b.url });
  t.equal(list.broker, 'qis');
  t.equal(list.completeness, 'sync');
  t.same(list.dropped, {});
  t.same(
    list.templates.map((e) => [e.tplId, e.template.doc.name, e.curator, e.publishers]),
    [
      [bearing.tplId, 'bearing-failure', curatorA.nodeId, 3],
      [pump.tplId, 'pump-seal', curatorB.nodeId, 1],
    ],
  );

  const one = await fetchTemplate(bearing.tplId, { url: b.url });
  t.equal(one.template.canonicalJson, bearing.canonicalJson, 'the verified document is the template');
  t.equal(one.curator, curatorA.nodeId);
  t.equal(toHex(one.curatorKey), toHex(curatorA.publicKey));
  t.equal(one.publishers, 3);
  await rejects(t, fetchTemplate('a'.repeat(26), { url: b.url }), 'ERR_TEMPLATE_NOT_FOUND', 'unknown id');
  await rejects(t, fetchTemplate('not-an-id', { url: b.url }), 'ERR_INVALID_ARGUMENT', 'malformed id');
});

t.test('registry CLI - template publish, list and show (--json and human)', async (t) => {
  const b = await broker(t);
  const keyFile = join(dir, 'curator-cli.json');
  await saveKeyFile(keyFile, curatorA);
  const pub = await qis(['template', 'publish', '--url', b.url, '--key', keyFile, '--template', 'examples/bearing-failure.yaml', '--json']);
  t.equal(pub.status, 0, pub.stderr);
  t.same(JSON.parse(pub.stdout), { ok: true, tplId: bearing.tplId, topic: `qis/1/t/${bearing.tplId}`, curator: curatorA.nodeId, name: 'bearing-failure', version: 1, bytes: signTemplate(curatorA, bearing).length });
  const n = await node(t, b.url);
  t.ok((await n.publish(bearing, situation, 'failure')).acked);

  const list = await qis(['template', 'list', '--url', b.url, '--json']);
  t.equal(list.status, 0, list.stderr);
  const lj = JSON.parse(list.stdout) as { templates: { tplId: string; curator: string; publishers: number; fields: unknown }[] };
  t.equal(lj.templates.length, 1);
  t.match(lj.templates[0], { tplId: bearing.tplId, name: 'bearing-failure', version: 1, curator: curatorA.nodeId, publishers: 1, fields: bearingDoc.fields });

  const show = await qis(['template', 'show', bearing.tplId, '--url', b.url]);
  t.equal(show.status, 0, show.stderr);
  t.match(show.stdout, `curator    ${curatorA.nodeId}`);
  t.match(show.stdout, /3\. load_kn: number bins \[0, 10, 50, 200\]/);
  t.match(show.stdout, /publishers 1 node/);

  const missing = await qis(['template', 'show', 'a'.repeat(26), '--url', b.url, '--json']);
  t.equal(missing.status, 1);
  t.equal((JSON.parse(missing.stdout) as { code: string }).code, 'ERR_TEMPLATE_NOT_FOUND');
  const noId = await qis(['template', 'show', '--url', b.url]);
  t.equal(noId.status, 2, 'a missing ID is a usage error');
  t.match(noId.stderr, /ID is required/);
  // A closed registry that does not list this curator: exit 1 with the code.
  const closed = await broker(t, { admission: { registry: 'closed', curators: [curatorB.nodeId] } });
  const refusedRun = await qis(['template', 'publish', '--url', closed.url, '--key', keyFile, '--template', 'examples/bearing-failure.yaml', '--json']);
  t.equal(refusedRun.status, 1);
  t.equal((JSON.parse(refusedRun.stdout) as { code: string }).code, 'ERR_TEMPLATE_REFUSED');
  const noKey = await qis(['template', 'publish', '--url', b.url, '--key', join(dir, 'missing.json'), '--template', 'examples/bearing-failure.yaml']);
  t.equal(noKey.status, 1);
  t.match(noKey.stderr, /^qis: ERR_FILE_IO: /);
  const help = await qis(['template', 'show', '--help']);
  t.equal(help.status, 0);
  t.match(help.stdout, /Arguments:\n {2}ID/);
});

t.test('hash mismatch - the qis broker refuses a document under another id; a fetch from a broker that kept one refuses it too', async (t) => {
  const b = await broker(t);
  // Signed correctly for the topic of pump's id, but the payload is the bearing template.
  // (It is not even signed for that topic: the signature binds the document to its id.)
  const forged = signTemplate(curatorA, bearing);
  t.equal(await offerRaw(b.url, templateTopic(pump.tplId), forged), 'refused', 'the broker closes the connection');
  t.equal(await refused(b, 'ERR_BAD_SIGNATURE'), 1, 'signed for another topic: ERR_BAD_SIGNATURE');
  // Signed for the topic, but the payload hashes to another id.
  const prot = encodeCbor(new Map([[1, -19]]));
  const pay = utf8Bytes(bearing.canonicalJson);
  const mismatched = encodeCbor(new CborTag(18, [prot, new Map([[4, curatorA.publicKey]]), pay, signEd25519(curatorA, sigStructure(prot, templateTopic(pump.tplId), pay))]));
  t.equal(await offerRaw(b.url, templateTopic(pump.tplId), mismatched), 'refused');
  t.equal(await refused(b, 'ERR_TEMPLATE_HASH'), 1, 'qis_refused_total{code="ERR_TEMPLATE_HASH"} counts it');
  t.same((await listTemplates({ url: b.url })).templates, [], 'nothing was registered');

  // Plain Aedes keeps anything: the reader verifies.
  const aedes = await startAedes();
  t.teardown(() => aedes.close());
  t.equal(await offerRaw(aedes.url, templateTopic(pump.tplId), mismatched), 'acked');
  await rejects(t, fetchTemplate(pump.tplId, { url: aedes.url, quietMs: 300 }), 'ERR_TEMPLATE_HASH', 'fetchTemplate');
  const n = await node(t, aedes.url);
  await rejects(t, n.template(pump.tplId), 'ERR_TEMPLATE_HASH', 'node.template');
  const l = await listTemplates({ url: aedes.url, quietMs: 300 });
  t.equal(l.completeness, 'quiet-period');
  t.same(l.templates, []);
  t.same(l.dropped, { ERR_TEMPLATE_HASH: 1 });
});

t.test('curator-closed registry - admits templates signed by listed curators, then their outcomes', async (t) => {
  // One curator listed by node id, one by public key hex.
  const curatorC = fixedKey(43);
  const b = await broker(t, { admission: { registry: 'closed', curators: [curatorA.nodeId, toHex(curatorC.publicKey)] } });
  const worker = fixedKey(50);
  t.equal(await offer(b.url, worker, bearing, situation, 'failure'), 'refused', 'outcome before its template is registered');
  t.equal(await refused(b, 'ERR_TEMPLATE_UNKNOWN'), 1);

  await publishTemplate(curatorA, bearing, { url: b.url });
  t.equal(await offer(b.url, worker, bearing, situation, 'failure'), 'acked', 'outcome under a listed curator’s template');

  await rejects(t, publishTemplate(curatorB, pump, { url: b.url }), 'ERR_TEMPLATE_REFUSED', 'unlisted curator');
  t.equal(await refused(b, 'ERR_TEMPLATE_UNKNOWN'), 2, 'the broker names ERR_TEMPLATE_UNKNOWN');
  t.equal(await offer(b.url, worker, pump, { pump: 'P-7' }, 'ok'), 'refused', 'outcome under the unregistered template');
  t.equal(await refused(b, 'ERR_TEMPLATE_UNKNOWN'), 3);

  await publishTemplate(curatorC, pump, { url: b.url });
  t.equal(await offer(b.url, worker, pump, { pump: 'P-7' }, 'ok'), 'acked', 'a curator listed by public key');
  t.same(
    (await listTemplates({ url: b.url })).templates.map((e) => [e.template.doc.name, e.curator, e.publishers]),
    [
      ['bearing-failure', curatorA.nodeId, 1],
      ['pump-seal', curatorC.nodeId, 1],
    ],
  );

  // The registration survives a restart (the document is kept in the data directory).
  await b.close(true);
  const again = await broker(t, { admission: { registry: 'closed', curators: [curatorA.nodeId] } }, b.dataDir);
  t.equal(await offer(again.url, fixedKey(51), bearing, situation, 'failure'), 'acked', 'after a restart');
  t.equal(await offer(again.url, fixedKey(51), pump, { pump: 'P-7' }, 'ok'), 'refused', 'a curator no longer listed: its template is no longer registered');
});

t.test('id-closed registry - only the listed template ids, whoever signs them', async (t) => {
  const b = await broker(t, { admission: { registry: 'closed', templates: [bearing.tplId] } });
  await publishTemplate(curatorB, bearing, { url: b.url });
  await rejects(t, publishTemplate(curatorA, pump, { url: b.url }), 'ERR_TEMPLATE_REFUSED', 'unlisted id');
  t.equal(await offer(b.url, fixedKey(52), bearing, situation, 'failure'), 'acked');
  t.equal(await offer(b.url, fixedKey(52), pump, { pump: 'P-7' }, 'ok'), 'refused');
  t.same((await listTemplates({ url: b.url })).templates.map((e) => e.tplId), [bearing.tplId]);
});

t.test('node by template id - fetched from the registry, verified, cached in the data dir', async (t) => {
  const b = await broker(t);
  await publishTemplate(curatorA, bearing, { url: b.url });
  const dataDir = join(dir, 'by-id');
  const n = await node(t, b.url, dataDir);
  const tpl = await n.template(bearing.tplId);
  t.equal(tpl.tplId, bearing.tplId);
  t.ok(existsSync(join(dataDir, 'templates', `${bearing.tplId}.cose`)), 'cached');
  const r = await n.publish(bearing.tplId, situation, 'failure');
  t.ok(r.acked, 'publish by id');
  const q = await n.query(bearing.tplId, situation, { minCohort: 1 });
  t.equal(q.packets.length, 1, 'query by id');
  await rejects(t, n.template('a'.repeat(26)), 'ERR_TEMPLATE_NOT_FOUND', 'unknown id');
  await rejects(t, n.publish('a'.repeat(26), situation, 'failure'), 'ERR_TEMPLATE_NOT_FOUND', 'publish under an unknown id');
  await n.close();

  // The broker is gone: the cache answers.
  await b.close();
  const offline = await createNode({ url: b.url, dataDir, reconnect: { baseMs: 50, capMs: 500 } });
  t.teardown(() => offline.close());
  t.equal((await offline.template(bearing.tplId, { timeoutMs: 2000 })).canonicalJson, bearing.canonicalJson, 'from the cache, without a broker');
  // A tampered cache file is not believed (and there is no broker to fetch again from).
  writeFileSync(join(dataDir, 'templates', `${bearing.tplId}.cose`), readFileSync(join(dataDir, 'templates', `${bearing.tplId}.cose`)).subarray(0, 20));
  await offline.close();
  const again = await createNode({ url: b.url, dataDir, reconnect: { baseMs: 50, capMs: 500 } });
  t.teardown(() => again.close());
  await rejects(t, again.template(bearing.tplId, { timeoutMs: 1500 }), 'ERR_TIMEOUT', 'damaged cache, no broker');
});

t.test('node CLI - --template ID publishes and queries through the registry', async (t) => {
  const b = await broker(t);
  await publishTemplate(curatorA, bearing, { url: b.url });
  const d = join(dir, 'cli-node');
  const pub = await qis(['publish', '--url', b.url, '--data-dir', d, '--template', bearing.tplId, '--situation', JSON.stringify(situation), '--outcome', 'failure', '--json']);
  t.equal(pub.status, 0, pub.stderr);
  t.equal((JSON.parse(pub.stdout) as { acked: boolean }).acked, true);
  t.ok(existsSync(join(d, 'templates', `${bearing.tplId}.cose`)), 'cached in --data-dir');
  const q = await qis(['query', '--url', b.url, '--template', bearing.tplId, '--situation', JSON.stringify(situation), '--min-cohort', '1', '--json']);
  t.equal(q.status, 0, q.stderr);
  t.match(JSON.parse(q.stdout), { tplId: bearing.tplId, cohort: 1 });
  const nf = await qis(['query', '--url', b.url, '--template', 'a'.repeat(26), '--situation', JSON.stringify(situation), '--json']);
  t.equal(nf.status, 1);
  t.equal((JSON.parse(nf.stdout) as { code: string }).code, 'ERR_TEMPLATE_NOT_FOUND');
});

t.test('superseded cohorts - included with per-version counts; a changed routed field prevents inclusion', async (t) => {
  const b = await broker(t);
  const v2 = compileTemplate({ ...bearingDoc, version: 2, supersedes: bearing.tplId } as TemplateDoc);
  const v3 = compileTemplate({ ...bearingDoc, version: 3, supersedes: v2.tplId } as TemplateDoc);
  // v2b changes the bins of load_kn: the old cohort's addresses mean something else.
  const v2b = compileTemplate({
    ...bearingDoc,
    version: 2,
    fields: bearingDoc.fields.map((f) => (f.name === 'load_kn' ? { ...f, bins: [0, 25, 100] } : f)),
    supersedes: bearing.tplId,
  } as TemplateDoc);
  for (const tpl of [bearing, v2, v3, v2b]) await publishTemplate(curatorA, tpl, { url: b.url });

  const ns = await Promise.all([0, 1, 2, 3, 4, 5].map(() => node(t, b.url)));
  // v1: nodes 0,1,2,3; v2: nodes 3,4 (node 3 under both: counted once, under v2); v3: node 5.
  for (const i of [0, 1, 2, 3]) t.ok((await ns[i]!.publish(bearing, situation, i === 0 ? 'no_failure' : 'failure')).acked);
  for (const i of [3, 4]) t.ok((await ns[i]!.publish(v2, situation, 'failure')).acked);
  t.ok((await ns[5]!.publish(v3, situation, 'no_failure')).acked);
  t.ok((await ns[0]!.publish(v2b, situation, 'failure')).acked);

  const q = await ns[5]!.query(v3, situation, { includeSuperseded: true, minCohort: 1 });
  t.same(q.versions, [
    { tplId: v3.tplId, name: 'bearing-failure', version: 3, packets: 1 },
    { tplId: v2.tplId, name: 'bearing-failure', version: 2, packets: 2 },
    { tplId: bearing.tplId, name: 'bearing-failure', version: 1, packets: 3 },
  ]);
  t.same(q.notIncluded, []);
  t.equal(q.packets.length, 6, 'one packet per node across the versions');
  t.match(q.synthesis, { kind: 'category', count: 6 });
  // The prediction remembered is the merged answer the caller got (4 failure, 2 no_failure), not
  // one version's: failure comes true, a hit with Brier 2 × (1/3)² = 2/9. v3 alone (one no_failure)
  // would be a miss with Brier 2; and nothing is remembered under the older versions' ids.
  const scored = await ns[5]!.report(v3, situation, 'failure');
  t.equal(scored.score.hit, true, 'the merged prediction is scored');
  t.ok(Math.abs((scored.score.brier ?? NaN) - 2 / 9) < 1e-9, `Brier 2/9 (got ${scored.score.brier})`);
  await t.rejects(ns[5]!.report(bearing, situation, 'failure'), { code: 'ERR_NO_PREDICTION' }, 'no prediction kept under v1');
  const plain = await ns[5]!.query(v3, situation, { minCohort: 1 });
  t.equal(plain.packets.length, 1, 'without includeSuperseded only v3 answers');
  t.equal(plain.versions, undefined);

  const changed = await ns[5]!.query(v2b, situation, { includeSuperseded: true, minCohort: 1 });
  t.same(changed.versions, [{ tplId: v2b.tplId, name: 'bearing-failure', version: 2, packets: 1 }]);
  t.equal(changed.notIncluded?.length, 1);
  t.equal(changed.notIncluded?.[0]?.tplId, bearing.tplId);
  t.match(changed.notIncluded?.[0]?.reason, /routed field 3 changed/);

  const cli = await qis(['query', '--url', b.url, '--template', v3.tplId, '--situation', JSON.stringify(situation), '--include-superseded', '--min-cohort', '1', '--json']);
  t.equal(cli.status, 0, cli.stderr);
  const cj = JSON.parse(cli.stdout) as { cohort: number; versions: { tplId: string; packets: number }[] };
  t.equal(cj.cohort, 6);
  t.same(cj.versions.map((v) => [v.tplId, v.packets]), [[v3.tplId, 1], [v2.tplId, 2], [bearing.tplId, 3]]);
  const human = await qis(['query', '--url', b.url, '--template', v3.tplId, '--situation', JSON.stringify(situation), '--include-superseded', '--min-cohort', '1']);
  t.match(human.stdout, `bearing-failure v2 (${v2.tplId}): 2`);
});

// ------------------------------------------------------------------------------ pure parts

t.test('sameRouting - same routed field specs in the same order and the same outcome, nothing else', async (t) => {
  const base = bearingDoc as TemplateDoc;
  const v = (over: Record<string, unknown>): Template => compileTemplate({ ...base, version: 2, ...over } as TemplateDoc);
  t.same(sameRouting(v({ supersedes: bearing.tplId }), bearing), { ok: true }, 'version and supersedes differ: same routing');
  t.same(sameRouting(v({ context: ['rpm'], name: 'renamed' }), bearing), { ok: true }, 'context and name may change');
  const swapped = v({ fields: [base.fields[1], base.fields[0], base.fields[2], base.fields[3]] });
  t.match(sameRouting(swapped, bearing), { ok: false, reason: /routed field 1 changed/ }, 'order matters');
  const moreValues = v({ fields: base.fields.map((f) => (f.name === 'bearing_type' ? { ...f, values: ['ball', 'roller', 'plain', 'needle'] } : f)) });
  t.match(sameRouting(moreValues, bearing), { ok: false, reason: /routed field 2 changed/ }, 'a closed set changed');
  const fewer = v({ fields: base.fields.slice(0, 3) });
  t.match(sameRouting(fewer, bearing), { ok: false, reason: /routes on 4 fields, the newer template on 3/ });
  const outcome = v({ outcome: { kind: 'category', labels: ['no_failure', 'failure', 'unknown'] } });
  t.match(sameRouting(outcome, bearing), { ok: false, reason: /outcome spec changed/ });
  t.equal(supersedesOf(v({ supersedes: bearing.tplId })), bearing.tplId);
  t.equal(supersedesOf(v({ supersedes: 'not-an-id' })), undefined, 'a malformed supersedes is ignored');
  t.equal(supersedesOf(bearing), undefined);
});

t.test('verifyTemplateDoc - signature bound to the id, payload hashing to it, canonical and valid', async (t) => {
  const doc = signTemplate(curatorA, bearing);
  const v = verifyTemplateDoc(bearing.tplId, doc);
  t.equal(v.curator, curatorA.nodeId);
  t.equal(v.template.tplId, bearing.tplId);
  const code = (f: () => unknown): string | undefined => {
    try {
      f();
    } catch (e) {
      return (e as QisError).code;
    }
    return undefined;
  };
  t.equal(code(() => verifyTemplateDoc(pump.tplId, doc)), 'ERR_BAD_SIGNATURE', 'signed for another id');
  const tampered = Uint8Array.from(doc);
  tampered[tampered.length - 1]! ^= 1;
  t.equal(code(() => verifyTemplateDoc(bearing.tplId, tampered)), 'ERR_BAD_SIGNATURE', 'a flipped signature bit');
  t.equal(code(() => verifyTemplateDoc(bearing.tplId, new Uint8Array())), 'ERR_PACKET_EMPTY');
  t.equal(code(() => verifyTemplateDoc(bearing.tplId, Uint8Array.of(0xff))), 'ERR_CBOR_MALFORMED');
  // Signed for its own topic and hashing to its id, but not canonical JSON (whitespace): refused.
  const loose = utf8Bytes(JSON.stringify(JSON.parse(bearing.canonicalJson), null, 1));
  const looseId = b32(sha256(loose).subarray(0, 16));
  const prot = encodeCbor(new Map([[1, -19]]));
  const looseDoc = encodeCbor(new CborTag(18, [prot, new Map([[4, curatorA.publicKey]]), loose, signEd25519(curatorA, sigStructure(prot, templateTopic(looseId), loose))]));
  t.equal(code(() => verifyTemplateDoc(looseId, looseDoc)), 'ERR_TEMPLATE_HASH', 'not the canonical JSON of the template');
  // Canonical JSON of something that is not a valid template.
  const junk = utf8Bytes('{"name":"x"}');
  const junkId = b32(sha256(junk).subarray(0, 16));
  const junkDoc = encodeCbor(new CborTag(18, [prot, new Map([[4, curatorA.publicKey]]), junk, signEd25519(curatorA, sigStructure(prot, templateTopic(junkId), junk))]));
  t.equal(code(() => verifyTemplateDoc(junkId, junkDoc)), 'ERR_TEMPLATE_HASH', 'not a valid template');
});

t.test('checkTemplateDoc - closed registries by id and by curator (node id or public key hex)', async (t) => {
  const doc = signTemplate(curatorA, bearing);
  const topic = templateTopic(bearing.tplId);
  t.match(checkTemplateDoc(topic, doc, { registry: 'open', templates: [] }), { ok: true, curator: curatorA.nodeId, depth: 4 });
  t.match(checkTemplateDoc(topic, doc, { registry: 'closed', templates: [] }), { ok: false, code: 'ERR_TEMPLATE_UNKNOWN' });
  t.match(checkTemplateDoc(topic, doc, { registry: 'closed', templates: [bearing.tplId] }), { ok: true });
  t.match(checkTemplateDoc(topic, doc, { registry: 'closed', templates: [], curators: [curatorA.nodeId] }), { ok: true });
  t.match(checkTemplateDoc(topic, doc, { registry: 'closed', templates: [], curators: [toHex(curatorA.publicKey)] }), { ok: true });
  t.match(checkTemplateDoc(topic, doc, { registry: 'closed', templates: [], curators: [curatorB.nodeId] }), { ok: false, code: 'ERR_TEMPLATE_UNKNOWN', message: /curator .* is not a listed curator/ });
  // A listed curator's signature over another id is still a bad signature.
  t.match(checkTemplateDoc(templateTopic(pump.tplId), doc, { registry: 'closed', templates: [], curators: [curatorA.nodeId] }), { ok: false, code: 'ERR_BAD_SIGNATURE' });
  t.match(checkTemplateDoc('qis/1/t/short', doc, { registry: 'open', templates: [] }), { ok: false, code: 'ERR_TOPIC_INVALID' });
  // Outcome prechecks: a closed registry admits listed ids and registered templates.
  const p = createOutcomePacket({ key: fixedKey(60), template: bearing, situation, outcome: 'failure', seq: 1, ts: 1 });
  t.match(precheckOutcome(p.topic, p.packet.length, { registry: 'closed', templates: [] }, () => undefined), { action: 'refuse', code: 'ERR_TEMPLATE_UNKNOWN' });
  t.match(precheckOutcome(p.topic, p.packet.length, { registry: 'closed', templates: [] }, () => 4), { tplId: bearing.tplId, depth: 4 }, 'registered');
});

t.test('broker config - admission.curators and --admission.curator, validated with the key named', async (t) => {
  const o = resolveBrokerOptions(parseBrokerConfig(`admission: {registry: closed, curators: [${curatorA.nodeId}, ${toHex(curatorB.publicKey).toUpperCase()}]}`, 'c.yaml'));
  t.same(o.admission.curators, [curatorA.nodeId, toHex(curatorB.publicKey)], 'public keys are kept in lowercase');
  t.same(resolveBrokerOptions({}).admission.curators, [], 'default: none');
  const bad = (text: string): string => {
    try {
      resolveBrokerOptions(parseBrokerConfig(text, 'bad.yaml'));
    } catch (e) {
      t.equal((e as QisError).code, 'ERR_CONFIG_INVALID');
      return (e as Error).message;
    }
    return 'accepted';
  };
  t.match(bad('admission: {curators: [abc]}'), /^bad\.yaml: admission\.curators\[0\]: expected a curator key: a node id \(26 lowercase base32 characters\) or an Ed25519 public key \(64 hex characters\), got "abc"$/);
  t.match(bad('admission: {curators: abc}'), /admission\.curators: expected a list of curator keys, got "abc"/);
  t.match(bad(`admission: {curators: [${curatorA.nodeId.toUpperCase()}]}`), /admission\.curators\[0\]: expected a curator key/);
  const flags = resolveBrokerOptions(configFromFlags(['--admission.registry', 'closed', '--admission.curator', curatorA.nodeId, '--admission.curator', curatorB.nodeId]));
  t.same(flags.admission.curators, [curatorA.nodeId, curatorB.nodeId]);
  try {
    resolveBrokerOptions(configFromFlags(['--admission.curator', 'nope']));
    t.fail('accepted');
  } catch (e) {
    t.match((e as Error).message, /^--admission\.curator nope \(admission\.curators\[0\]\): expected a curator key/);
  }
});

t.test('registry on a closed port - says ERR_CONNECTION_REFUSED at once, like the node runtime, not a timeout', async (t) => {
  const port = await freePort(); // chosen by the OS, then released: nothing listens there
  const err = await listTemplates({ url: `mqtt://127.0.0.1:${port}`, timeoutMs: 8_000 }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof QisError, 'a QisError');
  t.equal((err as QisError).code, 'ERR_CONNECTION_REFUSED');
  t.match((err as QisError).message, /connection refused by 127\.0\.0\.1:\d+/);
});
