import t from 'tap';
import { CborTag, decodeSign1, encodeCbor, sigStructure, verifySign1, type CborValue, type Ed25519Backend } from '../src/index.js';
import { hex, toHexString, vector } from './helpers/vectors.js';

interface CoseExample {
  input: { plaintext: string; sign0: { key: { x_hex: string; d_hex: string } } };
  intermediates: { ToBeSign_hex: string };
  output: { cbor: string };
}
const ex = vector<CoseExample>('cose-eddsa-sig-01.json');
const message = hex(ex.output.cbor);
const publicKey = hex(ex.input.sign0.key.x_hex);
const toBeSigned = ex.intermediates.ToBeSign_hex.toLowerCase();
const backends: readonly Ed25519Backend[] = ['node', 'noble'];
const empty = new Uint8Array(0);

// The parts of the example, taken apart by hand from its diagnostic notation (cbor_diag).
const PROTECTED = hex('a201270300'); // {1: -8, 3: 0}
const PAYLOAD = new TextEncoder().encode('This is the content.');
const SIGNATURE = hex(
  '7142fd2ff96d56db85bee905a76ba1d0b7321a95c8c4d3607c5781932b7afb8711497dfa751bf40b58b3bcc32300b1487f3db34085eef013bf08f4a44d6fef0d',
);

const sign1 = (protectedBytes: Uint8Array, tag: number | null = 18, items?: CborValue[]): Uint8Array => {
  const arr: CborValue[] = items ?? [protectedBytes, new Map([[4, hex('3131')]]), PAYLOAD, SIGNATURE];
  return encodeCbor(tag === null ? arr : new CborTag(tag, arr));
};

t.test('cose - the EdDSA example decodes: alg -8, headers, payload and signature', async (t) => {
  t.equal(toHexString(sign1(PROTECTED)), ex.output.cbor.toLowerCase(), 'the hand-taken parts re-encode to the example');
  const msg = decodeSign1(message);
  t.equal(msg.alg, -8, 'EdDSA (-8) accepted');
  t.equal(toHexString(msg.protectedBytes), 'a201270300');
  t.equal(toHexString(msg.payload), toHexString(PAYLOAD));
  t.equal(new TextDecoder().decode(msg.payload), ex.input.plaintext);
  t.equal(toHexString(msg.signature), toHexString(SIGNATURE));
  t.strictSame([...msg.unprotected.keys()], [4]);
  t.equal(toHexString(msg.unprotected.get(4) as Uint8Array), '3131', 'kid "11"');
});

t.test('cose - Sig_structure equals the example ToBeSign bytes', async (t) => {
  const msg = decodeSign1(message);
  t.equal(toHexString(sigStructure(msg.protectedBytes, empty, msg.payload)), toBeSigned);
  t.equal(toHexString(sigStructure(PROTECTED, empty, PAYLOAD)), toBeSigned, 'from the hand-taken parts');
});

t.test('cose - the example verifies on both backends with empty external_aad, not with a topic', async (t) => {
  const msg = decodeSign1(message);
  const topic = new TextEncoder().encode('qis/1/o/oot5cp3icuyzffz454i2beg6a4/a4i3z7jtki/uors66gee5/bubsegg34p/smotwpfig7/eh7ddx5bksrgcytl7bkai36se4');
  for (const b of backends) {
    t.equal(verifySign1(msg, publicKey, empty, b), true, `${b}: verifies`);
    t.equal(verifySign1(msg, publicKey, topic, b), false, `${b}: a topic as external_aad fails`);
    t.equal(verifySign1(msg, publicKey, Uint8Array.of(0), b), false, `${b}: one byte of external_aad fails`);
    const otherKey = Uint8Array.from(publicKey);
    otherKey[0] = (otherKey[0] as number) ^ 1;
    t.equal(verifySign1(msg, otherKey, empty, b), false, `${b}: another key fails`);
    const tampered = decodeSign1(sign1(PROTECTED, 18, [PROTECTED, new Map(), Uint8Array.from([...PAYLOAD, 0x21]), SIGNATURE]));
    t.equal(verifySign1(tampered, publicKey, empty, b), false, `${b}: a changed payload fails`);
    const reProtected = decodeSign1(sign1(hex('a10127'))); // {1: -8} without 3: 0
    t.equal(verifySign1(reProtected, publicKey, empty, b), false, `${b}: other protected bytes fail`);
  }
});

t.test('cose - alg other than Ed25519 or EdDSA refused with ERR_UNSUPPORTED_ALG', async (t) => {
  t.throws(() => decodeSign1(sign1(encodeCbor(new Map([[1, -7]])))), { code: 'ERR_UNSUPPORTED_ALG' }, 'ES256 (-7)');
  t.throws(() => decodeSign1(sign1(encodeCbor(new Map<CborValue, CborValue>([[1, -7], [3, 0]])))), { code: 'ERR_UNSUPPORTED_ALG' });
  t.throws(() => decodeSign1(sign1(encodeCbor(new Map([[1, -35]])))), { code: 'ERR_UNSUPPORTED_ALG' }, 'ES384 (-35)');
  t.throws(() => decodeSign1(sign1(encodeCbor(new Map([[1, 'EdDSA']])))), { code: 'ERR_UNSUPPORTED_ALG' }, 'alg as text');
  t.equal(decodeSign1(sign1(encodeCbor(new Map([[1, -19]])))).alg, -19, 'Ed25519 (-19) accepted');
});

t.test('cose - untagged or wrongly tagged messages refused with ERR_COSE_MALFORMED', async (t) => {
  t.throws(() => decodeSign1(sign1(PROTECTED, null)), { code: 'ERR_COSE_MALFORMED' }, 'untagged');
  t.throws(() => decodeSign1(message.subarray(1)), { code: 'ERR_COSE_MALFORMED' }, 'the example without its d2 byte');
  for (const tag of [17, 96, 97, 98, 16, 19, 0]) {
    t.throws(() => decodeSign1(sign1(PROTECTED, tag)), { code: 'ERR_COSE_MALFORMED' }, `tag ${tag}`);
  }
  t.throws(() => decodeSign1(encodeCbor(new CborTag(18, new CborTag(18, [PROTECTED, new Map(), PAYLOAD, SIGNATURE])))), {
    code: 'ERR_COSE_MALFORMED',
  }, 'tag 18 twice');
});

t.test('cose - arrays of the wrong shape refused with ERR_COSE_MALFORMED', async (t) => {
  const kid = new Map([[4, hex('3131')]]);
  const bad: Array<[CborValue[], string]> = [
    [[PROTECTED, kid, PAYLOAD], '3 elements'],
    [[PROTECTED, kid, PAYLOAD, SIGNATURE, empty], '5 elements'],
    [[], 'empty array'],
    [[PROTECTED, kid, null, SIGNATURE], 'detached (nil) payload'],
    [[PROTECTED, [], PAYLOAD, SIGNATURE], 'unprotected header not a map'],
    [[new Map([[1, -8]]), kid, PAYLOAD, SIGNATURE], 'protected header as a map, not a byte string'],
    [[PROTECTED, kid, 'This is the content.', SIGNATURE], 'payload as text'],
    [[PROTECTED, kid, PAYLOAD, 'sig'], 'signature as text'],
    [[empty, kid, PAYLOAD, SIGNATURE], 'empty protected header'],
    [[hex('a0'), kid, PAYLOAD, SIGNATURE], 'protected header without alg'],
    [[hex('a3'), kid, PAYLOAD, SIGNATURE], 'protected header not well-formed CBOR'],
    [[hex('a10127ff'), kid, PAYLOAD, SIGNATURE], 'protected header with trailing bytes'],
    [[hex('a201270126'), kid, PAYLOAD, SIGNATURE], 'protected header with a duplicate key'],
    [[hex('820127'), kid, PAYLOAD, SIGNATURE], 'protected header an array'],
  ];
  for (const [items, what] of bad) t.throws(() => decodeSign1(sign1(PROTECTED, 18, items)), { code: 'ERR_COSE_MALFORMED' }, what);
  t.throws(() => decodeSign1(encodeCbor(new CborTag(18, new Map([[1, 2]])))), { code: 'ERR_COSE_MALFORMED' }, 'a map, not an array');
});

t.test('cose - crit header (label 2) refused with ERR_COSE_MALFORMED', async (t) => {
  const crit = encodeCbor(new Map<CborValue, CborValue>([[1, -8], [2, [3]]]));
  t.throws(() => decodeSign1(sign1(crit)), { code: 'ERR_COSE_MALFORMED' }, 'crit [3]');
  const critUnknown = encodeCbor(new Map<CborValue, CborValue>([[1, -19], [2, [99]], [99, 1]]));
  t.throws(() => decodeSign1(sign1(critUnknown)), { code: 'ERR_COSE_MALFORMED' }, 'crit naming an unknown label');
});

t.test('cose - bytes that are not CBOR refused with ERR_CBOR_MALFORMED', async (t) => {
  t.throws(() => decodeSign1(message.subarray(0, message.length - 1)), { code: 'ERR_CBOR_MALFORMED' }, 'truncated');
  t.throws(() => decodeSign1(Uint8Array.from([...message, 0])), { code: 'ERR_CBOR_MALFORMED' }, 'trailing byte');
  t.throws(() => decodeSign1(empty), { code: 'ERR_CBOR_MALFORMED' }, 'empty');
});

t.test('cose - alg or its label written as a float refused', async (t) => {
  // RFC 9052 §3.1: labels and alg values are int or tstr; a float -8.0 is neither. The decoder
  // turns every number into a JS number, so 1.0 and -8.0 must be told apart before this check,
  // or one verifier accepts what a stricter one refuses.
  const codeOf = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      return (e as { code?: string }).code ?? String(e);
    }
    return 'accepted';
  };
  for (const [p, what] of [
    ['a101f9c800', 'alg -8.0 as a half float'],
    ['a101fbc020000000000000', 'alg -8.0 as a float64'],
    ['a1f93c0027', 'label 1.0 as a half float'],
  ] as const) {
    const code = codeOf(() => decodeSign1(sign1(hex(p))));
    t.ok(code === 'ERR_COSE_MALFORMED' || code === 'ERR_UNSUPPORTED_ALG', `${what} (${p}) refused, got ${code}`);
  }
  t.equal(decodeSign1(sign1(hex('a1013807'))).alg, -8, 'a longer integer head for -8 is still the integer -8');
});
