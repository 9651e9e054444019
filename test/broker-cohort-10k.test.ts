// The regional broker with 10,000-packet cohorts: every query complete (the sync marker held,
// PROTOCOL §7), and plain Aedes as the negative control. (Split from broker-durability.test.ts so
// each file keeps well inside tap's time limit.)
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNode } from '../src/index.js';
import { startAedes } from './helpers/aedes.js';
import { SIT, cohort, publishAll } from './helpers/cohort-load.js';
import { bearing } from './helpers/fixtures.js';
import { startQisBroker } from './helpers/qis-broker.js';

t.test('broker - a 10,000-packet cohort query is complete every time (sync marker held)', async (t) => {
  const b = await startQisBroker();
  const dir = mkdtempSync(join(tmpdir(), 'qis-10k-'));
  t.teardown(async () => {
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const packets = cohort(10_000, 1);
  await publishAll(b.url, packets);
  t.equal(b.broker.store.size, 10_000, 'all stored');
  const node = await createNode({ url: b.url, dataDir: join(dir, 'q') });
  t.teardown(() => node.close());
  for (let i = 0; i < 3; i++) {
    const r = await node.query(bearing, SIT, { minCohort: 1, timeoutMs: 60_000 });
    t.equal(r.completeness, 'sync', 'ended by the sync marker, not a quiet period');
    t.equal(r.broker, 'qis');
    t.equal(r.packets.length, 10_000, `query ${i + 1}: all 10,000 packets`);
    t.same(r.dropped, {});
  }
});

t.test('broker - negative control: on plain Aedes the sync marker overtakes the retained packets', async (t) => {
  const a = await startAedes();
  const dir = mkdtempSync(join(tmpdir(), 'qis-10k-aedes-'));
  t.teardown(async () => {
    await a.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await publishAll(a.url, cohort(10_000, 2));
  // Told (wrongly) that this broker keeps the order, the query trusts the marker and ends early.
  const node = await createNode({ url: a.url, dataDir: join(dir, 'q'), brokerKind: 'mosquitto' });
  t.teardown(() => node.close());
  const r = await node.query(bearing, SIT, { minCohort: 1, timeoutMs: 60_000 });
  t.ok(r.packets.length < 10_000, `incomplete: ${r.packets.length} of 10,000 (PROTOCOL §7 measurement)`);
  // Asked (auto), the node recognises an unknown broker and waits for a quiet period instead.
  const auto = await createNode({ url: a.url, dataDir: join(dir, 'q2') });
  t.teardown(() => auto.close());
  const r2 = await auto.query(bearing, SIT, { minCohort: 1, timeoutMs: 60_000 });
  t.equal(r2.completeness, 'quiet-period');
  t.equal(r2.packets.length, 10_000, 'the quiet period gets them all');
});
