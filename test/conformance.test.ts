// MQTT 3.1.1 conformance, our own copy of the Paho interoperability suite's cases (issue 13, row
// "MQTT conformance"). The suite itself (eclipse/paho.mqtt.testing, interoperability/client_test.py)
// is Python fetched from GitHub, which this project cannot reach (npm and Debian only), so its ten
// cases are reproduced here with mqtt.js and raw packets, each named after the suite's test and
// citing the spec statements it checks.
//
// Setup, as the suite is run against a broker: the broker is started with a subscribe deny rule
// for the suite's `test/nosubscribe` (ours: `acl.subscribe: [{ allow: false, topic:
// 'test/nosubscribe' }]`; Mosquitto: an acl_file with `topic deny test/nosubscribe`), the suite's
// topics are `TopicA`, `TopicA/B`, `Topic/C`, `TopicA/C`, `/TopicA` and its wildcards `TopicA/+`,
// `+/C`, `#`, `/#`, `/+`, `+/+`, `TopicA/#`, its client ids `myclientid` and `myclientid2`. Every
// case runs against our broker and, as the reference, against a real Mosquitto (Debian
// `mosquitto`), each broker fresh, so no case depends on another's leftovers (the suite's
// cleanup() did that by hand). Waits are shorter than the suite's sleeps: each waits for what it
// expects, and "nothing arrives" is checked after a settle period. test_keepalive uses keepalive
// 2 s instead of 5 s (the rule is the same: 1.5 × keepalive).
import t, { type Test } from 'tap';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { connectPacket, rawClient, startMosquittoProc } from '../bench/hostile-kit.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { waitFor } from './helpers/wait.js';

const topics = ['TopicA', 'TopicA/B', 'Topic/C', 'TopicA/C', '/TopicA'] as const;
const wildtopics = ['TopicA/+', '+/C', '#', '/#', '/+', '+/+', 'TopicA/#'] as const;
const NOSUBSCRIBE = 'test/nosubscribe';
const SETTLE_MS = 500;
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, SETTLE_MS));

interface Target {
  readonly name: string;
  start(t: Test): Promise<{ url: string; port: number }>;
}

const targets: readonly Target[] = [
  {
    name: 'qis',
    async start(t) {
      const b = await startQisBroker({ acl: { subscribe: [{ allow: false, topic: NOSUBSCRIBE }] } });
      t.teardown(() => b.close());
      return { url: b.url, port: b.port };
    },
  },
  {
    name: 'mosquitto',
    async start(t) {
      const m = await startMosquittoProc(['acl_file $DIR/acl'], { acl: `topic readwrite #\ntopic deny ${NOSUBSCRIBE}\n` });
      t.teardown(() => m.stop());
      return { url: m.url, port: m.port };
    },
  },
];

/** Where the reference broker itself departs from the suite: a `todo` note on its run (ours must pass). */
const reference = (target: Target, note: string): string | false => (target.name === 'mosquitto' ? note : false);

interface Received {
  readonly topic: string;
  readonly payload: string;
  readonly qos: number;
  readonly retain: boolean;
}
interface Client {
  readonly c: MqttClient;
  readonly messages: Received[];
  readonly sessionPresent: boolean;
}

/** An mqtt.js client (MQTT 3.1.1) with its received messages and its CONNACK's Session Present. */
async function client(t: Test, url: string, clientId: string, o: IClientOptions = {}): Promise<Client> {
  const c = mqtt.connect(url, { clientId, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...o });
  const messages: Received[] = [];
  c.on('message', (topic, payload, p) => messages.push({ topic, payload: payload.toString(), qos: p.qos, retain: p.retain }));
  const sessionPresent = await new Promise<boolean>((resolve, reject) => {
    c.once('connect', (ack) => resolve(ack.sessionPresent));
    c.once('error', reject);
  });
  t.teardown(() => c.endAsync(true));
  return { c, messages, sessionPresent };
}

/** A raw connection that parses what the broker sends (mqtt-packet), for what mqtt.js will not do. */
async function raw(t: Test, port: number): Promise<{ send(p: Packet): void; write(b: Buffer): void; packets: Packet[]; closed: () => boolean; end(): void }> {
  const r = await rawClient(port);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: Packet[] = [];
  parser.on('packet', (p: Packet) => packets.push(p));
  r.s.on('data', (d: Buffer) => parser.parse(d));
  let closed = false;
  void r.closed.then(() => (closed = true));
  t.teardown(() => r.s.destroy());
  return { send: (p) => r.s.write(mqttPacket.generate(p)), write: (b) => r.s.write(b), packets, closed: () => closed, end: () => r.s.destroy() };
}

const connect = (clientId: string, o: Partial<mqttPacket.IConnectPacket> = {}): mqttPacket.IConnectPacket => ({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 60, ...o });

for (const target of targets) {
  t.test(`${target.name}: MQTT 3.1.1 conformance (Paho interoperability client_test.py cases)`, async (t) => {
    t.test('testBasic: QoS 0/1/2 round trip; a second CONNECT and a wrong protocol name close the connection', async (t) => {
      const { url, port } = await target.start(t);
      const a = await client(t, url, 'myclientid');
      await a.c.endAsync();
      const a2 = await client(t, url, 'myclientid');
      // [MQTT-3.2.2-1]: clean session → Session Present 0.
      t.equal(a2.sessionPresent, false, 'CONNACK Session Present 0 for a clean session [MQTT-3.2.2-1]');
      await a2.c.subscribeAsync(topics[0], { qos: 2 });
      await a2.c.publishAsync(topics[0], 'qos 0', { qos: 0 });
      await a2.c.publishAsync(topics[0], 'qos 1', { qos: 1 });
      await a2.c.publishAsync(topics[0], 'qos 2', { qos: 2 });
      await waitFor(() => a2.messages.length >= 3, 'three messages', 5000);
      t.same(a2.messages.map((m) => m.payload).sort(), ['qos 0', 'qos 1', 'qos 2'], 'each QoS delivered once');
      // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation; the server MUST disconnect.
      const r = await raw(t, port);
      r.send(connect('myclientid'));
      await waitFor(() => r.packets.length > 0, 'CONNACK', 5000);
      r.send(connect('myclientid'));
      await waitFor(r.closed, 'the close after a second CONNECT', 5000);
      t.pass('a second CONNECT closes the connection [MQTT-3.1.0-2]');
      // [MQTT-3.1.2-1]: a protocol name other than "MQTT" → the server MAY disconnect (the suite expects it).
      const h = await raw(t, port);
      h.send(connect('myclientid', { protocolId: 'hj' as 'MQTT' }));
      await waitFor(h.closed, 'the close after protocol name "hj"', 5000);
      t.notOk(h.packets.some((p) => p.cmd === 'connack' && p.returnCode === 0), 'protocol name "hj" is not accepted [MQTT-3.1.2-1]');
    });

    t.test('test_retained_messages: retained on each QoS, then deleted by empty retained payloads', async (t) => {
      const { url } = await target.start(t);
      const a = await client(t, url, 'myclientid');
      await a.c.publishAsync(topics[1], 'qos 0', { qos: 0, retain: true });
      await a.c.publishAsync(topics[2], 'qos 1', { qos: 1, retain: true });
      await a.c.publishAsync(topics[3], 'qos 2', { qos: 2, retain: true });
      await a.c.subscribeAsync([topics[1], topics[2], topics[3]], { qos: 2 });
      await waitFor(() => a.messages.length >= 3, 'three retained messages', 5000);
      await settle();
      // [MQTT-3.3.1-6]: a new subscription gets the matching retained messages, with RETAIN 1 [MQTT-3.3.1-8].
      t.equal(a.messages.length, 3, 'the three retained messages, once each [MQTT-3.3.1-6]');
      t.ok(a.messages.every((m) => m.retain), 'sent with RETAIN 1 [MQTT-3.3.1-8]');
      await a.c.endAsync();
      const b = await client(t, url, 'myclientid');
      // [MQTT-3.3.1-10]: a retained PUBLISH with a zero-byte payload removes the retained message.
      await b.c.publishAsync(topics[1], '', { qos: 0, retain: true });
      await b.c.publishAsync(topics[2], '', { qos: 1, retain: true });
      await b.c.publishAsync(topics[3], '', { qos: 2, retain: true });
      await b.c.subscribeAsync([topics[1], topics[2], topics[3]], { qos: 2 });
      await settle();
      t.same(b.messages, [], 'no retained message is left [MQTT-3.3.1-10, MQTT-3.3.1-11]');
    });

    t.test('test_zero_length_clientid: refused with CleanSession 0, accepted with CleanSession 1', async (t) => {
      const { port } = await target.start(t);
      // [MQTT-3.1.3-8]: zero-byte client id with CleanSession 0 → CONNACK 0x02, then close.
      const r = await raw(t, port);
      r.write(connectPacket('', 60, false)); // mqtt-packet refuses to generate this one
      await waitFor(() => r.packets.length > 0 || r.closed(), 'CONNACK or close', 5000);
      const ack = r.packets[0];
      t.ok(ack === undefined || (ack.cmd === 'connack' && ack.returnCode === 2), 'CONNACK 0x02 identifier rejected (or closed) [MQTT-3.1.3-8]');
      await waitFor(r.closed, 'the close', 5000);
      // [MQTT-3.1.3-6]: zero-byte client id with CleanSession 1 → accepted, the server assigns one.
      const ok = await raw(t, port);
      ok.send(connect('', { clean: true }));
      await waitFor(() => ok.packets.length > 0, 'CONNACK', 5000);
      t.match(ok.packets[0], { cmd: 'connack', returnCode: 0 }, 'accepted [MQTT-3.1.3-6]');
    });

    t.test('test_offline_message_queueing: QoS 1 and 2 messages kept for an offline persistent session', async (t) => {
      const { url } = await target.start(t);
      const a = await client(t, url, 'myclientid', { clean: false });
      await a.c.subscribeAsync(wildtopics[5], { qos: 2 });
      await a.c.endAsync();
      const b = await client(t, url, 'myclientid2');
      await b.c.publishAsync(topics[1], 'qos 0', { qos: 0 });
      await b.c.publishAsync(topics[2], 'qos 1', { qos: 1 });
      await b.c.publishAsync(topics[3], 'qos 2', { qos: 2 });
      await b.c.endAsync();
      const a2 = await client(t, url, 'myclientid', { clean: false });
      // [MQTT-3.2.2-2]: a stored session → Session Present 1.
      t.equal(a2.sessionPresent, true, 'Session Present 1 on resuming the stored session [MQTT-3.2.2-2]');
      await waitFor(() => a2.messages.length >= 2, 'the queued messages', 5000);
      await settle();
      // [MQTT-3.1.2-5]: QoS 1 and 2 messages for a disconnected session are stored (QoS 0 may be).
      t.ok([2, 3].includes(a2.messages.length), `2 or 3 messages (got ${a2.messages.length}) [MQTT-3.1.2-5]`);
      t.ok(a2.messages.some((m) => m.payload === 'qos 1') && a2.messages.some((m) => m.payload === 'qos 2'), 'the QoS 1 and QoS 2 ones among them');
    });

    t.test('test_overlapping_subscriptions: one message at the highest QoS, or one per subscription', { todo: reference(target, 'Mosquitto 2.0.11 sends one copy at QoS 1 here (measured)') }, async (t) => {
      const { url } = await target.start(t);
      const a = await client(t, url, 'myclientid');
      await a.c.subscribeAsync({ [wildtopics[6]]: { qos: 2 }, [wildtopics[0]]: { qos: 1 } });
      await a.c.publishAsync(topics[3], 'overlapping topic filters', { qos: 2 });
      await waitFor(() => a.messages.length >= 1, 'the message', 5000);
      await settle();
      // [MQTT-3.3.5-1]: the server MUST deliver at the maximum QoS of the matching subscriptions (one copy or one per subscription).
      const qos = a.messages.map((m) => m.qos).sort();
      t.ok((qos.length === 1 && qos[0] === 2) || (qos.length === 2 && qos[0] === 1 && qos[1] === 2), `delivered as QoS ${qos.join(' and ')} [MQTT-3.3.5-1]`);
    });

    t.test('test_keepalive: a silent client is disconnected after 1.5 × keepalive and its will is published', async (t) => {
      const { url, port } = await target.start(t);
      const b = await client(t, url, 'myclientid2', { keepalive: 0 });
      await b.c.subscribeAsync(topics[4], { qos: 2 });
      // The suite's aclient: keepalive (2 s here), a will, then silence (raw: mqtt.js would PINGREQ).
      const a = await raw(t, port);
      a.send(connect('myclientid', { keepalive: 2, will: { topic: topics[4], payload: Buffer.from('keepalive expiry'), qos: 0, retain: false } }));
      // [MQTT-3.1.2-24]: no packet within 1.5 × keepalive → the server disconnects; [MQTT-3.1.2-8]: the will is published.
      await waitFor(a.closed, 'the server closing the silent client', 10_000);
      await waitFor(() => b.messages.length >= 1, 'the will message', 5000);
      t.same(b.messages.map((m) => m.payload), ['keepalive expiry'], 'the will, once [MQTT-3.1.2-8, MQTT-3.1.2-24]');
    });

    t.test('test_redelivery_on_reconnect: unacknowledged QoS 1 and 2 messages are resent on reconnect', async (t) => {
      const { port } = await target.start(t);
      // The suite's bclient.pause(): it receives but acknowledges nothing (raw).
      const b = await raw(t, port);
      b.send(connect('myclientid2', { clean: false }));
      b.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: wildtopics[6], qos: 2 }] });
      await waitFor(() => b.packets.some((p) => p.cmd === 'suback'), 'SUBACK', 5000);
      b.send({ cmd: 'publish', topic: topics[1], payload: Buffer.alloc(0), qos: 1, messageId: 2, retain: false, dup: false });
      b.send({ cmd: 'publish', topic: topics[3], payload: Buffer.alloc(0), qos: 2, messageId: 3, retain: false, dup: false });
      b.send({ cmd: 'pubrel', messageId: 3 });
      await waitFor(() => b.packets.filter((p) => p.cmd === 'publish').length >= 2, 'both messages (not acknowledged)', 5000);
      b.end();
      await waitFor(b.closed, 'close', 5000);
      const b2 = await raw(t, port);
      b2.send(connect('myclientid2', { clean: false }));
      // [MQTT-4.4.0-1]: on reconnect with CleanSession 0 the server MUST resend unacknowledged PUBLISH packets, DUP 1 [MQTT-3.3.1-1].
      await waitFor(() => b2.packets.filter((p) => p.cmd === 'publish').length >= 2, 'both messages again', 5000);
      const again = b2.packets.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish');
      t.same(again.map((p) => p.topic).sort(), [topics[1], topics[3]].sort(), 'both resent [MQTT-4.4.0-1]');
      t.ok(again.every((p) => p.dup), 'with DUP 1 [MQTT-3.3.1-1]');
    });

    t.test('test_subscribe_failure: a denied topic filter gets SUBACK 0x80', { todo: reference(target, 'Mosquitto 2.0.11 grants it (0x02) and withholds the messages (measured)') }, async (t) => {
      const { port } = await target.start(t);
      const a = await raw(t, port);
      a.send(connect('myclientid'));
      // [MQTT-3.9.3-2] return code 0x80: failure (here: the broker's deny rule for test/nosubscribe).
      a.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: NOSUBSCRIBE, qos: 2 }] });
      await waitFor(() => a.packets.some((p) => p.cmd === 'suback'), 'SUBACK', 5000);
      const granted = a.packets.find((p): p is mqttPacket.ISubackPacket => p.cmd === 'suback')?.granted;
      t.same(granted, [0x80], 'SUBACK 0x80 for test/nosubscribe');
    });

    t.test('test_dollar_topics: wildcards at the first level do not match $ topics', async (t) => {
      const { url } = await target.start(t);
      const b = await client(t, url, 'myclientid2', { keepalive: 0 });
      await b.c.subscribeAsync(wildtopics[5], { qos: 2 });
      // Publishing to $… may be refused (the suite allows it); our broker acknowledges and drops it.
      await b.c.publishAsync(`$${topics[1]}`, '', { qos: 1 });
      await settle();
      t.same(b.messages, [], '+/+ does not match $TopicA/B [MQTT-4.7.2-1]');
      t.ok(b.c.connected, 'the publisher is still connected');
    });

    t.test('test_unsubscribe: no messages for an unsubscribed filter, the others still flow', async (t) => {
      const { url } = await target.start(t);
      const b = await client(t, url, 'myclientid2');
      await b.c.subscribeAsync(topics[0], { qos: 2 });
      await b.c.subscribeAsync(topics[1], { qos: 2 });
      await b.c.subscribeAsync(topics[2], { qos: 2 });
      // [MQTT-3.10.4-6]: UNSUBACK after the unsubscribe; [MQTT-3.10.4-2]: no new messages for it afterwards.
      await b.c.unsubscribeAsync(topics[0]);
      const a = await client(t, url, 'myclientid');
      for (const tp of [topics[0], topics[1], topics[2]]) await a.c.publishAsync(tp, '', { qos: 1 });
      await waitFor(() => b.messages.length >= 2, 'two messages', 5000);
      await settle();
      t.same(b.messages.map((m) => m.topic).sort(), [topics[1], topics[2]].sort(), 'TopicA/B and Topic/C only [MQTT-3.10.4-2]');
    });
  });
}
