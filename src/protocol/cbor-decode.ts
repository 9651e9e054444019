/** CBOR decoding, general but strict (PROTOCOL §1; see cbor.ts). */
import { concat } from './bytes.js';
import { encodeCbor } from './cbor-encode.js';
import { QisError } from './errors.js';
import { CborFloat, CborSimple, CborTag, MAX_DEPTH, type CborValue } from './cbor-value.js';

const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const BREAK = Symbol('break');

function malformed(msg: string, at: number): QisError {
  return new QisError('ERR_CBOR_MALFORMED', `CBOR at byte ${at}: ${msg}`);
}

/** An IEEE 754 half-precision value (RFC 8949 Appendix D). */
export function halfToNumber(h: number): number {
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
