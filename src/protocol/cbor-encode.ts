/** CBOR encoding, deterministic (PROTOCOL §1; see cbor.ts). */
import { QisError } from './errors.js';
import { CborFloat, CborSimple, CborTag, MAX_DEPTH, type CborValue } from './cbor-value.js';

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
    if (s.length < 256) {
      // Short ASCII: one byte per code unit, no TextEncoder call; written in one pass (a topic is
      // written into every Sig_structure), taken back if a code unit is not ASCII after all.
      const start = this.pos;
      this.ensure(2 + s.length);
      this.head(major, s.length);
      const buf = this.buf;
      let pos = this.pos;
      let all = 0;
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        all |= c;
        buf[pos++] = c;
      }
      if (all <= 0x7f) {
        this.pos = pos;
        return;
      }
      this.pos = start;
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
