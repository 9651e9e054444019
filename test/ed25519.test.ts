import t from 'tap';
import { ED25519_BACKENDS, keyFromSeed, signEd25519, verifyEd25519, type Ed25519Backend } from '../src/index.js';
import { hex, toHexString, vector } from './helpers/vectors.js';
import { prng } from './helpers/prng.js';

interface WycheproofTest {
  tcId: number;
  comment: string;
  flags: string[];
  msg: string;
  sig: string;
  result: 'valid' | 'invalid' | 'acceptable';
}
interface Wycheproof {
  numberOfTests: number;
  testGroups: Array<{ publicKey: { pk: string }; tests: WycheproofTest[] }>;
}
const wycheproof = vector<Wycheproof>('wycheproof-ed25519.json');
const protocol = vector<{ packet: Array<{ seed: string; publicKey: string }> }>('protocol-v1.json');

// RFC 8032 §7.1 TEST 1, written out from the RFC.
const RFC8032_TEST1 = {
  secretKey: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
  publicKey: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
  signature:
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
};

const backends: readonly Ed25519Backend[] = ['node', 'noble'];

t.test('ed25519 - both backends are the ones listed', async (t) => {
  t.strictSame([...ED25519_BACKENDS].sort(), [...backends].sort());
});

t.test('ed25519 - every Wycheproof case verifies as its result says, on both backends', async (t) => {
  const cases = wycheproof.testGroups.flatMap((g) => g.tests.map((c) => ({ ...c, pk: g.publicKey.pk })));
  t.equal(cases.length, 151, '151 cases');
  t.equal(wycheproof.numberOfTests, 151, 'the file says 151');
  t.equal(cases.filter((c) => c.result === 'valid').length, 88, '88 valid');
  t.equal(cases.filter((c) => c.result === 'invalid').length, 63, '63 invalid');
  const disagreements: number[] = [];
  for (const c of cases) {
    const results: boolean[] = [];
    for (const backend of backends) {
      let r: boolean | string;
      try {
        r = verifyEd25519(hex(c.sig), hex(c.msg), hex(c.pk), backend);
      } catch (e) {
        r = `threw ${String(e)}`;
      }
      t.equal(r, c.result === 'valid', `tcId ${c.tcId} ${backend}: ${c.result} (${c.flags.join(', ')})`);
      if (typeof r === 'boolean') results.push(r);
    }
    if (results[0] !== results[1]) disagreements.push(c.tcId);
  }
  t.strictSame(disagreements, [], 'the two backends agree on every case');
});

t.test('ed25519 - RFC 8032 test 1: public key and signature from the seed, both backends', async (t) => {
  const vec = protocol.packet[0];
  t.equal(vec?.seed, RFC8032_TEST1.secretKey, 'protocol-v1 packet[0] uses the RFC 8032 test 1 seed');
  t.equal(vec?.publicKey, RFC8032_TEST1.publicKey);
  const tc80 = wycheproof.testGroups.flatMap((g) => g.tests.map((c) => ({ ...c, pk: g.publicKey.pk }))).find((c) => c.tcId === 80);
  t.equal(tc80?.pk, RFC8032_TEST1.publicKey, 'Wycheproof tcId 80 is RFC 8032 test 1');
  t.equal(tc80?.msg, '');
  t.equal(tc80?.sig, RFC8032_TEST1.signature);

  const key = keyFromSeed(hex(RFC8032_TEST1.secretKey));
  t.equal(toHexString(key.publicKey), RFC8032_TEST1.publicKey, 'keyFromSeed gives the published public key');
  const sigs = backends.map((b) => toHexString(signEd25519(key, new Uint8Array(0), b)));
  t.equal(sigs[0], RFC8032_TEST1.signature, 'node signature is the published one');
  t.equal(sigs[1], RFC8032_TEST1.signature, 'noble signature is the published one');
  for (const b of backends) {
    t.ok(verifyEd25519(hex(RFC8032_TEST1.signature), new Uint8Array(0), key.publicKey, b), `${b} verifies it`);
    t.notOk(verifyEd25519(hex(RFC8032_TEST1.signature), Uint8Array.of(0), key.publicKey, b), `${b} refuses it on another message`);
  }
});

t.test('ed25519 - keyFromSeed refuses seeds that are not 32 bytes', async (t) => {
  for (const n of [0, 31, 33, 64]) t.throws(() => keyFromSeed(new Uint8Array(n)), { code: 'ERR_INVALID_ARGUMENT' }, `${n} bytes`);
});


t.test('ed25519 - a signature made on one backend verifies on the other (200 random keys)', async (t) => {
  const rand = prng(25519);
  const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
  const problems: string[] = [];
  for (let i = 0; i < 200; i++) {
    const key = keyFromSeed(bytes(32));
    const msg = bytes(Math.floor(rand() * 300));
    const sNode = signEd25519(key, msg, 'node');
    const sNoble = signEd25519(key, msg, 'noble');
    if (toHexString(sNode) !== toHexString(sNoble)) problems.push(`#${i}: signatures differ`);
    if (sNode.length !== 64) problems.push(`#${i}: signature length ${sNode.length}`);
    if (!verifyEd25519(sNode, msg, key.publicKey, 'noble')) problems.push(`#${i}: noble refuses node's signature`);
    if (!verifyEd25519(sNoble, msg, key.publicKey, 'node')) problems.push(`#${i}: node refuses noble's signature`);
    // and a one-bit change anywhere is refused by both
    const bad = Uint8Array.from(sNode);
    const bit = Math.floor(rand() * 512);
    bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7));
    for (const b of backends) if (verifyEd25519(bad, msg, key.publicKey, b)) problems.push(`#${i}: ${b} accepts a flipped bit ${bit}`);
  }
  t.strictSame(problems, [], 'all 200 agree');
});

t.test('ed25519 - wrong-length signatures and keys return false, never throw', async (t) => {
  const key = keyFromSeed(hex(RFC8032_TEST1.secretKey));
  const sig = hex(RFC8032_TEST1.signature);
  const msg = new Uint8Array(0);
  const sigs = [new Uint8Array(0), sig.subarray(0, 63), Uint8Array.from([...sig, 0]), new Uint8Array(128)];
  const keys = [new Uint8Array(0), key.publicKey.subarray(0, 31), Uint8Array.from([...key.publicKey, 0]), new Uint8Array(64)];
  for (const b of backends) {
    for (const s of sigs) {
      let r: unknown;
      t.doesNotThrow(() => {
        r = verifyEd25519(s, msg, key.publicKey, b);
      });
      t.equal(r, false, `${b}: ${s.length}-byte signature`);
    }
    for (const k of keys) {
      let r: unknown;
      t.doesNotThrow(() => {
        r = verifyEd25519(sig, msg, k, b);
      });
      t.equal(r, false, `${b}: ${k.length}-byte key`);
    }
    // 32 bytes that are not a point on the curve (y = 2 has no x): false, not an exception
    const notAPoint = new Uint8Array(32);
    notAPoint[0] = 2;
    t.equal(verifyEd25519(sig, msg, notAPoint, b), false, `${b}: key not on the curve`);
  }
});
