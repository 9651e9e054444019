import t from 'tap';
import { mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOutcomePacket, keyFromJson, parseTemplate } from '../src/index.js';
import { qis } from './helpers/cli.js';
import { vector, hex } from './helpers/vectors.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const TPL = 'examples/bearing-failure.yaml';
const SIT = '{"machine_model":"KX-200","bearing_type":"roller","load_kn":42.5,"sealed":true}';
const json = (s: string): any => JSON.parse(s);

t.test('cli - qis --help lists every command; each command has --help mentioning --json', async (t) => {
  const top = await qis(['--help']);
  t.equal(top.status, 0);
  for (const c of ['keygen', 'address', 'packet sign', 'packet verify', 'decode']) {
    t.match(top.stdout, c);
    const h = await qis([...c.split(' '), '--help']);
    t.equal(h.status, 0, `${c} --help`);
    t.match(h.stdout, /--json/);
  }
  const none = await qis([]);
  t.equal(none.status, 2, 'no command is a usage error');
  t.match(none.stderr, /Commands:/);
  const group = await qis(['packet', '--help']);
  t.equal(group.status, 0, 'qis packet --help');
  t.match(group.stdout, /packet sign[\s\S]*packet verify/);
  t.equal((await qis(['packet'])).status, 2, 'qis packet alone is a usage error');
});

t.test('cli - usage errors exit 2 with ERR_CLI_USAGE, as JSON with --json', async (t) => {
  const r = await qis(['address', '--template', TPL, '--bogus', '--json']);
  t.equal(r.status, 2);
  t.same({ ok: json(r.stdout).ok, code: json(r.stdout).code }, { ok: false, code: 'ERR_CLI_USAGE' });
  const missing = await qis(['address', '--template', TPL]);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /ERR_CLI_USAGE.*--situation is required/);
  const unknown = await qis(['packet', 'frob']);
  t.equal(unknown.status, 2);
  t.match(unknown.stderr, /sign, verify/);
  const badJson = await qis(['address', '--template', TPL, '--situation', '{oops', '--json']);
  t.equal(badJson.status, 1);
  t.equal(json(badJson.stdout).code, 'ERR_INVALID_JSON');
  const badNum = await qis(['packet', 'sign', '--key', 'k', '--template', TPL, '--situation', SIT, '--outcome', '"failure"', '--conf', 'high', '--json']);
  t.equal(json(badNum.stdout).code, 'ERR_FILE_IO', 'the key file is read before numbers are parsed');
});

t.test('cli - address prints the protocol-v1 vector', async (t) => {
  const want = vector<{ address: Array<{ expect: unknown }> }>('protocol-v1.json').address[0]!.expect;
  const r = await qis(['address', '--template', TPL, '--situation', SIT, '--json']);
  t.equal(r.status, 0, r.stderr);
  t.same(json(r.stdout), want);
  const human = await qis(['address', '--template', TPL, '--situation', SIT]);
  t.match(human.stdout, /load_kn = b1/);
  const sitFile = join(dir, 'sit.json');
  writeFileSync(sitFile, SIT);
  t.same(json((await qis(['address', '--template', TPL, '--situation', `@${sitFile}`, '--json'])).stdout), want, '@FILE');
  const bad = await qis(['address', '--template', TPL, '--situation', '{"machine_model":"KX-200"}', '--json']);
  t.equal(bad.status, 1);
  t.equal(json(bad.stdout).code, 'ERR_FIELD_MISSING');
});

t.test('cli - packet sign reproduces the vector packet from its seed, and verify/decode read it', async (t) => {
  const v = vector<{ packet: Array<{ seed: string; publicKey: string; nodeId: string; topic: string; packet: string }> }>('protocol-v1.json').packet[0]!;
  const keyFile = join(dir, 'vector.key');
  writeFileSync(keyFile, JSON.stringify({ secretKey: v.seed, publicKey: v.publicKey, nodeId: v.nodeId }), { mode: 0o600 });
  const binFile = join(dir, 'p.bin');
  const r = await qis([
    'packet', 'sign', '--key', keyFile, '--template', TPL, '--situation', SIT, '--outcome', '"failure"',
    '--conf', '0.94', '--n', '3', '--ctx', '{"ambient_c":21.5,"rpm":1480}', '--seq', '7', '--ts', '1795000000000',
    '--out', binFile, '--json',
  ]);
  t.equal(r.status, 0, r.stderr);
  const signed = json(r.stdout);
  t.same(signed, { topic: v.topic, packet: v.packet, size: v.packet.length / 2 });
  t.same(new Uint8Array(readFileSync(binFile)), hex(v.packet), '--out writes the raw bytes');

  const ok = await qis(['packet', 'verify', '--topic', v.topic, '--json'], readFileSync(binFile));
  t.equal(ok.status, 0);
  t.match(json(ok.stdout), { ok: true, nodeId: v.nodeId, seq: 7, ts: 1795000000000, out: 'failure', conf: 0.94, n: 3 });
  const viaHex = await qis(['packet', 'verify', '--topic', v.topic, '--hex', v.packet]);
  t.equal(viaHex.status, 0);
  t.match(viaHex.stdout, /^valid/);

  const decoded = await qis(['decode', '--topic', v.topic], Buffer.concat([readFileSync(binFile), Buffer.from('\n')]));
  t.equal(decoded.status, 0, 'a trailing newline from a terminal tool is tolerated');
  t.match(decoded.stdout, /node\s+eh7ddx5bksrgcytl7bkai36se4/);
  t.match(decoded.stdout, /outcome\s+"failure"/);
  t.match(decoded.stdout, /verified\s+valid/);
  const unchecked = await qis(['decode'], readFileSync(binFile));
  t.match(unchecked.stdout, /verified\s+not checked/);
});

t.test('cli - a refused packet exits 1 with its code', async (t) => {
  const v = vector<{ packet: Array<{ topic: string; packet: string }> }>('protocol-v1.json').packet;
  const wrongTopic = await qis(['packet', 'verify', '--topic', v[1]!.topic.replace(/[a-z2-7]{26}$/, v[0]!.topic.slice(-26)), '--hex', v[0]!.packet, '--json']);
  t.equal(wrongTopic.status, 1);
  t.equal(json(wrongTopic.stdout).code, 'ERR_BAD_SIGNATURE');
  const garbage = await qis(['packet', 'verify', '--topic', v[0]!.topic, '--json'], Buffer.from('hello'));
  t.equal(garbage.status, 1);
  t.equal(json(garbage.stdout).code, 'ERR_CBOR_MALFORMED');
  const dec = await qis(['decode', '--topic', v[1]!.topic, '--hex', v[0]!.packet]);
  t.equal(dec.status, 1);
  t.match(dec.stdout, /verified\s+INVALID ERR_NODE_MISMATCH/);
  const badHex = await qis(['decode', '--hex', 'xyz']);
  t.equal(badHex.status, 2);
});

t.test('cli - what people type: a bare label, hex from xxd, a newline from mosquitto_sub, odd times, empty stdin', async (t) => {
  const file = join(dir, 'typing.key');
  t.equal((await qis(['keygen', '--out', file])).status, 0);
  const bare = await qis(['packet', 'sign', '--key', file, '--template', TPL, '--situation', SIT, '--outcome', 'failure', '--json']);
  t.equal(bare.status, 0, bare.stderr);
  const { topic, packet } = json(bare.stdout);
  const spaced = packet.match(/.{1,60}/g).join('\n ');
  const v = await qis(['packet', 'verify', '--topic', topic, '--hex', `0x${spaced}`, '--json']);
  t.equal(json(v.stdout).out, 'failure', 'a bare --outcome is a label; hex may carry 0x and line breaks');
  t.equal(json((await qis(['packet', 'sign', '--key', file, '--template', TPL, '--situation', SIT, '--outcome', 'exploded', '--json'])).stdout).code, 'ERR_OUTCOME_INVALID');
  // The largest packet (512 bytes) plus the newline mosquitto_sub adds without -N.
  const mapTpl = join(dir, 'map.yaml');
  writeFileSync(mapTpl, 'name: m\nversion: 1\nfields: [{name: a, kind: boolean}]\noutcome: {kind: map}\n');
  const key = keyFromJson(JSON.parse(readFileSync(file, 'utf8')));
  const size = (pad: number): number =>
    createOutcomePacket({ key, template: parseTemplate(readFileSync(mapTpl, 'utf8')), situation: { a: true }, outcome: { note: 'x'.repeat(pad) }, seq: 1, ts: 1 }).packet.length;
  let pad = 300;
  while (size(pad) < 512) pad++;
  const r = await qis(['packet', 'sign', '--key', file, '--template', mapTpl, '--situation', '{"a":true}', '--outcome', JSON.stringify({ note: 'x'.repeat(pad) }), '--seq', '1', '--ts', '1', '--json']);
  const big = json(r.stdout) as { topic: string; packet: string };
  t.equal(big.packet.length, 1024, 'a 512-byte packet');
  const withNewline = Buffer.concat([Buffer.from(big.packet, 'hex'), Buffer.from('\n')]);
  t.equal((await qis(['packet', 'verify', '--topic', big.topic], withNewline)).status, 0, '512 bytes + newline verifies');
  const far = await qis(['packet', 'sign', '--key', file, '--template', TPL, '--situation', SIT, '--outcome', 'failure', '--ts', '9000000000000000', '--exp', '9000000000000', '--json']);
  const dec = await qis(['decode', '--hex', json(far.stdout).packet]);
  t.equal(dec.status, 0, dec.stderr);
  t.match(dec.stdout, /time\s+beyond the calendar/);
  const empty = await qis(['decode']);
  t.equal(empty.status, 2);
  t.match(empty.stderr, /stdin is empty/);
});

t.test('cli - keygen writes a 0600 key once and refuses to overwrite it', async (t) => {
  const file = join(dir, 'node.key');
  const r = await qis(['keygen', '--out', file, '--json']);
  t.equal(r.status, 0, r.stderr);
  const out = json(r.stdout);
  t.match(out.nodeId, /^[a-z2-7]{26}$/);
  t.equal(statSync(file).mode & 0o777, 0o600);
  t.equal(JSON.parse(readFileSync(file, 'utf8')).nodeId, out.nodeId);
  const again = await qis(['keygen', '--out', file]);
  t.equal(again.status, 1);
  t.match(again.stderr, /ERR_KEY_EXISTS/);
  t.equal(JSON.parse(readFileSync(file, 'utf8')).nodeId, out.nodeId, 'the first key is intact');
  const tomb = await qis(['packet', 'sign', '--key', file, '--template', TPL, '--situation', SIT, '--del', '--json']);
  t.equal(tomb.status, 0, tomb.stderr);
  const verified = await qis(['packet', 'verify', '--topic', json(tomb.stdout).topic, '--hex', json(tomb.stdout).packet, '--json']);
  t.equal(json(verified.stdout).del, true, 'tombstone via --del');
  const noOutcome = await qis(['packet', 'sign', '--key', file, '--template', TPL, '--situation', SIT]);
  t.equal(noOutcome.status, 2);
});
