/**
 * WebCrypto Ed25519 for the page's verification, where the browser has it: subtle.verify is
 * asynchronous and src/'s verification is synchronous, so the signatures of a batch are checked
 * here first, over the exact Sig_structure bytes src/ will verify (PROTOCOL §5: the topic is the
 * external_aad), and src/'s `node` backend then takes those verdicts (shims/node-crypto.ts).
 * Anything this pass cannot read is left to src/, which refuses it with its code.
 */
import { decodeSign1, sigStructure } from '../../src/browser.js';
import { putVerdict } from './shims/verdicts.js';

// RFC 8032 §7.1 test 1: public key and signature of the empty message.
const RFC_PUB = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const RFC_SIG = 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b';
const fromHex = (h: string): Uint8Array<ArrayBuffer> => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
/** WebCrypto takes only ArrayBuffer-backed views; src/ may hand out views of other buffers. */
const own = (b: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(b);

/** True when this browser verifies Ed25519 in WebCrypto (and gets RFC 8032's vector right). */
export async function webCryptoEd25519(): Promise<boolean> {
  try {
    const key = await crypto.subtle.importKey('raw', fromHex(RFC_PUB), { name: 'Ed25519' }, false, ['verify']);
    return await crypto.subtle.verify({ name: 'Ed25519' }, key, fromHex(RFC_SIG), new Uint8Array(0));
  } catch {
    return false;
  }
}

const keys = new Map<string, Promise<CryptoKey | null>>();
const MAX_KEYS = 20_000;

function importKey(raw: Uint8Array): Promise<CryptoKey | null> {
  let id = '';
  for (const b of raw) id += String.fromCharCode(b);
  let k = keys.get(id);
  if (!k) {
    if (keys.size >= MAX_KEYS) keys.delete(keys.keys().next().value as string);
    k = crypto.subtle.importKey('raw', own(raw), { name: 'Ed25519' }, false, ['verify']).catch(() => null);
    keys.set(id, k);
  }
  return k;
}

/**
 * Checks the signatures of these messages with WebCrypto and leaves the verdicts for src/. The
 * whole batch is in flight at once (subtle.verify runs off the main thread); templates, outcome
 * and score packets share the envelope (PROTOCOL §5, §9: the topic is the external_aad), and an
 * enrolment has an empty one (§10: `topic` '').
 */
export async function preverify(messages: readonly { topic: string; payload: Uint8Array }[]): Promise<void> {
  await Promise.all(
    messages.map(async ({ topic, payload }) => {
      let kid: unknown;
      let message: Uint8Array;
      let signature: Uint8Array;
      try {
        const m = decodeSign1(payload);
        kid = m.unprotected.get(4);
        signature = m.signature;
        message = sigStructure(m.protectedBytes, topic, m.payload);
      } catch {
        return; // src/ refuses it with the decoding code
      }
      if (!(kid instanceof Uint8Array) || kid.length !== 32 || signature.length !== 64) return;
      const key = await importKey(kid);
      if (!key) return;
      const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, own(signature), own(message)).catch(() => undefined);
      if (ok !== undefined) putVerdict(kid, signature, message, ok);
    }),
  );
}
