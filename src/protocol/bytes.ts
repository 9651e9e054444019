/** Byte helpers of PROTOCOL §1: H(), b32(), enc(), hex. */
import { createHash } from 'node:crypto';
import { QisError } from './errors.js';

/** `H(x)`: SHA-256 of the bytes x (OpenSSL: about 4× faster here than a pure-JS hash for ids and levels). */
export function sha256(data: Uint8Array): Uint8Array {
  const d = createHash('sha256').update(data).digest();
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** `b32(x)`: RFC 4648 base32, lowercase, no padding. */
export function b32(data: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

/**
 * Inverse of {@link b32}; returns undefined for anything that `b32` could not have produced
 * (wrong alphabet, impossible length, non-zero trailing bits), so every id has one spelling.
 */
export function b32decode(text: string): Uint8Array | undefined {
  const rem = text.length % 8;
  if (rem === 1 || rem === 3 || rem === 6) return undefined;
  const out = new Uint8Array(Math.floor((text.length * 5) / 8));
  let bits = 0;
  let value = 0;
  let j = 0;
  for (let i = 0; i < text.length; i++) {
    const v = B32.indexOf(text[i] as string);
    if (v < 0) return undefined;
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out[j++] = (value >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
    value &= (1 << bits) - 1;
  }
  if (value !== 0) return undefined;
  return out;
}

// 26 base32 characters encode 16 bytes: the last carries 3 bits and 2 zero bits, so it is one of
// a e i m q u y 4. Matching this is the same as b32decode() giving 16 bytes, only faster.
const ID16_RE = /^[a-z2-7]{25}[aeimquy4]$/;

/** True when `text` is the b32 spelling of 16 bytes (a node id or template id). */
export function isB32Id16(text: string): boolean {
  return ID16_RE.test(text);
}

const utf8 = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8Bytes(s: string): Uint8Array {
  return utf8.encode(s);
}

/** `enc(s)`: 2-byte big-endian length of the UTF-8 bytes of s, then those bytes. */
export function enc(s: string): Uint8Array {
  const body = utf8.encode(s);
  if (body.length > 0xffff) {
    throw new QisError('ERR_FIELD_VALUE', `value is ${body.length} UTF-8 bytes; enc() holds at most 65535`);
  }
  const out = new Uint8Array(2 + body.length);
  out[0] = body.length >>> 8;
  out[1] = body.length & 0xff;
  out.set(body, 2);
  return out;
}

/** Concatenate byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Lowercase hex of bytes. */
export function toHex(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('hex');
}

/** Bytes from hex (even length, 0-9a-fA-F only); undefined otherwise. */
export function fromHex(text: string): Uint8Array | undefined {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, 'hex'));
}

/** Byte equality in time independent of where the first difference is. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}
