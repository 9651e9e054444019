// qis publish / query / watch as a user runs them, against a real Mosquitto over loopback.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { QIS, ROOT, qis } from './helpers/cli.js';
import { startMosquitto } from './helpers/mosquitto.js';

const TPL = 'examples/bearing-failure.yaml';
const S = JSON.stringify({ machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true });

t.test('cli node commands on Mosquitto', async (t) => {
  const m = await startMosquitto();
  const url = `mqtt://127.0.0.1:${m.port}`;
  const root = mkdtempSync(join(tmpdir(), 'qis-cli-node-'));
  t.teardown(async () => {
    await m.stop();
    rmSync(root, { recursive: true, force: true });
  });
  const outcomes = ['failure', 'no_failure', 'no_failure', 'failure', 'no_failure'];
  const published: { nodeId: string; seq: number; topic: string }[] = [];
  for (const [i, out] of outcomes.entries()) {
    const r = await qis(['publish', '--url', url, '--data-dir', join(root, `n${i}`), '--template', TPL, '--situation', S, '--outcome', out, '--n', String(i + 1), '--json']);
    t.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { acked: boolean; queued: number; nodeId: string; seq: number; topic: string };
    t.equal(j.acked, true, `publish ${i} acknowledged`);
    t.equal(j.queued, 0, 'nothing left in the outbox');
    published.push(j);
  }

  t.test('qis query --json - labels with raw counts, weights by n, and intervals', async (t) => {
    const r = await qis(['query', '--url', url, '--template', TPL, '--situation', S, '--json']);
    t.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { cohort: number; kind: string; broker: string; completeness: string; labels: Record<string, { count: number; weight: number; proportion: number; low: number; high: number }> };
    t.equal(j.cohort, 5);
    t.equal(j.kind, 'category');
    t.equal(j.completeness, 'sync');
    t.equal(j.labels['failure']?.count, 2, 'two nodes said failure');
    t.equal(j.labels['no_failure']?.count, 3);
    // n = i + 1: failure nodes 0 and 3 carry 1 + 4 observations, no_failure 2 + 3 + 5.
    t.equal(j.labels['failure']?.weight, 5);
    t.equal(j.labels['no_failure']?.weight, 10);
    t.equal(j.labels['failure']?.proportion, 5 / 15);
    const f = j.labels['failure'];
    t.ok(f && f.low < f.proportion && f.proportion < f.high, 'the interval contains the share');
  });

  t.test('qis query - a table for a person, and insufficient evidence below --min-cohort', async (t) => {
    const r = await qis(['query', '--url', url, '--template', TPL, '--situation', S]);
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /nodes\s+5 /);
    t.match(r.stdout, /failure\s+2\s+5\s+33\.3 %/);
    const few = await qis(['query', '--url', url, '--template', TPL, '--situation', S, '--min-cohort', '6']);
    t.match(few.stdout, /insufficient evidence: 5 nodes, 6 needed/);
  });

  t.test('qis watch --json - one line per verified packet, then stops at --count', async (t) => {
    const r = await qis(['watch', '--url', url, '--template', TPL, '--situation', S, '--count', '5', '--json', '--timeout', '5000']);
    t.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { nodeId: string; retained: boolean });
    t.equal(lines.length, 5, 'the five retained packets');
    t.same(lines.map((l) => l.nodeId).sort(), published.map((p) => p.nodeId).sort());
    t.ok(lines.every((l) => l.retained));
    t.match(r.stderr, /watched 5 packet\(s\); dropped none/);
  });

  t.test('qis watch - a live packet arrives while watching', async (t) => {
    const child = spawn(process.execPath, [QIS, 'watch', '--url', url, '--template', TPL, '--situation', S, '--live', '--count', '1', '--json', '--timeout', '10000'], { cwd: ROOT });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', r));
    await new Promise((r) => setTimeout(r, 800)); // the watch subscribes
    const p = await qis(['publish', '--url', url, '--data-dir', join(root, 'n0'), '--template', TPL, '--situation', S, '--outcome', 'no_failure', '--json']);
    t.equal(p.status, 0);
    t.equal(await exited, 0);
    const line = JSON.parse(out.trim()) as { nodeId: string; out: string; retained: boolean; seq: number };
    t.equal(line.nodeId, published[0]?.nodeId);
    t.equal(line.out, 'no_failure');
    t.equal(line.retained, false);
    t.ok(line.seq > (published[0]?.seq ?? Infinity), 'seq increased across the two processes');
  });

  t.test('qis publish - usage and refusals', async (t) => {
    const bad = await qis(['publish', '--url', 'http://x', '--data-dir', join(root, 'x'), '--template', TPL, '--situation', S, '--outcome', 'failure', '--json']);
    t.equal(bad.status, 1);
    t.match(JSON.parse(bad.stdout), { ok: false, code: 'ERR_URL_INVALID' });
    const label = await qis(['publish', '--url', url, '--data-dir', join(root, 'x'), '--template', TPL, '--situation', S, '--outcome', 'exploded', '--json']);
    t.match(JSON.parse(label.stdout), { ok: false, code: 'ERR_OUTCOME_INVALID' });
    const missing = await qis(['publish', '--url', url, '--template', TPL, '--situation', S, '--outcome', 'failure']);
    t.equal(missing.status, 2);
    t.match(missing.stderr, /--data-dir is required/);
    const help = await qis(['query', '--help']);
    t.equal(help.status, 0);
    t.match(help.stdout, /--widen N/);
  });
});
