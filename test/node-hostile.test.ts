// The edge node against a hostile broker (raw sockets, test/helpers/hostile-broker.ts): every wait
// of a query ends by its deadline, oversized packets and floods are refused with their codes, and
// the node's memory stays bounded (the CLI's peak RSS, measured in its own process).
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { createNode, isQisError, type NodeOptions, type QisError } from '../src/index.js';
import { bearing, situation } from './helpers/fixtures.js';
import { QIS, ROOT } from './helpers/cli.js';
import { hugePublish, junk, startHostileBroker, writeAll, type HostileBehaviour } from './helpers/hostile-broker.js';

const dir = mkdtempSync(join(tmpdir(), 'qis-hostile-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** The error a query on a fresh node against a broker behaving as `b` ends with. */
async function queryError(b: HostileBehaviour, o: Partial<NodeOptions> = {}, timeoutMs = 600): Promise<{ err: QisError; broker: Awaited<ReturnType<typeof startHostileBroker>> }> {
  const broker = await startHostileBroker(b);
  const node = await createNode({ url: broker.url, dataDir: mkdtempSync(join(dir, 'n-')), brokerKind: 'qis', reconnect: { baseMs: 20, capMs: 50 }, ...o });
  try {
    const err = await node.query(bearing, situation, { timeoutMs }).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!isQisError(err)) throw new Error(`expected a QisError, got ${String(err)}`);
    return { err, broker };
  } finally {
    await node.close();
    await broker.close();
  }
}

t.test('a broker that never SUBACKs: the query ends by its deadline (ERR_TIMEOUT)', async (t) => {
  const { err, broker } = await queryError({ suback: false });
  t.equal(err.code, 'ERR_TIMEOUT');
  t.match(err.message, /SUBACK/);
  t.ok(broker.subscribes.length >= 1, 'the node did subscribe');
});

t.test('a broker that never SUBACKs, broker kind auto: detection and query both end by the deadline', async (t) => {
  const { err } = await queryError({ suback: false }, { brokerKind: 'auto' }, 800);
  t.equal(err.code, 'ERR_TIMEOUT');
});

t.test('a broker that never PUBACKs the sync marker: the query ends by its deadline (ERR_TIMEOUT)', async (t) => {
  const { err, broker } = await queryError({ puback: false });
  t.equal(err.code, 'ERR_TIMEOUT');
  t.match(err.message, /PUBACK of the sync marker/);
  t.ok(broker.publishes.some((p) => p.startsWith('qis/1/sync/')), 'the marker was sent');
});

t.test('a broker flooding retained messages: refused past maxQueryMessages (ERR_QUERY_TOO_LARGE)', async (t) => {
  const flood = (sock: Socket, filters: string[]): void => {
    void writeAll(sock, junk(20_000, (i) => `${filters[filters.length - 1]!.replace(/[#+].*$/, '')}junk/${i}`));
  };
  const { err } = await queryError({ onSubscribe: flood }, { maxQueryMessages: 1_000 }, 5_000);
  t.equal(err.code, 'ERR_QUERY_TOO_LARGE');
  t.match(err.message, /more than 1000 messages/);
});

t.test('a broker sending one huge PUBLISH: cut off from its header (ERR_INCOMING_TOO_LARGE)', async (t) => {
  const written: number[] = [];
  const huge = (sock: Socket): void => {
    void writeAll(sock, hugePublish('qis/1/o/x', 250 * 1024 * 1024)).then(() => written.push(sock.bytesWritten));
  };
  const { err } = await queryError({ onSubscribe: huge }, {}, 5_000);
  t.equal(err.code, 'ERR_INCOMING_TOO_LARGE');
  t.match(err.message, /262144005 bytes/);
  // The broker could push only what the socket buffers took before the node hung up.
  await new Promise((r) => setTimeout(r, 100));
  for (const n of written) t.ok(n < 16 * 1024 * 1024, `the broker wrote ${n} bytes before the node hung up`);
});

t.test('the frame guard: a packet at the cap passes, one byte over is refused', async (t) => {
  const ok = await queryError({ onSubscribe: (sock) => void writeAll(sock, hugePublish('qis/1/o/x', 998)) }, { maxPacketBytes: 1001 });
  t.equal(ok.err.code, 'ERR_TIMEOUT', 'a 1001-byte packet is within a 1001-byte cap');
  const over = await queryError({ onSubscribe: (sock) => void writeAll(sock, hugePublish('qis/1/o/x', 999)) }, { maxPacketBytes: 1001 });
  t.equal(over.err.code, 'ERR_INCOMING_TOO_LARGE', 'a 1002-byte packet is not');
});

/** `qis query` in its own process; its peak RSS comes from its own resource usage, printed at exit. */
function qisQuery(url: string, timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string; maxRssMb: number }> {
  const report = "process.on('exit',()=>process.stderr.write('\\nmaxrss-kb='+process.resourceUsage().maxRSS+'\\n'))";
  const args = ['--import', `data:text/javascript,${encodeURIComponent(report)}`, QIS, 'query', '--url', url, '--broker-kind', 'qis', '--template', 'examples/bearing-failure.yaml', '--situation', JSON.stringify(situation), '--timeout', String(timeoutMs), '--json'];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    child.on('error', reject);
    child.on('close', (status) => {
      const m = /maxrss-kb=(\d+)/.exec(stderr);
      resolve({ status, stdout, stderr, maxRssMb: m ? Number(m[1]) / 1024 : Number.NaN });
    });
  });
}

t.test('a flood under the count cap: the query still ends by its deadline (ERR_TIMEOUT)', async (t) => {
  const { err } = await queryError({ onSubscribe: (sock) => void writeAll(sock, junk(1_000_000, (i) => `junk/${i}`)) }, {}, 300);
  t.equal(err.code, 'ERR_TIMEOUT');
});

t.test('qis query against 1M junk retained messages: coded refusal, bounded RSS', async (t) => {
  const broker = await startHostileBroker({ onSubscribe: (sock) => void writeAll(sock, junk(1_000_000, (i) => `junk/${i}`)) });
  try {
    // A time limit far off: the count cap (50,000 by default) is what ends this query.
    const r = await qisQuery(broker.url, 120_000);
    t.not(r.status, 0);
    t.match(r.stdout + r.stderr, /ERR_QUERY_TOO_LARGE/);
    t.ok(r.maxRssMb < 300, `peak RSS ${r.maxRssMb.toFixed(0)} MB`);
  } finally {
    await broker.close();
  }
});

t.test('qis query --timeout against one 250 MB PUBLISH: coded refusal, bounded RSS', async (t) => {
  const broker = await startHostileBroker({ onSubscribe: (sock) => void writeAll(sock, hugePublish('qis/1/o/x', 250 * 1024 * 1024)) });
  try {
    const r = await qisQuery(broker.url, 10_000);
    t.not(r.status, 0);
    t.match(r.stdout + r.stderr, /ERR_INCOMING_TOO_LARGE/);
    t.ok(r.maxRssMb < 300, `peak RSS ${r.maxRssMb.toFixed(0)} MB`);
  } finally {
    await broker.close();
  }
});
