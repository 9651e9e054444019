// Enrolment (PROTOCOL §10), node login (§11), password files, the trust filter and the
// per-operator cap, and their CLI commands. Every time check gets an explicit `now`.
import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ENROLMENT_REASONS,
  attachEnrolment,
  capOperatorShare,
  checkEnrolment,
  checkPacketEnrolment,
  compileTemplate,
  createEnrolment,
  createLogin,
  createOutcomePacket,
  decodeEnrolment,
  decodePacket,
  filterTrusted,
  keyFromSeed,
  keyToJson,
  operatorIdOf,
  parseOperatorRef,
  readEnrolment,
  revocationIndex,
  signRevocation,
  synthesize,
  verifyLogin,
  verifyPacket,
  verifyRevocation,
  type EnrolmentReason,
  type NodeKey,
  type SynthPacket,
  type TemplateDoc,
  type VerifiedPacket,
} from '../src/index.js';
import { parsePasswd, readPasswdFile, setPassword, verifyPassword } from '../broker/passwd.js';
import { fixedKey } from './helpers/fixtures.js';
import { hex, toHexString, vector } from './helpers/vectors.js';
import { qis } from './helpers/cli.js';

interface EnrolledVector {
  operatorSeed: string;
  operatorPublicKey: string;
  operatorId: string;
  nodeSeed: string;
  nodePublicKey: string;
  nodeId: string;
  template: TemplateDoc;
  situation: Record<string, string | number>;
  enrolment: string;
  topic: string;
  packet: string;
  size: number;
}
interface Vectors {
  enrolled: [EnrolledVector, EnrolledVector];
  revocation: { operatorSeed: string; topic: string; packet: string; revoked: string[] };
  login: Array<{ nodeSeed: string; username: string; clientId: string; ts: number; password: string; enrolled: boolean }>;
}
const V = vector<Vectors>('enrolment-v1.json');
const [V1, V2] = V.enrolled;
const operator = keyFromSeed(hex(V1.operatorSeed));
const template = compileTemplate(V1.template);
// The vectors' packets say ts = 1795000000000 (2026-11-18); their enrolments run until 2100.
const TS = 1_795_000_000_000;
const EXP_2100 = 4_102_444_800;
const NBF_V2 = 1_790_000_000;
const SKEW = 300_000;

const dir = mkdtempSync(join(tmpdir(), 'qis-enrol-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A packet of `key` for the vector's situation, with `enrolment` attached when given. */
function packetOf(key: NodeKey, enrolment?: Uint8Array, tpl = template, seq = 1): { topic: string; packet: Uint8Array } {
  const p = createOutcomePacket({ key, template: tpl, situation: V1.situation, outcome: 'fine', seq, ts: TS });
  return { topic: p.topic, packet: enrolment ? attachEnrolment(p.packet, enrolment) : p.packet };
}

t.test('vectors - enrolments, packets with label 13, revocation and logins byte for byte', async (t) => {
  t.equal(operator.nodeId, V1.operatorId, 'operatorId = b32(H(operator key)[:16])');
  t.equal(toHexString(operator.publicKey), V1.operatorPublicKey);
  t.equal(operatorIdOf(operator.publicKey), V1.operatorId);
  t.equal(template.tplId, V1.topic.split('/')[3], "the vector's template id");

  const inputs = [
    { v: V1, seq: 1, out: 'fine', claims: { exp: EXP_2100 } },
    { v: V2, seq: 9, out: 'sticks', conf: 0.75, claims: { exp: EXP_2100, nbf: NBF_V2, scope: [template.tplId] } },
  ];
  for (const { v, seq, out, conf, claims } of inputs) {
    const node = keyFromSeed(hex(v.nodeSeed));
    t.equal(node.nodeId, v.nodeId);
    const enrolment = createEnrolment(operator, { node: node.publicKey, ...claims });
    t.equal(toHexString(enrolment), v.enrolment, `${v.nodeId}: enrolment bytes`);
    const plain = createOutcomePacket({ key: node, template, situation: v.situation, outcome: out, seq, ts: TS, ...(conf !== undefined ? { conf } : {}) });
    t.equal(plain.topic, v.topic);
    const packet = attachEnrolment(plain.packet, enrolment);
    t.equal(toHexString(packet), v.packet, `${v.nodeId}: packet with label 13`);
    t.equal(packet.length, v.size);

    const p = verifyPacket(v.topic, hex(v.packet), { now: TS });
    t.equal(toHexString(p.enrolment!), v.enrolment, 'decodePacket/verifyPacket return label 13');
    t.equal(toHexString(readEnrolment(hex(v.packet))!), v.enrolment, 'readEnrolment');
    t.equal(verifyPacket(v.topic, plain.packet, { now: TS }).enrolment, undefined, 'a packet without label 13 has none');
    const d = decodeEnrolment(hex(v.enrolment));
    t.equal(d.operatorId, v.operatorId);
    t.equal(d.nodeId, v.nodeId);
    t.equal(d.exp, EXP_2100);
    t.same(d.nbf, claims.nbf);
    t.same(d.scope, claims.scope);
    const c = checkPacketEnrolment(p, { now: TS, operators: new Set([v.operatorId]) });
    t.ok(c.ok, `${v.nodeId}: enrolment valid for its packet`);
  }

  const r = verifyRevocation(V.revocation.topic, hex(V.revocation.packet), { now: TS, maxSkewMs: SKEW });
  t.same(r.revoked, V.revocation.revoked);
  t.equal(r.operatorId, V1.operatorId);
  t.equal(r.seq, 3);
  t.equal(r.ts, TS);
  const signed = signRevocation(operator, { seq: 3, ts: TS, revoked: [...V.revocation.revoked].reverse() });
  t.equal(signed.topic, V.revocation.topic);
  t.equal(toHexString(signed.packet), V.revocation.packet, 'revocation list bytes (sorted by bytes)');

  for (const l of V.login) {
    const node = keyFromSeed(hex(l.nodeSeed));
    const creds = createLogin(node, { clientId: l.clientId, ts: l.ts, ...(l.enrolled ? { enrolment: hex(V1.enrolment) } : {}) });
    t.equal(creds.username, l.username);
    t.equal(toHexString(creds.password), l.password, `login password, enrolled ${l.enrolled}`);
    const ok = verifyLogin({ username: l.username, password: hex(l.password), clientId: l.clientId }, { now: l.ts, ...(l.enrolled ? { enrolment: { operators: new Set([V1.operatorId]) } } : {}) });
    t.ok(ok.ok, 'the vector login verifies');
  }
});

t.test('label 13 is unsigned: the packet verifies with, without, or with another enrolment', async (t) => {
  const node = keyFromSeed(hex(V1.nodeSeed));
  const other = createEnrolment(fixedKey(40), { node: node.publicKey, exp: EXP_2100 });
  const swapped = attachEnrolment(hex(V1.packet), other);
  const p = verifyPacket(V1.topic, swapped, { now: TS });
  t.equal(toHexString(p.enrolment!), toHexString(other), 'the replaced enrolment is read back');
  t.equal(decodePacket(swapped).seq, 1);
  // A label 13 that is not an enrolment does not make the packet invalid: the enrolment check reports it.
  const garbage = attachEnrolment(packetOf(node).packet, createEnrolment(fixedKey(41), { node: node.publicKey, exp: EXP_2100 }).map((b, i, a) => (i === a.length - 1 ? b ^ 1 : b)));
  const g = verifyPacket(V1.topic, garbage, { now: TS });
  const c = checkPacketEnrolment(g, { now: TS });
  t.equal(c.ok ? 'ok' : c.reason, 'invalid', 'a tampered enrolment signature is reported, not thrown');
  // Another signer's wider heads (tag 18 as d8 12) are read, and the enrolment comes back in deterministic form.
  const wide = hex(V1.packet.replace(`0d${V1.enrolment}`, `0dd812${V1.enrolment.slice(2)}`));
  t.equal(wide.length, hex(V1.packet).length + 1);
  const w = verifyPacket(V1.topic, wide, { now: TS });
  t.equal(toHexString(w.enrolment!), V1.enrolment, 'a non-shortest tag head');
  t.ok(checkPacketEnrolment(w, { now: TS }).ok);
  t.throws(() => attachEnrolment(packetOf(node).packet, Uint8Array.of(0x01)), { code: 'ERR_ENROLMENT_INVALID' });
  t.throws(() => attachEnrolment(packetOf(node).packet, createEnrolment(operator, { node: node.publicKey, exp: EXP_2100, scope: Array.from({ length: 12 }, (_, i) => `${template.tplId.slice(0, 25)}${'aeimquy4'[i % 8]}`) })), {
    code: 'ERR_PACKET_TOO_LARGE',
  });
});

t.test('refusal reasons, each by code and reason', async (t) => {
  const node = keyFromSeed(hex(V2.nodeSeed));
  const stranger = fixedKey(50);
  const trusted = { operators: new Set([V1.operatorId]) };
  const v2 = hex(V2.enrolment); // nbf 1790000000, scoped to the valve-wear template
  const reason = (r: ReturnType<typeof checkEnrolment>): string => {
    if (r.ok) return 'ok';
    t.equal(r.code, 'ERR_NOT_ENROLLED');
    t.ok(r.message.startsWith(`${r.reason}: `), `message names the reason: ${r.message}`);
    return r.reason;
  };
  const seen = new Set<EnrolmentReason>();
  const expect = (r: ReturnType<typeof checkEnrolment>, want: EnrolmentReason | 'ok', what: string): void => {
    const got = reason(r);
    t.equal(got, want, what);
    if (got !== 'ok') seen.add(got as EnrolmentReason);
  };
  expect(checkEnrolment(undefined, node.publicKey, { now: TS }), 'missing', 'no label 13');
  const tampered = new Uint8Array(v2);
  tampered[tampered.length - 1]! ^= 1;
  expect(checkEnrolment(tampered, node.publicKey, { now: TS }), 'invalid', "operator's signature broken");
  expect(checkEnrolment(Uint8Array.of(0xd2, 0x80), node.publicKey, { now: TS }), 'invalid', 'not a CWT');
  expect(checkEnrolment(v2, stranger.publicKey, { now: TS }), 'key-mismatch', 'another node carrying it');
  // nbf − skew ≤ now ≤ exp + skew, at the boundaries.
  expect(checkEnrolment(v2, node.publicKey, { now: NBF_V2 * 1000 - SKEW - 1 }), 'not-yet-valid', 'before nbf − skew');
  expect(checkEnrolment(v2, node.publicKey, { now: NBF_V2 * 1000 - SKEW }), 'ok', 'at nbf − skew');
  expect(checkEnrolment(v2, node.publicKey, { now: EXP_2100 * 1000 + SKEW }), 'ok', 'at exp + skew');
  expect(checkEnrolment(v2, node.publicKey, { now: EXP_2100 * 1000 + SKEW + 1 }), 'expired', 'after exp + skew');
  expect(checkEnrolment(v2, node.publicKey, { now: EXP_2100 * 1000 + 1, skewMs: 0 }), 'expired', 'skew 0');
  expect(checkEnrolment(v2, node.publicKey, { now: TS }, template.tplId), 'ok', 'in scope');
  const otherTpl = compileTemplate({ ...V1.template, version: 2 });
  expect(checkEnrolment(v2, node.publicKey, { now: TS }, otherTpl.tplId), 'out-of-scope', 'another template');
  expect(checkPacketEnrolment(verifyPacket(packetOf(node, v2, otherTpl).topic, packetOf(node, v2, otherTpl).packet, { now: TS }), { now: TS }), 'out-of-scope', 'a packet of another template');
  expect(checkEnrolment(v2, node.publicKey, { now: TS, operators: new Set(['aaaaaaaaaaaaaaaaaaaaaaaaaa']) }), 'unknown-operator', 'operator not trusted');
  const revokedList = verifyRevocation(...Object.values(signRevocation(operator, { seq: 4, ts: TS, revoked: [node.nodeId] })) as [string, Uint8Array]);
  const olderList = verifyRevocation(V.revocation.topic, hex(V.revocation.packet));
  expect(checkEnrolment(v2, node.publicKey, { now: TS, ...trusted, revoked: revocationIndex([olderList, revokedList]) }), 'revoked', 'revoked by its operator (seq 4 beats seq 3)');
  expect(checkEnrolment(v2, node.publicKey, { now: TS, ...trusted, revoked: revocationIndex([revokedList, olderList]) }), 'revoked', 'in any order');
  expect(checkEnrolment(v2, node.publicKey, { now: TS, ...trusted, revoked: revocationIndex([olderList]) }), 'ok', 'a list without it');
  t.same([...seen].sort(), [...ENROLMENT_REASONS].sort(), 'every reason produced');
});

t.test('enrolments: cached by bytes, refused input', async (t) => {
  const bytes = hex(V1.enrolment);
  t.equal(decodeEnrolment(bytes), decodeEnrolment(new Uint8Array(bytes)), 'the same bytes give the cached result');
  t.throws(() => decodeEnrolment(hex(V.revocation.packet)), { code: 'ERR_ENROLMENT_INVALID' }, 'a COSE_Sign1 that is not a CWT');
  t.throws(() => decodeEnrolment(new Uint8Array(600)), { code: 'ERR_ENROLMENT_INVALID' }, 'too large to fit a packet');
  t.throws(() => createEnrolment(operator, { node: new Uint8Array(31), exp: 1 }), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => createEnrolment(operator, { node: operator.publicKey, exp: 10, nbf: 11 }), { code: 'ERR_INVALID_ARGUMENT' });
  t.equal(parseOperatorRef(V1.operatorPublicKey), V1.operatorId, 'an operator by public key');
  t.equal(parseOperatorRef(V1.operatorId), V1.operatorId);
  t.throws(() => parseOperatorRef('op'), { code: 'ERR_INVALID_ARGUMENT' });
});

t.test('revocation lists: refused forms', async (t) => {
  const { topic, packet } = signRevocation(operator, { seq: 1, ts: TS, revoked: [] });
  t.same(verifyRevocation(topic, packet).revoked, [], 'an empty list');
  t.throws(() => verifyRevocation(`qis/1/r/${fixedKey(3).nodeId}`, packet), { code: 'ERR_NODE_MISMATCH' }, "another operator's topic");
  t.throws(() => verifyRevocation('qis/1/o/x', packet), { code: 'ERR_REVOCATION_INVALID' });
  t.throws(() => verifyRevocation(topic, packet, { now: TS - SKEW - 1, maxSkewMs: SKEW }), { code: 'ERR_TS_FUTURE' });
  t.throws(() => signRevocation(operator, { seq: 1, ts: TS, revoked: ['not-an-id'] }), { code: 'ERR_INVALID_ARGUMENT' });
  const many = Array.from({ length: 40 }, (_, i) => fixedKey(100 + i).nodeId);
  t.throws(() => signRevocation(operator, { seq: 1, ts: TS, revoked: many }), { code: 'ERR_PACKET_TOO_LARGE' }, 'the 512-byte limit');
});

t.test('node login: right key, wrong key, stale ts, another client id, enrolment required', async (t) => {
  const node = keyFromSeed(hex(V1.nodeSeed));
  const other = fixedKey(60);
  const clientId = 'qis-gw-7';
  const { username, password } = createLogin(node, { clientId, ts: TS });
  const why = (r: ReturnType<typeof verifyLogin>): string => (r.ok ? 'ok' : `${r.code}/${r.reason}`);
  t.equal(why(verifyLogin({ username, password, clientId }, { now: TS })), 'ok');
  t.equal(why(verifyLogin({ username, password, clientId }, { now: TS + SKEW })), 'ok', 'at the skew');
  t.equal(why(verifyLogin({ username, password, clientId }, { now: TS - SKEW })), 'ok', 'at the skew, before');
  t.equal(why(verifyLogin({ username, password, clientId }, { now: TS + SKEW + 1 })), 'ERR_LOGIN_REFUSED/stale', 'a replay after the window');
  t.equal(why(verifyLogin({ username, password, clientId }, { now: TS - SKEW - 1 })), 'ERR_LOGIN_REFUSED/stale', 'from the future');
  t.equal(why(verifyLogin({ username, password, clientId: 'qis-gw-8' }, { now: TS })), 'ERR_LOGIN_REFUSED/client-id', 'another client id');
  const forged = createLogin(other, { clientId, ts: TS }).password;
  t.equal(why(verifyLogin({ username, password: forged, clientId }, { now: TS })), 'ERR_LOGIN_REFUSED/user-mismatch', "another key under this node's name");
  const bad = new Uint8Array(password);
  bad[bad.length - 1]! ^= 1;
  t.equal(why(verifyLogin({ username, password: bad, clientId }, { now: TS })), 'ERR_LOGIN_REFUSED/bad-signature', 'a wrong signature');
  t.equal(why(verifyLogin({ username, password: undefined, clientId }, { now: TS })), 'ERR_LOGIN_REFUSED/malformed');
  t.equal(why(verifyLogin({ username, password: Uint8Array.of(1, 2), clientId }, { now: TS })), 'ERR_LOGIN_REFUSED/malformed');
  t.equal(why(verifyLogin({ username, password: new Uint8Array(2000), clientId }, { now: TS })), 'ERR_LOGIN_REFUSED/malformed', 'bounded');
  // A packet is not a login: its external_aad is its topic.
  t.equal(why(verifyLogin({ username, password: hex(V1.packet), clientId }, { now: TS })), 'ERR_LOGIN_REFUSED/bad-signature');
  const required = { enrolment: { operators: new Set([V1.operatorId]) } };
  t.equal(why(verifyLogin({ username, password, clientId }, { now: TS, ...required })), 'ERR_NOT_ENROLLED/missing', 'enrolment mode required');
  const enrolled = createLogin(node, { clientId, ts: TS, enrolment: hex(V1.enrolment) });
  const r = verifyLogin({ username, password: enrolled.password, clientId }, { now: TS, ...required });
  t.equal(why(r), 'ok');
  t.equal(r.ok && r.enrolment?.operatorId, V1.operatorId);
  t.equal(why(verifyLogin({ username, password: enrolled.password, clientId }, { now: TS, enrolment: { operators: new Set([other.nodeId]) } })), 'ERR_NOT_ENROLLED/unknown-operator');
  t.equal(why(verifyLogin({ username, password: enrolled.password, clientId }, { now: EXP_2100 * 1000 + SKEW + 1, skewMs: SKEW, ...required })), 'ERR_LOGIN_REFUSED/stale');
});

t.test('trust filter: 1,000 nodes of an untrusted operator and 1,000 unenrolled ones are dropped and counted', async (t) => {
  const a = fixedKey(70);
  const b = fixedKey(71);
  const packets: VerifiedPacket[] = [];
  const make = (seed: number, op?: NodeKey): void => {
    const key = keyFromSeed(new Uint8Array(32).fill(0).map((_, i) => (i < 4 ? (seed >> (8 * i)) & 0xff : 7)));
    const { topic, packet } = packetOf(key, op ? createEnrolment(op, { node: key.publicKey, exp: EXP_2100 }) : undefined);
    packets.push(verifyPacket(topic, packet, { now: TS }));
  };
  for (let i = 0; i < 30; i++) make(i, a);
  for (let i = 1000; i < 2000; i++) make(i, b);
  for (let i = 2000; i < 3000; i++) make(i);
  const revoked = signRevocation(a, { seq: 1, ts: TS, revoked: [packets[0]!.nodeId, packets[1]!.nodeId] });
  const r = filterTrusted(packets, { operators: [a.nodeId], revocations: [verifyRevocation(revoked.topic, revoked.packet)], now: TS });
  t.equal(r.kept.length, 28);
  t.ok(r.kept.every((k) => k.operatorId === operatorIdOf(a.publicKey)));
  t.same(r.operators, { [a.nodeId]: 28 }, 'per-operator node counts');
  t.equal(r.dropped['unknown-operator'], 1000);
  t.equal(r.dropped.missing, 1000);
  t.equal(r.dropped.revoked, 2);
  t.equal(Object.values(r.dropped).reduce((x, y) => x + y, 0), 2002, 'nothing else dropped');
  t.throws(() => filterTrusted(packets, { operators: [a.nodeId], now: Number.NaN }), { code: 'ERR_INVALID_ARGUMENT' }, 'now is required');
});

t.test("per-operator cap: a rogue operator's 1,000 enrolled liars hold at most its share", async (t) => {
  const synth = (nodeId: string, out: string, n: number): SynthPacket => ({ nodeId, out, conf: 1, n, ts: TS });
  const kept: Array<{ packet: SynthPacket; operatorId: string }> = [];
  // Four honest operators, 50 nodes each, all saw "fine"; a rogue one enrols 1,000 liars claiming n = 10^9.
  for (let o = 0; o < 4; o++) for (let i = 0; i < 50; i++) kept.push({ packet: synth(`h${o}-${i}`, 'fine', 1 + (i % 3)), operatorId: `honest${o}` });
  for (let i = 0; i < 1000; i++) kept.push({ packet: synth(`r-${i}`, 'sticks', 1e9), operatorId: 'rogue' });
  const labels = { kind: 'category', labels: ['sticks', 'fine'] } as const;
  const tpl = compileTemplate({ ...V1.template, outcome: labels });
  const uncapped = synthesize(tpl, kept.map((k) => k.packet), { maxNodeShare: 1 });
  t.ok(uncapped.kind === 'category' && uncapped.labels.sticks!.proportion > 0.99, 'without the operator cap the rogue owns the answer');

  const c = capOperatorShare(kept);
  t.equal(c.maxOperatorShare, 2 / 5, 'default: twice the average share of 5 operators');
  t.same(c.capped, ['rogue']);
  t.ok(Math.abs(c.shares.rogue! - 0.4) < 1e-12, `rogue share ${c.shares.rogue}`);
  t.equal(c.packets[0], kept[0]!.packet, 'uncapped operators keep their packets as they are');
  const s = synthesize(tpl, c.packets, { maxNodeShare: 1 });
  t.ok(s.kind === 'category');
  if (s.kind === 'category') {
    // docs/synthesis.md: a label share moves by at most the liars' weight share (here the operator's).
    t.ok(s.labels.sticks!.proportion <= 0.4 + 1e-9, `sticks share ${s.labels.sticks!.proportion} ≤ 0.4`);
    t.equal(s.top, 'fine', 'the honest majority keeps the weighted top label');
  }
  const tight = capOperatorShare(kept, 0.3);
  t.ok(Math.abs(tight.shares.rogue! - 0.3) < 1e-12, 'an explicit cap');
  // Below 1/M no level fits (5 operators cannot each hold under 1/5): every operator gets the smallest weight.
  const flat = capOperatorShare(kept, 0.1);
  t.ok(Object.values(flat.shares).every((x) => Math.abs(x - 0.2) < 1e-12), 'M·s ≤ 1: one operator, one weight');
  t.throws(() => capOperatorShare(kept, 0), { code: 'ERR_INVALID_ARGUMENT' });
});

t.test('password files: salted scrypt hashes, verify, replace, refuse malformed files', async (t) => {
  const file = join(dir, 'passwd');
  const fast = { N: 1024, r: 8, p: 1 };
  await setPassword(file, 'alice', 'correct horse', fast);
  await setPassword(file, 'bob', 'battery staple', fast);
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode 0600');
  const text = readFileSync(file, 'utf8');
  t.notOk(text.includes('correct horse'), 'no password in the file');
  t.match(text, /^alice:scrypt\$1024\$8\$1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*\nbob:/);
  let entries = await readPasswdFile(file);
  t.ok(await verifyPassword(entries, 'alice', 'correct horse'));
  t.notOk(await verifyPassword(entries, 'alice', 'battery staple'), 'another user’s password');
  t.notOk(await verifyPassword(entries, 'carol', 'correct horse'), 'an unknown user');
  t.notOk(await verifyPassword(entries, 'alice', 'x'.repeat(5000)), 'an oversized password');
  await setPassword(file, 'alice', 'new one', fast);
  entries = await readPasswdFile(file);
  t.equal(entries.size, 2, 'replaced in place');
  t.ok(await verifyPassword(entries, 'alice', 'new one'));
  t.ok(await verifyPassword(entries, 'bob', 'battery staple'), 'the other line kept');
  // Two hashes of one password differ (each has its own salt).
  await setPassword(join(dir, 'p2'), 'alice', 'new one', fast);
  t.not((await readPasswdFile(join(dir, 'p2'))).get('alice'), entries.get('alice'));
  const bad = (s: string): unknown => parsePasswd(s);
  t.throws(() => bad('alice:md5$abc'), { code: 'ERR_PASSWORD_FILE_INVALID', message: /line 1/ });
  t.throws(() => bad(`# c\n\nalice:scrypt$1000$8$1$AAAA$${'A'.repeat(44)}`), { code: 'ERR_PASSWORD_FILE_INVALID', message: /line 3.*power of 2/ });
  t.throws(() => bad(`alice:scrypt$${2 ** 22}$8$1$AAAA$${'A'.repeat(44)}`), { code: 'ERR_PASSWORD_FILE_INVALID' }, 'N bounded');
  const line = text.split('\n')[1]!;
  t.throws(() => bad(`${line}\n${line}`), { code: 'ERR_PASSWORD_FILE_INVALID', message: /twice/ });
  await t.rejects(setPassword(file, 'a:b', 'x', fast), { code: 'ERR_PASSWORD_FILE_INVALID' });
  await t.rejects(readPasswdFile(join(dir, 'missing')), { code: 'ERR_FILE_IO' });
});

t.test('CLI: operator keygen, enrol, enrol --install, revoke, packet verify --trust, broker passwd', async (t) => {
  const json = (stdout: string): Record<string, unknown> => JSON.parse(stdout) as Record<string, unknown>;
  const opFile = join(dir, 'op.key');
  let r = await qis(['operator', 'keygen', '--out', opFile, '--json']);
  t.equal(r.status, 0, r.stderr);
  const opId = json(r.stdout).operatorId as string;
  t.equal(statSync(opFile).mode & 0o777, 0o600);
  const nodeDir = join(dir, 'node');
  r = await qis(['keygen', '--out', join(nodeDir, 'key.json'), '--json']);
  t.equal(r.status, 0, r.stderr);
  const nodeId = json(r.stdout).nodeId as string;
  const tplFile = join(dir, 'valve.json');
  writeFileSync(tplFile, JSON.stringify(V1.template));

  r = await qis(['enrol', '--operator-key', opFile, '--node', join(nodeDir, 'key.json'), '--days', '30', '--template', tplFile, '--out', join(dir, 'n.enr'), '--json']);
  t.equal(r.status, 0, r.stderr);
  const made = json(r.stdout);
  t.equal(made.nodeId, nodeId);
  t.equal(made.operatorId, opId);
  t.same(made.scope, [template.tplId], 'a template file gives its id');
  const e = decodeEnrolment(new Uint8Array(readFileSync(join(dir, 'n.enr'))));
  // The child's clock and this one agree within the run; 30 days = 2,592,000 s.
  const nowS = Math.floor(Date.now() / 1000);
  t.ok(Math.abs(e.exp - (nowS + 2_592_000)) < 120, `exp ${e.exp} is 30 days from now`);

  r = await qis(['enrol', '--install', join(dir, 'n.enr'), '--data-dir', nodeDir]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /installed .*enrolment\.cbor/);
  t.same(readFileSync(join(nodeDir, 'enrolment.cbor')), readFileSync(join(dir, 'n.enr')));

  // An enrolment of another key is refused at install.
  const otherDir = join(dir, 'other');
  await qis(['keygen', '--out', join(otherDir, 'key.json')]);
  r = await qis(['enrol', '--install', join(dir, 'n.enr'), '--data-dir', otherDir, '--json']);
  t.equal(r.status, 1);
  t.equal(json(r.stdout).code, 'ERR_NOT_ENROLLED');
  t.match(json(r.stdout).message, /^key-mismatch/);
  // By hex public key, as hex text on install; an expired one is refused.
  const expired = createEnrolment(fixedKey(80), { node: hex(keyToJson(fixedKey(81)).publicKey), exp: 1000 });
  const expDir = join(dir, 'exp');
  rmSync(expDir, { recursive: true, force: true });
  const { saveKeyFile } = await import('../src/index.js');
  await saveKeyFile(join(expDir, 'key.json'), fixedKey(81));
  writeFileSync(join(dir, 'expired.hex'), toHexString(expired) + '\n');
  r = await qis(['enrol', '--install', join(dir, 'expired.hex'), '--data-dir', expDir, '--json']);
  t.equal(json(r.stdout).code, 'ERR_NOT_ENROLLED');
  t.match(json(r.stdout).message, /^expired/);

  // packet verify --trust on the vector packet (valid until 2100, no nbf).
  const vop = join(dir, 'vop.key');
  writeFileSync(vop, JSON.stringify(keyToJson(operator)));
  chmodSync(vop, 0o600);
  r = await qis(['packet', 'verify', '--topic', V1.topic, '--hex', V1.packet, '--trust', V1.operatorId, '--json']);
  t.equal(r.status, 0, r.stderr);
  t.equal((json(r.stdout).enrolment as Record<string, unknown>).operatorId, V1.operatorId);
  r = await qis(['packet', 'verify', '--topic', V1.topic, '--hex', V1.packet, '--trust', V1.operatorPublicKey]);
  t.equal(r.status, 0, 'an operator named by its public key');
  t.match(r.stdout, /enrolled by operator 2sztae6ebtmvkdx2ctidpcel4e/);
  r = await qis(['packet', 'verify', '--topic', V1.topic, '--hex', V1.packet, '--trust', opId, '--json']);
  t.equal(r.status, 1);
  t.same([json(r.stdout).code, json(r.stdout).reason], ['ERR_NOT_ENROLLED', 'unknown-operator']);
  r = await qis(['revoke', '--operator-key', vop, '--node', V1.nodeId, '--seq', '5', '--out', join(dir, 'r.bin'), '--json']);
  t.equal(r.status, 0, r.stderr);
  t.equal(json(r.stdout).topic, `qis/1/r/${V1.operatorId}`);
  t.same(verifyRevocation(`qis/1/r/${V1.operatorId}`, new Uint8Array(readFileSync(join(dir, 'r.bin')))).revoked, [V1.nodeId]);
  r = await qis(['packet', 'verify', '--topic', V1.topic, '--hex', V1.packet, '--trust', V1.operatorId, '--revocations', join(dir, 'r.bin'), '--json']);
  t.equal(r.status, 1);
  t.equal(json(r.stdout).reason, 'revoked');
  const plain = packetOf(keyFromSeed(hex(V1.nodeSeed)));
  r = await qis(['packet', 'verify', '--topic', plain.topic, '--hex', toHexString(plain.packet), '--trust', V1.operatorId, '--json']);
  t.same([json(r.stdout).code, json(r.stdout).reason], ['ERR_NOT_ENROLLED', 'missing']);
  r = await qis(['packet', 'verify', '--topic', plain.topic, '--hex', toHexString(plain.packet)]);
  t.equal(r.status, 0, 'without --trust nothing changes');

  r = await qis(['broker', 'passwd', join(dir, 'cli-passwd'), 'gateway-7'], 'pa ss\nignored\n');
  t.equal(r.status, 0, r.stderr);
  const entries = await readPasswdFile(join(dir, 'cli-passwd'));
  t.ok(await verifyPassword(entries, 'gateway-7', 'pa ss'), 'the first stdin line is the password');

  // Usage errors and help.
  r = await qis(['enrol', '--node', 'x']);
  t.equal(r.status, 2);
  t.match(r.stderr, /ERR_CLI_USAGE/);
  r = await qis(['enrol', '--operator-key', opFile, '--node', nodeId]);
  t.equal(r.status, 2, 'a node id cannot be enrolled (it is a hash)');
  r = await qis(['broker', 'passwd', join(dir, 'x')]);
  t.equal(r.status, 2);
  r = await qis(['broker', 'passwd', join(dir, 'x'), 'u']);
  t.equal(r.status, 2, 'no password on stdin');
  r = await qis(['revoke', '--operator-key', opFile, '--node', 'nope']);
  t.equal(r.status, 2);
  for (const cmd of [['enrol'], ['broker', 'passwd']]) {
    r = await qis([...cmd, '--help']);
    t.equal(r.status, 0);
    t.match(r.stdout, new RegExp(`^qis ${cmd.join(' ')}`));
  }
});
