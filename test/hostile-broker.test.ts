// Issue 13: the broker under hostile clients. Each test drives a real broker over loopback from
// separate clients (raw sockets where mqtt.js would refuse to misbehave), asserts the limit, its
// code in /metrics, and that a well-behaved client's publish and read-back still work after.
import t, { type Test } from 'tap';
import { connect as netConnect, type Socket } from 'node:net';
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';
import type { BrokerConfig } from '../broker/options.js';
import { limitHits } from './helpers/broker-metrics.js';
import { startQisBroker, type TestBroker } from './helpers/qis-broker.js';
import { waitFor } from './helpers/wait.js';

async function brokerFor(t: Test, config: BrokerConfig): Promise<TestBroker> {
  const b = await startQisBroker(config);
  t.teardown(() => b.close());
  return b;
}

/** `qis_limit_hits_total{code}` of the broker. */
const hits = limitHits;

/** A raw TCP connection to the broker, with whether and when it was closed by the broker. */
async function raw(b: TestBroker): Promise<{ s: Socket; closed: Promise<void>; data: Buffer[] }> {
  const s = netConnect(b.port, '127.0.0.1');
  s.on('error', () => undefined);
  const data: Buffer[] = [];
  s.on('data', (d: Buffer) => data.push(d));
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  await new Promise<void>((r) => s.once('connect', () => r()));
  return { s, closed, data };
}

const connectPacket = (clientId: string, keepalive = 30): Buffer => mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive });

/** A well-behaved client publishes a retained message and reads it back (< 1 s). */
async function roundTrip(t: Test, b: TestBroker, label: string): Promise<void> {
  const started = Date.now();
  const c = await mqtt.connectAsync(b.url, { clientId: `good-${label}`, reconnectPeriod: 0, connectTimeout: 2000 });
  try {
    const topic = `good/${label}`;
    await c.publishAsync(topic, 'hello', { qos: 1, retain: true });
    const got = new Promise<string>((resolve) => c.on('message', (tp, p) => tp === topic && resolve(p.toString())));
    await c.subscribeAsync(topic, { qos: 1 });
    t.equal(await got, 'hello', `${label}: a well-behaved client's publish reads back`);
    t.ok(Date.now() - started < 1000, `${label}: round trip under 1 s`);
  } finally {
    await c.endAsync();
  }
}

t.test('a packet announcing 256 MB before CONNECT is refused from its header, before buffering', async (t) => {
  const b = await brokerFor(t, {});
  const heapBefore = process.memoryUsage().rss;
  const conns = await Promise.all([1, 2, 3, 4, 5, 6].map(() => raw(b)));
  // PUBLISH fixed header with remaining length 268435455 (the MQTT maximum), then 1 MB of it.
  for (const { s } of conns) {
    s.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]));
    s.write(Buffer.alloc(1 << 20, 0x61));
  }
  await Promise.all(conns.map((c) => c.closed));
  t.equal(await hits(b, 'ERR_MQTT_PACKET_TOO_LARGE'), 6, 'each counted with its code');
  t.ok(process.memoryUsage().rss - heapBefore < 300 * 1024 * 1024, 'RSS grew by less than 300 MB');
  await roundTrip(t, b, 'size');
});

t.test('a connected client over limits.maxPacketSize is disconnected', async (t) => {
  const b = await brokerFor(t, { limits: { maxPacketSize: 1024 } });
  const c = await raw(b);
  c.s.write(connectPacket('big'));
  await waitFor(() => c.data.length > 0, 'CONNACK');
  c.s.write(mqttPacket.generate({ cmd: 'publish', topic: 'x', payload: Buffer.alloc(2000), qos: 0, retain: false, dup: false }));
  await c.closed;
  t.equal(await hits(b, 'ERR_MQTT_PACKET_TOO_LARGE'), 1);
  await roundTrip(t, b, 'size2');
});

t.test('connections beyond limits.maxConnectionsPerAddress are closed at once', async (t) => {
  const b = await brokerFor(t, { limits: { maxConnectionsPerAddress: 3 } });
  const held = await Promise.all([1, 2, 3].map(() => raw(b)));
  const extra = await raw(b);
  await extra.closed;
  t.equal(await hits(b, 'ERR_TOO_MANY_CONNECTIONS'), 1, 'the fourth is refused and counted');
  for (const h of held) h.s.destroy();
  await Promise.all(held.map((h) => h.closed));
  await roundTrip(t, b, 'conns');
});

t.test('a connection without CONNECT is closed after limits.connectTimeoutMs', async (t) => {
  const b = await brokerFor(t, { limits: { connectTimeoutMs: 200 } });
  const c = await raw(b);
  await c.closed;
  t.equal(await hits(b, 'ERR_CONNECT_TIMEOUT'), 1);
  await roundTrip(t, b, 'timeout');
});

t.test('keepalive 0 is capped to limits.maxKeepalive: a silent client is dropped', async (t) => {
  const b = await brokerFor(t, { limits: { maxKeepalive: 1 } });
  const c = await raw(b);
  c.s.write(connectPacket('silent', 0));
  await waitFor(() => c.data.length > 0, 'CONNACK');
  t.equal(c.data[0]?.[3], 0, 'accepted (CONNACK 0)');
  await c.closed; // 1.5 × 1 s of silence
  t.equal(await hits(b, 'ERR_KEEPALIVE_CAPPED'), 1);
  await roundTrip(t, b, 'keepalive');
});

t.test('subscriptions beyond limits.maxSubscriptionsPerClient get SUBACK 0x80', async (t) => {
  const b = await brokerFor(t, { limits: { maxSubscriptionsPerClient: 2 } });
  const c = await mqtt.connectAsync(b.url, { clientId: 'subs', reconnectPeriod: 0 });
  t.teardown(() => c.endAsync());
  const g = await c.subscribeAsync(['a/1', 'a/2']);
  t.same(g.map((x) => x.qos), [0, 0]);
  // mqtt.js turns SUBACK 0x80 into this error.
  await t.rejects(c.subscribeAsync('a/3'), /Subscribe error/, 'the third is refused (SUBACK 0x80)');
  t.equal(await hits(b, 'ERR_TOO_MANY_SUBSCRIPTIONS'), 1);
  await roundTrip(t, b, 'subs');
});

t.test('retained messages outside qis/1/ are bounded in count and bytes', async (t) => {
  const b = await brokerFor(t, { limits: { maxRetained: 3, maxRetainedBytes: 10_000 } });
  const c = await mqtt.connectAsync(b.url, { clientId: 'ret', reconnectPeriod: 0 });
  t.teardown(() => c.endAsync());
  for (let i = 0; i < 5; i++) await c.publishAsync(`junk/${i}`, Buffer.alloc(100), { qos: 1, retain: true });
  await c.publishAsync('junk/big', Buffer.alloc(20_000), { qos: 1, retain: true });
  const got: string[] = [];
  const sub = await mqtt.connectAsync(b.url, { clientId: 'ret-reader', reconnectPeriod: 0 });
  t.teardown(() => sub.endAsync());
  sub.on('message', (tp) => got.push(tp));
  await sub.subscribeAsync('junk/#');
  await new Promise((r) => setTimeout(r, 300));
  t.same(got.sort(), ['junk/0', 'junk/1', 'junk/2'], 'only the first three kept');
  t.equal(await hits(b, 'ERR_RETAINED_LIMIT'), 3);
  // Freed by a delete, a slot takes a new message (the well-behaved one below).
  await c.publishAsync('junk/0', Buffer.alloc(0), { qos: 1, retain: true });
  await roundTrip(t, b, 'retained');
});

t.test('a topic name with invalid UTF-8 or U+0000 closes the connection (MQTT 3.1.1 §1.5.3, §4.7.3)', async (t) => {
  const b = await brokerFor(t, {});
  for (const bad of [Buffer.from([0x61, 0xff, 0x62]), Buffer.from([0x61, 0x00, 0x62])]) {
    const c = await raw(b);
    c.s.write(connectPacket('utf8'));
    await waitFor(() => c.data.length > 0, 'CONNACK');
    // PUBLISH QoS 1: topic length, topic bytes, message id, payload.
    const body = Buffer.concat([Buffer.from([0, bad.length]), bad, Buffer.from([0, 1]), Buffer.from('x')]);
    c.s.write(Buffer.concat([Buffer.from([0x32, body.length]), body]));
    await c.closed;
    t.equal(c.data.length, 1, 'no PUBACK: only the CONNACK was received');
  }
  t.equal(await hits(b, 'ERR_TOPIC_NAME_INVALID'), 2);
  await roundTrip(t, b, 'utf8');
});

t.test('a publish the ACL refuses on an ordinary topic is acknowledged and dropped (acl.refusedPublish drop, the default)', async (t) => {
  const b = await brokerFor(t, { acl: { publish: [{ allow: false, topic: 'secret/#' }] } });
  const reader = await mqtt.connectAsync(b.url, { clientId: 'acl-reader', reconnectPeriod: 0 });
  t.teardown(() => reader.endAsync());
  const got: string[] = [];
  reader.on('message', (tp) => got.push(tp));
  await reader.subscribeAsync('#');
  const c = await mqtt.connectAsync(b.url, { clientId: 'acl-writer', reconnectPeriod: 0 });
  t.teardown(() => c.endAsync());
  let closed = false;
  c.once('close', () => (closed = true));
  await c.publishAsync('secret/door', 'open', { qos: 1 });
  t.pass('PUBACK received');
  await c.publishAsync('open/door', 'closed', { qos: 1 });
  await waitFor(() => got.includes('open/door'), 'the allowed publish');
  t.notOk(got.includes('secret/door'), 'the refused publish reached nobody');
  t.notOk(closed, 'the client stays connected');
  t.match(await b.broker.metricsText(), /qis_dropped_total\{code="ERR_NOT_AUTHORIZED"\} 1/);
});

t.test('a subscribe deny rule refuses only the filters it covers; overlapping wildcards are granted without its messages', async (t) => {
  const b = await brokerFor(t, { acl: { subscribe: [{ allow: false, topic: 'test/nosubscribe' }] } });
  const c = await mqtt.connectAsync(b.url, { clientId: 'acl-sub', reconnectPeriod: 0 });
  t.teardown(() => c.endAsync());
  const got: string[] = [];
  c.on('message', (tp) => got.push(tp));
  const granted = await c.subscribeAsync(['#', '+/+', 'test/#'], { qos: 1 });
  t.same(granted.map((g) => g.qos), [1, 1, 1], '#, +/+ and test/# are granted (as Mosquitto does)');
  await t.rejects(c.subscribeAsync('test/nosubscribe'), /Subscribe error/, 'the denied topic itself: SUBACK 0x80');
  const p = await mqtt.connectAsync(b.url, { clientId: 'acl-pub', reconnectPeriod: 0 });
  t.teardown(() => p.endAsync());
  await p.publishAsync('test/nosubscribe', 'no', { qos: 1 });
  await p.publishAsync('test/ok', 'yes', { qos: 1 });
  await waitFor(() => got.includes('test/ok'), 'the allowed message');
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(got.includes('test/nosubscribe'), "the denied topic's message is withheld");
});

t.test("sync topics are private (PROTOCOL §7): another client id cannot subscribe to them, and '#' does not carry them", async (t) => {
  const b = await brokerFor(t, {});
  const spy = await mqtt.connectAsync(b.url, { clientId: 'spy', reconnectPeriod: 0 });
  t.teardown(() => spy.endAsync());
  await t.rejects(spy.subscribeAsync('qis/1/sync/victim/#'), /Subscribe error/, "another id's sync topics: SUBACK 0x80");
  await t.rejects(spy.subscribeAsync('qis/1/sync/+/#'), /Subscribe error/, 'every sync topic: SUBACK 0x80');
  const seen: string[] = [];
  spy.on('message', (tp) => seen.push(tp));
  await spy.subscribeAsync('#', { qos: 1 });
  const victim = await mqtt.connectAsync(b.url, { clientId: 'victim', reconnectPeriod: 0 });
  t.teardown(() => victim.endAsync());
  const own = new Promise<string>((r) => victim.on('message', (tp) => r(tp)));
  await victim.subscribeAsync('qis/1/sync/victim/#', { qos: 1 });
  await victim.publishAsync('qis/1/sync/victim/1', '', { qos: 1 });
  t.equal(await own, 'qis/1/sync/victim/1', 'its own client gets the marker');
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(seen.some((x) => x.startsWith('qis/1/sync/')), 'the spy saw no sync marker');
});
