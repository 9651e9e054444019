/**
 * The fast path of packet decoding (src/protocol/packet-fast.ts) against the full decoder
 * (decodePacket, which never takes it): on every input it reads, it must yield what the full
 * decoder yields, and it must read nothing the full decoder refuses (those go to the full decoder,
 * which refuses them with its codes). Checked on the protocol vectors, on packets of every field
 * form, and on many thousands of mutations of them.
 */
import t from 'tap';
import {
  CborTag,
  QisError,
  address,
  checkPacket,
  decodePacket,
  encodeCbor,
  encodePayload,
  outcomeTopic,
  sigStructure,
  signEd25519,
  signPacket,
  utf8Bytes,
  type DecodedPacket,
  type PacketFields,
} from '../src/index.js';
import { EMPTY_EXTRA, readCanonical, type FastPacket } from '../src/protocol/packet-fast.js';
import { bearing, situation, fixedKey } from './helpers/fixtures.js';
import { prng } from './helpers/prng.js';
import { hex, toHexString, vector } from './helpers/vectors.js';

const key = fixedKey(7);
const addr = address(bearing, situation);
const topic = outcomeTopic(addr, key.nodeId);
const NOW = 1_795_000_000_000;

/** A packet around any payload bytes, signed correctly, with protected header {1: alg}. */
function envelope(payload: Uint8Array, alg = -19): Uint8Array {
  const prot = encodeCbor(new Map([[1, alg]]));
  const sig = signEd25519(key, sigStructure(prot, utf8Bytes(topic), payload));
  return encodeCbor(new CborTag(18, [prot, new Map([[4, key.publicKey]]), payload, sig]));
}

const fields = (f: Partial<PacketFields>): PacketFields => ({ fp: addr.fp, seq: 7, ts: NOW, out: 'failure', ...f });
/** Valid packets of every field form the fast path reads. */
const valid: Uint8Array[] = [
  signPacket(key, topic, fields({ conf: 0.94, n: 3, ctx: { ambient_c: 21.5, rpm: 1480 } })),
  signPacket(key, topic, fields({ out: 42 })),
  signPacket(key, topic, fields({ out: -3.25, conf: 1, exp: 1_795_000_100 })),
  signPacket(key, topic, fields({ out: { mode: 'spall', depth_mm: 0.4, 'ünï': 'çödé', n: -7 } })),
  signPacket(key, topic, fields({ out: {}, ctx: {} })),
  signPacket(key, topic, { fp: addr.fp, seq: 8, ts: NOW, del: true }),
  signPacket(key, topic, fields({ del: true, seq: 2 ** 53 - 1, ts: 2 ** 40 })),
  envelope(encodePayload(fields({ conf: 0 })), -8),
  // Floats of every width and heads wider than needed, as another signer may write them:
  // {1: 1, 2: fp, 3: 7 (as 1a 00000007), 4: ts, 5: "x", 6: 0.5 (f9 3800), 8: {"a": 1.5 (fa 3fc00000)}}
  envelope(
    Uint8Array.from([
      0xa7, 0x01, 0x01, 0x02, 0x50, ...addr.fp, 0x03, 0x1a, 0, 0, 0, 7, 0x04, 0x1b, 0, 0, 0x01, 0xa1, 0xee, 0x56, 0x5e, 0x00,
      0x05, 0x61, 0x78, 0x06, 0xf9, 0x38, 0x00, 0x08, 0xa1, 0x61, 0x61, 0xfa, 0x3f, 0xc0, 0x00, 0x00,
    ]),
  ),
  ...vector<{ packet: { packet: string }[] }>('protocol-v1.json').packet.map((v) => hex(v.packet)),
];

/** A decoded packet's fields as plain data, for comparison. */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return `h'${toHexString(v)}'`;
  if (v instanceof Map) return { map: [...v].map(([k, x]) => [plain(k), plain(x)]) };
  if (typeof v === 'number' && Object.is(v, -0)) return '-0';
  if (typeof v === 'object' && v !== null) {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, plain((v as Record<string, unknown>)[k])]));
  }
  return v;
}

function fastView(f: FastPacket): unknown {
  return plain({ ...f.fields, alg: f.alg, publicKey: f.publicKey });
}
function fullView(p: DecodedPacket): unknown {
  const { nodeId: _n, size: _s, ...rest } = p;
  return plain(rest);
}

/** The full decoder's verdict: the packet, or the code it refuses with. */
function full(b: Uint8Array): DecodedPacket | string {
  try {
    return decodePacket(b);
  } catch (e) {
    if (e instanceof QisError) return e.code;
    throw e;
  }
}

t.test('every valid form is read, as the full decoder reads it', async (t) => {
  for (const [i, b] of valid.entries()) {
    const f = readCanonical(b);
    const d = full(b);
    if (!f || typeof d === 'string') {
      t.fail(`packet ${i}: fast ${f ? 'read' : 'did not read'} it, full ${typeof d === 'string' ? d : 'decoded'} it`);
      continue;
    }
    t.same(fastView(f), fullView(d), `packet ${i}: same fields`);
    t.equal(d.enrolment, undefined);
    const r = checkPacket(topic, b, { now: NOW });
    t.ok(r.ok || i >= valid.length - 2, `packet ${i} verifies`); // the vectors are on their own topics
  }
});

t.test('what it does not read goes to the full decoder, with the same verdict', async (t) => {
  const payload = (m: Map<number | string, unknown>): Uint8Array => envelope(encodeCbor(m as Map<never, never>));
  const ok = new Map<number | string, unknown>([[1, 1], [2, addr.fp], [3, 7], [4, NOW], [5, 'failure']]);
  const cases: [string, Uint8Array, string | 'ok'][] = [
    ['an unknown key (kept in extra)', payload(new Map([...ok, [11, 'x']])), 'ok'],
    ['a text key', payload(new Map([...ok, ['note', 1]])), 'ok'],
    ['a bigint in ctx', payload(new Map([...ok, [8, new Map([['big', 2n ** 60n]])]])), 'ok'],
    ['version 2', payload(new Map([...ok, [1, 2]])), 'ERR_UNSUPPORTED_VERSION'],
    ['no version', payload(new Map([...ok].filter(([k]) => k !== 1))), 'ERR_PAYLOAD_INVALID'],
    ['no ts', payload(new Map([...ok].filter(([k]) => k !== 4))), 'ERR_PAYLOAD_INVALID'],
    ['conf above 1', payload(new Map([...ok, [6, 1.5]])), 'ERR_PAYLOAD_INVALID'],
    ['n 0', payload(new Map([...ok, [7, 0]])), 'ERR_PAYLOAD_INVALID'],
    ['del not a boolean', payload(new Map([...ok, [10, 1]])), 'ERR_PAYLOAD_INVALID'],
    ['out NaN', payload(new Map([...ok, [5, Number.NaN]])), 'ERR_PAYLOAD_INVALID'],
    // {1: 1, 2: fp, 3: 7, 4: 1, 5: {"a": 1, "a": 2}}: a key twice in out's map
    ['a key twice', envelope(Uint8Array.from([0xa5, 1, 1, 2, 0x50, ...addr.fp, 3, 7, 4, 1, 5, 0xa2, 0x61, 0x61, 1, 0x61, 0x61, 2])), 'ERR_CBOR_MALFORMED'],
    // keys 3 and 2 swapped: not this path's order, but the full decoder accepts it
    ['keys out of order', envelope(Uint8Array.from([0xa5, 1, 1, 3, 7, 2, 0x50, ...addr.fp, 4, 1, 5, 0x61, 0x78])), 'ok'],
    ['invalid UTF-8', envelope(Uint8Array.from([0xa5, 1, 1, 2, 0x50, ...addr.fp, 3, 7, 4, 1, 5, 0x62, 0xc3, 0x28])), 'ERR_CBOR_MALFORMED'],
    ['a byte after the payload', envelope(Uint8Array.from([0xa5, 1, 1, 2, 0x50, ...addr.fp, 3, 7, 4, 1, 5, 0x61, 0x78, 0])), 'ERR_CBOR_MALFORMED'],
  ];
  for (const [name, b, want] of cases) {
    const f = readCanonical(b);
    const d = full(b);
    t.equal(typeof d === 'string' ? d : 'ok', want, `${name}: the full decoder's verdict`);
    if (typeof d === 'string' || d.extra.size > 0) t.equal(f, undefined, `${name}: not read by the fast path`);
    const r = checkPacket(topic, b, { now: NOW });
    t.equal(r.ok ? 'ok' : r.code, want, `${name}: checkPacket's verdict`);
  }
});

t.test('mutated packets: the fast path reads only what the full decoder accepts, and reads it the same', async (t) => {
  const rand = prng(15);
  const pick = (n: number): number => Math.floor(rand() * n);
  const INTERESTING = [0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1f, 0x20, 0x38, 0x40, 0x41, 0x50, 0x58, 0x5f, 0x60, 0x61, 0x78, 0x7f, 0x80, 0x9f, 0xa0, 0xa1, 0xbf, 0xc0, 0xd2, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xff];
  let read = 0;
  let refused = 0;
  let mismatches = 0;
  for (let i = 0; i < 30_000; i++) {
    const src = valid[pick(valid.length)] as Uint8Array;
    let b = Uint8Array.from(src);
    for (let m = 1 + pick(2); m > 0; m--) {
      // Mostly the payload, where the fast path reads values; sometimes the envelope.
      const at = rand() < 0.85 ? 42 + pick(Math.max(1, b.length - 42 - 66)) : pick(b.length);
      const op = pick(5);
      if (op === 0) b[at] = pick(256);
      else if (op === 1) b[at] = INTERESTING[pick(INTERESTING.length)] as number;
      else if (op === 2) b = b.subarray(0, at);
      else if (op === 3) b = Uint8Array.from([...b.subarray(0, at), INTERESTING[pick(INTERESTING.length)] as number, ...b.subarray(at)]);
      else b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + 1)]);
    }
    const f = readCanonical(b);
    const d = full(b);
    if (typeof d === 'string') {
      refused++;
      if (f !== undefined) {
        mismatches++;
        if (mismatches <= 5) t.fail(`read a packet the full decoder refuses (${d}): ${toHexString(b)}`);
      }
    } else if (f !== undefined) {
      read++;
      if (JSON.stringify(fastView(f)) !== JSON.stringify(fullView(d))) {
        mismatches++;
        if (mismatches <= 5) t.fail(`read differently from the full decoder: ${toHexString(b)}`);
      }
    }
  }
  t.equal(mismatches, 0, 'no mismatch');
  // The comparison is only worth something if both sides were exercised.
  t.ok(read > 1000, `the fast path read ${read} mutated packets`);
  t.ok(refused > 5000, `the full decoder refused ${refused} mutated packets`);
});

t.test('the shared empty extra map cannot be changed', async (t) => {
  const p = checkPacket(topic, valid[0] as Uint8Array, { now: NOW });
  t.ok(p.ok && p.packet.extra === EMPTY_EXTRA, 'a packet of the usual form has the shared empty map');
  t.throws(() => (EMPTY_EXTRA as Map<unknown, unknown>).set(1, 2));
  t.throws(() => (EMPTY_EXTRA as Map<unknown, unknown>).delete(1));
  t.throws(() => (EMPTY_EXTRA as Map<unknown, unknown>).clear());
  t.equal(EMPTY_EXTRA.size, 0);
});
