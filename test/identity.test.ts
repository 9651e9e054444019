import t from 'tap';
import { mkdtempSync, rmSync, statSync, writeFileSync, readFileSync, chmodSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prng } from './helpers/prng.js';
import { b32, b32decode, isB32Id16, enc, generateKey, keyFromSeed, loadKeyFile, nodeIdOf, isNodeId, saveKeyFile, keyFromJson } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-key-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('bytes - b32 is RFC 4648 base32, lowercase, unpadded (RFC 4648 §10 vectors)', async (t) => {
  const vectors: Array<[string, string]> = [['', ''], ['f', 'my'], ['fo', 'mzxq'], ['foo', 'mzxw6'], ['foob', 'mzxw6yq'], ['fooba', 'mzxw6ytb'], ['foobar', 'mzxw6ytboi']];
  for (const [plain, coded] of vectors) {
    t.equal(b32(new TextEncoder().encode(plain)), coded);
    t.equal(Buffer.from(b32decode(coded)!).toString(), plain);
  }
  t.equal(b32decode('mzxw6yr'), undefined, 'non-zero trailing bits');
  t.equal(b32decode('MZXW6'), undefined, 'uppercase');
  t.equal(b32decode('mzx'), undefined, 'impossible length');
  t.same(enc('é'), Uint8Array.of(0, 2, 0xc3, 0xa9), 'enc: 2-byte big-endian UTF-8 length');
});

t.test('bytes - isB32Id16 accepts exactly the 26-character spellings b32decode reads as 16 bytes', async (t) => {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567A0=';
  const rand = prng(99);
  const rnd = (n: number): number => Math.floor(rand() * n);
  let agreeing = 0;
  let valid = 0;
  for (let i = 0; i < 20000; i++) {
    const len = i % 10 === 0 ? 24 + rnd(4) : 26;
    let s = '';
    for (let j = 0; j < len; j++) s += alphabet[rnd(j === len - 1 ? alphabet.length : 32)];
    const byDecode = s.length === 26 && b32decode(s)?.length === 16;
    if (byDecode) valid++;
    if (isB32Id16(s) === byDecode) agreeing++;
  }
  t.equal(agreeing, 20000);
  t.ok(valid > 1000, `both answers occur (${valid} valid)`);
});

t.test('identity - nodeId is b32 of the first 16 bytes of SHA-256 of the public key', async (t) => {
  for (let i = 0; i < 20; i++) {
    const k = generateKey();
    const h = createHash('sha256').update(k.publicKey).digest().subarray(0, 16);
    t.equal(k.nodeId, b32(new Uint8Array(h)));
    t.equal(nodeIdOf(k.publicKey), k.nodeId);
    t.ok(isNodeId(k.nodeId));
  }
  t.throws(() => keyFromSeed(new Uint8Array(31)), { code: 'ERR_INVALID_ARGUMENT' });
});

t.test('identity - key files: saved with mode 0600, loaded back identical', async (t) => {
  const key = generateKey();
  const file = join(dir, 'sub', 'node.key');
  await saveKeyFile(file, key);
  t.equal(statSync(file).mode & 0o777, 0o600);
  const json = JSON.parse(readFileSync(file, 'utf8'));
  t.same(Object.keys(json).sort(), ['nodeId', 'publicKey', 'secretKey']);
  t.match(json.secretKey, /^[0-9a-f]{64}$/);
  const loaded = await loadKeyFile(file);
  t.same(loaded.secretKey, key.secretKey);
  t.same(loaded.publicKey, key.publicKey);
  t.equal(loaded.nodeId, key.nodeId);
  t.same(readdirSync(join(dir, 'sub')), ['node.key'], 'no temporary files left');
});

t.test('identity - an existing key file is never overwritten', async (t) => {
  const file = join(dir, 'keep.key');
  const first = generateKey();
  await saveKeyFile(file, first);
  await t.rejects(saveKeyFile(file, generateKey()), { code: 'ERR_KEY_EXISTS' });
  t.equal((await loadKeyFile(file)).nodeId, first.nodeId);
  t.equal(readdirSync(dir).filter((f) => f.includes('.tmp')).length, 0);
});

t.test('identity - key files others can read, or that do not match, are refused', async (t) => {
  const key = generateKey();
  const good = { secretKey: Buffer.from(key.secretKey).toString('hex'), publicKey: Buffer.from(key.publicKey).toString('hex'), nodeId: key.nodeId };
  const write = (name: string, content: string, mode = 0o600): string => {
    const p = join(dir, name);
    writeFileSync(p, content, { mode });
    chmodSync(p, mode);
    return p;
  };
  await t.rejects(loadKeyFile(write('open.key', JSON.stringify(good), 0o644)), { code: 'ERR_KEY_PERMISSIONS', message: /chmod 600/ });
  await t.rejects(loadKeyFile(write('group.key', JSON.stringify(good), 0o640)), { code: 'ERR_KEY_PERMISSIONS' });
  const otherPub = Buffer.from(generateKey().publicKey).toString('hex');
  await t.rejects(loadKeyFile(write('pub.key', JSON.stringify({ ...good, publicKey: otherPub }))), { code: 'ERR_KEY_MISMATCH', message: /publicKey/ });
  await t.rejects(loadKeyFile(write('id.key', JSON.stringify({ ...good, nodeId: generateKey().nodeId }))), { code: 'ERR_KEY_MISMATCH', message: /nodeId/ });
  await t.rejects(loadKeyFile(write('json.key', '{not json')), { code: 'ERR_KEY_FILE_INVALID' });
  await t.rejects(loadKeyFile(write('short.key', JSON.stringify({ ...good, secretKey: 'abcd' }))), { code: 'ERR_KEY_FILE_INVALID', message: /secretKey/ });
  await t.rejects(loadKeyFile(write('noid.key', JSON.stringify({ secretKey: good.secretKey, publicKey: good.publicKey }))), { code: 'ERR_KEY_FILE_INVALID', message: /nodeId/ });
  await t.rejects(loadKeyFile(join(dir, 'absent.key')), { code: 'ERR_FILE_IO' });
  t.throws(() => keyFromJson([1, 2]), { code: 'ERR_KEY_FILE_INVALID' });
  t.equal((await loadKeyFile(write('ok.key', JSON.stringify(good)))).nodeId, key.nodeId, 'the same content with mode 0600 loads');
});
