// `node:crypto` in the browser bundle (esbuild alias, console/build.ts): only what src/ calls at
// run time on the console's paths. sha256 comes from @noble/hashes (already a dependency); the
// OpenSSL Ed25519 backend has no browser form, so its calls fail loudly and the console verifies
// with src/'s `noble` backend, the same strict RFC 8032 policy.
import { sha256 } from '@noble/hashes/sha2.js';

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
  throw new Error('console: the node Ed25519 backend is not available in the browser; use backend "noble"');
}

export const createPrivateKey = unavailable;
export const createPublicKey = unavailable;
export const sign = unavailable;
export const verify = unavailable;

export default { createHash, randomBytes, createPrivateKey, createPublicKey, sign, verify };
