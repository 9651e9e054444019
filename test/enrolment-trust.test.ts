// A querier that trusts operators (PROTOCOL §10) at the sizes, against a real broker over
// loopback: 1,000 nodes enrolled only by another operator and 1,000 unenrolled ones are ignored,
// and a rogue operator's 1,000 enrolled liars hold no more than the per-operator cap. The clock
// is injected (test/helpers/enrolment.ts).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNode, keyFromSeed, signRevocation, type NodeKey } from '../src/index.js';
import { renderQuery } from '../cli/node-commands.js';
import { bearing, situation } from './helpers/fixtures.js';
import { clock, enrol, opA, opB, packet, startBroker } from './helpers/enrolment.js';
import { publishAll, seed } from './helpers/federation.js';
import { publishOnce } from './helpers/retained.js';

const root = mkdtempSync(join(tmpdir(), 'qis-enrol-trust-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

// The sizes: 1,000 nodes enrolled only by B, 1,000 unenrolled, 1,000 rogue liars (every
// packet is signed, verified by the broker and again by the querier at each query).
const N = 1000;
/** A query's deadline: one read of 3,021 retained packets, each verified, on a shared 2-core machine (the default 10 s is for interactive use). */
const QUERY_MS = 60_000;

const cohortPacket = (node: NodeKey, outcome: string, enrolment?: Uint8Array): { topic: string; packet: Uint8Array } => packet(node, enrolment, clock(), outcome);

t.test(`a querier trusting operator A ignores ${N} nodes enrolled only by B and ${N} unenrolled ones; a rogue operator's liars stay within the per-operator cap`, async (t) => {
  const b = await startBroker(t, root); // off mode: the broker keeps everything, the querier judges
  const opR = keyFromSeed(seed(3, 0xa));
  const honest = Array.from({ length: 20 }, (_, i) => keyFromSeed(seed(i, 0xc1)));
  const byB = Array.from({ length: N }, (_, i) => keyFromSeed(seed(i, 0xc2)));
  const bare = Array.from({ length: N }, (_, i) => keyFromSeed(seed(i, 0xc3)));
  const liars = Array.from({ length: N }, (_, i) => keyFromSeed(seed(i, 0xc4)));
  const revokedHonest = keyFromSeed(seed(99, 0xc1));
  await publishAll(b.url, [
    ...honest.map((k) => cohortPacket(k, 'no_failure', enrol(opA, k))),
    ...byB.map((k) => cohortPacket(k, 'failure', enrol(opB, k))),
    ...bare.map((k) => cohortPacket(k, 'failure')),
    ...liars.map((k) => cohortPacket(k, 'failure', enrol(opR, k))),
  ]);
  const list = signRevocation(opA, { seq: 7, ts: clock(), revoked: [revokedHonest.nodeId] });
  t.equal(await publishOnce(b.url, list.topic, list.packet), 'acked', "A's revocation list is on the broker");
  // An off-mode broker applies the list to what it holds but stores the revoked node's later packets: the querier judges them.
  const late = cohortPacket(revokedHonest, 'failure', enrol(opA, revokedHonest));
  t.equal(await publishOnce(b.url, late.topic, late.packet), 'acked', 'a packet of the revoked node published after the list');

  const q = await createNode({ url: b.url, dataDir: mkdtempSync(join(root, 'q-')), now: clock });
  t.teardown(() => q.close());
  const plain = await q.query(bearing, situation, { timeoutMs: QUERY_MS });
  t.equal(plain.packets.length, 20 + 1 + 3 * N, 'without trust every verified node counts');

  const a = await q.query(bearing, situation, { trust: [opA.nodeId], timeoutMs: QUERY_MS });
  t.equal(a.packets.length, 20, "trusting A: only A's non-revoked nodes count");
  t.same(a.trust?.operators, { [opA.nodeId]: 20 }, 'per-operator node counts');
  t.match(a.trust?.notEnrolled, { 'unknown-operator': 2 * N, missing: N, revoked: 1 }, 'the others counted by reason');
  t.same(a.trust?.revocations, { [opA.nodeId]: 7 }, "A's revocation list was read in the same round trip");
  t.match(a.synthesis, { kind: 'category', top: 'no_failure', labels: { failure: { count: 0 } } }, 'the answer is the honest one');

  const share = 0.5;
  const r = await q.query(bearing, situation, { trust: [opA.nodeId, opR.nodeId], maxOperatorShare: share, timeoutMs: QUERY_MS });
  t.same(r.trust?.operators, { [opA.nodeId]: 20, [opR.nodeId]: N }, 'both operators counted');
  t.same(r.trust?.capped, [opR.nodeId], "the rogue operator's weight is capped");
  const s = r.synthesis;
  if (s.kind !== 'category') throw new Error('expected a category summary');
  const lie = s.labels['failure']?.proportion ?? 1;
  t.ok(lie <= share + 1e-9, `the liars' weight share ${lie.toFixed(3)} stays within the operator cap ${share} (uncapped it would be ${(N / (N + 20)).toFixed(3)})`);
  t.ok(lie > share - 0.05, 'and the cap is what bounds it (the rogue operator still holds its full share)');
  // qis query --trust prints this table (the CLI's own clock cannot be injected, so its renderer is run here).
  const table = renderQuery('bearing-failure', 1, a, false);
  t.match(table, new RegExp(`operators ${opA.nodeId}: 20 node\\(s\\) \\(revocation list seq 7\\)`), 'the table lists each operator with its node count');
  t.match(table, new RegExp(`not counted \\(no valid enrolment\\): missing ${N}, unknown-operator ${2 * N}, revoked 1`), 'and the packets not counted, by reason');
});
