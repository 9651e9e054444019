import t from 'tap';
import {
  CborFloat,
  CborSimple,
  CborTag,
  QisError,
  address,
  createOutcomePacket,
  decodePacket,
  encodeCbor,
  encodePayload,
  outcomeTopic,
  sigStructure,
  signEd25519,
  signPacket,
  utf8Bytes,
  verifyPacket,
  type CborValue,
  type NodeKey,
  type PacketFields,
} from '../src/index.js';
import { bearing, situation, fixedKey } from './helpers/fixtures.js';
import { prng } from './helpers/prng.js';

const key = fixedKey(7);
const other = fixedKey(8);
const addr = address(bearing, situation);
const topic = outcomeTopic(addr, key.nodeId);
const NOW = 1_795_000_000_000;
const base: PacketFields = { fp: addr.fp, seq: 7, ts: NOW, out: 'failure', conf: 0.94, n: 3, ctx: { ambient_c: 21.5, rpm: 1480 } };

/** Signs arbitrary envelope parts correctly, so that only the part under test is wrong. */
function craft(
  payload: CborValue,
  opts: { key?: NodeKey; topic?: string; protectedMap?: CborValue; kid?: CborValue; tag?: number } = {},
): Uint8Array {
  const k = opts.key ?? key;
  const prot = encodeCbor(opts.protectedMap ?? new Map([[1, -19]]));
  const pay = payload instanceof Uint8Array ? payload : encodeCbor(payload);
  const sig = signEd25519(k, sigStructure(prot, utf8Bytes(opts.topic ?? topic), pay));
  return encodeCbor(new CborTag(opts.tag ?? 18, [prot, new Map([[4, opts.kid ?? k.publicKey]]), pay, sig]));
}
const payloadMap = (over: Array<[number, CborValue]> = [], drop: number[] = []): Map<CborValue, CborValue> => {
  const m = new Map<CborValue, CborValue>([[1, 1], [2, addr.fp], [3, 7], [4, NOW], [5, 'failure']]);
  for (const d of drop) m.delete(d);
  for (const [k, v] of over) m.set(k, v);
  return m;
};
const code = (fn: () => unknown): string => {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    if (e instanceof QisError) return e.code;
    throw e;
  }
};

t.test('packet - sign then verify round-trips every field, on both backends', async (t) => {
  const rnd = prng(42);
  for (let i = 0; i < 200; i++) {
    const f: PacketFields = {
      fp: addr.fp,
      seq: Math.floor(rnd() * Number.MAX_SAFE_INTEGER),
      ts: Math.floor(rnd() * 2 ** 42),
      out: i % 3 === 0 ? 'no_failure' : i % 3 === 1 ? rnd() * 1e4 - 5e3 : { hours: Math.floor(rnd() * 1e5), mode: 'spall' },
      ...(i % 2 ? { conf: rnd() } : {}),
      ...(i % 4 ? { n: 1 + Math.floor(rnd() * 1000) } : {}),
      ...(i % 5 ? { ctx: { rpm: Math.floor(rnd() * 3000), ambient_c: rnd() * 40 - 10 } } : {}),
      ...(i % 7 === 0 ? { exp: Math.floor(NOW / 1000) + 3600 } : {}),
    };
    const backend = i % 2 ? 'node' : 'noble';
    const bytes = signPacket(key, topic, f, { backend });
    const p = verifyPacket(topic, bytes, { now: NOW, backend: i % 2 ? 'noble' : 'node', expectFp: addr.fp });
    const want = { seq: f.seq, ts: f.ts, out: f.out, conf: f.conf ?? 1, n: f.n ?? 1, ctx: f.ctx, exp: f.exp, del: false };
    const got = { seq: p.seq, ts: p.ts, out: p.out, conf: p.conf, n: p.n, ctx: p.ctx, exp: p.exp, del: p.del };
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      t.same(got, want, `round trip ${i}`);
      return;
    }
    t.equal(p.nodeId, key.nodeId);
    t.same(p.levels, addr.levels);
  }
});

t.test('packet - every single-bit flip and every truncation is refused', async (t) => {
  const bytes = signPacket(key, topic, base);
  const codes = new Map<string, number>();
  let accepted = 0;
  for (let i = 0; i < bytes.length; i++) {
    for (let b = 0; b < 8; b++) {
      const m = bytes.slice();
      m[i]! ^= 1 << b;
      const c = code(() => verifyPacket(topic, m, { now: NOW }));
      if (c === 'accepted') accepted++;
      codes.set(c, (codes.get(c) ?? 0) + 1);
    }
  }
  t.equal(accepted, 0, `${bytes.length * 8} flips, none accepted; codes: ${JSON.stringify([...codes])}`);
  t.ok(codes.get('ERR_BAD_SIGNATURE')! > bytes.length * 4, 'most flips land in signed bytes');
  for (let n = 0; n < bytes.length; n++) {
    const c = code(() => verifyPacket(topic, bytes.subarray(0, n), { now: NOW }));
    if (c === 'accepted') t.fail(`truncation to ${n} accepted`);
  }
  t.equal(code(() => verifyPacket(topic, bytes.subarray(0, 0))), 'ERR_PACKET_EMPTY');
  t.equal(code(() => verifyPacket(topic, bytes, { now: NOW })), 'accepted', 'the original still verifies');
});

t.test('packet - bound to its topic: another cohort or another node refuses it', async (t) => {
  const bytes = signPacket(key, topic, base);
  const elsewhere = outcomeTopic(address(bearing, { ...situation, sealed: false }), key.nodeId);
  t.equal(code(() => verifyPacket(elsewhere, bytes, { now: NOW })), 'ERR_BAD_SIGNATURE', 'replayed into another bucket');
  t.equal(code(() => verifyPacket(outcomeTopic(addr, other.nodeId), bytes, { now: NOW })), 'ERR_NODE_MISMATCH', 'on another node\'s topic');
  t.equal(code(() => verifyPacket('qis/1/o/x', bytes)), 'ERR_TOPIC_INVALID');
  t.equal(code(() => verifyPacket(topic, bytes, { depth: 3, now: NOW })), 'ERR_TOPIC_INVALID', 'depth of a known template');
  t.equal(code(() => signPacket(other, topic, base)), 'ERR_NODE_MISMATCH', 'a key cannot sign for another node');
  t.equal(code(() => verifyPacket(topic, bytes, { now: NOW, expectFp: new Uint8Array(16) })), 'ERR_FP_MISMATCH');
  // A valid signature by the topic's own node over a foreign fp: a querier of the exact cohort drops it.
  const foreignFp = craft(payloadMap([[2, new Uint8Array(16).fill(9)]]));
  t.equal(code(() => verifyPacket(topic, foreignFp, { now: NOW })), 'accepted');
  t.equal(code(() => verifyPacket(topic, foreignFp, { now: NOW, expectFp: addr.fp })), 'ERR_FP_MISMATCH');
});

t.test('packet - tombstones, expiry and clock skew', async (t) => {
  const tomb = signPacket(key, topic, { fp: addr.fp, seq: 8, ts: NOW, del: true });
  const p = verifyPacket(topic, tomb, { now: NOW });
  t.equal(p.del, true);
  t.equal(p.out, undefined);
  t.equal(code(() => encodePayload({ fp: addr.fp, seq: 1, ts: 1 })), 'ERR_OUTCOME_INVALID', 'no out and no del');
  const exp = Math.floor(NOW / 1000) + 10;
  const e = signPacket(key, topic, { ...base, exp });
  t.equal(code(() => verifyPacket(topic, e, { now: exp * 1000 })), 'accepted', 'valid through its exp second');
  t.equal(code(() => verifyPacket(topic, e, { now: exp * 1000 + 1 })), 'ERR_EXPIRED');
  const future = signPacket(key, topic, { ...base, ts: NOW + 400_000 });
  t.equal(code(() => verifyPacket(topic, future, { now: NOW, maxSkewMs: 300_000 })), 'ERR_TS_FUTURE');
  t.equal(code(() => verifyPacket(topic, future, { now: NOW, maxSkewMs: 500_000 })), 'accepted');
  t.equal(code(() => verifyPacket(topic, future, { now: NOW })), 'accepted', 'no skew check unless asked');
});

t.test('packet - the 512-byte cap, for signing and before decoding', async (t) => {
  const ctx: Record<string, number> = {};
  for (let i = 0; i < 40; i++) ctx[`sensor_${i}`] = i + 0.5;
  t.equal(code(() => signPacket(key, topic, { ...base, ctx })), 'ERR_PACKET_TOO_LARGE');
  t.equal(code(() => verifyPacket(topic, new Uint8Array(513).fill(0xff))), 'ERR_PACKET_TOO_LARGE', 'garbage over the cap is not parsed');
  t.equal(code(() => decodePacket(new Uint8Array(600))), 'ERR_PACKET_TOO_LARGE');
  // Exactly 512 bytes is allowed: pad an outcome map until the packet is 512 bytes.
  const sized = (pad: number): Uint8Array | undefined => {
    try {
      return signPacket(key, topic, { ...base, out: { note: 'x'.repeat(pad) } });
    } catch {
      return undefined;
    }
  };
  let pad = 0;
  while (sized(pad + 1)) pad++;
  const bytes = sized(pad) as Uint8Array;
  t.equal(bytes.length, 512, 'the largest packet that signs is exactly 512 bytes');
  t.equal(code(() => signPacket(key, topic, { ...base, out: { note: 'x'.repeat(pad + 1) } })), 'ERR_PACKET_TOO_LARGE');
  t.equal(code(() => verifyPacket(topic, bytes, { now: NOW })), 'accepted');
});

t.test('packet - COSE envelope: -8 accepted, other algs and shapes refused', async (t) => {
  t.equal(code(() => verifyPacket(topic, craft(payloadMap(), { protectedMap: new Map([[1, -8]]) }), { now: NOW })), 'accepted', 'EdDSA (-8)');
  t.equal(code(() => verifyPacket(topic, craft(payloadMap(), { protectedMap: new Map([[1, -7]]) }), { now: NOW })), 'ERR_UNSUPPORTED_ALG');
  t.equal(code(() => verifyPacket(topic, craft(payloadMap(), { protectedMap: new Map([[3, 0]]) }), { now: NOW })), 'ERR_COSE_MALFORMED', 'no alg');
  t.equal(code(() => verifyPacket(topic, craft(payloadMap(), { tag: 98 }))), 'ERR_COSE_MALFORMED', 'COSE_Sign (98) is not Sign1');
  t.equal(code(() => verifyPacket(topic, craft(payloadMap(), { kid: new Uint8Array(31) }))), 'ERR_COSE_MALFORMED', 'short kid');
  t.equal(code(() => verifyPacket(topic, craft(payloadMap(), { kid: 'abc' }))), 'ERR_COSE_MALFORMED', 'text kid');
  t.equal(code(() => verifyPacket(topic, craft(payloadMap(), { key: other }))), 'ERR_NODE_MISMATCH', "another node's key");
  const untagged = encodeCbor([encodeCbor(new Map([[1, -19]])), new Map([[4, key.publicKey]]), encodeCbor(payloadMap()), new Uint8Array(64)]);
  t.equal(code(() => verifyPacket(topic, untagged)), 'ERR_COSE_MALFORMED', 'untagged');
  t.equal(code(() => verifyPacket(topic, encodeCbor(new CborTag(18, [1, 2, 3, 4])))), 'ERR_COSE_MALFORMED', 'wrong item types');
  t.equal(code(() => verifyPacket(topic, Uint8Array.of(0xd2, 0x84, 0x40))), 'ERR_CBOR_MALFORMED', 'truncated');
  const sigShort = encodeCbor(new CborTag(18, [encodeCbor(new Map([[1, -19]])), new Map([[4, key.publicKey]]), encodeCbor(payloadMap()), new Uint8Array(63)]));
  t.equal(code(() => verifyPacket(topic, sigShort)), 'ERR_BAD_SIGNATURE', '63-byte signature');
});

t.test('packet - wrong types in any payload field are refused with a code, after the signature', async (t) => {
  const cases: Array<[string, Map<CborValue, CborValue> | Uint8Array, string]> = [
    ['payload not a map', encodeCbor([1, 2, 3]), 'ERR_PAYLOAD_INVALID'],
    ['payload not CBOR', Uint8Array.of(0xa1, 0x01), 'ERR_CBOR_MALFORMED'],
    ['v missing', payloadMap([], [1]), 'ERR_PAYLOAD_INVALID'],
    ['v = 2', payloadMap([[1, 2]]), 'ERR_UNSUPPORTED_VERSION'],
    ['v text', payloadMap([[1, '1']]), 'ERR_PAYLOAD_INVALID'],
    ['fp 15 bytes', payloadMap([[2, new Uint8Array(15)]]), 'ERR_PAYLOAD_INVALID'],
    ['fp text', payloadMap([[2, 'abc']]), 'ERR_PAYLOAD_INVALID'],
    ['seq missing', payloadMap([], [3]), 'ERR_PAYLOAD_INVALID'],
    ['seq negative', payloadMap([[3, -1]]), 'ERR_PAYLOAD_INVALID'],
    ['seq float', payloadMap([[3, 1.5]]), 'ERR_PAYLOAD_INVALID'],
    ['seq beyond 2^53', payloadMap([[3, 2n ** 60n]]), 'ERR_PAYLOAD_INVALID'],
    ['seq as the float 7.0', payloadMap([[3, new CborFloat(7)]]), 'ERR_PAYLOAD_INVALID'],
    ['v as the float 1.0', payloadMap([[1, new CborFloat(1)]]), 'ERR_PAYLOAD_INVALID'],
    ['n as the float 2.0', payloadMap([[7, new CborFloat(2)]]), 'ERR_PAYLOAD_INVALID'],
    ['ts missing', payloadMap([], [4]), 'ERR_PAYLOAD_INVALID'],
    ['ts text', payloadMap([[4, 'now']]), 'ERR_PAYLOAD_INVALID'],
    ['out missing', payloadMap([], [5]), 'ERR_PAYLOAD_INVALID'],
    ['out bytes', payloadMap([[5, new Uint8Array(2)]]), 'ERR_PAYLOAD_INVALID'],
    ['out array', payloadMap([[5, ['a']]]), 'ERR_PAYLOAD_INVALID'],
    ['out NaN', payloadMap([[5, NaN]]), 'ERR_PAYLOAD_INVALID'],
    ['out map with int key', payloadMap([[5, new Map([[1, 'x']])]]), 'ERR_PAYLOAD_INVALID'],
    ['out map with nested map', payloadMap([[5, new Map([['a', new Map()]])]]), 'ERR_PAYLOAD_INVALID'],
    ['out a tag', payloadMap([[5, new CborTag(1, 1795000000)]]), 'ERR_PAYLOAD_INVALID'],
    ['out a simple value', payloadMap([[5, new CborSimple(16)]]), 'ERR_PAYLOAD_INVALID'],
    ['ctx a tag', payloadMap([[8, new CborTag(259, new Map([['rpm', 1]]))]]), 'ERR_PAYLOAD_INVALID'],
    ['conf 1.5', payloadMap([[6, 1.5]]), 'ERR_PAYLOAD_INVALID'],
    ['conf text', payloadMap([[6, 'high']]), 'ERR_PAYLOAD_INVALID'],
    ['n 0', payloadMap([[7, 0]]), 'ERR_PAYLOAD_INVALID'],
    ['ctx not a map', payloadMap([[8, [1]]]), 'ERR_PAYLOAD_INVALID'],
    ['ctx text value', payloadMap([[8, new Map([['rpm', 'fast']])]]), 'ERR_PAYLOAD_INVALID'],
    ['exp negative', payloadMap([[9, -5]]), 'ERR_PAYLOAD_INVALID'],
    ['del 1', payloadMap([[10, 1]]), 'ERR_PAYLOAD_INVALID'],
    ['deeply nested unknown key', Uint8Array.from([0xa6, 1, 1, 2, 0x50, ...addr.fp, 3, 7, 4, 0x1b, ...Buffer.from('000001a1ee565e00', 'hex'), 5, 0x61, 0x78, 0x18, 99, ...new Array(40).fill(0x81), 0]), 'ERR_CBOR_MALFORMED'],
  ];
  for (const [what, payload, want] of cases) {
    t.equal(code(() => verifyPacket(topic, craft(payload), { now: NOW })), want, what);
  }
});

t.test('packet - del false from another signer reads as no tombstone; out and ctx take big integers and odd keys', async (t) => {
  t.equal(verifyPacket(topic, craft(payloadMap([[10, false]])), { now: NOW }).del, false);
  const big = verifyPacket(topic, craft(payloadMap([[5, new Map([['k', 2n ** 60n]])], [8, new Map([['rpm', 10n ** 19n]])]])), { now: NOW });
  t.same({ ...(big.out as object) }, { k: 2 ** 60 });
  t.same({ ...big.ctx }, { rpm: 1e19 });
  const signed = signPacket(key, topic, { ...base, ctx: { rpm: 1e19 }, out: -(2 ** 60) });
  t.equal(verifyPacket(topic, signed, { now: NOW }).out, -(2 ** 60), 'what we sign, we accept');
  const proto = JSON.parse('{"__proto__": "x", "y": 1}') as Record<string, string | number>;
  const p = verifyPacket(topic, signPacket(key, topic, { ...base, out: proto }), { now: NOW });
  t.same(Object.keys(p.out as object).sort(), ['__proto__', 'y'], 'a "__proto__" key is data');
  t.equal(verifyPacket(topic, craft(payloadMap([[5, new Map()]])), { now: NOW }).out !== undefined, true, 'an empty out map is a map');
});

t.test('packet - number fields accept any width: conf, ctx and out as float64 even when whole', async (t) => {
  const p = verifyPacket(topic, craft(payloadMap([[5, new CborFloat(12)], [6, new CborFloat(1)], [8, new Map([['rpm', new CborFloat(1480)]])]])), { now: NOW });
  t.equal(p.out, 12);
  t.equal(p.conf, 1);
  t.same(p.ctx, { rpm: 1480 });
});

t.test('packet - unknown payload keys are kept (signed) and ignored', async (t) => {
  const p = verifyPacket(topic, craft(payloadMap([[42, 'future'], [11, new Map([['x', 1]])]])), { now: NOW });
  t.equal(p.extra.get(42), 'future');
  t.equal(p.extra.size, 2);
  t.equal(p.out, 'failure');
});

t.test('packet - createOutcomePacket checks outcome and context against the template', async (t) => {
  const ok = createOutcomePacket({ key, template: bearing, situation, outcome: 'failure', seq: 1, ts: NOW, ctx: { rpm: 1 } });
  t.equal(ok.topic, topic);
  t.equal(verifyPacket(ok.topic, ok.packet, { now: NOW, expectFp: addr.fp }).out, 'failure');
  t.equal(code(() => createOutcomePacket({ key, template: bearing, situation, outcome: 'exploded', seq: 1, ts: NOW })), 'ERR_OUTCOME_INVALID');
  t.equal(code(() => createOutcomePacket({ key, template: bearing, situation, outcome: 3, seq: 1, ts: NOW })), 'ERR_OUTCOME_INVALID');
  t.equal(code(() => createOutcomePacket({ key, template: bearing, situation, seq: 1, ts: NOW })), 'ERR_OUTCOME_INVALID', 'no outcome');
  t.equal(code(() => createOutcomePacket({ key, template: bearing, situation, outcome: 'failure', seq: 1, ts: NOW, ctx: { voltage: 3 } })), 'ERR_PACKET_FIELD');
  const tomb = createOutcomePacket({ key, template: bearing, situation, seq: 2, ts: NOW, del: true });
  t.equal(verifyPacket(tomb.topic, tomb.packet, { now: NOW }).del, true);
  for (const [what, f] of [
    ['conf > 1', { conf: 1.01 }],
    ['conf NaN', { conf: NaN }],
    ['n 0', { n: 0 }],
    ['n fractional', { n: 1.5 }],
    ['seq negative', { seq: -1 }],
    ['seq unsafe', { seq: 2 ** 53 }],
    ['ts fractional', { ts: 1.5 }],
    ['exp negative', { exp: -1 }],
    ['ctx NaN', { ctx: { rpm: NaN } }],
    ['fp short', { fp: new Uint8Array(4) }],
  ] as const) {
    t.equal(code(() => encodePayload({ ...base, ...f } as PacketFields)), 'ERR_PACKET_FIELD', what);
  }
});

t.test('packet - decodePacket reads a packet without a topic', async (t) => {
  const bytes = signPacket(key, topic, base);
  const p = decodePacket(bytes);
  t.equal(p.nodeId, key.nodeId);
  t.equal(p.seq, 7);
  t.same(p.ctx, { ambient_c: 21.5, rpm: 1480 });
  t.equal(p.size, bytes.length);
});
