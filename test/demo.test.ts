// `qis demo` (what `npm start` runs): broker, simulated fleet, cohort tables; twice on one data dir.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qis } from './helpers/cli.js';

interface Summary {
  regions: { west: { packets: number } };
  ok: boolean;
  broker: { port: number; packetsAtStart: number; packets: number };
  fleet: { machines: number; acked: number; queued: number; newKeys: number; reusedKeys: number; inBroker: number; nodeIdsDigest: string; seqMin: number; seqMax: number };
  cohorts: { question: string; cohort: number; completeness: string; synthesis: { kind: string }; truth: { mean: number } | null }[];
  hints: { query: string; list: string; decode: string; metrics?: string };
}

t.test('qis demo --exit: tables and hints; a second run reuses the keys and the broker store', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qis-demo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const args = ['demo', '--exit', '--machines', '120', '--port', '0', '--data-dir', dir];

  const first = await qis([...args]);
  t.equal(first.status, 0, first.stderr);
  t.match(first.stdout, /120 acknowledged, 0 queued/);
  t.match(first.stdout, /regions\s+east mqtt:\/\/127\.0\.0\.1:\d+ and west mqtt:\/\/127\.0\.0\.1:\d+/, 'two regions');
  t.match(first.stdout, /regions\s+east holds 120 packet\(s\), west 120: in sync/, 'west\'s packets reached east and the other way round');
  t.match(first.stdout, /keys\s+120 new, 0 reused/);
  t.match(first.stdout, /KX-200 roller bearings, 10–50 kN, sealed: what happened\?/);
  t.match(first.stdout, /cohort\s+bearing-failure v1, exact: qis\/1\/o\//, 'an exact cohort table');
  t.match(first.stdout, /cohort\s+bearing-failure v1, widened by 2 level\(s\)/, 'a widened cohort table');
  t.match(first.stdout, /label\s+nodes\s+weight\s+share/, 'the category synthesis');
  t.match(first.stdout, /cohort\s+maize-yield v3, exact/);
  t.match(first.stdout, /^truth\s+failure \d+\.\d %/m, 'the ground truth next to the estimate');
  t.match(first.stdout, /npx qis query --url mqtt:\/\/127\.0\.0\.1:\d+ --template examples\/bearing-failure\.yaml --situation '\{"machine_model":"KX-200"/, 'the qis query hint');
  t.match(first.stdout, /mosquitto_sub -h 127\.0\.0\.1 -p \d+ -t 'qis\/1\/o\/[a-z2-7]{26}\/#'/, 'the mosquitto_sub hint');
  t.match(first.stdout, /\| npx qis decode --topic 'qis\/1\/o\//);
  t.match(first.stdout, /curl http:\/\/127\.0\.0\.1:\d+\/metrics/);
  t.match(first.stderr, /publishing \[#+\] 120\/120/, 'progress on stderr');

  const second = await qis([...args, '--json']);
  t.equal(second.status, 0, second.stderr);
  const lines = second.stdout.trim().split('\n');
  t.equal(lines.length, 1, 'one JSON object on stdout');
  const s = JSON.parse(lines[0]!) as Summary;
  t.equal(s.ok, true);
  t.equal(s.broker.packetsAtStart, 120, 'the broker reloaded its store');
  t.equal(s.fleet.newKeys, 0, 'no new keys');
  t.equal(s.fleet.reusedKeys, 120);
  t.equal(s.fleet.acked, 120, 'every seq was newer than the stored one');
  t.equal(s.fleet.inBroker, 120, 'every node of the fleet has its packet in the broker');
  t.equal(s.broker.packets, 120, 'the same node ids: still one packet per node');
  t.equal(s.regions.west.packets, 120, 'west holds every packet too');
  t.equal(s.cohorts.length, 4);
  for (const c of s.cohorts) t.equal(c.completeness, 'sync', c.question);
  t.ok(s.cohorts[2]!.cohort >= s.cohorts[0]!.cohort, 'the widened cohort holds the exact one');
  t.match(s.hints.query, /^npx qis query --url mqtt:\/\/127\.0\.0\.1:/);

  const third = await qis([...args, '--json']);
  t.equal(third.status, 0, third.stderr);
  const s3 = JSON.parse(third.stdout) as Summary;
  t.equal(s3.fleet.nodeIdsDigest, s.fleet.nodeIdsDigest, 'the same node ids on every run');
  t.ok(s3.fleet.seqMin > s.fleet.seqMax, 'seq increases across runs');
  t.equal(s3.broker.packets, 120);
});

t.test('qis demo - usage errors', async (t) => {
  const r = await qis(['demo', '--exit', '--keep-running']);
  t.equal(r.status, 2);
  t.match(r.stderr, /--exit and --keep-running/);
  const m = await qis(['demo', '--machines', 'many']);
  t.equal(m.status, 2);
});
