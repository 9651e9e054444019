// WebCrypto Ed25519 verdicts computed ahead (console/app/webcrypto.ts, asynchronous) for the
// synchronous verify of src/'s `node` backend, which the node:crypto shim answers from here.
// Keyed by the exact (public key, signature, message) bytes, so a verdict is only ever used for
// the very check it was computed for; taken once; bounded.
const MAX = 20_000;
const verdicts = new Map<string, boolean>();

const hex = (b: Uint8Array): string => {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
};

export const verdictKey = (publicKey: Uint8Array, signature: Uint8Array, message: Uint8Array): string => `${hex(publicKey)}.${hex(signature)}.${hex(message)}`;

export function putVerdict(key: string, ok: boolean): void {
  if (verdicts.size >= MAX) verdicts.delete(verdicts.keys().next().value as string);
  verdicts.set(key, ok);
}

export function takeVerdict(key: string): boolean | undefined {
  const v = verdicts.get(key);
  verdicts.delete(key);
  return v;
}

/** Counts of checks answered by a WebCrypto verdict and by the noble fallback (shown in the page). */
export const verifiedBy = { webcrypto: 0, noble: 0 };
