// Connection authentication (issue 14, deliverable 4) over real brokers on loopback: node login
// (PROTOCOL §11) with an injected broker clock, password-file users, mTLS subject as the user,
// client ids bound to identities, ACL rules with users and %u/%c, anonymous access by listener.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { createLogin, createNode, type QisNode } from '../src/index.js';
import type { BrokerConfig } from '../broker/options.js';
import { setPassword } from '../broker/passwd.js';
import { Authenticator, clientIdAllowed, isLoopbackHost } from '../broker/server/auth.js';
import { fixedKey } from './helpers/fixtures.js';
import { startQisBroker, type TestBroker } from './helpers/qis-broker.js';
import { certificates } from './helpers/tls.js';

const root = mkdtempSync(join(tmpdir(), 'qis-auth-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

// The broker's clock: far from today, so nothing here passes by reading the wall clock.
const NOW = Date.UTC(2041, 5, 1);
const FAST = { N: 1024, r: 8, p: 1 };

interface Broker extends TestBroker {
  connect(o: IClientOptions, url?: string): Promise<MqttClient>;
  refusals(): Promise<number>;
}

async function brokerFor(t: Test, config: BrokerConfig = {}, now: () => number = () => NOW): Promise<Broker> {
  const b = await startQisBroker({ http: { host: '127.0.0.1', port: 0 }, ...config }, undefined, { now });
  const clients: MqttClient[] = [];
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await b.close();
  });
  const http = b.broker.addresses().find((a) => a.type === 'http');
  return Object.assign(b, {
    async connect(o: IClientOptions, url = b.url): Promise<MqttClient> {
      const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...o });
      clients.push(c);
      await new Promise<void>((resolve, reject) => {
        c.once('connect', () => resolve());
        c.once('error', reject);
        c.once('close', () => reject(new Error('closed before CONNACK')));
      });
      return c;
    },
    async refusals(): Promise<number> {
      const text = await (await fetch(`http://127.0.0.1:${http?.port}/metrics`)).text();
      return Number(/^qis_refused_total\{code="ERR_LOGIN_REFUSED"\} (\S+)$/m.exec(text)?.[1] ?? 0);
    },
  });
}

const login = (seed: number, clientId: string, ts = NOW): IClientOptions => {
  const l = createLogin(fixedKey(seed), { clientId, ts });
  return { clientId, username: l.username, password: Buffer.from(l.password) };
};

t.test('node login - the right key connects; a wrong key, a stale ts and another client id are refused', async (t) => {
  const b = await brokerFor(t, { auth: { allowAnonymous: false } });
  const ok = await b.connect(login(0x11, 'gw-1'));
  t.ok(ok.connected, 'a login signed by the node key, ts = the broker clock: accepted');
  await b.connect(login(0x12, 'gw-2', NOW - 299_000));
  t.pass('ts 299 s behind the broker clock (skew 300 s): accepted');

  // Username of node A, login signed by key B.
  const other = login(0x13, 'gw-3');
  await t.rejects(b.connect({ ...other, username: fixedKey(0x14).nodeId }), { code: 4 }, 'the key is not the username\'s: CONNACK 4');
  await t.rejects(b.connect(login(0x15, 'gw-5', NOW - 301_000)), { code: 4 }, 'ts 301 s old: CONNACK 4');
  await t.rejects(b.connect(login(0x15, 'gw-5', NOW + 301_000)), { code: 4 }, 'ts 301 s ahead: CONNACK 4');
  await t.rejects(b.connect({ ...login(0x16, 'gw-6'), clientId: 'gw-7' }), { code: 5 }, 'the login is for another client id: CONNACK 5');
  const bad = login(0x17, 'gw-8');
  const tampered = Buffer.from(bad.password as Buffer);
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 1;
  await t.rejects(b.connect({ ...bad, password: tampered }), { code: 4 }, 'a bad signature: CONNACK 4');
  t.equal(await b.refusals(), 5, 'each refusal counted as ERR_LOGIN_REFUSED');

  // Node 0x18 cannot take the live client id gw-1 of node 0x11, even with a valid login of its own.
  await t.rejects(b.connect(login(0x18, 'gw-1')), { code: 5 }, 'another identity cannot take over a live client id');
  t.ok(ok.connected, 'the holder stays connected');
  const again = await b.connect(login(0x11, 'gw-1'));
  t.ok(again.connected, 'the same node reconnecting takes its own client id over');
});

t.test('password file - users log in; wrong passwords and foreign client ids are refused', async (t) => {
  const file = join(mkdtempSync(join(root, 'pw-')), 'passwd');
  await setPassword(file, 'alice', 's3cret', FAST);
  await setPassword(file, 'bob', 'hunter2', FAST);
  const b = await brokerFor(t, { auth: { passwordFile: file, allowAnonymous: false } });
  t.ok((await b.connect({ clientId: 'alice', username: 'alice', password: 's3cret' })).connected, 'alice as client id alice');
  t.ok((await b.connect({ clientId: 'alice:pump-2', username: 'alice', password: 's3cret' })).connected, 'alice as alice:pump-2');
  await t.rejects(b.connect({ clientId: 'bob', username: 'bob', password: 'wrong' }), { code: 4 }, 'a wrong password: CONNACK 4');
  await t.rejects(b.connect({ clientId: 'eve', username: 'eve', password: 'x' }), { code: 4 }, 'an unknown user: CONNACK 4');
  await t.rejects(b.connect({ clientId: 'bob', username: 'alice', password: 's3cret' }), { code: 5 }, "alice cannot use bob's client id: CONNACK 5");
  await t.rejects(b.connect({ clientId: 'anon-1' }), { code: 5 }, 'anonymous refused (allowAnonymous: false)');
  t.equal(await b.refusals(), 4, 'four refusals counted');
});

t.test('anonymous - allowed on a loopback listener by default; the default refuses elsewhere', async (t) => {
  const b = await brokerFor(t);
  t.ok((await b.connect({ clientId: 'anon' })).connected, 'loopback listener, allowAnonymous unset: allowed');
  // A user name the broker cannot check (no password file) names nobody: the client is anonymous.
  t.ok((await b.connect({ clientId: 'anon-2', username: 'root', password: 'x' })).connected, 'a username without a password file: anonymous, allowed');
  // Listeners on other addresses cannot be bound in tests (loopback only): the decision itself.
  const a = await Authenticator.open({});
  const facts = { clientId: 'x', username: undefined, password: undefined, certificateUser: undefined };
  t.match(await a.check({ ...facts, listener: { type: 'tcp', host: '0.0.0.0', port: 1883 } }, NOW), { ok: false, returnCode: 5, reason: 'anonymous' }, '0.0.0.0: refused');
  t.match(await a.check({ ...facts, listener: { type: 'ws', host: '::1', port: 1, path: '/' } }, NOW), { ok: true, identity: { kind: 'anonymous' } }, '::1: allowed');
  t.match(await a.check({ ...facts, listener: undefined }, NOW), { ok: false }, 'an unknown listener: refused');
  const open = await Authenticator.open({ allowAnonymous: true });
  t.match(await open.check({ ...facts, listener: { type: 'tcp', host: '0.0.0.0', port: 1883 } }, NOW), { ok: true }, 'allowAnonymous: true allows it anywhere');
  t.same(['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1'].map(isLoopbackHost), [true, true, true, true, true, true]);
  t.same(['0.0.0.0', '::', '10.0.0.1', '128.0.0.1'].map(isLoopbackHost), [false, false, false, false]);
  t.same(['alice', 'alice:1', 'alice2', 'bob'].map((id) => clientIdAllowed(['%u', '%u:*'], 'alice', id)), [true, true, false, false]);
});

/** Resolves with the message when it arrives on `topic`, or undefined after `ms`. */
function receive(c: MqttClient, topic: string, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    c.on('message', (tp, payload) => {
      if (tp !== topic) return;
      clearTimeout(timer);
      resolve(payload.toString());
    });
  });
}

/** Publishes at QoS 0 and resolves true when the broker refuses it (a refused publish disconnects), false after 3 s. */
function refusedPublish(c: MqttClient, topic: string): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), 3000);
    c.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
    c.publish(topic, 'x', { qos: 0 });
  });
}

t.test('mTLS - the certificate subject is the user; ACL rules with users, %u and %c', async (t) => {
  const f = await certificates(t, mkdtempSync(join(root, 'tls-')), 'press-7');
  const b = await brokerFor(t, {
    listeners: [
      { type: 'tcp', host: '127.0.0.1', port: 0 },
      { type: 'tls', host: '127.0.0.1', port: 0, cert: f.cert, key: f.key, ca: f.ca, requestCert: true },
    ],
    auth: { allowAnonymous: true },
    acl: {
      publish: [
        { allow: true, topic: 'plant/%u/#' },
        { allow: true, topic: 'dev/%c/#' },
        { allow: true, topic: 'ops/#', users: ['press-7'] },
        { allow: false, topic: 'plant/#' },
        { allow: false, topic: 'dev/#' },
        { allow: false, topic: 'ops/#' },
      ],
      subscribe: [],
      // A refusal shows as a disconnect (the default, drop, acknowledges and withholds; the
      // 'and not delivered' checks below hold either way).
      refusedPublish: 'disconnect',
    },
  });
  const mtls = b.broker.addresses().find((a) => a.type === 'tls');
  const tls = { ca: readFileSync(f.cert), cert: readFileSync(f.clientCert), key: readFileSync(f.clientKey) };
  const url = `mqtts://127.0.0.1:${mtls?.port}`;
  await t.rejects(b.connect({ clientId: 'other', ...tls }, url), { code: 5 }, 'certificate user press-7 cannot use client id "other"');
  const press = await b.connect({ clientId: 'press-7:a', ...tls }, url);
  const watcher = await b.connect({ clientId: 'watcher' });
  await watcher.subscribeAsync('#', { qos: 1 });

  const got = receive(watcher, 'plant/press-7/temp', 5000);
  await press.publishAsync('plant/press-7/temp', '21', { qos: 1 });
  t.equal(await got, '21', 'plant/%u/#: press-7 publishes under its own name');
  const ops = receive(watcher, 'ops/restart', 5000);
  await press.publishAsync('ops/restart', 'now', { qos: 1 });
  t.equal(await ops, 'now', 'users: [press-7] lets it publish on ops/#');

  // An anonymous client: %u never matches it, %c does.
  const anon = await b.connect({ clientId: 'sensor-9' });
  const dev = receive(watcher, 'dev/sensor-9/x', 5000);
  await anon.publishAsync('dev/sensor-9/x', '1', { qos: 1 });
  t.equal(await dev, '1', 'dev/%c/#: the client publishes under its client id');
  const denied = receive(watcher, 'ops/restart', 500);
  t.ok(await refusedPublish(anon, 'ops/restart'), 'ops/# is for user press-7 only: an anonymous publish is refused (disconnected)');
  t.equal(await denied, undefined, 'and not delivered');
  const other = await b.connect({ clientId: 'sensor-10' });
  const foreign = receive(watcher, 'plant/press-7/temp', 500);
  t.ok(await refusedPublish(other, 'plant/press-7/temp'), "an anonymous client cannot publish under press-7's name");
  t.equal(await foreign, undefined);
  const wide = await b.connect({ clientId: 'a/#' });
  t.ok(await refusedPublish(wide, 'dev/a/b'), 'a client id holding / or # does not widen dev/%c/#');
});

/** The status types a node reports until it has connected `connects` times (or `ms` pass). */
async function statusUntil(node: QisNode, connects: number, ms: number): Promise<string[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  const seen: string[] = [];
  try {
    for await (const s of node.status({ signal: ac.signal })) {
      seen.push(s.type === 'refused' ? `refused ${s.message}` : s.type);
      if (s.type === 'connected' && --connects === 0) break;
    }
  } catch {
    // aborted: the caller looks at what was seen
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return seen;
}

t.test('node runtime - login: true logs in with the node key, with a fresh ts at every reconnect', async (t) => {
  let clock = NOW;
  const b = await brokerFor(t, { auth: { allowAnonymous: false } }, () => clock);
  const nodes: QisNode[] = [];
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  const open = async (seed: number, login: boolean): Promise<QisNode> => {
    const n = await createNode({ url: b.url, dataDir: mkdtempSync(join(root, 'node-')), key: fixedKey(seed), login, now: () => clock, reconnect: { baseMs: 50, capMs: 200 } });
    nodes.push(n);
    return n;
  };
  const anon = await open(0x31, false);
  t.match((await statusUntil(anon, 1, 1500)).join('\n'), /refused .*not authorized \(CONNACK return code 5\)/, 'without login: refused (anonymous)');
  await anon.close();
  const anonRefusals = await b.refusals();
  t.ok(anonRefusals >= 1, 'counted');

  const node = await open(0x32, true);
  t.same((await statusUntil(node, 1, 5000)).filter((s) => s === 'connected'), ['connected'], 'with login: connected');
  // Two hours later (both clocks): a login made once at start would now be stale.
  clock += 2 * 3600_000;
  const held = Object.values((b.broker.aedes as unknown as { clients: Record<string, { id: string; close(): void }> }).clients).find((c) => c.id.startsWith(`qis-${node.nodeId}-`));
  t.ok(held, 'the broker holds the node under its client id');
  const again = statusUntil(node, 1, 5000);
  held?.close();
  t.same((await again).filter((s) => s === 'connected'), ['connected'], 'reconnected with a fresh login');
  t.equal(await b.refusals(), anonRefusals, 'no login was refused: the reconnect did not send the start-time login (it would be stale now)');
  await t.rejects(createNode({ url: b.url, dataDir: mkdtempSync(join(root, 'node-')), login: true, username: 'x' }), { code: 'ERR_INVALID_ARGUMENT' }, 'login with a username: refused');
});

t.test('federation peers - only listed identities use link ids; nobody else gets anything from qis/1/f/', async (t) => {
  const file = join(mkdtempSync(join(root, 'pw-')), 'passwd');
  await setPassword(file, 'region-b', 'link-secret', FAST);
  await setPassword(file, 'mallory', 'm', FAST);
  const b = await brokerFor(t, { auth: { passwordFile: file, peers: ['region-b'] } });
  await t.rejects(b.connect({ clientId: 'qis-fed-b-0' }), { code: 5 }, 'an anonymous client cannot take a link id');
  await t.rejects(b.connect({ clientId: 'qis-fed-b-0', username: 'mallory', password: 'm' }), { code: 5 }, 'a user who is not a peer cannot take a link id');
  const eve = await b.connect({ clientId: 'eve' });
  await eve.subscribeAsync('#', { qos: 1 }); // granted: qis/1/f/ messages are withheld one by one
  await t.rejects(eve.subscribeAsync('qis/1/f/#', { qos: 1 }), 'a non-peer subscribing to qis/1/f/ is refused at SUBSCRIBE');
  await t.rejects(eve.subscribeAsync('qis/1/f/res/qis-fed-b-0', { qos: 1 }), "and to a link's answers too");
  const eavesdropped: string[] = [];
  eve.on('message', (topic) => eavesdropped.push(topic));
  const link = await b.connect({ clientId: 'qis-fed-b-0', username: 'region-b', password: 'link-secret' });
  await link.subscribeAsync('qis/1/f/res/qis-fed-b-0', { qos: 1 });
  const answer = receive(link, 'qis/1/f/res/qis-fed-b-0', 5000);
  await link.publishAsync('qis/1/f/req/qis-fed-b-0', JSON.stringify({ op: 'put', id: 'p1', items: [] }), { qos: 1 });
  t.match(JSON.parse((await answer) ?? '{}'), { id: 'p1', stored: 0 }, 'the peer gets its answer');
  const late = receive(eve, 'never', 300);
  await late;
  t.same(eavesdropped.filter((x) => x.startsWith('qis/1/f/')), [], 'the eavesdropper gets nothing from qis/1/f/');
  t.ok(await refusedPublish(eve, 'qis/1/f/req/eve'), 'a non-peer publishing a federation request is refused');
});
