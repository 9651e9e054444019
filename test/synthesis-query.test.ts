// The weight cap and the vote end to end: signed packets through the qis broker over loopback,
// `qis query` (the built CLI) folds and synthesises them. One liar with a valid key claims
// n = 10⁹ for the minority label.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNode, keyFromSeed, type QisNode } from '../src/index.js';
import { bearing, situation } from './helpers/fixtures.js';
import { qis } from './helpers/cli.js';
import { startQisBroker } from './helpers/qis-broker.js';

interface QueryJson {
  ok: boolean;
  cohort: number;
  kind: string;
  maxNodeShare: number;
  capped: number;
  top: string;
  vote: { rule: string; top: string; margin: number };
  labels: Record<string, { count: number; weight: number; proportion: number; voteShare: number }>;
  code?: string;
}

t.test('qis query - a liar claiming n = 10⁹ is capped, the vote ignores n, --max-node-share sets the cap', async (t) => {
  const broker = await startQisBroker();
  const root = mkdtempSync(join(tmpdir(), 'qis-synth-query-'));
  const nodes: QisNode[] = [];
  t.teardown(async () => {
    await Promise.all(nodes.map((n) => n.close()));
    await broker.close();
    rmSync(root, { recursive: true, force: true });
  });
  // Four honest no_failure, one honest failure (n = 1 each), one liar: failure with n = 10⁹.
  const plan: Array<[string, number]> = [
    ['no_failure', 1],
    ['no_failure', 1],
    ['no_failure', 1],
    ['no_failure', 1],
    ['failure', 1],
    ['failure', 1e9],
  ];
  for (const [i, [out, n]] of plan.entries()) {
    const node = await createNode({ url: broker.url, dataDir: join(root, `n${i}`), key: keyFromSeed(new Uint8Array(32).fill(0x70 + i)) });
    nodes.push(node);
    const r = await node.publish(bearing, situation, out, { n });
    t.equal(r.acked, true, `node ${i} (${out}, n ${n}) acknowledged`);
  }
  const S = JSON.stringify(situation);
  const ask = async (extra: string[]): Promise<QueryJson> => {
    const r = await qis(['query', '--url', broker.url, '--template', 'examples/bearing-failure.yaml', '--situation', S, '--json', '--timeout', '20000', ...extra]);
    return JSON.parse(r.stdout) as QueryJson;
  };

  // Default cap 2/6: the liar is cut to T = (1/3)·5/(1 − 1/3) = 2.5 of a total 7.5.
  const d = await ask([]);
  t.equal(d.cohort, 6);
  t.equal(d.kind, 'category');
  t.equal(d.maxNodeShare, 2 / 6, 'default 2/N');
  t.equal(d.capped, 1, 'only the liar');
  t.ok(Math.abs(d.labels['failure']!.weight - 3.5) < 1e-9, `failure weight 2.5 + 1 (${d.labels['failure']!.weight})`);
  t.ok(Math.abs(d.labels['failure']!.proportion - 3.5 / 7.5) < 1e-9, 'failure share 3.5/7.5');
  t.equal(d.top, 'no_failure', 'the capped weights still side with the honest majority');
  t.same(d.vote, { rule: 'one-node-one-vote', top: 'no_failure', margin: 2 }, 'four votes to two');
  t.equal(d.labels['failure']!.voteShare, 2 / 6);

  // --max-node-share 1: no cap, n = 10⁹ owns the answer; the vote does not move.
  const off = await ask(['--max-node-share', '1']);
  t.equal(off.capped, 0);
  t.equal(off.top, 'failure', 'uncapped, one claimed n outweighs five nodes');
  t.ok(off.labels['failure']!.proportion > 0.999999);
  t.equal(off.vote.top, 'no_failure');

  // --max-node-share 0.2: T = 0.2·5/0.8 = 1.25, the liar holds exactly 20 %.
  const tight = await ask(['--max-node-share', '0.2']);
  t.equal(tight.maxNodeShare, 0.2);
  t.ok(Math.abs(tight.labels['failure']!.proportion - 2.25 / 6.25) < 1e-9, `failure share (1.25 + 1)/6.25 (${tight.labels['failure']!.proportion})`);

  // A human reads the cap and the vote.
  const human = await qis(['query', '--url', broker.url, '--template', 'examples/bearing-failure.yaml', '--situation', S, '--timeout', '20000']);
  t.equal(human.status, 0, human.stderr);
  t.match(human.stdout, /vote\s+no_failure by 2 nodes \(one node, one vote\)/);
  t.match(human.stdout, /capped\s+1 node at 33\.3 % of the weight each/);

  // Out of range: refused with the stable code, nothing else changes.
  const bad = await qis(['query', '--url', broker.url, '--template', 'examples/bearing-failure.yaml', '--situation', S, '--json', '--max-node-share', '1.5']);
  t.not(bad.status, 0);
  const j = JSON.parse(bad.stdout) as QueryJson;
  t.equal(j.ok, false);
  t.equal(j.code, 'ERR_INVALID_ARGUMENT');
});

t.test('renderQuery - a number summary shows the by-node figures and the cap', async (t) => {
  const { renderQuery } = await import('../cli/node-commands.js');
  const { compileTemplate } = await import('../src/protocol/template.js');
  const { synthesize } = await import('../src/synthesis/index.js');
  const life = compileTemplate({ name: 'pump-life', version: 1, fields: [{ name: 'model', kind: 'category' }], outcome: { kind: 'number', unit: 'h' } });
  const packets = [100, 200, 300, 400, 500].map((v, i) => ({ nodeId: `n${i}`, out: v, conf: 1, n: i === 4 ? 1000 : 1, ts: 0 }));
  const synthesis = synthesize(life, packets);
  const text = renderQuery('pump-life', 1, { tplId: 'x', filter: 'f', widen: 0, completeness: 'sync', broker: 'qis', packets: [], received: 5, dropped: {}, superseded: 0, withdrawn: 0, duplicates: 0, synthesis, elapsedMs: 1 } as never, false);
  t.match(text, /by node \(each counted once\): median 300 h {3}trimmed mean 300 h/, 'one node one value: the median of 100…500');
  t.match(text, /capped\s+1 node at 40\.0 % of the weight each/, 'the n = 1000 node at 2/5');
});
