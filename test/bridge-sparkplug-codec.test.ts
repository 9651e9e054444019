// The bridge's Sparkplug B reader and edge-node state, checked against an independent encoder:
// Eclipse Tahu's `sparkplug-payload` package (protobufjs generated from sparkplug_b.proto).
import t from 'tap';
import { isQisError } from '../src/index.js';
import { prng } from './helpers/prng.js';
import { sp, tahuPayload, type SpMetric } from './helpers/sparkplug.js';
import { decodeSparkplugPayload, EdgeNodeState, encodeRebirthRequest, MAX_PAYLOAD_BYTES, MAX_TEMPLATE_DEPTH, metricValue, parseSparkplugTopic, type Payload } from '../firmware-bridge/index.js';

const enc = (seq: number | undefined, metrics: SpMetric[]): Uint8Array => sp.encodePayload({ timestamp: 1_700_000_000_000, ...(seq === undefined ? {} : { seq }), metrics });
const dec = (seq: number | undefined, metrics: SpMetric[]): Payload => decodeSparkplugPayload(enc(seq, metrics));

t.test('sparkplug codec - scalar types encoded by sparkplug-payload decode to the same values', async (t) => {
  const metrics: SpMetric[] = [
    { name: 'i8', type: 'Int8', value: -5 },
    { name: 'i16', type: 'Int16', value: -1234 },
    { name: 'i32', type: 'Int32', value: -2_000_000_000 },
    { name: 'i64', type: 'Int64', value: -7 },
    { name: 'u8', type: 'UInt8', value: 250 },
    { name: 'u16', type: 'UInt16', value: 65535 },
    { name: 'u32', type: 'UInt32', value: 4_000_000_000 },
    { name: 'u64', type: 'UInt64', value: 9_007_199_254_740_991 },
    { name: 'f', type: 'Float', value: 1.5 },
    { name: 'd', type: 'Double', value: -273.15 },
    { name: 'b', type: 'Boolean', value: true },
    { name: 's', type: 'String', value: 'grüße' },
    { name: 'n', type: 'Int32', value: null, isNull: true },
  ];
  const p = dec(7, metrics);
  t.equal(p.seq, 7n);
  t.equal(p.timestamp, 1_700_000_000_000n);
  const got = Object.fromEntries(p.metrics.map((m) => [m.name, metricValue(m, undefined)]));
  t.same(got, { i8: -5, i16: -1234, i32: -2_000_000_000, i64: -7, u8: 250, u16: 65535, u32: 4_000_000_000, u64: 9_007_199_254_740_991, f: 1.5, d: -273.15, b: true, s: 'grüße', n: undefined });
});

t.test('sparkplug codec - aliases, historical flags and the datatype from the birth', async (t) => {
  const p = dec(1, [{ alias: 3, type: 'Int16', value: -2 }, { name: 'x', alias: 4, type: 'Boolean', value: false, isHistorical: true }]);
  t.equal(p.metrics[0]!.alias, 3n);
  t.equal(p.metrics[0]!.name, undefined);
  t.equal(p.metrics[1]!.isHistorical, true);
  t.equal(p.metrics[0]!.isHistorical, false);
  // Without a datatype of its own, a negative Int16 needs the birth's datatype to read as signed.
  const { datatype, ...m } = p.metrics[0]!;
  t.equal(datatype, 2, 'sparkplug-payload sent the datatype');
  t.equal(metricValue(m, 2), -2);
});

t.test('sparkplug codec - malformed payloads are ERR_SPARKPLUG_PAYLOAD, never a crash', async (t) => {
  const good = enc(1, [{ name: 'a', type: 'String', value: 'hello' }]);
  for (let cut = 1; cut < good.length; cut++) {
    let ok = false;
    try {
      decodeSparkplugPayload(good.subarray(0, cut));
      ok = true; // a prefix that ends on a field boundary is a valid (shorter) payload
    } catch (e) {
      ok = isQisError(e) && e.code === 'ERR_SPARKPLUG_PAYLOAD';
    }
    t.ok(ok, `truncated at ${cut}`);
  }
  t.throws(() => decodeSparkplugPayload(Uint8Array.of(0x0b)), { code: 'ERR_SPARKPLUG_PAYLOAD' }, 'wire type 3 (group)');
  t.throws(() => decodeSparkplugPayload(Uint8Array.of(0x12, 0x7f, 0x00)), { code: 'ERR_SPARKPLUG_PAYLOAD' }, 'length beyond the end');
  t.throws(() => decodeSparkplugPayload(Uint8Array.of(0x08, ...new Array<number>(11).fill(0xff))), { code: 'ERR_SPARKPLUG_PAYLOAD' }, 'varint too long');
  // Tahu's decoder (protobufjs) reads invalid UTF-8 leniently, as every Tahu-based host does.
  t.equal(decodeSparkplugPayload(Uint8Array.of(0x12, 0x03, 0x0a, 0x01, 0xff)).metrics[0]!.name, '\ufffd', 'invalid UTF-8 in a name: U+FFFD');
  t.throws(() => decodeSparkplugPayload(Uint8Array.of(0x12, 0x04, 0x0a, 0x05, 0x61, 0x62)), { code: 'ERR_SPARKPLUG_PAYLOAD' }, 'a string running past its message');
  t.throws(() => decodeSparkplugPayload(new Uint8Array(MAX_PAYLOAD_BYTES + 1)), { code: 'ERR_SPARKPLUG_PAYLOAD', message: /more than/ }, 'a payload over the bound');
  // Templates nested 17 deep: refused by the bound, not by the stack.
  let nested: SpMetric = { name: 'x', type: 'Int32', value: 1 };
  for (let i = 0; i < MAX_TEMPLATE_DEPTH + 1; i++) nested = { name: `t${i}`, type: 'Template', value: { isDefinition: false, metrics: [nested] } };
  t.throws(() => dec(1, [nested]), { code: 'ERR_SPARKPLUG_PAYLOAD', message: /nested deeper than 16/ }, 'templates nested too deep');
  t.throws(() => parseSparkplugTopic('spBv1.0/g/NOPE/e'), { code: 'ERR_SPARKPLUG_PAYLOAD' });
  t.same(parseSparkplugTopic('spBv1.0/g/DDATA/e/d'), { group: 'g', type: 'DDATA', edgeNode: 'e', device: 'd' });
});

t.test('sparkplug codec - random and mutated bytes: a payload (that the edge-node state takes) or ERR_SPARKPLUG_PAYLOAD, nothing else', async (t) => {
  const rnd = prng(6);
  const good = enc(9, [{ name: 'a', alias: 1, type: 'Int16', value: -3 }, { name: 'b', type: 'Double', value: 2.5 }, { name: 's', type: 'String', value: 'x' },
    { name: 'm', type: 'Template', value: { isDefinition: false, metrics: [{ name: 'a', type: 'Int8', value: -1 }] } },
    { name: 'r', type: 'DataSet', value: { numOfColumns: 2, columns: ['x', 'y'], types: ['Int32', 'String'], rows: [[1, 'a']] } }]);
  let other = 0;
  const state = new EdgeNodeState();
  for (let i = 0; i < 3000; i++) {
    let b: Uint8Array;
    if (i % 2 === 0) {
      b = Uint8Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256));
    } else {
      b = good.slice();
      for (let k = 0; k < 1 + Math.floor(rnd() * 3); k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
    }
    try {
      const p = decodeSparkplugPayload(b);
      for (const m of p.metrics) metricValue(m, undefined);
      state.handle(i % 3 === 0 ? 'NBIRTH' : i % 3 === 1 ? 'DBIRTH' : 'DDATA', 'd', p); // births and data of junk: tables, spreading
    } catch (e) {
      if (!(isQisError(e) && e.code === 'ERR_SPARKPLUG_PAYLOAD')) other++;
    }
  }
  t.equal(other, 0, 'no other error');
});

t.test('sparkplug codec - a DATA metric without a datatype (as Sparkplug 3.0 sends it) is read with its birth datatype', async (t) => {
  // Tahu's schema-level encoder: a metric with an alias and an int_value, no datatype.
  const data = tahuPayload.encode({ seq: 2, metrics: [{ alias: 2, intValue: 0xfffe }] }).finish();
  t.equal(sp.decodePayload(data).metrics[0]!.value, null, "Tahu's host-level decodePayload loses it (no datatype): why the bridge reads the schema level");
  const s = new EdgeNodeState();
  s.handle('NBIRTH', undefined, dec(0, []));
  s.handle('DBIRTH', 'press', dec(1, [{ name: 'Delta', alias: 2, type: 'Int16', value: 0 }]));
  t.match(s.handle('DDATA', 'press', decodeSparkplugPayload(data)), { kind: 'update', values: new Map([['Delta', -2]]) });
});

t.test('edge node state - Template members and DataSet cells become values; Bytes is unusable', async (t) => {
  const s = new EdgeNodeState();
  s.handle('NBIRTH', undefined, dec(0, [{ name: '_types_/Motor', type: 'Template', value: { isDefinition: true, metrics: [{ name: 'Amps', type: 'Float', value: 0 }] } }]));
  const birth = s.handle('DBIRTH', 'press', dec(1, [
    { name: 'Motor', alias: 1, type: 'Template', value: { isDefinition: false, templateRef: '_types_/Motor', metrics: [{ name: 'Amps', type: 'Float', value: 12.5 }, { name: 'Trips', type: 'Int16', value: -3 }, { name: 'Fan', type: 'Template', value: { isDefinition: false, metrics: [{ name: 'On', type: 'Boolean', value: true }] } }] } },
    { name: 'Recipe', alias: 2, type: 'DataSet', value: { numOfColumns: 2, columns: ['Step', 'Temp'], types: ['Int32', 'Double'], rows: [[1, 80.5], [2, 95]] } },
    { name: 'Blob', alias: 3, type: 'Bytes', value: Uint8Array.of(1, 2, 3) },
  ]));
  if (birth.kind !== 'update') return t.fail(JSON.stringify(birth));
  t.same(Object.fromEntries(birth.values), { 'Motor/Amps': 12.5, 'Motor/Trips': -3, 'Motor/Fan/On': true, 'Recipe/rows': 2, 'Recipe/0/Step': 1, 'Recipe/0/Temp': 80.5, 'Recipe/1/Step': 2, 'Recipe/1/Temp': 95 });
  t.same(Object.fromEntries(birth.unusable), { Blob: 'Bytes cannot drive a rule' });
  // DATA by alias, members without datatypes (the birth's are used): Trips 0xfffd reads as -3 only as Int16.
  const data = tahuPayload.encode({ seq: 2, metrics: [{ alias: 1, templateValue: { metrics: [{ name: 'Trips', intValue: 0xfffd }] } }, { alias: 3, bytesValue: Uint8Array.of(9) }] }).finish();
  const r = s.handle('DDATA', 'press', decodeSparkplugPayload(data));
  if (r.kind !== 'update') return t.fail(JSON.stringify(r));
  t.same(Object.fromEntries(r.values), { 'Motor/Trips': -3 });
  t.same(Object.fromEntries(r.unusable), { Blob: 'Bytes cannot drive a rule' });
});

t.test('sparkplug codec - the rebirth request decodes with sparkplug-payload as Node Control/Rebirth = true', async (t) => {
  const p = sp.decodePayload(encodeRebirthRequest(1_700_000_000_123));
  t.equal(p.metrics.length, 1);
  t.equal(p.metrics[0]!.name, 'Node Control/Rebirth');
  t.equal(p.metrics[0]!.type, 'Boolean');
  t.equal(p.metrics[0]!.value, true);
});

t.test('edge node state - births, seq wrap 255 → 0, and live values', async (t) => {
  const s = new EdgeNodeState();
  const birth = s.handle('NBIRTH', undefined, dec(0, [{ name: 'bdSeq', type: 'UInt64', value: 0 }, { name: 'Temp', alias: 1, type: 'Float', value: 20 }]));
  t.match(birth, { kind: 'update', birth: true });
  t.equal((birth as unknown as { values: Map<string, unknown> }).values.get('Temp'), 20);
  t.match(s.handle('DBIRTH', 'press', dec(1, [{ name: 'Fault', alias: 2, type: 'UInt16', value: 0 }])), { kind: 'update', device: 'press', birth: true });
  let seq = 2;
  for (let i = 0; i < 300; i++) {
    const r = s.handle('DDATA', 'press', dec(seq, [{ alias: 2, type: 'UInt16', value: i }]));
    if (r.kind !== 'update' || r.values.get('Fault') !== i) return t.fail(`message ${i} (seq ${seq}): ${JSON.stringify(r)}`);
    seq = (seq + 1) % 256;
  }
  t.pass('300 DDATA messages across the 255 → 0 wrap, aliases resolved');
  t.match(s.handle('NDATA', undefined, dec(seq, [{ alias: 1, type: 'Float', value: 21.5 }])), { kind: 'update', values: new Map([['Temp', 21.5]]) });
});

t.test('edge node state - a seq gap, an unknown alias, or data before a birth asks for a rebirth', async (t) => {
  const s = new EdgeNodeState();
  t.match(s.handle('DDATA', 'press', dec(5, [{ alias: 2, type: 'UInt16', value: 1 }])), { kind: 'rebirth', reason: /before an NBIRTH/ });
  s.handle('NBIRTH', undefined, dec(0, [{ name: 'Temp', alias: 1, type: 'Float', value: 20 }]));
  s.handle('DBIRTH', 'press', dec(1, [{ name: 'Fault', alias: 2, type: 'UInt16', value: 0 }]));
  t.match(s.handle('DDATA', 'press', dec(3, [{ alias: 2, type: 'UInt16', value: 1 }])), { kind: 'rebirth', reason: /seq gap: expected 2, got 3/ });
  t.notOk(s.born, 'after a gap nothing is trusted until the next NBIRTH');
  t.match(s.handle('DDATA', 'press', dec(4, [{ alias: 2, type: 'UInt16', value: 1 }])), { kind: 'rebirth' }, 'still waiting for the birth');
  s.handle('NBIRTH', undefined, dec(0, [{ name: 'Temp', alias: 1, type: 'Float', value: 20 }]));
  s.handle('DBIRTH', 'press', dec(1, [{ name: 'Fault', alias: 2, type: 'UInt16', value: 0 }]));
  t.match(s.handle('DDATA', 'press', dec(2, [{ alias: 9, type: 'UInt16', value: 1 }])), { kind: 'rebirth', reason: /unknown alias 9/ });
  t.notOk(s.born);
  t.match(s.handle('DDATA', 'other', dec(0, [{ alias: 2, type: 'UInt16', value: 1 }])), { kind: 'rebirth' });
});

t.test('edge node state - historical metrics never overwrite live values', async (t) => {
  const s = new EdgeNodeState();
  s.handle('NBIRTH', undefined, dec(0, []));
  s.handle('DBIRTH', 'press', dec(1, [{ name: 'Fault', alias: 2, type: 'UInt16', value: 0 }]));
  const r = s.handle('DDATA', 'press', dec(2, [{ alias: 2, type: 'UInt16', value: 7, isHistorical: true }]));
  t.match(r, { kind: 'update', historical: 1 });
  t.notOk((r as unknown as { values: Map<string, unknown> }).values.has('Fault'), 'the historical value is not a live value');
  const live = s.handle('DDATA', 'press', dec(3, [{ alias: 2, type: 'UInt16', value: 3, isHistorical: true }, { alias: 2, type: 'UInt16', value: 0 }]));
  t.same([...(live as unknown as { values: Map<string, unknown> }).values], [['Fault', 0]]);
});

t.test('edge node state - NDEATH forgets the node; DDEATH keeps seq running', async (t) => {
  const s = new EdgeNodeState();
  s.handle('NBIRTH', undefined, dec(0, []));
  s.handle('DBIRTH', 'press', dec(1, [{ name: 'Fault', alias: 2, type: 'UInt16', value: 0 }]));
  t.match(s.handle('DDEATH', 'press', dec(2, [])), { kind: 'death', device: 'press' });
  t.match(s.handle('DDATA', 'press', dec(3, [{ alias: 2, type: 'UInt16', value: 1 }])), { kind: 'rebirth', reason: /without its DBIRTH/ });
  s.handle('NBIRTH', undefined, dec(0, [{ name: 'bdSeq', type: 'UInt64', value: 4 }]));
  t.match(s.handle('NDEATH', undefined, dec(undefined, [{ name: 'bdSeq', type: 'UInt64', value: 3 }])), { kind: 'ignored', reason: /bdSeq 3/ }, "an earlier session's will");
  t.ok(s.born, 'the current session stays');
  t.match(s.handle('NDEATH', undefined, dec(undefined, [{ name: 'bdSeq', type: 'UInt64', value: 4 }])), { kind: 'death' });
  t.notOk(s.born);
});
