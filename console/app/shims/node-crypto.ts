// `node:crypto` in the browser bundle (esbuild alias, console/build.ts): only what src/ calls at
// run time on the console's paths. sha256 comes from @noble/hashes (already a dependency); src/'s
// `node` Ed25519 backend (createPublicKey + verify) is answered by WebCrypto verdicts computed
// ahead (console/app/webcrypto.ts), or by @noble/ed25519 when there is none.
import * as ed from '@noble/ed25519';
import { sha256 } from '@noble/hashes/sha2.js';
import { takeVerdict, verifiedBy } from './verdicts.js';

class Sha256 {
  readonly #parts: Uint8Array[] = [];
  update(data: Uint8Array): this {
    this.#parts.push(data);
    return this;
  }
  digest(): Uint8Array {
    let n = 0;
    for (const p of this.#parts) n += p.length;
    const all = new Uint8Array(n);
    let o = 0;
    for (const p of this.#parts) {
      all.set(p, o);
      o += p.length;
    }
    return sha256(all);
  }
}

export function createHash(alg: string): Sha256 {
  if (alg !== 'sha256') throw new Error(`console: hash ${alg} is not available in the browser`);
  return new Sha256();
}

export function randomBytes(n: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

function unavailable(): never {
  throw new Error('console: node:crypto signing is not available in the browser');
}

export const createPrivateKey = unavailable;
export const sign = unavailable;

/** What src/'s `node` backend gets from createPublicKey: the raw key (it only passes it to verify). */
interface RawPublicKey {
  readonly raw: Uint8Array;
}

const P = (1n << 255n) - 19n;

/** createPublicKey for the one form src/ uses, an Ed25519 JWK; throws like Node on a bad one. */
export function createPublicKey(o: { key: { kty: string; crv: string; x: string }; format: 'jwk' }): RawPublicKey {
  const { kty, crv, x } = o.key;
  if (kty !== 'OKP' || crv !== 'Ed25519') throw new Error('console: only Ed25519 JWKs');
  const bin = atob(x.replace(/-/g, '+').replace(/_/g, '/'));
  if (bin.length !== 32) throw new Error('invalid Ed25519 key length');
  return { raw: Uint8Array.from(bin, (c) => c.charCodeAt(0)) };
}

/** True when the encoding's y is below p: RFC 8032 §5.1.3 refuses the others, as OpenSSL does. */
function canonicalPoint(a: Uint8Array): boolean {
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(i === 31 ? (a[i] as number) & 0x7f : (a[i] as number));
  return y < P;
}

/**
 * src/'s `node` backend verify in the browser: the WebCrypto verdict computed ahead for exactly
 * these bytes (Chromium's is BoringSSL: canonical S and R, cofactorless; the canonical-A check
 * is added here to match the project's strict policy), else @noble/ed25519 in strict mode.
 */
export function verify(_alg: null, message: Uint8Array, key: RawPublicKey, signature: Uint8Array): boolean {
  const v = takeVerdict(key.raw, signature, message);
  if (v !== undefined) {
    verifiedBy.webcrypto++;
    return v && canonicalPoint(key.raw);
  }
  verifiedBy.noble++;
  return ed.verify(signature, message, key.raw, { zip215: false });
}

export default { createHash, randomBytes, createPrivateKey, createPublicKey, sign, verify };
