/**
 * Cohort keys and packets for the benches, built from raw node:crypto: keyFromSeed() imports the
 * seed as PKCS#8 DER, which costs OpenSSL 3 about 0.5 ms a key (5 s for 10,000); a JWK import is
 * ten times faster. A bench checks its first keys and packets against keyFromSeed() and
 * createOutcomePacket() before it times anything (bench/node.ts does).
 */
import crypto from 'node:crypto';
import { CborTag, encodeCbor, encodePayload, nodeIdOf, sigStructure, type NodeKey, type PacketFields } from '../src/index.js';

export const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const PROTECTED_ED25519 = encodeCbor(new Map([[1, -19]]));

export interface BenchKey {
  readonly key: NodeKey;
  readonly privateKeyObject: crypto.KeyObject;
}

/** The seed of bench node `i` (32 bytes, distinct per i). */
export function benchSeed(i: number): Uint8Array {
  const seed = Buffer.alloc(32);
  seed.write('qis-bench-node/', 0, 'latin1');
  seed.writeUInt32BE(i, 28);
  return new Uint8Array(seed);
}

/** keyFromSeed() through a JWK import. */
export function benchKey(seed: Uint8Array): BenchKey {
  const d = Buffer.from(seed).toString('base64url');
  let privateKeyObject: crypto.KeyObject;
  try {
    // Node 20 requires x to be a string and derives the key from d alone.
    privateKeyObject = crypto.createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d, x: '' }, format: 'jwk' });
  } catch {
    privateKeyObject = crypto.createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  }
  const x = crypto.createPublicKey(privateKeyObject).export({ format: 'jwk' }).x as string;
  const publicKey = new Uint8Array(Buffer.from(x, 'base64url'));
  return { key: { secretKey: seed, publicKey, nodeId: nodeIdOf(publicKey) }, privateKeyObject };
}

/** signPacket() with a ready private KeyObject: 18([protected, {4: kid}, payload, signature]). */
export function benchPacket(k: BenchKey, topic: string, fields: PacketFields): Uint8Array {
  const payload = encodePayload(fields);
  const signature = crypto.sign(null, sigStructure(PROTECTED_ED25519, topic, payload), k.privateKeyObject);
  return encodeCbor(new CborTag(18, [PROTECTED_ED25519, new Map([[4, k.key.publicKey]]), payload, new Uint8Array(signature)]));
}
