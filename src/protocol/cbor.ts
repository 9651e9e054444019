/**
 * The project's one CBOR codec (RFC 8949), written for PROTOCOL §1.
 *
 * Encoding is deterministic: definite lengths, shortest integer heads, an integer-valued
 * number as a CBOR integer and any other number as float64, map keys sorted by their encoded
 * bytes (which puts integer keys ascending and shorter text keys first), byte strings untagged.
 *
 * Decoding is general (any valid width, indefinite lengths, half floats, tags, simple values)
 * but strict where leniency would let two verifiers disagree: duplicate map keys, invalid
 * UTF-8, reserved header values, trailing bytes and nesting deeper than `maxDepth` are all
 * refused with ERR_CBOR_MALFORMED. Every length is checked against the bytes that remain
 * before anything is allocated, so hostile headers cannot make it allocate.
 *
 * Why not cbor-x: its decoder keeps the last of duplicate keys, replaces invalid UTF-8,
 * turns tags into Dates and shared references, and its encoder writes integers above 2^32 as
 * float64; each of those breaks byte equality or agreement between regions (README, Dependencies).
 */
import { concat } from './bytes.js';
import { QisError } from './errors.js';

/** A CBOR tag with its content (tag 18 wraps COSE_Sign1). */
export class CborTag {
  constructor(readonly tag: number | bigint, readonly value: CborValue) {}
}

/** A CBOR simple value other than false, true, null and undefined (0..19 or 32..255). */
export class CborSimple {
  constructor(readonly value: number) {}
}

/**
 * A floating-point number as decoded with `markFloats`, so that callers can tell `1.0` from `1`:
 * where the protocol says "uint", a float is the wrong type, whatever its value.
 */
export class CborFloat {
  constructor(readonly value: number) {}
}

export type CborValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | undefined
  | Uint8Array
  | CborValue[]
  | Map<CborValue, CborValue>
  | CborTag
  | CborSimple
  | CborFloat
  | { readonly [key: string]: CborValue };

// ---------------------------------------------------------------------------------- encoding

const TWO64 = 2n ** 64n;
const textEncoder = new TextEncoder();

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/**
 * Writes CBOR items one after another into a growing buffer. {@link encodeWith} lends one, for
 * callers that know their layout (a payload whose integer keys are written in ascending order)
 * and so need not build and sort a Map; {@link CborWriter.value} writes any value deterministically.
 */
export class CborWriter {
  buf = new Uint8Array(256);
  pos = 0;
  private view = new DataView(this.buf.buffer);

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  head(major: number, arg: number | bigint): void {
    const m = major << 5;
    if (typeof arg === 'bigint') {
      if (arg <= 0xffffffffn) {
        this.head(major, Number(arg));
        return;
      }
      this.ensure(9);
      this.buf[this.pos++] = m | 27;
      this.view.setBigUint64(this.pos, arg);
      this.pos += 8;
      return;
    }
    if (arg < 24) {
      this.ensure(1);
      this.buf[this.pos++] = m | arg;
    } else if (arg < 0x100) {
      this.ensure(2);
      this.buf[this.pos++] = m | 24;
      this.buf[this.pos++] = arg;
    } else if (arg < 0x10000) {
      this.ensure(3);
      this.buf[this.pos++] = m | 25;
      this.view.setUint16(this.pos, arg);
      this.pos += 2;
    } else if (arg < 0x100000000) {
      this.ensure(5);
      this.buf[this.pos++] = m | 26;
      this.view.setUint32(this.pos, arg);
      this.pos += 4;
    } else {
      this.head(major, BigInt(arg));
    }
  }

  /** Bytes copied as they are (already encoded CBOR). */
  raw(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  /** A byte string. */
  byteString(b: Uint8Array): void {
    this.head(2, b.length);
    this.raw(b);
  }

  /** The UTF-8 bytes of `s` as a text string (major 3) or a byte string (major 2). */
  string(major: 2 | 3, s: string): void {
    if (s.length < 256 && isAscii(s)) {
      // Short ASCII: one byte per code unit, no TextEncoder call.
      this.head(major, s.length);
      this.ensure(s.length);
      for (let i = 0; i < s.length; i++) this.buf[this.pos++] = s.charCodeAt(i);
      return;
    }
    // TextEncoder would silently turn a lone surrogate into U+FFFD: the bytes would not be the text given.
    if (!s.isWellFormed()) throw new QisError('ERR_INVALID_ARGUMENT', 'text with a lone surrogate has no UTF-8 encoding');
    const b = textEncoder.encode(s);
    this.head(major, b.length);
    this.raw(b);
  }

  /** Any value, deterministically (PROTOCOL §1). */
  value(v: CborValue): void {
    writeValue(this, v, 0);
  }

  float64(v: number): void {
    this.ensure(9);
    this.buf[this.pos++] = 0xfb;
    this.view.setFloat64(this.pos, v);
    this.pos += 8;
  }

}


function writeInteger(w: CborWriter, v: bigint): void {
  if (v >= 0n) {
    if (v >= TWO64) throw new QisError('ERR_INVALID_ARGUMENT', `integer ${v} does not fit CBOR's 64-bit integers`);
    w.head(0, v);
  } else {
    const n = -1n - v;
    if (n >= TWO64) throw new QisError('ERR_INVALID_ARGUMENT', `integer ${v} does not fit CBOR's 64-bit integers`);
    w.head(1, n);
  }
}

function writeNumber(w: CborWriter, v: number): void {
  // PROTOCOL §1: an integer-valued number is a CBOR integer (-0 is the integer 0); an integer
  // too large for 64 bits has no untagged integer form and stays float64, as does every non-integer.
  if (Number.isInteger(v)) {
    if (v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      w.head(0, v);
      return;
    }
    if (v < 0 && v >= -Number.MAX_SAFE_INTEGER) {
      w.head(1, -1 - v);
      return;
    }
    const big = BigInt(v);
    if (big < TWO64 && big >= -TWO64) {
      writeInteger(w, big);
      return;
    }
  }
  w.float64(v);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

const isUintKey = (k: CborValue): k is number => typeof k === 'number' && k >= 0 && Number.isSafeInteger(k);

function writeMap(w: CborWriter, entries: Iterable<[CborValue, CborValue]>, depth: number): void {
  const list = Array.from(entries);
  // Unsigned integer keys (every COSE header and payload map): their encoded order is their
  // numeric order (shorter heads first, then big-endian), so none needs encoding to be sorted.
  if (list.every(([k]) => isUintKey(k))) {
    list.sort((a, b) => (a[0] as number) - (b[0] as number));
    for (let i = 1; i < list.length; i++) {
      if ((list[i - 1] as [CborValue, CborValue])[0] === (list[i] as [CborValue, CborValue])[0]) {
        throw new QisError('ERR_INVALID_ARGUMENT', 'map has two keys with the same encoding');
      }
    }
    w.head(5, list.length);
    for (const [k, v] of list) {
      w.head(0, k as number);
      writeValue(w, v, depth + 1);
    }
    return;
  }
  const sorted: Array<[Uint8Array, CborValue]> = [];
  for (const [k, v] of list) sorted.push([encodeWith((kw) => writeValue(kw, k, depth + 1)), v]);
  sorted.sort((a, b) => compareBytes(a[0], b[0]));
  for (let i = 1; i < sorted.length; i++) {
    if (compareBytes((sorted[i - 1] as [Uint8Array, CborValue])[0], (sorted[i] as [Uint8Array, CborValue])[0]) === 0) {
      throw new QisError('ERR_INVALID_ARGUMENT', 'map has two keys with the same encoding');
    }
  }
  w.head(5, sorted.length);
  for (const [k, v] of sorted) {
    w.raw(k);
    writeValue(w, v, depth + 1);
  }
}

/** A plain object is a map with text keys (unique by construction). For ASCII keys the encoded
 *  order is: shorter first, then by code unit, so they sort without being encoded. */
function writeObject(w: CborWriter, v: { readonly [key: string]: CborValue }, depth: number): void {
  const keys = Object.keys(v);
  if (!keys.every(isAscii)) {
    writeMap(w, Object.entries(v), depth);
    return;
  }
  keys.sort((a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
  w.head(5, keys.length);
  for (const k of keys) {
    writeValue(w, k, depth + 1);
    writeValue(w, v[k], depth + 1);
  }
}

/** Deepest nesting the codec writes or reads; a decoder's `maxDepth` cannot go past it. */
export const MAX_DEPTH = 64;

function writeValue(w: CborWriter, v: CborValue, depth: number): void {
  if (depth > MAX_DEPTH) throw new QisError('ERR_INVALID_ARGUMENT', 'value nests too deeply to encode');
  switch (typeof v) {
    case 'number':
      writeNumber(w, v);
      return;
    case 'bigint':
      writeInteger(w, v);
      return;
    case 'string':
      w.string(3, v);
      return;
    case 'boolean':
      w.byte(v ? 0xf5 : 0xf4);
      return;
    case 'undefined':
      w.byte(0xf7);
      return;
    case 'object':
      break;
    default:
      throw new QisError('ERR_INVALID_ARGUMENT', `cannot encode a ${typeof v} as CBOR`);
  }
  if (v === null) {
    w.byte(0xf6);
  } else if (v instanceof Uint8Array) {
    w.byteString(v);
  } else if (Array.isArray(v)) {
    w.head(4, v.length);
    for (const item of v) writeValue(w, item, depth + 1);
  } else if (v instanceof Map) {
    writeMap(w, v, depth);
  } else if (v instanceof CborTag) {
    if (typeof v.tag === 'number') w.head(6, v.tag);
    else writeInteger(w, v.tag);
    writeValue(w, v.value, depth + 1);
  } else if (v instanceof CborFloat) {
    w.float64(v.value);
  } else if (v instanceof CborSimple) {
    if (!Number.isInteger(v.value) || v.value < 0 || v.value > 255 || (v.value >= 20 && v.value < 32)) {
      throw new QisError('ERR_INVALID_ARGUMENT', `simple value ${v.value} has no encoding of its own (0..19 or 32..255)`);
    }
    if (v.value < 24) {
      w.byte(0xe0 | v.value);
    } else {
      w.byte(0xf8);
      w.byte(v.value);
    }
  } else {
    writeObject(w, v, depth);
  }
}

/**
 * Deterministic CBOR encoding (PROTOCOL §1). Plain objects are maps with text keys; `Map`s may
 * have any keys; `Uint8Array` is a byte string; `bigint` covers 64-bit integers.
 *
 * @example encodeCbor(new Map([[1, 1], [2, new Uint8Array(16)]]))
 */
export function encodeCbor(value: CborValue): Uint8Array {
  return encodeWith((w) => writeValue(w, value, 0));
}

/**
 * Runs `write` on a pooled {@link CborWriter} and returns a copy of what it wrote.
 * @example encodeWith((w) => { w.head(4, 2); w.value(1); w.byteString(fp) })
 */
export function encodeWith(write: (w: CborWriter) => void): Uint8Array {
  return encodeThen(write, (view) => view.slice());
}

/**
 * Like {@link encodeWith}, but hands `use` a view of the pooled buffer instead of a copy. The view
 * is valid only during the (synchronous) call: for bytes that are hashed or signed and dropped.
 */
export function encodeThen<T>(write: (w: CborWriter) => void, use: (view: Uint8Array) => T): T {
  const w = writers[writersInUse] ?? (writers[writersInUse] = new CborWriter());
  writersInUse++;
  w.pos = 0;
  try {
    write(w);
    return use(w.buf.subarray(0, w.pos));
  } finally {
    writersInUse--;
    // Do not keep a buffer that one large value grew.
    if (w.buf.length > 4096) writers[writersInUse] = new CborWriter();
  }
}

// Writers are reused: a fresh buffer costs about 1 µs (off the JS heap), several times per packet.
// A stack, because map keys are encoded while an outer value is still being written.
const writers: CborWriter[] = [];
let writersInUse = 0;

// ---------------------------------------------------------------------------------- decoding

const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const BREAK = Symbol('break');

function malformed(msg: string, at: number): QisError {
  return new QisError('ERR_CBOR_MALFORMED', `CBOR at byte ${at}: ${msg}`);
}

function halfToNumber(h: number): number {
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

class Reader {
  pos = 0;
  private readonly view: DataView;
  constructor(readonly buf: Uint8Array, readonly maxDepth: number, readonly markFloats: boolean) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  need(n: number): void {
    if (n > this.buf.length - this.pos) throw malformed(`needs ${n} more bytes, ${this.buf.length - this.pos} left`, this.pos);
  }

  /** Reads a head's argument; returns -1 for indefinite length (ai 31). */
  arg(ai: number, start: number): number | bigint {
    if (ai < 24) return ai;
    switch (ai) {
      case 24:
        this.need(1);
        return this.buf[this.pos++] as number;
      case 25: {
        this.need(2);
        const v = this.view.getUint16(this.pos);
        this.pos += 2;
        return v;
      }
      case 26: {
        this.need(4);
        const v = this.view.getUint32(this.pos);
        this.pos += 4;
        return v;
      }
      case 27: {
        this.need(8);
        const v = this.view.getBigUint64(this.pos);
        this.pos += 8;
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case 31:
        return -1;
      default:
        throw malformed(`reserved additional information ${ai}`, start);
    }
  }

  length(arg: number | bigint, start: number): number {
    // A length beyond the remaining bytes can never be satisfied: refuse before allocating.
    if (typeof arg === 'bigint' || arg > this.buf.length - this.pos) {
      throw malformed(`declared length ${arg} exceeds the ${this.buf.length - this.pos} bytes left`, start);
    }
    return arg;
  }

  /** The chunks of an indefinite-length string (RFC 8949 §3.2.3); text chunks must each be valid UTF-8. */
  chunks(major: number): Uint8Array | string {
    const parts: Uint8Array[] = [];
    const texts: string[] = [];
    for (;;) {
      this.need(1);
      if (this.buf[this.pos] === 0xff) {
        this.pos++;
        break;
      }
      const at = this.pos;
      const ib = this.buf[this.pos++] as number;
      if (ib >> 5 !== major || (ib & 31) === 31) throw malformed('indefinite string chunk of the wrong type', at);
      const len = this.length(this.arg(ib & 31, at), at);
      const chunk = this.buf.subarray(this.pos, this.pos + len);
      if (major === 3) texts.push(this.text(chunk, at));
      else parts.push(chunk);
      this.pos += len;
    }
    return major === 3 ? texts.join('') : concat(...parts);
  }

  text(b: Uint8Array, at: number): string {
    try {
      return textDecoder.decode(b);
    } catch {
      throw malformed('text string is not valid UTF-8', at);
    }
  }

  item(depth: number): CborValue | typeof BREAK {
    if (depth > this.maxDepth) throw malformed(`nesting deeper than ${this.maxDepth}`, this.pos);
    const start = this.pos;
    this.need(1);
    const ib = this.buf[this.pos++] as number;
    const major = ib >> 5;
    const ai = ib & 31;
    if (major === 7) return this.simple(ai, start);
    const arg = this.arg(ai, start);
    switch (major) {
      case 0:
        if (arg === -1) throw malformed('indefinite length on an integer', start);
        return arg;
      case 1: {
        if (arg === -1) throw malformed('indefinite length on an integer', start);
        if (typeof arg === 'number' && arg < Number.MAX_SAFE_INTEGER) return -1 - arg;
        const v = -1n - BigInt(arg);
        return v >= BigInt(-Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case 2:
      case 3: {
        if (arg === -1) return this.chunks(major);
        const len = this.length(arg, start);
        const b = this.buf.subarray(this.pos, this.pos + len);
        this.pos += len;
        return major === 2 ? b : this.text(b, start);
      }
      case 4: {
        const out: CborValue[] = [];
        if (arg === -1) {
          for (;;) {
            const v = this.item(depth + 1);
            if (v === BREAK) return out;
            out.push(v);
          }
        }
        const n = this.length(arg, start);
        for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
        return out;
      }
      case 5: {
        const out = new Map<CborValue, CborValue>();
        // Keys that are objects (byte strings, arrays, maps, tags) are compared by their
        // deterministic encoding, since Map compares objects by identity.
        let objectKeys: Set<string> | undefined;
        const n = arg === -1 ? Infinity : this.length(arg, start);
        for (let i = 0; i < n; i++) {
          const kAt = this.pos;
          const k = this.item(depth + 1);
          if (k === BREAK) {
            if (arg === -1) return out;
            throw malformed('unexpected break', kAt);
          }
          const v = this.value(depth + 1);
          const before = out.size;
          out.set(k, v);
          if (out.size === before) throw malformed('duplicate map key', kAt);
          if (typeof k === 'object' && k !== null) {
            objectKeys ??= new Set();
            const id = Buffer.from(encodeCbor(k)).toString('latin1');
            if (objectKeys.has(id)) throw malformed('duplicate map key', kAt);
            objectKeys.add(id);
          }
        }
        return out;
      }
      default: {
        // major 6: tag
        if (arg === -1) throw malformed('indefinite length on a tag', start);
        return new CborTag(arg, this.value(depth + 1));
      }
    }
  }

  value(depth: number): CborValue {
    const at = this.pos;
    const v = this.item(depth);
    if (v === BREAK) throw malformed('unexpected break', at);
    return v;
  }

  float(v: number): number | CborFloat {
    return this.markFloats ? new CborFloat(v) : v;
  }

  simple(ai: number, start: number): CborValue | typeof BREAK {
    switch (ai) {
      case 20:
        return false;
      case 21:
        return true;
      case 22:
        return null;
      case 23:
        return undefined;
      case 24: {
        this.need(1);
        const v = this.buf[this.pos++] as number;
        if (v < 32) throw malformed('simple value below 32 in two bytes', start);
        return new CborSimple(v);
      }
      case 25: {
        this.need(2);
        const v = halfToNumber(this.view.getUint16(this.pos));
        this.pos += 2;
        return this.float(v);
      }
      case 26: {
        this.need(4);
        const v = this.view.getFloat32(this.pos);
        this.pos += 4;
        return this.float(v);
      }
      case 27: {
        this.need(8);
        const v = this.view.getFloat64(this.pos);
        this.pos += 8;
        return this.float(v);
      }
      case 31:
        return BREAK;
      default:
        if (ai < 20) return new CborSimple(ai);
        throw malformed(`reserved simple value ${ai}`, start);
    }
  }
}

export interface DecodeOptions {
  /** Deepest nesting accepted (default 16, at most {@link MAX_DEPTH}). */
  readonly maxDepth?: number;
  /** Return floats as {@link CborFloat} instead of number, to tell `1.0` from `1`. */
  readonly markFloats?: boolean;
}


/**
 * Decodes exactly one CBOR item that fills `bytes`. Maps decode to `Map`, byte strings to
 * `Uint8Array` views of the input (no copy), integers beyond 2^53 to `bigint`.
 *
 * @throws QisError ERR_CBOR_MALFORMED
 * @example decodeCbor(Uint8Array.of(0x82, 0x01, 0x02)) // [1, 2]
 */
export function decodeCbor(bytes: Uint8Array, options: DecodeOptions = {}): CborValue {
  const r = new Reader(bytes, Math.min(options.maxDepth ?? 16, MAX_DEPTH), options.markFloats ?? false);
  const v = r.value(0);
  if (r.pos !== bytes.length) throw malformed(`${bytes.length - r.pos} bytes after the item`, r.pos);
  return v;
}
