import t from 'tap';
import { readFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import {
  ERROR_CODES,
  QisError,
  isQisError,
  address,
  cohortFilter,
  compileTemplate,
  createOutcomePacket,
  decodeCbor,
  encodeCbor,
  encodePayload,
  generateKey,
  loadKeyFile,
  outcomeTopic,
  parseTemplate,
  saveKeyFile,
  signPacket,
  verifyPacket,
  CborTag,
  sigStructure,
  signEd25519,
  utf8Bytes,
  type CborValue,
  type ErrorCode,
} from '../src/index.js';
import { jsonFlag, numberFlag, reportError } from '../cli/run.js';
import { parseBrokerConfig, resolveBrokerOptions } from '../broker/config.js';
import { startBroker } from '../cli/broker-command.js';
import { outboxCommands } from '../cli/outbox-commands.js';
import { createServer, type AddressInfo } from 'node:net';
import { bearing, bearingDoc, situation, fixedKey } from './helpers/fixtures.js';
import { startAedes } from './helpers/aedes.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { RateLimiter, checkConnect, checkRate, checkSync, checkTemplateDoc, decide, isDecision, precheckOutcome, type Decision } from '../broker/admission.js';
import { freePort } from './helpers/mosquitto.js';
import { BROKER_DEFAULTS } from '../broker/options.js';
import { ConnectionGate, RetainedBudget, capKeepalive, checkPacketSize, checkSubscriptionCount, checkTopicName, connectTimedOut } from '../broker/server/limits.js';
import { createNode, fetchTemplate, publishTemplate, type NodeOptions, type QisNode } from '../src/index.js';
import { ModbusTcpClient, decodeSparkplugPayload, parseReadResponse } from '../firmware-bridge/index.js';
import { checkEnrolment, createEnrolment, decodeEnrolment, publishRevocation, signRevocation, verifyLogin, verifyRevocation } from '../src/index.js';
import { parsePasswd } from '../broker/passwd.js';
import { coldFloorRefusal } from '../broker/server/outcomes.js';
import { regionConflict } from '../broker/server/link-peers.js';
import { createVerifier } from '../broker/verifier.js';
import { hugePublish, junk, startHostileBroker, writeAll } from './helpers/hostile-broker.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-err-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const key = fixedKey(3);
const addr = address(bearing, situation);
const topic = outcomeTopic(addr, key.nodeId);
const good = signPacket(key, topic, { fp: addr.fp, seq: 1, ts: 1000, out: 'failure', exp: 10, conf: 0.5 });

/** A correctly signed envelope around a crafted payload, for the payload-level codes. */
function signedPayload(payload: Map<CborValue, CborValue>): Uint8Array {
  const prot = encodeCbor(new Map([[1, -19]]));
  const pay = encodeCbor(payload);
  const sig = signEd25519(key, sigStructure(prot, utf8Bytes(topic), pay));
  return encodeCbor(new CborTag(18, [prot, new Map([[4, key.publicKey]]), pay, sig]));
}

/** A node in a fresh data dir, closed after `fn`; unreachable broker unless `url` is given. */
async function withNode(fn: (n: QisNode) => Promise<unknown>, o: Partial<NodeOptions> = {}): Promise<unknown> {
  const n = await createNode({ url: `mqtt://127.0.0.1:${await freePort()}`, dataDir: mkdtempSync(join(dir, 'n-')), reconnect: { baseMs: 20, capMs: 100 }, ...o });
  try {
    return await fn(n);
  } finally {
    await n.close();
  }
}

/** The first `refused` status event of a node, thrown as the QisError it carries. */
async function firstRefusal(n: QisNode): Promise<never> {
  for await (const s of n.status()) if (s.type === 'refused') throw new QisError(s.code, s.message);
  throw new Error('status ended without a refusal');
}

/** A broker decision that refuses or drops, thrown as the QisError it names. */
function throwDecision(d: Decision): never {
  if (d.action === 'refuse' || d.action === 'drop') throw new QisError(d.code, d.message);
  throw new Error(`expected a refusal, got ${d.action}`);
}

/** One way to produce each code. The Record type makes the compiler demand an entry per code. */
const triggers: Record<ErrorCode, () => unknown> = {
  ERR_INVALID_ARGUMENT: () => cohortFilter(addr, 9),
  ERR_CLI_USAGE: () => numberFlag('n', 'many', true),
  ERR_INVALID_JSON: () => jsonFlag('situation', '{'),
  ERR_FILE_IO: () => loadKeyFile(join(dir, 'none.key')),
  ERR_KEY_EXISTS: async () => {
    const f = join(dir, 'k.key');
    await saveKeyFile(f, generateKey());
    await saveKeyFile(f, generateKey());
  },
  ERR_KEY_FILE_INVALID: () => {
    writeFileSync(join(dir, 'bad.key'), '[]', { mode: 0o600 });
    return loadKeyFile(join(dir, 'bad.key'));
  },
  ERR_KEY_PERMISSIONS: () => {
    writeFileSync(join(dir, 'open.key'), '{}', { mode: 0o644 });
    return loadKeyFile(join(dir, 'open.key'));
  },
  ERR_KEY_MISMATCH: () => {
    const k = generateKey();
    writeFileSync(join(dir, 'mm.key'), JSON.stringify({ secretKey: Buffer.from(k.secretKey).toString('hex'), publicKey: Buffer.from(generateKey().publicKey).toString('hex'), nodeId: k.nodeId }), { mode: 0o600 });
    return loadKeyFile(join(dir, 'mm.key'));
  },
  ERR_TEMPLATE_PARSE: () => parseTemplate('a: [1'),
  ERR_TEMPLATE_INVALID: () => compileTemplate({ ...bearingDoc, fields: [] }),
  ERR_FIELD_MISSING: () => address(bearing, {}),
  ERR_FIELD_VALUE: () => address(bearing, { ...situation, sealed: 'yes' }),
  ERR_OUTCOME_INVALID: () => createOutcomePacket({ key, template: bearing, situation, outcome: 'maybe', seq: 1, ts: 1 }),
  ERR_PACKET_FIELD: () => encodePayload({ fp: addr.fp, seq: 1, ts: 1, out: 'failure', conf: 2 }),
  ERR_PACKET_EMPTY: () => verifyPacket(topic, new Uint8Array(0)),
  ERR_PACKET_TOO_LARGE: () => verifyPacket(topic, new Uint8Array(513)),
  ERR_CBOR_MALFORMED: () => decodeCbor(Uint8Array.of(0x1c)),
  ERR_COSE_MALFORMED: () => verifyPacket(topic, encodeCbor([1])),
  ERR_UNSUPPORTED_ALG: () => verifyPacket(topic, encodeCbor(new CborTag(18, [encodeCbor(new Map([[1, -7]])), new Map(), new Uint8Array(0), new Uint8Array(0)]))),
  ERR_PAYLOAD_INVALID: () => verifyPacket(topic, signedPayload(new Map<CborValue, CborValue>([[1, 1], [2, addr.fp], [4, 1], [5, 'x']]))),
  ERR_UNSUPPORTED_VERSION: () => verifyPacket(topic, signedPayload(new Map<CborValue, CborValue>([[1, 2], [2, addr.fp], [3, 1], [4, 1], [5, 'x']]))),
  ERR_BAD_SIGNATURE: () => {
    const b = good.slice();
    b[b.length - 1]! ^= 1;
    return verifyPacket(topic, b, { now: 0 });
  },
  ERR_TOPIC_INVALID: () => verifyPacket('qis/1/o/nope', good),
  ERR_NODE_MISMATCH: () => verifyPacket(outcomeTopic(addr, generateKey().nodeId), good),
  ERR_FP_MISMATCH: () => verifyPacket(topic, good, { now: 0, expectFp: new Uint8Array(16) }),
  ERR_EXPIRED: () => verifyPacket(topic, good, { now: 11_000 }),
  ERR_TS_FUTURE: () => verifyPacket(topic, good, { now: 0, maxSkewMs: 500 }),
  ERR_URL_INVALID: () => createNode({ url: 'http://127.0.0.1/', dataDir: join(dir, 'url') }),
  ERR_CONNECT_REFUSED: async () => {
    const b = await startAedes();
    b.broker.authenticate = (_c, _u, _p, done) => done(null, false);
    try {
      return await withNode(firstRefusal, { url: b.url });
    } finally {
      await b.close();
    }
  },
  ERR_SUBSCRIBE_DENIED: async () => {
    const b = await startAedes();
    b.broker.authorizeSubscribe = (_c, sub, done) => done(null, sub.topic.startsWith('qis/1/o/') ? null : sub);
    try {
      return await withNode((n) => n.query(bearing, situation), { url: b.url });
    } finally {
      await b.close();
    }
  },
  ERR_TIMEOUT: () => withNode((n) => n.query(bearing, situation, { timeoutMs: 100 })),
  ERR_INCOMING_TOO_LARGE: async () => {
    const b = await startHostileBroker({ onSubscribe: (sock) => void writeAll(sock, hugePublish('qis/1/o/x', 1_000_000)) });
    try {
      return await withNode((n) => n.query(bearing, situation, { timeoutMs: 5_000 }), { url: b.url, brokerKind: 'qis' });
    } finally {
      await b.close();
    }
  },
  ERR_QUERY_TOO_LARGE: async () => {
    const b = await startHostileBroker({ onSubscribe: (sock) => void writeAll(sock, junk(100, (i) => `junk/${i}`)) });
    try {
      return await withNode((n) => n.query(bearing, situation, { timeoutMs: 5_000 }), { url: b.url, brokerKind: 'qis', maxQueryMessages: 10 });
    } finally {
      await b.close();
    }
  },
  ERR_ABORTED: () => withNode((n) => n.query(bearing, situation, { signal: AbortSignal.abort() })),
  ERR_CLOSED: async () => {
    let node: QisNode | undefined;
    await withNode(async (n) => (node = n));
    return node?.publish(bearing, situation, 'failure');
  },
  ERR_DATA_DIR_LOCKED: () => withNode((n) => createNode({ url: 'mqtt://127.0.0.1:1', dataDir: join(dir, 'locked') }).then((m) => m.close()), { dataDir: join(dir, 'locked') }),
  ERR_OUTBOX_ENTRY_INVALID: async () => {
    const d = join(dir, 'badbox');
    mkdirSync(join(d, 'outbox'), { recursive: true });
    writeFileSync(join(d, 'outbox', `000000000001-${bearing.tplId}-p-1.json`), '{not json');
    return withNode(firstRefusal, { dataDir: d });
  },
  ERR_CONFIG_INVALID: () => parseBrokerConfig('fsync: sometimes', 'x.yaml'),
  ERR_SEQ_STALE: () => throwDecision(decide({ ok: true, packet: { seq: 5, del: false } }, 5)),
  ERR_TEMPLATE_UNKNOWN: () => {
    const r = precheckOutcome(topic, good.length, { registry: 'closed', templates: [] }, () => undefined);
    if (isDecision(r)) throwDecision(r);
  },
  ERR_TEMPLATE_HASH: () => {
    // A curator signs a template document, but publishes it under another template's id.
    const other = compileTemplate({ ...bearingDoc, version: 99 });
    const t = `qis/1/t/${other.tplId}`;
    const prot = encodeCbor(new Map([[1, -19]]));
    const pay = utf8Bytes(bearing.canonicalJson);
    const doc = encodeCbor(new CborTag(18, [prot, new Map([[4, key.publicKey]]), pay, signEd25519(key, sigStructure(prot, utf8Bytes(t), pay))]));
    const r = checkTemplateDoc(t, doc, { registry: 'open', templates: [] });
    if (!r.ok) throw new QisError(r.code, r.message);
  },
  ERR_RATE_LIMITED: () => {
    const limiter = new RateLimiter(1, 1);
    checkRate(limiter, 'c', 0);
    throwDecision(checkRate(limiter, 'c', 0));
  },
  ERR_NOT_AUTHORIZED: () => throwDecision(checkSync('qis/1/sync/someone-else/1', 'me', false)),
  ERR_CLIENT_ID: () => throwDecision(checkConnect('', false)),
  ERR_DELIVERY_REFUSED: async () => {
    // A broker with a closed registry refuses every packet of this template by disconnecting.
    const b = await startQisBroker({ admission: { registry: 'closed', templates: [] } });
    try {
      return await withNode(
        async (n) => {
          const refusal = firstRefusal(n);
          await n.publish(bearing, situation, 'failure', { ackTimeoutMs: 0 });
          return await refusal;
        },
        { url: b.url },
      );
    } finally {
      await b.close();
    }
  },
  // issue 6: firmware-bridge (test/bridge-modbus.test.ts and test/bridge-sparkplug.test.ts produce them end to end)
  ERR_DEVICE_UNREACHABLE: async () => ModbusTcpClient.connect('127.0.0.1', await freePort(), 5000),
  ERR_MODBUS_EXCEPTION: () => parseReadResponse(Buffer.from([0x83, 0x02]), 3, 1),
  ERR_SPARKPLUG_PAYLOAD: () => decodeSparkplugPayload(Uint8Array.of(0x12, 0x7f)),
  ERR_INTERNAL: () => {
    const out = new PassThrough();
    const status = reportError(new TypeError('boom'), true, { stdin: new PassThrough(), stdout: out, stderr: new PassThrough() });
    const line = JSON.parse(String(out.read())) as { code: ErrorCode; message: string };
    throw new QisError(line.code, `${line.message} (exit ${status})`);
  },
  // issue 7 section 1 (more in test/registry.test.ts)
  ERR_TEMPLATE_NOT_FOUND: async () => {
    const b = await startQisBroker();
    try {
      return await fetchTemplate(bearing.tplId, { url: b.url });
    } finally {
      await b.close();
    }
  },
  ERR_TEMPLATE_REFUSED: async () => {
    // A closed registry that lists neither the id nor the curator.
    const b = await startQisBroker({ admission: { registry: 'closed', templates: [] } });
    try {
      return await publishTemplate(key, bearing, { url: b.url });
    } finally {
      await b.close();
    }
  },
  // issue 7 §3: report() with no prediction to score (offline node: no broker is needed to refuse).
  ERR_NO_PREDICTION: () => withNode((n) => n.report(bearing, situation, 'failure', { ackTimeoutMs: 0 })),
  // issue 14 (every reason in test/enrolment.test.ts)
  ERR_ENROLMENT_INVALID: () => decodeEnrolment(good),
  ERR_NOT_ENROLLED: () => {
    const r = checkEnrolment(createEnrolment(fixedKey(4), { node: key.publicKey, exp: 1 }), key.publicKey, { now: 10_000_000 });
    if (!r.ok) throw new QisError(r.code, r.message);
  },
  ERR_REVOCATION_INVALID: () => verifyRevocation(`qis/1/r/${key.nodeId}/extra`, good),
  ERR_REVOCATION_REFUSED: async () => {
    // A broker in enrolment mode that does not trust this operator.
    const b = await startQisBroker({ admission: { enrolment: 'required', operators: [fixedKey(9).nodeId] } });
    try {
      return await publishRevocation(signRevocation(key, { seq: 1, ts: Date.now(), revoked: [] }), { url: b.url });
    } finally {
      await b.close();
    }
  },
  ERR_LOGIN_REFUSED: () => {
    const r = verifyLogin({ username: key.nodeId, password: good, clientId: 'c' }, { now: 0 });
    if (!r.ok) throw new QisError(r.code, r.message);
  },
  ERR_PASSWORD_FILE_INVALID: () => parsePasswd('alice:md5$x'),
  ERR_REGION_CONFLICT: () => {
    const why = regionConflict({ own: 'east', clientId: 'qis-fed-east-0', user: undefined });
    if (why !== undefined) throw new QisError('ERR_REGION_CONFLICT', why);
  },
  // issue 16 §7: a broker started on a port another process listens on.
  ERR_ADDRESS_IN_USE: async () => {
    const held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
    const port = (held.address() as AddressInfo).port;
    try {
      const b = await startBroker(resolveBrokerOptions({}, { dataDir: join(dir, 'in-use'), listeners: [{ type: 'tcp', host: '127.0.0.1', port }] }));
      await b.close();
    } finally {
      held.close();
    }
  },
  // issue 16 §2–3: withdraw with nothing published; network failures said at once.
  ERR_NOTHING_TO_WITHDRAW: async () => {
    const b = await startAedes();
    try {
      const withdraw = outboxCommands.find((c) => c.path[0] === 'withdraw');
      await withdraw?.run({ url: b.url, 'data-dir': mkdtempSync(join(dir, 'w-')), template: 'examples/bearing-failure.yaml' }, { stdin: process.stdin, stdout: new PassThrough(), stderr: new PassThrough() });
    } finally {
      await b.close();
    }
  },
  ERR_CONNECTION_REFUSED: () => withNode(firstRefusal),
  ERR_HOST_NOT_FOUND: () => withNode(firstRefusal, { url: 'mqtt://qis-test.invalid:1883' }),
  ERR_TLS: async () => {
    const b = await startAedes();
    try {
      return await withNode(firstRefusal, { url: b.url.replace(/^mqtt:/, 'mqtts:') });
    } finally {
      await b.close();
    }
  },
  // issue 13: the broker's limits (each end to end over loopback in test/hostile-broker.test.ts)
  ERR_MQTT_PACKET_TOO_LARGE: () => throwDecision(checkPacketSize(1 << 28, false, BROKER_DEFAULTS.limits)),
  ERR_TOO_MANY_CONNECTIONS: () => {
    const gate = new ConnectionGate({ ...BROKER_DEFAULTS.limits, maxConnectionsPerAddress: 1 });
    gate.admit('127.0.0.1', 0);
    throwDecision(gate.admit('127.0.0.1', 0));
  },
  ERR_CONNECT_TIMEOUT: () => throwDecision(connectTimedOut(10)),
  ERR_KEEPALIVE_CAPPED: () => throwDecision(capKeepalive(0, 300).decision),
  ERR_TOO_MANY_SUBSCRIPTIONS: () => throwDecision(checkSubscriptionCount(1000, 1000)),
  ERR_RETAINED_LIMIT: () => throwDecision(new RetainedBudget({ maxRetained: 0, maxRetainedBytes: 0 }).admit('a', 1)),
  ERR_TOPIC_NAME_INVALID: () => throwDecision(checkTopicName(Uint8Array.of(0x61, 0xff))),
  ERR_TOMBSTONE_LIMIT: () => throwDecision(coldFloorRefusal(0)),
  // issue 15: the verifier pool's bound (end to end with queued jobs in test/verify-pool.test.ts)
  ERR_VERIFY_BUSY: async () => {
    const pool = createVerifier(1, { maxQueued: 0, inlinePerSecond: 0 });
    try {
      const r = await pool.verify(topic, new Uint8Array(1), { now: 0, maxSkewMs: 0 });
      if (!r.ok) throw new QisError(r.code, r.message);
    } finally {
      await pool.close();
    }
  },
  // the per-connection bound (one connection's lane full; end to end in test/verify-pool.test.ts)
  ERR_VERIFY_CONNECTION_BUSY: async () => {
    const pool = createVerifier(1, { maxQueuedPerSource: 0, inlinePerSecond: 0 });
    try {
      const r = await pool.verify(topic, new Uint8Array(1), { now: 0, maxSkewMs: 0, source: 'a link' });
      if (!r.ok) throw new QisError(r.code, r.message);
    } finally {
      await pool.close();
    }
  },
};

t.test('errors - every code is produced by a real failure', async (t) => {
  t.same(Object.keys(triggers).sort(), Object.keys(ERROR_CODES).sort(), 'a trigger for every code');
  for (const [code, fn] of Object.entries(triggers)) {
    let caught: unknown;
    try {
      await fn();
    } catch (e) {
      caught = e;
    }
    t.ok(isQisError(caught), `${code}: threw a QisError`);
    t.equal((caught as QisError).code, code, `${code}: ${(caught as Error)?.message}`);
  }
});

t.test('errors - README lists exactly the codes, with the same meaning', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const rows = [...readme.matchAll(/^\| `(ERR_[A-Z0-9_]+)` \| (.+?) \|$/gm)];
  const listed = rows.map((m) => m[1]!);
  t.same([...listed].sort(), Object.keys(ERROR_CODES).sort(), 'README error table = ERROR_CODES');
  t.equal(new Set(listed).size, listed.length, 'no code listed twice');
  for (const m of rows) t.equal(m[2], ERROR_CODES[m[1] as ErrorCode], `${m[1]} meaning`);
});

t.test('errors - QisError keeps code and cause; isQisError checks the code is known', async (t) => {
  const cause = new Error('root');
  const e = new QisError('ERR_FILE_IO', 'x', { cause });
  t.equal(e.cause, cause);
  t.equal(e.name, 'QisError');
  t.ok(isQisError(e));
  t.notOk(isQisError(Object.assign(new Error('y'), { code: 'ENOENT' })));
  t.notOk(isQisError('ERR_FILE_IO'));
});
