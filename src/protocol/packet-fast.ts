/**
 * The fast path of packet decoding (issue 15): a reader of the one form every conforming signer
 * writes (signEnvelope, PROTOCOL §5), straight from the bytes: no CBOR Maps, tags or float
 * wrappers, no `extra` Map built per packet. It decides nothing: anything it does not recognise,
 * and any value a check of decodeSign1 / kidOf / decodePayload would refuse, makes it answer
 * undefined, and the caller runs the full decoder (cbor-decode.ts), which refuses with its codes.
 * So a packet is accepted or refused, with the same code, whichever path read it; when this path
 * reads it, it yields what the full decoder would (test/packet-fast.test.ts compares the two on
 * the vectors and on mutated packets).
 *
 * Recognised: 18([h'a10132' or h'a10127', {4: kid(32)}, payload, signature(64)]), nothing after,
 * and a payload map of unsigned integer keys 1..10 in ascending order (so none twice) with the
 * types PROTOCOL §5 gives them. Heads may take any width the full decoder reads as the same
 * number; indefinite lengths, integers beyond 2^53 and unknown keys go to the full decoder.
 */
import { halfToNumber } from './cbor-decode.js';
import type { CborValue } from './cbor-value.js';
import type { Outcome, PayloadFields } from './payload-fields.js';

/** What the fast path read: the parts of a COSE_Sign1 and its payload's fields. */
export interface FastPacket {
  readonly protectedBytes: Uint8Array;
  readonly alg: -19 | -8;
  readonly publicKey: Uint8Array;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
  readonly fields: PayloadFields;
}

/**
 * The `extra` of every packet this path reads (it has no unknown keys): one object, not a Map per
 * packet. Read-only, so that no caller's change can show up in another packet.
 */
class EmptyExtra extends Map<CborValue, CborValue> {
  override set(): this {
    throw new TypeError('a packet\'s extra map is read-only');
  }
  override delete(): boolean {
    throw new TypeError('a packet\'s extra map is read-only');
  }
  override clear(): void {
    throw new TypeError('a packet\'s extra map is read-only');
  }
}
export const EMPTY_EXTRA: ReadonlyMap<CborValue, CborValue> = Object.freeze(new EmptyExtra());

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const f64 = new DataView(new ArrayBuffer(8));

/** `n` bytes at `b[s..]` as UTF-8 text, or undefined when they are not valid UTF-8. */
function decodeText(b: Uint8Array, s: number, n: number): string | undefined {
  let ascii = true;
  for (let i = s; i < s + n; i++) {
    if ((b[i] as number) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return String.fromCharCode.apply(null, b.subarray(s, s + n) as unknown as number[]);
  try {
    return textDecoder.decode(b.subarray(s, s + n));
  } catch {
    return undefined;
  }
}

/** Recently decoded short texts, by slot (a hash of length, first and last byte): bounded, one compare a lookup. */
const RECENT_SLOTS = 64;
const RECENT_MAX_BYTES = 32;
const recentBytes: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(RECENT_SLOTS).fill(undefined);
const recentTexts: string[] = new Array<string>(RECENT_SLOTS).fill('');

/** A cursor over `b[p..end)`; every read checks its bounds. `NO` (−1): not on this path. */
const NO = -1;
class Cursor {
  p: number;
  /** Major type of the last head read. */
  major = 0;
  constructor(
    readonly b: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    this.p = start;
  }

  /**
   * Reads a head: its major type into `major`, its argument returned (as the full decoder reads
   * it); NO for an indefinite length, a reserved form or an argument beyond 2^53−1. For major 7
   * the argument is not read: the caller reads the simple value or float itself.
   */
  head(): number {
    const b = this.b;
    if (this.p >= this.end) return NO;
    const ib = b[this.p++] as number;
    this.major = ib >> 5;
    const ai = ib & 31;
    if (this.major === 7) return ai;
    if (ai < 24) return ai;
    const left = this.end - this.p;
    const p = this.p;
    if (ai === 24) {
      if (left < 1) return NO;
      this.p += 1;
      return b[p] as number;
    }
    if (ai === 25) {
      if (left < 2) return NO;
      this.p += 2;
      return ((b[p] as number) << 8) | (b[p + 1] as number);
    }
    if (ai === 26) {
      if (left < 4) return NO;
      this.p += 4;
      return (b[p] as number) * 0x1000000 + (((b[p + 1] as number) << 16) | ((b[p + 2] as number) << 8) | (b[p + 3] as number));
    }
    if (ai === 27) {
      if (left < 8) return NO;
      const hi = (b[p] as number) * 0x1000000 + (((b[p + 1] as number) << 16) | ((b[p + 2] as number) << 8) | (b[p + 3] as number));
      if (hi > 0x1fffff) return NO; // beyond 2^53−1: a bigint in the full decoder
      this.p += 8;
      return hi * 0x100000000 + ((b[p + 4] as number) * 0x1000000 + (((b[p + 5] as number) << 16) | ((b[p + 6] as number) << 8) | (b[p + 7] as number)));
    }
    return NO; // 28..30 reserved, 31 indefinite
  }

  /** An unsigned integer (major 0), or NO. */
  uint(): number {
    const v = this.head();
    return this.major === 0 ? v : NO;
  }

  /** The length of a definite byte or text string of major `major` that fits, or NO. */
  stringLength(major: number): number {
    const n = this.head();
    return this.major === major && n !== NO && n <= this.end - this.p ? n : NO;
  }

  /** A byte string (a view, as the full decoder gives), or undefined. */
  bytes(): Uint8Array | undefined {
    const n = this.stringLength(2);
    if (n === NO) return undefined;
    const v = this.b.subarray(this.p, this.p + n);
    this.p += n;
    return v;
  }

  /** A definite text string of valid UTF-8, or undefined. */
  text(): string | undefined {
    const n = this.stringLength(3);
    if (n === NO) return undefined;
    const b = this.b;
    const s = this.p;
    this.p += n;
    if (n === 0) return '';
    if (n > RECENT_MAX_BYTES) return decodeText(b, s, n);
    // ctx keys and out labels repeat from packet to packet: one compare with the last text of its slot.
    const slot = (n * 7 + (b[s] as number) + (b[s + n - 1] as number) * 3) & (RECENT_SLOTS - 1);
    const r = recentBytes[slot];
    if (r?.length === n) {
      let i = 0;
      while (i < n && r[i] === b[s + i]) i++;
      if (i === n) return recentTexts[slot];
    }
    const t = decodeText(b, s, n);
    if (t !== undefined) {
      recentBytes[slot] = b.slice(s, s + n);
      recentTexts[slot] = t;
    }
    return t;
  }


  /**
   * A number as the protocol reads one where it takes any number (packet.ts `num`): an integer
   * within ±(2^53−1) or a float of any width. NaN when it is something else (or not finite:
   * every field that takes a number refuses those, so they go to the full decoder).
   */
  number(): number {
    const b = this.b;
    const v = this.head();
    if (v === NO) return Number.NaN;
    if (this.major === 0) return v;
    if (this.major === 1) return v < MAX_SAFE ? -1 - v : Number.NaN;
    if (this.major !== 7) return Number.NaN;
    const width = v === 25 ? 2 : v === 26 ? 4 : v === 27 ? 8 : 0;
    if (width === 0 || this.end - this.p < width) return Number.NaN;
    for (let i = 0; i < width; i++) f64.setUint8(i, b[this.p + i] as number);
    this.p += width;
    const x = width === 2 ? halfToNumber(f64.getUint16(0)) : width === 4 ? f64.getFloat32(0) : f64.getFloat64(0);
    return Number.isFinite(x) ? x : Number.NaN;
  }

  /** A text string or a finite number (a value of `out` or of its map), or undefined. */
  textOrNumber(): string | number | undefined {
    if (this.p >= this.end) return undefined;
    if ((this.b[this.p] as number) >> 5 === 3) return this.text();
    const x = this.number();
    return Number.isNaN(x) ? undefined : x;
  }

  /**
   * A definite map of distinct text keys to values read by `value` (as packet.ts checkMap builds
   * it: a null-prototype object), or undefined.
   */
  textMap<V>(value: (c: Cursor) => V | undefined): { [key: string]: V } | undefined {
    const n = this.head();
    if (this.major !== 5 || n === NO || n > this.end - this.p) return undefined;
    const obj = Object.create(null) as { [key: string]: V };
    for (let i = 0; i < n; i++) {
      const k = this.text();
      if (k === undefined || k in obj) return undefined; // a key twice: the full decoder refuses it
      const v = value(this);
      if (v === undefined) return undefined;
      obj[k] = v;
    }
    return obj;
  }
}

const finiteNumber = (c: Cursor): number | undefined => {
  const x = c.number();
  return Number.isNaN(x) ? undefined : x;
};
const textOrNumber = (c: Cursor): string | number | undefined => c.textOrNumber();

/** `out` (5): a text label, a finite number, or a map of text to text/number. */
function outcome(c: Cursor): Outcome | undefined {
  if (c.p >= c.end) return undefined;
  return (c.b[c.p] as number) >> 5 === 5 ? c.textMap(textOrNumber) : c.textOrNumber();
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The payload's fields, as decodePayload gives them, or undefined. */
function payloadFields(b: Uint8Array, start: number, end: number): PayloadFields | undefined {
  const c = new Cursor(b, start, end);
  const count = c.head();
  if (c.major !== 5 || count === NO || count > end - c.p) return undefined;
  let fp: Uint8Array | undefined;
  let seq = NO;
  let ts = NO;
  let out: Outcome | undefined;
  let conf = 1;
  let n = 1;
  let ctx: { [key: string]: number } | undefined;
  let exp = NO;
  let del: boolean | undefined;
  let last = 0;
  let seen = 0;
  for (let i = 0; i < count; i++) {
    const k = c.uint();
    if (k <= last || k > 10) return undefined; // unknown (extra), out of order or twice: the full decoder
    last = k;
    seen |= 1 << k;
    switch (k) {
      case 1:
        if (c.uint() !== 1) return undefined;
        break;
      case 2:
        fp = c.bytes();
        if (fp?.length !== 16) return undefined;
        break;
      case 3:
        if ((seq = c.uint()) === NO) return undefined;
        break;
      case 4:
        if ((ts = c.uint()) === NO) return undefined;
        break;
      case 5:
        if ((out = outcome(c)) === undefined) return undefined;
        break;
      case 6:
        conf = c.number();
        if (!(conf >= 0 && conf <= 1)) return undefined;
        break;
      case 7:
        if ((n = c.uint()) < 1) return undefined;
        break;
      case 8:
        if ((ctx = c.textMap(finiteNumber)) === undefined) return undefined;
        break;
      case 9:
        if ((exp = c.uint()) === NO) return undefined;
        break;
      default: {
        // 10: del, a boolean
        if (c.p >= end) return undefined;
        const ib = b[c.p++];
        if (ib === 0xf5) del = true;
        else if (ib === 0xf4) del = false;
        else return undefined;
      }
    }
  }
  // v, fp, seq and ts (keys 1 to 4) are required.
  if (c.p !== end || (seen & 0b11110) !== 0b11110 || fp === undefined || seq === NO || ts === NO) return undefined;
  if (out === undefined && del !== true) return undefined;
  // The same shape, built in the same order, as decodePayload's (V8 shares one hidden class).
  const p: Mutable<PayloadFields> = { v: 1, fp, seq, ts, conf, n, del: del === true, extra: EMPTY_EXTRA };
  if (out !== undefined) p.out = out;
  if (ctx !== undefined) p.ctx = ctx;
  if (exp !== NO) p.exp = exp;
  return p;
}

/**
 * The signer's public key (kid) of a packet that starts as the recognised form does (module
 * comment), as a view; undefined for any other start. Checks nothing else: a cheap look before
 * the full check, which may still refuse the packet (readCanonical starts with it).
 * 18([bstr .cbor {1: alg}, {4: bstr(32)}, ...]): d2 84 43 a1 01 (32|27) a1 04 58 20 <kid>.
 */
export function canonicalKid(b: Uint8Array): Uint8Array | undefined {
  if (b.length < 42 || b[0] !== 0xd2 || b[1] !== 0x84 || b[2] !== 0x43 || b[3] !== 0xa1 || b[4] !== 0x01) return undefined;
  if ((b[5] !== 0x32 && b[5] !== 0x27) || b[6] !== 0xa1 || b[7] !== 0x04 || b[8] !== 0x58 || b[9] !== 0x20) return undefined;
  return b.subarray(10, 42);
}

/**
 * Reads a packet of the recognised form (module comment); undefined for anything else, which the
 * caller hands to the full decoder. Checks no signature and no topic.
 */
export function readCanonical(b: Uint8Array): FastPacket | undefined {
  // The start canonicalKid reads, then at least a payload's head and the signature's 66 bytes.
  if (b.length < 42 + 1 + 66) return undefined;
  const publicKey = canonicalKid(b);
  if (!publicKey) return undefined;
  const algByte = b[5];
  const c = new Cursor(b, 42, b.length);
  const payloadLength = c.stringLength(2);
  if (payloadLength === NO) return undefined;
  const payloadAt = c.p;
  c.p += payloadLength;
  // The signature: 58 40 <64 bytes>, the last thing in the message.
  if (c.p + 66 !== b.length || b[c.p] !== 0x58 || b[c.p + 1] !== 0x40) return undefined;
  const fields = payloadFields(b, payloadAt, payloadAt + payloadLength);
  if (!fields) return undefined;
  return {
    protectedBytes: b.subarray(3, 6),
    alg: algByte === 0x32 ? -19 : -8,
    publicKey,
    payload: b.subarray(payloadAt, payloadAt + payloadLength),
    signature: b.subarray(c.p + 2, c.p + 66),
    fields,
  };
}
