// Issue 16 item 2: delivery status that tells the truth, over real processes (the built `qis`
// spawned, our broker on loopback TCP). The node's clock is injected an hour fast through --ts
// (the packet's observation time), measured from this test's clock, never from a fixed date.
import t, { type Test } from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { qis, tempDir } from './helpers/cli.js';
import { startQisBroker } from './helpers/qis-broker.js';
import { situation } from './helpers/fixtures.js';

const TPL = 'examples/bearing-failure.yaml';
const SIT = JSON.stringify(situation);
const HOUR = 3_600_000;


function parse(out: string): Record<string, unknown> {
  return JSON.parse(out) as Record<string, unknown>;
}

t.test('cli delivery - a packet the broker refuses (clock an hour fast) is never reported as delivered or safe', async (t) => {
  const b = await startQisBroker();
  t.teardown(() => b.close());
  const dir = join(tempDir(t, 'qis-cli-delivery-'), 'node');
  const conn = ['--url', b.url, '--data-dir', dir];

  const pub = await qis(['publish', ...conn, '--template', TPL, '--situation', SIT, '--outcome', 'failure', '--ts', String(Date.now() + HOUR), '--json']);
  t.equal(pub.status, 1, `publish exits 1 (${pub.stdout}${pub.stderr})`);
  const pj = parse(pub.stdout);
  t.equal(pj['code'], 'ERR_DELIVERY_REFUSED', 'publish says the broker refused it');
  t.match(String(pj['message']), /ahead of the broker's clock \(ERR_TS_FUTURE\)/, 'and names the clock as the likely reason');
  t.notMatch(pub.stdout + pub.stderr, /safe in/, 'no "safe in outbox"');

  const fl = await qis(['flush', ...conn, '--timeout', '120000', '--json']);
  t.equal(fl.status, 1, `flush exits 1 (${fl.stdout}${fl.stderr})`);
  const fj = parse(fl.stdout);
  t.equal(fj['code'], 'ERR_DELIVERY_REFUSED');
  const bad = /(\S+\.json\.bad)/.exec(String(fj['message']))?.[1];
  t.ok(bad, `flush names the packet set aside: ${String(fj['message'])}`);
  t.ok(bad !== undefined && existsSync(bad), 'the named file exists');
  t.match(String(fj['message']), /delivered 0;/, 'nothing counted as delivered');
  t.match(String(fj['message']), /ahead of the broker's clock/, 'the likely reason again');

  const st = await qis(['status', '--data-dir', dir, '--json']);
  t.equal(st.status, 0, st.stderr);
  const sj = parse(st.stdout) as { queued: unknown[]; setAside: { name: string; kind: string }[] };
  t.equal(sj.queued.length, 0, 'nothing queued');
  t.same(sj.setAside.map((e) => [join(dir, 'outbox', e.name), e.kind]), [[bad, 'packet']], 'status lists the packet set aside');
  const human = await qis(['status', '--data-dir', dir]);
  t.match(human.stdout, /set aside 1/, 'status says it for a person too');

  // With the clock right, the same node delivers, and flush counts only what was acknowledged.
  const ok = await qis(['publish', ...conn, '--template', TPL, '--situation', SIT, '--outcome', 'failure', '--json']);
  t.equal(ok.status, 0, ok.stdout + ok.stderr);
  t.equal(parse(ok.stdout)['acked'], true, 'acknowledged');
  const fl2 = await qis(['flush', ...conn, '--json']);
  t.equal(fl2.status, 0, fl2.stdout + fl2.stderr);
  t.same(parse(fl2.stdout), { ok: true, delivered: 0, queued: 0 }, 'an empty outbox delivers nothing (an earlier set-aside is not counted)');
});

t.test('cli delivery - qis withdraw sends a tombstone through the outbox; queued when the broker is away', async (t) => {
  const b = await startQisBroker();
  t.teardown(() => b.close());
  const dir = join(tempDir(t, 'qis-cli-delivery-'), 'node');
  const conn = ['--url', b.url, '--data-dir', dir];
  const never = await qis(['withdraw', ...conn, '--template', TPL, '--json']);
  t.equal(never.status, 1);
  t.equal(parse(never.stdout)['code'], 'ERR_NOTHING_TO_WITHDRAW', 'nothing published, nothing to withdraw');

  const pub = await qis(['publish', ...conn, '--template', TPL, '--situation', SIT, '--outcome', 'failure', '--json']);
  t.equal(pub.status, 0, pub.stdout + pub.stderr);
  const w = await qis(['withdraw', ...conn, '--template', TPL, '--json']);
  t.equal(w.status, 0, w.stdout + w.stderr);
  const wj = parse(w.stdout);
  t.equal(wj['acked'], true, 'tombstone acknowledged');
  t.equal(wj['topic'], parse(pub.stdout)['topic'], "on the node's packet's topic");
  t.ok(Number(wj['seq']) > Number(parse(pub.stdout)['seq']), 'with a higher seq');

  const q = await qis(['query', '--url', b.url, '--template', TPL, '--situation', SIT, '--json']);
  t.equal(q.status, 0, q.stderr);
  t.equal(parse(q.stdout)['cohort'], 0, 'a query no longer counts the node');

  await b.close(true);
  const away = await qis(['withdraw', '--url', b.url, '--data-dir', dir, '--template', TPL, '--json']);
  t.equal(away.status, 0, away.stdout + away.stderr);
  t.equal(parse(away.stdout)['acked'], false, 'broker away: queued, said so');
  const st = parse((await qis(['status', '--data-dir', dir, '--json'])).stdout) as { queued: { kind: string }[] };
  t.same(st.queued.map((e) => e.kind), ['tombstone'], 'status lists the queued tombstone');
});
