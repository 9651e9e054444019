// WebCrypto Ed25519 verdicts computed ahead (console/app/webcrypto.ts, asynchronous) for the
// synchronous verify of src/'s `node` backend, which the node:crypto shim answers from here.
// Found by the signature and kept with the exact (public key, message) bytes it was computed for,
// so a verdict is only ever used for the very check it was computed for; taken once; bounded.
// (Keying by the signature alone, not a hex string of all three, halved the page's cost per packet.)
const MAX = 20_000;
const verdicts = new Map<string, { readonly publicKey: Uint8Array; readonly message: Uint8Array; readonly ok: boolean }>();

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const hex = (b: Uint8Array): string => {
  let s = '';
  for (const x of b) s += HEX[x] as string;
  return s;
};

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function putVerdict(publicKey: Uint8Array, signature: Uint8Array, message: Uint8Array, ok: boolean): void {
  if (verdicts.size >= MAX) verdicts.delete(verdicts.keys().next().value as string);
  verdicts.set(hex(signature), { publicKey, message, ok });
}

/** The verdict computed for exactly these bytes, once; undefined when there is none. */
export function takeVerdict(publicKey: Uint8Array, signature: Uint8Array, message: Uint8Array): boolean | undefined {
  const key = hex(signature);
  const v = verdicts.get(key);
  if (!v || !same(v.publicKey, publicKey) || !same(v.message, message)) return undefined;
  verdicts.delete(key);
  return v.ok;
}

/** Counts of checks answered by a WebCrypto verdict and by the noble fallback (shown in the page). */
export const verifiedBy = { webcrypto: 0, noble: 0 };
