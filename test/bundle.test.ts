// The build of the CLI (dist/cli/qis.mjs and its chunks, made by cli/bundle.ts at `npm run build`)
// as a user runs it: --help, and a broker started from the bundle (its verification in a worker
// thread, whose file the build puts next to the bundle) acknowledging and keeping a publish sent
// by the bundle, over loopback; and which chunks each command reads (the broker's and the
// bridge's code are not read by `qis publish`).
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import mqtt from 'mqtt';
import { freePort, waitForPort } from '../bench/net.js';
import { BUNDLE, bundleFiles } from '../cli/bundle.js';
import { ROOT } from './helpers/cli.js';
import { run } from './helpers/run.js';
import { untilNiced } from './helpers/threads.js';

const TPL = join(ROOT, 'examples/bearing-failure.yaml');
/** --verify-nice where it can be seen (Linux, a test process below niceness 19): the bundle's worker gets it too. */
const NICE_OK = process.platform === 'linux' && getPriority() < 19;
const NICE = NICE_OK ? ['--verify-nice', '19'] : [];
const S = JSON.stringify({ machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true });

const RECORD_LOADS = fileURLToPath(new URL('./fixtures/record-loads.mjs', import.meta.url));
/** `--import` options that make the process list every module file it loads in `out`. */
const recordLoads = (out: string): string[] => ['--import', `${pathToFileURL(RECORD_LOADS).href}?out=${encodeURIComponent(out)}`];
const loaded = (out: string): string[] => (existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter((l) => l !== '').map((u) => fileURLToPath(u)) : []);
/** The build's chunks holding a string only that part of the code has. */
const chunksWith = (marker: string): string[] => bundleFiles().slice(1).filter((f) => readFileSync(f, 'utf8').includes(marker));

const bundled = (args: string[], nodeArgs: string[] = []) => {
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run npm run build (npm test does)`);
  return run(process.execPath, [...nodeArgs, BUNDLE, ...args], { cwd: ROOT });
};

t.test('node dist/cli/qis.mjs --help lists the commands', async (t) => {
  const r = await bundled(['--help']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^\s+publish\s/m);
  t.match(r.stdout, /^\s+broker\s/m);
  const v = await bundled(['--version']);
  t.match(v.stdout, /^\d+\.\d+\.\d+\n$/, 'the version from package.json');
});

t.test('a broker run from the bundle (worker verification) keeps a packet published by the bundle', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qis-bundle-'));
  const port = await freePort();
  const brokerLoads = join(dir, 'broker-loads.txt');
  const broker = spawn(process.execPath, [...recordLoads(brokerLoads), BUNDLE, 'broker', '--listen', `tcp://127.0.0.1:${port}`, '--data-dir', join(dir, 'broker'), '--verify-workers', '1', ...NICE, '--log-level', 'warn', '--http', 'off'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let brokerErr = '';
  broker.stderr.on('data', (b: Buffer) => (brokerErr += b.toString()));
  const exited = new Promise<void>((r) => broker.once('exit', () => r()));
  t.teardown(async () => {
    if (broker.exitCode === null) broker.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  await waitForPort(port, Date.now() + 60_000);
  const url = `mqtt://127.0.0.1:${port}`;
  if (NICE_OK) {
    // The bundle starts its verify worker from its own file (dist/cli/verify-worker.js): with the niceness passed on.
    const threads = await untilNiced(broker.pid as number, 19, 1);
    t.equal(threads.filter((x) => x.nice === 19).length, 1, 'the one verify thread runs at niceness 19 (--verify-nice reached the bundled worker)');
    t.equal(threads.find((x) => x.tid === broker.pid)?.nice, getPriority(), 'the main thread keeps its niceness');
  }

  const publishLoads = join(dir, 'publish-loads.txt');
  const r = await bundled(['publish', '--url', url, '--data-dir', join(dir, 'node'), '--template', TPL, '--situation', S, '--outcome', 'failure', '--json'], recordLoads(publishLoads));
  t.equal(r.status, 0, r.stderr + brokerErr);
  const j = JSON.parse(r.stdout) as { acked: boolean; queued: number; topic: string };
  t.equal(j.acked, true, 'the broker acknowledged the publish');
  t.equal(j.queued, 0);

  // The broker verified and retained it: a fresh subscriber gets it back.
  const sub = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  t.teardown(() => sub.endAsync());
  const got = new Promise<{ topic: string; retain: boolean; bytes: number }>((resolve) =>
    sub.on('message', (topic, payload, packet) => resolve({ topic, retain: packet.retain, bytes: payload.length })),
  );
  await sub.subscribeAsync(j.topic, { qos: 1 });
  const m = await got;
  t.equal(m.topic, j.topic);
  t.equal(m.retain, true, 'kept as the retained packet of its topic');
  t.ok(m.bytes > 64, 'a signed packet, not an empty payload');

  // Lazy loading: the broker's code (its metrics name qis_build_info) and the bridge's (Sparkplug's
  // spBv1.0 namespace) are chunks of their own, read by their commands and never by publish.
  const brokerChunks = chunksWith('qis_build_info');
  const bridgeChunks = chunksWith('spBv1.0');
  t.ok(brokerChunks.length > 0 && bridgeChunks.length > 0, 'the broker and the bridge are chunks of the build');
  t.ok(brokerChunks.every((c) => loaded(brokerLoads).includes(c)), 'qis broker read the broker chunk (the recording works)');
  const pub = loaded(publishLoads);
  t.ok(pub.includes(BUNDLE), 'qis publish loaded the entry');
  t.same(pub.filter((f) => brokerChunks.includes(f) || bridgeChunks.includes(f)), [], 'qis publish read neither the broker nor the bridge');
});
