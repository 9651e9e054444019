// README's commands stay true: every ```sh block of README.md runs, in order, in one bash session
// (`set -euo pipefail`) against a real local Mosquitto, unless the line before it is
// `<!-- readme-test: skip (reason) -->` (blocks that install, run the whole suite, or run until
// Ctrl-C). Only the addresses change: the broker runs on a free port, so `mqtt://localhost` becomes
// mqtt://127.0.0.1:PORT and mosquitto_pub/mosquitto_sub get -p PORT; `npx qis` runs this build.
import t from 'tap';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './helpers/run.js';
import { QIS, ROOT } from './helpers/cli.js';
import { startMosquitto } from './helpers/mosquitto.js';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/(^<!-- readme-test: skip \(([^)]*)\) -->\n)?^```sh\n([\s\S]*?)^```$/gm)].map((m) => ({ skip: m[2], code: m[3]! }));

t.test('readme - every sh block is run or skipped with a reason', async (t) => {
  t.ok(blocks.length >= 6, `found ${blocks.length} sh blocks`);
  for (const b of blocks) if (b.skip !== undefined) t.ok(b.skip.trim().length > 0, `skip has a reason: ${b.code.split('\n')[0]}`);
  t.ok(blocks.some((b) => b.skip === undefined), 'some blocks run');
});

t.test('readme - the runnable sh blocks succeed against a local Mosquitto', async (t) => {
  const m = await startMosquitto();
  t.teardown(() => m.stop());
  const dir = mkdtempSync(join(tmpdir(), 'qis-readme-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(ROOT, 'examples'), join(dir, 'examples'), { recursive: true });
  const prelude = [
    'set -euo pipefail',
    `npx() { if [ "$1" = qis ]; then shift; "${process.execPath}" "${QIS}" "$@"; else echo "npx $1: not run by this test" >&2; return 1; fi; }`,
    `mosquitto_pub() { command mosquitto_pub -h 127.0.0.1 -p ${m.port} "$@"; }`,
    `mosquitto_sub() { command mosquitto_sub -h 127.0.0.1 -p ${m.port} "$@"; }`,
  ];
  const body = blocks.filter((b) => b.skip === undefined).map((b) => b.code.replaceAll('mqtt://localhost', `mqtt://127.0.0.1:${m.port}`));
  const r = await run('bash', ['-c', [...prelude, ...body].join('\n')], { cwd: dir });
  t.equal(r.status, 0, `exit status; stderr:\n${r.stderr}`);
  t.match(r.stdout, /valid {2}node \S+ {2}seq \d+ {2}out "failure"/, 'packet verify as README says');
  t.match(r.stdout, /published seq \d+: acknowledged by the broker/, 'publish as README says');
  // The query's figures README shows, as printed.
  for (const line of readme.matchAll(/^# (nodes {5}2 .*?\)|failure {10}2 .*)$/gm)) {
    t.ok(r.stdout.includes(line[1]!.replace(/ {3}\(node\.key.*$/, '')), `query prints: ${line[1]}`);
  }
});
